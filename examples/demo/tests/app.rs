//! The demo driven through `app()` with `oneshot`: no sockets. Sessions in `memory://`,
//! accounts in a temporary SQLite file.

use axum::http::{StatusCode, header};
use cloakroom_demo::{DemoConfig, app};

mod common;

use common::*;

#[tokio::test]
async fn register_sets_a_safe_cookie_and_greets_by_name() {
    let demo = demo().await;
    let mut browser = Browser::new(&demo, "test-agent");
    let reply = browser.register("ana").await;
    assert_eq!(reply.location(), Some("/"));
    let cookies = reply.set_cookies();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    let cookie = cookies[0];
    assert!(cookie.starts_with("session="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    // http:// origin: no Secure (the browser would not send it back).
    assert!(!cookie.contains("Secure"), "{cookie}");
    // No "remember me": a browser-session cookie.
    assert!(!cookie.contains("Max-Age"), "{cookie}");
    assert_eq!(reply.header(&header::CACHE_CONTROL), "no-store");
    assert!(reply.header(&header::VARY).contains("Cookie"));

    let home = browser.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains("Hello, ana"), "{}", home.body);
    assert_eq!(home.header(&header::CACHE_CONTROL), "no-store");
}

#[tokio::test]
async fn remember_me_makes_the_cookie_persistent() {
    let demo = demo().await;
    let mut browser = Browser::new(&demo, "test-agent");
    let reply = browser
        .post(
            "/register",
            &format!("name=ana&password={PASSWORD}&remember=on"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let cookie = reply.set_cookies()[0];
    assert!(cookie.contains("Max-Age="), "{cookie}");
}

#[tokio::test]
async fn https_origin_makes_secure_host_only_cookies() {
    let demo = demo_with(|c| c.origin = "https://demo.example".into()).await;
    let mut browser = Browser::new(&demo, "test-agent");
    let reply = browser
        .post("/register", &format!("name=ana&password={PASSWORD}"))
        .await;
    let cookie = reply.set_cookies()[0];
    assert!(cookie.starts_with("__Host-session="), "{cookie}");
    assert!(cookie.contains("Secure"), "{cookie}");
}

#[tokio::test]
async fn anonymous_home_redirects_to_login_without_any_cookie() {
    let demo = demo().await;
    let mut browser = Browser::new(&demo, "test-agent");
    let reply = browser.get("/").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.location(), Some("/login"));
    assert!(reply.set_cookies().is_empty(), "{:?}", reply.set_cookies());
    for page in ["/sessions", "/api/me", "/healthz"] {
        let reply = browser.get(page).await;
        assert!(reply.set_cookies().is_empty(), "{page} set a cookie");
    }
    // The login and register forms need a CSRF secret before there is a session: only the
    // `_xsrf` cookie is set, never a session.
    for page in ["/login", "/register"] {
        let reply = browser.get(page).await;
        let cookies = reply.set_cookies();
        assert!(
            cookies.iter().all(|c| c.starts_with("_xsrf=")),
            "{page} set {cookies:?}"
        );
    }
    assert!(browser.cookie.is_none());
}

#[tokio::test]
async fn forms_carry_the_fields_and_escape_user_text() {
    let demo = demo().await;
    let mut browser = Browser::new(&demo, "test-agent");
    let login = browser.get("/login").await;
    assert_eq!(login.status, StatusCode::OK);
    for field in ["name=\"name\"", "name=\"password\"", "name=\"remember\""] {
        assert!(login.body.contains(field), "{field} missing");
    }
    // A name with markup is shown as text.
    let reply = browser
        .post(
            "/register",
            &format!("name=%3Cb%3Ebold%3C%2Fb%3E&password={PASSWORD}"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let home = browser.get("/").await;
    assert!(
        home.body.contains("Hello, &lt;b&gt;bold&lt;"),
        "{}",
        home.body
    );
    assert!(!home.body.contains("<b>bold"));
}

#[tokio::test]
async fn flash_is_shown_exactly_once() {
    let demo = demo().await;
    let mut browser = Browser::new(&demo, "test-agent");
    browser.register("ana").await;
    let first = browser.get("/").await;
    assert!(first.body.contains("Welcome, ana"), "{}", first.body);
    let second = browser.get("/").await;
    assert_eq!(second.status, StatusCode::OK);
    assert!(!second.body.contains("Welcome, ana"), "{}", second.body);
}

#[tokio::test]
async fn wrong_password_and_unknown_name_get_the_same_401() {
    let demo = demo().await;
    let mut browser = Browser::new(&demo, "test-agent");
    browser.register("ana").await;
    let mut stranger = Browser::new(&demo, "other-agent");
    let wrong = stranger
        .post("/login", "name=ana&password=not-the-one")
        .await;
    let unknown = stranger
        .post("/login", &format!("name=bob&password={PASSWORD}"))
        .await;
    for reply in [&wrong, &unknown] {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(
            reply.body.contains("wrong name or password"),
            "{}",
            reply.body
        );
        assert!(reply.set_cookies().is_empty());
    }
    assert!(!stranger.is_logged_in().await);
    stranger.login("ana").await;
    let home = stranger.get("/").await;
    assert!(home.body.contains("Welcome back, ana"), "{}", home.body);
}

#[tokio::test]
async fn registration_is_validated() {
    let demo = demo().await;
    let mut browser = Browser::new(&demo, "test-agent");
    let short = browser.post("/register", "name=ana&password=short").await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        short.body.contains("at least 8 characters"),
        "{}",
        short.body
    );
    let long_name = "a".repeat(65);
    let long = browser
        .post(
            "/register",
            &format!("name={long_name}&password={PASSWORD}"),
        )
        .await;
    assert_eq!(long.status, StatusCode::UNPROCESSABLE_ENTITY);
    browser.register("ana").await;
    let mut other = Browser::new(&demo, "other-agent");
    let taken = other
        .post("/register", "name=ana&password=another-password")
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT);
    assert!(taken.body.contains("taken"), "{}", taken.body);
    // The original password still works.
    other.login("ana").await;
}

#[tokio::test]
async fn malformed_forms_are_client_errors() {
    let demo = demo().await;
    let mut browser = Browser::new(&demo, "test-agent");
    let missing = browser.post("/login", "name=ana").await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    let missing = browser.post("/register", "password=whatever-long").await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    let garbage = browser.post("/login", "%%%&&&==").await;
    assert!(garbage.status.is_client_error(), "{}", garbage.status);
}

#[tokio::test]
async fn login_rotates_the_session_id() {
    let demo = demo().await;
    Browser::new(&demo, "setup").register("ana").await;
    Browser::new(&demo, "setup").register("bob").await;

    // No route gives an anonymous visitor a session (issue 12, item 6): the session before
    // the login is another account's, on the same browser.
    let mut browser = Browser::new(&demo, "test-agent");
    browser.login("bob").await;
    let before_login = browser.cookie.clone().expect("bob's session cookie");
    browser.login("ana").await;
    let after_login = browser.cookie.clone().unwrap();
    assert_ne!(before_login, after_login);
    let mut attacker = browser.clone();
    attacker.cookie = Some(before_login);
    assert!(
        !attacker.is_logged_in().await,
        "the pre-login ticket still works"
    );
    assert!(browser.is_logged_in().await);

    // Logging in again from a logged-in session rotates too.
    let mut old = browser.clone();
    browser.login("ana").await;
    assert_ne!(browser.cookie, old.cookie);
    assert!(!old.is_logged_in().await);
    assert!(browser.is_logged_in().await);
}

#[tokio::test]
async fn notes_are_added_listed_and_validated() {
    let demo = demo().await;
    let mut browser = Browser::new(&demo, "test-agent");
    browser.register("ana").await;
    browser.get("/").await;
    let reply = browser.post("/notes", "text=buy+milk").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.location(), Some("/"));
    browser
        .post("/notes", "text=%3Ci%3Ecall%3C%2Fi%3E+mum")
        .await;
    let home = browser.get("/").await;
    assert!(home.body.contains("Note saved"), "{}", home.body);
    assert!(
        home.body
            .contains(r#"<span class="note-text">buy milk</span>"#),
        "{}",
        home.body
    );
    assert!(
        home.body
            .contains(r#"<span class="note-text">&lt;i&gt;call&lt;"#),
        "{}",
        home.body
    );
    assert!(!home.body.contains("<i>call"));

    let empty = browser.post("/notes", "text=+++").await;
    assert_eq!(empty.status, StatusCode::SEE_OTHER);
    let home = browser.get("/").await;
    assert!(
        home.body.contains("A note needs some text"),
        "{}",
        home.body
    );
    let too_long = browser
        .post("/notes", &format!("text={}", "x".repeat(501)))
        .await;
    assert_eq!(too_long.status, StatusCode::SEE_OTHER);
    let home = browser.get("/").await;
    assert!(home.body.contains("at most 500"), "{}", home.body);

    let me = browser.get("/api/me").await.json();
    assert_eq!(
        me["notes"],
        serde_json::json!(["buy milk", "<i>call</i> mum"])
    );
}

#[tokio::test]
async fn logout_removes_the_cookie_and_the_old_ticket_is_dead() {
    let demo = demo().await;
    let mut browser = Browser::new(&demo, "test-agent");
    browser.register("ana").await;
    let ticket = browser.cookie.clone();
    let reply = browser.post("/logout", "").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.location(), Some("/login"));
    let removal = reply.set_cookies();
    assert_eq!(removal.len(), 1);
    assert!(removal[0].starts_with("session=;"), "{}", removal[0]);
    assert!(removal[0].contains("Max-Age=0"), "{}", removal[0]);
    assert_eq!(browser.cookie, None);

    let mut replay = browser.clone();
    replay.cookie = ticket;
    assert!(!replay.is_logged_in().await);
    assert_eq!(replay.get("/api/me").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn api_me_and_api_notes() {
    let demo = demo().await;
    let mut browser = Browser::new(&demo, "test-agent");
    let anonymous = browser.get("/api/me").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.json(),
        serde_json::json!({"error": "not logged in"})
    );
    let anonymous = browser.post_json("/api/notes", r#"{"text":"x"}"#).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(anonymous.set_cookies().is_empty());

    browser.register("ana").await;
    let created = browser
        .post_json("/api/notes", r#"{"text":"from the API"}"#)
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(
        created.json(),
        serde_json::json!({"notes": ["from the API"]})
    );
    for bad in [
        r#"{"text":""}"#,
        r#"{"txt":"x"}"#,
        "not json",
        r#"{"text":5}"#,
    ] {
        let reply = browser.post_json("/api/notes", bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(reply.json()["error"].is_string(), "{bad}");
    }

    let me = browser.get("/api/me").await;
    assert_eq!(me.status, StatusCode::OK);
    assert!(
        me.header(&header::CONTENT_TYPE)
            .starts_with("application/json")
    );
    let me = me.json();
    assert_eq!(me["name"], "ana");
    assert_eq!(me["notes"], serde_json::json!(["from the API"]));
    let expires = me["expires_at_ms"].as_i64().unwrap();
    let now = cloakroom::Timestamp::now().as_millis();
    assert!(
        expires > now && expires <= now + 24 * 3600 * 1000 + 1000,
        "{expires}"
    );
    assert!(me["expires_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn sessions_page_lists_both_devices_and_revoke_others_ends_the_other() {
    let demo = demo().await;
    let mut laptop = Browser::new(&demo, "Laptop Browser");
    laptop.register("ana").await;
    let mut phone = Browser::new(&demo, "Phone Browser");
    phone.login("ana").await;

    let page = laptop.get("/sessions").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.handles().len(), 2, "{}", page.body);
    assert!(page.body.contains("Laptop Browser") && page.body.contains("Phone Browser"));
    assert_eq!(page.body.matches("this device").count(), 1);

    let reply = laptop.post("/sessions/revoke-others", "").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.location(), Some("/sessions"));
    let page = laptop.get("/sessions").await;
    assert!(
        page.body.contains("Signed out of 1 other session"),
        "{}",
        page.body
    );
    assert_eq!(page.handles().len(), 1);
    assert!(!page.body.contains("Phone Browser"));

    assert!(!phone.is_logged_in().await);
    assert!(laptop.is_logged_in().await);
}

#[tokio::test]
async fn revoking_one_session_of_ones_own() {
    let demo = demo().await;
    let mut laptop = Browser::new(&demo, "Laptop Browser");
    laptop.register("ana").await;
    let mut phone = Browser::new(&demo, "Phone Browser");
    phone.login("ana").await;
    let phone_handle = phone.get("/sessions").await.handles()[0].clone();

    let reply = laptop
        .post("/sessions/revoke", &format!("handle={phone_handle}"))
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert!(!phone.is_logged_in().await);
    assert!(laptop.is_logged_in().await);

    let junk = laptop.post("/sessions/revoke", "handle=../../etc").await;
    assert_eq!(junk.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn revoking_another_users_session_is_refused() {
    let demo = demo().await;
    let mut ana = Browser::new(&demo, "Ana's Browser");
    ana.register("ana").await;
    let mut bob = Browser::new(&demo, "Bob's Browser");
    bob.register("bob").await;
    let bob_handles = bob.get("/sessions").await.handles();
    assert_eq!(bob_handles.len(), 1);

    let reply = ana
        .post("/sessions/revoke", &format!("handle={}", bob_handles[0]))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(bob.is_logged_in().await, "ana revoked bob's session");
    // Ana's own listing never shows Bob's session.
    assert_eq!(ana.get("/sessions").await.handles().len(), 1);
}

#[tokio::test]
async fn health_and_metrics() {
    let demo = demo().await;
    let mut browser = Browser::new(&demo, "test-agent");
    let health = browser.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body, "ok");

    browser.register("ana").await;
    browser
        .post("/login", "name=ana&password=wrong-password")
        .await;
    browser.get("/no-such-page").await;
    let metrics = browser.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics
            .header(&header::CONTENT_TYPE)
            .starts_with("text/plain")
    );
    for line in [
        "cloakroom_demo_registrations_total 1\n",
        "cloakroom_demo_logins_total{result=\"failed\"} 1\n",
        "cloakroom_demo_logins_total{result=\"ok\"} 0\n",
        "cloakroom_demo_sessions_created_total 1\n",
        "cloakroom_demo_requests_total{class=\"form\"} 2\n",
        "cloakroom_demo_requests_total{class=\"not_found\"} 1\n",
        "cloakroom_demo_store_errors_total 0\n",
    ] {
        assert!(
            metrics.body.contains(line),
            "{line} missing from\n{}",
            metrics.body
        );
    }
}

#[tokio::test]
async fn pages_carry_security_headers() {
    let demo = demo().await;
    let reply = Browser::new(&demo, "test-agent").get("/login").await;
    assert_eq!(reply.header(&header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert!(
        reply
            .header(&header::CONTENT_SECURITY_POLICY)
            .contains("frame-ancestors 'none'")
    );
    assert!(reply.header(&header::CONTENT_TYPE).starts_with("text/html"));
}

#[tokio::test]
async fn key_file_is_created_once_beside_the_users_database_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let users = format!("sqlite://{}", dir.path().join("users.db").display());
    let key_file = dir.path().join("users.db.keys");
    let _first_app = app(DemoConfig::new("memory://", users.clone()))
        .await
        .unwrap();
    let first = std::fs::read_to_string(&key_file).unwrap();
    let _second_app = app(DemoConfig::new("memory://", users)).await.unwrap();
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), first);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn bad_configuration_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let users = format!("sqlite://{}", dir.path().join("users.db").display());
    let mut config = DemoConfig::new("memory://", users.clone());
    config.keys = Some("c2hvcnQ=".into());
    assert!(app(config).await.is_err(), "a 5-byte key was accepted");
    assert!(
        app(DemoConfig::new("nosuch://x", users.clone()))
            .await
            .is_err()
    );
    let mut config = DemoConfig::new("memory://", users);
    config.origin = "example.com".into();
    assert!(app(config).await.is_err());
}

#[tokio::test]
async fn forms_without_a_csrf_token_are_refused() {
    let demo = demo().await;
    let mut browser = Browser::new(&demo, "ua");
    // Login CSRF: the login and register forms are protected too.
    let reply = browser
        .post_raw("/login", &format!("name=x&password={PASSWORD}"))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.body.contains("token missing"), "{}", reply.body);
    let reply = browser
        .post_raw("/register", &format!("name=x&password={PASSWORD}"))
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    browser.register("carol").await;
    let reply = browser.post_raw("/notes", "text=sneaky").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = browser
        .post_raw("/notes", "text=sneaky&_xsrf=2%7C00%7C00%7C1")
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.body.contains("token malformed"), "{}", reply.body);
    let reply = browser.post_raw("/logout", "").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(browser.is_logged_in().await);
    let me = browser.get("/api/me").await.json();
    assert_eq!(me["notes"], serde_json::json!([]));
}

#[tokio::test]
async fn pages_carry_masked_tokens_that_change_per_render() {
    let demo = demo().await;
    let mut browser = Browser::new(&demo, "ua");
    browser.register("dave").await;
    let a = browser.get("/").await.body;
    let b = browser.get("/").await.body;
    let field = |html: &str| {
        let start = html.find("name=\"_xsrf\" value=\"").unwrap() + 20;
        html[start..start + html[start..].find('"').unwrap()].to_owned()
    };
    assert!(field(&a).starts_with("2|"));
    assert_ne!(field(&a), field(&b), "a fresh mask on every render");
    assert!(a.contains("<meta name=\"xsrf-token\" content=\"2|"));
}
