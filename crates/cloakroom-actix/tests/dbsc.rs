//! The actix adapter's DBSC glue in process (`actix_web::test`): the session middleware
//! answers the DBSC endpoints itself, and `DeviceBound` fails closed without a session
//! middleware. The whole flow runs over HTTP in `examples/actix-demo/tests/dbsc.rs` (both
//! demos).
#![cfg(feature = "dbsc")]

use actix_web::http::StatusCode;
use actix_web::test::{self, TestRequest};
use actix_web::{App, web};
use cloakroom_actix::{DeviceBound, SessionMiddleware};
use cloakroom_core::dbsc::DbscSettings;
use cloakroom_core::{Key, KeyRing, MemoryStore, SessionSettings};

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
