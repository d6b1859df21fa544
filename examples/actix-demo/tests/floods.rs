//! The actix demo against slow clients and connection floods, over real TCP on loopback: the
//! scenarios of `cloakroom_testkit::slow_clients`, which the axum demo's `tests/floods.rs`
//! runs against `cloakroom-demo` (slow bodies, slow heads on the first and later requests of
//! a connection, oversized declared bodies with and without `Expect: 100-continue`,
//! connections past the cap, oversized heads, a stop with an idle keep-alive connection).
//!
//! `CLOAKROOM_ACTIX_DEMO_BIN=/path/to/cloakroom-actix-demo` runs these against another build
//! (an older release, to see them fail there).

use std::path::PathBuf;

use cloakroom_testkit::slow_clients as scenario;

/// The actix demo binary under test.
fn demo_bin() -> PathBuf {
    std::env::var_os("CLOAKROOM_ACTIX_DEMO_BIN").map_or_else(
        || env!("CARGO_BIN_EXE_cloakroom-actix-demo").into(),
        PathBuf::from,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_time_out_and_free_their_connections() {
    scenario::slow_bodies_time_out_and_free_their_connections(&demo_bin()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_are_cut_on_every_request_of_a_connection() {
    scenario::slow_heads_are_cut_on_every_request_of_a_connection(&demo_bin()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_declared_bodies_get_413_at_once() {
    scenario::oversized_declared_bodies_get_413_at_once(&demo_bin()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_get_503_at_once() {
    scenario::connections_past_the_cap_get_503_at_once(&demo_bin()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431() {
    scenario::oversized_heads_get_431(&demo_bin()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_does_not_wait_for_idle_keep_alive_connections() {
    scenario::a_stop_does_not_wait_for_idle_keep_alive_connections(&demo_bin()).await;
}
