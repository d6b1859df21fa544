//! The single-page-app convention (a readable `XSRF-TOKEN` cookie copied into an
//! `X-XSRF-TOKEN` header) and tokenless mode, through axum with `oneshot`.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::{get, post};
use cloakroom_core::csrf::{ProtectionError, Reason, Secret};
use cloakroom_core::{Key, KeyRing, MemoryStore};
use cloakroom_tower::csrf::SpaCookie;
use cloakroom_tower::{
    CsrfLayer, CsrfSettings, CsrfToken, Session, SessionError, SessionLayer, SessionSettings,
};
use http::{HeaderName, Request, Response, StatusCode, header};
use tower::ServiceExt;

fn app(csrf: impl Into<CsrfLayer>) -> Router {
    let sessions = SessionLayer::new(
        SessionSettings::new(
            Arc::new(MemoryStore::new()),
            KeyRing::single(Key::from_bytes(&[7; 32]).unwrap()),
        )
        .build(),
    );
    Router::new()
        .route("/", get(|| async { "home" }))
        // The page serving the single-page app hands the cookie out.
        .route(
            "/app",
            get(|t: CsrfToken| async move {
                t.ensure_spa_cookie();
                "app"
            }),
        )
        .route("/form", get(|t: CsrfToken| async move { t.token().await }))
        .route(
            "/login/{user}",
            post(
                |s: Session, axum::extract::Path(u): axum::extract::Path<String>| async move {
                    s.login(&u).await?;
                    Ok::<_, SessionError>("ok")
                },
            ),
        )
        .route(
            "/logout",
            post(|s: Session| async move {
                s.logout().await?;
                Ok::<_, SessionError>("bye")
            }),
        )
        .route("/echo", post(|body: Bytes| async move { body }))
        // A static file with the handler's own caching policy.
        .route(
            "/static/app.js",
            get(|| async {
                (
                    [
                        (header::CACHE_CONTROL, "public, max-age=3600"),
                        (header::VARY, "Accept-Encoding"),
                    ],
                    "js",
                )
            }),
        )
        .layer(csrf.into())
        .layer(sessions)
}

fn spa() -> CsrfSettings {
    CsrfSettings::new()
        .with_spa_cookie(SpaCookie::default())
        .unwrap()
}

/// A browser's cookie jar (name -> value) in front of the app.
#[derive(Clone)]
struct Client {
    app: Router,
    cookies: Vec<(String, String)>,
}

impl Client {
    fn new(csrf: impl Into<CsrfLayer>) -> Self {
        Client {
            app: app(csrf),
            cookies: Vec::new(),
        }
    }

    /// Another browser on the same app.
    fn sibling(&self) -> Self {
        Client {
            app: self.app.clone(),
            cookies: Vec::new(),
        }
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    async fn send(&mut self, req: http::request::Builder) -> Response<Body> {
        let mut req = req;
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            req = req.header(header::COOKIE, jar.join("; "));
        }
        let res = self
            .app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        for (name, value) in set_cookies(&res) {
            self.cookies.retain(|(n, _)| *n != name);
            if !value.is_empty() {
                self.cookies.push((name, value));
            }
        }
        res
    }

    async fn get(&mut self, uri: &str) -> Response<Body> {
        self.send(Request::get(uri)).await
    }

    /// What Angular and axios do: copy the `XSRF-TOKEN` cookie (if any) into `X-XSRF-TOKEN`.
    async fn post(&mut self, uri: &str) -> Response<Body> {
        let mut req = Request::post(uri);
        if let Some(token) = self.cookie("XSRF-TOKEN") {
            req = req.header("X-XSRF-TOKEN", token);
        }
        self.send(req).await
    }

    async fn post_with(&mut self, uri: &str, header: &str, token: &str) -> Response<Body> {
        self.send(Request::post(uri).header(header, token)).await
    }
}

/// (name, value) of each `Set-Cookie`.
fn set_cookies(res: &Response<Body>) -> Vec<(String, String)> {
    res.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|sc| {
            let pair = sc.to_str().unwrap().split(';').next().unwrap();
            let (n, v) = pair.split_once('=').unwrap();
            (n.to_owned(), v.to_owned())
        })
        .collect()
}

/// The full `Set-Cookie` line for `name`, if the response sets it.
fn set_cookie_line(res: &Response<Body>, name: &str) -> Option<String> {
    res.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|l| l.starts_with(&format!("{name}=")))
}

fn reason(res: &Response<Body>) -> Option<Reason> {
    res.extensions().get::<ProtectionError>().map(|e| e.kind())
}

#[tokio::test]
async fn the_readable_cookie_is_set_and_its_value_in_the_header_passes() {
    let mut c = Client::new(spa());
    let res = c.get("/app").await;
    assert_eq!(res.status(), StatusCode::OK);
    let line = set_cookie_line(&res, "XSRF-TOKEN").expect("XSRF-TOKEN set by the app page");
    assert!(!line.contains("HttpOnly"), "scripts must read it: {line}");
    for attr in ["Secure", "SameSite=Lax", "Path=/"] {
        assert!(line.contains(attr), "{attr} missing: {line}");
    }
    // Before a session it is a token of the `_xsrf` cookie's secret, set in the same response.
    let xsrf = c.cookie("_xsrf").expect("_xsrf set with it");
    let spa_token = c.cookie("XSRF-TOKEN").unwrap();
    assert!(spa_token.starts_with("2|"), "{spa_token}");
    let secret = cloakroom_core::csrf::decode_token(&xsrf).unwrap();
    secret.verify(&spa_token).unwrap();

    // Header = cookie value: passes.
    let res = c.post("/echo").await;
    assert_eq!(res.status(), StatusCode::OK);
    // A request already holding a token of the current secret gets no new cookie.
    let res = c.get("/").await;
    assert_eq!(set_cookie_line(&res, "XSRF-TOKEN"), None);
    assert_eq!(set_cookie_line(&res, "_xsrf"), None);
    // A stale one (another secret) is replaced on the next answer.
    c.cookies.retain(|(n, _)| n != "XSRF-TOKEN");
    c.cookies
        .push(("XSRF-TOKEN".into(), Secret::generate().mask()));
    let res = c.get("/").await;
    assert!(set_cookie_line(&res, "XSRF-TOKEN").is_some());
    secret.verify(&c.cookie("XSRF-TOKEN").unwrap()).unwrap();
    assert_eq!(c.post("/echo").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_cookie_alone_or_the_header_alone_before_a_session_is_refused() {
    let mut c = Client::new(spa());
    c.get("/app").await;
    let token = c.cookie("XSRF-TOKEN").unwrap();
    // Cookie without header: what a forged cross-site request looks like.
    let res = c.send(Request::post("/echo")).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(reason(&res), Some(Reason::TokenMissing));
    // Header without cookies: before a session the secret is the `_xsrf` cookie's, and
    // there is none.
    let mut bare = c.sibling();
    let res = bare.post_with("/echo", "X-XSRF-TOKEN", &token).await;
    assert_eq!(reason(&res), Some(Reason::TokenMismatch));
    // Without the `_xsrf` cookie but with XSRF-TOKEN copied: still nothing to match.
    let mut half = c.sibling();
    half.cookies.push(("XSRF-TOKEN".into(), token.clone()));
    let res = half.post("/echo").await;
    assert_eq!(reason(&res), Some(Reason::TokenMismatch));
    // A malformed header is reported as such.
    let res = c.post_with("/echo", "X-XSRF-TOKEN", "2|zz|zz|1").await;
    assert_eq!(reason(&res), Some(Reason::TokenMalformed));
}

#[tokio::test]
async fn login_sets_the_cookie_of_the_rotated_secret_and_the_old_one_fails() {
    let mut a = Client::new(spa());
    a.get("/app").await;
    let before = a.cookie("XSRF-TOKEN").unwrap();
    let res = a.post("/login/alice").await;
    assert_eq!(res.status(), StatusCode::OK);
    let line = set_cookie_line(&res, "XSRF-TOKEN").expect("the login response carries it");
    assert!(!line.contains("HttpOnly"), "{line}");
    let after = a.cookie("XSRF-TOKEN").unwrap();
    assert_ne!(before, after);
    // The new cookie's token passes; the one from before login fails.
    assert_eq!(a.post("/echo").await.status(), StatusCode::OK);
    let res = a.post_with("/echo", "X-XSRF-TOKEN", &before).await;
    assert_eq!(reason(&res), Some(Reason::TokenMismatch));
    // Logging in again rotates again, in the same response.
    assert_eq!(a.post("/login/alice").await.status(), StatusCode::OK);
    let again = a.cookie("XSRF-TOKEN").unwrap();
    assert_ne!(again, after);
    let res = a.post_with("/echo", "X-XSRF-TOKEN", &after).await;
    assert_eq!(reason(&res), Some(Reason::TokenMismatch));
    assert_eq!(a.post("/echo").await.status(), StatusCode::OK);
    // No new cookie on a GET while it holds the current secret's token.
    let res = a.get("/").await;
    assert_eq!(set_cookie_line(&res, "XSRF-TOKEN"), None);

    // Another session refuses A's token.
    let mut b = a.sibling();
    b.get("/app").await;
    assert_eq!(b.post("/login/bob").await.status(), StatusCode::OK);
    let res = b.post_with("/echo", "X-XSRF-TOKEN", &again).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(reason(&res), Some(Reason::TokenMismatch));

    // In a session, a header with a valid token passes without the XSRF-TOKEN cookie: the
    // check is "a token of the session's secret", the cookie is only how scripts get it.
    let mut no_cookie = a.clone();
    no_cookie.cookies.retain(|(n, _)| n != "XSRF-TOKEN");
    let res = no_cookie.post_with("/echo", "X-XSRF-TOKEN", &again).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn logout_sets_the_cookie_of_the_xsrf_secret() {
    let mut c = Client::new(spa());
    c.get("/app").await;
    assert_eq!(c.post("/login/carol").await.status(), StatusCode::OK);
    let in_session = c.cookie("XSRF-TOKEN").unwrap();
    let res = c.post("/logout").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(set_cookie_line(&res, "XSRF-TOKEN").is_some());
    let xsrf = cloakroom_core::csrf::decode_token(&c.cookie("_xsrf").unwrap()).unwrap();
    xsrf.verify(&c.cookie("XSRF-TOKEN").unwrap()).unwrap();
    // The session's token is dead; the new cookie works, and logging in again too.
    let res = c.post_with("/echo", "X-XSRF-TOKEN", &in_session).await;
    assert_eq!(reason(&res), Some(Reason::TokenMismatch));
    assert_eq!(c.post("/echo").await.status(), StatusCode::OK);
    assert_eq!(c.post("/login/carol").await.status(), StatusCode::OK);
    assert_eq!(c.post("/echo").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn cookie_and_header_names_are_configurable() {
    let layer = CsrfSettings::new()
        .with_spa_cookie(
            SpaCookie::new()
                .with_cookie_name("__Host-XSRF-TOKEN")
                .with_header_name(HeaderName::from_static("x-my-token")),
        )
        .unwrap();
    let mut c = Client::new(layer);
    let res = c.get("/app").await;
    let line = set_cookie_line(&res, "__Host-XSRF-TOKEN").unwrap();
    assert!(
        line.contains("Secure") && !line.contains("Domain"),
        "{line}"
    );
    assert_eq!(set_cookie_line(&res, "XSRF-TOKEN"), None);
    let token = c.cookie("__Host-XSRF-TOKEN").unwrap();
    assert_eq!(
        c.post_with("/echo", "X-My-Token", &token).await.status(),
        StatusCode::OK
    );
    // The standard headers still work.
    assert_eq!(
        c.post_with("/echo", "X-XSRF-TOKEN", &token).await.status(),
        StatusCode::OK
    );
    // A prefix the cookie settings break is a configuration error.
    let bad = CsrfSettings::new()
        .with_cookie_domain("example.com")
        .unwrap()
        .with_spa_cookie(SpaCookie::new().with_cookie_name("__Host-XSRF-TOKEN"));
    assert!(bad.is_err());
    let bad = CsrfSettings::new().with_spa_cookie(SpaCookie::new().with_cookie_name("x;y"));
    assert!(bad.is_err());
}

#[tokio::test]
async fn x_xsrf_token_is_read_without_the_spa_cookie_and_no_cookie_is_set() {
    let mut c = Client::new(CsrfSettings::new());
    let res = c.get("/form").await;
    assert_eq!(set_cookie_line(&res, "XSRF-TOKEN"), None);
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    let token = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(
        c.post_with("/echo", "X-XSRF-TOKEN", &token).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn tokenless_mode_checks_fetch_metadata_and_origin_only() {
    let mut c = Client::new(CsrfSettings::tokenless().add_token_path("/login/dave"));
    let post = |site: Option<&str>, origin: Option<&str>| {
        let mut req = Request::post("/echo").header(header::HOST, "app.example");
        if let Some(site) = site {
            req = req.header("Sec-Fetch-Site", site);
        }
        if let Some(origin) = origin {
            req = req.header(header::ORIGIN, origin);
        }
        req
    };
    // Same origin, by Fetch Metadata or by Origin = Host: passes without a token.
    let same = c
        .send(post(Some("same-origin"), Some("https://app.example")))
        .await;
    assert_eq!(same.status(), StatusCode::OK);
    let res = c.send(post(None, Some("https://app.example"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    // Cross-site and same-site (a sibling subdomain) are refused.
    for (site, origin) in [
        (Some("cross-site"), Some("https://evil.example")),
        (Some("same-site"), Some("https://blog.app.example")),
        (None, Some("https://evil.example")),
        (None, Some("null")),
    ] {
        let res = c.send(post(site, origin)).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{site:?} {origin:?}");
        assert_eq!(reason(&res), Some(Reason::CrossOrigin));
    }
    // Neither header: a non-browser client (or a browser from before 2020). Passes, as
    // documented.
    let res = c.send(post(None, None)).await;
    assert_eq!(res.status(), StatusCode::OK);

    // A token path still needs its token, even same-origin.
    let res = c
        .send(Request::post("/login/dave").header("Sec-Fetch-Site", "same-origin"))
        .await;
    assert_eq!(reason(&res), Some(Reason::TokenMissing));
    let mut form = c.clone();
    let res = form.get("/form").await;
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    let token = String::from_utf8(body.to_vec()).unwrap();
    let res = form
        .send(
            Request::post("/login/dave")
                .header("Sec-Fetch-Site", "same-origin")
                .header("X-XSRFToken", &token),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    // Exact paths only: a neighbour of the token path is tokenless.
    let res = c
        .send(Request::post("/login/davey").header("Sec-Fetch-Site", "same-origin"))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn tokenless_mode_with_the_spa_cookie_keeps_tokens_on_token_paths() {
    let layer = CsrfSettings::tokenless()
        .add_token_path("/login/erin")
        .with_spa_cookie(SpaCookie::default())
        .unwrap();
    let mut c = Client::new(layer);
    c.get("/app").await;
    let res = c.send(Request::post("/login/erin")).await;
    assert_eq!(reason(&res), Some(Reason::TokenMissing));
    assert_eq!(c.post("/login/erin").await.status(), StatusCode::OK);
    // Elsewhere no token is needed.
    let res = c.send(Request::post("/echo")).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn only_clients_of_the_app_get_the_cookie_unless_eager() {
    let mut c = Client::new(spa());
    // A visitor that never met the app: no cookie, on any page, nor on login.
    let res = c.get("/").await;
    assert!(set_cookies(&res).is_empty(), "{:?}", set_cookies(&res));
    let res = c.get("/form").await;
    assert_eq!(set_cookie_line(&res, "XSRF-TOKEN"), None);
    assert!(
        c.cookie("_xsrf").is_some(),
        "the form's token needs the _xsrf cookie"
    );
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    let token = String::from_utf8(body.to_vec()).unwrap();
    let res = c.post_with("/login/frank", "X-XSRFToken", &token).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(set_cookie_line(&res, "XSRF-TOKEN"), None);
    // Once it holds the cookie, it is kept current.
    let res = c.get("/app").await;
    assert!(set_cookie_line(&res, "XSRF-TOKEN").is_some());
    assert_eq!(c.post("/echo").await.status(), StatusCode::OK);

    // Eager: every answer to a new visitor hands it out, with the `_xsrf` secret it is of.
    let mut e = Client::new(
        CsrfSettings::new()
            .with_spa_cookie(SpaCookie::new().with_eager(true))
            .unwrap(),
    );
    let res = e.get("/").await;
    assert!(set_cookie_line(&res, "XSRF-TOKEN").is_some());
    let xsrf = cloakroom_core::csrf::decode_token(&e.cookie("_xsrf").unwrap()).unwrap();
    xsrf.verify(&e.cookie("XSRF-TOKEN").unwrap()).unwrap();
    assert_eq!(e.post("/echo").await.status(), StatusCode::OK);
}

/// Every value of a response header, in order.
fn values(res: &Response<Body>, name: HeaderName) -> Vec<String> {
    res.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// A response that sets the `XSRF-TOKEN` or `_xsrf` cookie must not be stored by a shared
/// cache and handed to someone else: `Cache-Control: no-store` (unless the handler chose a
/// policy) and `Vary: Cookie` (added to the handler's `Vary`, never twice), as the session
/// layer does for its own cookie.
#[tokio::test]
async fn responses_setting_a_csrf_cookie_are_not_cacheable() {
    let mut c = Client::new(spa());
    // The app page: XSRF-TOKEN and a new _xsrf cookie.
    let res = c.get("/app").await;
    assert!(set_cookie_line(&res, "XSRF-TOKEN").is_some());
    assert_eq!(values(&res, header::CACHE_CONTROL), ["no-store"]);
    assert_eq!(values(&res, header::VARY), ["Cookie"]);
    // Nothing set: nothing added.
    let res = c.get("/").await;
    assert!(set_cookies(&res).is_empty());
    assert!(values(&res, header::CACHE_CONTROL).is_empty());
    assert!(values(&res, header::VARY).is_empty());
    // A stale XSRF-TOKEN is refreshed on a health check and on a static file.
    let stale = || ("XSRF-TOKEN".to_owned(), Secret::generate().mask());
    c.cookies.retain(|(n, _)| n != "XSRF-TOKEN");
    c.cookies.push(stale());
    let res = c.get("/").await;
    assert!(set_cookie_line(&res, "XSRF-TOKEN").is_some());
    assert_eq!(values(&res, header::CACHE_CONTROL), ["no-store"]);
    assert_eq!(values(&res, header::VARY), ["Cookie"]);
    c.cookies.retain(|(n, _)| n != "XSRF-TOKEN");
    c.cookies.push(stale());
    let res = c.get("/static/app.js").await;
    assert!(set_cookie_line(&res, "XSRF-TOKEN").is_some());
    assert_eq!(
        values(&res, header::CACHE_CONTROL),
        ["public, max-age=3600"],
        "the handler's policy is kept"
    );
    assert_eq!(values(&res, header::VARY), ["Accept-Encoding", "Cookie"]);
    // Login: the session cookie and the rotated secret's XSRF-TOKEN, Vary: Cookie once.
    let res = c.post("/login/ida").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(set_cookie_line(&res, "XSRF-TOKEN").is_some());
    assert!(set_cookie_line(&res, "__Host-session").is_some());
    assert_eq!(values(&res, header::CACHE_CONTROL), ["no-store"]);
    assert_eq!(values(&res, header::VARY), ["Cookie"]);

    // Without the SPA cookie: a page rendering a token sets a new `_xsrf` cookie.
    let mut plain = Client::new(CsrfSettings::new());
    let res = plain.get("/form").await;
    assert!(set_cookie_line(&res, "_xsrf").is_some());
    assert_eq!(values(&res, header::CACHE_CONTROL), ["no-store"]);
    assert_eq!(values(&res, header::VARY), ["Cookie"]);
    let res = plain.get("/form").await;
    assert!(set_cookies(&res).is_empty());
    assert!(values(&res, header::CACHE_CONTROL).is_empty());
}
