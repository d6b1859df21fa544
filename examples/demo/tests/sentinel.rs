//! The demo on Redis through Sentinel, as a separate process over real HTTP: logged in
//! through `redis+sentinel://`, the master killed with SIGKILL, the demo answers 503 while the
//! sentinels promote the replica and then serves the same logged-in session from it, without
//! a restart.

use std::time::{Duration, Instant};

use cloakroom_testkit::demo_client::{client, me, post};
use cloakroom_testkit::process::ServerProcess;
use cloakroom_testkit::sentinel_server::SentinelTopology;
use reqwest::StatusCode;

const KEYS: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_is_503s_then_the_same_session_from_the_new_master() {
    let dir = tempfile::tempdir().unwrap();
    let topology = SentinelTopology::start();
    let store = format!("{}?timeout_ms=500", topology.url(5));
    let users = format!("sqlite://{}", dir.path().join("users.db").display());
    let demo = ServerProcess::start(
        env!("CARGO_BIN_EXE_cloakroom-demo"),
        &["--store", &store, "--users", &users, "--keys", KEYS],
        dir.path(),
    )
    .await;
    let base = demo.base();
    let ada = client();
    let register = [("name", "ada"), ("password", "analytical")];
    assert_eq!(
        post(&ada, &base, "/register", &register).await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(me(&ada, &base).await.0, StatusCode::OK);
    // Without ?wait=N the login is replicated asynchronously: let it arrive first.
    topology.await_replicated(Duration::from_secs(10));

    let old = topology.kill_master();
    let killed = Instant::now();
    let mut unavailable = 0;
    let switched = loop {
        let started = Instant::now();
        let (status, body) = me(&ada, &base).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "a response took {took:?}");
        match status {
            StatusCode::OK => {
                assert_eq!(body["name"], "ada", "{body}");
                break killed.elapsed();
            }
            StatusCode::SERVICE_UNAVAILABLE => unavailable += 1,
            other => panic!("during the failover: {other} {body} (logged out?)"),
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the demo did not follow the failover within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let new = topology.wait_for_new_master(old, Duration::from_secs(30));
    println!(
        "demo failover: master {old} killed; 503 x {unavailable}; the same session served by \
         {new} {switched:?} after the kill"
    );
    assert!(unavailable > 0, "the sentinels take >= 1 s to notice");

    // New logins land on the new master; the demo was never restarted.
    let bo = client();
    let register = [("name", "bo"), ("password", "bobobobobo")];
    assert_eq!(
        post(&bo, &base, "/register", &register).await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(me(&bo, &base).await.0, StatusCode::OK);
    assert_eq!(me(&ada, &base).await.0, StatusCode::OK);
}
