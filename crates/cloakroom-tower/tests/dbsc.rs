//! The tower adapter's DBSC glue in process (`oneshot`): the session layer answers the DBSC
//! endpoints itself, offers early challenges near a bound cookie's expiry, and
//! `DeviceBoundLayer` fails closed without a session layer. The whole flow runs over HTTP in
//! `examples/actix-demo/tests/dbsc.rs` (both demos).
#![cfg(feature = "dbsc")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use cloakroom_core::dbsc::DbscSettings;
use cloakroom_core::{Key, KeyRing, MemoryStore, Session, SessionSettings};
use cloakroom_testkit::dbsc::{DeviceKey, challenge_item, quoted_after};
use cloakroom_testkit::probe::Probe;
use cloakroom_tower::{DeviceBoundLayer, SessionLayer};
use http::{HeaderMap, Request, StatusCode};
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

/// A browser's cookie jar over `oneshot`: sends its cookies, keeps what `Set-Cookie` sets.
struct Jar(BTreeMap<String, String>);

impl Jar {
    async fn send(
        &mut self,
        app: &Router,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap) {
        let mut req = Request::builder().method(method).uri(path);
        let cookies: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        if !cookies.is_empty() {
            req = req.header("Cookie", cookies.join("; "));
        }
        for (name, value) in extra {
            req = req.header(*name, *value);
        }
        let res = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        for set in res.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.0.insert(name.to_owned(), value.to_owned());
        }
        (res.status(), res.headers().clone())
    }
}

/// The `Secure-Session-Challenge` values of a response.
fn challenges(headers: &HeaderMap) -> Vec<String> {
    (headers.get_all("secure-session-challenge").iter())
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The bound cookie's lifetime here: the early-challenge window is its last half (2 s), at
/// most one early challenge per session per second.
const BOUND: Duration = Duration::from_secs(4);

#[tokio::test]
async fn a_bound_cookie_near_expiry_gets_one_early_challenge_that_refreshes_without_a_403() {
    let probe = Arc::new(Probe::default());
    let dbsc = DbscSettings::new("https://app.example")
        .unwrap()
        .with_bound_lifetime(BOUND)
        .unwrap();
    let engine = SessionSettings::new(probe.clone(), KeyRing::single(Key::generate()))
        .with_dbsc(dbsc)
        .build();
    let app = Router::new()
        .route("/account", get(|| async { "account" }))
        .route_layer(DeviceBoundLayer::new())
        .route(
            "/login",
            post(|session: Session| async move {
                session.login("ada").await.unwrap();
                "in"
            }),
        )
        .layer(SessionLayer::new(engine));
    let mut jar = Jar(BTreeMap::new());
    let (status, login) = jar.send(&app, "POST", "/login", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let offer = login
        .get("secure-session-registration")
        .unwrap()
        .to_str()
        .unwrap();
    let challenge = quoted_after(offer, "challenge=\"").unwrap().to_owned();
    assert!(
        challenges(&login).is_empty(),
        "a login offers registration, no challenge"
    );

    // Registration: its answer carries the challenge for the first refresh.
    let device = DeviceKey::generate();
    let proof = device.registration(&challenge);
    let (status, registered) = jar
        .send(
            &app,
            "POST",
            "/dbsc/register",
            &[("Secure-Session-Response", &proof)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let [given] = &challenges(&registered)[..] else {
        panic!("{registered:?}")
    };
    let (_, id) = challenge_item(given).unwrap();
    let id = id.to_owned();

    // A fresh bound cookie: no challenge, and not one store command.
    let before = probe.calls();
    let (status, fresh) = jar.send(&app, "GET", "/account", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(challenges(&fresh).is_empty(), "{fresh:?}");
    assert_eq!(
        probe.calls(),
        before,
        "a fresh bound cookie costs no store command"
    );

    // In the window: one early challenge (one store command), exactly as Chromium parses it,
    // then none for the rest of the half window.
    tokio::time::sleep(BOUND / 2 + Duration::from_millis(300)).await;
    let before = probe.calls();
    let (status, near) = jar.send(&app, "GET", "/account", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(probe.calls(), before + 1, "one put_challenge");
    let [early] = &challenges(&near)[..] else {
        panic!("{near:?}")
    };
    let (challenge, early_id) = challenge_item(early).unwrap_or_else(|| panic!("{early}"));
    assert_eq!(early_id, id);
    assert_eq!(challenge.len(), 43, "256 random bits, base64url");
    assert_eq!(early, &format!("\"{challenge}\";id=\"{id}\""));
    let cache = near.get("cache-control").map(|v| v.to_str().unwrap());
    assert_eq!(cache, Some("no-store"), "a challenge names the session");
    let before = probe.calls();
    let (_, again) = jar.send(&app, "GET", "/account", &[]).await;
    assert!(challenges(&again).is_empty(), "rate-bounded: {again:?}");
    assert_eq!(probe.calls(), before);

    // The browser refreshes with it at once: 200, no 403 first; the challenge is used up.
    let proof = device.refresh(challenge);
    let refresh = [
        ("Sec-Secure-Session-Id", id.as_str()),
        ("Secure-Session-Response", proof.as_str()),
    ];
    let (status, refreshed) = jar.send(&app, "POST", "/dbsc/refresh", &refresh).await;
    assert_eq!(status, StatusCode::OK, "{refreshed:?}");
    let (status, _) = jar.send(&app, "POST", "/dbsc/refresh", &refresh).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a replayed early challenge");
    // The new bound cookie is fresh again: no challenge, no store command.
    let before = probe.calls();
    let (status, fresh) = jar.send(&app, "GET", "/account", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(challenges(&fresh).is_empty());
    assert_eq!(probe.calls(), before);
}
