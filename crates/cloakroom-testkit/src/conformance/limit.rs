//! The concurrent-session limit: `create_limited`.

use cloakroom_core::store::{Admitted, Limit, LimitPolicy};

use super::*;

/// How many logins race in the concurrent checks, and the limit they race for.
const RACERS: usize = 20;
const MAX: usize = 3;

fn limit(policy: LimitPolicy) -> Limit {
    Limit {
        max: MAX,
        policy,
        replacing: None,
    }
}

/// A logged-in record of `user` last seen `seen` ms after a common start.
fn login_record(user: &str, seen: i64) -> Record {
    let mut record = sample(Some(user), LONG_TTL);
    record.meta.last_seen = Timestamp::from_millis(record.meta.last_seen.as_millis() + seen);
    record
}

async fn create_limited(
    store: &Arc<dyn SessionStore>,
    key: &SessionKey,
    record: &Record,
    limit: &Limit,
) -> Admitted {
    store
        .create_limited(key, record, limit)
        .await
        .unwrap_or_else(|e| panic!("create_limited failed: {e}"))
}

/// `RACERS` logins of one user at once, as `(key, outcome)`.
async fn race(
    store: &Arc<dyn SessionStore>,
    user: &str,
    policy: LimitPolicy,
) -> Vec<(SessionKey, Admitted)> {
    let handles = (0..RACERS)
        .map(|i| {
            let store = store.clone();
            let record = login_record(user, i as i64);
            let key = key_for(&store, user);
            tokio::spawn(async move {
                let outcome = create_limited(&store, &key, &record, &limit(policy)).await;
                (key, outcome)
            })
        })
        .collect();
    join_all(handles).await
}

/// The tombstone of a session the limit ended: no user, the reason, the old expiry.
#[track_caller]
fn assert_tombstone(record: Option<Record>, what: &str) {
    let Some(record) = record else {
        panic!("{what}: an ended session left no tombstone (its browser is never told why)");
    };
    assert!(
        record.is_ended(),
        "{what}: expected a tombstone, found a record with user {:?} and fields {:?}",
        record.meta.user,
        record.data.keys().collect::<Vec<_>>()
    );
}

/// 20 concurrent logins of one user with a limit of 3 ending the least recently seen leave
/// exactly 3 live sessions; every login is admitted; the 17 ended are tombstones.
pub async fn check_limit_race_ends_the_least_recently_seen(store: Arc<dyn SessionStore>) {
    let user = unique_user("limit-race");
    let outcomes = race(&store, &user, LimitPolicy::EndLeastRecentlySeen).await;
    let mut ended = HashSet::new();
    for (_, outcome) in &outcomes {
        match outcome {
            Admitted::Done { ended: e } => ended.extend(e.iter().copied()),
            other => panic!("a login under an ending limit was not admitted: {other:?}"),
        }
    }
    let live = sessions_of(&store, &user).await;
    assert_eq!(
        live.len(),
        MAX,
        "{RACERS} concurrent logins with a limit of {MAX} left {} live sessions",
        live.len()
    );
    assert_eq!(
        ended.len(),
        RACERS - MAX,
        "sessions reported ended: {} (expected {})",
        ended.len(),
        RACERS - MAX
    );
    for (key, _) in &outcomes {
        let listed = live.iter().any(|i| i.key == *key);
        assert_ne!(
            listed,
            ended.contains(key),
            "a session both live and ended, or neither"
        );
        if !listed {
            assert_tombstone(load(&store, key).await, "an ended racer");
        }
    }
}

/// 20 concurrent logins of one user with a refusing limit of 3: exactly 3 admitted, 17
/// refused, 3 live sessions, nothing ended.
pub async fn check_limit_race_refuses_past_the_limit(store: Arc<dyn SessionStore>) {
    let user = unique_user("limit-refuse");
    let outcomes = race(&store, &user, LimitPolicy::RefuseNew).await;
    let mut admitted = Vec::new();
    for (key, outcome) in &outcomes {
        match outcome {
            Admitted::Done { ended } => {
                assert!(ended.is_empty(), "a refusing limit ended sessions");
                admitted.push(*key);
            }
            Admitted::Refused => {
                assert!(
                    load(&store, key).await.is_none(),
                    "a refused login was written"
                );
            }
            Admitted::Collision => panic!("a fresh key collided"),
        }
    }
    assert_eq!(
        admitted.len(),
        MAX,
        "logins admitted under a refusing limit of {MAX}"
    );
    let mut live: Vec<SessionKey> = sessions_of(&store, &user)
        .await
        .iter()
        .map(|i| i.key)
        .collect();
    live.sort();
    admitted.sort();
    assert_eq!(
        live, admitted,
        "the live sessions are not the admitted ones"
    );
}

/// The session ended is the least recently seen (ties by creation); its tombstone keeps its
/// expiry and is no session (not listed by `sessions_of` or `scan`); other users, anonymous
/// sessions and the record a renewal replaces are not counted; a collision ends nothing.
pub async fn check_limit_ends_in_last_seen_order(store: Arc<dyn SessionStore>) {
    let user = unique_user("limit-order");
    let end = limit(LimitPolicy::EndLeastRecentlySeen);
    // Seen at 30, 10, 20 (ms after a common start, fixed here: a slow create must not
    // reorder them): the one seen at 10 goes first.
    let start = login_record(&user, 0).meta.last_seen;
    let login_record = |user: &str, seen: i64| {
        let mut record = login_record(user, 0);
        record.meta.last_seen = Timestamp::from_millis(start.as_millis() + seen);
        record
    };
    let keys: Vec<SessionKey> = (0..MAX).map(|_| key_for(&store, &user)).collect();
    let mut records = Vec::new();
    for (key, seen) in keys.iter().zip([30, 10, 20]) {
        let record = login_record(&user, seen);
        let outcome = create_limited(&store, key, &record, &end).await;
        assert_eq!(
            outcome,
            Admitted::Done { ended: Vec::new() },
            "under the limit"
        );
        records.push(record);
    }
    // Someone else's session and an anonymous one do not count.
    let other = unique_user("other");
    create(
        &store,
        &key_for(&store, &other),
        &sample(Some(&other), LONG_TTL),
    )
    .await;
    create(&store, &new_key(), &sample(None, LONG_TTL)).await;
    // A collision ends nothing.
    let collided = create_limited(&store, &keys[0], &login_record(&user, 99), &end).await;
    assert_eq!(
        collided,
        Admitted::Collision,
        "create_limited over a live key"
    );
    assert_eq!(
        sessions_of(&store, &user).await.len(),
        MAX,
        "a collision ended a session"
    );
    // A renewal of a session already counted ends nobody.
    let renewal = Limit {
        replacing: Some(keys[2]),
        ..end
    };
    let renewed = key_for(&store, &user);
    let outcome = create_limited(&store, &renewed, &login_record(&user, 40), &renewal).await;
    assert_eq!(
        outcome,
        Admitted::Done { ended: Vec::new() },
        "a renewal is not counted twice"
    );
    assert!(delete(&store, &keys[2]).await);

    // Now seen at 30, 10, 40: a new login ends the one seen at 10.
    let fourth = key_for(&store, &user);
    let outcome = create_limited(&store, &fourth, &login_record(&user, 50), &end).await;
    assert_eq!(
        outcome,
        Admitted::Done {
            ended: vec![keys[1]]
        },
        "the least recently seen session must be ended"
    );
    let tombstone = load(&store, &keys[1]).await;
    assert_tombstone(tombstone.clone(), "the ended session");
    let tombstone = tombstone.unwrap_or_default();
    assert_eq!(
        tombstone.meta.expires_at, records[1].meta.expires_at,
        "a tombstone keeps the ended session's expiry"
    );
    let mut expected = vec![keys[0], renewed, fourth];
    expected.sort();
    let listed: Vec<SessionKey> = sessions_of(&store, &user)
        .await
        .iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(listed, expected, "sessions_of after an ending login");
    assert!(
        !scan_all(&store, 50).await.contains_key(&keys[1]),
        "scan listed a tombstone"
    );

    // Ties of last seen go by creation: the earlier-created one ends.
    let tied = unique_user("limit-tie");
    let one = Limit { max: 2, ..end };
    let (a, b) = (key_for(&store, &tied), key_for(&store, &tied));
    let mut older = login_record(&tied, 0);
    older.meta.created_at = Timestamp::from_millis(older.meta.created_at.as_millis() - 10);
    create_limited(&store, &b, &login_record(&tied, 0), &one).await;
    create_limited(&store, &a, &older, &one).await;
    let outcome = create_limited(
        &store,
        &key_for(&store, &tied),
        &login_record(&tied, 5),
        &one,
    )
    .await;
    assert_eq!(
        outcome,
        Admitted::Done { ended: vec![a] },
        "a tie must end the older session"
    );
}

/// For a store that cannot enforce the limit ([`SessionLimit::Refused`](crate::SessionLimit)):
/// a limited create of a logged-in record fails with a config error and writes nothing; an
/// anonymous one is a plain create.
pub async fn check_limit_refused_as_config(store: Arc<dyn SessionStore>) {
    let user = unique_user("limit-refused");
    let key = new_key();
    let end = limit(LimitPolicy::EndLeastRecentlySeen);
    let err = store
        .create_limited(&key, &login_record(&user, 0), &end)
        .await
        .expect_err("a store without the limit admitted a limited login");
    assert_eq!(err.kind(), cloakroom_core::store::ErrorKind::Config);
    assert!(
        load(&store, &key).await.is_none(),
        "a refused login was written"
    );
    let anonymous = create_limited(&store, &key, &sample(None, LONG_TTL), &end).await;
    assert_eq!(anonymous, Admitted::Done { ended: Vec::new() });
}
