//! A real headless Chromium against both demos (axum, then actix-web), one browser: a page
//! on another site that auto-submits a form to the demo's `POST /notes` is refused (no note
//! added); the demo's own forms work, through its script (JSON + `X-XSRFToken`) and as a
//! plain form post; and the live devices page says at once that its session was signed out
//! from another device.

mod common;

use std::time::Duration;

use cloakroom_testkit::browser::Browser;
use cloakroom_testkit::process::free_port;
use common::{Demo, client, post};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const WAIT: Duration = Duration::from_secs(20);

/// Milliseconds since the Unix epoch (the clock the browser's `Date.now()` reads too).
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    i64::try_from(since.expect("a clock after 1970").as_millis()).expect("in range")
}

/// Serves the attacker's page on `http://localhost:PORT/` (another site than 127.0.0.1): a
/// form to `{target}/notes` that submits itself.
async fn attacker_site(target: &str) -> (String, tokio::task::JoinHandle<()>) {
    let page = format!(
        "<!doctype html><title>Win a prize</title>\
         <form id=f method=post action=\"{target}/notes\">\
         <input name=text value=\"pwned by attacker\"></form>\
         <script>document.getElementById('f').submit()</script>"
    );
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{page}",
        page.len()
    );
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            // Read the request head, answer the page whatever was asked, close.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    (format!("http://localhost:{port}/"), task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_form_post_is_refused_and_own_forms_work() {
    let dir = tempfile::tempdir().unwrap();
    let browser = Browser::start().await;
    for (demo, name) in [(Demo::Axum, "grace"), (Demo::Actix, "alan")] {
        let users = format!(
            "sqlite://{}",
            dir.path().join(format!("{name}.db")).display()
        );
        let server = demo
            .start(&["--store", "memory://", "--users", &users], dir.path())
            .await;
        let base = server.base();
        let (evil, _site) = attacker_site(&base).await;

        // Register through the real form (it carries the hidden _xsrf field).
        browser.goto(&format!("{base}/register")).await;
        browser.fill("input[name=name]", name).await;
        browser.fill("input[name=password]", "compiler-1952").await;
        browser.click("form button[type=submit]").await;
        browser.wait_for_text(&format!("Hello, {name}"), WAIT).await;

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
        assert!(
            refused.contains("cross-origin request"),
            "{demo:?}: {refused}"
        );
        assert!(browser.url().await.starts_with(&format!("{base}/notes")));

        // Back home: the attacker's note is not there, ours are.
        browser.goto(&format!("{base}/")).await;
        let home = browser.wait_for_text(&format!("Hello, {name}"), WAIT).await;
        assert!(!home.contains("pwned by attacker"), "{demo:?}: {home}");
        assert!(
            home.contains("note from my own page") && home.contains("plain form note"),
            "{demo:?}: {home}"
        );

        // The live devices page: signed out from another device, it says so within 1 s.
        browser.goto(&format!("{base}/sessions")).await;
        browser.wait_for_text("Live: this page", WAIT).await;
        let phone = client();
        let res = post(
            &phone,
            &base,
            "/login",
            &[("name", name), ("password", "compiler-1952")],
        )
        .await;
        assert_eq!(res.status(), reqwest::StatusCode::SEE_OTHER, "{demo:?}");
        let page = phone
            .get(format!("{base}/sessions"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let handles: Vec<&str> = page
            .split("data-handle=\"")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').unwrap()])
            .collect();
        assert_eq!(handles.len(), 2, "{demo:?}: {page}");
        let res = post(&phone, &base, "/sessions/revoke", &[("handle", handles[1])]).await;
        assert_eq!(res.status(), reqwest::StatusCode::SEE_OTHER, "{demo:?}");
        let revoked_at = now_ms();
        browser
            .wait_for_text("signed out from another device", WAIT)
            .await;
        let shown_at = browser
            .execute("return Number(document.getElementById('live-status').dataset.endedAt);")
            .await
            .as_i64()
            .expect("the page recorded when the end arrived");
        let took = shown_at - revoked_at;
        assert!(took < 1_000, "{demo:?}: the page took {took} ms");
    }
    browser.quit().await;
}
