//! Revoking through the CLI logs that browser out on its next request; a handle is not a
//! ticket.

mod common;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use axum::routing::{get, post};
use cloakroom::{Key, KeyRing, Session, SessionError, SessionLayer, SessionSettings};
use tower::ServiceExt as _;

fn app(store: Arc<dyn cloakroom::SessionStore>) -> Router {
    Router::new()
        .route(
            "/login",
            post(|s: Session| async move {
                s.login("ada").await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/who",
            get(|s: Session| async move {
                Ok::<_, SessionError>(s.user().await?.unwrap_or_else(|| "-".into()))
            }),
        )
        .layer(SessionLayer::new(
            SessionSettings::new(store, KeyRing::single(Key::from_bytes(&[3; 32]).unwrap()))
                .build(),
        ))
}

async fn who(app: &Router, cookie: &str) -> String {
    let req = Request::get("/who")
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_handle_logs_that_browser_out_and_handles_are_not_tickets() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = common::open(&url).await;
    let app = app(store);
    let res = app
        .clone()
        .oneshot(Request::post("/login").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let cookie = res.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(who(&app, &cookie).await, "ada");

    let listed = common::json(&common::cloakroom(
        Some(&url),
        &["sessions", "list", "--json"],
    ));
    let handle = listed[0]["handle"].as_str().unwrap().to_owned();
    // The handle is public; used as a cookie it is nothing.
    let name = cookie.split('=').next().unwrap();
    assert_eq!(who(&app, &format!("{name}={handle}")).await, "-");
    assert!(!cookie.contains(&handle));

    common::ok(&common::cloakroom(
        Some(&url),
        &["sessions", "revoke", &handle],
    ));
    assert_eq!(
        who(&app, &cookie).await,
        "-",
        "revoked session still logged in"
    );
}
