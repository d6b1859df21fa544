//! Header for header: the same CSRF-protected request sequences through axum with the tower
//! `CsrfLayer` + `SessionLayer` and through actix-web with `CsrfMiddleware` +
//! `SessionMiddleware` (same settings, same store type) give the same status, the same
//! `Set-Cookie` headers (cookie values masked: each side makes its own random secrets and
//! tickets), the same `Cache-Control`, `Vary` and `Content-Type`, the same body and the same
//! refusal reason, for a table of cases: every token source, each refusal, trusted origins,
//! exempt paths, oversized forms, malformed `_xsrf` cookies, login rotation and logout, the
//! SPA cookie and tokenless mode.

use std::future::Future;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::test::TestRequest;
use actix_web::{App, test, web};
use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::{get, post};
use cloakroom_core::csrf::{CsrfSettings, ProtectionError, Reason, Secret, SpaCookie};
use cloakroom_core::{Key, KeyRing, MemoryStore, SessionSettings};
use tower::ServiceExt;

fn keys() -> KeyRing {
    KeyRing::single(Key::from_bytes(&[11; 32]).unwrap())
}

/// One request, as both sides are sent it.
#[derive(Clone, Debug, Default)]
struct Req {
    method: &'static str,
    uri: &'static str,
    headers: Vec<(String, String)>,
    body: String,
}

/// What is compared.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    set_cookie: Vec<String>,
    cache_control: Vec<String>,
    vary: Vec<String>,
    content_type: Vec<String>,
    reason: Option<Reason>,
    body: String,
}

const NAMES: [&str; 4] = ["set-cookie", "cache-control", "vary", "content-type"];

/// A `Set-Cookie` line with its value masked (kept when empty: a removal).
fn mask(set_cookie: &str) -> String {
    let (pair, rest) = set_cookie.split_once(';').unwrap_or((set_cookie, ""));
    match pair.split_once('=') {
        Some((name, value)) if !value.is_empty() => format!("{name}=<value>;{rest}"),
        _ => set_cookie.to_owned(),
    }
}

fn seen(status: u16, mut headers: Vec<Vec<String>>, reason: Option<Reason>, body: String) -> Seen {
    headers[0] = headers[0].iter().map(|c| mask(c)).collect();
    let [set_cookie, cache_control, vary, content_type] = <[_; 4]>::try_from(headers).unwrap();
    Seen {
        status,
        set_cookie,
        cache_control,
        vary,
        content_type,
        reason,
        body,
    }
}

// ---- the two apps: the same routes and settings ----

fn axum_app(settings: CsrfSettings) -> Router {
    use cloakroom_tower::{CsrfLayer, CsrfToken, Session, SessionError, SessionLayer};
    Router::new()
        .route(
            "/token",
            get(|csrf: CsrfToken| async move { csrf.token().await }),
        )
        .route(
            "/spa",
            get(|csrf: CsrfToken| async move {
                csrf.ensure_spa_cookie();
                "app"
            }),
        )
        .route(
            "/submit",
            post(|body: String| async move { format!("{} bytes", body.len()) }),
        )
        .route("/webhook", post(|| async { "hook" }))
        .route(
            "/login/{user}",
            post(|s: Session, Path(u): Path<String>| async move {
                s.login(&u).await?;
                Ok::<_, SessionError>("in")
            }),
        )
        .route(
            "/logout",
            post(|s: Session| async move {
                s.logout().await?;
                Ok::<_, SessionError>("out")
            }),
        )
        .layer(CsrfLayer::from(settings))
        .layer(SessionLayer::new(
            SessionSettings::new(MemoryStore::new(), keys()).build(),
        ))
}

mod actix_side {
    use cloakroom_actix::{CsrfToken, Error, Session};

    use super::web;

    pub(super) async fn token(csrf: CsrfToken) -> Result<String, Error> {
        Ok(csrf.token().await?)
    }

    pub(super) async fn spa(csrf: CsrfToken) -> &'static str {
        csrf.ensure_spa_cookie();
        "app"
    }

    pub(super) async fn submit(body: String) -> String {
        format!("{} bytes", body.len())
    }

    pub(super) async fn webhook() -> &'static str {
        "hook"
    }

    pub(super) async fn login(s: Session, user: web::Path<String>) -> Result<&'static str, Error> {
        s.login(&user).await?;
        Ok("in")
    }

    pub(super) async fn logout(s: Session) -> Result<&'static str, Error> {
        s.logout().await?;
        Ok("out")
    }
}

macro_rules! actix_app {
    ($settings:expr) => {
        test::init_service(
            App::new()
                .wrap(cloakroom_actix::CsrfMiddleware::from($settings))
                .wrap(cloakroom_actix::SessionMiddleware::new(
                    SessionSettings::new(MemoryStore::new(), keys()).build(),
                ))
                .route("/token", web::get().to(actix_side::token))
                .route("/spa", web::get().to(actix_side::spa))
                .route("/submit", web::post().to(actix_side::submit))
                .route("/webhook", web::post().to(actix_side::webhook))
                .route("/login/{user}", web::post().to(actix_side::login))
                .route("/logout", web::post().to(actix_side::logout)),
        )
        .await
    };
}

// ---- the scenarios ----

/// The token a step sends.
#[derive(Clone, Copy, Debug)]
enum Tok {
    None,
    /// The last one `/token` rendered.
    Current,
    /// The one saved before the login.
    Stale,
    /// A token of another secret.
    Other,
    /// Not a token.
    Junk,
    /// The value of the `XSRF-TOKEN` cookie in the jar.
    SpaCookie,
}

/// Where it goes.
#[derive(Clone, Copy, Debug)]
enum Via {
    Form,
    Header(&'static str),
}

#[derive(Clone, Copy, Debug)]
struct Step {
    method: &'static str,
    uri: &'static str,
    tok: Tok,
    via: Via,
    headers: &'static [(&'static str, &'static str)],
    /// A form this many bytes long (padding), besides the token.
    pad: usize,
    /// Sent with this `Cookie` header instead of the jar's.
    cookie: Option<&'static str>,
    /// Save the current token as the stale one first.
    save: bool,
}

const fn step(method: &'static str, uri: &'static str, tok: Tok, via: Via) -> Step {
    Step {
        method,
        uri,
        tok,
        via,
        headers: &[],
        pad: 0,
        cookie: None,
        save: false,
    }
}

const X: Via = Via::Header("X-XSRFToken");

const fn with(mut s: Step, headers: &'static [(&'static str, &'static str)]) -> Step {
    s.headers = headers;
    s
}

/// One client's state on one side.
#[derive(Default)]
struct Client {
    jar: Vec<(String, String)>,
    current: String,
    stale: String,
}

impl Client {
    fn request(&mut self, s: &Step, other: &str) -> Req {
        if s.save {
            self.stale = self.current.clone();
        }
        let jar_value = |name: &str| {
            self.jar
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let token = match s.tok {
            Tok::None => None,
            Tok::Current => Some(self.current.clone()),
            Tok::Stale => Some(self.stale.clone()),
            Tok::Other => Some(other.to_owned()),
            Tok::Junk => Some("2|not|a|token".to_owned()),
            Tok::SpaCookie => Some(jar_value("XSRF-TOKEN")),
        };
        let mut headers: Vec<(String, String)> = s
            .headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        let cookie = match s.cookie {
            Some(c) => Some(c.to_owned()),
            None => {
                let pairs: Vec<String> = self.jar.iter().map(|(n, v)| format!("{n}={v}")).collect();
                (!pairs.is_empty()).then(|| pairs.join("; "))
            }
        };
        headers.extend(cookie.map(|c| ("cookie".to_owned(), c)));
        let mut body = String::new();
        match (token, s.via) {
            (Some(t), Via::Header(h)) => headers.push((h.to_owned(), t)),
            (Some(t), Via::Form) => body = format!("_xsrf={}", t.replace('|', "%7C")),
            (None, _) => {}
        }
        if matches!(s.via, Via::Form) || s.pad > 0 {
            headers.push((
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ));
            if s.pad > 0 {
                body = format!("pad={}&{body}", "a".repeat(s.pad));
            }
        }
        Req {
            method: s.method,
            uri: s.uri,
            headers,
            body,
        }
    }

    /// Takes the response's cookies into the jar, and a rendered token as the current one.
    fn absorb(&mut self, s: &Step, raw_set_cookie: &[String], body: &str) {
        for c in raw_set_cookie {
            let pair = c.split(';').next().unwrap_or("");
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            self.jar.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.jar.push((name.to_owned(), value.to_owned()));
            }
        }
        if s.uri == "/token" && body.starts_with("2|") {
            self.current = body.to_owned();
        }
    }
}

/// Runs `steps` against one side; `send` returns what is compared plus the raw
/// `Set-Cookie` lines and body (to keep the jar and the token).
async fn run<F, Fut>(steps: &[Step], mut send: F) -> Vec<Seen>
where
    F: FnMut(Req) -> Fut,
    Fut: Future<Output = (Seen, Vec<String>)>,
{
    let mut client = Client::default();
    let other = Secret::generate().mask();
    let mut out = Vec::new();
    for s in steps {
        let req = client.request(s, &other);
        let (mut seen, raw) = send(req).await;
        client.absorb(s, &raw, &seen.body);
        if s.uri == "/token" && seen.body.starts_with("2|") {
            seen.body = "<token>".into();
        }
        out.push(seen);
    }
    out
}

async fn compare(settings: CsrfSettings, steps: &[Step]) -> Vec<Seen> {
    let axum = axum_app(settings.clone());
    let actix = actix_app!(settings);
    let a = run(steps, |req| axum_pass(&axum, req)).await;
    let b = run(steps, |req| actix_pass(&actix, req)).await;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "step {i}: {:?}", steps[i]);
    }
    assert_eq!(a.len(), b.len());
    a
}

async fn axum_pass(app: &Router, req: Req) -> (Seen, Vec<String>) {
    let mut builder = http::Request::builder().method(req.method).uri(req.uri);
    for (n, v) in &req.headers {
        builder = builder.header(n.as_str(), v.as_str());
    }
    let res = app
        .clone()
        .oneshot(builder.body(Body::from(req.body)).unwrap())
        .await
        .unwrap();
    let headers: Vec<Vec<String>> = NAMES
        .iter()
        .map(|n| {
            res.headers()
                .get_all(*n)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    let raw = headers[0].clone();
    let reason = res
        .extensions()
        .get::<ProtectionError>()
        .map(ProtectionError::kind);
    let status = res.status().as_u16();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    (seen(status, headers, reason, body), raw)
}

async fn actix_pass<S, B>(app: &S, req: Req) -> (Seen, Vec<String>)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let method = actix_web::http::Method::from_bytes(req.method.as_bytes()).unwrap();
    let mut builder = TestRequest::default().method(method).uri(req.uri);
    for (n, v) in req.headers {
        builder = builder.append_header((n, v));
    }
    let res = test::call_service(app, builder.set_payload(req.body).to_request()).await;
    let headers: Vec<Vec<String>> = NAMES
        .iter()
        .map(|n| {
            res.headers()
                .get_all(*n)
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    let raw = headers[0].clone();
    let reason = res
        .response()
        .extensions()
        .get::<ProtectionError>()
        .map(ProtectionError::kind);
    let status = res.status().as_u16();
    let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
    (seen(status, headers, reason, body), raw)
}

const FORM: &[(&str, &str)] = &[];
const JSON: &[(&str, &str)] = &[("accept", "application/json")];
const CROSS_SITE: &[(&str, &str)] = &[("sec-fetch-site", "cross-site")];
const SAME_ORIGIN: &[(&str, &str)] = &[("sec-fetch-site", "same-origin")];
const EVIL_ORIGIN: &[(&str, &str)] = &[("host", "app.example"), ("origin", "https://evil.example")];
const OWN_ORIGIN: &[(&str, &str)] = &[("host", "app.example"), ("origin", "https://app.example")];
const PARTNER: &[(&str, &str)] = &[
    ("sec-fetch-site", "cross-site"),
    ("origin", "https://partner.example"),
];

#[actix_web::test]
async fn token_checks_are_header_for_header_the_tower_layers() {
    let settings = CsrfSettings::new()
        .add_trusted_origin("https://partner.example")
        .unwrap()
        .add_exempt_path("/webhook")
        .with_body_limit(256);
    let steps = [
        step("GET", "/token", Tok::None, X),
        step("POST", "/submit", Tok::None, X),
        with(step("POST", "/submit", Tok::None, X), JSON),
        with(step("POST", "/submit", Tok::Current, Via::Form), FORM),
        step("POST", "/submit", Tok::Current, X),
        step("POST", "/submit", Tok::Current, Via::Header("X-CSRFToken")),
        step("POST", "/submit", Tok::Current, Via::Header("X-XSRF-TOKEN")),
        step("POST", "/submit", Tok::Junk, X),
        with(step("POST", "/submit", Tok::Junk, Via::Form), JSON),
        step("POST", "/submit", Tok::Other, X),
        with(step("POST", "/submit", Tok::Current, X), CROSS_SITE),
        with(step("POST", "/submit", Tok::Current, X), EVIL_ORIGIN),
        with(step("POST", "/submit", Tok::Current, X), OWN_ORIGIN),
        with(step("POST", "/submit", Tok::Current, X), PARTNER),
        with(step("POST", "/webhook", Tok::None, X), CROSS_SITE),
        Step {
            pad: 1000,
            ..step("POST", "/submit", Tok::Current, Via::Form)
        },
        Step {
            pad: 1000,
            ..step("POST", "/submit", Tok::Current, X)
        },
        // A malformed `_xsrf` cookie: refused with a reason, and replaced by a page render.
        Step {
            cookie: Some("_xsrf=%%%"),
            ..step("POST", "/submit", Tok::Current, X)
        },
        Step {
            cookie: Some("_xsrf=2|zz"),
            ..step("POST", "/submit", Tok::Junk, X)
        },
        Step {
            cookie: Some("_xsrf=\u{e9}"),
            ..step("GET", "/token", Tok::None, X)
        },
        step("GET", "/token", Tok::None, X),
        // Login rotates the secret; logout goes back to the `_xsrf` cookie's.
        Step {
            save: true,
            ..step("POST", "/login/alice", Tok::Current, X)
        },
        step("POST", "/submit", Tok::Stale, X),
        step("GET", "/token", Tok::None, X),
        step("POST", "/submit", Tok::Current, Via::Form),
        step("POST", "/logout", Tok::Current, X),
        step("POST", "/submit", Tok::Current, X),
        step("POST", "/submit", Tok::Stale, X),
    ];
    let seen = compare(settings, &steps).await;
    // The table covered what it claims: a new _xsrf cookie, each reason, 413, a login's and
    // a logout's session cookie.
    assert!(seen[0].set_cookie[0].starts_with("_xsrf=<value>; Path=/; Secure; HttpOnly"));
    let reasons: Vec<Option<Reason>> = seen.iter().map(|s| s.reason).collect();
    for reason in Reason::ALL {
        assert!(reasons.contains(&Some(reason)), "{reason}");
    }
    assert_eq!(seen[2].content_type, ["application/json"]);
    assert_eq!(seen[3].status, 200);
    assert_eq!(seen[15].status, 413);
    assert_eq!(seen[16].status, 200);
    assert_eq!(seen[17].reason, Some(Reason::TokenMismatch));
    assert!(seen[19].set_cookie[0].starts_with("_xsrf=<value>"));
    assert!(
        seen[21]
            .set_cookie
            .iter()
            .any(|c| c.starts_with("__Host-session=<value>"))
    );
    assert_eq!(seen[22].reason, Some(Reason::TokenMismatch));
    assert_eq!(seen[24].status, 200);
    assert!(seen[25].set_cookie.iter().any(|c| c.contains("Max-Age=0")));
    assert_eq!(
        seen[27].status, 200,
        "after the logout the _xsrf secret is expected again"
    );
}

#[actix_web::test]
async fn spa_and_tokenless_checks_are_header_for_header_the_tower_layers() {
    let settings = CsrfSettings::tokenless()
        .add_token_path("/login/alice")
        .with_cookie_secure(false)
        .unwrap()
        .with_spa_cookie(SpaCookie::default())
        .unwrap();
    let steps = [
        with(step("POST", "/submit", Tok::None, X), SAME_ORIGIN),
        step("POST", "/submit", Tok::None, X),
        with(step("POST", "/submit", Tok::None, X), CROSS_SITE),
        with(step("POST", "/submit", Tok::None, X), EVIL_ORIGIN),
        step("GET", "/spa", Tok::None, X),
        step("GET", "/spa", Tok::None, X),
        step("POST", "/login/alice", Tok::None, X),
        step(
            "POST",
            "/login/alice",
            Tok::Junk,
            Via::Header("X-XSRF-TOKEN"),
        ),
        step("GET", "/token", Tok::None, X),
        Step {
            save: true,
            ..step(
                "POST",
                "/login/alice",
                Tok::SpaCookie,
                Via::Header("X-XSRF-TOKEN"),
            )
        },
        step(
            "POST",
            "/login/alice",
            Tok::Stale,
            Via::Header("X-XSRF-TOKEN"),
        ),
        step(
            "POST",
            "/login/alice",
            Tok::SpaCookie,
            Via::Header("X-XSRF-TOKEN"),
        ),
        step("POST", "/submit", Tok::None, X),
        step("POST", "/logout", Tok::None, X),
        step(
            "POST",
            "/login/alice",
            Tok::SpaCookie,
            Via::Header("X-XSRF-TOKEN"),
        ),
    ];
    let seen = compare(settings, &steps).await;
    assert_eq!(seen[0].status, 200);
    assert_eq!(seen[2].reason, Some(Reason::CrossOrigin));
    let spa = &seen[4].set_cookie;
    assert!(
        spa[0].starts_with("XSRF-TOKEN=<value>; Path=/; SameSite=Lax"),
        "{spa:?}"
    );
    assert!(spa[1].starts_with("_xsrf=<value>"), "{spa:?}");
    assert!(
        seen[5].set_cookie.is_empty(),
        "a current SPA cookie is kept"
    );
    assert_eq!(seen[6].reason, Some(Reason::TokenMissing));
    assert_eq!(seen[9].status, 200);
    assert!(seen[9].set_cookie[0].starts_with("XSRF-TOKEN=<value>"));
    assert_eq!(seen[10].reason, Some(Reason::TokenMismatch));
    assert!(
        seen[13]
            .set_cookie
            .iter()
            .any(|c| c.starts_with("XSRF-TOKEN=<value>"))
    );
    assert_eq!(seen[14].status, 200);
}
