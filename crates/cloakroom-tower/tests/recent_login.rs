//! The recent-login guard on axum, end to end with `oneshot`: a fresh login passes, a stale
//! one is sent to confirm (pages) or refused with a JSON reason (APIs), a reauthentication
//! lets it through, and a store failure is a 503.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use cloakroom_core::session::AuthMethod;
use cloakroom_core::{Key, KeyRing};
use cloakroom_testkit::probe::Probe;
use cloakroom_tower::{
    RecentLogin, RecentLoginLayer, Session, SessionError, SessionLayer, SessionSettings,
};
use http::{Request, Response, StatusCode, header};
use tower::ServiceExt;

const WINDOW: Duration = Duration::from_millis(300);

fn app(probe: &Arc<Probe>) -> Router {
    let engine = SessionSettings::new(probe.clone(), KeyRing::single(Key::generate()))
        .with_cookie_secure(false)
        .unwrap()
        .build();
    let recent = RecentLogin::new(WINDOW, "/confirm")
        .unwrap()
        .with_login_url("/login")
        .unwrap();
    let guarded = axum::routing::get(|| async { "secret page" })
        .post(|| async { "done" })
        .layer(RecentLoginLayer::new(recent));
    Router::new()
        .route("/account", guarded)
        .route(
            "/login",
            post(|s: Session| async move {
                s.login("ana").await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/confirm",
            post(|s: Session| async move {
                s.reauthenticate(AuthMethod::Password).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .layer(SessionLayer::new(engine))
}

async fn send(app: &Router, method: &str, uri: &str, cookie: &str, accept: &str) -> Response<Body> {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::COOKIE, cookie)
        .header(header::ACCEPT, accept)
        .header(header::HOST, "example.com")
        .header(header::REFERER, "http://example.com/settings")
        .body(Body::empty())
        .unwrap();
    app.clone().oneshot(req).await.unwrap()
}

async fn json(res: Response<Body>) -> serde_json::Value {
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn login(app: &Router) -> String {
    let res = send(app, "POST", "/login", "", "*/*").await;
    let cookie = res.headers()[header::SET_COOKIE].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_fresh_login_passes_a_stale_one_is_refused_until_reauthenticated() {
    let probe = Arc::new(Probe::default());
    let app = app(&probe);
    let cookie = login(&app).await;
    let res = send(&app, "GET", "/account", &cookie, "text/html").await;
    assert_eq!(res.status(), StatusCode::OK, "fresh login");

    tokio::time::sleep(WINDOW + Duration::from_millis(100)).await;
    // A page: 303 to the confirm page, `next` the page itself.
    let res = send(
        &app,
        "GET",
        "/account?tab=1",
        &cookie,
        "text/html,*/*;q=0.8",
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        res.headers()[header::LOCATION],
        "/confirm?next=%2Faccount%3Ftab%3D1"
    );
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
    // A form post: `next` is the page the form was on.
    let res = send(&app, "POST", "/account", &cookie, "text/html").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[header::LOCATION], "/confirm?next=%2Fsettings");
    // An API call: 401 with a machine-readable reason.
    let res = send(&app, "POST", "/account", &cookie, "application/json").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()[header::WWW_AUTHENTICATE],
        "Session error=\"reauthentication_required\", max_age=1"
    );
    assert_eq!(
        json(res).await,
        serde_json::json!({"error": "reauthentication_required", "max_age": 1, "confirm_url": "/confirm"})
    );

    let res = send(&app, "POST", "/confirm", &cookie, "*/*").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers().get(header::SET_COOKIE).is_none(),
        "same ticket"
    );
    let res = send(&app, "POST", "/account", &cookie, "application/json").await;
    assert_eq!(res.status(), StatusCode::OK, "reauthenticated");
}

#[tokio::test]
async fn without_a_login_pages_go_to_the_login_and_apis_get_401() {
    let probe = Arc::new(Probe::default());
    let app = app(&probe);
    let res = send(&app, "GET", "/account", "", "text/html").await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[header::LOCATION], "/login?next=%2Faccount");
    let res = send(&app, "POST", "/account", "", "application/json").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(res).await["error"], "login_required");
}

#[tokio::test]
async fn a_store_failure_is_a_503_never_a_pass() {
    let probe = Arc::new(Probe::default());
    let app = app(&probe);
    let cookie = login(&app).await;
    probe.fail.store(true, Ordering::SeqCst);
    let res = send(&app, "POST", "/account", &cookie, "application/json").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    probe.fail.store(false, Ordering::SeqCst);
    let res = send(&app, "POST", "/account", &cookie, "application/json").await;
    assert_eq!(res.status(), StatusCode::OK);
}
