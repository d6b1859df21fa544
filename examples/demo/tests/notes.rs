//! The notes on the home page and the "your devices" page (issue 12, item 11), driven
//! through `app()` with `oneshot`: no sockets. Sessions in `memory://`, accounts in a
//! temporary SQLite file. The helpers are shared with `app.rs` (`common`).

use axum::http::StatusCode;

mod common;

use common::*;

/// Chrome 120 on Linux, as it introduces itself.
const CHROME_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

/// `text` percent-encoded for a form body.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Browser {
    /// Adds a note through the home page's form; the flash message the home page then shows.
    async fn add_note(&mut self, text: &str) -> Reply {
        let reply = self.post("/notes", &format!("text={}", encode(text))).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        assert_eq!(reply.location(), Some("/"));
        let home = self.get("/").await;
        assert_eq!(home.status, StatusCode::OK, "{}", home.body);
        home
    }

    /// The notes, as `/api/me` lists them.
    async fn notes(&mut self) -> Vec<String> {
        let me = self.get("/api/me").await;
        assert_eq!(me.status, StatusCode::OK, "{}", me.body);
        serde_json::from_value(me.json()["notes"].clone()).unwrap()
    }
}

const EMPTY: &str = "No notes yet";

/// The flash messages of a page (short enough for an assertion message).
fn flashes(body: &str) -> String {
    body.split(r#"<div class="flash"#)
        .skip(1)
        .map(|rest| rest[..rest.find("</div>").unwrap_or(rest.len())].to_owned())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Issue 12, item 11: "No notes yet" showed above the first note the notes script added (it
/// inserted a new list and left the message). The message is now the list's only item, which
/// the script replaces; with notes, the server never renders it.
#[tokio::test]
async fn the_empty_message_lives_in_the_list_and_goes_with_the_first_note() {
    let demo = demo().await;
    let mut browser = Browser::new(&demo, "test-agent");
    browser.register("nora").await;
    let home = browser.get("/").await;
    let list_at = home
        .body
        .find(r#"id="notes""#)
        .expect("the notes list is always there");
    let list_end = list_at + home.body[list_at..].find("</ul>").unwrap();
    let empty_at = home.body.find(EMPTY).expect("the empty message");
    assert!(
        list_at < empty_at && empty_at < list_end,
        "the empty message must be an item of #notes, which the script redraws:\n{}",
        home.body
    );
    // The script redraws exactly that list's items.
    let script = browser.get("/static/notes.js").await.body;
    assert!(script.contains(r#"getElementById("notes")"#), "{script}");
    assert!(script.contains("list.replaceChildren("), "{script}");

    let home = browser.add_note("first note").await;
    assert!(home.body.contains("first note"), "{}", home.body);
    assert!(!home.body.contains(EMPTY), "{}", home.body);
    assert!(
        home.body.contains(r#"action="/notes/clear""#),
        "{}",
        home.body
    );
}

/// Issue 12, item 11: one note can be deleted, or all of them, with the page's forms.
#[tokio::test]
async fn one_note_or_all_notes_can_be_deleted() {
    let demo = demo().await;
    let mut browser = Browser::new(&demo, "test-agent");
    browser.register("otto").await;
    for text in ["alpha", "bravo", "charlie"] {
        browser.add_note(text).await;
    }
    let home = browser.get("/").await;
    assert_eq!(
        home.body.matches(r#"action="/notes/delete""#).count(),
        3,
        "{}",
        home.body
    );

    let reply = browser.post("/notes/delete", "index=1").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert_eq!(reply.location(), Some("/"));
    assert_eq!(browser.notes().await, ["alpha", "charlie"]);
    let home = browser.get("/").await;
    assert!(home.body.contains("Note deleted"), "{}", home.body);

    // Out of range, or not a number: a 4xx with a reason; nothing deleted.
    let reply = browser.post("/notes/delete", "index=2").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.body);
    assert!(reply.body.contains("No such note"), "{}", reply.body);
    for bad in ["index=x", "index=-1", ""] {
        let reply = browser.post("/notes/delete", bad).await;
        assert!(reply.status.is_client_error(), "{bad}: {}", reply.status);
    }
    assert_eq!(browser.notes().await, ["alpha", "charlie"]);

    let reply = browser.post("/notes/clear", "").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    assert!(browser.notes().await.is_empty());
    let home = browser.get("/").await;
    assert!(home.body.contains("All notes deleted"), "{}", home.body);
    assert!(home.body.contains(EMPTY), "{}", home.body);
}

/// Issue 12, item 11: deleting and clearing are CSRF-protected like every form, and do
/// nothing for a visitor who is not logged in.
#[tokio::test]
async fn deleting_notes_needs_the_csrf_token_and_a_login() {
    let demo = demo().await;
    let mut browser = Browser::new(&demo, "test-agent");
    browser.register("pia").await;
    browser.add_note("keep me").await;
    for (uri, form) in [("/notes/delete", "index=0"), ("/notes/clear", "")] {
        let reply = browser.post_raw(uri, form).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{uri}: {}", reply.body);
        let forged = format!("{form}&_xsrf=2%7Cdeadbeef%7Cdeadbeef%7C1");
        let reply = browser.post_raw(uri, &forged).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{uri}: {}", reply.body);
    }
    assert_eq!(browser.notes().await, ["keep me"]);

    let mut stranger = Browser::new(&demo, "test-agent");
    for (uri, form) in [("/notes/delete", "index=0"), ("/notes/clear", "")] {
        let reply = stranger.post(uri, form).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{uri}: {}", reply.body);
        assert_eq!(reply.location(), Some("/login"));
        assert!(
            stranger.cookie.is_none(),
            "{uri}: no session for a stranger"
        );
    }
}

/// Issue 12, item 11: a session full of notes (64 KiB) answered 413 "session data too large"
/// to every new note, with no way out. Now: a clear message, and deleting makes room.
#[tokio::test]
async fn a_full_session_says_so_and_deleting_makes_room() {
    let demo = demo().await;
    let mut browser = Browser::new(&demo, "test-agent");
    browser.register("quinn").await;
    // 500 four-byte characters: 2000 bytes of JSON a note, so 64 KiB fill before 50 notes.
    let big = "\u{1d11e}".repeat(500);
    let mut saved = 0;
    let full = loop {
        assert!(saved < 50, "the session never filled up");
        let home = browser.add_note(&big).await;
        if !home.body.contains("Note saved") {
            break home;
        }
        saved += 1;
    };
    assert!(saved > 10, "{saved} notes");
    assert!(
        full.body.contains("Your notes are full; delete some"),
        "{}",
        full.body
    );
    assert_eq!(browser.notes().await.len(), saved);
    // The script's API says the same, as a 400 with a reason.
    let reply = browser
        .post_json(
            "/api/notes",
            &serde_json::json!({ "text": big }).to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.status);
    assert!(
        reply.json()["error"].as_str().unwrap().contains("full"),
        "{}",
        reply.body
    );
    // The page still renders, with its delete forms.
    let home = browser.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains(r#"action="/notes/clear""#));

    let reply = browser.post("/notes/delete", "index=0").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.status);
    assert_eq!(browser.notes().await.len(), saved - 1);
    let reply = browser.post("/notes/clear", "").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.status);
    let home = browser.add_note("room again").await;
    assert!(home.body.contains("Note saved"), "{}", flashes(&home.body));
    assert_eq!(browser.notes().await, ["room again"]);
}

/// Issue 12, item 11: "your devices" names the browser and system ("Chrome 120 on Linux"),
/// with the raw User-Agent on hover (a `title`, HTML-escaped).
#[tokio::test]
async fn the_sessions_page_names_devices_and_keeps_the_raw_agent_on_hover() {
    let demo = demo().await;
    let mut chrome = Browser::new(&demo, CHROME_LINUX);
    chrome.register("rosa").await;
    let mut odd = Browser::new(&demo, "\"><script>alert(1)</script>");
    odd.login("rosa").await;
    let page = chrome.get("/sessions").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains(">Chrome 120 on Linux"), "{}", page.body);
    assert!(
        page.body
            .contains(r#"title="Mozilla&#x2f;5.0 (X11; Linux x86_64) AppleWebKit&#x2f;537.36"#),
        "{}",
        page.body
    );
    // The raw agent is shown only on hover, not as the row's text.
    assert!(
        !page.body.contains(&format!(">{CHROME_LINUX}")),
        "{}",
        page.body
    );
    // A hostile agent stays inside its attribute.
    assert!(!page.body.contains("<script>alert(1)"), "{}", page.body);
    assert!(
        page.body
            .contains(r#"title="&quot;&gt;&lt;script&gt;alert(1)"#),
        "{}",
        page.body
    );
    assert!(page.body.contains("Unknown browser"), "{}", page.body);
}

/// Issue 12, item 11 in a real headless Chromium against the demo binary: the first note,
/// added through the notes script (JSON API), used to appear below a "No notes yet" that
/// stayed on the page. Now the message goes, and the scripted note's delete button and
/// "Delete all notes" (plain form posts) work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_the_first_scripted_note_replaces_the_empty_message() {
    use cloakroom_testkit::browser::Browser as Chromium;
    use cloakroom_testkit::process::ServerProcess;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(20);
    let dir = tempfile::tempdir().unwrap();
    let users = format!("sqlite://{}", dir.path().join("users.db").display());
    let demo = ServerProcess::start(
        env!("CARGO_BIN_EXE_cloakroom-demo"),
        &["--store", "memory://", "--users", &users],
        dir.path(),
    )
    .await;
    let base = demo.base();
    let browser = Chromium::start().await;
    // What the user sees: the page's rendered text (hidden elements left out).
    let seen = || async {
        let text = browser.execute("return document.body.innerText;").await;
        text.as_str().unwrap_or_default().to_owned()
    };

    browser.goto(&format!("{base}/register")).await;
    browser.fill("input[name=name]", "sam").await;
    browser.fill("input[name=password]", "compiler-1952").await;
    browser.click("form button[type=submit]").await;
    browser.wait_for_text("Hello, sam", WAIT).await;
    assert!(seen().await.contains(EMPTY));
    assert!(!seen().await.contains("Delete all notes"));

    // Through the script: the page is not reloaded.
    browser.fill("#text", "scripted note").await;
    browser.click("#note-form button[type=submit]").await;
    browser.wait_for_text("scripted note", WAIT).await;
    let text = seen().await;
    assert!(!text.contains(EMPTY), "{text}");
    assert!(text.contains("Delete all notes"), "{text}");

    // The scripted note's delete form posts with the page's token.
    browser.click("#notes .note-delete button").await;
    browser.wait_for_text("Note deleted", WAIT).await;
    let text = seen().await;
    assert!(
        text.contains(EMPTY) && !text.contains("scripted note"),
        "{text}"
    );

    // "Delete all notes".
    browser.fill("#text", "one").await;
    browser.click("#note-form button[type=submit]").await;
    browser
        .wait_for_text("<span class=\"note-text\">one</span>", WAIT)
        .await;
    browser.click("#notes-clear button").await;
    browser.wait_for_text("All notes deleted", WAIT).await;
    assert!(seen().await.contains(EMPTY));
    browser.quit().await;
}
