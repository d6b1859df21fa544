//! `touch`: moving the times, missing and expired records.

use super::*;

/// `touch` moves `last_seen` and `expires_at` only: data, `created_at`, `user`,
/// `user_agent` and `remember` stay.
pub async fn check_touch_moves_only_the_times(store: Arc<dyn SessionStore>) {
    let user = unique_user("touch");
    let key = key_for(&store, &user);
    let mut expected = sample(Some(&user), LONG_TTL);
    // `false`, so a touch that sets the flag shows; the data is checked untouched below.
    expected.meta.remember = false;
    create(&store, &key, &expected).await;
    let now = Timestamp::now();
    let (last_seen, expires_at) = (
        Timestamp::from_millis(now.as_millis() + 3),
        now.plus(LONG_TTL + ms(30_000)),
    );
    assert_eq!(
        touch(&store, &key, last_seen, expires_at).await,
        Applied::Done
    );
    expected.meta.last_seen = last_seen;
    expected.meta.expires_at = expires_at;
    assert_record(load(&store, &key).await, &expected, "after touch");

    // Touch may also shorten the lifetime.
    let shorter = now.plus(ms(120_000));
    assert_eq!(touch(&store, &key, last_seen, shorter).await, Applied::Done);
    expected.meta.expires_at = shorter;
    assert_record(
        load(&store, &key).await,
        &expected,
        "after a shortening touch",
    );
    assert_eq!(
        sessions_of(&store, &user).await,
        infos(&[(&key, &expected)])
    );
}

/// `touch` on an unknown or deleted key is `Missing` and creates nothing.
pub async fn check_touch_on_unknown_or_deleted_key_is_missing(store: Arc<dyn SessionStore>) {
    let now = Timestamp::now();
    let unknown = new_key();
    assert_eq!(
        touch(&store, &unknown, now, now.plus(LONG_TTL)).await,
        Applied::Missing
    );
    assert!(
        load(&store, &unknown).await.is_none(),
        "touch created a record"
    );

    let user = unique_user("touch-deleted");
    let key = key_for(&store, &user);
    create(&store, &key, &sample(Some(&user), LONG_TTL)).await;
    assert!(delete(&store, &key).await);
    assert_eq!(
        touch(&store, &key, now, now.plus(LONG_TTL)).await,
        Applied::Missing
    );
    assert!(
        load(&store, &key).await.is_none(),
        "touch resurrected a deleted session"
    );
    assert!(
        sessions_of(&store, &user).await.is_empty(),
        "touch re-indexed a deleted session"
    );
}

/// `touch` on an expired key is `Missing` and does not revive it.
pub async fn check_touch_on_expired_key_is_missing(store: Arc<dyn SessionStore>) {
    let user = unique_user("touch-expired");
    let key = key_for(&store, &user);
    let record = sample(Some(&user), SHORT_TTL);
    create(&store, &key, &record).await;
    wait_past(record.meta.expires_at).await;
    let now = Timestamp::now();
    assert_eq!(
        touch(&store, &key, now, now.plus(LONG_TTL)).await,
        Applied::Missing,
        "touch on an expired key"
    );
    assert!(
        load(&store, &key).await.is_none(),
        "touch revived an expired session"
    );
    assert!(
        sessions_of(&store, &user).await.is_empty(),
        "touch revived an expired session"
    );
}
