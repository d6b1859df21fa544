//! `apply`: field patches, remember flag, lifetime cap, missing records.

use super::*;

/// `apply` sets and removes fields and moves `last_seen`, `expires_at` and `remember`;
/// `created_at`, `user` and `user_agent` stay.
pub async fn check_apply_sets_and_removes_fields(store: Arc<dyn SessionStore>) {
    let user = unique_user("apply");
    let key = key_for(&store, &user);
    let mut expected = sample(Some(&user), LONG_TTL);
    expected.data.insert("gone".into(), "[1,2]".into());
    expected.meta.remember = false;
    create(&store, &key, &expected).await;

    let mut p = patch(LONG_TTL + ms(60_000))
        .set("name", "\"Grace\"")
        .set("added", "{\"a\":1}")
        .remove("gone")
        .remove("never-there");
    p.remember = Some(true);
    assert_eq!(
        apply(&store, &key, &p).await,
        Applied::Done,
        "apply on a live record"
    );
    expected.apply(&p);
    assert_eq!(expected.data.len(), 3);
    assert_record(load(&store, &key).await, &expected, "after apply");
    assert_eq!(
        sessions_of(&store, &user).await,
        infos(&[(&key, &expected)]),
        "sessions_of reflects the patch (fields, bytes, times)"
    );

    // A patch with no field changes moves the times only.
    let p = patch(LONG_TTL + ms(120_000));
    assert_eq!(apply(&store, &key, &p).await, Applied::Done);
    expected.apply(&p);
    assert_record(
        load(&store, &key).await,
        &expected,
        "after a times-only apply",
    );

    // Removing every field leaves an empty, live record.
    let p = patch(LONG_TTL)
        .remove("name")
        .remove("added")
        .remove("count");
    assert_eq!(apply(&store, &key, &p).await, Applied::Done);
    expected.apply(&p);
    assert!(expected.data.is_empty());
    assert_record(
        load(&store, &key).await,
        &expected,
        "after removing every field",
    );
}

/// `remember: None` keeps the flag; `Some(b)` sets it.
pub async fn check_apply_updates_remember_only_when_given(store: Arc<dyn SessionStore>) {
    let key = new_key();
    let mut record = sample(None, LONG_TTL);
    record.meta.remember = false;
    create(&store, &key, &record).await;
    let steps = [Some(true), None, Some(false), None, Some(true)];
    let mut expected = false;
    for (i, remember) in steps.into_iter().enumerate() {
        let mut p = patch(LONG_TTL).set("step", i.to_string());
        p.remember = remember;
        assert_eq!(apply(&store, &key, &p).await, Applied::Done);
        if let Some(r) = remember {
            expected = r;
        }
        let loaded = load(&store, &key).await.expect("record");
        assert_eq!(
            loaded.meta.remember, expected,
            "remember after step {i} ({remember:?})"
        );
    }
}

/// A patch with `max_lifetime` (a blind write) caps the expiry at `created_at + lifetime`;
/// without it the patch's expiry is taken as given.
pub async fn check_apply_caps_expiry_at_max_lifetime(store: Arc<dyn SessionStore>) {
    let key = new_key();
    let record = sample(None, LONG_TTL); // created 5 s ago
    create(&store, &key, &record).await;
    let mut p = patch(LONG_TTL).set("blind", "1");
    p.max_lifetime = Some(Duration::from_secs(60));
    assert_eq!(apply(&store, &key, &p).await, Applied::Done);
    let loaded = load(&store, &key).await.expect("record");
    let cap = record.meta.created_at.plus(Duration::from_secs(60));
    assert_eq!(
        loaded.meta.expires_at, cap,
        "expiry capped at created + lifetime"
    );
    assert_eq!(loaded.data.get("blind").map(String::as_str), Some("1"));
    // A lifetime longer than the idle deadline changes nothing.
    let mut p = patch(LONG_TTL);
    p.max_lifetime = Some(Duration::from_secs(3600));
    assert_eq!(apply(&store, &key, &p).await, Applied::Done);
    let loaded = load(&store, &key).await.expect("record");
    assert_eq!(loaded.meta.expires_at, p.expires_at);
}

/// A patch with `max_lifetime` or `max_idle` (a blind write) is refused (`Missing`, nothing
/// written) for a record a load would refuse: created `max_lifetime` or more, or last seen
/// `max_idle` or more, before the patch's `last_seen`; within both it applies.
pub async fn check_apply_refuses_a_record_past_its_lifetime_or_idle_time(
    store: Arc<dyn SessionStore>,
) {
    let key = new_key();
    let record = sample(None, LONG_TTL); // created 5 s ago, last seen 1 s ago
    create(&store, &key, &record).await;
    let mut p = patch(LONG_TTL).set("blind", "1").remove("name");
    p.max_idle = Some(ms(500));
    assert_eq!(
        apply(&store, &key, &p).await,
        Applied::Missing,
        "idle past max_idle"
    );
    assert_record(
        load(&store, &key).await,
        &record,
        "after a refused idle patch",
    );
    p.max_idle = None;
    p.max_lifetime = Some(Duration::from_secs(2));
    assert_eq!(
        apply(&store, &key, &p).await,
        Applied::Missing,
        "older than max_lifetime"
    );
    assert_record(
        load(&store, &key).await,
        &record,
        "after a refused lifetime patch",
    );
    p.max_idle = Some(Duration::from_secs(60));
    p.max_lifetime = Some(LONG_TTL);
    assert_eq!(
        apply(&store, &key, &p).await,
        Applied::Done,
        "within both bounds"
    );
    let mut expected = record;
    expected.apply(&p);
    assert_record(load(&store, &key).await, &expected, "after the patch");
}

/// The same field written twice: the later patch wins; a field both removed and set in one
/// patch ends up set (removals apply first, as in [`Record::apply`]).
pub async fn check_apply_same_field_last_write_wins(store: Arc<dyn SessionStore>) {
    let key = new_key();
    let mut expected = sample(None, LONG_TTL);
    create(&store, &key, &expected).await;
    for p in [
        patch(LONG_TTL).set("count", "4"),
        patch(LONG_TTL).set("count", "5"),
        patch(LONG_TTL).remove("name").set("name", "\"again\""),
        patch(LONG_TTL).set("dup", "1").set("dup", "2"),
    ] {
        assert_eq!(apply(&store, &key, &p).await, Applied::Done);
        expected.apply(&p);
    }
    assert_eq!(expected.data.get("count").map(String::as_str), Some("5"));
    assert_eq!(expected.data.get("dup").map(String::as_str), Some("2"));
    assert_record(
        load(&store, &key).await,
        &expected,
        "after overwriting patches",
    );
}

/// `apply` on a key never created is `Missing` and creates nothing.
pub async fn check_apply_on_unknown_key_is_missing(store: Arc<dyn SessionStore>) {
    let key = new_key();
    let mut p = patch(LONG_TTL).set("name", "\"Eve\"");
    p.remember = Some(true);
    assert_eq!(
        apply(&store, &key, &p).await,
        Applied::Missing,
        "apply on an unknown key"
    );
    assert!(
        load(&store, &key).await.is_none(),
        "apply must never create a record"
    );
    let listed = scan_all(&store, 1000).await;
    assert!(
        !listed.contains_key(&key),
        "apply must never create a record (scan)"
    );
}

/// `apply` on a deleted key is `Missing` and does not bring the record back.
pub async fn check_apply_on_deleted_key_is_missing(store: Arc<dyn SessionStore>) {
    let user = unique_user("deleted");
    let key = key_for(&store, &user);
    create(&store, &key, &sample(Some(&user), LONG_TTL)).await;
    assert!(delete(&store, &key).await);
    let p = patch(LONG_TTL).set("name", "\"Mallory\"");
    assert_eq!(
        apply(&store, &key, &p).await,
        Applied::Missing,
        "apply on a deleted key"
    );
    assert!(
        load(&store, &key).await.is_none(),
        "apply resurrected a deleted session"
    );
    assert!(
        sessions_of(&store, &user).await.is_empty(),
        "apply re-indexed a deleted session"
    );
}

/// `apply` on an expired key is `Missing`, even with a patch that would extend it, and does
/// not revive it.
pub async fn check_apply_on_expired_key_is_missing(store: Arc<dyn SessionStore>) {
    let user = unique_user("expired");
    let key = key_for(&store, &user);
    let record = sample(Some(&user), SHORT_TTL);
    create(&store, &key, &record).await;
    wait_past(record.meta.expires_at).await;
    let p = patch(LONG_TTL).set("name", "\"Zombie\"");
    assert_eq!(
        apply(&store, &key, &p).await,
        Applied::Missing,
        "apply on an expired key"
    );
    assert!(
        load(&store, &key).await.is_none(),
        "apply revived an expired session"
    );
    assert!(
        sessions_of(&store, &user).await.is_empty(),
        "apply revived an expired session"
    );
    // And once more, in case the first call cleaned up and the second recreated.
    assert_eq!(apply(&store, &key, &p).await, Applied::Missing);
    assert!(
        load(&store, &key).await.is_none(),
        "apply revived an expired session"
    );
}
