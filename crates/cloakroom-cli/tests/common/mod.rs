//! Scenarios for the `cloakroom` binary that work on any store URL: each fills the store
//! through the library (`cloakroom::store::open` + `SessionStore::create`), runs the built
//! binary against the same URL, and checks its output against the store.
//!
//! Every scenario wants a store of its own, empty: a fresh SQLite file, or (for Redis) a
//! URL with a fresh `?prefix=`. A store test file declares `mod common;` and calls them:
//! `common::list_json_matches_the_store(&url).await`.

// Each test file uses some of the scenarios.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use cloakroom::session::SessionId;
use cloakroom::store::{Created, Record, SessionStore};
use cloakroom::{SessionKey, Timestamp};
use serde_json::Value;

/// A session the fixture created.
#[derive(Debug, Clone)]
pub(crate) struct Made {
    pub(crate) key: SessionKey,
    pub(crate) record: Record,
}

impl Made {
    pub(crate) fn handle(&self) -> String {
        self.key.to_handle()
    }

    pub(crate) fn user(&self) -> Option<&str> {
        self.record.meta.user.as_deref()
    }

    /// The CSRF secret kept in the session (a random marker that must never be printed).
    pub(crate) fn csrf_secret(&self) -> String {
        let json = &self.record.data["__cr.csrf"];
        serde_json::from_str::<String>(json).expect("the csrf field is a JSON string")
    }
}

/// A store filled with the sessions of [`fill`].
pub(crate) struct Filled {
    pub(crate) url: String,
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) sessions: Vec<Made>,
}

impl Filled {
    pub(crate) fn of<'a>(&'a self, user: &'a str) -> impl Iterator<Item = &'a Made> + 'a {
        self.sessions.iter().filter(move |m| m.user() == Some(user))
    }

    /// Every CSRF secret of the fixture.
    pub(crate) fn secrets(&self) -> Vec<String> {
        self.sessions.iter().map(Made::csrf_secret).collect()
    }
}

pub(crate) const ALICE: &str = "alice";
pub(crate) const BOB: &str = "bob";
const HOUR: Duration = Duration::from_secs(3600);

/// Opens the store at `url` through the facade, as an application would.
pub(crate) async fn open(url: &str) -> Arc<dyn SessionStore> {
    cloakroom::store::open(url)
        .await
        .unwrap_or_else(|e| panic!("opening the test store: {e}"))
}

/// Creates one session.
pub(crate) async fn create(store: &dyn SessionStore, record: Record) -> Made {
    let key = SessionId::generate().key();
    assert_eq!(
        store.create(&key, &record).await.expect("create"),
        Created::Done
    );
    Made { key, record }
}

/// A record the way the library writes one: JSON text per field, the CSRF secret under
/// `__cr.csrf`, a flash message, some app data.
pub(crate) fn record(
    user: Option<&str>,
    agent: Option<&str>,
    age: Duration,
    expires_in: Duration,
) -> Record {
    let now = Timestamp::now();
    let created = Timestamp::from_millis(now.as_millis() - age.as_millis() as i64);
    let mut record = Record::new(created, now.plus(expires_in));
    record.meta.last_seen = Timestamp::from_millis(now.as_millis() - (age.as_millis() / 2) as i64);
    record.meta.user = user.map(str::to_owned);
    record.meta.user_agent = agent.map(str::to_owned);
    let secret = format!("csrf-secret-{}", SessionId::generate().key().to_handle());
    let data = &mut record.data;
    data.insert("__cr.csrf".into(), serde_json::to_string(&secret).unwrap());
    data.insert(
        "__cr.flash".into(),
        r#"[{"level":"success","text":"Welcome back"}]"#.into(),
    );
    data.insert("notes".into(), r#"["buy milk","call \"mum\""]"#.into());
    data.insert("theme".into(), r#""dark""#.into());
    if let Some(user) = user {
        data.insert("name".into(), serde_json::to_string(user).unwrap());
        // The login's record of the authentication, as `Session::login` writes it.
        let auth = serde_json::json!({ "at": created.as_millis(), "method": "password" });
        data.insert("__cr.auth".into(), auth.to_string());
    }
    record
}

/// Fills an empty store: three sessions of alice (one "remember me", one expiring within
/// the hour), two of bob, two anonymous (one expiring within the hour, one without a user
/// agent).
pub(crate) async fn fill(url: &str) -> Filled {
    let store = open(url).await;
    let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:141.0) Gecko/20100101 Firefox/141.0";
    let safari = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.5 Mobile/15E148 Safari/604.1";
    let curl = "curl/8.14.1";
    let mut specs = vec![
        (Some(ALICE), Some(firefox), 3 * HOUR, 24 * HOUR, false),
        (Some(ALICE), Some(safari), 26 * HOUR, 30 * 24 * HOUR, true),
        (Some(ALICE), Some(curl), HOUR / 4, HOUR / 2, false),
        (Some(BOB), Some(firefox), 5 * HOUR, 2 * HOUR, false),
        (Some(BOB), Some(safari), 2 * HOUR, 10 * HOUR, false),
        (None, Some(curl), HOUR / 60, HOUR / 3, false),
        (None, None, HOUR / 2, 2 * HOUR, false),
    ];
    let mut sessions = Vec::new();
    for (user, agent, age, expires_in, remember) in specs.drain(..) {
        let mut record = record(user, agent, age, expires_in);
        record.meta.remember = remember;
        // The remembered session is device-bound (DBSC registered: its device's key).
        if remember {
            let jwk = r#"{"kty":"EC","crv":"P-256","x":"x","y":"y"}"#;
            record.data.insert("__cr.dbsc".into(), jwk.into());
        }
        sessions.push(create(&*store, record).await);
    }
    Filled {
        url: url.to_owned(),
        store,
        sessions,
    }
}

/// Runs the built `cloakroom` binary with `--store url` (when given) and `args`, with no
/// `CLOAKROOM_STORE` or `RUST_LOG` from the environment.
pub(crate) fn cloakroom(url: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cloakroom"));
    command.env_remove("CLOAKROOM_STORE").env_remove("RUST_LOG");
    if let Some(url) = url {
        command.args(["--store", url]);
    }
    command.args(args).output().expect("running cloakroom")
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("UTF-8 errors")
}

/// Asserts success with nothing on stderr (no progress line when piped), returns stdout.
pub(crate) fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "cloakroom failed ({}): {}",
        output.status,
        stderr(output)
    );
    assert_eq!(stderr(output), "", "stderr should be empty when piped");
    stdout(output)
}

/// Asserts exit code 1 with exactly one line `cloakroom: ...` on stderr; returns that line.
pub(crate) fn fails(output: &Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected exit code 1; stdout {:?}, stderr {:?}",
        stdout(output),
        stderr(output)
    );
    let err = stderr(output);
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    assert!(err.ends_with('\n'), "{err:?}");
    assert!(err.starts_with("cloakroom: "), "{err:?}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err:?}"
    );
    err.trim_end().to_owned()
}

pub(crate) fn json(output: &Output) -> Value {
    serde_json::from_str(&ok(output)).expect("valid JSON on stdout")
}

fn assert_no_secrets(filled: &Filled, text: &str) {
    for secret in filled.secrets() {
        assert!(
            !text.contains(&secret),
            "a CSRF secret was printed:\n{text}"
        );
    }
}

fn handles(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .expect("an array")
        .iter()
        .map(|s| s["handle"].as_str().expect("handle").to_owned())
        .collect()
}

fn expected_handles<'a>(sessions: impl IntoIterator<Item = &'a Made>) -> BTreeSet<String> {
    sessions.into_iter().map(Made::handle).collect()
}

/// Checks one entry of `sessions list --json` against the session it describes.
fn check_entry(entry: &Value, made: &Made) {
    let meta = &made.record.meta;
    assert_eq!(entry["handle"], made.handle());
    assert_eq!(entry["user"].as_str(), made.user());
    assert_eq!(entry["user_agent"].as_str(), meta.user_agent.as_deref());
    assert_eq!(entry["remember"], meta.remember);
    assert_eq!(
        entry["device_bound"],
        made.record.data.contains_key("__cr.dbsc")
    );
    assert_eq!(entry["fields"], made.record.data.len());
    assert_eq!(entry["data_bytes"], made.record.data_bytes());
    // The last authentication (a login's) of a user's session; none for anonymous ones.
    let auth = &entry["last_authentication"];
    if made.user().is_some() {
        assert_eq!(auth["method"], "password", "{entry}");
        assert_eq!(auth["at_ms"], meta.created_at.as_millis(), "{entry}");
        assert_eq!(auth["at"], meta.created_at.to_string(), "{entry}");
    } else {
        assert!(auth.is_null(), "{entry}");
    }
    for (name, ts) in [
        ("created_at", meta.created_at),
        ("last_seen", meta.last_seen),
        ("expires_at", meta.expires_at),
    ] {
        assert_eq!(entry[name], ts.to_string(), "{name}");
        assert_eq!(entry[format!("{name}_ms")], ts.as_millis(), "{name}_ms");
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios

/// `sessions list --json`: every session, each with the right handle, user, times, sizes;
/// most recently seen first.
pub(crate) async fn list_json_matches_the_store(url: &str) {
    let filled = fill(url).await;
    let list = json(&cloakroom(Some(url), &["sessions", "list", "--json"]));
    let entries = list.as_array().expect("an array");
    assert_eq!(entries.len(), filled.sessions.len());
    assert_eq!(handles(&list), expected_handles(&filled.sessions));
    for made in &filled.sessions {
        let entry = entries
            .iter()
            .find(|e| e["handle"] == made.handle())
            .expect("listed");
        check_entry(entry, made);
        // The user's live sessions, to compare with an app's limit.
        let of_user = filled
            .sessions
            .iter()
            .filter(|m| m.user().is_some() && m.user() == made.user());
        let expected = made.user().map(|_| of_user.count());
        assert_eq!(entry["user_sessions"].as_u64(), expected.map(|n| n as u64));
    }
    let seen: Vec<i64> = entries
        .iter()
        .map(|e| e["last_seen_ms"].as_i64().unwrap())
        .collect();
    assert!(
        seen.windows(2).all(|w| w[0] >= w[1]),
        "most recent first: {seen:?}"
    );
    assert_no_secrets(&filled, &list.to_string());

    let limited = json(&cloakroom(
        Some(url),
        &["sessions", "list", "--json", "--limit", "3"],
    ));
    assert_eq!(limited.as_array().unwrap().len(), 3);
}

/// `sessions list --user U --json`: only U's sessions.
pub(crate) async fn list_of_a_user_has_only_theirs(url: &str) {
    let filled = fill(url).await;
    for user in [ALICE, BOB] {
        let list = json(&cloakroom(
            Some(url),
            &["sessions", "list", "--user", user, "--json"],
        ));
        assert_eq!(handles(&list), expected_handles(filled.of(user)), "{user}");
        assert!(list.as_array().unwrap().iter().all(|e| e["user"] == user));
    }
    let nobody = json(&cloakroom(
        Some(url),
        &["sessions", "list", "--user", "nobody", "--json"],
    ));
    assert_eq!(nobody, Value::Array(Vec::new()));
}

/// `sessions list` as a table: a header, one line per session with its full handle and
/// user, a count at the end, no secrets.
pub(crate) async fn list_prints_a_table(url: &str) {
    let filled = fill(url).await;
    let text = ok(&cloakroom(Some(url), &["sessions", "list"]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("HANDLE"), "{text}");
    for column in [
        "USER",
        "CREATED",
        "LAST SEEN",
        "EXPIRES",
        "FIELDS",
        "BYTES",
        "BOUND",
        "USER AGENT",
    ] {
        assert!(lines[0].contains(column), "{column} in {}", lines[0]);
    }
    assert_eq!(lines.len(), filled.sessions.len() + 2, "{text}");
    assert_eq!(
        *lines.last().unwrap(),
        format!("{} sessions", filled.sessions.len())
    );
    for made in &filled.sessions {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&made.handle()))
            .unwrap_or_else(|| panic!("{} listed in\n{text}", made.handle()));
        assert!(line.contains(made.user().unwrap_or("-")), "{line}");
        assert!(
            line.contains(&format!("  {}  ", made.record.data_bytes())),
            "{line}"
        );
    }
    // The expiry column says how far away it is.
    assert!(text.contains("(in "), "{text}");
    // Columns line up: every row's USER column starts where the header's does.
    let user_col = lines[0].find("USER").unwrap();
    assert!(
        lines[1..lines.len() - 1]
            .iter()
            .all(|l| l.as_bytes()[user_col - 1] == b' ')
    );
    assert_no_secrets(&filled, &text);

    let text = ok(&cloakroom(Some(url), &["sessions", "list", "--user", BOB]));
    assert!(text.ends_with("2 sessions of user bob\n"), "{text}");
}

/// `sessions show HANDLE --json`: every value decoded to the JSON that was stored, the
/// library's fields apart, the CSRF secret replaced by "REDACTED" (also in text mode).
pub(crate) async fn show_decodes_the_data_and_hides_the_csrf_secret(url: &str) {
    let filled = fill(url).await;
    let made = &filled.sessions[0];
    let shown = json(&cloakroom(
        Some(url),
        &["sessions", "show", &made.handle(), "--json"],
    ));
    check_entry(&shown, made);
    let data = shown["data"].as_object().expect("data");
    let internal = shown["internal"].as_object().expect("internal");
    assert_eq!(data.len() + internal.len(), made.record.data.len());
    for (name, text) in &made.record.data {
        let stored: Value = serde_json::from_str(text).unwrap();
        if name == "__cr.csrf" {
            assert_eq!(internal[name], "REDACTED");
        } else if name.starts_with("__cr.") {
            assert_eq!(internal[name], stored, "{name}");
        } else {
            assert_eq!(data[name], stored, "{name}");
        }
    }
    assert_no_secrets(&filled, &shown.to_string());

    let text = ok(&cloakroom(Some(url), &["sessions", "show", &made.handle()]));
    assert_no_secrets(&filled, &text);
    assert!(text.contains("__cr.csrf = REDACTED"), "{text}");
    assert!(text.contains(&made.handle()), "{text}");
    assert!(text.contains("theme = \"dark\""), "{text}");
    assert!(text.contains("\"call \\\"mum\\\"\""), "{text}");
    let data_at = text.find("\ndata:\n").expect("a data heading");
    let internal_at = text.find("\ninternal:\n").expect("an internal heading");
    assert!(data_at < internal_at);
    assert!(text[internal_at..].contains("__cr.flash = ["), "{text}");
    assert!(!text[data_at..internal_at].contains("__cr."), "{text}");
}

/// `sessions show` of a handle the store does not have: exit 1, "no such session".
pub(crate) async fn show_of_an_unknown_handle_fails(url: &str) {
    fill(url).await;
    let unknown = SessionId::generate().key().to_handle();
    let err = fails(&cloakroom(Some(url), &["sessions", "show", &unknown]));
    assert!(err.contains("no such session"), "{err}");
    let err = fails(&cloakroom(
        Some(url),
        &["sessions", "show", &unknown, "--json"],
    ));
    assert!(err.contains("no such session"), "{err}");
}

/// `sessions revoke HANDLE` deletes the record; a second revoke fails with exit 1.
pub(crate) async fn revoke_deletes_one_session(url: &str) {
    let filled = fill(url).await;
    let (gone, kept) = (&filled.sessions[0], &filled.sessions[1]);
    let text = ok(&cloakroom(
        Some(url),
        &["sessions", "revoke", &gone.handle()],
    ));
    assert!(text.contains(&gone.handle()), "{text}");
    assert!(filled.store.load(&gone.key).await.unwrap().is_none());
    assert!(filled.store.load(&kept.key).await.unwrap().is_some());
    let err = fails(&cloakroom(
        Some(url),
        &["sessions", "revoke", &gone.handle()],
    ));
    assert!(err.contains("no such session"), "{err}");
}

/// Handles are base64url, so one in 64 starts with `-` (one in 4096 with `--`): `show` and
/// `revoke` take them as handles, not as options (a CI run found `revoke -U...` refused).
pub(crate) async fn handles_starting_with_a_hyphen_work(url: &str) {
    let store = open(url).await;
    for prefix in ["-", "--"] {
        let key = std::iter::repeat_with(|| SessionId::generate().key())
            .find(|k| k.to_handle().starts_with(prefix))
            .expect("an endless supply of keys");
        let record = record(
            Some("hy"),
            None,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        );
        assert_eq!(store.create(&key, &record).await.unwrap(), Created::Done);
        let handle = key.to_handle();
        let shown = json(&cloakroom(
            Some(url),
            &["sessions", "show", &handle, "--json"],
        ));
        assert_eq!(shown["handle"], handle.as_str(), "{shown}");
        let text = ok(&cloakroom(Some(url), &["sessions", "revoke", &handle]));
        assert!(text.contains(&handle), "{text}");
        assert!(
            store.load(&key).await.unwrap().is_none(),
            "{prefix}: revoked"
        );
    }
}

/// `sessions revoke --user U` deletes all of U's sessions, prints the count, leaves others.
pub(crate) async fn revoke_of_a_user_deletes_all_theirs(url: &str) {
    let filled = fill(url).await;
    let text = ok(&cloakroom(
        Some(url),
        &["sessions", "revoke", "--user", ALICE],
    ));
    assert_eq!(text, "revoked 3 sessions of user alice\n");
    for made in &filled.sessions {
        let exists = filled.store.load(&made.key).await.unwrap().is_some();
        assert_eq!(exists, made.user() != Some(ALICE), "{:?}", made.user());
    }
    let text = ok(&cloakroom(
        Some(url),
        &["sessions", "revoke", "--user", BOB, "--all"],
    ));
    assert_eq!(text, "revoked 2 sessions of user bob\n");
    let text = ok(&cloakroom(
        Some(url),
        &["sessions", "revoke", "--user", BOB],
    ));
    assert_eq!(text, "revoked 0 sessions of user bob\n");
    assert_eq!(filled.store.sessions_of(BOB).await.unwrap(), Vec::new());
    let text = ok(&cloakroom(Some(url), &["sessions", "list", "--user", BOB]));
    assert_eq!(text, "no sessions of user bob\n");
}

/// Text a client controls (user agent; user names and values an app stores) cannot send
/// escape sequences to the admin's terminal.
pub(crate) async fn terminal_control_characters_are_escaped(url: &str) {
    let store = open(url).await;
    let mut record = record(
        Some("eve\x1b]0;pwned\x07"),
        Some("\x1b[2Jevil\u{9b}31m"),
        HOUR,
        HOUR,
    );
    record.data.insert("bell".into(), "\"\u{7}\u{9b}\"".into());
    record.data.insert("esc\x1b[1m".into(), "1".into());
    let made = create(&*store, record).await;
    for args in [
        &["sessions", "list"][..],
        &["sessions", "show", &made.handle()][..],
        &["stats"][..],
    ] {
        let text = ok(&cloakroom(Some(url), args));
        assert!(
            !text.contains(['\x1b', '\x07', '\u{9b}']),
            "{args:?}: {text:?}"
        );
        assert!(text.contains("eve\\u{1b}]0;pwned"), "{args:?}: {text}");
    }
    // JSON keeps the exact text, escaped the JSON way.
    let list = json(&cloakroom(Some(url), &["sessions", "list", "--json"]));
    assert_eq!(list[0]["user"], "eve\x1b]0;pwned\x07");
}

/// Issue 12, item 9: bidi overrides (U+202E), zero-width characters (U+200B), C1 controls
/// (U+0085) and escape sequences in user names, user agents and session data never reach
/// stdout raw, in text or in `--json`; the JSON still parses back to the stored strings.
pub(crate) async fn bidi_and_invisible_characters_are_escaped(url: &str) {
    const RAW: [char; 5] = ['\u{202e}', '\u{200b}', '\u{85}', '\x1b', '\u{9b}'];
    let user = "vic\u{202e}mit\u{200b}\u{85}\x1b[31m";
    let agent = "Mozilla/5.0 \u{202e}xunil\u{200b} \u{85}\u{9b}\x1b[31mChrome";
    let value = "a\u{200b}b\u{202e}c\u{85}d";
    let store = open(url).await;
    let mut record = record(Some(user), Some(agent), HOUR, HOUR);
    record
        .data
        .insert("note\u{202e}".into(), serde_json::to_string(value).unwrap());
    let made = create(&*store, record).await;
    let handle = made.handle();
    for args in [
        &["sessions", "list"][..],
        &["sessions", "list", "--json"][..],
        &["sessions", "list", "--user", user][..],
        &["sessions", "list", "--user", user, "--json"][..],
        &["sessions", "show", &handle][..],
        &["sessions", "show", &handle, "--json"][..],
        &["stats"][..],
        &["stats", "--json"][..],
    ] {
        let text = ok(&cloakroom(Some(url), args));
        assert!(!text.contains(RAW), "{args:?}: {text:?}");
        if args.contains(&"--json") {
            assert!(text.contains("\\u202e"), "{args:?}: {text}");
        } else {
            assert!(
                text.contains("vic\\u{202e}mit\\u{200b}"),
                "{args:?}: {text}"
            );
        }
    }
    // The JSON is exact: it parses back to the stored strings.
    let list = json(&cloakroom(Some(url), &["sessions", "list", "--json"]));
    assert_eq!(list[0]["user"], user);
    assert_eq!(list[0]["user_agent"], agent);
    let shown = json(&cloakroom(
        Some(url),
        &["sessions", "show", &handle, "--json"],
    ));
    assert_eq!(shown["user"], user);
    assert_eq!(shown["data"]["note\u{202e}"], value);
    let stats = json(&cloakroom(Some(url), &["stats", "--json"]));
    assert_eq!(stats["by_user"][0]["user"], user);
    // The text shows where the characters were.
    let text = ok(&cloakroom(Some(url), &["sessions", "show", &handle]));
    assert!(
        text.contains("\\u{202e}xunil\\u{200b} \\u{85}\\u{9b}\\u{1b}[31mChrome"),
        "{text}"
    );
    assert!(
        text.contains("note\\u{202e} = \"a\\u{200b}b\\u{202e}c\\u{85}d\""),
        "{text}"
    );
}

/// `stats --json` (and text) agree with the store.
pub(crate) async fn stats_match_the_store(url: &str) {
    let filled = fill(url).await;
    let stats = json(&cloakroom(Some(url), &["stats", "--json"]));
    let all = &filled.sessions;
    let total_bytes: usize = all.iter().map(|m| m.record.data_bytes()).sum();
    let soon = Timestamp::now().plus(HOUR);
    assert_eq!(stats["count"], all.len());
    assert_eq!(
        stats["anonymous"],
        all.iter().filter(|m| m.user().is_none()).count()
    );
    assert_eq!(
        stats["logged_in"],
        all.iter().filter(|m| m.user().is_some()).count()
    );
    assert_eq!(stats["users"], 2);
    assert_eq!(
        stats["by_user"],
        serde_json::json!([{ "user": ALICE, "count": 3 }, { "user": BOB, "count": 2 }])
    );
    let expiring = all
        .iter()
        .filter(|m| m.record.meta.expires_at <= soon)
        .count();
    assert_eq!(
        expiring, 2,
        "the fixture has two sessions expiring within the hour"
    );
    assert_eq!(stats["expiring_within_hour"], expiring);
    assert_eq!(stats["data_bytes"], total_bytes);
    let average = stats["average_data_bytes"].as_f64().unwrap();
    assert!(
        (average - total_bytes as f64 / all.len() as f64).abs() < 1e-9,
        "{average}"
    );

    let text = ok(&cloakroom(Some(url), &["stats"]));
    let line = |label: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("{label} in\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("sessions"), format!("sessions {}", all.len()));
    assert_eq!(line("anonymous"), "anonymous 2");
    assert_eq!(line("logged in"), "logged in 5 (2 users)");
    assert_eq!(line("expiring within 1h"), "expiring within 1h 2");
    assert!(line("data bytes").starts_with(&format!("data bytes {total_bytes} (")));
    assert_eq!(line("alice"), "alice 3");
    assert_eq!(line("bob"), "bob 2");
}

/// `gc` on a store that purges (SQLite): a session that has expired is removed and counted;
/// live ones stay. (Stores that expire by themselves: [`gc_explains_engine_expiry`].)
pub(crate) async fn gc_removes_expired_sessions(url: &str) {
    let filled = fill(url).await;
    let short = create(
        &*filled.store,
        record(Some(BOB), None, Duration::ZERO, Duration::from_millis(300)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = ok(&cloakroom(Some(url), &["gc"]));
    assert_eq!(text, "removed 1 expired session\n");
    assert!(filled.store.load(&short.key).await.unwrap().is_none());
    let text = ok(&cloakroom(Some(url), &["gc"]));
    assert_eq!(text, "removed 0 expired sessions\n");
    let stats = json(&cloakroom(Some(url), &["stats", "--json"]));
    assert_eq!(stats["count"], filled.sessions.len());
}

/// `gc` on a store whose engine expires records (Redis): nothing to purge, and it says why;
/// the expired session is gone all the same.
pub(crate) async fn gc_explains_engine_expiry(url: &str) {
    let filled = fill(url).await;
    let short = create(
        &*filled.store,
        record(Some(BOB), None, Duration::ZERO, Duration::from_millis(300)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = ok(&cloakroom(Some(url), &["gc"]));
    assert!(
        text.starts_with("removed 0 expired sessions: this store expires sessions by itself"),
        "{text}"
    );
    assert!(filled.store.load(&short.key).await.unwrap().is_none());
    let stats = json(&cloakroom(Some(url), &["stats", "--json"]));
    assert_eq!(stats["count"], filled.sessions.len());
}

/// `gc` on Redis with an event log: the expired logged-in session is logged as expired,
/// once, and `gc` says so; a second `gc` finds nothing more.
pub(crate) async fn gc_logs_noticed_expiry(url: &str) {
    let url = with_events(url);
    let store = open(&url).await;
    let short = create(
        &*store,
        record(Some(BOB), None, Duration::ZERO, Duration::from_millis(300)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = ok(&cloakroom(Some(&url), &["gc"]));
    assert!(text.starts_with("logged 1 expired session: "), "{text}");
    let text = ok(&cloakroom(Some(&url), &["gc"]));
    assert!(text.starts_with("logged 0 expired sessions: "), "{text}");
    let lines: Vec<Value> = ok(&cloakroom(Some(&url), &["events", "--json"]))
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let expired: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "expired").collect();
    assert_eq!(expired.len(), 1, "{lines:?}");
    assert_eq!(expired[0]["session"], short.handle().as_str());
    assert_eq!(expired[0]["user"], BOB);
}

/// `CLOAKROOM_STORE` stands in for `--store`.
pub(crate) async fn the_store_can_come_from_the_environment(url: &str) {
    let filled = fill(url).await;
    let output = Command::new(env!("CARGO_BIN_EXE_cloakroom"))
        .env("CLOAKROOM_STORE", url)
        .args(["stats", "--json"])
        .output()
        .unwrap();
    assert_eq!(json(&output)["count"], filled.sessions.len());
}

/// With sealed data (and user agent), `sessions list` and `sessions show HANDLE` show the
/// sealed values as `SEALED`; `sessions show --ticket` with the app's keys opens them, and a
/// ticket that does not verify opens nothing (nor is it echoed).
pub(crate) async fn sealed_data_opens_only_with_the_ticket(url: &str) {
    let store = open(url).await;
    let key_text = ok(&cloakroom(None, &["keygen"])).trim().to_owned();
    let keys = cloakroom::KeyRing::from_base64_list(&key_text).expect("a keygen key");
    let engine = cloakroom::SessionSettings::new(store, keys)
        .with_sealed_data(true)
        .and_then(|s| s.with_sealed_user_agent(true))
        .expect("sealing settings")
        .build();
    let marker = format!("sealed-note-{}", SessionId::generate().key().to_handle());
    let agent = format!("agent-{}", SessionId::generate().key().to_handle());
    let session = engine.session(None);
    session.set("note", &marker).await.unwrap();
    let outcome = engine.commit(&session, Some(&agent)).await.unwrap();
    let cookie = outcome.set_cookie.expect("a new session's cookie");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let handle = engine
        .handle_of(&session)
        .await
        .unwrap()
        .unwrap()
        .to_handle();

    let listed = ok(&cloakroom(Some(url), &["sessions", "list"]));
    let shown = json(&cloakroom(
        Some(url),
        &["sessions", "show", &handle, "--json"],
    ));
    let text = ok(&cloakroom(Some(url), &["sessions", "show", &handle]));
    for out in [&listed, &shown.to_string(), &text] {
        assert!(!out.contains(&marker) && !out.contains(&agent), "{out}");
    }
    assert_eq!(shown["data"]["note"], "SEALED");
    assert_eq!(shown["sealed"], serde_json::json!(["note"]));
    assert_eq!(shown["user_agent"], "SEALED");
    assert!(text.contains("note = SEALED"), "{text}");

    let args = [
        "sessions", "show", "--ticket", &pair, "--keys", &key_text, "--json",
    ];
    let opened = json(&cloakroom(Some(url), &args));
    assert_eq!(opened["handle"], handle.as_str());
    assert_eq!(opened["data"]["note"], marker.as_str());
    assert_eq!(opened["user_agent"], agent.as_str());
    assert_eq!(opened["sealed"], serde_json::json!([]));
    let value = pair.split_once('=').unwrap().1;
    let bare = ["sessions", "show", "--ticket", value, "--keys", &key_text];
    assert!(
        ok(&cloakroom(Some(url), &bare)).contains(&marker),
        "a bare cookie value"
    );

    let other = ok(&cloakroom(None, &["keygen"])).trim().to_owned();
    let wrong = ["sessions", "show", "--ticket", &pair, "--keys", &other];
    let err = fails(&cloakroom(Some(url), &wrong));
    assert!(
        err.contains("does not verify") && !err.contains(value),
        "{err}"
    );
}

/// `sessions revoke --user U --reason TEXT`: the user's sessions end, each browser's next
/// request shows the admin's message once, and an open end watcher (another process's
/// engine over the same store) sees the session revoked.
pub(crate) async fn revoke_with_a_reason_tells_the_user(url: &str) {
    use cloakroom::session::{ENDED_BY_ADMIN_MESSAGE, EndReason, SessionSettings};
    use cloakroom::{Key, KeyRing};

    let store = open(url).await;
    let engine = SessionSettings::new(store.clone(), KeyRing::single(Key::generate()))
        .with_end_poll(Duration::from_millis(100))
        .unwrap()
        .build();
    let mut tickets = Vec::new();
    for _ in 0..2 {
        let s = engine.session(None);
        s.login("mallory").await.unwrap();
        let cookie = engine.commit(&s, None).await.unwrap().set_cookie.unwrap();
        tickets.push(cookie.split(';').next().unwrap().to_owned());
    }
    let watched = engine.session(Some(&tickets[0]));
    let ended = watched.ended().await.unwrap();

    let text = ok(&cloakroom(
        Some(url),
        &[
            "sessions",
            "revoke",
            "--user",
            "mallory",
            "--reason",
            "Your password was reset by support.\u{1b}[2J",
        ],
    ));
    assert_eq!(text, "revoked 2 sessions of user mallory\n");
    let reason = tokio::time::timeout(Duration::from_secs(5), ended).await;
    assert_eq!(reason.expect("the watcher fired"), EndReason::Revoked);

    for ticket in &tickets {
        let next = engine.session(Some(ticket));
        assert_eq!(next.user().await.unwrap(), None, "the session ended");
        let shown = next.flash().take().await.unwrap();
        assert_eq!(shown.len(), 1);
        assert_eq!(
            shown[0].text,
            format!("{ENDED_BY_ADMIN_MESSAGE} Your password was reset by support.[2J"),
            "the message, control characters dropped"
        );
        engine.commit(&next, None).await.unwrap();
        let again = engine.session(Some(ticket));
        assert!(again.flash().take().await.unwrap().is_empty(), "shown once");
    }
    // No tombstone is listed as a session.
    assert_eq!(store.sessions_of("mallory").await.unwrap(), Vec::new());
    let listed = ok(&cloakroom(Some(url), &["sessions", "list", "--json"]));
    assert!(!listed.contains("__cr.ended"), "{listed}");
}

/// `url` with the event log on (the `events=N` option).
pub(crate) fn with_events(url: &str) -> String {
    let join = if url.contains('?') { '&' } else { '?' };
    format!("{url}{join}events=1000")
}

/// Revocations made through the CLI are logged with the change, and `events` prints them:
/// as JSON lines, from a position, and followed as they happen.
pub(crate) async fn events_show_revocations_as_they_happen(url: &str) {
    use cloakroom::session::{Event, EventKind};

    let url = with_events(url);
    let store = open(&url).await;
    let log = store
        .event_log()
        .expect("a store opened with events=N keeps a log");
    let mut made = Vec::new();
    for _ in 0..2 {
        let key = SessionId::generate().key();
        let record = record(Some(ALICE), None, HOUR, HOUR);
        let event = Event {
            kind: EventKind::Created,
            session: key,
            user: Some(ALICE.into()),
            at: Timestamp::now(),
        };
        log.create_logged(&key, &record, None, &event)
            .await
            .expect("create");
        made.push(Made { key, record });
    }
    ok(&cloakroom(
        Some(&url),
        &["sessions", "revoke", &made[0].handle()],
    ));
    let lines: Vec<Value> = ok(&cloakroom(Some(&url), &["events", "--json"]))
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let kinds: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), l["session"].as_str().unwrap()))
        .collect();
    let (a, b) = (made[0].handle(), made[1].handle());
    assert_eq!(
        kinds,
        vec![("created", &*a), ("created", &*b), ("revoked", &*a)],
        "{lines:?}"
    );
    assert_eq!(lines[2]["user"], ALICE, "the event names the record's user");

    // Followed: a second revocation reaches a follower started before it.
    let last = lines[2]["position"].as_str().unwrap().to_owned();
    let follower = Command::new(env!("CARGO_BIN_EXE_cloakroom"))
        .env_remove("CLOAKROOM_STORE")
        .args([
            "--store", &url, "events", "--follow", "--json", "--limit", "1",
        ])
        .args(["--from", &last])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting the follower");
    tokio::time::sleep(Duration::from_millis(500)).await;
    ok(&cloakroom(Some(&url), &["sessions", "revoke", &b]));
    let output = tokio::task::spawn_blocking(move || follower.wait_with_output())
        .await
        .unwrap()
        .expect("the follower ends after --limit 1");
    let line: Value = serde_json::from_str(stdout(&output).trim()).expect("one event");
    assert_eq!(
        (line["kind"].as_str(), line["session"].as_str()),
        (Some("revoked"), Some(&*b))
    );
}
