//! The attack suite: one test per attack or guarantee of SECURITY.md that the session
//! layer tests do not already cover by name.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use cloakroom_core::cookie::encode_ticket;
use cloakroom_core::session::SessionId;
use cloakroom_core::store::SessionStore;
use cloakroom_core::{Key, KeyRing, MemoryStore};
use cloakroom_tower::{
    CsrfLayer, CsrfSettings, CsrfToken, Session, SessionError, SessionLayer, SessionSettings,
};
use http::{Request, Response, StatusCode, header};
use tower::ServiceExt;

fn key(b: u8) -> Key {
    Key::from_bytes(&[b; 32]).unwrap()
}

fn app(store: MemoryStore, keys: KeyRing) -> Router {
    Router::new()
        .route(
            "/whoami",
            get(|s: Session| async move {
                Ok::<_, SessionError>(s.user().await?.unwrap_or_else(|| "-".into()))
            }),
        )
        .route(
            "/login/{u}",
            post(
                |s: Session, axum::extract::Path(u): axum::extract::Path<String>| async move {
                    s.login(&u).await?;
                    Ok::<_, SessionError>("ok")
                },
            ),
        )
        .route(
            "/put",
            post(|s: Session, body: String| async move {
                s.set("blob", &body).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/debug",
            get(|s: Session, t: CsrfToken| async move {
                s.set("secret-data", "hunter2").await?;
                let token = t.token().await?;
                Ok::<_, SessionError>(format!("{s:?} {t:?} {}", token.len()))
            }),
        )
        .layer(CsrfLayer::new(
            CsrfSettings::new()
                .add_exempt_path("/put")
                .add_exempt_path("/login/alice")
                .add_exempt_path("/login/mallory"),
        ))
        .layer(SessionLayer::new(
            SessionSettings::new(Arc::new(store), keys)
                .with_max_data_bytes(1024)
                .unwrap()
                .with_idle_timeout(Duration::from_secs(3600))
                .unwrap()
                .build(),
        ))
}

async fn send(app: &Router, req: http::request::Builder, body: Body) -> Response<Body> {
    app.clone().oneshot(req.body(body).unwrap()).await.unwrap()
}

async fn text(res: Response<Body>) -> String {
    String::from_utf8(
        axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap()
}

fn ticket(res: &Response<Body>) -> String {
    res.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// Session fixation: a ticket the attacker chose (validly signed, for a session of theirs)
/// is never the one the victim ends up logged in with.
#[tokio::test]
async fn session_fixation_planted_ticket_is_not_adopted() {
    let store = MemoryStore::new();
    let app = app(store.clone(), KeyRing::single(key(1)));
    let planted = ticket(&send(&app, Request::post("/put"), Body::from("x")).await);
    let res = send(
        &app,
        Request::post("/login/alice").header(header::COOKIE, &planted),
        Body::empty(),
    )
    .await;
    let fresh = ticket(&res);
    assert_ne!(planted, fresh);
    let who = |c: String| {
        let app = app.clone();
        async move {
            text(
                send(
                    &app,
                    Request::get("/whoami").header(header::COOKIE, c),
                    Body::empty(),
                )
                .await,
            )
            .await
        }
    };
    assert_eq!(who(fresh).await, "alice");
    assert_eq!(
        who(planted).await,
        "-",
        "the planted ticket must not be logged in"
    );
}

/// A validly signed ticket for an id the server never issued (or already destroyed) is not
/// adopted: writing under it creates a session with a new id.
#[tokio::test]
async fn signed_but_unknown_ids_are_not_adopted() {
    let store = MemoryStore::new();
    let keys = KeyRing::single(key(1));
    let app = app(store.clone(), keys.clone());
    let chosen = SessionId::from_bytes([7; 32]);
    let forged = format!(
        "__Host-session={}",
        encode_ticket(&keys, "__Host-session", &chosen)
    );
    let res = send(
        &app,
        Request::post("/put").header(header::COOKIE, &forged),
        Body::from("x"),
    )
    .await;
    assert_ne!(ticket(&res), forged);
    assert!(store.load(&chosen.key()).await.unwrap().is_none());
    assert_eq!(store.len(), 1);
}

/// Key rotation: tickets of a retired-but-kept key verify, of a removed key do not; new
/// tickets are signed with the first key.
#[tokio::test]
async fn key_rotation() {
    let store = MemoryStore::new();
    let old_app = app(store.clone(), KeyRing::single(key(1)));
    let old = ticket(&send(&old_app, Request::post("/login/alice"), Body::empty()).await);
    let rotating = app(store.clone(), KeyRing::new(vec![key(2), key(1)]).unwrap());
    let who = |app: Router, c: String| async move {
        text(
            send(
                &app,
                Request::get("/whoami").header(header::COOKIE, c),
                Body::empty(),
            )
            .await,
        )
        .await
    };
    assert_eq!(who(rotating.clone(), old.clone()).await, "alice");
    let new = ticket(&send(&rotating, Request::post("/login/mallory"), Body::empty()).await);
    let only_new = app(store.clone(), KeyRing::single(key(2)));
    assert_eq!(
        who(only_new.clone(), new).await,
        "mallory",
        "new tickets use the first key"
    );
    assert_eq!(
        who(only_new, old).await,
        "-",
        "a removed key no longer verifies"
    );
}

/// A ticket in the URL or in a form field is ignored: only the cookie counts.
#[tokio::test]
async fn tickets_outside_the_cookie_are_ignored() {
    let store = MemoryStore::new();
    let app = app(store.clone(), KeyRing::single(key(1)));
    let c = ticket(&send(&app, Request::post("/login/alice"), Body::empty()).await);
    let value = c.trim_start_matches("__Host-session=");
    let res = send(
        &app,
        Request::get(format!("/whoami?session={value}")),
        Body::empty(),
    )
    .await;
    assert_eq!(text(res).await, "-");
    let res = send(
        &app,
        Request::get("/whoami").header(header::CONTENT_TYPE, "application/x-www-form-urlencoded"),
        Body::from(format!("__Host-session={value}")),
    )
    .await;
    assert_eq!(text(res).await, "-");
    let res = send(
        &app,
        Request::get("/whoami").header("Authorization", format!("Bearer {value}")),
        Body::empty(),
    )
    .await;
    assert_eq!(text(res).await, "-");
}

/// Session data over the configured limit is a clear error at `set` (413 here), and the
/// stored session is unchanged.
#[tokio::test]
async fn oversized_session_data_is_refused_at_set() {
    let store = MemoryStore::new();
    let app = app(store.clone(), KeyRing::single(key(1)));
    let c = ticket(&send(&app, Request::post("/put"), Body::from("small")).await);
    let res = send(
        &app,
        Request::post("/put").header(header::COOKIE, &c),
        Body::from("x".repeat(2000)),
    )
    .await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let page = store.scan(Default::default(), 10).await.unwrap();
    assert_eq!(page.sessions.len(), 1);
    let record = store.load(&page.sessions[0].key).await.unwrap().unwrap();
    assert_eq!(record.data["blob"], "\"small\"");
}

/// Debug output of sessions, keys, tokens and records never shows a secret.
#[tokio::test]
async fn debug_output_contains_no_secret() {
    let store = MemoryStore::new();
    let k = key(0xAB);
    let ring = KeyRing::single(k.clone());
    let app = app(store.clone(), ring.clone());
    let res = send(&app, Request::get("/debug"), Body::empty()).await;
    let cookie = ticket(&res);
    let printed = text(res).await;
    let page = store.scan(Default::default(), 10).await.unwrap();
    let record = store.load(&page.sessions[0].key).await.unwrap().unwrap();
    let all = format!(
        "{printed} {ring:?} {k:?} {record:?} {:?} {:?}",
        SessionId::generate(),
        cloakroom_core::csrf::Secret::generate()
    );
    assert!(all.contains("REDACTED"));
    for secret in [
        "hunter2",
        &k.to_base64(),
        "abababab",
        cookie.trim_start_matches("__Host-session="),
    ] {
        assert!(!all.contains(secret), "{secret} leaked in {all}");
    }
}
