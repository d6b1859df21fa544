//! The demo and a Tornado + pycket app (`tests/interop/app.py`) sharing one Redis, one
//! cookie jar and one `cookie_secret`, as two apps on one host would: logins, session data,
//! notifications and `_xsrf` tokens cross between them, and concurrent writes from both
//! sides lose nothing.
//!
//! Needs `redis-server` and the venv made by `scripts/test.sh` (Python with Tornado, pycket
//! and redis-py; found through `CLOAKROOM_PYTHON` or at `<workspace>/.venv/bin/python`).
//! Missing, the tests fail saying so.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cloakroom::csrf::{Secret, decode_token};
use cloakroom_testkit::process::ServerProcess;
use cloakroom_testkit::redis_server::RedisServer;
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::{Value, json};

/// The Tornado app's `cookie_secret`, given to the demo as `--tornado-secret`.
const SECRET: &str = "interop-cookie-secret-of-the-tornado-app";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("CLOAKROOM_PYTHON") {
        return p.into();
    }
    let venv = workspace().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with Tornado and pycket: run scripts/test.sh (it makes .venv) or set \
         CLOAKROOM_PYTHON"
    );
    venv
}

/// `tests/interop/app.py`, killed on drop (and exiting by itself if this process dies).
struct Tornado {
    child: Child,
    base: String,
}

impl Tornado {
    fn start(redis_port: u16, log_dir: &Path) -> Tornado {
        let log_path = log_dir.join("tornado.log");
        let log = std::fs::File::create(&log_path).expect("tornado log file");
        let mut child = Command::new(python())
            .arg(workspace().join("tests/interop/app.py"))
            .args(["--redis-port", &redis_port.to_string()])
            .args(["--db-sessions", "5", "--db-notifications", "11"])
            .args(["--cookie-secret", SECRET])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python().display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(30));
        let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let Some(base) = line
            .as_deref()
            .ok()
            .and_then(|l| l.strip_prefix("listening on "))
            .map(str::to_owned)
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the Tornado app did not start (is the venv complete? run scripts/test.sh): \
                 {line:?}\n{}",
                log_text()
            );
        };
        Tornado { child, base }
    }
}

impl Drop for Tornado {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Redis, the demo on pycket's format (sessions in db 5, notifications in db 11) and the
/// Tornado app on the same databases.
struct Stack {
    demo: ServerProcess,
    tornado: Tornado,
    _redis: RedisServer,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start() -> Stack {
        let redis = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let store = format!(
            "pycket+redis://127.0.0.1:{}/5?notifications_db=11",
            redis.port()
        );
        let users = format!("sqlite://{}", dir.path().join("users.db").display());
        let demo = ServerProcess::start(
            env!("CARGO_BIN_EXE_cloakroom-demo"),
            &[
                "--store",
                &store,
                "--tornado-secret",
                SECRET,
                "--users",
                &users,
            ],
            dir.path(),
        )
        .await;
        let tornado = tokio::task::block_in_place(|| Tornado::start(redis.port(), dir.path()));
        Stack {
            demo,
            tornado,
            _redis: redis,
            _dir: dir,
        }
    }

    fn demo(&self, path: &str) -> String {
        format!("{}{path}", self.demo.base())
    }

    fn tornado(&self, path: &str) -> String {
        format!("{}{path}", self.tornado.base)
    }

    /// A fresh masked token from Tornado (`self.xsrf_token`); sets `_xsrf` if missing.
    async fn tornado_token(&self, client: &reqwest::Client) -> String {
        let v: Value = get_json(client, &self.tornado("/xsrf")).await;
        v["token"].as_str().expect("a token").to_owned()
    }

    /// A fresh masked token from the demo; sets `_xsrf` if missing.
    async fn demo_token(&self, client: &reqwest::Client) -> String {
        let v: Value = get_json(client, &self.demo("/api/csrf")).await;
        v["token"].as_str().expect("a token").to_owned()
    }

    /// A form POST to Tornado with its own token.
    async fn tornado_post(&self, client: &reqwest::Client, path: &str, fields: &[(&str, &str)]) {
        let token = self.tornado_token(client).await;
        let status = post_form(client, &self.tornado(path), fields, Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "Tornado POST {path}");
    }

    /// A form POST to the demo with its own token; returns the status.
    async fn demo_post(
        &self,
        client: &reqwest::Client,
        path: &str,
        fields: &[(&str, &str)],
    ) -> StatusCode {
        let token = self.demo_token(client).await;
        post_form(client, &self.demo(path), fields, Some(&token)).await
    }

    /// Registers (and so logs in) `name` on the demo.
    async fn demo_register(&self, client: &reqwest::Client, name: &str) {
        let status = self
            .demo_post(
                client,
                "/register",
                &[("name", name), ("password", "analytical-engine")],
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "demo registration of {name}");
    }
}

/// One browser: a cookie jar shared by both apps (cookies ignore ports), no redirects.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let res = client.get(url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "GET {url}");
    res.json().await.unwrap()
}

async fn get_text(client: &reqwest::Client, url: &str) -> String {
    let res = client.get(url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK, "GET {url}");
    res.text().await.unwrap()
}

async fn post_form(
    client: &reqwest::Client,
    url: &str,
    fields: &[(&str, &str)],
    token: Option<&str>,
) -> StatusCode {
    let mut fields = fields.to_vec();
    if let Some(token) = token {
        fields.push(("_xsrf", token));
    }
    client
        .post(url)
        .form(&fields)
        .send()
        .await
        .unwrap()
        .status()
}

/// The v1 form (hex of the unmasked secret) of a v2 token.
fn v1(token: &str) -> String {
    decode_token(token).expect("a valid token").to_hex()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_cross_between_tornado_and_the_demo() {
    let stack = Stack::start().await;

    // Log in through Tornado: `self.session.set('ID', name)`.
    let browser_a = browser();
    stack
        .tornado_post(&browser_a, "/login", &[("name", "bob")])
        .await;
    let home = get_text(&browser_a, &stack.demo("/")).await;
    assert!(
        home.contains("Hello, bob"),
        "the demo must greet bob:\n{home}"
    );
    let me = get_json(&browser_a, &stack.demo("/api/me")).await;
    assert_eq!(me["name"], "bob");
    let who = get_json(&browser_a, &stack.tornado("/whoami")).await;
    assert_eq!(who["id"], "bob", "{who}");

    // Log in through the demo: Tornado's `self.session.get('ID')` is the name.
    let browser_b = browser();
    stack.demo_register(&browser_b, "ada").await;
    let who = get_json(&browser_b, &stack.tornado("/whoami")).await;
    assert_eq!(who["id"], "ada", "{who}");
    assert!(
        who["keys"]
            .as_array()
            .unwrap()
            .contains(&json!("__cr.meta")),
        "Tornado sees the metadata key: {who}"
    );
    // Logging out in the demo ends the session for Tornado too (shared cookie and record).
    let status = stack.demo_post(&browser_b, "/logout", &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let who = get_json(&browser_b, &stack.tornado("/whoami")).await;
    assert_eq!(who["id"], Value::Null, "{who}");

    // A Tornado-made session that logs in on the demo becomes the demo's login (new id).
    let status = stack
        .demo_post(
            &browser_a,
            "/login",
            &[("name", "ada"), ("password", "analytical-engine")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let who = get_json(&browser_a, &stack.tornado("/whoami")).await;
    assert_eq!(who["id"], "ada", "{who}");
    let home = get_text(&browser_a, &stack.demo("/")).await;
    assert!(home.contains("Hello, ada"), "{home}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_read_once_on_the_other_side() {
    let stack = Stack::start().await;
    let browser = browser();
    stack
        .tornado_post(&browser, "/login", &[("name", "bob")])
        .await;

    // Tornado -> demo: `self.notifications.set('info', ...)` shows once as a flash message.
    stack
        .tornado_post(
            &browser,
            "/notify",
            &[("level", "info"), ("text", "Hello from Tornado")],
        )
        .await;
    let home = get_text(&browser, &stack.demo("/")).await;
    assert!(home.contains("Hello from Tornado"), "{home}");
    let home = get_text(&browser, &stack.demo("/")).await;
    assert!(!home.contains("Hello from Tornado"), "shown twice:\n{home}");
    let note = get_json(&browser, &stack.tornado("/notification/info")).await;
    assert_eq!(note["text"], Value::Null, "the demo took it");

    // Demo -> Tornado: a flash message is `self.notifications.get('success')`, once.
    let status = stack
        .demo_post(&browser, "/notes", &[("text", "first note")])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let note = get_json(&browser, &stack.tornado("/notification/success")).await;
    assert_eq!(note["text"], "Note saved");
    let note = get_json(&browser, &stack.tornado("/notification/success")).await;
    assert_eq!(note["text"], Value::Null, "read twice");
    // And the note itself is in the session Tornado reads.
    let session = get_json(&browser, &stack.tornado("/session")).await;
    assert_eq!(session["notes"], json!(["first note"]), "{session}");
    assert_eq!(session["ID"], "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xsrf_tokens_are_accepted_across_both_apps() {
    let stack = Stack::start().await;
    // A wrong password with a good token is a 401; any token failure is a 403.
    let bad_login = [("name", "nobody"), ("password", "not-the-password")];

    for tornado_first in [true, false] {
        let browser = browser();
        // Whichever app the browser meets first sets the shared `_xsrf` cookie.
        let (tornado_token, demo_token) = if tornado_first {
            let t = stack.tornado_token(&browser).await;
            (t, stack.demo_token(&browser).await)
        } else {
            let d = stack.demo_token(&browser).await;
            (stack.tornado_token(&browser).await, d)
        };
        assert_eq!(
            decode_token(&tornado_token).unwrap(),
            decode_token(&demo_token).unwrap(),
            "one secret, the cookie's"
        );
        let wrong = Secret::generate().mask();
        let case = if tornado_first {
            "Tornado set _xsrf"
        } else {
            "the demo set _xsrf"
        };

        // Tornado's tokens (v2 and v1) at the demo.
        for token in [tornado_token.clone(), v1(&tornado_token)] {
            let status = post_form(&browser, &stack.demo("/login"), &bad_login, Some(&token)).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{case}: demo, token {token}"
            );
        }
        let res = browser
            .post(stack.demo("/api/notes"))
            .header("X-XSRFToken", &tornado_token)
            .json(&json!({"text": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "{case}: header token"
        );
        for token in [None, Some(wrong.as_str()), Some("2|bad")] {
            let status = post_form(&browser, &stack.demo("/login"), &bad_login, token).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{case}: demo, token {token:?}"
            );
        }

        // The demo's tokens (v2 and v1) at Tornado.
        for token in [demo_token.clone(), v1(&demo_token)] {
            let status = post_form(&browser, &stack.tornado("/echo"), &[], Some(&token)).await;
            assert_eq!(status, StatusCode::OK, "{case}: Tornado, token {token}");
        }
        for token in [None, Some(wrong.as_str())] {
            let status = post_form(&browser, &stack.tornado("/echo"), &[], token).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{case}: Tornado, token {token:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_from_both_sides_lose_nothing() {
    const NOTES: usize = 20;
    const STREAMS: usize = 4;
    const SETS: usize = 8;
    let stack = Stack::start().await;
    let browser = browser();
    stack.demo_register(&browser, "ada").await;
    let demo_token = stack.demo_token(&browser).await;
    let tornado_token = stack.tornado_token(&browser).await;

    // The demo appends notes one after the other (one field, read-modify-write through the
    // session), while Tornado sets other keys from several concurrent streams.
    let demo_side = async {
        for i in 0..NOTES {
            let res = browser
                .post(stack.demo("/api/notes"))
                .header("X-XSRFToken", &demo_token)
                .json(&json!({ "text": format!("note {i}") }))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::CREATED, "note {i}");
        }
    };
    let tornado_side = futures_join_all((0..STREAMS).map(|s| {
        let browser = &browser;
        let stack = &stack;
        let token = &tornado_token;
        async move {
            for i in 0..SETS {
                let key = format!("t{s}_{i}");
                let fields = [("key", key.as_str()), ("value", "v")];
                let status = post_form(browser, &stack.tornado("/set"), &fields, Some(token)).await;
                assert_eq!(status, StatusCode::OK, "Tornado set {key}");
            }
        }
    }));
    tokio::join!(demo_side, tornado_side);

    let me = get_json(&browser, &stack.demo("/api/me")).await;
    let expected: Vec<String> = (0..NOTES).map(|i| format!("note {i}")).collect();
    assert_eq!(me["notes"], json!(expected), "the demo's notes");
    let session = get_json(&browser, &stack.tornado("/session")).await;
    let mut lost = Vec::new();
    for s in 0..STREAMS {
        for i in 0..SETS {
            if session[format!("t{s}_{i}")] != "v" {
                lost.push(format!("t{s}_{i}"));
            }
        }
    }
    assert!(
        lost.is_empty(),
        "Tornado's writes lost: {lost:?}\n{session}"
    );
    assert_eq!(session["notes"], json!(expected));
    assert_eq!(session["ID"], "ada");
}

/// Runs futures concurrently, in this task.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

#[test]
fn pycket_store_without_tornado_secret_is_a_startup_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_cloakroom-demo"))
        .args(["--addr", "127.0.0.1:0"])
        .args([
            "--store",
            "pycket+redis://127.0.0.1:1/5?notifications_db=11",
        ])
        .args(["--users", "sqlite::memory:"])
        .env_remove("CLOAKROOM_TORNADO_SECRET")
        .env_remove("CLOAKROOM_KEYS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the demo started without a secret");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--tornado-secret"), "{stderr}");
}
