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

#[test]
fn usage_errors_exit_with_2() {
    let handle = cloakroom::SessionKey::from_bytes([1; 32]).to_handle();
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
