//! The tower adapter's DBSC glue in process (`oneshot`): the session layer answers the DBSC
//! endpoints itself, and `DeviceBoundLayer` fails closed without a session layer. The whole
//! flow runs over HTTP in `examples/actix-demo/tests/dbsc.rs` (both demos).
#![cfg(feature = "dbsc")]

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use cloakroom_core::dbsc::DbscSettings;
use cloakroom_core::{Key, KeyRing, MemoryStore, SessionSettings};
use cloakroom_tower::{DeviceBoundLayer, SessionLayer};
use http::{Request, StatusCode};
use tower::ServiceExt as _;

fn engine(dbsc: bool) -> cloakroom_core::SessionEngine {
    let mut settings = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate()));
    if dbsc {
        settings = settings.with_dbsc(DbscSettings::new("https://app.example").unwrap());
    }
    settings.build()
}

async fn send(
    app: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn the_session_layer_answers_the_dbsc_endpoints_before_the_app() {
    let app = Router::new()
        .route("/dbsc/refresh", post(|| async { "the app" }))
        .route("/dbsc/register", post(|| async { "the app" }))
        .layer(SessionLayer::new(engine(true)));
    let (status, body) = send(&app, "POST", "/dbsc/refresh", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("Sec-Secure-Session-Id"), "{body}");
    let (status, _) = send(
        &app,
        "POST",
        "/dbsc/register",
        &[("Secure-Session-Response", "a.b")],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let cross = [
        ("Origin", "https://evil.example"),
        ("Sec-Secure-Session-Id", "x"),
    ];
    assert_eq!(
        send(&app, "POST", "/dbsc/refresh", &cross).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&app, "GET", "/dbsc/refresh", &[]).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );

    // DBSC off: the paths are the application's.
    let off = Router::new()
        .route("/dbsc/refresh", post(|| async { "the app" }))
        .layer(SessionLayer::new(engine(false)));
    assert_eq!(
        send(&off, "POST", "/dbsc/refresh", &[]).await,
        (StatusCode::OK, "the app".into())
    );
}

#[tokio::test]
async fn a_guarded_route_admits_requests_without_a_session_and_fails_closed_without_the_layer() {
    let guarded = Router::new()
        .route("/account", get(|| async { "account" }))
        .route_layer(DeviceBoundLayer::new().with_redirect("/login"));
    let app = guarded.clone().layer(SessionLayer::new(engine(true)));
    // No ticket: nothing to protect (the route's own login check decides).
    assert_eq!(send(&app, "GET", "/account", &[]).await.0, StatusCode::OK);
    // A forged ticket is no ticket.
    let forged = [("Cookie", "__Host-session=forged")];
    assert_eq!(
        send(&app, "GET", "/account", &forged).await.0,
        StatusCode::OK
    );
    // Without the session layer: a server error, never a silent pass.
    let (status, body) = send(&guarded, "GET", "/account", &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
}
