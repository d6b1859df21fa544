//! The store conformance suite (cloakroom-testkit) against [`PycketStore`], on a standalone
//! Redis server shared by this test binary (sessions in database 3, notifications in 4).
//!
//! The suite uses random 16-byte keys, which the store keeps under their uuid texts like
//! any other key (see `cloakroom_tornado::pycket`), so the suite runs unchanged.

use std::sync::Arc;

use cloakroom_core::store::SessionStore;
use cloakroom_testkit::redis_server::RedisServer;
use cloakroom_testkit::{Challenges, Purge, SessionLimit};
use cloakroom_tornado::PycketStore;

async fn pycket_store() -> Arc<dyn SessionStore> {
    let url = format!(
        "pycket+redis://127.0.0.1:{}/3?notifications_db=4",
        RedisServer::shared().port()
    );
    let store = PycketStore::open(&url)
        .await
        .unwrap_or_else(|e| panic!("opening the pycket store: {e}"));
    Arc::new(store)
}

// The pycket format cannot hold DBSC challenges, nor enforce the concurrent-session limit:
// the store refuses both as config errors.
cloakroom_testkit::conformance_tests!(
    pycket_store(),
    purge = Purge::EngineExpires,
    challenges = Challenges::Refused,
    limit = SessionLimit::Refused
);
