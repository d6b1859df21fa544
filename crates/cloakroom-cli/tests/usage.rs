//! What needs no filled store: `keygen`, exit codes and error lines for bad invocations and
//! bad or unreachable stores.

mod common;

use common::{cloakroom, fails, ok, stderr};

#[test]
fn keygen_prints_a_fresh_key_that_the_library_accepts() {
    let first = ok(&cloakroom(None, &["keygen"]));
    let second = ok(&cloakroom(None, &["keygen"]));
    for output in [&first, &second] {
        let key = output.strip_suffix('\n').expect("one line");
        assert_eq!(key.len(), 44, "{key:?}");
        assert!(key.ends_with('='), "standard base64 of 32 bytes: {key:?}");
        cloakroom::Key::from_base64(key).expect("a valid key");
    }
    assert_ne!(first, second);
}

#[test]
fn an_unsupported_store_url_fails_with_one_line() {
    let err = fails(&cloakroom(Some("nope://x"), &["stats"]));
    assert!(err.contains("unsupported session store URL"), "{err}");
}

#[test]
fn an_unreachable_store_fails_with_one_line() {
    let err = fails(&cloakroom(
        Some("sqlite:///nonexistent-dir/x.db"),
        &["sessions", "list"],
    ));
    assert!(err.contains("cannot open the session store"), "{err}");
    assert!(err.contains("/nonexistent-dir/x.db"), "{err}");
}

#[test]
fn a_store_password_is_never_echoed() {
    for url in [
        "postgres://admin:hunter2@db.example/sessions",
        // Nothing listens on port 1: the Redis store fails to connect.
        "redis://:hunter2@127.0.0.1:1/0",
    ] {
        let err = fails(&cloakroom(Some(url), &["sessions", "list"]));
        assert!(!err.contains("hunter2"), "{err}");
    }
}

/// Malformed URLs (issue 12, item 8): the store cannot parse them, and the message that says
/// so names the URL with the password masked all the same.
#[test]
fn a_malformed_store_url_never_echoes_its_password() {
    for url in [
        "redis:/:hunter2@127.0.0.1:1/0",
        "redis//:hunter2@127.0.0.1",
        "redis:///:hunter2@127.0.0.1",
        "redis::hunter2@127.0.0.1:1",
        ":hunter2@127.0.0.1:1",
        "redis://u:hun/ter2@127.0.0.1:1",
        "redis://u:hun?ter2@127.0.0.1:1",
        "redis://u:hun#ter2@127.0.0.1:1",
        "redis://:hunter2@127.0.0.1:1/0?timeout_ms=x",
        "redis://127.0.0.1:1/0?password=hunter2&timeout_ms=x",
        "redis+cluster://:hunter2@",
        "pycket+redis://:hunter2@127.0.0.1:1/0?notifications_db=x",
        "rediss://u:hunter2@127.0.0.1:1",
        "sqlite://:hunter2@/nonexistent-dir/x.db",
    ] {
        let err = fails(&cloakroom(Some(url), &["stats"]));
        assert!(!err.contains("hunter2"), "{url}: {err}");
        assert!(
            !err.contains("hun/ter2") && !err.contains("ter2@"),
            "{url}: {err}"
        );
        assert!(
            err.contains("***"),
            "{url}: the URL is shown, masked: {err}"
        );
    }
    // From the environment too.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cloakroom"))
        .env("CLOAKROOM_STORE", "redis:/:hunter2@127.0.0.1:1/0")
        .args(["sessions", "list", "--json"])
        .output()
        .unwrap();
    let err = fails(&output);
    assert!(!err.contains("hunter2"), "{err}");
    assert_eq!(common::stdout(&output), "");
}

/// `--help` never shows the value of `CLOAKROOM_STORE` (issue 12, item 8).
#[test]
fn help_hides_the_store_url_of_the_environment() {
    for args in [
        &["--help"][..],
        &["-h"][..],
        &["sessions", "list", "--help"][..],
        &["stats", "--help"][..],
        &["gc", "--help"][..],
        &["help", "sessions"][..],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_cloakroom"))
            .env("CLOAKROOM_STORE", "redis://:hunter2@127.0.0.1:1/0")
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}");
        let all = format!("{}{}", common::stdout(&output), stderr(&output));
        assert!(!all.contains("hunter2"), "{args:?}: {all}");
        assert!(!all.contains("127.0.0.1:1"), "{args:?}: {all}");
    }
    // A store URL in the wrong place is a usage error; clap's message does not repeat it.
    let output = cloakroom(None, &["stats", "redis://:hunter2@127.0.0.1:1/0"]);
    assert_eq!(output.status.code(), Some(2));
    let all = format!("{}{}", common::stdout(&output), stderr(&output));
    assert!(!all.contains("hunter2"), "{all}");
}

#[test]
fn usage_errors_exit_with_2() {
    let handle = cloakroom::SessionKey::from_bytes([1; 16]).to_handle();
    for args in [
        &[][..],
        &["sessions"][..],
        &["sessions", "frobnicate"][..],
        &["sessions", "revoke"][..],
        &["sessions", "revoke", &handle, "--user", "u"][..],
        &["sessions", "show", "not-a-handle"][..],
        &["sessions", "list", "--limit", "0"][..],
    ] {
        let output = cloakroom(Some("memory://"), args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    // No store at all, for a command that needs one.
    let output = cloakroom(None, &["stats"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("CLOAKROOM_STORE"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_pasted_cookie_is_not_echoed_as_a_handle() {
    let output = cloakroom(
        Some("memory://"),
        &["sessions", "revoke", "s3cr3t.ticket.value"],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(!stderr(&output).contains("s3cr3t"), "{}", stderr(&output));
}

#[test]
fn help_lists_the_commands() {
    let text = ok(&cloakroom(None, &["--help"]));
    for command in ["sessions", "gc", "stats", "keygen", "--store"] {
        assert!(text.contains(command), "{command} in\n{text}");
    }
}
