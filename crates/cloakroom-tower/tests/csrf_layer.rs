//! CsrfLayer through axum with `oneshot`: tokens (session and cookie modes), body handling,
//! cross-origin refusals, exempt paths and the rejection format.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::{get, post};
use cloakroom_core::csrf::{ProtectionError, Reason, Secret};
use cloakroom_core::{Key, KeyRing, MemoryStore};
use cloakroom_tower::csrf::ResponseFormat;
use cloakroom_tower::{
    CsrfLayer, CsrfMode, CsrfSettings, CsrfToken, Session, SessionError, SessionLayer,
    SessionSettings,
};
use http::{Request, Response, StatusCode, header};
use tower::ServiceExt;

/// `settings` with the exempt paths of [`app`].
fn exempt(settings: CsrfSettings) -> CsrfSettings {
    settings
        .add_exempt_path("/webhook")
        .add_exempt_path("/start")
}

fn app(csrf: CsrfLayer) -> Router {
    let sessions = SessionLayer::new(
        SessionSettings::new(
            Arc::new(MemoryStore::new()),
            KeyRing::single(Key::from_bytes(&[5; 32]).unwrap()),
        )
        .build(),
    );
    Router::new()
        .route("/form", get(|t: CsrfToken| async move { t.token().await }))
        .route(
            "/field",
            get(|t: CsrfToken| async move { t.form_field().await }),
        )
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
            "/start",
            post(|s: Session| async move {
                s.set("x", &1).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        // Echoes the body it received, to prove it arrives intact.
        .route("/echo", post(|body: Bytes| async move { body }))
        .route("/webhook", post(|| async { "hook" }))
        .layer(csrf)
        .layer(sessions)
}

struct Client {
    app: Router,
    cookies: Vec<String>,
}

impl Client {
    fn new(settings: CsrfSettings) -> Self {
        Client::with_layer(CsrfLayer::new(exempt(settings)))
    }

    fn with_layer(csrf: CsrfLayer) -> Self {
        Client {
            app: app(csrf),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies.join("; ")
    }

    async fn send(&mut self, req: http::request::Builder, body: Body) -> Response<Body> {
        let mut req = req;
        if !self.cookies.is_empty() {
            req = req.header(header::COOKIE, self.cookie_header());
        }
        let res = self
            .app
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        for sc in res.headers().get_all(header::SET_COOKIE) {
            let pair = sc.to_str().unwrap().split(';').next().unwrap().to_owned();
            let name = pair.split('=').next().unwrap().to_owned();
            self.cookies.retain(|c| !c.starts_with(&format!("{name}=")));
            if !pair.ends_with('=') {
                self.cookies.push(pair);
            }
        }
        res
    }

    async fn token(&mut self) -> String {
        let res = self.send(Request::get("/form"), Body::empty()).await;
        assert_eq!(res.status(), StatusCode::OK);
        body(res).await
    }

    async fn post_form(&mut self, uri: &str, form: &str) -> Response<Body> {
        self.send(
            Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded"),
            Body::from(form.to_owned()),
        )
        .await
    }

    async fn post_header(&mut self, uri: &str, token: &str) -> Response<Body> {
        self.send(
            Request::post(uri).header("X-XSRFToken", token),
            Body::empty(),
        )
        .await
    }
}

async fn body(res: Response<Body>) -> String {
    let b = axum::body::to_bytes(res.into_body(), 1 << 22)
        .await
        .unwrap();
    String::from_utf8_lossy(&b).into_owned()
}

fn reason(res: &Response<Body>) -> Option<Reason> {
    res.extensions().get::<ProtectionError>().map(|e| e.kind())
}

fn enc(t: &str) -> String {
    t.replace('|', "%7C")
}

#[tokio::test]
async fn cookie_mode_without_a_session_is_tornado_double_submit() {
    let mut c = Client::new(CsrfSettings::new());
    let token = c.token().await;
    assert!(token.starts_with("2|"), "{token}");
    let xsrf = c
        .cookies
        .iter()
        .find(|x| x.starts_with("_xsrf="))
        .cloned()
        .unwrap();
    // The cookie holds the secret in Tornado's own v2 form.
    let secret = cloakroom_core::csrf::decode_token(xsrf.trim_start_matches("_xsrf=")).unwrap();
    secret.verify(&token).unwrap();
    // A second render reuses the cookie and masks afresh.
    let again = c.token().await;
    assert_ne!(token, again);
    assert_eq!(
        c.cookies.iter().filter(|x| x.starts_with("_xsrf=")).count(),
        1
    );
    for t in [&token, &again] {
        let res = c.post_form("/echo", &format!("_xsrf={}&a=1", enc(t))).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = c.post_header("/echo", &token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = c
        .send(
            Request::post("/echo").header("X-CSRFToken", &token),
            Body::empty(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn missing_malformed_and_mismatched_tokens_get_their_reasons() {
    let mut c = Client::new(CsrfSettings::new());
    let good = c.token().await;
    let other = Secret::generate().mask();
    let huge = "a".repeat(100_000);
    let cases: Vec<(String, Option<&str>, Reason)> = vec![
        ("a=1".into(), None, Reason::TokenMissing),
        ("_xsrf=".into(), None, Reason::TokenMissing),
        ("_xsrf=abc".into(), None, Reason::TokenMalformed),
        (
            format!("_xsrf={}", "zz".repeat(16)),
            None,
            Reason::TokenMalformed,
        ),
        (
            format!("_xsrf={}", "00".repeat(17)),
            None,
            Reason::TokenMalformed,
        ),
        (
            format!("_xsrf={}", enc(&good.replacen("2|", "3|", 1))),
            None,
            Reason::TokenMalformed,
        ),
        (format!("_xsrf={huge}"), None, Reason::TokenMalformed),
        (
            format!("_xsrf={}", enc(&other)),
            None,
            Reason::TokenMismatch,
        ),
        (
            format!("_xsrf={}", Secret::generate().to_hex()),
            None,
            Reason::TokenMismatch,
        ),
        (String::new(), Some("2|zz|zz|1"), Reason::TokenMalformed),
    ];
    for (form, header, want) in cases {
        let res = match header {
            Some(h) => c.post_header("/echo", h).await,
            None => c.post_form("/echo", &form).await,
        };
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{form:.60}");
        assert_eq!(reason(&res), Some(want), "{form:.60}");
        let text = body(res).await;
        assert!(text.contains(want.as_str()), "{text}");
    }
}

#[tokio::test]
async fn tokens_in_the_query_string_or_only_in_the_cookie_are_refused() {
    let mut c = Client::new(CsrfSettings::new());
    let token = c.token().await;
    let res = c
        .send(
            Request::post(format!("/echo?_xsrf={}", enc(&token))),
            Body::empty(),
        )
        .await;
    assert_eq!(reason(&res), Some(Reason::TokenMissing));
    // The cookie alone is not a token.
    let res = c.send(Request::post("/echo"), Body::empty()).await;
    assert_eq!(reason(&res), Some(Reason::TokenMissing));
    // Without the cookie, a valid-looking token does not match anything.
    let mut fresh = Client::new(CsrfSettings::new());
    let res = fresh.post_header("/echo", &token).await;
    assert_eq!(reason(&res), Some(Reason::TokenMismatch));
    // Opt-in query tokens work.
    let mut q = Client::new(CsrfSettings::new().with_query_token(true));
    let token = q.token().await;
    let res = q
        .send(
            Request::post(format!("/echo?_xsrf={}", enc(&token))),
            Body::empty(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn session_tokens_are_bound_to_their_session_and_rotate_on_login() {
    let mut a = Client::new(CsrfSettings::new());
    // A session exists: the secret lives in it.
    assert_eq!(
        a.send(Request::post("/start"), Body::empty())
            .await
            .status(),
        StatusCode::OK
    );
    let token_a = a.token().await;
    assert!(
        !a.cookies.iter().any(|c| c.starts_with("_xsrf=")),
        "session mode sets no _xsrf cookie"
    );
    assert_eq!(
        a.post_header("/echo", &token_a).await.status(),
        StatusCode::OK
    );

    // Session B (same app) refuses A's token.
    let mut b = Client {
        app: a.app.clone(),
        cookies: Vec::new(),
    };
    assert_eq!(
        b.send(Request::post("/start"), Body::empty())
            .await
            .status(),
        StatusCode::OK
    );
    let res = b.post_header("/echo", &token_a).await;
    assert_eq!(reason(&res), Some(Reason::TokenMismatch));

    // Login rotates the secret: the pre-login token stops working.
    let res = a.post_header("/login/alice", &token_a).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = a.post_header("/echo", &token_a).await;
    assert_eq!(reason(&res), Some(Reason::TokenMismatch));
    let fresh = a.token().await;
    assert_eq!(
        a.post_header("/echo", &fresh).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn login_csrf_token_from_before_login_fails_after_it() {
    // Anonymous visitor (no session): cookie token used to log in.
    let mut c = Client::new(CsrfSettings::new());
    let pre = c.token().await;
    assert_eq!(
        c.post_header("/login/bob", &pre).await.status(),
        StatusCode::OK
    );
    // Now a session exists: the cookie token no longer counts.
    let res = c.post_header("/echo", &pre).await;
    assert_eq!(reason(&res), Some(Reason::TokenMismatch));
}

#[tokio::test]
async fn urlencoded_and_multipart_bodies_reach_the_handler_intact() {
    let mut c = Client::new(CsrfSettings::new());
    let token = c.token().await;
    let form = format!("text=h%C3%A9llo+w%26rld&_xsrf={}&more=%00x", enc(&token));
    let res = c.post_form("/echo", &form).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await, form);

    let mp = format!(
        "--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n\x01\x02binary\r\n--b0undary\r\nContent-Disposition: form-data; name=\"_xsrf\"\r\n\r\n{token}\r\n--b0undary--\r\n"
    );
    let res = c
        .send(
            Request::post("/echo").header(
                header::CONTENT_TYPE,
                "multipart/form-data; boundary=b0undary",
            ),
            Body::from(mp.clone()),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await, mp);
}

#[tokio::test]
async fn a_form_body_over_the_limit_is_413() {
    let mut c = Client::new(CsrfSettings::new().with_body_limit(1024));
    let token = c.token().await;
    let form = format!("_xsrf={}&pad={}", enc(&token), "x".repeat(4096));
    let res = c.post_form("/echo", &form).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // With the token in a header, the body is not buffered by the layer.
    let res = c
        .send(
            Request::post("/echo")
                .header("X-XSRFToken", &token)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded"),
            Body::from("x".repeat(4096)),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

/// A chunked request body: no `Content-Length`, no size hint, 64-byte frames.
struct Chunked(std::collections::VecDeque<Bytes>);

impl Chunked {
    fn new(data: &str) -> Self {
        let bytes = Bytes::copy_from_slice(data.as_bytes());
        let frames = (0..bytes.len())
            .step_by(64)
            .map(|i| bytes.slice(i..(i + 64).min(bytes.len())))
            .collect();
        Chunked(frames)
    }
}

impl http_body::Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// A chunked form over a body limit is a 413, whether the limit is the layer's own or an
/// outer one (tower-http's `RequestBodyLimitLayer` wraps a chunked body in http-body-util's
/// `Limited`, whose `LengthLimitError` reaches the layer inside axum's body error).
#[tokio::test]
async fn a_chunked_form_over_a_body_limit_is_413() {
    let mut c = Client::new(CsrfSettings::new().with_body_limit(1024));
    let token = c.token().await;
    let form = format!("_xsrf={}&pad={}", enc(&token), "x".repeat(4096));
    let post =
        || Request::post("/echo").header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    let res = c.send(post(), Body::new(Chunked::new(&form))).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body(res).await, "request body too large\n");
    // An outer limit below the layer's.
    let outer = http_body_util::Limited::new(Chunked::new(&form[..1000]), 512);
    let res = c.send(post(), Body::new(outer)).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body(res).await, "request body too large\n");
    // Under both limits the chunked form passes and reaches the handler intact.
    let small = format!("_xsrf={}&pad=x", enc(&token));
    let outer = http_body_util::Limited::new(Chunked::new(&small), 512);
    let res = c.send(post(), Body::new(outer)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await, small);
}

#[tokio::test]
async fn cross_origin_requests_are_refused_before_the_token() {
    let mut c = Client::new(
        CsrfSettings::new()
            .add_trusted_origin("https://partner.example")
            .unwrap(),
    );
    let token = c.token().await;
    let res = c
        .send(
            Request::post("/echo")
                .header("Sec-Fetch-Site", "cross-site")
                .header("X-XSRFToken", &token),
            Body::empty(),
        )
        .await;
    assert_eq!(reason(&res), Some(Reason::CrossOrigin));
    let res = c
        .send(
            Request::post("/echo")
                .header(header::HOST, "app.example")
                .header(header::ORIGIN, "https://app.example.attacker.com")
                .header("X-XSRFToken", &token),
            Body::empty(),
        )
        .await;
    assert_eq!(reason(&res), Some(Reason::CrossOrigin));
    let res = c
        .send(
            Request::post("/echo")
                .header(header::HOST, "app.example")
                .header(header::ORIGIN, "null")
                .header("X-XSRFToken", &token),
            Body::empty(),
        )
        .await;
    assert_eq!(reason(&res), Some(Reason::CrossOrigin));
    // A trusted origin passes the origin check and still needs its token.
    let res = c
        .send(
            Request::post("/echo")
                .header("Sec-Fetch-Site", "cross-site")
                .header(header::ORIGIN, "https://partner.example"),
            Body::empty(),
        )
        .await;
    assert_eq!(reason(&res), Some(Reason::TokenMissing));
    let res = c
        .send(
            Request::post("/echo")
                .header("Sec-Fetch-Site", "same-origin")
                .header(header::HOST, "app.example")
                .header(header::ORIGIN, "https://app.example")
                .header("X-XSRFToken", &token),
            Body::empty(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn exempt_paths_match_exactly() {
    let mut c = Client::new(CsrfSettings::new());
    let hostile = |uri: &str| Request::post(uri.to_owned()).header("Sec-Fetch-Site", "cross-site");
    let res = c.send(hostile("/webhook"), Body::empty()).await;
    assert_eq!(res.status(), StatusCode::OK);
    for uri in [
        "/webhook/",
        "/webhook/x",
        "/webhookx",
        "/Webhook",
        "//webhook",
    ] {
        let res = c.send(hostile(uri), Body::empty()).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{uri}");
    }
}

#[tokio::test]
async fn rejections_are_json_or_html_by_accept() {
    let mut c = Client::new(CsrfSettings::new());
    let res = c
        .send(
            Request::post("/echo").header(header::ACCEPT, "application/json"),
            Body::empty(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
    let v: serde_json::Value = serde_json::from_str(&body(res).await).unwrap();
    assert_eq!(v["reason"], "token missing");
    let res = c
        .send(
            Request::post("/echo").header(header::ACCEPT, "text/html"),
            Body::empty(),
        )
        .await;
    assert!(
        res.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(body(res).await.contains("token missing"));
}

#[tokio::test]
async fn a_custom_rejection_handler_is_used() {
    let layer = CsrfLayer::new(exempt(CsrfSettings::new())).with_rejection_handler(
        |e: &ProtectionError, f: ResponseFormat| {
            let mut res = Response::new(format!("nope ({f:?}): {}", e.kind()));
            *res.status_mut() = StatusCode::FORBIDDEN;
            res
        },
    );
    let mut c = Client::with_layer(layer);
    let res = c.send(Request::post("/echo"), Body::empty()).await;
    assert_eq!(body(res).await, "nope (Html): token missing");
}

#[tokio::test]
async fn cookie_mode_ignores_the_session() {
    let mut c = Client::new(CsrfSettings::new().with_mode(CsrfMode::Cookie));
    assert_eq!(
        c.send(Request::post("/start"), Body::empty())
            .await
            .status(),
        StatusCode::OK
    );
    let token = c.token().await;
    assert!(c.cookies.iter().any(|x| x.starts_with("_xsrf=")));
    assert_eq!(
        c.post_header("/echo", &token).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn form_field_renders_a_hidden_input() {
    let mut c = Client::new(CsrfSettings::new());
    let res = c.send(Request::get("/field"), Body::empty()).await;
    let html = body(res).await;
    assert!(
        html.starts_with("<input type=\"hidden\" name=\"_xsrf\" value=\"2|"),
        "{html}"
    );
}

#[test]
fn bad_trusted_origins_are_config_errors() {
    for bad in [
        "https://example.com/",
        "example.com",
        "https://*.example.com",
        "null",
    ] {
        assert!(
            CsrfSettings::new().add_trusted_origin(bad).is_err(),
            "{bad}"
        );
    }
    assert!(CsrfSettings::new().with_cookie_name("__Host-xsrf").is_ok());
    assert!(
        CsrfSettings::new()
            .with_cookie_name("__Host-xsrf")
            .unwrap()
            .with_cookie_secure(false)
            .is_err()
    );
}

/// axum's `Router::nest` strips the prefix before the nested router's layers see the path:
/// a token path written in full must still need its token there (and one written relative
/// to the nest too), while other paths of the nest pass in tokenless mode.
#[tokio::test]
async fn a_token_path_in_a_nested_router_needs_its_token_however_it_is_written() {
    for token_path in ["/api/login", "/login"] {
        let api = Router::new()
            .route("/login", post(|| async { "logged in" }))
            .route("/other", post(|| async { "other" }))
            .layer(CsrfLayer::new(
                CsrfSettings::tokenless().add_token_path(token_path),
            ));
        let app = Router::new().nest("/api", api);
        let post_to = |path: &str| {
            app.clone()
                .oneshot(Request::post(path).body(Body::empty()).unwrap())
        };
        let res = post_to("/api/login").await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::FORBIDDEN,
            "token path {token_path}"
        );
        let res = post_to("/api/other").await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "token path {token_path}");
    }
}
