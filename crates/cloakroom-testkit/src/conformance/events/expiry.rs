//! Expiry in the event log: a session that expires is logged as ended once, however the
//! store comes to notice it ([`ExpiryEvents`]).

use super::*;

/// Whether a store logs the expiry of sessions it purges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExpiryEvents {
    /// `purge_expired` logs one `Ended(Expired)` per session it removes (memory, SQLite,
    /// PostgreSQL).
    #[default]
    Purged,
    /// The backend expires records by itself (Redis): the store logs the expiry of a
    /// logged-in session when it notices it (listing or revoking the user's sessions, the
    /// limit, the purge's sweep of the user indexes), and never an anonymous session's.
    Noticed,
}
/// The purge logs each session it removes as expired, once, a logged-in one under its user
/// and an anonymous one without; a rotation forward and a limit tombstone are no sessions
/// and log nothing when they expire (the tombstone's session was logged as ended by the
/// limit already).
pub async fn check_event_log_purge_logs_expiry(store: Arc<dyn SessionStore>, expiry: ExpiryEvents) {
    use cloakroom_core::store::{Limit, LimitPolicy};

    let from = tail(&store).await;
    let (user, other) = (unique_user("expire"), unique_user("expire-limit"));
    let [anon, fwd] = [(); 2].map(|()| new_key());
    let key = key_for(&store, &user);
    let [old, new] = [(); 2].map(|()| key_for(&store, &other));
    let short = |user: Option<&str>| {
        let now = Timestamp::now();
        let mut r = Record::new(now, now.plus(SHORT_TTL));
        r.meta.user = user.map(str::to_owned);
        r
    };
    create_logged(&store, &key, &short(Some(&user)), None, EventKind::Created).await;
    create_logged(&store, &anon, &short(None), None, EventKind::Created).await;
    let mut forward = short(None);
    forward.data.insert("__cr.fwd".into(), "\"x\"".into());
    create(&store, &fwd, &forward).await;
    create_logged(&store, &old, &short(Some(&other)), None, EventKind::Created).await;
    // `old` is ended by the limit: a tombstone with its short expiry stays under its key.
    let limit = Limit {
        max: 1,
        policy: LimitPolicy::EndLeastRecentlySeen,
        replacing: None,
    };
    let mut long = short(Some(&other));
    long.meta.last_seen = Timestamp::from_millis(long.meta.last_seen.as_millis() + 1);
    long.meta.expires_at = Timestamp::now().plus(LONG_TTL);
    let admitted = create_logged(&store, &new, &long, Some(&limit), EventKind::Created).await;
    assert_eq!(admitted, Admitted::Done { ended: vec![old] });
    tokio::time::sleep(SHORT_TTL + GRACE).await;
    for _ in 0..2 {
        store
            .purge_expired()
            .await
            .unwrap_or_else(|e| panic!("purge_expired failed: {e}"));
    }
    let (events, _) = events_after(&store, &from).await;
    let got = about(&events, &[key, anon, fwd, old, new]);
    let expired = EventKind::Ended(EndReason::Expired);
    let (u, o) = (Some(user.clone()), Some(other.clone()));
    let first_expired = got.iter().position(|(k, ..)| *k == expired);
    assert!(
        first_expired.is_none_or(|i| got[i..].iter().all(|(k, ..)| *k == expired)),
        "expiry is logged by the purge, after every change before it: {got:?}"
    );
    let (got_expired, got_rest): (Vec<_>, Vec<_>) =
        got.into_iter().partition(|(k, ..)| *k == expired);
    let want_rest = vec![
        (EventKind::Created, key, u.clone()),
        (EventKind::Created, anon, None),
        (EventKind::Created, old, o.clone()),
        (EventKind::Ended(EndReason::Limit), old, o.clone()),
        (EventKind::Created, new, o),
    ];
    assert_in_order(&store, &got_rest, &want_rest, "the changes, in order");
    // One purge's expiry events come in its own order.
    let mut got_expired = got_expired;
    got_expired.sort_by_key(|(_, k, _)| *k != key);
    let want_expired = match expiry {
        ExpiryEvents::Purged => vec![(expired.clone(), key, u), (expired, anon, None)],
        ExpiryEvents::Noticed => vec![(expired, key, u)],
    };
    assert_eq!(
        got_expired, want_expired,
        "the purge's expiry events ({expiry:?})"
    );
}

/// A logged-in session that expires is logged as expired once, with its user, when the store
/// notices (the purge, or listing the user's sessions; on a store that notices expiries in
/// the user index, also a login under the limit and a revocation of the user's other
/// sessions), however many notice it at once: these run together, then a listing and a
/// purge again. The user's live
/// session is left alone; an anonymous session's expiry is logged where the store says so
/// ([`ExpiryEvents`]).
pub async fn check_event_log_expiry_logged_once(
    store: Arc<dyn SessionStore>,
    expiry: ExpiryEvents,
) {
    let from = tail(&store).await;
    let user = unique_user("noticed");
    let [gone, kept] = [(); 2].map(|()| key_for(&store, &user));
    let anon = new_key();
    let short = |user: Option<&str>| {
        let now = Timestamp::now();
        let mut r = Record::new(now, now.plus(SHORT_TTL));
        r.meta.user = user.map(str::to_owned);
        r
    };
    create_logged(&store, &gone, &short(Some(&user)), None, EventKind::Created).await;
    let long = sample(Some(&user), LONG_TTL);
    create_logged(&store, &kept, &long, None, EventKind::Created).await;
    create_logged(&store, &anon, &short(None), None, EventKind::Created).await;
    tokio::time::sleep(SHORT_TTL + GRACE).await;

    let list = |store: Arc<dyn SessionStore>, user: String| async move {
        let infos = store
            .sessions_of(&user)
            .await
            .unwrap_or_else(|e| panic!("sessions_of failed: {e}"));
        let keys: Vec<SessionKey> = infos.iter().map(|i| i.key).collect();
        assert!(!keys.contains(&gone), "an expired session is not listed");
        assert!(keys.contains(&kept), "the live session is listed");
    };
    let purge = |store: Arc<dyn SessionStore>| async move {
        store
            .purge_expired()
            .await
            .unwrap_or_else(|e| panic!("purge_expired failed: {e}"));
    };
    let mut noticers = vec![
        tokio::spawn(list(store.clone(), user.clone())),
        tokio::spawn(list(store.clone(), user.clone())),
        tokio::spawn(purge(store.clone())),
        tokio::spawn(purge(store.clone())),
    ];
    if expiry == ExpiryEvents::Noticed {
        // A store that notices expiries in the user index also does so when a login under
        // the limit prunes it and when the user's other sessions are revoked.
        let (store, user) = (store.clone(), user.clone());
        noticers.push(tokio::spawn(async move {
            let limit = Limit {
                max: 10,
                policy: LimitPolicy::EndLeastRecentlySeen,
                replacing: None,
            };
            let (other, record) = (key_for(&store, &user), sample(Some(&user), LONG_TTL));
            create_logged(&store, &other, &record, Some(&limit), EventKind::Created).await;
            log(&store)
                .delete_user_logged(&user, Some(&kept), EndReason::Revoked, Timestamp::now())
                .await
                .unwrap_or_else(|e| panic!("delete_user_logged failed: {e}"));
        }));
    }
    join_all(noticers).await;
    list(store.clone(), user.clone()).await;
    purge(store.clone()).await;

    let (events, _) = events_after(&store, &from).await;
    let got = about(&events, &[gone, kept, anon]);
    let (u, expired) = (Some(user.clone()), EventKind::Ended(EndReason::Expired));
    let mut want = vec![
        (EventKind::Created, gone, u.clone()),
        (EventKind::Created, kept, u.clone()),
        (EventKind::Created, anon, None),
    ];
    let (mut got_expired, got_rest): (Vec<_>, Vec<_>) =
        got.into_iter().partition(|(k, ..)| *k == expired);
    assert_in_order(
        &store,
        &got_rest,
        &want,
        "the creations, in order, and no end of the live one",
    );
    got_expired.sort_by_key(|(_, k, _)| *k != gone);
    want = match expiry {
        ExpiryEvents::Purged => vec![(expired.clone(), gone, u), (expired, anon, None)],
        ExpiryEvents::Noticed => vec![(expired, gone, u)],
    };
    assert_eq!(
        got_expired, want,
        "each expiry logged exactly once, with the user ({expiry:?})"
    );
}
