//! The demo on Redis, as separate processes over real HTTP: a Redis outage under traffic is
//! a bounded run of 503s and recovers without restarting the demo; two demo processes share
//! sessions through one Redis.

use std::time::{Duration, Instant};

use cloakroom_testkit::demo_client::{client, me, post};
use cloakroom_testkit::process::ServerProcess;
use cloakroom_testkit::redis_server::RedisServer;
use reqwest::StatusCode;

async fn start_demo(dir: &std::path::Path, redis: &RedisServer, keys: &str) -> ServerProcess {
    let store = format!("redis://127.0.0.1:{}/5?timeout_ms=500", redis.port());
    let users = format!("sqlite://{}", dir.join("users.db").display());
    ServerProcess::start(
        env!("CARGO_BIN_EXE_cloakroom-demo"),
        &["--store", &store, "--users", &users, "--keys", keys],
        dir,
    )
    .await
}

const KEYS: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_503s_then_recovers_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let demo = start_demo(dir.path(), &redis, KEYS).await;
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

    // Traffic while Redis dies.
    redis.stop();
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let start = Instant::now();
        let res = c.get(format!("{base}/api/me")).send().await.unwrap();
        worst = worst.max(start.elapsed());
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(
        worst < Duration::from_secs(2),
        "a 503 took {worst:?} (timeout 500 ms)"
    );
    let health = c.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Routes that need no session keep serving.
    let metrics = c.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);

    // Redis comes back (empty: the test server keeps nothing on disk).
    redis.restart();
    let back = Instant::now();
    loop {
        let res = c.get(format!("{base}/healthz")).send().await.unwrap();
        if res.status() == StatusCode::OK {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(10), "no recovery");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovered = back.elapsed();
    eprintln!("recovered {recovered:?} after Redis restarted; slowest 503 took {worst:?}");
    // The session died with Redis's memory: a clean 401, then a fresh login works.
    assert_eq!(me(&c, &base).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        post(
            &c,
            &base,
            "/login",
            &[("name", "ada"), ("password", "analytical")]
        )
        .await
        .status(),
        StatusCode::SEE_OTHER
    );
    assert_eq!(me(&c, &base).await.1["name"], "ada");
    assert!(!demo.log_text().contains("panicked"), "{}", demo.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_demo_processes_share_sessions_through_redis() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let a = start_demo(dir.path(), &redis, KEYS).await;
    let b = start_demo(dir.path(), &redis, KEYS).await;
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
