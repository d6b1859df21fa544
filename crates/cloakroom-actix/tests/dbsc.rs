//! The actix adapter's DBSC glue in process (`actix_web::test`): the session middleware
//! answers the DBSC endpoints itself, offers early challenges near a bound cookie's expiry,
//! and `DeviceBound` fails closed without a session middleware. The whole flow runs over HTTP in `examples/actix-demo/tests/dbsc.rs` (both
//! demos).
#![cfg(feature = "dbsc")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::test::{self, TestRequest};
use actix_web::{App, web};
use cloakroom_actix::{DeviceBound, Error, Session, SessionMiddleware};
use cloakroom_core::dbsc::DbscSettings;
use cloakroom_core::{Key, KeyRing, MemoryStore, SessionSettings};
use cloakroom_testkit::dbsc::{DeviceKey, challenge_item, quoted_after};
use cloakroom_testkit::probe::Probe;

fn middleware(dbsc: bool) -> SessionMiddleware {
    let mut settings = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate()));
    if dbsc {
        settings = settings.with_dbsc(DbscSettings::new("https://app.example").unwrap());
    }
    SessionMiddleware::new(settings.build())
}

#[actix_web::test]
async fn the_session_middleware_answers_the_dbsc_endpoints_before_the_app() {
    let app = test::init_service(
        App::new()
            .route("/dbsc/refresh", web::post().to(|| async { "the app" }))
            .wrap(middleware(true)),
    )
    .await;
    let res = test::call_service(&app, TestRequest::post().uri("/dbsc/refresh").to_request()).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.headers().get("x-frame-options").unwrap(), "DENY");
    let body = test::read_body(res).await;
    assert!(String::from_utf8_lossy(&body).contains("Sec-Secure-Session-Id"));
    let cross = TestRequest::post()
        .uri("/dbsc/refresh")
        .insert_header(("Origin", "https://evil.example"))
        .insert_header(("Sec-Secure-Session-Id", "x"))
        .to_request();
    assert_eq!(
        test::call_service(&app, cross).await.status(),
        StatusCode::FORBIDDEN
    );
    let get = TestRequest::get().uri("/dbsc/register").to_request();
    assert_eq!(
        test::call_service(&app, get).await.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );

    // DBSC off: the paths are the application's.
    let off = test::init_service(
        App::new()
            .route("/dbsc/refresh", web::post().to(|| async { "the app" }))
            .wrap(middleware(false)),
    )
    .await;
    let res = test::call_service(&off, TestRequest::post().uri("/dbsc/refresh").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(test::read_body(res).await, "the app");
}

#[actix_web::test]
async fn a_guarded_route_admits_requests_without_a_session_and_fails_closed_without_it() {
    let app = test::init_service(
        App::new()
            .service(
                web::resource("/account")
                    .route(web::get().to(|| async { "account" }))
                    .wrap(DeviceBound::new().with_redirect("/login")),
            )
            .wrap(middleware(true)),
    )
    .await;
    let plain = TestRequest::get().uri("/account").to_request();
    assert_eq!(
        test::call_service(&app, plain).await.status(),
        StatusCode::OK
    );
    let forged = TestRequest::get()
        .uri("/account")
        .insert_header(("Cookie", "__Host-session=forged"))
        .to_request();
    assert_eq!(
        test::call_service(&app, forged).await.status(),
        StatusCode::OK
    );

    let bare = test::init_service(
        App::new().service(
            web::resource("/account")
                .route(web::get().to(|| async { "account" }))
                .wrap(DeviceBound::new()),
        ),
    )
    .await;
    let req = TestRequest::get().uri("/account").to_request();
    assert_eq!(
        test::call_service(&bare, req).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

/// A browser's cookie jar over `actix_web::test`: sends its cookies, keeps what `Set-Cookie`
/// sets.
struct Jar(BTreeMap<String, String>);

impl Jar {
    async fn send<S, B>(
        &mut self,
        app: &S,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap)
    where
        S: actix_web::dev::Service<
                actix_http::Request,
                Response = actix_web::dev::ServiceResponse<B>,
                Error = actix_web::Error,
            >,
    {
        let method = actix_web::http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = TestRequest::default().method(method).uri(path);
        let cookies: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        if !cookies.is_empty() {
            req = req.insert_header(("Cookie", cookies.join("; ")));
        }
        for (name, value) in extra {
            req = req.insert_header((*name, *value));
        }
        let res = test::call_service(app, req.to_request()).await;
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
    (headers.get_all("secure-session-challenge"))
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The bound cookie's lifetime here: the early-challenge window is its last half (2 s), at
/// most one early challenge per session per second.
const BOUND: Duration = Duration::from_secs(4);

async fn login(session: Session) -> Result<&'static str, Error> {
    session.login("ada").await?;
    Ok("in")
}

#[actix_web::test]
async fn a_bound_cookie_near_expiry_gets_one_early_challenge_that_refreshes_without_a_403() {
    let probe = Arc::new(Probe::default());
    let dbsc = DbscSettings::new("https://app.example")
        .unwrap()
        .with_bound_lifetime(BOUND)
        .unwrap();
    let engine = SessionSettings::new(probe.clone(), KeyRing::single(Key::generate()))
        .with_dbsc(dbsc)
        .build();
    let app = test::init_service(
        App::new()
            .service(
                web::resource("/account")
                    .route(web::get().to(|| async { "account" }))
                    .wrap(DeviceBound::new()),
            )
            .route("/login", web::post().to(login))
            .wrap(SessionMiddleware::new(engine)),
    )
    .await;
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
    let register = [("Secure-Session-Response", proof.as_str())];
    let (status, registered) = jar.send(&app, "POST", "/dbsc/register", &register).await;
    assert_eq!(status, StatusCode::OK);
    let [given] = &challenges(&registered)[..] else {
        panic!("{registered:?}")
    };
    let id = challenge_item(given).unwrap().1.to_owned();

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
