//! The store conformance suite on a real PostgreSQL server (one per test binary), each check
//! on its own table; and again with `?schema=`, each check in its own schema.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use cloakroom_postgres::PostgresStore;
use cloakroom_testkit::postgres_server::PostgresServer;

/// A name no other check of this run uses.
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}_{}", N.fetch_add(1, Ordering::Relaxed))
}

async fn store_with(option: String) -> Arc<PostgresStore> {
    let url = format!("{}?{option}", PostgresServer::shared().url());
    Arc::new(
        PostgresStore::open(&url)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}")),
    )
}

cloakroom_testkit::conformance_tests!(store_with(format!("table={}", unique("t"))));
cloakroom_testkit::sealed_engine_tests!(store_with(format!("table={}", unique("t"))));

mod with_schema {
    use super::*;

    cloakroom_testkit::conformance_tests!(store_with(format!("schema={}", unique("s"))));
}

/// What a thief of the database gets: `pg_dump` of the session table (every column).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_marker_is_not_in_pg_dump() {
    let server = PostgresServer::shared();
    let table = unique("dump");
    let store = store_with(format!("table={table}")).await;
    cloakroom_testkit::sealed::check_sealed_marker_not_in_dump(store, |_| {
        let out = server
            .pg_dump(&["--data-only", "--table", &table])
            .expect("pg_dump runs");
        async { out }
    })
    .await;
}
