//! The durable event log ([`EventLog`]): every logged change appears exactly once, in
//! commit order; a change that did not happen logs nothing; a reader behind what the store
//! keeps is told so.
//!
//! These checks run on a store built with a log ([`SessionStore::event_log`] answers);
//! [`event_log_tests!`](crate::event_log_tests) runs them all.

use cloakroom_core::session::{EndReason, Event, EventKind};
use cloakroom_core::store::{Admitted, Batch, EventLog, Limit, LimitPolicy, Position};

use super::*;

mod cost;
mod expiry;

pub use cost::*;
pub use expiry::*;

/// How many sessions the concurrent check logs at once.
const SESSIONS: usize = 16;

fn log(store: &Arc<dyn SessionStore>) -> &dyn EventLog {
    store
        .event_log()
        .expect("the store under test was built with an event log")
}

fn event(kind: EventKind, key: &SessionKey, user: Option<&str>) -> Event {
    Event {
        kind,
        session: *key,
        user: user.map(str::to_owned),
        at: Timestamp::now(),
    }
}

async fn read(store: &Arc<dyn SessionStore>, after: &Position, max: usize) -> Batch {
    log(store)
        .read(after, max)
        .await
        .unwrap_or_else(|e| panic!("reading the event log failed: {e}"))
}

/// The position after the last event logged so far.
async fn tail(store: &Arc<dyn SessionStore>) -> Position {
    log(store)
        .tail()
        .await
        .unwrap_or_else(|e| panic!("reading the event log failed: {e}"))
}

/// Every event after `from`, in small pages (so paging is exercised), with whether any read
/// reported a gap.
async fn events_after(store: &Arc<dyn SessionStore>, from: &Position) -> (Vec<Event>, bool) {
    let (mut out, mut gap, mut at) = (Vec::new(), false, from.clone());
    loop {
        let batch = read(store, &at, 7).await;
        gap |= batch.gap;
        if batch.events.is_empty() {
            assert_eq!(batch.next, at, "an empty read must not move the position");
            return (out, gap);
        }
        assert!(
            batch.events.len() <= 7,
            "a read returned more than it was asked for"
        );
        let last = batch.events.last().map(|e| e.position.clone());
        assert_eq!(
            Some(&batch.next),
            last.as_ref(),
            "next is the last event's position"
        );
        out.extend(batch.events.into_iter().map(|e| e.event));
        at = batch.next;
    }
}

/// The events about `keys`, as (kind, session, user), in log order.
fn about(events: &[Event], keys: &[SessionKey]) -> Vec<(EventKind, SessionKey, Option<String>)> {
    events
        .iter()
        .filter(|e| keys.contains(&e.session))
        .map(|e| (e.kind.clone(), e.session, e.user.clone()))
        .collect()
}

type Seen = (EventKind, SessionKey, Option<String>);

/// Asserts `got` (events in log order) is `want`. A store that places keys in shards
/// ([`SessionStore::placement`]: Redis Cluster) keeps its log in commit order per shard
/// and in no order across shards (a user's sessions and their events share the user's
/// shard; an anonymous session is in its key's): there, each shard's events (by their
/// session's key) must come in `want`'s order, and all of them.
fn assert_in_order(store: &Arc<dyn SessionStore>, got: &[Seen], want: &[Seen], what: &str) {
    let Some(placement) = store.placement() else {
        assert_eq!(got, want, "{what}");
        return;
    };
    let shard = |seen: &[Seen], s: u16| -> Vec<Seen> {
        (seen.iter())
            .filter(|(_, k, _)| placement.shard_of_key(k) == s)
            .cloned()
            .collect()
    };
    for s in 0..placement.shards() {
        assert_eq!(shard(got, s), shard(want, s), "{what} (shard {s}): {got:?}");
    }
    assert_eq!(got.len(), want.len(), "{what}: {got:?}");
}

async fn create_logged(
    store: &Arc<dyn SessionStore>,
    key: &SessionKey,
    record: &Record,
    limit: Option<&Limit>,
    kind: EventKind,
) -> Admitted {
    let user = record.meta.user.as_deref();
    log(store)
        .create_logged(key, record, limit, &event(kind, key, user))
        .await
        .unwrap_or_else(|e| panic!("create_logged failed: {e}"))
}

async fn delete_logged(store: &Arc<dyn SessionStore>, key: &SessionKey, reason: EndReason) -> bool {
    log(store)
        .delete_logged(key, &event(EventKind::Ended(reason), key, None))
        .await
        .unwrap_or_else(|e| panic!("delete_logged failed: {e}"))
}

fn done() -> Admitted {
    Admitted::Done { ended: Vec::new() }
}

/// A session's life through the log: created, rotated (the old record deleted unlogged, as
/// the engine does), logged out; a user's sessions revoked at once; the limit ending one.
/// Each appears once, in order, naming the user from the record, and a listing and a purge
/// afterwards log no expiry for any of them.
pub async fn check_event_log_records_each_change_once(store: Arc<dyn SessionStore>) {
    let from = tail(&store).await;
    let user = unique_user("log");
    let (a, b) = (key_for(&store, &user), key_for(&store, &user));
    let record = sample(Some(&user), LONG_TTL);
    assert_eq!(
        create_logged(&store, &a, &record, None, EventKind::Created).await,
        done()
    );
    let rotated = EventKind::Rotated { previous: a };
    assert_eq!(
        create_logged(&store, &b, &record, None, rotated.clone()).await,
        done()
    );
    assert!(
        delete(&store, &a).await,
        "the rotated-away record was there"
    );
    assert!(delete_logged(&store, &b, EndReason::Logout).await);

    // Revoking all but one of three.
    let [c, d, e] = [(); 3].map(|()| key_for(&store, &user));
    for k in [&c, &d, &e] {
        create_logged(&store, k, &record, None, EventKind::Created).await;
    }
    let revoked = log(&store)
        .delete_user_logged(&user, Some(&e), EndReason::Revoked, Timestamp::now())
        .await
        .unwrap_or_else(|e| panic!("delete_user_logged failed: {e}"));
    assert_eq!(revoked, 2);

    // The limit (max 1) ends `e` to admit `f`.
    let f = key_for(&store, &user);
    let limit = Limit {
        max: 1,
        policy: LimitPolicy::EndLeastRecentlySeen,
        replacing: None,
    };
    let admitted = create_logged(&store, &f, &record, Some(&limit), EventKind::Created).await;
    assert_eq!(admitted, Admitted::Done { ended: vec![e] });
    // What notices expiries (a listing, the purge) takes none of these ends for one.
    store
        .sessions_of(&user)
        .await
        .unwrap_or_else(|e| panic!("sessions_of failed: {e}"));
    store
        .purge_expired()
        .await
        .unwrap_or_else(|e| panic!("purge_expired failed: {e}"));

    let (events, gap) = events_after(&store, &from).await;
    assert!(!gap, "nothing was dropped: no gap");
    let u = Some(user.clone());
    let mut got = about(&events, &[a, b, c, d, e, f]);
    // delete_user's events may come in any order among themselves.
    let revoked_at = got
        .iter()
        .position(|(k, ..)| *k == EventKind::Ended(EndReason::Revoked));
    if let Some(i) = revoked_at.filter(|i| i + 1 < got.len()) {
        got[i..i + 2].sort_by_key(|(_, k, _)| *k != c);
    }
    let want = vec![
        (EventKind::Created, a, u.clone()),
        (rotated, b, u.clone()),
        (EventKind::Ended(EndReason::Logout), b, u.clone()),
        (EventKind::Created, c, u.clone()),
        (EventKind::Created, d, u.clone()),
        (EventKind::Created, e, u.clone()),
        (EventKind::Ended(EndReason::Revoked), c, u.clone()),
        (EventKind::Ended(EndReason::Revoked), d, u.clone()),
        (EventKind::Ended(EndReason::Limit), e, u.clone()),
        (EventKind::Created, f, u),
    ];
    assert_eq!(
        got, want,
        "the log must hold each change once, in commit order"
    );
}

/// A change that did not happen logs nothing: a create that collides, a delete of nothing,
/// a login the limit refuses, a revocation of a user with no sessions.
pub async fn check_event_log_skips_changes_that_did_not_happen(store: Arc<dyn SessionStore>) {
    let from = tail(&store).await;
    let user = unique_user("nolog");
    let (a, missing, refused) = (key_for(&store, &user), new_key(), key_for(&store, &user));
    let record = sample(Some(&user), LONG_TTL);
    create_logged(&store, &a, &record, None, EventKind::Created).await;
    let again = create_logged(&store, &a, &record, None, EventKind::Created).await;
    assert_eq!(again, Admitted::Collision);
    assert!(!delete_logged(&store, &missing, EndReason::Logout).await);
    let limit = Limit {
        max: 1,
        policy: LimitPolicy::RefuseNew,
        replacing: None,
    };
    let admitted = create_logged(&store, &refused, &record, Some(&limit), EventKind::Created);
    assert_eq!(admitted.await, Admitted::Refused);
    let nobody = unique_user("nobody");
    let none = log(&store)
        .delete_user_logged(&nobody, None, EndReason::Revoked, Timestamp::now())
        .await
        .unwrap_or_else(|e| panic!("delete_user_logged failed: {e}"));
    assert_eq!(none, 0);
    let (events, _) = events_after(&store, &from).await;
    let got = about(&events, &[a, missing, refused]);
    assert_eq!(
        got,
        vec![(EventKind::Created, a, Some(user))],
        "only the one create that happened is logged"
    );
    assert!(events.iter().all(|e| e.user.as_deref() != Some(&nobody)));
}

/// Many sessions created, rotated and ended at once, while the user's sessions are listed:
/// each change is logged exactly once (no deletion taken for an expiry), and each session's
/// events are in the order its changes committed.
pub async fn check_event_log_concurrent_changes_each_once(store: Arc<dyn SessionStore>) {
    let from = tail(&store).await;
    let user = unique_user("busy");
    let handles = (0..SESSIONS)
        .map(|_| {
            let (store, user) = (store.clone(), user.clone());
            let record = sample(Some(&user), LONG_TTL);
            tokio::spawn(async move {
                let (first, second) = (key_for(&store, &user), key_for(&store, &user));
                create_logged(&store, &first, &record, None, EventKind::Created).await;
                let rotated = EventKind::Rotated { previous: first };
                create_logged(&store, &second, &record, None, rotated).await;
                delete(&store, &first).await;
                assert!(delete_logged(&store, &second, EndReason::Logout).await);
                (first, second)
            })
        })
        .collect();
    // Listings of the user run meanwhile: what notices expiries must not take a rotation's
    // or a logout's deletion for one.
    let listings = (0..SESSIONS)
        .map(|_| {
            let (store, user) = (store.clone(), user.clone());
            tokio::spawn(async move {
                for _ in 0..4 {
                    store
                        .sessions_of(&user)
                        .await
                        .unwrap_or_else(|e| panic!("sessions_of failed: {e}"));
                }
            })
        })
        .collect();
    let pairs = join_all(handles).await;
    join_all(listings).await;
    let (events, gap) = events_after(&store, &from).await;
    assert!(!gap);
    for (first, second) in pairs {
        let got: Vec<EventKind> = about(&events, &[first, second])
            .into_iter()
            .map(|(k, ..)| k)
            .collect();
        let want = vec![
            EventKind::Created,
            EventKind::Rotated { previous: first },
            EventKind::Ended(EndReason::Logout),
        ];
        assert_eq!(got, want, "one session's events, once each, in order");
    }
}

/// A reader whose position is older than what the store keeps is told it lost events; a
/// reader at the tail is not. The store under test keeps few events (`cap`, see
/// [`event_log_tests!`](crate::event_log_tests)); a purge may be what trims it.
pub async fn check_event_log_reports_gaps(store: Arc<dyn SessionStore>) {
    let user = unique_user("gap");
    let record = sample(Some(&user), LONG_TTL);
    let mut last = None;
    for _ in 0..300 {
        let key = key_for(&store, &user);
        create_logged(&store, &key, &record, None, EventKind::Created).await;
        last = Some(key);
    }
    store
        .purge_expired()
        .await
        .unwrap_or_else(|e| panic!("purge_expired failed: {e}"));
    let batch = read(&store, &Position::start(), 1000).await;
    assert!(
        batch.gap,
        "a reader from the start after a trim must be told of the gap"
    );
    assert!(
        batch.events.len() < 300,
        "the store kept all 300 events past its cap"
    );
    assert_eq!(
        batch.events.last().map(|e| e.event.session),
        last,
        "the newest event is kept"
    );
    let at_tail = read(&store, &batch.next, 1000).await;
    assert!(
        at_tail.events.is_empty() && !at_tail.gap,
        "no gap at the tail"
    );
}
/// The engine makes every lifecycle change through the log: a new anonymous session, its
/// login (a rotation), its logout, and a revocation of the user's other sessions, each
/// logged once; with a listener that panics on every event (a hook that never ran to the
/// end, as after a crash), no logged event is lost.
pub async fn check_event_log_through_the_engine(store: Arc<dyn SessionStore>) {
    use cloakroom_core::cookie::decode_ticket;
    use cloakroom_core::session::SessionSettings;
    use cloakroom_core::{Key, KeyRing};

    let keys = KeyRing::single(Key::generate());
    let engine = SessionSettings::new(Arc::clone(&store), keys.clone())
        .with_listener(|_: &Event| panic!("a hook that fails after every commit"))
        .build();
    let key_of = |set_cookie: Option<String>| {
        let cookie = set_cookie.expect("the commit sets a cookie");
        let pair = cookie.split(';').next().unwrap_or_default().to_owned();
        let (name, value) = pair.split_once('=').expect("name=ticket");
        let id = decode_ticket(&keys, name, value).expect("a ticket of ours");
        (pair, id.key())
    };
    let from = tail(&store).await;
    let user = unique_user("engine");

    let session = engine.session(None);
    session.set("cart", &3).await.expect("set");
    let (pair, anon) = key_of(
        engine
            .commit(&session, None)
            .await
            .expect("commit")
            .set_cookie,
    );
    let session = engine.session(Some(&pair));
    session.login(&user).await.expect("login");
    let (pair, login) = key_of(
        engine
            .commit(&session, None)
            .await
            .expect("commit")
            .set_cookie,
    );
    let other = engine.session(None);
    other.login(&user).await.expect("login");
    let (_, other_key) = key_of(
        engine
            .commit(&other, None)
            .await
            .expect("commit")
            .set_cookie,
    );
    let revoked = engine
        .revoke_all(&user, Some(&login))
        .await
        .expect("revoke_all");
    assert_eq!(revoked, 1);
    let session = engine.session(Some(&pair));
    session.logout().await.expect("logout");
    engine.commit(&session, None).await.expect("commit");

    let (events, _) = events_after(&store, &from).await;
    let u = Some(user.clone());
    let got = about(&events, &[anon, login, other_key]);
    let want = vec![
        (EventKind::Created, anon, None),
        (EventKind::Rotated { previous: anon }, login, u.clone()),
        (EventKind::Created, other_key, u.clone()),
        (EventKind::Ended(EndReason::Revoked), other_key, u.clone()),
        (EventKind::Ended(EndReason::Logout), login, u),
    ];
    assert_in_order(
        &store,
        &got,
        &want,
        "the engine's changes, each logged once",
    );
}
