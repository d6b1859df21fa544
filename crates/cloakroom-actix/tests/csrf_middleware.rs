//! The actix CSRF middleware end to end through `actix_web::test`, inside the session
//! middleware: tokens from the form field (the body still reaches the handler), the headers
//! and the SPA cookie; refusals with their reasons, as HTML or JSON; Fetch Metadata and
//! trusted origins; exempt paths; tokenless mode; rotation at login; oversized forms and
//! malformed `_xsrf` cookies answered with a 4xx, never a 500.

use std::collections::HashMap;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::Method;
use actix_web::test::TestRequest;
use actix_web::{App, HttpResponse, test, web};
use cloakroom_actix::csrf::{ProtectionError, Reason, ResponseFormat, SpaCookie};
use cloakroom_actix::{
    CsrfMiddleware, CsrfSettings, CsrfToken, Error, Session, SessionMiddleware, SessionSettings,
};
use cloakroom_core::csrf::Secret;
use cloakroom_core::{Key, KeyRing, MemoryStore};

fn keys() -> KeyRing {
    KeyRing::single(Key::from_bytes(&[9; 32]).unwrap())
}

async fn form(csrf: CsrfToken) -> Result<String, Error> {
    Ok(csrf.token().await?)
}

async fn form_field(csrf: CsrfToken) -> Result<String, Error> {
    Ok(csrf.form_field().await?)
}

/// Echoes the `text` field: the form body the middleware read was put back.
async fn submit(form: web::Form<HashMap<String, String>>) -> String {
    form.get("text").cloned().unwrap_or_else(|| "-".into())
}

async fn login(s: Session, user: web::Path<String>) -> Result<&'static str, Error> {
    s.login(&user).await?;
    Ok("ok")
}

async fn logout(s: Session) -> Result<&'static str, Error> {
    s.logout().await?;
    Ok("ok")
}

async fn app_page(csrf: CsrfToken) -> &'static str {
    csrf.ensure_spa_cookie();
    "<!doctype html><script src=/app.js></script>"
}

async fn ok() -> &'static str {
    "ok"
}

/// A static file with the handler's own caching policy.
async fn static_file() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("cache-control", "public, max-age=3600"))
        .insert_header(("vary", "Accept-Encoding"))
        .body("js")
}

macro_rules! app {
    ($csrf:expr) => {
        test::init_service(
            App::new()
                .wrap(CsrfMiddleware::from($csrf))
                .wrap(SessionMiddleware::new(
                    SessionSettings::new(MemoryStore::new(), keys()).build(),
                ))
                .route("/form", web::get().to(form))
                .route("/form-field", web::get().to(form_field))
                .route("/submit", web::post().to(submit))
                .route("/login/{user}", web::post().to(login))
                .route("/logout", web::post().to(logout))
                .route("/app", web::get().to(app_page))
                .route("/api/notes", web::post().to(ok))
                .route("/webhook", web::post().to(ok))
                .route("/healthz", web::get().to(ok))
                .route("/static/app.js", web::get().to(static_file)),
        )
        .await
    };
}

/// A browser-like client: a cookie jar fed by `Set-Cookie`.
#[derive(Default)]
struct Client {
    jar: Vec<(String, String)>,
}

struct Answer {
    status: u16,
    set_cookie: Vec<String>,
    cache_control: Vec<String>,
    vary: Vec<String>,
    content_type: String,
    error: Option<Reason>,
    body: String,
}

impl Client {
    fn cookie(&self, name: &str) -> Option<String> {
        self.jar
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    fn cookie_header(&self) -> Option<String> {
        let pairs: Vec<String> = self.jar.iter().map(|(n, v)| format!("{n}={v}")).collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    async fn send<S, B>(&mut self, app: &S, req: TestRequest) -> Answer
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let req = match self.cookie_header() {
            Some(c) => req.insert_header(("cookie", c)),
            None => req,
        };
        self.call(app, req.to_request()).await
    }

    async fn call<S, B>(&mut self, app: &S, req: actix_http::Request) -> Answer
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let res = test::call_service(app, req).await;
        let all = |name: &str| -> Vec<String> {
            res.headers()
                .get_all(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        };
        let set_cookie = all("set-cookie");
        let cache_control = all("cache-control");
        let vary = all("vary");
        for c in &set_cookie {
            let pair = c.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.jar.retain(|(n, _)| n != name);
            if !c.contains("Max-Age=0") {
                self.jar.push((name.to_owned(), value.to_owned()));
            }
        }
        let content_type = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let error = res
            .response()
            .extensions()
            .get::<ProtectionError>()
            .map(ProtectionError::kind);
        let status = res.status().as_u16();
        let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        Answer {
            status,
            set_cookie,
            cache_control,
            vary,
            content_type,
            error,
            body,
        }
    }

    async fn get<S, B>(&mut self, app: &S, uri: &str) -> Answer
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        self.send(app, TestRequest::get().uri(uri)).await
    }
}

fn post(uri: &str) -> TestRequest {
    TestRequest::default().method(Method::POST).uri(uri)
}

fn form_post(uri: &str, body: &str) -> TestRequest {
    post(uri)
        .insert_header(("content-type", "application/x-www-form-urlencoded"))
        .set_payload(body.to_owned())
}

fn urlencode(token: &str) -> String {
    token.replace('|', "%7C")
}

#[actix_web::test]
async fn the_form_field_token_passes_and_the_body_reaches_the_handler() {
    let app = app!(CsrfSettings::new());
    let mut c = Client::default();
    let token = c.get(&app, "/form").await.body;
    assert!(
        c.cookie("_xsrf").is_some(),
        "a new visitor gets an _xsrf cookie"
    );
    let body = format!("text=hello+there&_xsrf={}", urlencode(&token));
    let res = c.send(&app, form_post("/submit", &body)).await;
    assert_eq!((res.status, res.body.as_str()), (200, "hello there"));

    // The rendered field carries a token of the same secret.
    let field = c.get(&app, "/form-field").await.body;
    assert!(field.starts_with("<input type=\"hidden\" name=\"_xsrf\" value=\"2|"));
    let token = field.split('"').nth(5).unwrap().to_owned();
    let body = format!("_xsrf={}&text=again", urlencode(&token));
    let res = c.send(&app, form_post("/submit", &body)).await;
    assert_eq!((res.status, res.body.as_str()), (200, "again"));
}

#[actix_web::test]
async fn a_multipart_form_field_token_passes() {
    let app = app!(CsrfSettings::new());
    let mut c = Client::default();
    let token = c.get(&app, "/form").await.body;
    let body = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"_xsrf\"\r\n\r\n{token}\r\n--XyZ--\r\n"
    );
    let req = post("/api/notes")
        .insert_header(("content-type", "multipart/form-data; boundary=XyZ"))
        .set_payload(body);
    assert_eq!(c.send(&app, req).await.status, 200);
}

#[actix_web::test]
async fn every_token_header_passes() {
    let app = app!(CsrfSettings::new());
    let mut c = Client::default();
    let token = c.get(&app, "/form").await.body;
    for header in ["X-XSRFToken", "X-CSRFToken", "X-XSRF-TOKEN"] {
        let req = post("/api/notes").insert_header((header, token.as_str()));
        let res = c.send(&app, req).await;
        assert_eq!(res.status, 200, "{header}");
    }
}

#[actix_web::test]
async fn the_spa_cookie_echoed_in_x_xsrf_token_passes_and_alone_does_not() {
    let csrf = CsrfSettings::new()
        .with_spa_cookie(SpaCookie::default())
        .unwrap();
    let app = app!(csrf);
    let mut c = Client::default();
    let res = c.get(&app, "/app").await;
    let spa = res
        .set_cookie
        .iter()
        .find(|s| s.starts_with("XSRF-TOKEN="))
        .expect("the app page hands out the SPA cookie");
    assert!(!spa.contains("HttpOnly"), "scripts must read it: {spa}");
    let value = c.cookie("XSRF-TOKEN").unwrap();

    // What Angular and axios do: copy the cookie into the header.
    let req = post("/api/notes").insert_header(("X-XSRF-TOKEN", value.as_str()));
    assert_eq!(c.send(&app, req).await.status, 200);
    // The cookie alone is not a token.
    let res = c.send(&app, post("/api/notes")).await;
    assert_eq!((res.status, res.error), (403, Some(Reason::TokenMissing)));

    // A login rotates the secret, and the login's response carries the new cookie.
    let req = post("/login/alice").insert_header(("X-XSRF-TOKEN", value.as_str()));
    let res = c.send(&app, req).await;
    assert_eq!(res.status, 200);
    assert!(res.set_cookie.iter().any(|s| s.starts_with("XSRF-TOKEN=")));
    let rotated = c.cookie("XSRF-TOKEN").unwrap();
    let req = post("/api/notes").insert_header(("X-XSRF-TOKEN", value.as_str()));
    let res = c.send(&app, req).await;
    assert_eq!((res.status, res.error), (403, Some(Reason::TokenMismatch)));
    let req = post("/api/notes").insert_header(("X-XSRF-TOKEN", rotated.as_str()));
    assert_eq!(c.send(&app, req).await.status, 200);
}

#[actix_web::test]
async fn missing_malformed_and_mismatched_tokens_are_403_with_their_reason() {
    let app = app!(CsrfSettings::new());
    let mut c = Client::default();
    c.get(&app, "/form").await;
    let other = Secret::generate().mask();
    let cases = [
        (None, Reason::TokenMissing),
        (Some("2|zz|zz|1"), Reason::TokenMalformed),
        (Some(other.as_str()), Reason::TokenMismatch),
    ];
    for (token, reason) in cases {
        let mut req = form_post("/submit", "text=x");
        if let Some(t) = token {
            req = req.insert_header(("X-XSRFToken", t));
        }
        let res = c.send(&app, req).await;
        assert_eq!(res.status, 403, "{reason}");
        assert_eq!(res.error, Some(reason));
        assert!(res.body.contains(reason.as_str()), "{}", res.body);
        assert!(res.set_cookie.is_empty(), "a refusal sets no cookie");
    }
    // Without any _xsrf cookie or session, even a well-formed token matches nothing.
    let mut fresh = Client::default();
    let req = post("/api/notes").insert_header(("X-XSRFToken", other.as_str()));
    let res = fresh.send(&app, req).await;
    assert_eq!(res.error, Some(Reason::TokenMismatch));
}

#[actix_web::test]
async fn a_cross_site_request_is_refused_even_with_a_valid_token() {
    let app = app!(CsrfSettings::new());
    let mut c = Client::default();
    let token = c.get(&app, "/form").await.body;
    for site in ["cross-site", "same-site"] {
        let req = post("/api/notes")
            .insert_header(("X-XSRFToken", token.as_str()))
            .insert_header(("Sec-Fetch-Site", site));
        let res = c.send(&app, req).await;
        assert_eq!((res.status, res.error), (403, Some(Reason::CrossOrigin)));
    }
    let req = post("/api/notes")
        .insert_header(("X-XSRFToken", token.as_str()))
        .insert_header(("Sec-Fetch-Site", "same-origin"));
    assert_eq!(c.send(&app, req).await.status, 200);
    // Without Fetch Metadata: Origin against Host.
    let req = post("/api/notes")
        .insert_header(("X-XSRFToken", token.as_str()))
        .insert_header(("Host", "app.example"))
        .insert_header(("Origin", "https://evil.example"));
    assert_eq!(c.send(&app, req).await.error, Some(Reason::CrossOrigin));
    let req = post("/api/notes")
        .insert_header(("X-XSRFToken", token.as_str()))
        .insert_header(("Host", "app.example"))
        .insert_header(("Origin", "https://app.example"));
    assert_eq!(c.send(&app, req).await.status, 200);
}

#[actix_web::test]
async fn only_exactly_trusted_origins_pass_cross_site() {
    let csrf = CsrfSettings::new()
        .add_trusted_origin("https://partner.example")
        .unwrap();
    assert!(
        CsrfSettings::new()
            .add_trusted_origin("https://partner.example/")
            .is_err()
    );
    let app = app!(csrf);
    let mut c = Client::default();
    let token = c.get(&app, "/form").await.body;
    let cases = [
        ("https://partner.example", 200),
        ("https://partner.example.attacker.com", 403),
        ("http://partner.example", 403),
        ("null", 403),
    ];
    for (origin, status) in cases {
        let req = post("/api/notes")
            .insert_header(("X-XSRFToken", token.as_str()))
            .insert_header(("Sec-Fetch-Site", "cross-site"))
            .insert_header(("Origin", origin));
        assert_eq!(c.send(&app, req).await.status, status, "{origin}");
    }
}

#[actix_web::test]
async fn an_exempt_path_needs_nothing_and_only_that_path() {
    let app = app!(CsrfSettings::new().add_exempt_path("/webhook"));
    let mut c = Client::default();
    let req = post("/webhook").insert_header(("Sec-Fetch-Site", "cross-site"));
    assert_eq!(c.send(&app, req).await.status, 200);
    let res = c.send(&app, post("/webhook/")).await;
    assert_ne!(res.status, 200, "no prefix matching");
    let res = c.send(&app, post("/api/notes")).await;
    assert_eq!(res.error, Some(Reason::TokenMissing));
}

#[actix_web::test]
async fn tokenless_mode_checks_fetch_metadata_and_origin_only() {
    let app = app!(CsrfSettings::tokenless().add_token_path("/login/alice"));
    let mut c = Client::default();
    let same = post("/api/notes").insert_header(("Sec-Fetch-Site", "same-origin"));
    assert_eq!(c.send(&app, same).await.status, 200);
    // Documented: no Sec-Fetch-Site and no Origin passes (not a browser, or a pre-2020 one).
    assert_eq!(c.send(&app, post("/api/notes")).await.status, 200);
    let cross = post("/api/notes").insert_header(("Sec-Fetch-Site", "cross-site"));
    assert_eq!(c.send(&app, cross).await.error, Some(Reason::CrossOrigin));
    let sibling = post("/api/notes").insert_header(("Sec-Fetch-Site", "same-site"));
    assert_eq!(c.send(&app, sibling).await.error, Some(Reason::CrossOrigin));
    let evil = post("/api/notes")
        .insert_header(("Host", "app.example"))
        .insert_header(("Origin", "https://evil.example"));
    assert_eq!(c.send(&app, evil).await.error, Some(Reason::CrossOrigin));
    // A token path still needs its token.
    let login = post("/login/alice").insert_header(("Sec-Fetch-Site", "same-origin"));
    assert_eq!(c.send(&app, login).await.error, Some(Reason::TokenMissing));
    let token = c.get(&app, "/form").await.body;
    let login = post("/login/alice").insert_header(("X-XSRFToken", token.as_str()));
    assert_eq!(c.send(&app, login).await.status, 200);
}

#[actix_web::test]
async fn the_token_is_bound_to_the_session_and_rotates_at_login() {
    let app = app!(CsrfSettings::new());
    let mut c = Client::default();
    let before = c.get(&app, "/form").await.body;
    let req = post("/login/alice").insert_header(("X-XSRFToken", before.as_str()));
    let res = c.send(&app, req).await;
    assert_eq!(res.status, 200);
    assert!(c.cookie("__Host-session").is_some());

    // The token from before the login no longer passes; one rendered now does.
    let req = post("/api/notes").insert_header(("X-XSRFToken", before.as_str()));
    assert_eq!(c.send(&app, req).await.error, Some(Reason::TokenMismatch));
    let after = c.get(&app, "/form").await.body;
    let req = post("/api/notes").insert_header(("X-XSRFToken", after.as_str()));
    assert_eq!(c.send(&app, req).await.status, 200);

    // Another session's token is a mismatch too.
    let mut bob = Client::default();
    let t = bob.get(&app, "/form").await.body;
    let req = post("/login/bob").insert_header(("X-XSRFToken", t.as_str()));
    assert_eq!(bob.send(&app, req).await.status, 200);
    let bobs = bob.get(&app, "/form").await.body;
    let req = post("/api/notes").insert_header(("X-XSRFToken", bobs.as_str()));
    assert_eq!(c.send(&app, req).await.error, Some(Reason::TokenMismatch));

    // After the logout the _xsrf cookie's secret is the expected one again.
    let req = post("/logout").insert_header(("X-XSRFToken", after.as_str()));
    assert_eq!(c.send(&app, req).await.status, 200);
    let req = post("/api/notes").insert_header(("X-XSRFToken", after.as_str()));
    assert_eq!(c.send(&app, req).await.error, Some(Reason::TokenMismatch));
}

#[actix_web::test]
async fn refusals_are_json_or_html_by_accept_and_the_hook_can_replace_them() {
    let app = app!(CsrfSettings::new());
    let mut c = Client::default();
    let json = post("/api/notes").insert_header(("Accept", "application/json"));
    let res = c.send(&app, json).await;
    assert_eq!(res.status, 403);
    assert_eq!(res.content_type, "application/json");
    assert_eq!(res.body, r#"{"error":"csrf","reason":"token missing"}"#);
    let sent_json = post("/api/notes")
        .insert_header(("Content-Type", "application/json"))
        .set_payload("{}");
    assert_eq!(
        c.send(&app, sent_json).await.content_type,
        "application/json"
    );
    let html = post("/api/notes").insert_header(("Accept", "text/html"));
    let res = c.send(&app, html).await;
    assert_eq!(res.content_type, "text/html; charset=utf-8");
    assert!(res.body.contains("CSRF check failed: token missing."));

    let hooked = CsrfMiddleware::new(CsrfSettings::new()).with_rejection_handler(
        |e: &ProtectionError, f: ResponseFormat| {
            let mut res = http::Response::new(format!("nope: {} {f:?}", e.kind()));
            *res.status_mut() = http::StatusCode::FORBIDDEN;
            res
        },
    );
    let app = app!(hooked);
    let res = c.send(&app, post("/api/notes")).await;
    assert_eq!(res.status, 403);
    assert_eq!(res.body, "nope: token missing Html");
    assert_eq!(res.error, Some(Reason::TokenMissing));
}

#[actix_web::test]
async fn an_oversized_form_is_413_not_500() {
    let app = app!(CsrfSettings::new().with_body_limit(64));
    let mut c = Client::default();
    let token = c.get(&app, "/form").await.body;
    let body = format!("text={}&_xsrf={}", "a".repeat(1000), urlencode(&token));
    let res = c.send(&app, form_post("/submit", &body)).await;
    assert_eq!(res.status, 413);
    assert_eq!(res.body, "request body too large\n");
    // A big body with the token in a header is not read by the middleware.
    let req = form_post("/api/notes", &body).insert_header(("X-XSRFToken", token.as_str()));
    assert_eq!(c.send(&app, req).await.status, 200);
}

/// A chunked form (no `Content-Length`) over the limit is a 413 too, as on the tower layer.
#[actix_web::test]
async fn a_chunked_form_over_the_limit_is_413() {
    let app = app!(CsrfSettings::new().with_body_limit(256));
    let mut c = Client::default();
    let token = c.get(&app, "/form").await.body;
    let cookie = c.cookie_header().unwrap();
    let chunked = |body: String| {
        let req = post("/submit")
            .insert_header(("content-type", "application/x-www-form-urlencoded"))
            .insert_header(("cookie", cookie.clone()))
            .to_request();
        let (mut sender, payload) = actix_http::h1::Payload::create(false);
        for frame in body.as_bytes().chunks(16) {
            sender.feed_data(actix_web::web::Bytes::copy_from_slice(frame));
        }
        sender.feed_eof();
        let (req, _) = req.replace_payload(actix_http::Payload::from(payload));
        assert!(req.head().headers.get("content-length").is_none());
        req
    };
    let big = format!("text={}&_xsrf={}", "a".repeat(1000), urlencode(&token));
    let res = c.call(&app, chunked(big)).await;
    assert_eq!(res.status, 413);
    assert_eq!(res.body, "request body too large\n");
    let small = format!("text=hi&_xsrf={}", urlencode(&token));
    let res = c.call(&app, chunked(small)).await;
    assert_eq!((res.status, res.body.as_str()), (200, "hi"));
}

/// A response that sets the `XSRF-TOKEN` or `_xsrf` cookie must not be stored by a shared
/// cache: `Cache-Control: no-store` (unless the handler chose a policy) and `Vary: Cookie`
/// (added to the handler's `Vary`, never twice), as the session middleware does.
#[actix_web::test]
async fn responses_setting_a_csrf_cookie_are_not_cacheable() {
    let csrf = CsrfSettings::new()
        .with_spa_cookie(SpaCookie::default())
        .unwrap();
    let app = app!(csrf);
    let mut c = Client::default();
    let res = c.get(&app, "/app").await;
    assert!(res.set_cookie.iter().any(|s| s.starts_with("XSRF-TOKEN=")));
    assert_eq!(res.cache_control, ["no-store"]);
    assert_eq!(res.vary, ["Cookie"]);
    // Nothing set: nothing added.
    let res = c.get(&app, "/healthz").await;
    assert!(res.set_cookie.is_empty());
    assert!(res.cache_control.is_empty() && res.vary.is_empty());
    // A stale XSRF-TOKEN is refreshed on a health check and on a static file.
    let stale = |c: &mut Client| {
        c.jar.retain(|(n, _)| n != "XSRF-TOKEN");
        c.jar.push(("XSRF-TOKEN".into(), Secret::generate().mask()));
    };
    stale(&mut c);
    let res = c.get(&app, "/healthz").await;
    assert!(res.set_cookie.iter().any(|s| s.starts_with("XSRF-TOKEN=")));
    assert_eq!(res.cache_control, ["no-store"]);
    assert_eq!(res.vary, ["Cookie"]);
    stale(&mut c);
    let res = c.get(&app, "/static/app.js").await;
    assert!(res.set_cookie.iter().any(|s| s.starts_with("XSRF-TOKEN=")));
    assert_eq!(
        res.cache_control,
        ["public, max-age=3600"],
        "the handler's policy"
    );
    assert_eq!(res.vary, ["Accept-Encoding", "Cookie"]);
    // Login: the session cookie and the rotated secret's XSRF-TOKEN, Vary: Cookie once.
    let value = c.cookie("XSRF-TOKEN").unwrap();
    let req = post("/login/ida").insert_header(("X-XSRF-TOKEN", value.as_str()));
    let res = c.send(&app, req).await;
    assert_eq!(res.status, 200);
    assert!(res.set_cookie.iter().any(|s| s.starts_with("XSRF-TOKEN=")));
    assert!(
        res.set_cookie
            .iter()
            .any(|s| s.starts_with("__Host-session="))
    );
    assert_eq!(res.cache_control, ["no-store"]);
    assert_eq!(res.vary, ["Cookie"]);

    // Without the SPA cookie: a page rendering a token sets a new `_xsrf` cookie.
    let app = app!(CsrfSettings::new());
    let mut plain = Client::default();
    let res = plain.get(&app, "/form").await;
    assert!(res.set_cookie.iter().any(|s| s.starts_with("_xsrf=")));
    assert_eq!(res.cache_control, ["no-store"]);
    assert_eq!(res.vary, ["Cookie"]);
    let res = plain.get(&app, "/form").await;
    assert!(res.set_cookie.is_empty() && res.cache_control.is_empty());
}

#[actix_web::test]
async fn a_malformed_xsrf_cookie_is_403_with_a_reason_not_500() {
    let app = app!(CsrfSettings::new());
    let other = Secret::generate().mask();
    for cookie in [
        "_xsrf=%%%",
        "_xsrf=2|zz|zz|1",
        "_xsrf=\u{e9}t\u{e9}",
        "_xsrf=",
    ] {
        let mut c = Client::default();
        let cases = [
            (None, Reason::TokenMissing),
            (Some("junk"), Reason::TokenMalformed),
            (Some(other.as_str()), Reason::TokenMismatch),
        ];
        for (token, reason) in cases {
            let mut req = post("/api/notes").insert_header(("cookie", cookie));
            if let Some(t) = token {
                req = req.insert_header(("X-XSRFToken", t));
            }
            let res = c.send(&app, req).await;
            assert_eq!((res.status, res.error), (403, Some(reason)), "{cookie}");
        }
        // A page render replaces it with a valid cookie.
        let res = c
            .send(
                &app,
                TestRequest::get()
                    .uri("/form")
                    .insert_header(("cookie", cookie)),
            )
            .await;
        assert_eq!(res.status, 200);
        assert!(res.set_cookie.iter().any(|s| s.starts_with("_xsrf=2|")));
    }
}

#[actix_web::test]
async fn the_extractor_without_the_middleware_is_a_500_not_a_panic() {
    let app = test::init_service(App::new().route("/form", web::get().to(form))).await;
    let res = test::call_service(&app, TestRequest::get().uri("/form").to_request()).await;
    assert_eq!(res.status().as_u16(), 500);
    let optional = test::init_service(App::new().route(
        "/",
        web::get().to(|csrf: Option<CsrfToken>| async move {
            HttpResponse::Ok().body(format!("{}", csrf.is_some()))
        }),
    ))
    .await;
    let res = test::call_service(&optional, TestRequest::get().uri("/").to_request()).await;
    assert_eq!(test::read_body(res).await, "false");
}
