//! Tornado signed-value decoding (v1, v2, versioned secrets) never panics.
#![no_main]
use std::collections::BTreeMap;

use cloakroom_tornado::signed_value::{
    TornadoSecret, decode_fields_v2, decode_signed_value, key_version_of, version_of,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let single = TornadoSecret::single("secret");
        let versioned = TornadoSecret::Versioned {
            secrets: BTreeMap::from([(0, b"a".to_vec()), (3, b"b".to_vec())]),
            current: 3,
        };
        let _ = version_of(text);
        let _ = decode_fields_v2(text);
        let _ = key_version_of(text);
        for s in [&single, &versioned] {
            let _ = decode_signed_value(s, "PYCKET_ID", text, 31.0, 1_764_320_000);
        }
    }
});
