//! `scan` and `purge_expired`.

use super::*;

/// Scanning with small pages visits every live session exactly once, with correct
/// summaries, and never an expired one.
pub async fn check_scan_pages_through_every_live_session_once(store: Arc<dyn SessionStore>) {
    let user = unique_user("scan");
    let mut live = HashMap::new();
    for i in 0..25 {
        let key = key_for(&store, &user);
        let mut record = sample((i % 3 == 0).then_some(user.as_str()), LONG_TTL);
        record.data.insert(format!("i{i}"), i.to_string());
        create(&store, &key, &record).await;
        live.insert(key, record);
    }
    let mut expired = HashSet::new();
    let mut latest = Timestamp::from_millis(0);
    for _ in 0..5 {
        let key = key_for(&store, &user);
        let record = sample(Some(&user), SHORT_TTL);
        latest = latest.max(record.meta.expires_at);
        create(&store, &key, &record).await;
        expired.insert(key);
    }
    wait_past(latest).await;

    // Limit 1 makes every key a page boundary: a scan that skips the key after a boundary
    // is caught whatever the random keys are (with 7 alone, the skipped keys can all be
    // expired ones).
    for limit in [1, 7, 1000] {
        let seen = scan_all(&store, limit).await;
        for (key, record) in &live {
            assert_eq!(
                seen.get(key),
                Some(&record.info(*key)),
                "scan (limit {limit}) must list every live session with its summary"
            );
        }
        let listed_expired = expired.iter().filter(|k| seen.contains_key(k)).count();
        assert_eq!(
            listed_expired, 0,
            "scan (limit {limit}) listed expired sessions"
        );
    }
}

/// `purge_expired` removes expired records (counting them, for stores that keep them until
/// purged) and never a live one. The conformance macro runs this with its `purge` argument.
pub async fn check_purge_expired_with(store: Arc<dyn SessionStore>, purge: Purge) {
    let user = unique_user("purge");
    let mut expired = Vec::new();
    let mut latest = Timestamp::from_millis(0);
    for _ in 0..3 {
        let key = key_for(&store, &user);
        let record = sample(Some(&user), SHORT_TTL);
        latest = latest.max(record.meta.expires_at);
        create(&store, &key, &record).await;
        expired.push(key);
    }
    let mut live = Vec::new();
    for _ in 0..2 {
        let key = key_for(&store, &user);
        let record = sample(Some(&user), LONG_TTL);
        create(&store, &key, &record).await;
        live.push((key, record));
    }
    wait_past(latest).await;

    let purged = store
        .purge_expired()
        .await
        .unwrap_or_else(|e| panic!("purge_expired failed: {e}"));
    if purge == Purge::Counts {
        assert!(
            purged >= expired.len() as u64,
            "purge_expired returned {purged}, but {} records had expired",
            expired.len()
        );
    }
    for (key, record) in &live {
        assert_record(
            load(&store, key).await,
            record,
            "a live record after purge_expired",
        );
    }
    for key in &expired {
        assert!(
            load(&store, key).await.is_none(),
            "an expired record is loadable after purge"
        );
        assert!(
            !delete(&store, key).await,
            "an expired record was still deletable after purge"
        );
    }
    let expected = infos(&live.iter().map(|(k, r)| (k, r)).collect::<Vec<_>>());
    assert_eq!(sessions_of(&store, &user).await, expected);
    // Purging again is harmless.
    store.purge_expired().await.expect("second purge_expired");
    assert_eq!(sessions_of(&store, &user).await, expected);
}

/// [`check_purge_expired_with`] for stores that keep expired records until purged.
pub async fn check_purge_expired(store: Arc<dyn SessionStore>) {
    check_purge_expired_with(store, Purge::Counts).await;
}
