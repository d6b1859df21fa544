//! The demo binary over real HTTP on loopback: sessions and keys survive a hard restart.

use std::path::Path;
use std::time::Duration;

use cloakroom_testkit::process::ServerProcess;

use reqwest::StatusCode;
use reqwest::redirect::Policy;

/// Starts the demo with sessions and accounts in `dir/x.db`, waits until it serves, and
/// checks its readiness line.
async fn start(dir: &Path, _client: &reqwest::Client) -> ServerProcess {
    let db = format!("sqlite://{}", dir.join("x.db").display());
    let server = ServerProcess::start(
        env!("CARGO_BIN_EXE_cloakroom-demo"),
        &["--store", &db, "--users", &db],
        dir,
    )
    .await;
    let line = server
        .next_line(Duration::from_secs(5))
        .expect("no output line");
    assert_eq!(line, format!("listening on {}", server.base()));
    server
}

/// A fresh CSRF token from the server at `url`'s origin (the client keeps the cookies).
async fn token(client: &reqwest::Client, url: &str) -> String {
    let origin: String = url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    let v: serde_json::Value = client
        .get(format!("{origin}/api/csrf"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// Posts a form the way the demo's pages do: with the `_xsrf` field.
async fn form(client: &reqwest::Client, url: String, fields: &[(&str, &str)]) -> reqwest::Response {
    let token = token(client, &url).await;
    let mut fields = fields.to_vec();
    fields.push(("_xsrf", &token));
    client.post(url).form(&fields).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_keys_survive_a_hard_restart() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .user_agent("e2e-test")
        .build()
        .unwrap();

    let server = start(dir.path(), &client).await;
    let url = |path: &str| format!("{}{path}", server.base());
    let reply = form(
        &client,
        url("/register"),
        &[
            ("name", "ada"),
            ("password", "analytical-engine"),
            ("remember", "on"),
        ],
    )
    .await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    let cookie = reply.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("session=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "http:// origin, yet {cookie}");

    let reply = form(&client, url("/notes"), &[("text", "first note")]).await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    let reply = client
        .post(url("/api/notes"))
        .header("X-XSRFToken", token(&client, &url("/")).await)
        .json(&serde_json::json!({ "text": "second note" }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::CREATED);
    let home = client
        .get(url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        home.contains("Hello, ada") && home.contains("first note"),
        "{home}"
    );

    // Hard kill: nothing gets a chance to flush or clean up.
    drop(server);
    let key_file = dir.path().join("x.db.keys");
    assert!(key_file.exists(), "no key file beside the database");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let server = start(dir.path(), &client).await;
    let url = |path: &str| format!("{}{path}", server.base());
    let me = client.get(url("/api/me")).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::OK, "logged out by the restart");
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(me["name"], "ada");
    assert_eq!(
        me["notes"],
        serde_json::json!(["first note", "second note"])
    );
    let home = client.get(url("/")).send().await.unwrap();
    assert_eq!(home.status(), StatusCode::OK);
    assert!(home.text().await.unwrap().contains("Hello, ada"));

    // The account survived too: a fresh browser can log in.
    let other = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .build()
        .unwrap();
    let login = form(
        &other,
        url("/login"),
        &[("name", "ada"), ("password", "analytical-engine")],
    )
    .await;
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let sessions = client
        .get(url("/sessions"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(sessions.matches("data-handle=").count(), 2, "{sessions}");

    let reply = form(&client, url("/logout"), &[]).await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    assert_eq!(reply.headers()["location"], "/login");
    let me = client.get(url("/api/me")).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    let health = client.get(url("/healthz")).send().await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut server = start(dir.path(), &client).await;
    let exited = server.terminate(Duration::from_secs(20));
    assert_eq!(
        exited,
        Some(true),
        "SIGTERM must stop the demo with exit code 0"
    );
}
