//! What the benchmark targets share: the key ring and an engine holding one stored session.

use std::sync::Arc;

use cloakroom_core::session::{SessionEngine, SessionSettings};
use cloakroom_core::store::MemoryStore;
use cloakroom_core::{Key, KeyRing};

/// The key ring every benchmark signs with.
pub(crate) fn ring() -> KeyRing {
    KeyRing::single(Key::from_bytes(&[7; 32]).expect("32-byte key"))
}

/// An engine on `store`, sealing or not, and the `name=ticket` pair of a stored session
/// holding one small field.
pub(crate) fn engine_with_session(
    rt: &tokio::runtime::Runtime,
    store: Arc<MemoryStore>,
    sealed: bool,
) -> (SessionEngine, String) {
    rt.block_on(async {
        let engine = SessionSettings::new(store, ring())
            .with_sealed_data(sealed)
            .expect("sealing allowed")
            .build();
        let s = engine.session(None);
        s.set("counter", &41u64).await.expect("set");
        let outcome = engine.commit(&s, None).await.expect("commit");
        let cookie = outcome.set_cookie.expect("cookie");
        let pair = cookie.split(';').next().expect("name=value").to_owned();
        (engine, pair)
    })
}
