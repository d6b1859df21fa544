//! `delete` and expiry.

use super::*;

/// `delete` is `true` for a live record, then `false`; `load` after it is `None`.
pub async fn check_delete_reports_a_live_record_once(store: Arc<dyn SessionStore>) {
    let key = new_key();
    let other = new_key();
    create(&store, &key, &sample(None, LONG_TTL)).await;
    create(&store, &other, &sample(None, LONG_TTL)).await;
    assert!(
        delete(&store, &key).await,
        "delete of a live record must return true"
    );
    assert!(
        load(&store, &key).await.is_none(),
        "load after delete must be None"
    );
    assert!(
        !delete(&store, &key).await,
        "a second delete must return false"
    );
    assert!(
        !delete(&store, &new_key()).await,
        "delete of an unknown key must return false"
    );
    assert!(
        load(&store, &other).await.is_some(),
        "delete removed another record"
    );
}

/// A record is loadable until `expires_at` and gone after it: from `load`, `sessions_of`,
/// `scan`, `delete_user`'s count and `delete`'s answer.
pub async fn check_expiry_is_honoured_everywhere(store: Arc<dyn SessionStore>) {
    let user = unique_user("expiry");
    let short_key = key_for(&store, &user);
    let short = sample(Some(&user), SHORT_TTL);
    let long_key = key_for(&store, &user);
    let long = sample(Some(&user), LONG_TTL);
    create(&store, &short_key, &short).await;
    create(&store, &long_key, &long).await;
    // Only meaningful while the short record has time left (a very slow machine skips it).
    if Timestamp::now().as_millis() + 100 < short.meta.expires_at.as_millis() {
        assert_record(load(&store, &short_key).await, &short, "before expiry");
        let listed = sessions_of(&store, &user).await;
        if Timestamp::now() < short.meta.expires_at {
            assert_eq!(listed, infos(&[(&short_key, &short), (&long_key, &long)]));
        }
    }
    wait_past(short.meta.expires_at).await;

    assert!(
        load(&store, &short_key).await.is_none(),
        "load returned an expired record"
    );
    assert_record(load(&store, &long_key).await, &long, "the live record");
    assert_eq!(
        sessions_of(&store, &user).await,
        infos(&[(&long_key, &long)]),
        "sessions_of must list the live session only"
    );
    let listed = scan_all(&store, 50).await;
    assert!(
        !listed.contains_key(&short_key),
        "scan listed an expired record"
    );
    assert_eq!(
        listed.get(&long_key),
        Some(&long.info(long_key)),
        "scan must list the live one"
    );
    assert!(
        !delete(&store, &short_key).await,
        "delete of an expired record must return false"
    );
    assert_eq!(
        delete_user(&store, &user, None).await,
        1,
        "delete_user must count live sessions only"
    );
    assert!(load(&store, &long_key).await.is_none());
}
