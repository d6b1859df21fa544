//! The session layer end to end through axum with `oneshot`: cookies, commits, rotation,
//! logout races, concurrency, expiry and store failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::{get, post};
use cloakroom_core::session::{ErrorKind, SessionKey};
use cloakroom_core::store::{Cursor, MemoryStore, SessionStore};
use cloakroom_core::{Key, KeyRing};
use cloakroom_testkit::probe::Probe;
use cloakroom_tower::{Session, SessionError, SessionLayer, SessionSettings};
use http::{Request, Response, StatusCode, header};
use tokio::sync::Notify;
use tower::ServiceExt;

struct Harness {
    probe: Arc<Probe>,
    app: Router,
    gate: Arc<Notify>,
    entered: Arc<Notify>,
}

fn keys() -> KeyRing {
    KeyRing::single(Key::from_bytes(&[42; 32]).unwrap())
}

fn harness(configure: impl FnOnce(SessionSettings) -> SessionSettings) -> Harness {
    let probe = Arc::new(Probe::default());
    let gate = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let layer = SessionLayer::new(configure(SessionSettings::new(probe.clone(), keys())).build());
    let (g, e) = (gate.clone(), entered.clone());
    let app = Router::new()
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
            "/login/{user}",
            post(|s: Session, Path(u): Path<String>| async move {
                s.login(&u).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/remember",
            post(|s: Session| async move {
                s.set_remember(true).await?;
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
        .route(
            // Loads, signals, waits for the test, then writes.
            "/slow-set/{key}/{value}",
            post(move |s: Session, Path((k, v)): Path<(String, String)>| {
                let (g, e) = (g.clone(), e.clone());
                async move {
                    let _ = s.get::<String>(&k).await?;
                    e.notify_one();
                    g.notified().await;
                    s.set(&k, &v).await?;
                    Ok::<_, SessionError>("ok")
                }
            }),
        )
        .route(
            "/keep",
            // Holds a clone past the response to try a late write.
            post(|s: Session| async move {
                s.set("a", "1").await?;
                let late = s.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let err = late.set("b", "2").await.unwrap_err();
                    assert_eq!(err.kind(), ErrorKind::Committed);
                    LATE_CHECKED.store(true, Ordering::SeqCst);
                });
                Ok::<_, SessionError>("ok")
            }),
        )
        .layer(layer);
    Harness {
        probe,
        app,
        gate,
        entered,
    }
}

static LATE_CHECKED: AtomicBool = AtomicBool::new(false);

async fn send(app: &Router, method: &str, uri: &str, cookie: Option<&str>) -> Response<Body> {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    app.clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

async fn text(res: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn set_cookie(res: &Response<Body>) -> Option<String> {
    res.headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// `__Host-session=<ticket>` from a Set-Cookie value.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn bare_read_sets_no_cookie_and_calls_no_store() {
    let h = harness(|l| l);
    let res = send(&h.app, "GET", "/get/x", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(set_cookie(&res).is_none());
    assert!(res.headers().get(header::CACHE_CONTROL).is_none());
    assert_eq!(text(res).await, "-");
    assert_eq!(h.probe.calls(), 0);
    assert!(h.probe.inner.is_empty());
}

#[tokio::test]
async fn write_sets_cookie_with_safe_attributes_and_cache_headers() {
    let h = harness(|l| l);
    let res = send(&h.app, "POST", "/set/k/v", None).await;
    let c = set_cookie(&res).unwrap();
    assert!(c.starts_with("__Host-session="), "{c}");
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(c.split("; ").any(|a| a == attr), "{attr} missing in {c}");
    }
    assert!(
        !c.contains("Max-Age"),
        "browser-session cookie by default: {c}"
    );
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(res.headers()[header::VARY], "Cookie");
    assert_eq!(h.probe.calls(), 1, "a new session is one store operation");
    let res = send(&h.app, "GET", "/get/k", Some(&pair(&c))).await;
    assert!(
        set_cookie(&res).is_none(),
        "an unchanged read sets no cookie"
    );
    assert_eq!(text(res).await, "v");
    assert_eq!(h.probe.calls(), 2, "a read is one store operation");
}

#[tokio::test]
async fn a_blind_write_is_one_store_operation_and_keeps_the_absolute_lifetime() {
    let h = harness(|l| l.with_absolute_lifetime(Duration::from_secs(100)).unwrap());
    let c = pair(&set_cookie(&send(&h.app, "POST", "/set/a/1", None).await).unwrap());
    let key = only_key(&h.probe.inner).await;
    let created = h
        .probe
        .inner
        .load(&key)
        .await
        .unwrap()
        .unwrap()
        .meta
        .created_at;
    let before = h.probe.calls();
    let res = send(&h.app, "POST", "/set/b/2", Some(&c)).await;
    assert!(set_cookie(&res).is_none(), "a patch keeps the ticket");
    assert_eq!(
        h.probe.calls() - before,
        1,
        "set without a read: one patch, no load"
    );
    let record = h.probe.inner.load(&key).await.unwrap().unwrap();
    assert_eq!(record.data["a"], "\"1\"");
    assert_eq!(record.data["b"], "\"2\"");
    assert!(record.meta.expires_at <= created.plus(Duration::from_secs(100)));
    // A blind write under a ticket whose session is gone starts a new session (new ticket),
    // it does not bring the old one back.
    h.probe.inner.delete(&key).await.unwrap();
    let res = send(&h.app, "POST", "/set/c/3", Some(&c)).await;
    let fresh = pair(&set_cookie(&res).unwrap());
    assert_ne!(fresh, c);
    assert!(
        h.probe.inner.load(&key).await.unwrap().is_none(),
        "old record resurrected"
    );
    assert_eq!(
        text(send(&h.app, "GET", "/get/c", Some(&fresh)).await).await,
        "3"
    );
    assert_eq!(
        text(send(&h.app, "GET", "/get/a", Some(&fresh)).await).await,
        "-"
    );
}

#[tokio::test]
async fn remember_me_makes_the_cookie_persistent() {
    let h = harness(|l| l.with_idle_timeout(Duration::from_secs(3600)).unwrap());
    let res = send(&h.app, "POST", "/remember", None).await;
    let c = set_cookie(&res).unwrap();
    let age: u64 = c
        .split("; ")
        .find_map(|a| a.strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&age), "{c}");
}

#[tokio::test]
async fn tampered_cookie_is_no_session_and_no_store_call() {
    let h = harness(|l| l);
    let c = pair(&set_cookie(&send(&h.app, "POST", "/set/k/v", None).await).unwrap());
    let before = h.probe.calls();
    let mut tampered = c.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let oversized = format!("__Host-session={}", "A".repeat(5000));
    for cookie in [
        tampered.as_str(),
        "__Host-session=",
        "__Host-session=../../etc/passwd",
        "__Host-session=' OR 1=1 --",
        "__Host-session=%00%00",
        &oversized,
    ] {
        let res = send(&h.app, "GET", "/get/k", Some(cookie)).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(text(res).await, "-", "{cookie:.40}");
    }
    assert_eq!(h.probe.calls(), before, "no store call for a bad ticket");
}

#[tokio::test]
async fn login_rotates_the_id_and_keeps_data() {
    let h = harness(|l| l);
    let anon = pair(&set_cookie(&send(&h.app, "POST", "/set/cart/3", None).await).unwrap());
    let res = send(&h.app, "POST", "/login/alice", Some(&anon)).await;
    let logged = pair(&set_cookie(&res).unwrap());
    assert_ne!(anon, logged);
    assert_eq!(
        text(send(&h.app, "GET", "/get/cart", Some(&logged)).await).await,
        "3"
    );
    // The pre-login ticket is dead, and the store holds one session.
    assert_eq!(
        text(send(&h.app, "GET", "/get/cart", Some(&anon)).await).await,
        "-"
    );
    assert_eq!(h.probe.inner.len(), 1);
    let mine = h.probe.inner.sessions_of("alice").await.unwrap();
    assert_eq!(mine.len(), 1);
}

#[tokio::test]
async fn logout_deletes_the_record_and_removes_the_cookie() {
    let h = harness(|l| l);
    let c = pair(&set_cookie(&send(&h.app, "POST", "/login/bob", None).await).unwrap());
    let res = send(&h.app, "POST", "/logout", Some(&c)).await;
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
    assert!(h.probe.inner.is_empty());
    // Replaying the old ticket finds nothing.
    let res = send(&h.app, "GET", "/get/x", Some(&c)).await;
    assert_eq!(text(res).await, "-");
}

#[tokio::test]
async fn a_slower_write_does_not_undo_a_concurrent_logout() {
    let h = harness(|l| l);
    let c = pair(&set_cookie(&send(&h.app, "POST", "/set/k/v", None).await).unwrap());
    let slow = {
        let (app, c) = (h.app.clone(), c.clone());
        tokio::spawn(async move { send(&app, "POST", "/slow-set/k/w", Some(&c)).await })
    };
    h.entered.notified().await;
    let res = send(&h.app, "POST", "/logout", Some(&c)).await;
    assert!(set_cookie(&res).unwrap().contains("Max-Age=0"));
    h.gate.notify_one();
    let res = slow.await.unwrap();
    // The slow request's write is dropped and its cookie cleared; the session stays dead.
    assert!(set_cookie(&res).unwrap().contains("Max-Age=0"));
    assert!(
        h.probe.inner.is_empty(),
        "logged-out session was resurrected"
    );
    assert_eq!(
        text(send(&h.app, "GET", "/get/k", Some(&c)).await).await,
        "-"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_writers_of_different_keys_all_survive() {
    let h = harness(|l| l);
    let c = pair(&set_cookie(&send(&h.app, "POST", "/set/seed/0", None).await).unwrap());
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (app, c) = (h.app.clone(), c.clone());
            tokio::spawn(async move {
                let res = send(&app, "POST", &format!("/set/k{i}/v{i}"), Some(&c)).await;
                assert_eq!(res.status(), StatusCode::OK);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for i in 0..50 {
        let got = text(send(&h.app, "GET", &format!("/get/k{i}"), Some(&c)).await).await;
        assert_eq!(got, format!("v{i}"), "write {i} lost");
    }
}

#[tokio::test]
async fn idle_timeout_is_enforced_server_side() {
    let h = harness(|l| l.with_idle_timeout(Duration::from_millis(400)).unwrap());
    let c = pair(&set_cookie(&send(&h.app, "POST", "/set/k/v", None).await).unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        text(send(&h.app, "GET", "/get/k", Some(&c)).await).await,
        "v"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The client replays its cookie; the server has expired the session.
    let res = send(&h.app, "GET", "/get/k", Some(&c)).await;
    assert!(set_cookie(&res).unwrap().contains("Max-Age=0"));
    assert_eq!(text(res).await, "-");
}

#[tokio::test]
async fn activity_extends_idle_but_not_the_absolute_lifetime() {
    let h = harness(|l| {
        l.with_idle_timeout(Duration::from_millis(500))
            .unwrap()
            .with_touch_interval(Duration::ZERO)
            .with_absolute_lifetime(Duration::from_millis(1200))
            .unwrap()
    });
    let c = pair(&set_cookie(&send(&h.app, "POST", "/set/k/v", None).await).unwrap());
    // Reads every 250 ms keep it alive past one idle window...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            text(send(&h.app, "GET", "/get/k", Some(&c)).await).await,
            "v"
        );
    }
    // ...but not past the absolute lifetime.
    let start = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let got = text(send(&h.app, "GET", "/get/k", Some(&c)).await).await;
        if got == "-" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "outlived its lifetime"
        );
    }
}

#[tokio::test]
async fn unchanged_reads_touch_only_when_due() {
    let h = harness(|l| {
        l.with_idle_timeout(Duration::from_secs(3600))
            .unwrap()
            .with_touch_interval(Duration::from_millis(300))
    });
    let c = pair(&set_cookie(&send(&h.app, "POST", "/set/k/v", None).await).unwrap());
    let key = only_key(&h.probe.inner).await;
    let first = h.probe.inner.load(&key).await.unwrap().unwrap().meta;
    send(&h.app, "GET", "/get/k", Some(&c)).await;
    let same = h.probe.inner.load(&key).await.unwrap().unwrap().meta;
    assert_eq!(first, same, "a read right after a write must not write");
    tokio::time::sleep(Duration::from_millis(350)).await;
    send(&h.app, "GET", "/get/k", Some(&c)).await;
    let touched = h.probe.inner.load(&key).await.unwrap().unwrap().meta;
    assert!(touched.expires_at > first.expires_at);
    assert!(touched.last_seen > first.last_seen);
}

async fn only_key(store: &MemoryStore) -> SessionKey {
    let page = store.scan(Cursor::start(), 10).await.unwrap();
    assert_eq!(page.sessions.len(), 1);
    page.sessions[0].key
}

#[tokio::test]
async fn store_failure_is_a_503_not_a_panic() {
    let h = harness(|l| l);
    let c = pair(&set_cookie(&send(&h.app, "POST", "/set/k/v", None).await).unwrap());
    h.probe.fail.store(true, Ordering::SeqCst);
    for (method, uri, cookie) in [
        ("GET", "/get/k", Some(c.as_str())),
        ("POST", "/set/k/x", Some(c.as_str())),
        ("POST", "/set/k/x", None),
        ("POST", "/logout", Some(c.as_str())),
    ] {
        let res = send(&h.app, method, uri, cookie).await;
        assert_eq!(
            res.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {uri}"
        );
        assert!(set_cookie(&res).is_none());
    }
    // Nothing was lost: once the store is back the session is intact.
    h.probe.fail.store(false, Ordering::SeqCst);
    assert_eq!(
        text(send(&h.app, "GET", "/get/k", Some(&c)).await).await,
        "v"
    );
}

#[tokio::test]
async fn a_hanging_store_times_out_with_a_503() {
    let h = harness(|l| l.with_store_timeout(Duration::from_millis(200)).unwrap());
    let c = pair(&set_cookie(&send(&h.app, "POST", "/set/k/v", None).await).unwrap());
    h.probe.hang.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let res = send(&h.app, "GET", "/get/k", Some(&c)).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(start.elapsed() < Duration::from_secs(2));
    let res = send(&h.app, "POST", "/set/k/x", None).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn mutation_after_commit_is_an_error() {
    let h = harness(|l| l);
    let res = send(&h.app, "POST", "/keep", None).await;
    assert_eq!(res.status(), StatusCode::OK);
    for _ in 0..100 {
        if LATE_CHECKED.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the late write was not checked");
}

#[tokio::test]
async fn duplicate_cookies_use_the_first_valid_ticket() {
    let h = harness(|l| l);
    let a = pair(&set_cookie(&send(&h.app, "POST", "/set/who/a", None).await).unwrap());
    let b = pair(&set_cookie(&send(&h.app, "POST", "/set/who/b", None).await).unwrap());
    let both = format!("__Host-session=junk; {a}; {b}");
    assert_eq!(
        text(send(&h.app, "GET", "/get/who", Some(&both)).await).await,
        "a"
    );
    let both = format!("{b}; {a}");
    assert_eq!(
        text(send(&h.app, "GET", "/get/who", Some(&both)).await).await,
        "b"
    );
}

#[tokio::test]
async fn a_ticket_under_another_cookie_name_is_ignored() {
    let h = harness(|l| l);
    let c = pair(&set_cookie(&send(&h.app, "POST", "/set/k/v", None).await).unwrap());
    let other = harness(|l| l.with_cookie_name("other").unwrap());
    // Same keys, same store contents are irrelevant: the MAC binds the name.
    let renamed = c.replacen("__Host-session=", "other=", 1);
    assert_eq!(
        text(send(&other.app, "GET", "/get/k", Some(&renamed)).await).await,
        "-"
    );
    assert_eq!(other.probe.calls(), 0);
}

#[test]
fn invalid_cookie_settings_are_config_errors() {
    let layer = || SessionSettings::new(Arc::new(MemoryStore::new()), keys());
    assert!(layer().with_cookie_name("bad name").is_err());
    assert!(
        layer()
            .with_cookie_name("__Host-s")
            .unwrap()
            .with_cookie_path("/app")
            .is_err()
    );
    assert!(
        layer()
            .with_cookie_same_site(cloakroom_core::cookie::SameSite::None)
            .unwrap()
            .with_cookie_secure(false)
            .is_err()
    );
}

/// Flash messages survive a redirect, come back in order with their levels, exactly once.
#[tokio::test]
async fn flash_messages_are_shown_once_in_order_with_levels() {
    use cloakroom_core::flash::Level;
    let layer =
        SessionLayer::new(SessionSettings::new(Arc::new(MemoryStore::new()), keys()).build());
    let app = Router::new()
        .route(
            "/act",
            post(|s: Session| async move {
                s.flash().push(Level::Success, "Note saved").await?;
                s.flash().push(Level::Warning, "Almost full").await?;
                s.flash().push(Level::Error, "One failed").await?;
                Ok::<_, SessionError>((StatusCode::SEE_OTHER, [(header::LOCATION, "/")]))
            }),
        )
        .route(
            "/",
            get(|s: Session| async move {
                let shown: Vec<String> = s
                    .flash()
                    .take()
                    .await?
                    .into_iter()
                    .map(|m| format!("{}:{}", m.level.as_str(), m.text))
                    .collect();
                Ok::<_, SessionError>(shown.join("|"))
            }),
        )
        .layer(layer);
    let res = send(&app, "POST", "/act", None).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let c = pair(&set_cookie(&res).unwrap());
    let first = text(send(&app, "GET", "/", Some(&c)).await).await;
    assert_eq!(
        first,
        "success:Note saved|warning:Almost full|error:One failed"
    );
    assert_eq!(
        text(send(&app, "GET", "/", Some(&c)).await).await,
        "",
        "shown twice"
    );
}
