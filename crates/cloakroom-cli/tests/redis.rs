//! The `cloakroom` binary against a real Redis (spawned on a free loopback port), with the
//! same scenarios as SQLite; each test gets its own key prefix.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use cloakroom_testkit::redis_server::RedisServer;

fn redis_url() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let server = RedisServer::shared();
    format!(
        "redis://127.0.0.1:{}/3?prefix=cli{}-{}:",
        server.port(),
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

macro_rules! redis_scenarios {
    ($($scenario:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $scenario() {
            common::$scenario(&redis_url()).await;
        }
    )*};
}

redis_scenarios!(
    list_json_matches_the_store,
    list_of_a_user_has_only_theirs,
    list_prints_a_table,
    show_decodes_the_data_and_hides_the_csrf_secret,
    show_of_an_unknown_handle_fails,
    revoke_deletes_one_session,
    handles_starting_with_a_hyphen_work,
    revoke_of_a_user_deletes_all_theirs,
    revoke_with_a_reason_tells_the_user,
    events_show_revocations_as_they_happen,
    stats_match_the_store,
    gc_explains_engine_expiry,
    gc_logs_noticed_expiry,
);
