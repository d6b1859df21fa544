//! The ticket decoder never panics, and accepts only what it signed.
#![no_main]
use cloakroom_core::cookie::{decode_ticket, encode_ticket};
use cloakroom_core::keys::{Key, KeyRing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ring = KeyRing::single(Key::from_bytes(&[7; 32]).unwrap());
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(id) = decode_ticket(&ring, "session", text) {
            // Anything accepted must be exactly what we would have issued.
            assert_eq!(encode_ticket(&ring, "session", &id), text);
        }
    }
});
