//! `create` and `load`: round trips, collisions, expired records.

use super::*;

/// `create` then `load` returns the same record: every field and every `Meta` field, with
/// and without a user and user agent.
pub async fn check_create_then_load(store: Arc<dyn SessionStore>) {
    let user = unique_user("load");
    let key = key_for(&store, &user);
    let record = sample(Some(&user), LONG_TTL);
    create(&store, &key, &record).await;
    assert_record(load(&store, &key).await, &record, "load after create");

    // The other values of every optional or boolean meta field, and no data at all.
    let bare_key = new_key();
    let mut bare = Record::new(Timestamp::now(), Timestamp::now().plus(LONG_TTL));
    bare.meta.remember = false;
    create(&store, &bare_key, &bare).await;
    assert_record(
        load(&store, &bare_key).await,
        &bare,
        "load of a record without data or user",
    );

    // Loading twice changes nothing.
    assert_record(load(&store, &key).await, &record, "second load");
}

/// `load` of a key never created is `None`.
pub async fn check_load_unknown_is_none(store: Arc<dyn SessionStore>) {
    assert!(
        load(&store, &new_key()).await.is_none(),
        "load of an unknown key must be None"
    );
    let key = new_key();
    create(&store, &key, &sample(None, LONG_TTL)).await;
    assert!(
        load(&store, &new_key()).await.is_none(),
        "load of an unknown key must be None"
    );
}

/// `create` on a key with a live record returns `Collision` and writes nothing, not even
/// the user index entry of the rejected record.
pub async fn check_create_collision_keeps_the_live_record(store: Arc<dyn SessionStore>) {
    let first_user = unique_user("first");
    let key = key_for(&store, &first_user);
    let second_user = unique_user_for(&store, "second", &key);
    let first = sample(Some(&first_user), LONG_TTL);
    create(&store, &key, &first).await;

    let mut second = sample(Some(&second_user), LONG_TTL);
    second.data = fields(&[("other", "true")]);
    second.meta.remember = false;
    second.meta.user_agent = None;
    let outcome = store.create(&key, &second).await.expect("create");
    assert_eq!(
        outcome,
        Created::Collision,
        "create over a live record must collide"
    );
    assert_record(
        load(&store, &key).await,
        &first,
        "the record after a collision",
    );
    assert!(
        sessions_of(&store, &second_user).await.is_empty(),
        "a rejected create must not index its user"
    );
    assert_eq!(
        sessions_of(&store, &first_user).await,
        infos(&[(&key, &first)]),
        "the first record stays indexed"
    );
}

/// Many concurrent `create`s of one key: exactly one wins, and the record is the winner's.
pub async fn check_concurrent_creates_have_one_winner(store: Arc<dyn SessionStore>) {
    let key = new_key();
    let handles = (0..16)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut record = sample(None, LONG_TTL);
                record.data.insert("writer".into(), i.to_string());
                let outcome = store.create(&key, &record).await.expect("create");
                (i, outcome)
            })
        })
        .collect();
    let outcomes = join_all(handles).await;
    let winners: Vec<_> = outcomes
        .iter()
        .filter(|(_, o)| *o == Created::Done)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one concurrent create must win: {outcomes:?}"
    );
    let loaded = load(&store, &key).await.expect("the winner's record");
    assert_eq!(
        loaded.data.get("writer"),
        Some(&winners[0].to_string()),
        "the stored record must be the winner's"
    );
}

/// `create` over a record that has expired succeeds and replaces it completely (no old
/// field, no old user index entry survives).
pub async fn check_create_over_an_expired_record(store: Arc<dyn SessionStore>) {
    let old_user = unique_user("old");
    let key = key_for(&store, &old_user);
    let new_user = unique_user_for(&store, "new", &key);
    let mut old = sample(Some(&old_user), SHORT_TTL);
    old.data.insert("stale".into(), "\"old\"".into());
    create(&store, &key, &old).await;
    wait_past(old.meta.expires_at).await;

    let mut fresh = sample(Some(&new_user), LONG_TTL);
    fresh.data = fields(&[("fresh", "1")]);
    fresh.meta.remember = false;
    let outcome = store.create(&key, &fresh).await.expect("create");
    assert_eq!(
        outcome,
        Created::Done,
        "create over an expired record must succeed"
    );
    assert_record(
        load(&store, &key).await,
        &fresh,
        "the record created over an expired one",
    );
    assert!(
        sessions_of(&store, &old_user).await.is_empty(),
        "the expired record's user must not list the new record"
    );
    assert_eq!(
        sessions_of(&store, &new_user).await,
        infos(&[(&key, &fresh)])
    );
}
