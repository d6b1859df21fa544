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

mod with_schema {
    use super::*;

    cloakroom_testkit::conformance_tests!(store_with(format!("schema={}", unique("s"))));
}
