//! The conformance suite on the reference [`MemoryStore`].

use std::sync::Arc;

use cloakroom_core::store::MemoryStore;

cloakroom_testkit::conformance_tests!(async { Arc::new(MemoryStore::new()) });

cloakroom_testkit::sealed_engine_tests!(async { Arc::new(MemoryStore::new()) });

/// A store failure while the limit is enforced refuses the login (a store error: 503), and
/// leaves no session of the user behind.
#[tokio::test]
async fn a_store_failure_while_enforcing_the_limit_refuses_the_login() {
    use std::sync::atomic::Ordering;

    use cloakroom_core::session::{ErrorKind, SessionSettings};
    use cloakroom_core::{Key, KeyRing, SessionStore};
    use cloakroom_testkit::probe::Probe;

    let probe = Arc::new(Probe::default());
    let engine = SessionSettings::new(probe.clone(), KeyRing::single(Key::generate()))
        .with_max_sessions_per_user(3)
        .unwrap()
        .build();
    let session = engine.session(None);
    session.login("ada").await.unwrap();
    probe.fail.store(true, Ordering::SeqCst);
    let err = engine.commit(&session, None).await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Store(_)), "{err:?}");
    probe.fail.store(false, Ordering::SeqCst);
    assert!(probe.inner.sessions_of("ada").await.unwrap().is_empty());
}

cloakroom_testkit::event_log_tests!(|cap| async move {
    Arc::new(MemoryStore::new().with_event_log(cap)) as Arc<dyn cloakroom_core::store::SessionStore>
});
