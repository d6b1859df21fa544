//! The recent-login guard on actix-web, end to end with `actix_web::test`: a fresh login
//! passes, a stale one is sent to confirm (pages) or refused with a JSON reason (APIs), a
//! reauthentication lets it through, and a store failure is a 503.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::test::{self, TestRequest};
use actix_web::{App, web};
use cloakroom_actix::{Error, RecentLogin, RecentLoginMiddleware, Session, SessionMiddleware};
use cloakroom_core::session::AuthMethod;
use cloakroom_core::{Key, KeyRing, SessionSettings};
use cloakroom_testkit::probe::Probe;

const WINDOW: Duration = Duration::from_millis(300);

macro_rules! app {
    ($probe:expr) => {{
        let engine = SessionSettings::new($probe.clone(), KeyRing::single(Key::generate()))
            .with_cookie_secure(false)
            .unwrap()
            .build();
        let recent = RecentLogin::new(WINDOW, "/confirm")
            .unwrap()
            .with_login_url("/login")
            .unwrap();
        test::init_service(
            App::new()
                .wrap(SessionMiddleware::new(engine))
                .service(
                    web::resource("/account")
                        .wrap(RecentLoginMiddleware::new(recent))
                        .route(web::get().to(|| async { "secret page" }))
                        .route(web::post().to(|| async { "done" })),
                )
                .route(
                    "/login",
                    web::post().to(|s: Session| async move {
                        s.login("ana").await?;
                        Ok::<_, Error>("ok")
                    }),
                )
                .route(
                    "/confirm",
                    web::post().to(|s: Session| async move {
                        s.reauthenticate(AuthMethod::Password).await?;
                        Ok::<_, Error>("ok")
                    }),
                ),
        )
        .await
    }};
}

fn header_of<B>(res: &ServiceResponse<B>, name: header::HeaderName) -> String {
    res.headers()
        .get(name)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

async fn json<B: MessageBody>(res: ServiceResponse<B>) -> serde_json::Value {
    serde_json::from_slice(&test::read_body(res).await).unwrap()
}

fn request(method: &str, uri: &str, cookie: &str, accept: &str) -> actix_http::Request {
    let method = actix_web::http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = TestRequest::default()
        .method(method)
        .uri(uri)
        .insert_header((header::ACCEPT, accept))
        .insert_header((header::HOST, "example.com"))
        .insert_header((header::REFERER, "http://example.com/settings"));
    if !cookie.is_empty() {
        req = req.insert_header((header::COOKIE, cookie));
    }
    req.to_request()
}

async fn login<S, B>(app: &S) -> String
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let res = test::call_service(app, request("POST", "/login", "", "*/*")).await;
    let cookie = header_of(&res, header::SET_COOKIE);
    cookie.split(';').next().unwrap().to_owned()
}

#[actix_web::test]
async fn a_fresh_login_passes_a_stale_one_is_refused_until_reauthenticated() {
    let probe = Arc::new(Probe::default());
    let app = app!(probe);
    let cookie = login(&app).await;
    let res = test::call_service(&app, request("GET", "/account", &cookie, "text/html")).await;
    assert_eq!(res.status(), StatusCode::OK, "fresh login");

    tokio::time::sleep(WINDOW + Duration::from_millis(100)).await;
    let res =
        test::call_service(&app, request("GET", "/account?tab=1", &cookie, "text/html")).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        header_of(&res, header::LOCATION),
        "/confirm?next=%2Faccount%3Ftab%3D1"
    );
    let res = test::call_service(&app, request("POST", "/account", &cookie, "text/html")).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        header_of(&res, header::LOCATION),
        "/confirm?next=%2Fsettings"
    );
    let res = test::call_service(
        &app,
        request("POST", "/account", &cookie, "application/json"),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header_of(&res, header::WWW_AUTHENTICATE),
        "Session error=\"reauthentication_required\", max_age=1"
    );
    let body = json(res).await;
    assert_eq!(
        body,
        serde_json::json!({"error": "reauthentication_required", "max_age": 1, "confirm_url": "/confirm"})
    );

    let res = test::call_service(&app, request("POST", "/confirm", &cookie, "*/*")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers().get(header::SET_COOKIE).is_none(),
        "same ticket"
    );
    let res = test::call_service(
        &app,
        request("POST", "/account", &cookie, "application/json"),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK, "reauthenticated");
}

#[actix_web::test]
async fn without_a_login_pages_go_to_the_login_and_apis_get_401() {
    let probe = Arc::new(Probe::default());
    let app = app!(probe);
    let res = test::call_service(&app, request("GET", "/account", "", "text/html")).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(header_of(&res, header::LOCATION), "/login?next=%2Faccount");
    let res = test::call_service(&app, request("POST", "/account", "", "application/json")).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body = json(res).await;
    assert_eq!(body["error"], "login_required");
}

#[actix_web::test]
async fn a_store_failure_is_a_503_never_a_pass() {
    let probe = Arc::new(Probe::default());
    let app = app!(probe);
    let cookie = login(&app).await;
    probe.fail.store(true, Ordering::SeqCst);
    let res = test::call_service(
        &app,
        request("POST", "/account", &cookie, "application/json"),
    )
    .await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    probe.fail.store(false, Ordering::SeqCst);
    let res = test::call_service(
        &app,
        request("POST", "/account", &cookie, "application/json"),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
}
