//! Single-use challenges (DBSC): `put_challenge` and `take_challenge`.

use cloakroom_core::store::ErrorKind;

use super::*;
use crate::Challenges;

/// How many tasks race to take one challenge.
const RACERS: usize = 16;

/// A challenge is taken once: of 16 concurrent takes exactly one gets its session,
/// later takes get nothing; a live challenge is never overwritten by a second put.
pub async fn check_challenges_are_single_use_under_concurrency(store: Arc<dyn SessionStore>) {
    let (challenge, key, other) = (new_key().to_handle(), new_key(), new_key());
    let expires_at = Timestamp::now().plus(LONG_TTL);
    let put = |key: SessionKey| {
        let (store, challenge) = (store.clone(), challenge.clone());
        async move {
            store
                .put_challenge(&challenge, &key, expires_at)
                .await
                .unwrap_or_else(|e| panic!("put_challenge failed: {e}"))
        }
    };
    assert_eq!(put(key).await, Created::Done, "put of a fresh challenge");
    assert_eq!(
        put(other).await,
        Created::Collision,
        "a second put of a live challenge must not overwrite it"
    );
    let racers = (0..RACERS)
        .map(|_| {
            let (store, challenge) = (store.clone(), challenge.clone());
            tokio::spawn(async move { take_challenge(&store, &challenge).await })
        })
        .collect();
    let won: Vec<SessionKey> = join_all(racers).await.into_iter().flatten().collect();
    assert_eq!(
        won,
        vec![key],
        "{RACERS} concurrent takes of one challenge: exactly one must get its session"
    );
    assert_eq!(
        take_challenge(&store, &challenge).await,
        None,
        "a take after the winner"
    );
    assert_eq!(
        take_challenge(&store, &new_key().to_handle()).await,
        None,
        "a take of a challenge never put"
    );
}

/// A challenge past its expiry is not taken, and a put may reuse its text.
pub async fn check_challenges_expire(store: Arc<dyn SessionStore>) {
    let (challenge, key) = (new_key().to_handle(), new_key());
    let (kept, expires_at) = (new_key().to_handle(), Timestamp::now().plus(SHORT_TTL));
    for c in [&challenge, &kept] {
        let put = store.put_challenge(c, &key, expires_at).await;
        assert_eq!(
            put.unwrap_or_else(|e| panic!("put_challenge failed: {e}")),
            Created::Done
        );
    }
    wait_past(expires_at).await;
    assert_eq!(
        take_challenge(&store, &challenge).await,
        None,
        "take returned an expired challenge"
    );
    let later = Timestamp::now().plus(LONG_TTL);
    let put = store.put_challenge(&kept, &key, later).await;
    assert_eq!(
        put.unwrap_or_else(|e| panic!("put_challenge failed: {e}")),
        Created::Done,
        "a put over an expired challenge must succeed"
    );
    assert_eq!(
        take_challenge(&store, &kept).await,
        Some(key),
        "the renewed challenge"
    );
}

async fn take_challenge(store: &Arc<dyn SessionStore>, challenge: &str) -> Option<SessionKey> {
    store
        .take_challenge(challenge)
        .await
        .unwrap_or_else(|e| panic!("take_challenge failed: {e}"))
}

/// Both challenge checks when the store keeps challenges; otherwise, that it refuses them
/// with [`ErrorKind::Config`].
pub async fn check_challenges_with(store: Arc<dyn SessionStore>, mode: Challenges) {
    match mode {
        Challenges::Kept => {
            check_challenges_are_single_use_under_concurrency(store.clone()).await;
            check_challenges_expire(store).await;
        }
        Challenges::Refused => {
            let (challenge, expires_at) = (new_key().to_handle(), Timestamp::now().plus(LONG_TTL));
            let put = store
                .put_challenge(&challenge, &new_key(), expires_at)
                .await;
            let take = store.take_challenge(&challenge).await;
            for kind in [put.map(drop), take.map(drop)].map(|r| r.map_err(|e| e.kind())) {
                assert_eq!(kind, Err(ErrorKind::Config), "challenges must be refused");
            }
        }
    }
}
