//! Odd content: field names, values, sizes and user ids kept verbatim; `ping`.

use super::*;

/// Field names that trip up stores that build queries, paths or merge documents from them.
pub const ODD_FIELD_NAMES: &[&str] = &[
    "a\"b",
    "a'b",
    "a.b",
    "a.b.c",
    "$set",
    "$",
    "ключ",
    "🔑 emoji",
    "with space",
    "back\\slash",
    "new\nline",
    "tab\tstop",
    "nul\0byte",
    "",
    "'; DROP TABLE sessions; --",
    "user",
    "expires_at",
    "created_at",
    "last_seen",
    "remember",
    "user_agent",
    "data",
    "key",
    "__proto__",
    "{tag}",
    "*",
    "%",
    "_",
    "a:b",
    "\u{2028}",
    "\u{feff}bom",
    "null",
    "[0]",
    "/path/../x",
    "__cr.csrf",
];

/// Field values (JSON text) that must come back byte for byte: stores keep JSON text
/// verbatim, they never parse or re-serialise it.
pub const ODD_VALUES: &[&str] = &[
    "\"\"",
    "null",
    "\"null\"",
    "{}",
    "[]",
    "0",
    "-0",
    "2.50",
    "1e400",
    "12345678901234567890123",
    "true",
    "false",
    " { \"a\" : [1, 2.50, \"x\"] } ",
    "{\"b\":1,\"a\":2,\"b\":3}",
    "\"with \\\"quotes\\\" and \\\\ backslash\"",
    "\"\\u0000 \\ud83d\\ude00 \\/\"",
    "\"ünïcødé ✓ 🔑\"",
    "\"'; DROP TABLE sessions; --\"",
    "{\"$set\":{\"a.b\":null}}",
];

/// Field names with quotes, dots, `$`, unicode, control characters, names of metadata
/// columns: stored, patched and removed exactly.
pub async fn check_odd_field_names_survive(store: Arc<dyn SessionStore>) {
    let user = unique_user("names");
    let key = key_for(&store, &user);
    let mut expected = sample(Some(&user), LONG_TTL);
    for (i, name) in ODD_FIELD_NAMES.iter().enumerate() {
        expected.data.insert((*name).to_owned(), i.to_string());
    }
    create(&store, &key, &expected).await;
    assert_record(
        load(&store, &key).await,
        &expected,
        "odd field names after create",
    );
    // Metadata must not be confused with the fields named like it.
    assert_eq!(
        sessions_of(&store, &user).await,
        infos(&[(&key, &expected)])
    );

    let mut p = patch(LONG_TTL);
    for (i, name) in ODD_FIELD_NAMES.iter().enumerate() {
        if i % 2 == 0 {
            p = p.remove(*name);
        } else {
            p = p
                .set(format!("{name}{name}"), "\"set\"")
                .set(*name, "\"patched\"");
        }
    }
    assert_eq!(apply(&store, &key, &p).await, Applied::Done);
    expected.apply(&p);
    assert_record(
        load(&store, &key).await,
        &expected,
        "odd field names after apply",
    );
    assert_eq!(
        sessions_of(&store, &user).await,
        infos(&[(&key, &expected)])
    );
}

/// JSON values that a store might mangle: empty strings, `null`, numbers out of range for
/// `f64`, whitespace, duplicate keys, escapes. Kept verbatim through create and apply; a
/// field whose value is the text `null` is set, not removed.
pub async fn check_odd_values_survive_verbatim(store: Arc<dyn SessionStore>) {
    let key = new_key();
    let mut expected = sample(None, LONG_TTL);
    for (i, value) in ODD_VALUES.iter().enumerate() {
        expected.data.insert(format!("v{i}"), (*value).to_owned());
    }
    create(&store, &key, &expected).await;
    assert_record(
        load(&store, &key).await,
        &expected,
        "odd values after create",
    );

    let mut p = patch(LONG_TTL);
    for (i, value) in ODD_VALUES.iter().enumerate() {
        // Rotate the values among the fields and add new fields holding them.
        let target = ODD_VALUES[(i + 1) % ODD_VALUES.len()];
        p = p.set(format!("v{i}"), target).set(format!("w{i}"), *value);
    }
    assert_eq!(apply(&store, &key, &p).await, Applied::Done);
    expected.apply(&p);
    assert_record(
        load(&store, &key).await,
        &expected,
        "odd values after apply",
    );

    let p = patch(LONG_TTL).set("v0", "null").set("fresh", "null");
    assert_eq!(apply(&store, &key, &p).await, Applied::Done);
    expected.apply(&p);
    let loaded = load(&store, &key).await;
    assert_eq!(
        loaded
            .as_ref()
            .and_then(|r| r.data.get("fresh"))
            .map(String::as_str),
        Some("null"),
        "setting a field to the JSON text null must keep the field"
    );
    assert_record(loaded, &expected, "after setting fields to null");
}

/// Values of about 32 KiB (and a long field name) survive create, apply and listings.
pub async fn check_large_values_survive(store: Arc<dyn SessionStore>) {
    let user = unique_user("large");
    let key = key_for(&store, &user);
    let big_string = format!("\"{}\"", "x".repeat(32 * 1024));
    let big_array = format!(
        "[{}]",
        (0..4096)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let long_name = "n".repeat(1024);
    let mut expected = sample(Some(&user), LONG_TTL);
    expected.data.insert("big".into(), big_string.clone());
    expected.data.insert(long_name.clone(), "1".into());
    create(&store, &key, &expected).await;
    assert_record(
        load(&store, &key).await,
        &expected,
        "large values after create",
    );

    let unicode = format!("\"{}\"", "ü🔑".repeat(6 * 1024));
    let p = patch(LONG_TTL)
        .set("array", big_array)
        .set("unicode", unicode)
        .set("big", format!("\"{}\"", "y".repeat(32 * 1024)));
    assert_eq!(apply(&store, &key, &p).await, Applied::Done);
    expected.apply(&p);
    assert_record(
        load(&store, &key).await,
        &expected,
        "large values after apply",
    );
    let listed = sessions_of(&store, &user).await;
    assert_eq!(listed, infos(&[(&key, &expected)]));
    assert!(
        listed[0].data_bytes > 64 * 1024,
        "data_bytes counts the large values"
    );
}

/// User ids with quotes, SQL, path and glob characters are stored and matched exactly
/// (case-sensitively, never as patterns or prefixes).
pub async fn check_odd_user_ids_are_matched_exactly(store: Arc<dyn SessionStore>) {
    let tag = unique_user("u");
    let odd = [
        "o'brien",
        "a;b",
        "--",
        "../../etc/passwd",
        "%",
        "_",
        "*",
        "?",
        "[ab]",
        "a",
        "ab",
        "A",
        "user:with:colons",
        "{hash}tag",
        "ünï ✓",
        "Robert'); DROP TABLE sessions;--",
        " spaced ",
        "back\\slash",
        "\"quoted\"",
    ];
    let users: Vec<String> = odd
        .iter()
        .enumerate()
        .map(|(i, o)| {
            if i % 2 == 0 {
                format!("{tag}{o}")
            } else {
                format!("{o}{tag}")
            }
        })
        .collect();
    let mut owned = Vec::new();
    for user in &users {
        let key = key_for(&store, user);
        let mut record = sample(Some(user), LONG_TTL);
        record.meta.user_agent = Some(format!("agent of {user} 'with' \"quotes\" ✓"));
        create(&store, &key, &record).await;
        owned.push((key, record));
    }
    for (user, (key, record)) in users.iter().zip(&owned) {
        assert_record(
            load(&store, key).await,
            record,
            "a session of an odd user id",
        );
        assert_eq!(
            sessions_of(&store, user).await,
            infos(&[(key, record)]),
            "sessions_of({user:?}) must list exactly that user's session"
        );
    }
    assert!(
        sessions_of(&store, &tag).await.is_empty(),
        "sessions_of matched a prefix"
    );
    assert!(
        sessions_of(&store, &format!("{tag}%")).await.len() == 1,
        "only the user literally named with % matches"
    );

    // Deleting the pattern-like users removes only them.
    for pattern in ["%", "_", "*", "?", "[ab]"] {
        let i = odd.iter().position(|o| *o == pattern).unwrap();
        assert_eq!(
            delete_user(&store, &users[i], None).await,
            1,
            "delete_user({:?}) must delete exactly one session",
            users[i]
        );
    }
    let survivors = odd
        .iter()
        .enumerate()
        .filter(|(_, o)| !["%", "_", "*", "?", "[ab]"].contains(o));
    for (i, _) in survivors {
        assert!(
            load(&store, &owned[i].0).await.is_some(),
            "deleting pattern-like users deleted {:?}'s session",
            users[i]
        );
    }
}

/// `ping` succeeds on a working store.
pub async fn check_ping_answers(store: Arc<dyn SessionStore>) {
    store
        .ping()
        .await
        .unwrap_or_else(|e| panic!("ping failed: {e}"));
}
