//! A real headless Chromium against the demo's single-page client (`/app`): it adds notes,
//! logs out and back in through `fetch` with only the `XSRF-TOKEN` cookie copied into the
//! `X-XSRF-TOKEN` header; a page on another site that posts to `/api/notes` (by `fetch`
//! and by a form) is refused.

use std::time::{Duration, Instant};

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use cloakroom_testkit::browser::Browser;
use cloakroom_testkit::process::{ServerProcess, free_port};

const WAIT: Duration = Duration::from_secs(20);

/// Serves the attacker's page on `http://localhost:PORT/` (another site than 127.0.0.1): it
/// posts a note with `fetch` (a simple request, so no preflight stops it on the way out),
/// then by auto-submitting a form.
async fn attacker_site(target: &str) -> (String, tokio::task::JoinHandle<()>) {
    let page = format!(
        "<!doctype html><title>Free stuff</title>\
         <form id=f method=post enctype=text/plain action=\"{target}/api/notes\">\
         <input name='{{\"text\":\"pwned by form\",\"x\":\"' value='\"}}'></form>\
         <script>\
         fetch('{target}/api/notes', {{method: 'POST', mode: 'no-cors', credentials: 'include',\
           headers: {{'Content-Type': 'text/plain'}}, body: '{{\"text\":\"pwned by fetch\"}}'}})\
           .catch(() => null)\
           .finally(() => document.getElementById('f').submit());\
         </script>"
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

/// The demo's log lines saying the CSRF check refused a cross-origin `/api/notes` request.
fn refusals(demo: &ServerProcess) -> usize {
    demo.log_text()
        .lines()
        .filter(|l| {
            l.contains("CSRF check refused request")
                && l.contains("cross-origin request")
                && l.contains("/api/notes")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_single_page_app_adds_notes_and_a_cross_site_page_is_refused() {
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

    // An account, through the server-rendered form.
    browser.goto(&format!("{base}/register")).await;
    browser.fill("input[name=name]", "hopper").await;
    browser
        .fill("input[name=password]", "cobol-1959-flowmatic")
        .await;
    browser.click("form button[type=submit]").await;
    browser.wait_for_text("Hello, hopper", WAIT).await;

    // The single-page app: no token in the page, only the XSRF-TOKEN cookie.
    browser.goto(&format!("{base}/app")).await;
    let page = browser.wait_for_text("Logged in as hopper.", WAIT).await;
    assert!(!page.contains("2|"), "the page itself carries no token");
    let cookie = browser.execute("return document.cookie;").await;
    assert!(
        cookie.as_str().unwrap().contains("XSRF-TOKEN=2|"),
        "{cookie}"
    );
    browser
        .fill("#app-text", "note from the single-page app")
        .await;
    browser.click("#app-form button[type=submit]").await;
    browser
        .wait_for_text(
            "<li class=\"app-note\">note from the single-page app</li>",
            WAIT,
        )
        .await;
    // It was saved on the server: a fresh load lists it.
    browser.goto(&format!("{base}/app")).await;
    browser
        .wait_for_text("note from the single-page app", WAIT)
        .await;

    // Log out and back in through fetch: each answer brings the cookie of the new secret,
    // and the next request uses it.
    browser.click("#app-logout").await;
    browser.wait_for_text("Not logged in.", WAIT).await;
    browser.fill("#app-name", "hopper").await;
    browser.fill("#app-password", "cobol-1959-flowmatic").await;
    browser.click("#app-login button[type=submit]").await;
    browser.wait_for_text("Logged in as hopper.", WAIT).await;
    browser.fill("#app-text", "after logging in again").await;
    browser.click("#app-form button[type=submit]").await;
    let page = browser
        .wait_for_text("<li class=\"app-note\">after logging in again</li>", WAIT)
        .await;
    assert!(!page.contains("Note not saved"), "{page}");

    // The attacker's page: its fetch and its form post reach the demo and are refused.
    let before = refusals(&demo);
    browser.goto(&evil).await;
    let refused = browser.wait_for_text("403", WAIT).await;
    assert!(refused.contains("cross-origin request"), "{refused}");
    assert!(
        browser
            .url()
            .await
            .starts_with(&format!("{base}/api/notes"))
    );
    let deadline = Instant::now() + WAIT;
    while refusals(&demo) < before + 2 {
        assert!(
            Instant::now() < deadline,
            "the demo did not log both refusals:\n{}",
            demo.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Our notes are there, the attacker's are not.
    browser.goto(&format!("{base}/app")).await;
    let page = browser.wait_for_text("after logging in again", WAIT).await;
    assert!(!page.contains("pwned"), "{page}");
    browser.quit().await;
}
