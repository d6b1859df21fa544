//! A mixed fleet: one axum demo and one actix-web demo on the same session store (a SQLite
//! file; Redis) and the same accounts database, one browser (one cookie jar: cookies are not
//! port-bound, so the same cookie goes to both). A login on one is a login on the other, a
//! logout on either is seen by both, notes written through both survive.

mod common;

use std::path::Path;

use cloakroom_testkit::process::ServerProcess;
use cloakroom_testkit::redis_server::RedisServer;
use common::{Demo, PASSWORD, client, login, me, post, register, token};
use reqwest::StatusCode;

/// Starts the axum demo, then the actix one (so the key file beside the accounts database,
/// made by the first, is read by the second), on `store`.
async fn fleet(store: &str, dir: &Path) -> (ServerProcess, ServerProcess) {
    let users = format!("sqlite://{}", dir.join("users.db").display());
    let args = ["--store", store, "--users", &users];
    let axum = Demo::Axum.start(&args, dir).await;
    let actix = Demo::Actix.start(&args, dir).await;
    (axum, actix)
}

/// The fleet scenario: `a` and `b` are the two demos' base URLs.
async fn one_browser_two_frameworks(a: &str, b: &str) {
    let browser = client();
    register(&browser, a, "ana").await;
    let (status, mine) = me(&browser, b).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "registered on {a}, not logged in on {b}"
    );
    assert_eq!(mine["name"], "ana");

    // Notes through both, by form and by script; each sees the other's.
    let res = post(&browser, b, "/notes", &[("text", "through actix")]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = browser
        .post(format!("{a}/api/notes"))
        .header("X-XSRFToken", token(&browser, a).await)
        .json(&serde_json::json!({ "text": "through axum" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let both = serde_json::json!(["through actix", "through axum"]);
    for base in [a, b] {
        assert_eq!(me(&browser, base).await.1["notes"], both, "{base}");
    }
    // A token rendered by one is accepted by the other.
    let res = browser
        .post(format!("{b}/api/notes"))
        .header("X-XSRFToken", token(&browser, a).await)
        .json(&serde_json::json!({ "text": "token from axum" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);

    // Logout on actix: logged out on both.
    let res = post(&browser, b, "/logout", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    for base in [a, b] {
        assert_eq!(
            me(&browser, base).await.0,
            StatusCode::UNAUTHORIZED,
            "{base}"
        );
    }
    // Login on actix, logout on axum: the same the other way round.
    login(&browser, b, "ana").await;
    assert_eq!(me(&browser, a).await.0, StatusCode::OK);
    let (_, home) = common::get(&browser, a, "/").await;
    assert!(
        home.contains("Welcome back, ana"),
        "the flash set by actix, shown by axum"
    );
    let other = client();
    login(&other, a, "ana").await;
    let (_, sessions) = common::get(&other, b, "/sessions").await;
    assert_eq!(sessions.matches("data-handle=").count(), 2, "{sessions}");
    let res = post(&browser, a, "/logout", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    for base in [a, b] {
        assert_eq!(
            me(&browser, base).await.0,
            StatusCode::UNAUTHORIZED,
            "{base}"
        );
        assert_eq!(
            me(&other, base).await.0,
            StatusCode::OK,
            "{base}: the other session lives"
        );
    }
    // The password is the same account's on both.
    let res = post(
        &client(),
        b,
        "/login",
        &[("name", "ana"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_and_actix_share_sessions_in_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("sessions.db").display());
    let (axum, actix) = fleet(&store, dir.path()).await;
    one_browser_two_frameworks(&axum.base(), &actix.base()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_and_actix_share_sessions_in_one_redis() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let store = format!("redis://127.0.0.1:{}/3", redis.port());
    let (axum, actix) = fleet(&store, dir.path()).await;
    one_browser_two_frameworks(&axum.base(), &actix.base()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_a_503_on_both_and_both_recover() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let store = format!("redis://127.0.0.1:{}/4?timeout_ms=500", redis.port());
    let (axum, actix) = fleet(&store, dir.path()).await;
    let browser = client();
    register(&browser, &actix.base(), "ana").await;

    redis.stop();
    for base in [axum.base(), actix.base()] {
        let started = std::time::Instant::now();
        let res = browser.get(format!("{base}/api/me")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{base}");
        assert_eq!(res.headers()["retry-after"], "1", "{base}");
        // Bounded by the store timeout (500 ms), with room for a busy machine.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{base}"
        );
        let res = browser.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{base}");
        let (status, metrics) = common::get(&browser, &base, "/metrics").await;
        assert_eq!(status, StatusCode::OK, "{base}: /metrics needs no store");
        assert!(
            !metrics.contains("cloakroom_demo_store_errors_total 0\n"),
            "{base}: store errors counted\n{metrics}"
        );
    }

    redis.restart();
    for base in [axum.base(), actix.base()] {
        let back = std::time::Instant::now();
        while browser
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            != StatusCode::OK
        {
            assert!(
                back.elapsed() < std::time::Duration::from_secs(10),
                "{base}: no recovery"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    // The session died with Redis's memory; a fresh login on one is seen by the other.
    assert_eq!(me(&browser, &axum.base()).await.0, StatusCode::UNAUTHORIZED);
    login(&browser, &axum.base(), "ana").await;
    assert_eq!(me(&browser, &actix.base()).await.1["name"], "ana");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_and_actix_share_pycket_sessions_in_one_redis() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start();
    let store = format!(
        "pycket+redis://127.0.0.1:{}/6?notifications_db=7",
        redis.port()
    );
    let users = format!("sqlite://{}", dir.path().join("users.db").display());
    let args = [
        "--store",
        &store,
        "--users",
        &users,
        "--tornado-secret",
        "s3cret",
    ];
    let axum = Demo::Axum.start(&args, dir.path()).await;
    let actix = Demo::Actix.start(&args, dir.path()).await;
    let (a, b) = (axum.base(), actix.base());
    let browser = client();
    let token = token(&browser, &a).await;
    let res = browser
        .post(format!("{b}/register"))
        .form(&[("name", "ana"), ("password", PASSWORD), ("_xsrf", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "the axum demo's `_xsrf` token, on actix"
    );
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with("PYCKET_ID="), "{cookie}");
    assert_eq!(me(&browser, &a).await.1["name"], "ana");
    let res = post(&browser, &a, "/notes", &[("text", "through axum")]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = post(&browser, &b, "/notes", &[("text", "through actix")]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let both = serde_json::json!(["through axum", "through actix"]);
    assert_eq!(me(&browser, &b).await.1["notes"], both);
    let res = post(&browser, &a, "/logout", &[]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(me(&browser, &b).await.0, StatusCode::UNAUTHORIZED);
}
