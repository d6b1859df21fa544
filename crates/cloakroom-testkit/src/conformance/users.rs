//! The user index: `sessions_of`, `delete_user`.

use super::*;

/// `sessions_of` lists exactly the live sessions of the user, with correct summaries; not
/// those of another user (even one whose name extends it), nor anonymous ones.
pub async fn check_sessions_of_lists_exactly_the_users_sessions(store: Arc<dyn SessionStore>) {
    let user = unique_user("owner");
    let longer = format!("{user}x");
    let mut mine = Vec::new();
    for i in 0..3 {
        let key = key_for(&store, &user);
        let mut record = sample(Some(&user), LONG_TTL);
        for j in 0..i {
            record
                .data
                .insert(format!("extra-{j}"), "\"x\"".repeat(j + 1));
        }
        record.meta.remember = i % 2 == 0;
        record.meta.user_agent = (i != 1).then(|| format!("agent {i}"));
        record.meta.last_seen =
            Timestamp::from_millis(record.meta.last_seen.as_millis() + i as i64);
        create(&store, &key, &record).await;
        mine.push((key, record));
    }
    let their_key = key_for(&store, &longer);
    let theirs = sample(Some(&longer), LONG_TTL);
    create(&store, &their_key, &theirs).await;
    create(&store, &new_key(), &sample(None, LONG_TTL)).await;

    let expected = infos(&mine.iter().map(|(k, r)| (k, r)).collect::<Vec<_>>());
    assert_eq!(
        sessions_of(&store, &user).await,
        expected,
        "sessions_of({user:?})"
    );
    assert_eq!(
        sessions_of(&store, &longer).await,
        infos(&[(&their_key, &theirs)]),
        "sessions_of of a user whose name extends another's"
    );
    assert!(sessions_of(&store, &unique_user("nobody")).await.is_empty());
    assert!(
        sessions_of(&store, &user[..user.len() - 1])
            .await
            .is_empty(),
        "sessions_of must match whole user names, not prefixes"
    );
    for info in &expected {
        assert_eq!(
            info.fields,
            mine.iter()
                .find(|(k, _)| *k == info.key)
                .unwrap()
                .1
                .data
                .len()
        );
    }
}

/// Sessions removed with `delete` disappear from `sessions_of`.
pub async fn check_deleted_sessions_leave_the_user_index(store: Arc<dyn SessionStore>) {
    let user = unique_user("leaving");
    let a = key_for(&store, &user);
    let b = key_for(&store, &user);
    let ra = sample(Some(&user), LONG_TTL);
    let rb = sample(Some(&user), LONG_TTL);
    create(&store, &a, &ra).await;
    create(&store, &b, &rb).await;
    assert_eq!(
        sessions_of(&store, &user).await,
        infos(&[(&a, &ra), (&b, &rb)])
    );
    assert!(delete(&store, &a).await);
    assert_eq!(sessions_of(&store, &user).await, infos(&[(&b, &rb)]));
    assert!(delete(&store, &b).await);
    assert!(sessions_of(&store, &user).await.is_empty());
    assert_eq!(
        delete_user(&store, &user, None).await,
        0,
        "nothing left to delete"
    );
}

/// `delete_user` with `except` keeps that session and counts the others; without it,
/// removes all; other users are untouched.
pub async fn check_delete_user_with_and_without_except(store: Arc<dyn SessionStore>) {
    let user = unique_user("revoke");
    let other = unique_user("bystander");
    let keys: Vec<SessionKey> = (0..4).map(|_| key_for(&store, &user)).collect();
    let records: Vec<Record> = keys.iter().map(|_| sample(Some(&user), LONG_TTL)).collect();
    for (k, r) in keys.iter().zip(&records) {
        create(&store, k, r).await;
    }
    let other_key = key_for(&store, &other);
    let other_record = sample(Some(&other), LONG_TTL);
    create(&store, &other_key, &other_record).await;
    let anonymous = new_key();
    create(&store, &anonymous, &sample(None, LONG_TTL)).await;

    let current = keys[2];
    assert_eq!(
        delete_user(&store, &user, Some(&current)).await,
        3,
        "delete_user with except"
    );
    assert_eq!(
        sessions_of(&store, &user).await,
        infos(&[(&current, &records[2])])
    );
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            load(&store, k).await.is_some(),
            i == 2,
            "session {i} after delete_user"
        );
    }
    assert_record(
        load(&store, &other_key).await,
        &other_record,
        "another user's session",
    );
    assert!(
        load(&store, &anonymous).await.is_some(),
        "an anonymous session was deleted"
    );

    // An `except` that is not the user's session protects nothing.
    assert_eq!(
        delete_user(&store, &user, Some(&other_key)).await,
        1,
        "delete_user, foreign except"
    );
    assert!(load(&store, &current).await.is_none());
    assert!(
        load(&store, &other_key).await.is_some(),
        "except named another user's session"
    );
    assert_eq!(delete_user(&store, &user, None).await, 0, "nothing left");
    assert_eq!(delete_user(&store, &unique_user("nobody"), None).await, 0);
    assert_eq!(delete_user(&store, &other, None).await, 1);
    assert!(sessions_of(&store, &other).await.is_empty());
}
