//! The store conformance suite on SQLite: a temporary database file per check, and the
//! in-memory database (a single connection).

use std::sync::Arc;

use cloakroom_core::store::SessionStore;
use cloakroom_sqlite::SqliteStore;

/// A store on a fresh file in a temporary directory that lives as long as the check.
async fn temp_file_store() -> (Arc<dyn SessionStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path().join("sessions.db"))
        .await
        .expect("opening a new database file");
    (Arc::new(store), dir)
}

cloakroom_testkit::conformance_tests!(temp_file_store());

mod in_memory {
    use super::*;

    cloakroom_testkit::conformance_tests!(async {
        Arc::new(
            SqliteStore::open_in_memory()
                .await
                .expect("an in-memory database"),
        )
    });
}
