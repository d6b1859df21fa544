//! The Cookie header path: parsing every cookie of our name and verifying tickets.
#![no_main]
use std::sync::Arc;

use cloakroom_core::keys::{Key, KeyRing};
use cloakroom_core::{MemoryStore, SessionConfig, SessionEngine};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static ENGINE: SessionEngine = SessionEngine::new(
            Arc::new(MemoryStore::with_sweep_interval(std::time::Duration::from_secs(3600))),
            KeyRing::single(Key::from_bytes(&[7; 32]).unwrap()),
            SessionConfig::default(),
        );
    }
    if let Ok(header) = std::str::from_utf8(data) {
        let _ = cloakroom_core::cookie::cookie_values(header, "session").count();
        ENGINE.with(|e| drop(e.session(Some(header))));
    }
});
