//! The demo on PostgreSQL, as separate processes over real HTTP: PostgreSQL stopped under
//! traffic is a bounded run of 503s, and started again it serves the same sessions without
//! restarting the demo; two demo processes share logins through one database.

use std::time::{Duration, Instant};

use cloakroom_testkit::demo_client::{client, me, post};
use cloakroom_testkit::postgres_server::PostgresServer;
use cloakroom_testkit::process::ServerProcess;
use reqwest::StatusCode;

async fn start_demo(dir: &std::path::Path, store: &str) -> ServerProcess {
    let users = format!("sqlite://{}", dir.join("users.db").display());
    ServerProcess::start(
        env!("CARGO_BIN_EXE_cloakroom-demo"),
        &["--store", store, "--users", &users, "--keys", KEYS],
        dir,
    )
    .await
}

const KEYS: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_is_503s_then_recovers_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A server of its own: it is stopped mid-test.
    let pg = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap();
    let store = format!("{}?timeout_ms=1000", pg.url());
    let demo = start_demo(dir.path(), &store).await;
    let base = demo.base();
    let c = client();
    assert_eq!(
        post(
            &c,
            &base,
            "/register",
            &[("name", "ada"), ("password", "analytical")]
        )
        .await
        .status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(me(&c, &base).await.0, StatusCode::OK);

    // Traffic while PostgreSQL is down.
    let pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let start = Instant::now();
        let res = c.get(format!("{base}/api/me")).send().await.unwrap();
        worst = worst.max(start.elapsed());
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(
        worst < Duration::from_secs(5),
        "a 503 took {worst:?} (timeout 1 s)"
    );
    let health = c.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);

    // PostgreSQL comes back with its data: the same session is served again.
    let pg = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .unwrap();
    let back = Instant::now();
    loop {
        let res = c.get(format!("{base}/healthz")).send().await.unwrap();
        if res.status() == StatusCode::OK {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(20), "no recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "recovered {:?} after PostgreSQL restarted; slowest 503 took {worst:?}",
        back.elapsed()
    );
    let (status, body) = me(&c, &base).await;
    assert_eq!(
        (status, body["name"].as_str()),
        (StatusCode::OK, Some("ada"))
    );
    assert!(!demo.log_text().contains("panicked"), "{}", demo.log_text());
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_demo_processes_share_logins_through_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let pg = tokio::task::spawn_blocking(PostgresServer::start)
        .await
        .unwrap();
    let store = format!("{}?schema=demo", pg.url());
    let a = start_demo(dir.path(), &store).await;
    let b = start_demo(dir.path(), &store).await;
    let c = client();
    // Created through A...
    assert_eq!(
        post(
            &c,
            &a.base(),
            "/register",
            &[("name", "lin"), ("password", "distributed")]
        )
        .await
        .status(),
        StatusCode::SEE_OTHER
    );
    // ...used and modified through B (cookies are per host, not per port: one jar).
    let (status, body) = me(&c, &b.base()).await;
    assert_eq!(
        (status, body["name"].as_str()),
        (StatusCode::OK, Some("lin"))
    );
    assert_eq!(
        post(&c, &b.base(), "/notes", &[("text", "written on B")])
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        me(&c, &a.base()).await.1["notes"],
        serde_json::json!(["written on B"])
    );
    // A logout on A is seen by B.
    assert_eq!(
        post(&c, &a.base(), "/logout", &[]).await.status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(me(&c, &b.base()).await.0, StatusCode::UNAUTHORIZED);
}
