//! Cookies of other apps on the same site ("neighbours") never cost the session, the CSRF
//! cookie or a login: a Cookie header is read as bytes and only malformed pairs are skipped.
//! And when several `__Host-session=` pairs (the default name over HTTPS) arrive, the first one whose ticket verifies *and* whose
//! record the store knows is used.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::{get, post};
use cloakroom_core::cookie::encode_ticket;
use cloakroom_core::{Key, KeyRing, MemoryStore, SessionId};
use cloakroom_tower::{
    CsrfLayer, CsrfSettings, CsrfToken, Session, SessionError, SessionLayer, SessionSettings,
};
use http::{HeaderValue, Request, Response, StatusCode, header};
use tower::ServiceExt;

fn keys() -> KeyRing {
    KeyRing::single(Key::from_bytes(&[77; 32]).unwrap())
}

struct Harness {
    store: Arc<MemoryStore>,
    app: Router,
}

fn harness() -> Harness {
    let store = Arc::new(MemoryStore::new());
    let sessions = SessionLayer::new(SessionSettings::new(store.clone(), keys()).build());
    let app = Router::new()
        .route(
            "/start/{value}",
            post(|s: Session, Path(v): Path<String>| async move {
                s.set("data", &v).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/get",
            get(|s: Session| async move {
                let v: Option<String> = s.get("data").await?;
                Ok::<_, SessionError>(v.unwrap_or_else(|| "-".into()))
            }),
        )
        .route(
            "/whoami",
            get(|s: Session| async move {
                Ok::<_, SessionError>(s.user().await?.unwrap_or_else(|| "-".into()))
            }),
        )
        .route("/form", get(|t: CsrfToken| async move { t.token().await }))
        .route(
            "/login/{user}",
            post(|s: Session, Path(u): Path<String>| async move {
                s.login(&u).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        // A write without a read (a "blind" write).
        .route(
            "/blind/{value}",
            post(|s: Session, Path(v): Path<String>| async move {
                s.set("data", &v).await?;
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
        .layer(CsrfLayer::new(
            CsrfSettings::new()
                .add_exempt_path("/start/kept")
                .add_exempt_path("/start/a")
                .add_exempt_path("/start/b")
                .add_exempt_path("/logout"),
        ))
        .layer(sessions);
    Harness { store, app }
}

/// Sends a request with the given Cookie headers (raw bytes, one header each).
async fn send(
    app: &Router,
    req: http::request::Builder,
    cookie_headers: &[Vec<u8>],
) -> Response<Body> {
    let mut req = req;
    for c in cookie_headers {
        let v = HeaderValue::from_bytes(c).expect("a valid header value");
        req = req.header(header::COOKIE, v);
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

/// The `name=value` pair of the response's Set-Cookie for `name`.
fn set_pair(res: &Response<Body>, name: &str) -> Option<String> {
    res.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .find(|p| p.starts_with(&format!("{name}=")))
}

/// A fresh session holding `data`; returns its `__Host-session=<ticket>` pair.
async fn start(h: &Harness, data: &str) -> String {
    let res = send(&h.app, Request::post(format!("/start/{data}")), &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    set_pair(&res, "__Host-session").expect("a session cookie")
}

/// A CSRF token of the session `pair` (read with a clean Cookie header).
async fn session_token(h: &Harness, pair: &str) -> String {
    let res = send(&h.app, Request::get("/form"), &[pair.as_bytes().to_vec()]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(set_pair(&res, "_xsrf").is_none(), "session mode");
    text(res).await
}

/// A CSRF token and its `_xsrf=` cookie pair, for a visitor without a session.
async fn cookie_token(h: &Harness) -> (String, String) {
    let res = send(&h.app, Request::get("/form"), &[]).await;
    let xsrf = set_pair(&res, "_xsrf").expect("an _xsrf cookie");
    (text(res).await, xsrf)
}

/// Neighbour cookies, as raw bytes: each is joined to ours with `; `.
fn neighbours() -> Vec<(&'static str, Vec<u8>)> {
    let mut high = b"raw=".to_vec();
    high.extend(0x80..=0xFF_u8);
    let mut junk = b"junk=".to_vec();
    junk.extend((0..4096u32).map(|i| [b'j', 0xE9, b'%', b'"', 0xFF, b','][i as usize % 6]));
    vec![
        ("utf-8 e-acute", "theme=é".as_bytes().to_vec()),
        ("raw bytes 0x80-0xFF", high),
        ("invalid utf-8", b"bad=\xC3\x28\xA0\xA1".to_vec()),
        ("invalid utf-8 name", b"\xFF\xFE=1".to_vec()),
        ("empty pairs", b";;".to_vec()),
        ("no name", b"=x".to_vec()),
        ("no equals sign", b"x".to_vec()),
        ("quoted value", b"q=\"abc\"".to_vec()),
        ("quoted utf-8 value", "q=\"é\"".as_bytes().to_vec()),
        ("unbalanced quote", b"q=\"abc".to_vec()),
        ("4 KB junk", junk),
        ("junk session pair", b"__Host-session=garbage".to_vec()),
        ("empty session pair", b"__Host-session=".to_vec()),
        ("utf-8 session pair", "__Host-session=é".as_bytes().to_vec()),
        ("quoted session pair", b"__Host-session=\"x y\"".to_vec()),
        ("tabs and spaces", b" \t theme = dark \t".to_vec()),
        ("space-separated junk", b"a b c d".to_vec()),
    ]
}

/// The ways a neighbour can come with our pair: before it, after it, or in its own Cookie
/// header (HTTP/2 splits cookies over several headers).
fn arrangements(ours: &str, neighbour: &[u8]) -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let join = |a: &[u8], b: &[u8]| [a, b"; ", b].concat();
    vec![
        ("before", vec![join(neighbour, ours.as_bytes())]),
        ("after", vec![join(ours.as_bytes(), neighbour)]),
        (
            "own header first",
            vec![neighbour.to_vec(), ours.as_bytes().to_vec()],
        ),
        (
            "own header last",
            vec![ours.as_bytes().to_vec(), neighbour.to_vec()],
        ),
    ]
}

#[tokio::test]
async fn neighbour_cookies_keep_the_session() {
    let h = harness();
    let ours = start(&h, "kept").await;
    for (what, n) in neighbours() {
        for (how, headers) in arrangements(&ours, &n) {
            let res = send(&h.app, Request::get("/get"), &headers).await;
            assert_eq!(res.status(), StatusCode::OK, "{what}, {how}");
            assert!(
                set_pair(&res, "__Host-session").is_none(),
                "{what}, {how}: the cookie was not removed"
            );
            assert_eq!(text(res).await, "kept", "{what}, {how}");
        }
    }
}

#[tokio::test]
async fn neighbour_cookies_keep_the_csrf_cookie_and_session_tokens() {
    let h = harness();
    // Without a session: the secret is in the `_xsrf` cookie (double submit).
    let (token, xsrf) = cookie_token(&h).await;
    // With a session: the secret is in the session.
    let ours = start(&h, "kept").await;
    let session_tok = session_token(&h, &ours).await;
    for (what, n) in neighbours() {
        for (how, headers) in arrangements(&xsrf, &n) {
            let res = send(
                &h.app,
                Request::post("/login/carol").header("X-XSRFToken", &token),
                &headers,
            )
            .await;
            assert_eq!(res.status(), StatusCode::OK, "_xsrf cookie: {what}, {how}");
        }
        for (how, headers) in arrangements(&ours, &n) {
            // A write the CSRF layer must let through: the session's token is accepted.
            let res = send(
                &h.app,
                Request::post("/blind/again").header("X-XSRFToken", &session_tok),
                &headers,
            )
            .await;
            assert_eq!(res.status(), StatusCode::OK, "session token: {what}, {how}");
        }
    }
}

#[tokio::test]
async fn neighbour_cookies_do_not_block_login_which_rotates_the_id() {
    let h = harness();
    for (what, n) in neighbours() {
        for (how, _) in arrangements("", &n) {
            let ours = start(&h, "kept").await;
            let token = session_token(&h, &ours).await;
            let headers = arrangements(&ours, &n)
                .into_iter()
                .find(|(x, _)| *x == how)
                .unwrap()
                .1;
            let res = send(
                &h.app,
                Request::post("/login/alice").header("X-XSRFToken", &token),
                &headers,
            )
            .await;
            assert_eq!(res.status(), StatusCode::OK, "{what}, {how}");
            let new = set_pair(&res, "__Host-session").expect("a new ticket");
            assert_ne!(new, ours, "{what}, {how}: the id was not rotated");
            // The old ticket is dead; the new one carries the user and the data.
            let old = send(&h.app, Request::get("/get"), &[ours.into_bytes()]).await;
            assert_eq!(text(old).await, "-", "{what}, {how}");
            let with = arrangements(&new, &n)
                .into_iter()
                .find(|(x, _)| *x == how)
                .unwrap()
                .1;
            let me = send(&h.app, Request::get("/whoami"), &with).await;
            assert_eq!(text(me).await, "alice", "{what}, {how}");
            let data = send(&h.app, Request::get("/get"), &with).await;
            assert_eq!(text(data).await, "kept", "{what}, {how}");
        }
    }
    // Only the logged-in sessions are left: each login replaced its anonymous record.
    assert_eq!(
        h.store.len(),
        neighbours().len() * 4,
        "one record per login, none left behind"
    );
}

/// A ticket that verifies (our key, our cookie name) but names no stored session: what a
/// neighbour could plant from a ticket of a session that has since ended.
fn unknown_ticket() -> String {
    format!(
        "__Host-session={}",
        encode_ticket(&keys(), "__Host-session", &SessionId::generate())
    )
}

fn header(pairs: &[&str]) -> Vec<Vec<u8>> {
    vec![pairs.join("; ").into_bytes()]
}

#[tokio::test]
async fn a_garbage_session_pair_before_ours_does_not_shadow_it() {
    let h = harness();
    let ours = start(&h, "kept").await;
    for garbage in [
        "__Host-session=garbage",
        "__Host-session=",
        "__Host-session=\"quoted\"",
    ] {
        let res = send(&h.app, Request::get("/get"), &header(&[garbage, &ours])).await;
        assert_eq!(text(res).await, "kept", "{garbage}");
    }
}

#[tokio::test]
async fn a_verified_ticket_of_an_unknown_session_before_ours_does_not_shadow_it() {
    let h = harness();
    let ours = start(&h, "kept").await;
    let planted = unknown_ticket();
    let res = send(&h.app, Request::get("/get"), &header(&[&planted, &ours])).await;
    assert!(
        set_pair(&res, "__Host-session").is_none(),
        "no cookie removal"
    );
    assert_eq!(text(res).await, "kept");
    // Also across two Cookie headers, and behind several planted pairs.
    let res = send(
        &h.app,
        Request::get("/get"),
        &[planted.clone().into_bytes(), ours.clone().into_bytes()],
    )
    .await;
    assert_eq!(text(res).await, "kept");
    let (p2, p3) = (unknown_ticket(), unknown_ticket());
    let res = send(
        &h.app,
        Request::get("/get"),
        &header(&[&planted, "__Host-session=junk", &p2, &p3, &ours]),
    )
    .await;
    assert_eq!(text(res).await, "kept");
}

#[tokio::test]
async fn a_blind_write_behind_a_planted_ticket_lands_in_our_session() {
    let h = harness();
    let ours = start(&h, "kept").await;
    let token = session_token(&h, &ours).await;
    let planted = unknown_ticket();
    let res = send(
        &h.app,
        Request::post("/blind/changed").header("X-XSRFToken", &token),
        &header(&[&planted, &ours]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        set_pair(&res, "__Host-session").is_none(),
        "no new session was made"
    );
    let res = send(&h.app, Request::get("/get"), &[ours.into_bytes()]).await;
    assert_eq!(text(res).await, "changed");
    assert_eq!(h.store.len(), 1);
}

#[tokio::test]
async fn login_behind_a_planted_ticket_replaces_our_record() {
    let h = harness();
    let ours = start(&h, "kept").await;
    let token = session_token(&h, &ours).await;
    let planted = unknown_ticket();
    let res = send(
        &h.app,
        Request::post("/login/alice").header("X-XSRFToken", &token),
        &header(&[&planted, &ours]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let new = set_pair(&res, "__Host-session").unwrap();
    let me = send(&h.app, Request::get("/whoami"), &[new.into_bytes()]).await;
    assert_eq!(text(me).await, "alice");
    let old = send(&h.app, Request::get("/get"), &[ours.into_bytes()]).await;
    assert_eq!(text(old).await, "-", "the old record was deleted");
    assert_eq!(h.store.len(), 1);
}

#[tokio::test]
async fn logout_behind_a_planted_ticket_ends_our_session() {
    let h = harness();
    let ours = start(&h, "kept").await;
    let planted = unknown_ticket();
    let res = send(
        &h.app,
        Request::post("/logout"),
        &header(&[&planted, &ours]),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        set_pair(&res, "__Host-session").as_deref(),
        Some("__Host-session=")
    );
    let res = send(&h.app, Request::get("/get"), &[ours.into_bytes()]).await;
    assert_eq!(text(res).await, "-");
    assert!(h.store.is_empty());
}

#[tokio::test]
async fn only_unknown_tickets_mean_no_session_and_a_cookie_removal() {
    let h = harness();
    let res = send(
        &h.app,
        Request::get("/get"),
        &header(&[&unknown_ticket(), &unknown_ticket()]),
    )
    .await;
    assert_eq!(
        set_pair(&res, "__Host-session").as_deref(),
        Some("__Host-session=")
    );
    assert_eq!(text(res).await, "-");
}

/// Documented: of two live sessions, the first pair in the header wins. (A planted ticket of
/// the attacker's own live session cannot be told apart; `__Host-` cookies stop the planting.)
#[tokio::test]
async fn of_two_known_sessions_the_first_is_used() {
    let h = harness();
    let a = start(&h, "a").await;
    let b = start(&h, "b").await;
    let res = send(&h.app, Request::get("/get"), &header(&[&a, &b])).await;
    assert_eq!(text(res).await, "a");
    let res = send(&h.app, Request::get("/get"), &header(&[&b, &a])).await;
    assert_eq!(text(res).await, "b");
}

#[tokio::test]
async fn a_pair_planted_after_ours_is_not_used() {
    let h = harness();
    let ours = start(&h, "kept").await;
    let other = start(&h, "b").await;
    for planted in [unknown_ticket(), other, "__Host-session=garbage".into()] {
        let res = send(&h.app, Request::get("/get"), &header(&[&ours, &planted])).await;
        assert_eq!(text(res).await, "kept", "{planted}");
    }
}

/// A logout that reads nothing, with two live tickets: which one was in use is unknown, so
/// both sessions end (documented on `Session::destroy`).
#[tokio::test]
async fn a_blind_logout_with_two_live_tickets_ends_both() {
    let h = harness();
    let a = start(&h, "a").await;
    let b = start(&h, "b").await;
    let res = send(&h.app, Request::post("/logout"), &header(&[&a, &b])).await;
    assert_eq!(
        set_pair(&res, "__Host-session").as_deref(),
        Some("__Host-session=")
    );
    assert!(h.store.is_empty());
}

/// At most `MAX_CANDIDATES` (4) verified tickets are tried, so a flood of planted pairs costs a
/// bounded number of store loads.
#[tokio::test]
async fn verified_tickets_past_the_cap_are_not_tried() {
    const MAX_CANDIDATES: usize = 4; // the core's cap
    let h = harness();
    let ours = start(&h, "kept").await;
    let planted: Vec<String> = (0..MAX_CANDIDATES).map(|_| unknown_ticket()).collect();
    let mut within: Vec<&str> = planted[1..].iter().map(String::as_str).collect();
    within.push(&ours);
    let res = send(&h.app, Request::get("/get"), &header(&within)).await;
    assert_eq!(text(res).await, "kept", "the last candidate is tried");
    let mut past: Vec<&str> = planted.iter().map(String::as_str).collect();
    past.push(&ours);
    let res = send(&h.app, Request::get("/get"), &header(&past)).await;
    assert_eq!(text(res).await, "-", "past the cap");
}

/// Pycket mode (a Tornado-signed uuid in `PYCKET_ID`) reads the header the same way.
#[tokio::test]
async fn pycket_tickets_survive_neighbour_cookies() {
    use cloakroom_tornado::PycketTicket;
    use cloakroom_tornado::TornadoSecret;
    let engine = SessionSettings::new(Arc::new(MemoryStore::new()), keys())
        .with_cookie_name("PYCKET_ID")
        .unwrap()
        .with_ticket_format(Arc::new(
            PycketTicket::new(TornadoSecret::single("cookie-secret"), 31.0).unwrap(),
        ))
        .unwrap()
        .build();
    let layer = SessionLayer::new(engine);
    let app = Router::new()
        .route(
            "/start",
            post(|s: Session| async move {
                s.set("data", "kept").await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/get",
            get(|s: Session| async move {
                let v: Option<String> = s.get("data").await?;
                Ok::<_, SessionError>(v.unwrap_or_else(|| "-".into()))
            }),
        )
        .layer(layer);
    let res = send(&app, Request::post("/start"), &[]).await;
    let ours = set_pair(&res, "PYCKET_ID").expect("a pycket cookie");
    for (what, n) in neighbours() {
        for (how, headers) in arrangements(&ours, &n) {
            let res = send(&app, Request::get("/get"), &headers).await;
            assert_eq!(text(res).await, "kept", "{what}, {how}");
        }
    }
}
