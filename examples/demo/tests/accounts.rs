//! Accounts under attack, driven in-process through `app()` with `oneshot`: guessing is
//! throttled per account and per client address (the peer address injected as the server
//! does, with `ConnectInfo`), anonymous visitors never get a session stored, login refuses
//! over-long passwords before hashing, look-alike names count as taken, and the users
//! database is private.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use cloakroom_demo::{DemoConfig, app};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

const PASSWORD: &str = "correct-horse-battery";
/// The `Host` of the default origin (http://127.0.0.1:8000), as a browser sends it.
const DEFAULT_HOST: &str = "127.0.0.1:8000";

struct Demo {
    app: Router,
    dir: tempfile::TempDir,
}

impl Demo {
    /// Sessions in `store` (`None`: a SQLite file in the directory), accounts in
    /// `dir/users.db`.
    async fn start(store: Option<&str>) -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let sessions = format!("sqlite://{}", dir.path().join("sessions.db").display());
        let users = format!("sqlite://{}", dir.path().join("users.db").display());
        let config = DemoConfig::new(store.unwrap_or(&sessions), users);
        Demo {
            app: app(config).await.unwrap(),
            dir,
        }
    }

    /// Session records in the SQLite session store.
    fn stored_sessions(&self) -> i64 {
        let conn = rusqlite::Connection::open(self.dir.path().join("sessions.db")).unwrap();
        conn.query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
            .unwrap()
    }

    async fn metric(&self, line_start: &str) -> u64 {
        let text = Browser::new(self, "127.0.0.1:1").get("/metrics").await.body;
        let line = text
            .lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    /// A `Set-Cookie` that gives the browser a session (not one that removes it).
    fn sets_a_session(&self) -> bool {
        self.set_cookies().iter().any(|c| {
            c.strip_prefix("session=")
                .is_some_and(|rest| !rest.starts_with(';') && !rest.is_empty())
        })
    }
}

/// A browser at one client address, with its cookies.
struct Browser {
    app: Router,
    peer: SocketAddr,
    cookie: Option<String>,
    xsrf: Option<String>,
}

impl Browser {
    fn new(demo: &Demo, peer: &str) -> Self {
        Browser {
            app: demo.app.clone(),
            peer: peer.parse().unwrap(),
            cookie: None,
            xsrf: None,
        }
    }

    async fn send(&mut self, method: Method, uri: &str, body: Option<(&str, String)>) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, DEFAULT_HOST)
            .header(header::USER_AGENT, "accounts-test");
        let jar: Vec<&str> = [&self.cookie, &self.xsrf]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if !jar.is_empty() {
            req = req.header(header::COOKIE, jar.join("; "));
        }
        let mut req = match body {
            Some((content_type, body)) => req
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(body)),
            None => req.body(Body::empty()),
        }
        .unwrap();
        // What the server does for every connection.
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let res = self.app.clone().oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let reply = Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        for set in reply.set_cookies() {
            let pair = set.split(';').next().unwrap();
            if let Some(value) = pair.strip_prefix("session=") {
                self.cookie = (!value.is_empty()).then(|| pair.to_owned());
            }
            if let Some(value) = pair.strip_prefix("_xsrf=") {
                self.xsrf = (!value.is_empty()).then(|| pair.to_owned());
            }
        }
        reply
    }

    async fn get(&mut self, uri: &str) -> Reply {
        self.send(Method::GET, uri, None).await
    }

    async fn token(&mut self) -> String {
        let reply = self.get("/api/csrf").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let v: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        v["token"].as_str().unwrap().to_owned()
    }

    /// Posts a form with a valid CSRF token.
    async fn post(&mut self, uri: &str, form: &str) -> Reply {
        let token = self.token().await.replace('|', "%7C");
        let body = format!("{form}&_xsrf={token}");
        let body = ("application/x-www-form-urlencoded", body);
        self.send(Method::POST, uri, Some(body)).await
    }

    /// Posts JSON with a valid `X-XSRFToken` (as the notes script does).
    async fn post_json(&mut self, uri: &str, json: &str) -> Reply {
        let token = self.token().await;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::HOST, DEFAULT_HOST)
            .header(header::CONTENT_TYPE, "application/json")
            .header("X-XSRFToken", token);
        let jar: Vec<&str> = [&self.cookie, &self.xsrf]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        req = req.header(header::COOKIE, jar.join("; "));
        let mut req = req.body(Body::from(json.to_owned())).unwrap();
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let res = self.app.clone().oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn login(&mut self, name: &str, password: &str) -> Reply {
        self.post("/login", &format!("name={name}&password={password}"))
            .await
    }

    async fn register(&mut self, name: &str) -> Reply {
        self.post("/register", &format!("name={name}&password={PASSWORD}"))
            .await
    }
}

#[tokio::test]
async fn guessing_is_throttled_per_account_and_other_accounts_are_unaffected() {
    let demo = Demo::start(Some("memory://")).await;
    for name in ["victim", "bob"] {
        let reply = Browser::new(&demo, "192.0.2.1:1000").register(name).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    }
    // Successful logins spend no budget: many in a row are all fine.
    let mut owner = Browser::new(&demo, "192.0.2.1:1001");
    for _ in 0..8 {
        let reply = owner.login("victim", PASSWORD).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    }

    // The guesser: 5 wrong passwords are answered 401, then 429 before any hashing.
    let mut guesser = Browser::new(&demo, "198.51.100.7:4000");
    let mut statuses = Vec::new();
    for i in 0..8 {
        let reply = guesser.login("victim", &format!("guess-{i}-xx")).await;
        statuses.push(reply.status.as_u16());
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = reply.headers[header::RETRY_AFTER]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=12).contains(&retry), "Retry-After {retry}");
            assert!(
                reply.body.contains("Too many failed logins"),
                "{}",
                reply.body
            );
            assert!(!reply.sets_a_session());
        }
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    // Look-alikes and case variants of the name share its budget.
    for name in ["Victim", "v%D1%96ctim"] {
        let reply = guesser.login(name, "another-guess").await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{name}");
    }
    // Throttled attempts were not hashed: only the 5 failures were checked.
    assert_eq!(
        demo.metric("cloakroom_demo_logins_total{result=\"failed\"}")
            .await,
        5
    );
    assert_eq!(
        demo.metric("cloakroom_demo_logins_throttled_total").await,
        5
    );

    // Another account, even from the guesser's address, logs in; its owner too.
    let reply = Browser::new(&demo, "198.51.100.7:4001")
        .login("bob", PASSWORD)
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let reply = Browser::new(&demo, "192.0.2.9:1")
        .login("bob", PASSWORD)
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
}

#[tokio::test]
async fn guessing_is_throttled_per_client_address() {
    let demo = Demo::start(Some("memory://")).await;
    let reply = Browser::new(&demo, "192.0.2.1:1000").register("ana").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    // One address spraying many names: each name is fresh, the address is not.
    let mut sprayer = Browser::new(&demo, "203.0.113.5:5000");
    let mut first_429 = None;
    for i in 0..40 {
        let reply = sprayer.login(&format!("user{i}"), "guess-password").await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            first_429 = Some(i);
            break;
        }
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let first = first_429.expect("40 failures from one address, never throttled");
    assert!(
        (10..=35).contains(&first),
        "throttled after {first} failures"
    );
    // The account the sprayer never tried logs in from elsewhere.
    let reply = Browser::new(&demo, "192.0.2.2:1")
        .login("ana", PASSWORD)
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn anonymous_requests_never_store_a_session() {
    let demo = Demo::start(None).await;
    let mut visitor = Browser::new(&demo, "192.0.2.1:1000");
    let handle = "A".repeat(22);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(("POST /notes", visitor.post("/notes", "text=hello").await));
    }
    seen.push((
        "POST /notes (bad form)",
        visitor.post("/notes", "x=1").await,
    ));
    for page in [
        "/",
        "/login",
        "/login?hint=notes",
        "/register",
        "/sessions",
        "/api/me",
        "/healthz",
        "/metrics",
        "/static/notes.js",
        "/no-such-page",
    ] {
        seen.push((page, visitor.get(page).await));
    }
    let posts = [
        ("/sessions/revoke", format!("handle={handle}")),
        ("/sessions/revoke", "handle=not-a-handle".to_owned()),
        ("/sessions/revoke-others", "x=1".to_owned()),
        ("/notes/delete", "index=0".to_owned()),
        ("/notes/clear", "x=1".to_owned()),
        ("/logout", "x=1".to_owned()),
        ("/login", "name=nobody&password=wrong-password".to_owned()),
        ("/login", "name=nobody".to_owned()),
        ("/register", "name=&password=short".to_owned()),
    ];
    for (path, form) in posts {
        seen.push((path, visitor.post(path, &form).await));
    }
    seen.push((
        "POST /api/notes",
        visitor.post_json("/api/notes", r#"{"text":"hi"}"#).await,
    ));
    for (what, reply) in &seen {
        assert!(
            !reply.sets_a_session(),
            "{what} gave an anonymous visitor a session: {:?}",
            reply.set_cookies()
        );
        assert!(reply.status.as_u16() < 500, "{what}: {}", reply.status);
    }
    assert_eq!(
        demo.stored_sessions(),
        0,
        "sessions stored for anonymous requests"
    );
    // The notes form sends the visitor to log in, saying why, without a flash message.
    let notes = visitor.post("/notes", "text=hello").await;
    assert_eq!(notes.headers[header::LOCATION], "/login?hint=notes");
    let login = visitor.get("/login?hint=notes").await;
    assert!(
        login.body.contains("Log in to keep notes."),
        "{}",
        login.body
    );
    assert_eq!(demo.stored_sessions(), 0);

    // The count is real: registering stores one.
    let reply = visitor.register("ana").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(demo.stored_sessions(), 1);
}

#[tokio::test]
async fn login_refuses_over_long_passwords_without_hashing() {
    let demo = Demo::start(Some("memory://")).await;
    let mut browser = Browser::new(&demo, "192.0.2.1:1000");
    assert_eq!(browser.register("ana").await.status, StatusCode::SEE_OTHER);
    // 1 MB (the CSRF layer reads form bodies up to 1 MiB), and just over the limit.
    for len in [1_000_000, 1025] {
        let reply = browser.login("ana", &"x".repeat(len)).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{len}");
        assert!(reply.body.contains("at most 1024"), "{}", reply.body);
    }
    // Neither was checked (hashed) nor spent the throttle budget.
    assert_eq!(
        demo.metric("cloakroom_demo_logins_total{result=\"failed\"}")
            .await,
        0
    );
    assert_eq!(
        demo.metric("cloakroom_demo_logins_throttled_total").await,
        0
    );
    let reply = browser.login("ana", PASSWORD).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn look_alike_names_are_taken_and_invisible_characters_refused() {
    let demo = Demo::start(Some("memory://")).await;
    let mut browser = Browser::new(&demo, "192.0.2.1:1000");
    assert_eq!(
        browser.register("victim").await.status,
        StatusCode::SEE_OTHER
    );
    // Cyrillic і (U+0456), a case variant, fullwidth letters.
    for name in ["v%D1%96ctim", "Victim", "%EF%BD%96ictim"] {
        let reply = Browser::new(&demo, "192.0.2.1:1001").register(name).await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{name}: {}", reply.body);
    }
    // Zero-width space, right-to-left override, an isolate.
    for name in ["victim%E2%80%8B", "%E2%80%AEmitciv", "vic%E2%81%A6tim"] {
        let reply = Browser::new(&demo, "192.0.2.1:1002").register(name).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name}: {}",
            reply.body
        );
    }
    // Ordinary names of other scripts are fine.
    for name in ["Zo%C3%AB", "%C5%81ukasz", "%E6%97%A5%E6%9C%AC"] {
        let reply = Browser::new(&demo, "192.0.2.1:1003").register(name).await;
        assert_eq!(
            reply.status,
            StatusCode::SEE_OTHER,
            "{name}: {}",
            reply.body
        );
    }
    // A case variant logs in to the account, under the account's own name.
    let mut other = Browser::new(&demo, "192.0.2.1:1004");
    assert_eq!(
        other.login("VICTIM", PASSWORD).await.status,
        StatusCode::SEE_OTHER
    );
    let home = other.get("/").await;
    assert!(home.body.contains("Hello, victim"), "{}", home.body);
}

#[cfg(unix)]
#[tokio::test]
async fn the_users_database_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;

    let demo = Demo::start(Some("memory://")).await;
    let db = demo.dir.path().join("users.db");
    let mut files = 0;
    for suffix in ["", "-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            files += 1;
        }
    }
    assert!(files >= 1);

    // An existing database readable by others is made private.
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.db");
    std::fs::write(&old, b"").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = DemoConfig::new("memory://", format!("sqlite://{}", old.display()));
    let _app = app(config).await.unwrap();
    assert_eq!(mode(&old), 0o600);
}

/// Over real HTTP against the demo binary: the server hands the peer address to the login
/// handler, guessing gets 429 + `Retry-After`, and the log names the account and client.
#[tokio::test]
async fn guessing_over_http_is_throttled_and_logged_with_the_account() {
    use cloakroom_testkit::process::ServerProcess;
    let dir = tempfile::tempdir().unwrap();
    let users = format!("sqlite://{}", dir.path().join("users.db").display());
    let bin = env!("CARGO_BIN_EXE_cloakroom-demo");
    let demo = ServerProcess::start(
        bin,
        &["--store", "memory://", "--users", &users],
        dir.path(),
    )
    .await;
    let base = demo.base();
    // A browser with its own cookies and a CSRF token.
    let browser = async || {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let v: serde_json::Value = client
            .get(format!("{base}/api/csrf"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (client, v["token"].as_str().unwrap().to_owned())
    };
    let post = |(client, token): &(reqwest::Client, String), path: &str, password: &str| {
        let form = [("name", "victim"), ("password", password), ("_xsrf", token)];
        client.post(format!("{base}{path}")).form(&form).send()
    };
    let owner = browser().await;
    let reply = post(&owner, "/register", PASSWORD).await.unwrap();
    assert_eq!(reply.status(), 303);
    let guesser = browser().await;
    let mut statuses = Vec::new();
    for i in 0..7 {
        let reply = post(&guesser, "/login", &format!("wrong-guess-{i}"))
            .await
            .unwrap();
        statuses.push(reply.status().as_u16());
        if reply.status() == 429 {
            let retry = reply.headers()["retry-after"].to_str().unwrap().to_owned();
            assert!(
                retry.parse::<u64>().is_ok_and(|s| (1..=12).contains(&s)),
                "{retry}"
            );
        }
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429]);
    let log = demo.log_text();
    for needle in [
        "failed login user=\"victim\" client=127.0.0.1",
        "login throttled user=\"victim\" client=127.0.0.1",
    ] {
        assert!(log.contains(needle), "no {needle:?} in the log:\n{log}");
    }
}

/// The demo with `--max-sessions-per-user 3` and `policy`, sessions in memory.
async fn limited(policy: cloakroom_demo_app::SessionLimitPolicy) -> Demo {
    let dir = tempfile::tempdir().unwrap();
    let users = format!("sqlite://{}", dir.path().join("users.db").display());
    let mut config = DemoConfig::new("memory://", users);
    config.max_sessions_per_user = Some(3);
    config.session_limit_policy = policy;
    Demo {
        app: app(config).await.unwrap(),
        dir,
    }
}

#[tokio::test]
async fn a_fourth_login_ends_the_oldest_browser_which_is_told_why() {
    let demo = limited(Default::default()).await;
    let mut browsers: Vec<Browser> = (1..=4)
        .map(|i| Browser::new(&demo, &format!("192.0.2.{i}:1000")))
        .collect();
    assert_eq!(
        browsers[0].register("ana").await.status,
        StatusCode::SEE_OTHER
    );
    for b in &mut browsers[1..] {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(b.login("ana", PASSWORD).await.status, StatusCode::SEE_OTHER);
    }
    // The first browser's session was ended: sent to the login page, which says why.
    let home = browsers[0].get("/").await;
    assert_eq!(home.status, StatusCode::SEE_OTHER);
    let page = browsers[0].get("/login").await;
    assert!(
        page.body.contains("signed in on too many devices"),
        "{}",
        page.body
    );
    // Once.
    assert!(
        !browsers[0]
            .get("/login")
            .await
            .body
            .contains("too many devices")
    );
    // The other three are still logged in.
    for b in &mut browsers[1..] {
        assert!(b.get("/").await.body.contains("ana"));
    }
}

#[tokio::test]
async fn a_refusing_limit_explains_itself_on_the_login_page() {
    let demo = limited(cloakroom_demo_app::SessionLimitPolicy::Refuse).await;
    let mut first = Browser::new(&demo, "192.0.2.1:1000");
    assert_eq!(first.register("ana").await.status, StatusCode::SEE_OTHER);
    for i in 2..=3 {
        let mut b = Browser::new(&demo, &format!("192.0.2.{i}:1000"));
        assert_eq!(b.login("ana", PASSWORD).await.status, StatusCode::SEE_OTHER);
    }
    let mut fourth = Browser::new(&demo, "192.0.2.4:1000");
    let refused = fourth.login("ana", PASSWORD).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(
        refused.body.contains("too many devices"),
        "{}",
        refused.body
    );
    assert!(first.get("/").await.body.contains("ana"), "the first stays");
}
