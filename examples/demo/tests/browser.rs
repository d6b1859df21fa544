//! A real headless Chromium against the demo: a page on another site that auto-submits a
//! form to the demo's `POST /notes` is refused (no note added); the demo's own form works,
//! through its script (JSON + `X-XSRFToken`) and as a plain form post.

use std::time::Duration;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use cloakroom_testkit::browser::Browser;
use cloakroom_testkit::process::{ServerProcess, free_port};

const WAIT: Duration = Duration::from_secs(20);

/// Serves the attacker's page on `http://localhost:PORT/` (another site than 127.0.0.1).
async fn attacker_site(target: &str) -> (String, tokio::task::JoinHandle<()>) {
    let page = format!(
        "<!doctype html><title>Win a prize</title>\
         <form id=f method=post action=\"{target}/notes\">\
         <input name=text value=\"pwned by attacker\"></form>\
         <script>document.getElementById('f').submit()</script>"
    );
    let app = Router::new().route("/", get(move || async move { Html(page) }));
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://localhost:{port}/"), task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_form_post_is_refused_and_own_forms_work() {
    let dir = tempfile::tempdir().unwrap();
    let users = format!("sqlite://{}", dir.path().join("users.db").display());
    let demo = ServerProcess::start(
        env!("CARGO_BIN_EXE_cloakroom-demo"),
        &["--store", "memory://", "--users", &users],
        dir.path(),
    )
    .await;
    let base = demo.base();
    let (evil, _server) = attacker_site(&base).await;
    let browser = Browser::start().await;

    // Register through the real form (it carries the hidden _xsrf field).
    browser.goto(&format!("{base}/register")).await;
    browser.fill("input[name=name]", "grace").await;
    browser.fill("input[name=password]", "compiler-1952").await;
    browser.click("form button[type=submit]").await;
    browser.wait_for_text("Hello, grace", WAIT).await;

    // The demo's own notes form: the script posts JSON with X-XSRFToken.
    browser.fill("#text", "note from my own page").await;
    browser.click("#note-form button[type=submit]").await;
    browser.wait_for_text("note from my own page", WAIT).await;
    browser.goto(&format!("{base}/")).await;
    browser.wait_for_text("note from my own page", WAIT).await;

    // Without the script, the plain form post (hidden _xsrf field) works too.
    browser
        .execute(
            "document.querySelector('script[src=\"/static/notes.js\"]').remove(); \
                  const f = document.getElementById('note-form'); \
                  f.elements.text.value = 'plain form note'; f.submit(); return true;",
        )
        .await;
    browser.wait_for_text("plain form note", WAIT).await;

    // The attacker's page auto-submits to the demo from another site.
    browser.goto(&evil).await;
    let refused = browser.wait_for_text("403", WAIT).await;
    assert!(refused.contains("cross-origin request"), "{refused}");
    assert!(browser.url().await.starts_with(&format!("{base}/notes")));

    // Back home: the attacker's note is not there, ours are.
    browser.goto(&format!("{base}/")).await;
    let home = browser.wait_for_text("Hello, grace", WAIT).await;
    assert!(!home.contains("pwned by attacker"), "{home}");
    assert!(home.contains("note from my own page") && home.contains("plain form note"));
    browser.quit().await;
}
