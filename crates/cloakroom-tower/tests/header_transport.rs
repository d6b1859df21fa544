//! The ticket header transport through axum with `oneshot`: tickets in `Authorization:
//! Bearer` (or a configured header) as well as, or instead of, the cookie; the new ticket in
//! `X-Session-Ticket`; the CSRF token check skipped for header sessions only; conflicts,
//! malformed and oversized headers; the rotation grace over HTTP.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use cloakroom_core::session::Transport;
use cloakroom_core::store::SessionStore;
use cloakroom_core::{Key, KeyRing};
use cloakroom_testkit::probe::Probe;
use cloakroom_tower::{
    CsrfLayer, CsrfMode, CsrfSettings, Session, SessionError, SessionLayer, SessionSettings,
};
use http::{Request, Response, StatusCode, header};
use tower::ServiceExt;

const TICKET: &str = "x-session-ticket";

fn app(probe: &Arc<Probe>, configure: impl FnOnce(SessionSettings) -> SessionSettings) -> Router {
    app_with_csrf(probe, configure, CsrfSettings::new())
}

fn app_with_csrf(
    probe: &Arc<Probe>,
    configure: impl FnOnce(SessionSettings) -> SessionSettings,
    csrf: CsrfSettings,
) -> Router {
    let keys = KeyRing::single(Key::from_bytes(&[9; 32]).unwrap());
    let engine = configure(SessionSettings::new(probe.clone(), keys)).build();
    Router::new()
        .route(
            "/login",
            // An API login: the ticket in the JSON body (and, by the layer, the header).
            post(|s: Session| async move {
                s.login("ada").await?;
                let token = s.ticket().await?.unwrap_or_default();
                Ok::<_, SessionError>(format!("{{\"token\":\"{token}\"}}"))
            }),
        )
        .route(
            "/browser-login",
            post(|s: Session| async move {
                s.login("ada").await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/me",
            get(|s: Session| async move {
                let user = s.user().await?;
                let from = if s.from_header() { "header" } else { "cookie" };
                Ok::<_, SessionError>(format!("{} {from}", user.as_deref().unwrap_or("-")))
            }),
        )
        .route(
            "/write",
            post(|s: Session| async move {
                s.set("n", &1).await?;
                Ok::<_, SessionError>("ok")
            }),
        )
        .route(
            "/cycle",
            post(|s: Session| async move {
                s.cycle_id().await?;
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
            csrf.add_exempt_path("/login")
                .add_exempt_path("/browser-login"),
        ))
        .layer(SessionLayer::new(engine))
}

fn both(s: SessionSettings) -> SessionSettings {
    s.with_transport(Transport::CookieAndHeader)
}

async fn send(app: &Router, method: &str, uri: &str, headers: &[(&str, &str)]) -> Response<Body> {
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
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

fn value<'a>(res: &'a Response<Body>, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

/// An API login: the ticket from the header, checked against the JSON body.
async fn api_login(app: &Router) -> String {
    let res = send(app, "POST", "/login", &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get(header::SET_COOKIE).is_none(), "no cookie");
    assert_eq!(value(&res, "cache-control"), Some("no-store"));
    let ticket = value(&res, TICKET).expect("the ticket header").to_owned();
    assert_eq!(text(res).await, format!("{{\"token\":\"{ticket}\"}}"));
    ticket
}

/// A browser login: the `__Host-session=...` cookie pair.
async fn browser_login(app: &Router) -> String {
    let res = send(app, "POST", "/browser-login", &[]).await;
    let cookie = value(&res, "set-cookie").expect("a cookie");
    assert!(
        value(&res, TICKET).is_none(),
        "no ticket header for a browser"
    );
    cookie.split(';').next().unwrap().to_owned()
}

fn bearer(ticket: &str) -> String {
    format!("Bearer {ticket}")
}

#[tokio::test]
async fn a_header_login_answers_the_ticket_and_the_header_reaches_the_session() {
    let probe = Arc::new(Probe::default());
    let app = app(&probe, both);
    let ticket = api_login(&app).await;
    let auth = bearer(&ticket);
    let res = send(&app, "GET", "/me", &[("authorization", &auth)]).await;
    assert!(value(&res, TICKET).is_none(), "a read sends no ticket");
    assert_eq!(text(res).await, "ada header");
    // The user index lists it, with its client's name.
    let list = probe.inner.sessions_of("ada").await.unwrap();
    assert_eq!(list.len(), 1);

    // A rotation answers the new ticket the same way; the old one stops.
    let res = send(&app, "POST", "/cycle", &[("authorization", &auth)]).await;
    assert!(res.headers().get(header::SET_COOKIE).is_none());
    let new = value(&res, TICKET).unwrap().to_owned();
    assert_ne!(new, ticket);
    let me = |t: String| {
        let app = app.clone();
        async move { text(send(&app, "GET", "/me", &[("authorization", &bearer(&t))]).await).await }
    };
    assert_eq!(me(new.clone()).await, "ada header");
    assert_eq!(
        me(ticket).await,
        "- header",
        "the old ticket has no session"
    );

    // A logout empties the ticket and deletes the record.
    let res = send(&app, "POST", "/logout", &[("authorization", &bearer(&new))]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(value(&res, TICKET), Some(""));
    assert!(res.headers().get(header::SET_COOKIE).is_none());
    assert_eq!(me(new).await, "- header");
    assert!(probe.inner.sessions_of("ada").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_configured_header_carries_the_bare_ticket() {
    let probe = Arc::new(Probe::default());
    let app = app(&probe, |s| {
        both(s).with_ticket_header("X-Auth-Token").unwrap()
    });
    let ticket = api_login(&app).await;
    let res = send(&app, "GET", "/me", &[("x-auth-token", &ticket)]).await;
    assert_eq!(text(res).await, "ada header");
    // `Authorization` means nothing then.
    let res = send(&app, "GET", "/me", &[("authorization", &bearer(&ticket))]).await;
    assert_eq!(text(res).await, "- cookie");
}

#[tokio::test]
async fn a_cookie_only_engine_never_reads_the_header() {
    let probe = Arc::new(Probe::default());
    let with_header = app(&probe, both);
    let ticket = api_login(&with_header).await;
    let cookie_only = app(&probe, |s| s);
    let before = probe.calls();
    let res = send(
        &cookie_only,
        "GET",
        "/me",
        &[("authorization", &bearer(&ticket))],
    )
    .await;
    assert_eq!(text(res).await, "- cookie");
    assert_eq!(probe.calls(), before, "no store call");
    // The same ticket as a cookie works: one ticket, two transports.
    let cookie = format!("__Host-session={ticket}");
    let res = send(&cookie_only, "GET", "/me", &[("cookie", &cookie)]).await;
    assert_eq!(text(res).await, "ada cookie");
}

#[tokio::test]
async fn header_only_ignores_cookies_and_never_sets_one() {
    let probe = Arc::new(Probe::default());
    let app = app(&probe, |s| s.with_transport(Transport::Header));
    let ticket = api_login(&app).await;
    let cookie = format!("__Host-session={ticket}");
    let res = send(&app, "GET", "/me", &[("cookie", &cookie)]).await;
    assert_eq!(text(res).await, "- cookie");
    // A session made without asking for the ticket still travels by header.
    let res = send(&app, "POST", "/write", &[("sec-fetch-site", "same-origin")]).await;
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "no session yet: a token is needed"
    );
    let res = send(&app, "POST", "/browser-login", &[]).await;
    assert!(res.headers().get(header::SET_COOKIE).is_none());
    assert!(value(&res, TICKET).is_some_and(|t| !t.is_empty()));
}

#[tokio::test]
async fn cookie_and_header_naming_different_sessions_are_refused() {
    let probe = Arc::new(Probe::default());
    let app = app(&probe, both);
    let ticket = api_login(&app).await;
    let cookie = browser_login(&app).await;
    let auth = bearer(&ticket);
    let before = probe.calls();
    let res = send(
        &app,
        "GET",
        "/me",
        &[("cookie", &cookie), ("authorization", &auth)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(probe.calls(), before, "refused before any store call");
    let body = text(res).await;
    assert!(body.contains("different sessions"), "{body}");
    assert!(
        !body.contains(&ticket) && !body.contains(&cookie[8..]),
        "no ticket in the answer"
    );

    // The same session in both: a cookie request, whose CSRF check applies.
    let same = format!("__Host-session={ticket}");
    let res = send(
        &app,
        "GET",
        "/me",
        &[("cookie", &same), ("authorization", &auth)],
    )
    .await;
    assert_eq!(text(res).await, "ada cookie");
    let res = send(
        &app,
        "POST",
        "/write",
        &[("cookie", &same), ("authorization", &auth)],
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "the cookie's CSRF check"
    );
}

#[tokio::test]
async fn header_sessions_skip_the_csrf_token_and_cookie_sessions_do_not() {
    // Session-bound tokens (the default) and Tornado's `_xsrf` double-submit cookie.
    for mode in [CsrfMode::Auto, CsrfMode::Cookie] {
        let probe = Arc::new(Probe::default());
        let app = app_with_csrf(&probe, both, CsrfSettings::new().with_mode(mode));
        let auth = bearer(&api_login(&app).await);
        let res = send(&app, "POST", "/write", &[("authorization", &auth)]).await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "{mode:?}: header session, no token"
        );
        let cookie = browser_login(&app).await;
        let res = send(&app, "POST", "/write", &[("cookie", &cookie)]).await;
        assert_eq!(
            res.status(),
            StatusCode::FORBIDDEN,
            "{mode:?}: cookie session"
        );
        assert!(text(res).await.contains("token missing"), "{mode:?}");
        // The cross-origin check still runs for header sessions.
        let cross = [
            ("authorization", auth.as_str()),
            ("sec-fetch-site", "cross-site"),
        ];
        let res = send(&app, "POST", "/write", &cross).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{mode:?}: cross-site");
    }
}

#[tokio::test]
async fn malformed_oversized_and_query_tickets_are_no_session_and_cost_no_store_call() {
    let probe = Arc::new(Probe::default());
    let app = app(&probe, both);
    let ticket = api_login(&app).await;
    let huge = format!("Bearer {}", "A".repeat(5000));
    // One character changed: the signature no longer matches.
    let flipped = if ticket.as_bytes()[50] == b'A' {
        "B"
    } else {
        "A"
    };
    let garbage = format!("Bearer {}{flipped}{}", &ticket[..50], &ticket[51..]);
    let bad = [
        "Bearer",
        "Bearer ",
        "Basic YWRhOnB3",
        "bearer not-a-ticket",
        garbage.as_str(),
        ticket.as_str(),
        huge.as_str(),
    ];
    for value in bad {
        let before = probe.calls();
        let res = send(&app, "GET", "/me", &[("authorization", value)]).await;
        assert_eq!(res.status(), StatusCode::OK, "never a 500");
        assert_eq!(text(res).await, "- cookie");
        assert_eq!(
            probe.calls(),
            before,
            "a store call for {}",
            &value[..value.len().min(20)]
        );
    }
    for query in ["access_token", "token", "session", "ticket"] {
        let res = send(&app, "GET", &format!("/me?{query}={ticket}"), &[]).await;
        assert_eq!(text(res).await, "- cookie", "?{query}=");
    }
}

#[tokio::test]
async fn an_old_header_ticket_works_within_the_grace_without_a_new_ticket() {
    let probe = Arc::new(Probe::default());
    let app = app(&probe, |s| {
        both(s)
            .with_rotation_grace(Duration::from_secs(30))
            .unwrap()
    });
    let old = bearer(&api_login(&app).await);
    let res = send(&app, "POST", "/cycle", &[("authorization", &old)]).await;
    let new = bearer(value(&res, TICKET).unwrap());
    let res = send(&app, "POST", "/write", &[("authorization", &old)]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(value(&res, TICKET).is_none(), "no ticket for the old one");
    let res = send(&app, "GET", "/me", &[("authorization", &old)]).await;
    assert_eq!(text(res).await, "ada header");
    // A logout with the new ticket ends the old one too.
    send(&app, "POST", "/logout", &[("authorization", &new)]).await;
    let res = send(&app, "GET", "/me", &[("authorization", &old)]).await;
    assert_eq!(text(res).await, "- header");
}

#[test]
fn settings_refuse_bad_headers_and_long_graces() {
    let settings = || SessionSettings::new(Probe::default(), KeyRing::single(Key::generate()));
    for name in ["", "a b", "Cookie", "set-cookie", "x:y"] {
        assert!(settings().with_ticket_header(name).is_err(), "{name:?}");
    }
    assert!(
        settings()
            .with_rotation_grace(Duration::from_secs(60))
            .is_ok()
    );
    let err = settings()
        .with_rotation_grace(Duration::from_secs(61))
        .unwrap_err();
    assert_eq!(err.kind(), cloakroom_core::ConfigErrorKind::TooLong);
    // pycket's records are read by Tornado, which follows no forward.
    let pycket = cloakroom_tornado::PycketTicket::new(
        cloakroom_tornado::TornadoSecret::single("secret"),
        31.0,
    )
    .unwrap();
    let grace = settings()
        .with_rotation_grace(Duration::from_secs(5))
        .unwrap();
    let err = grace
        .with_ticket_format(Arc::new(pycket.clone()))
        .unwrap_err();
    assert_eq!(err.kind(), cloakroom_core::ConfigErrorKind::Conflict);
    let err = settings()
        .with_ticket_format(Arc::new(pycket))
        .unwrap()
        .with_rotation_grace(Duration::from_secs(5))
        .unwrap_err();
    assert_eq!(err.kind(), cloakroom_core::ConfigErrorKind::Conflict);
}

#[tokio::test]
async fn debug_output_never_shows_a_ticket() {
    let probe = Arc::new(Probe::default());
    let keys = KeyRing::single(Key::from_bytes(&[9; 32]).unwrap());
    let engine = both(SessionSettings::new(probe, keys)).build();
    let s = engine.session(None);
    s.login("ada").await.unwrap();
    let ticket = s.ticket().await.unwrap().unwrap();
    let outcome = engine.commit(&s, None).await.unwrap();
    let debug = format!("{outcome:?} {s:?} {engine:?}");
    assert!(!debug.contains(&ticket), "{debug}");
    let auth = bearer(&ticket);
    let next = engine
        .request_session(std::iter::empty::<&[u8]>(), Some(auth.as_bytes()))
        .unwrap();
    assert!(next.from_header());
    assert!(!format!("{next:?}").contains(&ticket));
}

#[tokio::test]
async fn a_revoked_or_expired_header_ticket_is_no_session() {
    let probe = Arc::new(Probe::default());
    let long = app(&probe, both);
    let auth = bearer(&api_login(&long).await);
    // Revoked through the user index, as "log out everywhere" does.
    assert_eq!(probe.inner.delete_user("ada", None).await.unwrap(), 1);
    let res = send(&long, "GET", "/me", &[("authorization", &auth)]).await;
    assert_eq!(
        value(&res, TICKET),
        Some(""),
        "the client is told to drop it"
    );
    assert_eq!(text(res).await, "- header");

    let idle = Duration::from_millis(200);
    let short = app(&probe, |s| both(s).with_idle_timeout(idle).unwrap());
    let auth = bearer(&api_login(&short).await);
    tokio::time::sleep(idle + Duration::from_millis(100)).await;
    let res = send(&short, "GET", "/me", &[("authorization", &auth)]).await;
    assert_eq!(text(res).await, "- header", "past the idle timeout");
}
