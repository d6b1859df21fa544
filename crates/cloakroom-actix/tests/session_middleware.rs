//! The actix session middleware end to end through `actix_web::test`: cookies, rotation,
//! logout, blind writes, neighbour cookies, store failures and the logout race.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::test::TestRequest;
use actix_web::{App, test, web};
use cloakroom_actix::{Error, Session, SessionMiddleware};
use cloakroom_core::session::{SessionKey, SessionSettings};
use cloakroom_core::store::{Cursor, MemoryStore, SessionStore};
use cloakroom_core::{Key, KeyRing};
use cloakroom_testkit::probe::Probe;
use tokio::sync::Notify;

fn keys() -> KeyRing {
    KeyRing::single(Key::from_bytes(&[42; 32]).unwrap())
}

/// What the slow handler waits on: `entered` once it has loaded, then `gate` to write.
#[derive(Clone, Default)]
struct Gates {
    entered: Arc<Notify>,
    gate: Arc<Notify>,
}

async fn get(s: Session, key: web::Path<String>) -> Result<String, Error> {
    let v: Option<String> = s.get(&key).await?;
    Ok(v.unwrap_or_else(|| "-".into()))
}

async fn set(s: Session, kv: web::Path<(String, String)>) -> Result<&'static str, Error> {
    s.set(&kv.0, &kv.1).await?;
    Ok("ok")
}

async fn login(s: Session, user: web::Path<String>) -> Result<&'static str, Error> {
    s.login(&user).await?;
    Ok("ok")
}

async fn logout(s: Session) -> Result<&'static str, Error> {
    s.logout().await?;
    Ok("ok")
}

/// Loads, signals, waits for the test, then writes.
async fn slow_set(
    s: Session,
    kv: web::Path<(String, String)>,
    gates: web::Data<Gates>,
) -> Result<&'static str, Error> {
    let _ = s.get::<String>(&kv.0).await?;
    gates.entered.notify_one();
    gates.gate.notified().await;
    s.set(&kv.0, &kv.1).await?;
    Ok("ok")
}

type Req = actix_http::Request;

macro_rules! app {
    ($middleware:expr, $gates:expr) => {
        test::init_service(
            App::new()
                .app_data(web::Data::new($gates.clone()))
                .wrap($middleware)
                .route("/get/{key}", web::get().to(get))
                .route("/set/{key}/{value}", web::post().to(set))
                .route("/login/{user}", web::post().to(login))
                .route("/logout", web::post().to(logout))
                .route("/slow-set/{key}/{value}", web::post().to(slow_set)),
        )
        .await
    };
}

fn request(method: &Method, uri: &str, cookies: &[&[u8]]) -> Req {
    let mut req = TestRequest::default().method(method.clone()).uri(uri);
    for c in cookies {
        let value = HeaderValue::from_bytes(c).expect("a valid header value");
        req = req.append_header((header::COOKIE, value));
    }
    req.to_request()
}

async fn send<S, B>(app: &S, method: &Method, uri: &str, cookie: Option<&str>) -> ServiceResponse<B>
where
    S: Service<Req, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    let cookies: Vec<&[u8]> = cookie.iter().map(|c| c.as_bytes()).collect();
    test::call_service(app, request(method, uri, &cookies)).await
}

async fn text<B: MessageBody>(res: ServiceResponse<B>) -> String {
    String::from_utf8(test::read_body(res).await.to_vec()).unwrap()
}

fn set_cookie<B>(res: &ServiceResponse<B>) -> Option<String> {
    let mut all = res.headers().get_all(header::SET_COOKIE);
    let first = all.next().map(|v| v.to_str().unwrap().to_owned());
    assert!(all.next().is_none(), "one Set-Cookie at most");
    first
}

fn header_of<B>(res: &ServiceResponse<B>, name: header::HeaderName) -> Vec<String> {
    res.headers()
        .get_all(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// `__Host-session=<ticket>` from a Set-Cookie value.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

fn middleware(probe: &Arc<Probe>) -> SessionMiddleware {
    SessionMiddleware::new(SessionSettings::new(probe.clone(), keys()).build())
}

async fn only_key(store: &MemoryStore) -> SessionKey {
    let page = store.scan(Cursor::start(), 10).await.unwrap();
    assert_eq!(page.sessions.len(), 1);
    page.sessions[0].key
}

#[actix_web::test]
async fn set_then_get_across_requests() {
    let (probe, gates) = (Arc::new(Probe::default()), Gates::default());
    let app = app!(middleware(&probe), gates);
    let res = send(&app, &Method::GET, "/get/k", None).await;
    assert!(set_cookie(&res).is_none(), "a bare read sets no cookie");
    assert_eq!(text(res).await, "-");

    let res = send(&app, &Method::POST, "/set/k/v", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = set_cookie(&res).unwrap();
    assert!(cookie.starts_with("__Host-session="), "{cookie}");
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(cookie.split("; ").any(|a| a == attr), "{attr} in {cookie}");
    }
    assert_eq!(header_of(&res, header::CACHE_CONTROL), ["no-store"]);
    assert_eq!(header_of(&res, header::VARY), ["Cookie"]);

    let res = send(&app, &Method::GET, "/get/k", Some(&pair(&cookie))).await;
    assert!(
        set_cookie(&res).is_none(),
        "an unchanged session keeps its ticket"
    );
    assert_eq!(text(res).await, "v");
    assert_eq!(probe.inner.len(), 1);
}

#[actix_web::test]
async fn login_rotates_the_id_and_keeps_data() {
    let (probe, gates) = (Arc::new(Probe::default()), Gates::default());
    let app = app!(middleware(&probe), gates);
    let res = send(&app, &Method::POST, "/set/cart/3", None).await;
    let anon = pair(&set_cookie(&res).unwrap());
    let res = send(&app, &Method::POST, "/login/alice", Some(&anon)).await;
    let logged = pair(&set_cookie(&res).unwrap());
    assert_ne!(anon, logged);
    let res = send(&app, &Method::GET, "/get/cart", Some(&logged)).await;
    assert_eq!(text(res).await, "3");
    // The pre-login ticket is dead, and the store holds one session: alice's.
    let res = send(&app, &Method::GET, "/get/cart", Some(&anon)).await;
    assert_eq!(text(res).await, "-");
    assert_eq!(probe.inner.len(), 1);
    assert_eq!(probe.inner.sessions_of("alice").await.unwrap().len(), 1);
}

#[actix_web::test]
async fn logout_removes_the_cookie_and_the_record() {
    let (probe, gates) = (Arc::new(Probe::default()), Gates::default());
    let app = app!(middleware(&probe), gates);
    let res = send(&app, &Method::POST, "/login/bob", None).await;
    let c = pair(&set_cookie(&res).unwrap());
    assert_eq!(probe.inner.len(), 1);
    let res = send(&app, &Method::POST, "/logout", Some(&c)).await;
    let removal = set_cookie(&res).unwrap();
    assert!(
        removal.starts_with("__Host-session=; Max-Age=0"),
        "{removal}"
    );
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(
            removal.split("; ").any(|a| a == attr),
            "{attr} in {removal}"
        );
    }
    assert!(probe.inner.is_empty());
    // Replaying the old ticket finds nothing (at most the stale cookie is cleared again).
    let res = send(&app, &Method::GET, "/get/x", Some(&c)).await;
    assert!(set_cookie(&res).is_none_or(|s| s.contains("Max-Age=0")));
    assert_eq!(text(res).await, "-");
}

#[actix_web::test]
async fn a_blind_write_is_one_store_operation_and_keeps_the_ticket() {
    let (probe, gates) = (Arc::new(Probe::default()), Gates::default());
    let app = app!(middleware(&probe), gates);
    let res = send(&app, &Method::POST, "/set/a/1", None).await;
    let c = pair(&set_cookie(&res).unwrap());
    let key = only_key(&probe.inner).await;
    let before = probe.calls();
    let res = send(&app, &Method::POST, "/set/b/2", Some(&c)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(set_cookie(&res).is_none(), "a patch keeps the ticket");
    assert_eq!(probe.calls() - before, 1, "set without a read: one patch");
    let record = probe.inner.load(&key).await.unwrap().unwrap();
    assert_eq!(record.data["a"], "\"1\"");
    assert_eq!(record.data["b"], "\"2\"");
}

#[actix_web::test]
async fn a_neighbour_cookie_with_a_non_ascii_byte_keeps_the_session() {
    let (probe, gates) = (Arc::new(Probe::default()), Gates::default());
    let app = app!(middleware(&probe), gates);
    let res = send(&app, &Method::POST, "/set/k/v", None).await;
    let ours = pair(&set_cookie(&res).unwrap());
    let neighbour: &[u8] = b"pref=caf\xe9";
    let joined = [neighbour, b"; ", ours.as_bytes()].concat();
    let arrangements: [Vec<&[u8]>; 3] = [
        vec![&joined],
        vec![neighbour, ours.as_bytes()],
        vec![ours.as_bytes(), neighbour],
    ];
    for cookies in arrangements {
        let req = request(&Method::GET, "/get/k", &cookies);
        let res = test::call_service(&app, req).await;
        assert!(set_cookie(&res).is_none(), "{cookies:?}");
        assert_eq!(text(res).await, "v", "{cookies:?}");
    }
    // A write beside the neighbour lands in the same session.
    let req = request(&Method::POST, "/set/k/w", &[&joined]);
    let res = test::call_service(&app, req).await;
    assert!(set_cookie(&res).is_none());
    assert_eq!(probe.inner.len(), 1);
    let res = send(&app, &Method::GET, "/get/k", Some(&ours)).await;
    assert_eq!(text(res).await, "w");
}

#[actix_web::test]
async fn store_failure_is_a_503_with_retry_after() {
    let (probe, gates) = (Arc::new(Probe::default()), Gates::default());
    let app = app!(middleware(&probe), gates);
    let res = send(&app, &Method::POST, "/set/k/v", None).await;
    let c = pair(&set_cookie(&res).unwrap());
    probe.fail.store(true, Ordering::SeqCst);
    for (method, uri, cookie) in [
        (Method::GET, "/get/k", Some(c.as_str())),
        (Method::POST, "/set/k/x", Some(c.as_str())),
        (Method::POST, "/set/k/x", None),
        (Method::POST, "/logout", Some(c.as_str())),
    ] {
        let res = send(&app, &method, uri, cookie).await;
        assert_eq!(
            res.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {uri}"
        );
        assert_eq!(
            header_of(&res, header::RETRY_AFTER),
            ["1"],
            "{method} {uri}"
        );
        assert_eq!(header_of(&res, header::CACHE_CONTROL), ["no-store"]);
        assert!(set_cookie(&res).is_none(), "{method} {uri}");
    }
    // Nothing was lost: once the store is back the session is intact.
    probe.fail.store(false, Ordering::SeqCst);
    let res = send(&app, &Method::GET, "/get/k", Some(&c)).await;
    assert_eq!(text(res).await, "v");
}

#[actix_web::test]
async fn a_hanging_store_answers_503_within_the_store_timeout() {
    let (probe, gates) = (Arc::new(Probe::default()), Gates::default());
    let settings = SessionSettings::new(probe.clone(), keys())
        .with_store_timeout(Duration::from_millis(200))
        .unwrap()
        .build();
    let sessions = SessionMiddleware::new(settings);
    let app = app!(sessions, gates);
    let res = send(&app, &Method::POST, "/set/k/v", None).await;
    let c = pair(&set_cookie(&res).unwrap());
    probe.hang.store(true, Ordering::SeqCst);
    for (method, uri, cookie) in [
        (Method::GET, "/get/k", Some(c.as_str())),
        (Method::POST, "/set/k/x", None),
    ] {
        let start = Instant::now();
        let res = send(&app, &method, uri, cookie).await;
        assert_eq!(
            res.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {uri}"
        );
        assert_eq!(header_of(&res, header::RETRY_AFTER), ["1"]);
        assert!(start.elapsed() < Duration::from_secs(5), "{method} {uri}");
    }
}

#[actix_web::test]
async fn a_slower_write_does_not_undo_a_concurrent_logout() {
    let (probe, gates) = (Arc::new(Probe::default()), Gates::default());
    let app = app!(middleware(&probe), gates);
    let res = send(&app, &Method::POST, "/set/k/v", None).await;
    let c = pair(&set_cookie(&res).unwrap());
    let slow = app.call(request(&Method::POST, "/slow-set/k/w", &[c.as_bytes()]));
    let logout = async {
        gates.entered.notified().await;
        let res = send(&app, &Method::POST, "/logout", Some(&c)).await;
        assert!(set_cookie(&res).unwrap().contains("Max-Age=0"));
        gates.gate.notify_one();
    };
    let (res, ()) = tokio::join!(slow, logout);
    let res = res.unwrap();
    // The slow request's write is dropped and its cookie cleared; the session stays dead.
    assert!(set_cookie(&res).unwrap().contains("Max-Age=0"));
    assert!(probe.inner.is_empty(), "logged-out session was resurrected");
    let res = send(&app, &Method::GET, "/get/k", Some(&c)).await;
    assert_eq!(text(res).await, "-");
}

#[actix_web::test]
async fn the_extractor_without_the_middleware_is_a_500() {
    let app = test::init_service(App::new().route("/get/{key}", web::get().to(get))).await;
    let res = send(&app, &Method::GET, "/get/k", None).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
}
