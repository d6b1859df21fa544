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

cloakroom_testkit::sealed_engine_tests!(temp_file_store());

/// A dump of the database: the file and its write-ahead log, as a thief would copy them.
#[tokio::test]
async fn a_sealed_marker_is_not_in_the_database_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.expect("a new database file");
    let files = [path.clone(), dir.path().join("sessions.db-wal")];
    cloakroom_testkit::sealed::check_sealed_marker_not_in_dump(Arc::new(store), |_| async {
        let read = |p: &std::path::PathBuf| std::fs::read(p).unwrap_or_default();
        files.iter().flat_map(read).collect()
    })
    .await;
}
