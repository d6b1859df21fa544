//! Token paths and exempt paths against every spelling of a path, through both adapters
//! (axum with the tower `CsrfLayer`, actix-web with `CsrfMiddleware`).
//!
//! The routers disagree on spellings: actix-web routes on the path with its percent-escapes
//! decoded (all but `%2F`, `%25`, `%2B`), so `POST /%6Cogin` reaches the `/login` handler;
//! axum (matchit) routes on the raw path, where it is a 404. Neither merges `//`, resolves
//! `/./` or ignores a trailing slash or letter case. Whatever the router does:
//! - a spelling of a token path never reaches its handler without a token (tokenless mode):
//!   the answer is a 403 or the router's 404, never the handler's 200;
//! - an exempt path's exemption covers exactly what the router routes to its handler: a
//!   spelling routed elsewhere (here a catch-all handler) is checked like any other path.

use actix_web::dev::{Service, ServiceResponse};
use actix_web::test::TestRequest;
use actix_web::{App, test, web};
use axum::Router;
use axum::body::Body;
use axum::routing::post;
use cloakroom_core::csrf::CsrfSettings;
use tower::ServiceExt;

/// Spellings of `/login` and `/account/login`: percent-escapes of letters (either hex
/// case), `%2F` inside, doubled slashes, `.`/`..` segments (plain and `%2e`), a trailing
/// slash, and the path's own letter case.
const LOGIN_SPELLINGS: &[&str] = &[
    "/login",
    "/%6Cogin",
    "/%6cogin",
    "/%6c%6f%67%69%6e",
    "/%6C%6F%67%69%6E",
    "/log%69n",
    "/lo%67in",
    "/LOGIN",
    "/Login",
    "/%4Cogin",
    "/%4cOGIN",
    "//login",
    "///login",
    "/login/",
    "/login//",
    "/%6Cogin/",
    "/./login",
    "/login/.",
    "/%2e/login",
    "/%2E/login",
    "/login/%2e",
    "/x/../login",
    "/x/%2e%2e/login",
    "/x/%2E%2E/login",
    "/account/login",
    "/account%2Flogin",
    "/account%2flogin",
    "/account%2F%6cogin",
    "/account//login",
    "/account/./login",
    "/%61ccount/login",
    "/account/%6cogin",
    "/acc%6Funt/l%6Fgin",
    "/account/login/",
    "/ACCOUNT/LOGIN",
];

/// Spellings of the exempt `/hook`.
const HOOK_SPELLINGS: &[&str] = &[
    "/hook",
    "/%68ook",
    "/%68%6F%6F%6B",
    "/hoo%6b",
    "/HOOK",
    "/hook/",
    "//hook",
    "/./hook",
    "/%2e/hook",
    "/hook/.",
    "/x/../hook",
    "/hook%2F",
    "/hook%20",
];

fn axum_app(settings: CsrfSettings) -> Router {
    Router::new()
        .route("/login", post(|| async { "login" }))
        .route("/account/login", post(|| async { "account login" }))
        .route("/notes", post(|| async { "notes" }))
        .route("/hook", post(|| async { "hook" }))
        .layer(cloakroom_tower::CsrfLayer::from(settings))
}

/// The same, with a catch-all: what a spelling not routed to `/hook` reaches.
fn axum_app_with_catch_all(settings: CsrfSettings) -> Router {
    Router::new()
        .route("/hook", post(|| async { "hook" }))
        .fallback(|| async { "catch" })
        .layer(cloakroom_tower::CsrfLayer::from(settings))
}

macro_rules! actix_app {
    ($settings:expr) => {
        test::init_service(
            App::new()
                .wrap(cloakroom_actix::CsrfMiddleware::from($settings))
                .route("/login", web::post().to(|| async { "login" }))
                .route(
                    "/account/login",
                    web::post().to(|| async { "account login" }),
                )
                .route("/notes", web::post().to(|| async { "notes" }))
                .route("/hook", web::post().to(|| async { "hook" })),
        )
        .await
    };
}

macro_rules! actix_app_with_catch_all {
    ($settings:expr) => {
        test::init_service(
            App::new()
                .wrap(cloakroom_actix::CsrfMiddleware::from($settings))
                .route("/hook", web::post().to(|| async { "hook" }))
                .default_service(web::to(|| async { "catch" })),
        )
        .await
    };
}

/// A bare `POST`: no token, no `Origin`, no `Sec-Fetch-Site`, no cookie.
async fn axum_post(app: &Router, uri: &str) -> (u16, String) {
    let req = http::Request::post(uri).body(Body::empty()).unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn actix_post<S, B>(app: &S, uri: &str) -> (u16, String)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: actix_web::body::MessageBody,
{
    let res = test::call_service(app, TestRequest::post().uri(uri).to_request()).await;
    let status = res.status().as_u16();
    let body = test::read_body(res).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[actix_web::test]
async fn no_spelling_of_a_token_path_reaches_its_handler_without_a_token() {
    let settings = || {
        CsrfSettings::tokenless()
            .add_token_path("/login")
            .add_token_path("/account/login")
    };
    let axum = axum_app(settings());
    let actix = actix_app!(settings());
    let mut wrong = Vec::new();
    for &uri in LOGIN_SPELLINGS {
        let answers = [
            ("axum", axum_post(&axum, uri).await),
            ("actix", actix_post(&actix, uri).await),
        ];
        for (side, (status, body)) in answers {
            if !matches!(status, 403 | 404) || body.contains("login") {
                wrong.push(format!("{side} POST {uri}: {status} {body:?}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "reached a token path's handler without a token:\n{}",
        wrong.join("\n")
    );
    // The table is not vacuous: the plain path is refused for its token, and the other
    // paths of tokenless mode pass without one.
    for (status, body) in [
        axum_post(&axum, "/login").await,
        actix_post(&actix, "/login").await,
    ] {
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("token missing"), "{body}");
    }
    assert_eq!(axum_post(&axum, "/notes").await, (200, "notes".into()));
    assert_eq!(actix_post(&actix, "/notes").await, (200, "notes".into()));
}

#[actix_web::test]
async fn an_exemption_covers_only_what_the_router_routes_to_the_exempt_handler() {
    let settings = || CsrfSettings::new().add_exempt_path("/hook");
    let axum = axum_app_with_catch_all(settings());
    let actix = actix_app_with_catch_all!(settings());
    let mut wrong = Vec::new();
    let mut answers = Vec::new();
    for &uri in HOOK_SPELLINGS {
        for (side, (status, body)) in [
            ("axum", axum_post(&axum, uri).await),
            ("actix", actix_post(&actix, uri).await),
        ] {
            // Either the exempt handler (the router routed it there) or a refusal: never
            // the protected catch-all without a token.
            let fine = (status == 200 && body == "hook") || status == 403;
            if !fine {
                wrong.push(format!("{side} POST {uri}: {status} {body:?}"));
            }
            answers.push(((side, uri), status));
        }
    }
    assert!(
        wrong.is_empty(),
        "an exemption reached beyond the exempt route:\n{}",
        wrong.join("\n")
    );
    let status = |side, uri| {
        answers
            .iter()
            .find(|(k, _)| *k == (side, uri))
            .map(|(_, s)| *s)
    };
    // The exemption applies where the router routes to the exempt handler: actix decodes
    // `%68` before routing, axum does not.
    assert_eq!(status("axum", "/hook"), Some(200));
    assert_eq!(status("actix", "/hook"), Some(200));
    assert_eq!(status("actix", "/%68ook"), Some(200));
    assert_eq!(status("actix", "/%68%6F%6F%6B"), Some(200));
    assert_eq!(status("axum", "/%68ook"), Some(403));
    assert_eq!(status("axum", "/hook/"), Some(403));
    assert_eq!(status("actix", "/hook/"), Some(403));
}
