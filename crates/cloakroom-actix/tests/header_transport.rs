//! The ticket header transport through actix-web (`actix_web::test`): a login answers the
//! ticket in `X-Session-Ticket` and the body, the header reaches the session, a rotation and
//! a logout answer the same way, a cookie/header conflict is a 400, the CSRF token check is
//! skipped for header sessions only (session-bound and Tornado `_xsrf` cookie modes), and bad
//! headers are no session without a store call.

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use actix_web::{App, test, web};
use cloakroom_actix::csrf::{CsrfMode, CsrfSettings};
use cloakroom_actix::{CsrfMiddleware, Error, Session, SessionMiddleware};
use cloakroom_core::session::{SessionSettings, Transport};
use cloakroom_core::{Key, KeyRing};
use cloakroom_testkit::probe::Probe;

const TICKET: &str = "x-session-ticket";

async fn api_login(s: Session) -> Result<String, Error> {
    s.login("ada").await?;
    Ok(s.ticket().await?.unwrap_or_default())
}

async fn browser_login(s: Session) -> Result<&'static str, Error> {
    s.login("ada").await?;
    Ok("ok")
}

async fn me(s: Session) -> Result<String, Error> {
    let user = s.user().await?;
    let from = if s.from_header() { "header" } else { "cookie" };
    Ok(format!("{} {from}", user.as_deref().unwrap_or("-")))
}

async fn write(s: Session) -> Result<&'static str, Error> {
    s.set("n", &1).await?;
    Ok("ok")
}

async fn cycle(s: Session) -> Result<&'static str, Error> {
    s.cycle_id().await?;
    Ok("ok")
}

async fn logout(s: Session) -> Result<&'static str, Error> {
    s.logout().await?;
    Ok("ok")
}

macro_rules! app {
    ($probe:expr, $mode:expr) => {{
        let keys = KeyRing::single(Key::from_bytes(&[9; 32]).unwrap());
        let engine = SessionSettings::new($probe.clone(), keys)
            .with_transport(Transport::CookieAndHeader)
            .build();
        let csrf = CsrfSettings::new()
            .with_mode($mode)
            .add_exempt_path("/login")
            .add_exempt_path("/browser-login");
        test::init_service(
            App::new()
                .wrap(CsrfMiddleware::new(csrf))
                .wrap(SessionMiddleware::new(engine))
                .route("/login", web::post().to(api_login))
                .route("/browser-login", web::post().to(browser_login))
                .route("/me", web::get().to(me))
                .route("/write", web::post().to(write))
                .route("/cycle", web::post().to(cycle))
                .route("/logout", web::post().to(logout)),
        )
        .await
    }};
}

async fn call<S, B>(app: &S, req: TestRequest, headers: &[(&str, &str)]) -> ServiceResponse<B>
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let mut req = req;
    for (name, value) in headers {
        req = req.insert_header((*name, *value));
    }
    test::call_service(app, req.to_request()).await
}

fn value<B>(res: &ServiceResponse<B>, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn body<B: MessageBody>(res: ServiceResponse<B>) -> String {
    String::from_utf8(test::read_body(res).await.to_vec()).unwrap()
}

fn bearer(ticket: &str) -> String {
    format!("Bearer {ticket}")
}

#[actix_web::test]
async fn a_header_session_from_login_to_logout() {
    let probe = Arc::new(Probe::default());
    let app = app!(probe, CsrfMode::Auto);
    let res = call(&app, TestRequest::post().uri("/login"), &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(value(&res, "set-cookie").is_none(), "no cookie");
    assert_eq!(value(&res, "cache-control").as_deref(), Some("no-store"));
    let ticket = value(&res, TICKET).expect("the ticket header");
    assert_eq!(body(res).await, ticket, "the handler's copy");
    let auth = bearer(&ticket);

    let res = call(
        &app,
        TestRequest::get().uri("/me"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(body(res).await, "ada header");
    let res = call(
        &app,
        TestRequest::post().uri("/cycle"),
        &[("authorization", &auth)],
    )
    .await;
    assert!(value(&res, "set-cookie").is_none());
    let new = bearer(&value(&res, TICKET).expect("the new ticket"));
    assert_ne!(new, auth);
    let res = call(
        &app,
        TestRequest::get().uri("/me"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(body(res).await, "- header", "the old ticket has no session");

    let res = call(
        &app,
        TestRequest::post().uri("/logout"),
        &[("authorization", &new)],
    )
    .await;
    assert_eq!(value(&res, TICKET).as_deref(), Some(""));
    let res = call(
        &app,
        TestRequest::get().uri("/me"),
        &[("authorization", &new)],
    )
    .await;
    assert_eq!(body(res).await, "- header");
    use cloakroom_core::store::SessionStore;
    assert!(probe.inner.sessions_of("ada").await.unwrap().is_empty());
}

#[actix_web::test]
async fn csrf_tokens_are_skipped_for_header_sessions_only() {
    for mode in [CsrfMode::Auto, CsrfMode::Cookie] {
        let probe = Arc::new(Probe::default());
        let app = app!(probe, mode);
        let res = call(&app, TestRequest::post().uri("/login"), &[]).await;
        let auth = bearer(&value(&res, TICKET).unwrap());
        let res = call(
            &app,
            TestRequest::post().uri("/write"),
            &[("authorization", &auth)],
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK, "{mode:?}: header session");
        let res = call(&app, TestRequest::post().uri("/browser-login"), &[]).await;
        let cookie = value(&res, "set-cookie").unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let res = call(
            &app,
            TestRequest::post().uri("/write"),
            &[("cookie", &cookie)],
        )
        .await;
        assert_eq!(
            res.status(),
            StatusCode::FORBIDDEN,
            "{mode:?}: cookie session"
        );
        assert!(body(res).await.contains("token missing"));

        // Both, naming different sessions: refused before the store, never merged.
        let before = probe.calls();
        let both = [
            ("cookie", cookie.as_str()),
            ("authorization", auth.as_str()),
        ];
        let res = call(&app, TestRequest::get().uri("/me"), &both).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(probe.calls(), before);
        assert!(body(res).await.contains("different sessions"));
    }
}

#[actix_web::test]
async fn bad_authorization_headers_are_no_session() {
    let probe = Arc::new(Probe::default());
    let app = app!(probe, CsrfMode::Auto);
    let res = call(&app, TestRequest::post().uri("/login"), &[]).await;
    let ticket = value(&res, TICKET).unwrap();
    let huge = format!("Bearer {}", "A".repeat(5000));
    for bad in [
        "Bearer",
        "Basic YWRhOnB3",
        "Bearer junk",
        ticket.as_str(),
        &huge,
    ] {
        let before = probe.calls();
        let res = call(
            &app,
            TestRequest::get().uri("/me"),
            &[("authorization", bad)],
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK, "never a 500");
        assert_eq!(body(res).await, "- cookie");
        assert_eq!(probe.calls(), before);
    }
    let uri = format!("/me?access_token={ticket}");
    let res = call(&app, TestRequest::get().uri(&uri), &[]).await;
    assert_eq!(body(res).await, "- cookie", "never from the query string");
}
