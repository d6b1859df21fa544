//! Field-level merge: concurrent patches, no resurrection.

use super::*;

/// Two patches on different fields, each written without seeing the other: both survive.
pub async fn check_patches_on_different_fields_merge(store: Arc<dyn SessionStore>) {
    let key = new_key();
    let mut expected = sample(None, LONG_TTL);
    create(&store, &key, &expected).await;
    // Two "requests" that both started from the record as created.
    let a = patch(LONG_TTL).set("cart", "[1]").remove("count");
    let b = patch(LONG_TTL).set("theme", "\"dark\"");
    assert_eq!(apply(&store, &key, &a).await, Applied::Done);
    assert_eq!(apply(&store, &key, &b).await, Applied::Done);
    expected.apply(&a);
    expected.apply(&b);
    assert_record(
        load(&store, &key).await,
        &expected,
        "after two patches on different fields",
    );
}

/// 50 concurrent patches, each on its own field: every one of them survives.
pub async fn check_concurrent_patches_all_survive(store: Arc<dyn SessionStore>) {
    const N: usize = 50;
    let key = new_key();
    let record = sample(None, LONG_TTL);
    create(&store, &key, &record).await;
    let handles = (0..N)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let p = patch(LONG_TTL).set(format!("field-{i}"), format!("{{\"n\":{i}}}"));
                store.apply(&key, &p).await.expect("apply")
            })
        })
        .collect();
    let outcomes = join_all(handles).await;
    assert!(
        outcomes.iter().all(|o| *o == Applied::Done),
        "every concurrent apply on a live record must be Done: {outcomes:?}"
    );
    let loaded = load(&store, &key).await.expect("record");
    let lost: Vec<usize> = (0..N)
        .filter(|i| loaded.data.get(&format!("field-{i}")) != Some(&format!("{{\"n\":{i}}}")))
        .collect();
    assert!(
        lost.is_empty(),
        "concurrent patches lost the writes of fields {lost:?}"
    );
    assert_eq!(
        loaded.data.len(),
        N + record.data.len(),
        "unexpected fields appeared"
    );
    for (k, v) in &record.data {
        assert_eq!(
            loaded.data.get(k),
            Some(v),
            "field {k:?} of the original record was lost"
        );
    }
}

/// Patches racing a delete never bring the session back.
pub async fn check_no_resurrection_under_concurrency(store: Arc<dyn SessionStore>) {
    let user = unique_user("race");
    let key = key_for(&store, &user);
    create(&store, &key, &sample(Some(&user), LONG_TTL)).await;
    let mut handles = Vec::new();
    for i in 0..24 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            if i == 8 {
                store.delete(&key).await.expect("delete");
            } else if i % 2 == 0 {
                let p = patch(LONG_TTL).set(format!("f{i}"), "1");
                store.apply(&key, &p).await.expect("apply");
            } else {
                let now = Timestamp::now();
                store
                    .touch(&key, now, now.plus(LONG_TTL))
                    .await
                    .expect("touch");
            }
        }));
    }
    join_all(handles).await;
    // And surely after the delete (the scheduler may have run it last above).
    let now = Timestamp::now();
    touch(&store, &key, now, now.plus(LONG_TTL)).await;
    apply(&store, &key, &patch(LONG_TTL).set("late", "1")).await;
    assert!(
        load(&store, &key).await.is_none(),
        "a patch or touch resurrected a deleted session"
    );
    assert!(
        sessions_of(&store, &user).await.is_empty(),
        "a deleted session is still indexed"
    );
    assert!(!delete(&store, &key).await, "the session came back");
}
