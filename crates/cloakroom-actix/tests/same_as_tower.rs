//! Header for header: the same request sequence through axum with the tower `SessionLayer`
//! and through actix-web with `SessionMiddleware` (same keys, same store type) gives the same
//! statuses, cookie attributes, `Cache-Control`, `Vary` and `Retry-After`.

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::test::TestRequest;
use actix_web::{App, HttpResponse, test, web};
use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::{get, post};
use cloakroom_core::session::{SessionKey, Timestamp};
use cloakroom_core::store::{
    self, Applied, Created, Cursor, MemoryStore, Page, Patch, Record, SessionInfo, SessionStore,
};
use cloakroom_core::{Key, KeyRing, SessionSettings};
use tower::ServiceExt;

fn keys() -> KeyRing {
    KeyRing::single(Key::from_bytes(&[7; 32]).unwrap())
}

/// A store that is always down.
struct Down;

fn down<T>() -> store::Result<T> {
    Err(store::Error::new(store::ErrorKind::Unavailable, "down"))
}

#[async_trait]
impl SessionStore for Down {
    async fn load(&self, _: &SessionKey) -> store::Result<Option<Record>> {
        down()
    }
    async fn create(&self, _: &SessionKey, _: &Record) -> store::Result<Created> {
        down()
    }
    async fn create_limited(
        &self,
        _: &SessionKey,
        _: &Record,
        _: &store::Limit,
    ) -> store::Result<store::Admitted> {
        down()
    }
    async fn apply(&self, _: &SessionKey, _: &Patch) -> store::Result<Applied> {
        down()
    }
    async fn touch(&self, _: &SessionKey, _: Timestamp, _: Timestamp) -> store::Result<Applied> {
        down()
    }
    async fn delete(&self, _: &SessionKey) -> store::Result<bool> {
        down()
    }
    async fn sessions_of(&self, _: &str) -> store::Result<Vec<SessionInfo>> {
        down()
    }
    async fn delete_user(&self, _: &str, _: Option<&SessionKey>) -> store::Result<u64> {
        down()
    }
    async fn scan(&self, _: Cursor, _: usize) -> store::Result<Page> {
        down()
    }
    async fn purge_expired(&self) -> store::Result<u64> {
        down()
    }
    async fn put_challenge(&self, _: &str, _: &SessionKey, _: Timestamp) -> store::Result<Created> {
        down()
    }
    async fn take_challenge(&self, _: &str) -> store::Result<Option<SessionKey>> {
        down()
    }
}

/// What is compared: the session's headers, the status and the body, with the ticket value
/// masked (the two sides make different random ids).
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    set_cookie: Vec<String>,
    cache_control: Vec<String>,
    vary: Vec<String>,
    retry_after: Vec<String>,
    body: String,
}

const NAMES: [&str; 4] = ["set-cookie", "cache-control", "vary", "retry-after"];

fn mask(set_cookie: &str) -> String {
    match set_cookie.split_once(';') {
        Some((pair, rest)) if !pair.ends_with('=') => format!(
            "{}=<ticket>;{rest}",
            pair.split('=').next().unwrap_or_default()
        ),
        _ => set_cookie.to_owned(),
    }
}

fn seen(status: u16, mut headers: Vec<Vec<String>>, body: String) -> Seen {
    headers[0] = headers[0].iter().map(|c| mask(c)).collect();
    let [set_cookie, cache_control, vary, retry_after] = <[_; 4]>::try_from(headers).unwrap();
    Seen {
        status,
        set_cookie,
        cache_control,
        vary,
        retry_after,
        body,
    }
}

/// The cookie a browser would send next, from the `Set-Cookie` just received.
fn next_cookie(jar: &mut Option<String>, set_cookie: Option<&str>) {
    if let Some(c) = set_cookie {
        let pair = c.split(';').next().unwrap();
        *jar = (!pair.ends_with('=')).then(|| pair.to_owned());
    }
}

fn axum_app(store: impl SessionStore + 'static) -> Router {
    use cloakroom_tower::{Session, SessionError, SessionLayer};
    Router::new()
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
        .route(
            "/cached/{value}",
            post(|s: Session, Path(v): Path<String>| async move {
                s.set("c", &v).await?;
                let headers = [
                    ("cache-control", "private, max-age=60"),
                    ("vary", "Accept-Encoding"),
                ];
                Ok::<_, SessionError>((headers, "ok"))
            }),
        )
        .route(
            "/login/{user}",
            post(|s: Session, Path(u): Path<String>| async move {
                s.login(&u).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/logout",
            post(|s: Session| async move {
                s.logout().await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .layer(SessionLayer::new(
            SessionSettings::new(store, keys()).build(),
        ))
}

async fn axum_send(app: &Router, method: &str, uri: &str, jar: &mut Option<String>) -> Seen {
    let mut req = http::Request::builder().method(method).uri(uri);
    if let Some(c) = jar.as_deref() {
        req = req.header(http::header::COOKIE, c);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
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
    next_cookie(jar, headers[0].first().map(String::as_str));
    let status = res.status().as_u16();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    seen(status, headers, String::from_utf8(body.to_vec()).unwrap())
}

mod actix_side {
    use cloakroom_actix::{Error, Session};

    use super::{HttpResponse, web};

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

    pub(super) async fn cached(s: Session, v: web::Path<String>) -> Result<HttpResponse, Error> {
        s.set("c", &*v).await?;
        Ok(HttpResponse::Ok()
            .insert_header(("cache-control", "private, max-age=60"))
            .insert_header(("vary", "Accept-Encoding"))
            .body("ok"))
    }

    pub(super) async fn login(s: Session, user: web::Path<String>) -> Result<&'static str, Error> {
        s.login(&user).await?;
        Ok("ok")
    }

    pub(super) async fn logout(s: Session) -> Result<&'static str, Error> {
        s.logout().await?;
        Ok("ok")
    }
}

macro_rules! actix_app {
    ($store:expr) => {
        test::init_service(
            App::new()
                .wrap(cloakroom_actix::SessionMiddleware::new(
                    SessionSettings::new($store, keys()).build(),
                ))
                .route("/get/{key}", web::get().to(actix_side::get))
                .route("/set/{key}/{value}", web::post().to(actix_side::set))
                .route("/cached/{value}", web::post().to(actix_side::cached))
                .route("/login/{user}", web::post().to(actix_side::login))
                .route("/logout", web::post().to(actix_side::logout)),
        )
        .await
    };
}

async fn actix_send<S, B>(app: &S, method: &str, uri: &str, jar: &mut Option<String>) -> Seen
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let method = actix_web::http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = TestRequest::default().method(method).uri(uri);
    if let Some(c) = jar.as_deref() {
        req = req.insert_header(("cookie", c));
    }
    let res = test::call_service(app, req.to_request()).await;
    let headers: Vec<Vec<String>> = NAMES
        .iter()
        .map(|n| {
            res.headers()
                .get_all(*n)
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    next_cookie(jar, headers[0].first().map(String::as_str));
    let status = res.status().as_u16();
    let body = test::read_body(res).await;
    seen(status, headers, String::from_utf8(body.to_vec()).unwrap())
}

const SCENARIO: [(&str, &str); 9] = [
    ("GET", "/get/k"),
    ("POST", "/set/k/v"),
    ("GET", "/get/k"),
    ("POST", "/set/k/w"),
    ("POST", "/cached/1"),
    ("POST", "/login/alice"),
    ("GET", "/get/k"),
    ("POST", "/logout"),
    ("GET", "/get/k"),
];

#[actix_web::test]
async fn a_session_lifecycle_is_header_for_header_the_tower_layers() {
    let axum = axum_app(MemoryStore::new());
    let actix = actix_app!(MemoryStore::new());
    let (mut axum_jar, mut actix_jar) = (None, None);
    // After the logout, a write on the cached route starts a new session; that response
    // keeps the handler's own Cache-Control and Vary.
    let mut seen_by_axum = Vec::new();
    for (method, uri) in SCENARIO.iter().chain(&[("POST", "/cached/2")]) {
        let a = axum_send(&axum, method, uri, &mut axum_jar).await;
        let b = actix_send(&actix, method, uri, &mut actix_jar).await;
        assert_eq!(a, b, "{method} {uri}");
        seen_by_axum.push(a);
    }
    // The comparison covered every case: a new ticket, a kept one, rotation, removal and a
    // handler's own caching headers.
    let new_ticket = &seen_by_axum[1];
    assert!(new_ticket.set_cookie[0].starts_with("__Host-session=<ticket>;"));
    assert_eq!(new_ticket.cache_control, ["no-store"]);
    assert_eq!(new_ticket.vary, ["Cookie"]);
    assert!(seen_by_axum[2].set_cookie.is_empty());
    assert_eq!(seen_by_axum[2].body, "v");
    assert!(seen_by_axum[5].set_cookie[0].starts_with("__Host-session=<ticket>;"));
    assert!(seen_by_axum[7].set_cookie[0].contains("Max-Age=0"));
    let cached = &seen_by_axum[9];
    assert_eq!(cached.cache_control, ["private, max-age=60"]);
    assert_eq!(cached.vary, ["Accept-Encoding", "Cookie"]);
    assert!(axum_jar.is_some(), "the last request made a new session");
}

#[actix_web::test]
async fn a_store_outage_is_header_for_header_the_tower_layers() {
    let axum = axum_app(Down);
    let actix = actix_app!(Down);
    let stale = Some("__Host-session=not-a-ticket".to_owned());
    for (method, uri) in SCENARIO {
        for jar in [None, stale.clone()] {
            let (mut axum_jar, mut actix_jar) = (jar.clone(), jar);
            let a = axum_send(&axum, method, uri, &mut axum_jar).await;
            let b = actix_send(&actix, method, uri, &mut actix_jar).await;
            assert_eq!(a, b, "{method} {uri}");
        }
    }
    let a = axum_send(&axum, "POST", "/set/k/v", &mut None).await;
    assert_eq!(a.status, 503);
    assert_eq!(a.retry_after, ["1"]);
}
