//! Commands sent to Redis per request through the session layer, counted by the server
//! itself (its slow log records every command a client sends; of a transaction, `MULTI` and
//! the commands `EXEC` ran: one round trip).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::{get, post};
use cloakroom_core::{Key, KeyRing};
use cloakroom_redis::RedisStore;
use cloakroom_testkit::redis_server::RedisServer;
use cloakroom_tower::{Session, SessionError, SessionLayer, SessionSettings};
use http::{Request, Response, header};
use tower::ServiceExt;

async fn app(server: &RedisServer, touch: Duration) -> Router {
    let store = RedisStore::open(&format!("{}?prefix=rt:", server.url()))
        .await
        .unwrap();
    let engine = SessionSettings::new(Arc::new(store), KeyRing::single(Key::generate()))
        .with_idle_timeout(Duration::from_secs(3600))
        .unwrap()
        .with_touch_interval(touch)
        .build();
    let layer = SessionLayer::new(engine);
    Router::new()
        .route(
            "/read/{k}",
            get(|s: Session, Path(k): Path<String>| async move {
                Ok::<_, SessionError>(s.get::<u64>(&k).await?.unwrap_or(0).to_string())
            }),
        )
        .route(
            "/blind/{k}",
            post(|s: Session, Path(k): Path<String>| async move {
                s.set(&k, &1u64).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/incr/{k}",
            post(|s: Session, Path(k): Path<String>| async move {
                let n = s.get::<u64>(&k).await?.unwrap_or(0) + 1;
                s.set(&k, &n).await?;
                Ok::<_, SessionError>(n.to_string())
            }),
        )
        .route(
            "/login/{u}",
            post(|s: Session, Path(u): Path<String>| async move {
                s.login(&u).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .layer(layer)
}

async fn send(app: &Router, method: &str, uri: &str, cookie: Option<&str>) -> Response<Body> {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    app.clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

fn cookie(res: &Response<Body>) -> String {
    let v = res.headers()[header::SET_COOKIE].to_str().unwrap();
    v.split(';').next().unwrap().to_owned()
}

/// Commands `f` sends, with the script cache warm.
async fn count<F: std::future::Future<Output = Response<Body>>>(
    server: &RedisServer,
    f: F,
) -> (u64, Vec<String>, Response<Body>) {
    server.reset_stats();
    let res = f.await;
    (server.command_count(), server.commands_sent(), res)
}

/// A load, then a patch or touch (one transaction).
const LOAD_AND_PATCH: [&str; 5] = ["hgetall", "multi", "hset", "pexpireat", "pexpireat"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_per_request() {
    let server = RedisServer::start();
    let app = app(&server, Duration::from_secs(600)).await;
    // Warm the script cache (the first EVALSHA of each script after a start loads it).
    let warm = cookie(&send(&app, "POST", "/incr/w", None).await);
    send(&app, "POST", "/incr/w", Some(&warm)).await;
    send(&app, "POST", "/blind/w", Some(&warm)).await;

    let (n, sent, res) = count(&server, send(&app, "POST", "/incr/a", None)).await;
    assert_eq!(n, 1, "new session: {sent:?}");
    let c = cookie(&res);

    let (n, sent, _) = count(&server, send(&app, "GET", "/read/a", Some(&c))).await;
    assert_eq!(n, 1, "read: {sent:?}");

    let (n, sent, res) = count(&server, send(&app, "GET", "/read/a", Some(&c))).await;
    assert_eq!(n, 1, "unchanged read, touch not due: {sent:?}");
    assert!(res.headers().get(header::SET_COOKIE).is_none());

    let (n, sent, _) = count(&server, send(&app, "POST", "/blind/b", Some(&c))).await;
    assert_eq!(n, 1, "blind write: {sent:?}");

    let (_, sent, _) = count(&server, send(&app, "POST", "/incr/a", Some(&c))).await;
    assert_eq!(
        sent, LOAD_AND_PATCH,
        "read then write: a load and one transaction"
    );

    let (n, sent, _) = count(&server, send(&app, "GET", "/read/x", None)).await;
    assert_eq!(n, 0, "no cookie, bare read: {sent:?}");

    let (n, sent, _) = count(
        &server,
        send(&app, "GET", "/read/a", Some("__Host-session=forged")),
    )
    .await;
    assert_eq!(n, 0, "a forged ticket never reaches Redis: {sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_expiry_touches_only_when_due() {
    let server = RedisServer::start();
    let app = app(&server, Duration::from_millis(300)).await;
    let c = cookie(&send(&app, "POST", "/incr/a", None).await);
    send(&app, "POST", "/incr/a", Some(&c)).await;
    let (n, sent, _) = count(&server, send(&app, "GET", "/read/a", Some(&c))).await;
    assert_eq!(n, 1, "read right after a write: {sent:?}");
    tokio::time::sleep(Duration::from_millis(350)).await;
    let warm = count(&server, send(&app, "GET", "/read/a", Some(&c))).await;
    assert_eq!(warm.1, LOAD_AND_PATCH, "due");
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (_, sent, _) = count(&server, send(&app, "GET", "/read/a", Some(&c))).await;
    assert_eq!(sent, LOAD_AND_PATCH, "a due touch: load + touch");
    let (n, sent, _) = count(&server, send(&app, "GET", "/read/a", Some(&c))).await;
    assert_eq!(n, 1, "and not again until due: {sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_is_a_create_plus_index_and_a_delete() {
    let server = RedisServer::start();
    let app = app(&server, Duration::from_secs(600)).await;
    let c = cookie(&send(&app, "POST", "/incr/a", None).await);
    // Warm the scripts a login uses.
    let w = cookie(&send(&app, "POST", "/login/warm", None).await);
    send(&app, "POST", "/login/warm", Some(&w)).await;
    let (_, sent, _) = count(&server, send(&app, "POST", "/login/ada", Some(&c))).await;
    // load, create (+ user index add), delete of the old record
    assert_eq!(
        sent,
        ["hgetall", "restore", "evalsha", "evalsha"],
        "{sent:?}"
    );
}
