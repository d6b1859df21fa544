//! The Cookie header path: parsing every cookie of our name and verifying tickets, from raw
//! bytes (not necessarily UTF-8), split into several headers at each 0x00 byte.
#![no_main]
use std::sync::Arc;

use cloakroom_core::keys::{Key, KeyRing};
use cloakroom_core::{MemoryStore, SessionEngine, SessionSettings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static ENGINE: SessionEngine = SessionSettings::new(
            Arc::new(MemoryStore::with_sweep_interval(std::time::Duration::from_secs(3600))),
            KeyRing::single(Key::from_bytes(&[7; 32]).unwrap()),
        )
        .build();
    }
    let headers = data.split(|&b| b == 0);
    let _ = cloakroom_core::cookie::cookie_values(headers.clone(), "session").count();
    ENGINE.with(|e| drop(e.session_from_headers(headers)));
});
