//! A store failure on both adapters (axum with the tower layers, actix-web with the
//! middleware): logged once, and answered by the session layer's error handler wherever it
//! is met (the commit, a handler, the CSRF check).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::test::TestRequest;
use actix_web::{App, test, web};
use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::{get, post};
use cloakroom_core::csrf::CsrfSettings;
use cloakroom_core::session::Error;
use cloakroom_core::{Key, KeyRing, SessionSettings};
use cloakroom_testkit::probe::Probe;
use tower::ServiceExt;

fn keys() -> KeyRing {
    KeyRing::single(Key::from_bytes(&[11; 32]).unwrap())
}

/// Counts the `ERROR` events of the thread it is the default subscriber of.
#[derive(Clone, Default)]
struct ErrorEvents(Arc<AtomicUsize>);

impl ErrorEvents {
    /// The count so far, reset to zero.
    fn take(&self) -> usize {
        self.0.swap(0, Ordering::SeqCst)
    }
}

impl tracing::Subscriber for ErrorEvents {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::ERROR {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// A session error handler of the application's own.
fn custom(_: &Error) -> http::Response<String> {
    let mut res = http::Response::new("custom: store down\n".to_owned());
    *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    res
}

fn axum_app(probe: &Arc<Probe>, csrf: bool) -> Router {
    use cloakroom_tower::{CsrfLayer, CsrfToken, Session, SessionError, SessionLayer};
    let router = Router::new()
        .route(
            "/get/{key}",
            get(|s: Session, Path(k): Path<String>| async move {
                let v: Option<String> = s.get(&k).await?;
                Ok::<_, SessionError>(v.unwrap_or_else(|| "-".into()))
            }),
        )
        .route(
            "/set/{key}/{value}",
            post(
                |s: Session, Path((k, v)): Path<(String, String)>| async move {
                    s.set(&k, &v).await?;
                    Ok::<_, SessionError>("ok")
                },
            ),
        )
        .route("/form", get(|t: CsrfToken| async move { t.token().await }))
        .route("/submit", post(|| async { "ok" }));
    let sessions = SessionLayer::new(SessionSettings::new(probe.clone(), keys()).build());
    if csrf {
        router
            .layer(CsrfLayer::new(CsrfSettings::new()))
            .layer(sessions.with_error_handler(custom))
    } else {
        router.layer(sessions)
    }
}

/// Status, body and the cookie pairs set, of one request through axum.
async fn axum_send(
    app: &Router,
    method: &str,
    uri: &str,
    cookie: Option<&str>,
    token: Option<&str>,
) -> (u16, String, Vec<String>) {
    let mut req = http::Request::builder().method(method).uri(uri);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if let Some(t) = token {
        req = req.header("x-xsrftoken", t);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let cookies = pairs(res.headers().get_all("set-cookie").iter());
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap(), cookies)
}

/// A browser's cookie jar after `set` (`name=value` pairs), as one `Cookie` header.
fn jar(jar: &mut Vec<String>, set: Vec<String>) -> String {
    for pair in set {
        let name = pair.split('=').next().unwrap().to_owned();
        jar.retain(|p| p.split('=').next() != Some(name.as_str()));
        jar.push(pair);
    }
    jar.join("; ")
}

/// The `name=value` pairs of `Set-Cookie` values.
fn pairs<'a, V: 'a + AsRef<[u8]>>(values: impl Iterator<Item = &'a V>) -> Vec<String> {
    values
        .map(|v| {
            let v = std::str::from_utf8(v.as_ref()).unwrap();
            v.split(';').next().unwrap().to_owned()
        })
        .collect()
}

mod actix {
    use cloakroom_actix::{CsrfToken, Error, Session};

    use super::*;

    pub(super) async fn get(s: Session, key: web::Path<String>) -> Result<String, Error> {
        let v: Option<String> = s.get(&key).await?;
        Ok(v.unwrap_or_else(|| "-".into()))
    }

    pub(super) async fn set(
        s: Session,
        kv: web::Path<(String, String)>,
    ) -> Result<&'static str, Error> {
        s.set(&kv.0, &kv.1).await?;
        Ok("ok")
    }

    pub(super) async fn form(csrf: CsrfToken) -> Result<String, Error> {
        Ok(csrf.token().await?)
    }

    pub(super) async fn submit() -> &'static str {
        "ok"
    }

    /// Status, body and the cookie pairs set, of one request through actix-web.
    pub(super) async fn send<S, B>(
        app: &S,
        method: &str,
        uri: &str,
        cookie: Option<&str>,
        token: Option<&str>,
    ) -> (u16, String, Vec<String>)
    where
        S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let mut req = TestRequest::default()
            .method(method.parse().unwrap())
            .uri(uri);
        if let Some(c) = cookie {
            req = req.insert_header(("cookie", c));
        }
        if let Some(t) = token {
            req = req.insert_header(("x-xsrftoken", t));
        }
        let res = test::call_service(app, req.to_request()).await;
        let status = res.status().as_u16();
        let cookies = pairs(res.headers().get_all("set-cookie"));
        let body = test::read_body(res).await;
        (status, String::from_utf8(body.to_vec()).unwrap(), cookies)
    }
}

macro_rules! actix_app {
    ($probe:expr) => {
        test::init_service(
            App::new()
                .wrap(cloakroom_actix::SessionMiddleware::new(
                    SessionSettings::new($probe.clone(), keys()).build(),
                ))
                .route("/get/{key}", web::get().to(actix::get))
                .route("/set/{key}/{value}", web::post().to(actix::set)),
        )
        .await
    };
    ($probe:expr, csrf) => {
        test::init_service(
            App::new()
                .wrap(cloakroom_actix::CsrfMiddleware::new(CsrfSettings::new()))
                .wrap(
                    cloakroom_actix::SessionMiddleware::new(
                        SessionSettings::new($probe.clone(), keys()).build(),
                    )
                    .with_error_handler(custom),
                )
                .route("/set/{key}/{value}", web::post().to(actix::set))
                .route("/form", web::get().to(actix::form))
                .route("/submit", web::post().to(actix::submit)),
        )
        .await
    };
}

/// The requests that meet a store failure, each answered 503: a blind write's commit, a
/// handler's read, a new session's create.
const FAILING: [(&str, &str, bool); 3] = [
    ("POST", "/set/k/x", true),
    ("GET", "/get/k", true),
    ("POST", "/set/k/x", false),
];

/// Regression: a failed commit was logged by the session middleware and again by the
/// default error handler (and actix's `Error::status_code` built, and logged, a whole
/// response just to read its status).
#[actix_web::test]
async fn a_store_failure_is_logged_once() {
    let events = ErrorEvents::default();
    let _guard = tracing::subscriber::set_default(events.clone());

    // (adapter, method, status, error events) of every failing request.
    let mut seen = Vec::new();
    let mut expected = Vec::new();
    let probe = Arc::new(Probe::default());
    let app = axum_app(&probe, false);
    let (_, _, cookies) = axum_send(&app, "POST", "/set/k/v", None, None).await;
    probe.fail.store(true, Ordering::SeqCst);
    events.take();
    for (method, uri, with_cookie) in FAILING {
        let cookie = with_cookie.then(|| cookies.join("; "));
        let (status, _, _) = axum_send(&app, method, uri, cookie.as_deref(), None).await;
        seen.push(("axum", method, status, events.take()));
        expected.push(("axum", method, 503, 1));
    }

    let probe = Arc::new(Probe::default());
    let app = actix_app!(probe);
    let (_, _, cookies) = actix::send(&app, "POST", "/set/k/v", None, None).await;
    probe.fail.store(true, Ordering::SeqCst);
    events.take();
    for (method, uri, with_cookie) in FAILING {
        let cookie = with_cookie.then(|| cookies.join("; "));
        let (status, _, _) = actix::send(&app, method, uri, cookie.as_deref(), None).await;
        seen.push(("actix", method, status, events.take()));
        expected.push(("actix", method, 503, 1));
    }
    assert_eq!(seen, expected, "(adapter, method, status, error events)");
}

/// Regression: a store failure while the CSRF layer loaded the session for its secret was
/// answered with the default response, not the session layer's configured handler.
#[actix_web::test]
async fn a_store_failure_in_the_csrf_check_answers_through_the_session_error_handler() {
    let events = ErrorEvents::default();
    let _guard = tracing::subscriber::set_default(events.clone());

    // A token of the `_xsrf` cookie starts a session; the session's own token then passes.
    let probe = Arc::new(Probe::default());
    let app = axum_app(&probe, true);
    let mut cookies = Vec::new();
    let (_, token, set) = axum_send(&app, "GET", "/form", None, None).await;
    let cookie = jar(&mut cookies, set);
    let (status, _, set) = axum_send(&app, "POST", "/set/k/v", Some(&cookie), Some(&token)).await;
    assert_eq!(status, 200);
    let cookie = jar(&mut cookies, set);
    let (_, token, set) = axum_send(&app, "GET", "/form", Some(&cookie), None).await;
    let cookie = jar(&mut cookies, set);
    let ok = axum_send(&app, "POST", "/submit", Some(&cookie), Some(&token)).await;
    assert_eq!((ok.0, ok.1.as_str()), (200, "ok"), "axum: the token passes");
    probe.fail.store(true, Ordering::SeqCst);
    events.take();
    let (status, body, _) = axum_send(&app, "POST", "/submit", Some(&cookie), Some(&token)).await;
    let axum = (status, body, events.take());

    let probe = Arc::new(Probe::default());
    let app = actix_app!(probe, csrf);
    let mut cookies = Vec::new();
    let (_, token, set) = actix::send(&app, "GET", "/form", None, None).await;
    let cookie = jar(&mut cookies, set);
    let (status, _, set) = actix::send(&app, "POST", "/set/k/v", Some(&cookie), Some(&token)).await;
    assert_eq!(status, 200);
    let cookie = jar(&mut cookies, set);
    let (_, token, set) = actix::send(&app, "GET", "/form", Some(&cookie), None).await;
    let cookie = jar(&mut cookies, set);
    let ok = actix::send(&app, "POST", "/submit", Some(&cookie), Some(&token)).await;
    assert_eq!(
        (ok.0, ok.1.as_str()),
        (200, "ok"),
        "actix: the token passes"
    );
    probe.fail.store(true, Ordering::SeqCst);
    events.take();
    let (status, body, _) = actix::send(&app, "POST", "/submit", Some(&cookie), Some(&token)).await;
    let actix = (status, body, events.take());

    // (status, body, error events) on each adapter.
    let answer = (503, "custom: store down\n".to_owned(), 1);
    assert_eq!((axum, actix), (answer.clone(), answer));
}
