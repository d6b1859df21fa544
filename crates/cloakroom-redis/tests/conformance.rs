//! The store conformance suite (cloakroom-testkit) against a standalone Redis server and a
//! three-master Redis Cluster. Each check gets its own key prefix on a server shared by the
//! whole test binary.

mod common;

use std::sync::Arc;

use cloakroom_core::store::SessionStore;
use cloakroom_testkit::Purge;
use cloakroom_testkit::redis_server::{RedisCluster, RedisServer, Resp};

async fn open(url: String, kind: &str) -> Arc<dyn SessionStore> {
    Arc::new(common::open_fresh(url, kind).await)
}

async fn standalone_store() -> Arc<dyn SessionStore> {
    open(RedisServer::shared().url(), "standalone").await
}

/// With the near-cache on (`cache=N`), over `connections` connections (keys routed).
async fn cached_store(connections: usize) -> Arc<dyn SessionStore> {
    let url = format!(
        "{}?cache=64&connections={connections}",
        RedisServer::shared().url()
    );
    open(url, "cached").await
}

/// As a user who may not run `MULTI`: patches and touches by script from the first refused
/// transaction on, the way they go on Redis 6.2 (which refuses the transaction's flags).
async fn scripted_store() -> Arc<dyn SessionStore> {
    let server = RedisServer::shared();
    let acl = [
        "ACL", "SETUSER", "nomulti", "on", ">pw", "~*", "&*", "+@all", "-multi",
    ];
    assert_eq!(server.command(&acl).unwrap(), Resp::Simple("OK".into()));
    let url = format!("redis://nomulti:pw@127.0.0.1:{}/", server.port());
    open(url, "scripted").await
}

/// With an event log keeping about `cap` events (`events=N`), and the near-cache too when
/// `cache`.
async fn logged_store(cap: usize, cache: bool) -> Arc<dyn SessionStore> {
    let cache = if cache { "&cache=64" } else { "" };
    let url = format!("{}?events={cap}{cache}", RedisServer::shared().url());
    open(url, "logged").await
}

async fn cluster_store() -> Arc<dyn SessionStore> {
    open(RedisCluster::shared().url(), "cluster").await
}

/// A Cluster store with an event log keeping about `cap` events per shard.
async fn cluster_logged_store(cap: usize) -> Arc<dyn SessionStore> {
    let url = format!("{}?events={cap}", RedisCluster::shared().url());
    open(url, "cluster-logged").await
}

/// Against one Redis server.
mod standalone {
    use super::*;

    cloakroom_testkit::conformance_tests!(standalone_store(), purge = Purge::EngineExpires);
    cloakroom_testkit::sealed_engine_tests!(standalone_store());
}

/// Against one Redis server, with the near-cache on.
mod standalone_cached {
    use super::*;

    cloakroom_testkit::conformance_tests!(cached_store(1), purge = Purge::EngineExpires);
    cloakroom_testkit::sealed_engine_tests!(cached_store(1));
}

/// With the near-cache on and three connections (every key routed to one of them).
mod standalone_cached_three_connections {
    use super::*;

    cloakroom_testkit::conformance_tests!(cached_store(3), purge = Purge::EngineExpires);
}

/// Against one Redis server, with the event log on: the whole suite (the engine's changes go
/// through the logged scripts) and the event log's checks.
mod standalone_logged {
    use super::*;

    cloakroom_testkit::conformance_tests!(
        logged_store(100_000, false),
        purge = Purge::EngineExpires
    );
    cloakroom_testkit::event_log_tests!(
        |cap| logged_store(cap, false),
        expiry = cloakroom_testkit::ExpiryEvents::Noticed
    );
}

/// The event log with the near-cache on: the whole suite and the event log's checks.
mod standalone_logged_cached {
    use super::*;

    cloakroom_testkit::conformance_tests!(
        logged_store(100_000, true),
        purge = Purge::EngineExpires
    );

    cloakroom_testkit::event_log_tests!(
        |cap| logged_store(cap, true),
        expiry = cloakroom_testkit::ExpiryEvents::Noticed
    );
}

/// Against one Redis server that refuses transactions.
mod standalone_scripted {
    use super::*;

    cloakroom_testkit::conformance_tests!(scripted_store(), purge = Purge::EngineExpires);
}

/// Against a Redis Cluster of three masters.
mod cluster {
    use super::*;

    cloakroom_testkit::conformance_tests!(cluster_store(), purge = Purge::EngineExpires);
    cloakroom_testkit::sealed_engine_tests!(cluster_store());
}

/// Against a Redis Cluster of three masters, with the event log on (one stream per shard):
/// the whole suite and the event log's checks.
mod cluster_logged {
    use super::*;

    cloakroom_testkit::conformance_tests!(
        cluster_logged_store(100_000),
        purge = Purge::EngineExpires
    );
    cloakroom_testkit::event_log_tests!(
        cluster_logged_store,
        expiry = cloakroom_testkit::ExpiryEvents::Noticed
    );
}

/// What a thief of the Redis server gets: `DUMP` of each session's key, and the RDB file after
/// `SAVE` (uncompressed, so a plaintext marker would show verbatim).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_marker_is_not_in_dump_or_the_rdb_file() {
    use cloakroom_testkit::redis_server::Resp;
    let server = RedisServer::start();
    let ok = |args: &[&str]| server.command(args).expect("redis command");
    ok(&["CONFIG", "SET", "rdbcompression", "no"]);
    let Resp::Array(Some(dir)) = ok(&["CONFIG", "GET", "dir"]) else {
        panic!("CONFIG GET dir");
    };
    let rdb = std::path::Path::new(dir[1].as_str().expect("a directory")).join("dump.rdb");
    let store = common::open_fresh(server.url(), "dump").await;
    let prefix = store.prefix().to_owned();
    cloakroom_testkit::sealed::check_sealed_marker_not_in_dump(Arc::new(store), |keys| {
        let mut bytes = Vec::new();
        for key in keys {
            // Session keys are the prefix, `s:` and the key's 16 raw bytes.
            let name = [format!("{prefix}s:").as_bytes(), key.as_bytes()].concat();
            match server
                .command_bytes(&[b"DUMP", &name])
                .expect("redis command")
            {
                Resp::Bulk(Some(payload)) => bytes.extend(payload),
                other => panic!("DUMP {}: {other:?}", key.to_handle()),
            }
        }
        assert_eq!(ok(&["SAVE"]).as_str(), Some("OK"));
        bytes.extend(std::fs::read(&rdb).expect("the RDB file"));
        async { bytes }
    })
    .await;
}
