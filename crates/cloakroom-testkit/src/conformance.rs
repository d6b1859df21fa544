//! The store conformance checks. Each `check_*` function panics (with a message naming what
//! broke) when the store breaks the [`SessionStore`] contract.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use cloakroom_core::store::MemoryStore;
//!
//! cloakroom_testkit::check_create_then_load(Arc::new(MemoryStore::new())).await;
//! # });
//! ```
//!
//! Rules the checks follow so that they can share a backend: every key is fresh and random,
//! every user name is unique to the check, and listings ([`SessionStore::scan`],
//! [`SessionStore::purge_expired`]) are only checked for the check's own sessions. Expiry is
//! tested with real clocks and short sleeps (a few hundred milliseconds).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cloakroom_core::session::{SessionId, SessionKey, Timestamp};
use cloakroom_core::store::{
    Applied, Created, Cursor, Fields, Meta, Patch, Record, SessionInfo, SessionStore,
};

use crate::Purge;

/// How long short-lived records live in the expiry checks.
const SHORT_TTL: Duration = Duration::from_millis(300);
/// How long past a record's expiry the checks wait before expecting it gone.
const GRACE: Duration = Duration::from_millis(250);
/// Lifetime of the records that must stay live for the whole check.
const LONG_TTL: Duration = Duration::from_secs(600);

// ---------------------------------------------------------------------------------------
// Helpers

fn new_key() -> SessionKey {
    SessionId::generate().key()
}

/// A user name no other check (or run) uses: `prefix` plus random characters.
fn unique_user(prefix: &str) -> String {
    format!("{prefix}-{}", &new_key().to_handle()[..16])
}

fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A record whose every meta field differs from the others (so a store that mixes up
/// columns is caught), with two fields of data.
fn sample(user: Option<&str>, ttl: Duration) -> Record {
    let now = Timestamp::now();
    Record {
        data: fields(&[("name", "\"Ada\""), ("count", "3")]),
        meta: Meta {
            created_at: Timestamp(now.0 - 5_000),
            last_seen: Timestamp(now.0 - 1_000),
            expires_at: now.plus(ttl),
            user: user.map(str::to_owned),
            user_agent: Some("Mozilla/5.0 (X11; conformance) \"quoted\"".to_owned()),
            remember: true,
        },
    }
}

fn patch(ttl: Duration) -> Patch {
    let now = Timestamp::now();
    Patch::new(Timestamp(now.0 + 7), now.plus(ttl))
}

async fn create(store: &Arc<dyn SessionStore>, key: &SessionKey, record: &Record) {
    let created = store
        .create(key, record)
        .await
        .unwrap_or_else(|e| panic!("create failed: {e}"));
    assert_eq!(created, Created::Done, "create of a fresh key must succeed");
}

async fn load(store: &Arc<dyn SessionStore>, key: &SessionKey) -> Option<Record> {
    store
        .load(key)
        .await
        .unwrap_or_else(|e| panic!("load failed: {e}"))
}

async fn apply(store: &Arc<dyn SessionStore>, key: &SessionKey, patch: &Patch) -> Applied {
    store
        .apply(key, patch)
        .await
        .unwrap_or_else(|e| panic!("apply failed: {e}"))
}

async fn touch(
    store: &Arc<dyn SessionStore>,
    key: &SessionKey,
    last_seen: Timestamp,
    expires_at: Timestamp,
) -> Applied {
    store
        .touch(key, last_seen, expires_at)
        .await
        .unwrap_or_else(|e| panic!("touch failed: {e}"))
}

async fn delete(store: &Arc<dyn SessionStore>, key: &SessionKey) -> bool {
    store
        .delete(key)
        .await
        .unwrap_or_else(|e| panic!("delete failed: {e}"))
}

async fn sessions_of(store: &Arc<dyn SessionStore>, user: &str) -> Vec<SessionInfo> {
    let mut list = store
        .sessions_of(user)
        .await
        .unwrap_or_else(|e| panic!("sessions_of({user:?}) failed: {e}"));
    list.sort_by_key(|i| i.key);
    list
}

async fn delete_user(
    store: &Arc<dyn SessionStore>,
    user: &str,
    except: Option<&SessionKey>,
) -> u64 {
    store
        .delete_user(user, except)
        .await
        .unwrap_or_else(|e| panic!("delete_user({user:?}) failed: {e}"))
}

/// The infos `sessions_of` should return, sorted by key like [`sessions_of`] sorts them.
fn infos(records: &[(&SessionKey, &Record)]) -> Vec<SessionInfo> {
    let mut list: Vec<SessionInfo> = records.iter().map(|(k, r)| r.info(**k)).collect();
    list.sort_by_key(|i| i.key);
    list
}

/// Compares data and meta separately: `Record`'s Debug hides values, these are test values.
#[track_caller]
fn assert_record(actual: Option<Record>, expected: &Record, what: &str) {
    let Some(actual) = actual else {
        panic!("{what}: expected a record, load returned None");
    };
    if actual.data != expected.data {
        let a: BTreeMap<_, _> = actual
            .data
            .iter()
            .map(|(k, v)| (k, abbreviate(v)))
            .collect();
        let e: BTreeMap<_, _> = expected
            .data
            .iter()
            .map(|(k, v)| (k, abbreviate(v)))
            .collect();
        panic!("{what}: data differs\n  loaded:   {a:?}\n  expected: {e:?}");
    }
    assert_eq!(actual.meta, expected.meta, "{what}: meta differs");
}

fn abbreviate(v: &str) -> String {
    if v.len() > 80 {
        let mut end = 60;
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &v[..end], v.len())
    } else {
        v.to_owned()
    }
}

/// Sleeps until `t` has passed by [`GRACE`].
async fn wait_past(t: Timestamp) {
    tokio::time::sleep(Timestamp::now().until(t) + GRACE).await;
}

/// Follows scan cursors to the end with pages of `limit`; fails on a key seen twice, an
/// oversized page or an expired session listed.
async fn scan_all(store: &Arc<dyn SessionStore>, limit: usize) -> HashMap<SessionKey, SessionInfo> {
    let mut seen = HashMap::new();
    let mut cursor = Cursor::start();
    loop {
        let before = Timestamp::now();
        let page = store
            .scan(cursor.clone(), limit)
            .await
            .unwrap_or_else(|e| panic!("scan failed: {e}"));
        assert!(
            page.sessions.len() <= limit,
            "scan returned {} sessions with limit {limit}",
            page.sessions.len()
        );
        for info in page.sessions {
            assert!(
                info.meta.expires_at > before,
                "scan listed a session that had expired before the call"
            );
            let key = info.key;
            assert!(
                seen.insert(key, info).is_none(),
                "scan listed {key:?} twice (cursor {cursor:?})"
            );
        }
        match page.next {
            Some(next) => cursor = next,
            None => return seen,
        }
    }
}

/// Spawns `n` tasks and waits for all, failing on a panicked task.
async fn join_all<T: Send + 'static>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(
            h.await
                .unwrap_or_else(|e| panic!("a concurrent task failed: {e}")),
        );
    }
    out
}

// ---------------------------------------------------------------------------------------
// create / load

/// `create` then `load` returns the same record: every field and every `Meta` field, with
/// and without a user and user agent.
pub async fn check_create_then_load(store: Arc<dyn SessionStore>) {
    let user = unique_user("load");
    let key = new_key();
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
    let second_user = unique_user("second");
    let key = new_key();
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
    let new_user = unique_user("new");
    let key = new_key();
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

// ---------------------------------------------------------------------------------------
// apply

/// `apply` sets and removes fields and moves `last_seen`, `expires_at` and `remember`;
/// `created_at`, `user` and `user_agent` stay.
pub async fn check_apply_sets_and_removes_fields(store: Arc<dyn SessionStore>) {
    let user = unique_user("apply");
    let key = new_key();
    let mut expected = sample(Some(&user), LONG_TTL);
    expected.data.insert("gone".into(), "[1,2]".into());
    expected.meta.remember = false;
    create(&store, &key, &expected).await;

    let mut p = patch(LONG_TTL + ms(60_000))
        .set("name", "\"Grace\"")
        .set("added", "{\"a\":1}")
        .remove("gone")
        .remove("never-there");
    p.remember = Some(true);
    assert_eq!(
        apply(&store, &key, &p).await,
        Applied::Done,
        "apply on a live record"
    );
    expected.apply(&p);
    assert_eq!(expected.data.len(), 3);
    assert_record(load(&store, &key).await, &expected, "after apply");
    assert_eq!(
        sessions_of(&store, &user).await,
        infos(&[(&key, &expected)]),
        "sessions_of reflects the patch (fields, bytes, times)"
    );

    // A patch with no field changes moves the times only.
    let p = patch(LONG_TTL + ms(120_000));
    assert_eq!(apply(&store, &key, &p).await, Applied::Done);
    expected.apply(&p);
    assert_record(
        load(&store, &key).await,
        &expected,
        "after a times-only apply",
    );

    // Removing every field leaves an empty, live record.
    let p = patch(LONG_TTL)
        .remove("name")
        .remove("added")
        .remove("count");
    assert_eq!(apply(&store, &key, &p).await, Applied::Done);
    expected.apply(&p);
    assert!(expected.data.is_empty());
    assert_record(
        load(&store, &key).await,
        &expected,
        "after removing every field",
    );
}

/// `remember: None` keeps the flag; `Some(b)` sets it.
pub async fn check_apply_updates_remember_only_when_given(store: Arc<dyn SessionStore>) {
    let key = new_key();
    let mut record = sample(None, LONG_TTL);
    record.meta.remember = false;
    create(&store, &key, &record).await;
    let steps = [Some(true), None, Some(false), None, Some(true)];
    let mut expected = false;
    for (i, remember) in steps.into_iter().enumerate() {
        let mut p = patch(LONG_TTL).set("step", i.to_string());
        p.remember = remember;
        assert_eq!(apply(&store, &key, &p).await, Applied::Done);
        if let Some(r) = remember {
            expected = r;
        }
        let loaded = load(&store, &key).await.expect("record");
        assert_eq!(
            loaded.meta.remember, expected,
            "remember after step {i} ({remember:?})"
        );
    }
}

/// A patch with `max_lifetime` (a blind write) caps the expiry at `created_at + lifetime`;
/// without it the patch's expiry is taken as given.
pub async fn check_apply_caps_expiry_at_max_lifetime(store: Arc<dyn SessionStore>) {
    let key = new_key();
    let record = sample(None, LONG_TTL); // created 5 s ago
    create(&store, &key, &record).await;
    let mut p = patch(LONG_TTL).set("blind", "1");
    p.max_lifetime = Some(Duration::from_secs(60));
    assert_eq!(apply(&store, &key, &p).await, Applied::Done);
    let loaded = load(&store, &key).await.expect("record");
    let cap = record.meta.created_at.plus(Duration::from_secs(60));
    assert_eq!(
        loaded.meta.expires_at, cap,
        "expiry capped at created + lifetime"
    );
    assert_eq!(loaded.data.get("blind").map(String::as_str), Some("1"));
    // A lifetime longer than the idle deadline changes nothing.
    let mut p = patch(LONG_TTL);
    p.max_lifetime = Some(Duration::from_secs(3600));
    assert_eq!(apply(&store, &key, &p).await, Applied::Done);
    let loaded = load(&store, &key).await.expect("record");
    assert_eq!(loaded.meta.expires_at, p.expires_at);
    // A lifetime already over: the record's expiry is in the past, so it is gone.
    let mut p = patch(LONG_TTL);
    p.max_lifetime = Some(Duration::from_secs(1));
    assert_eq!(apply(&store, &key, &p).await, Applied::Done);
    assert!(
        load(&store, &key).await.is_none(),
        "expired by its lifetime"
    );
}

/// The same field written twice: the later patch wins; a field both removed and set in one
/// patch ends up set (removals apply first, as in [`Record::apply`]).
pub async fn check_apply_same_field_last_write_wins(store: Arc<dyn SessionStore>) {
    let key = new_key();
    let mut expected = sample(None, LONG_TTL);
    create(&store, &key, &expected).await;
    for p in [
        patch(LONG_TTL).set("count", "4"),
        patch(LONG_TTL).set("count", "5"),
        patch(LONG_TTL).remove("name").set("name", "\"again\""),
        patch(LONG_TTL).set("dup", "1").set("dup", "2"),
    ] {
        assert_eq!(apply(&store, &key, &p).await, Applied::Done);
        expected.apply(&p);
    }
    assert_eq!(expected.data.get("count").map(String::as_str), Some("5"));
    assert_eq!(expected.data.get("dup").map(String::as_str), Some("2"));
    assert_record(
        load(&store, &key).await,
        &expected,
        "after overwriting patches",
    );
}

/// `apply` on a key never created is `Missing` and creates nothing.
pub async fn check_apply_on_unknown_key_is_missing(store: Arc<dyn SessionStore>) {
    let key = new_key();
    let mut p = patch(LONG_TTL).set("name", "\"Eve\"");
    p.remember = Some(true);
    assert_eq!(
        apply(&store, &key, &p).await,
        Applied::Missing,
        "apply on an unknown key"
    );
    assert!(
        load(&store, &key).await.is_none(),
        "apply must never create a record"
    );
    let listed = scan_all(&store, 1000).await;
    assert!(
        !listed.contains_key(&key),
        "apply must never create a record (scan)"
    );
}

/// `apply` on a deleted key is `Missing` and does not bring the record back.
pub async fn check_apply_on_deleted_key_is_missing(store: Arc<dyn SessionStore>) {
    let user = unique_user("deleted");
    let key = new_key();
    create(&store, &key, &sample(Some(&user), LONG_TTL)).await;
    assert!(delete(&store, &key).await);
    let p = patch(LONG_TTL).set("name", "\"Mallory\"");
    assert_eq!(
        apply(&store, &key, &p).await,
        Applied::Missing,
        "apply on a deleted key"
    );
    assert!(
        load(&store, &key).await.is_none(),
        "apply resurrected a deleted session"
    );
    assert!(
        sessions_of(&store, &user).await.is_empty(),
        "apply re-indexed a deleted session"
    );
}

/// `apply` on an expired key is `Missing`, even with a patch that would extend it, and does
/// not revive it.
pub async fn check_apply_on_expired_key_is_missing(store: Arc<dyn SessionStore>) {
    let user = unique_user("expired");
    let key = new_key();
    let record = sample(Some(&user), SHORT_TTL);
    create(&store, &key, &record).await;
    wait_past(record.meta.expires_at).await;
    let p = patch(LONG_TTL).set("name", "\"Zombie\"");
    assert_eq!(
        apply(&store, &key, &p).await,
        Applied::Missing,
        "apply on an expired key"
    );
    assert!(
        load(&store, &key).await.is_none(),
        "apply revived an expired session"
    );
    assert!(
        sessions_of(&store, &user).await.is_empty(),
        "apply revived an expired session"
    );
    // And once more, in case the first call cleaned up and the second recreated.
    assert_eq!(apply(&store, &key, &p).await, Applied::Missing);
    assert!(
        load(&store, &key).await.is_none(),
        "apply revived an expired session"
    );
}

// ---------------------------------------------------------------------------------------
// touch

/// `touch` moves `last_seen` and `expires_at` only: data, `created_at`, `user`,
/// `user_agent` and `remember` stay.
pub async fn check_touch_moves_only_the_times(store: Arc<dyn SessionStore>) {
    let user = unique_user("touch");
    let key = new_key();
    let mut expected = sample(Some(&user), LONG_TTL);
    // `false`, so a touch that sets the flag shows; the data is checked untouched below.
    expected.meta.remember = false;
    create(&store, &key, &expected).await;
    let now = Timestamp::now();
    let (last_seen, expires_at) = (Timestamp(now.0 + 3), now.plus(LONG_TTL + ms(30_000)));
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
    let key = new_key();
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
    let key = new_key();
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

// ---------------------------------------------------------------------------------------
// Field-level merge

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
    let key = new_key();
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

// ---------------------------------------------------------------------------------------
// delete and expiry

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
    let short_key = new_key();
    let short = sample(Some(&user), SHORT_TTL);
    let long_key = new_key();
    let long = sample(Some(&user), LONG_TTL);
    create(&store, &short_key, &short).await;
    create(&store, &long_key, &long).await;
    // Only meaningful while the short record has time left (a very slow machine skips it).
    if Timestamp::now().0 + 100 < short.meta.expires_at.0 {
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

// ---------------------------------------------------------------------------------------
// The user index

/// `sessions_of` lists exactly the live sessions of the user, with correct summaries; not
/// those of another user (even one whose name extends it), nor anonymous ones.
pub async fn check_sessions_of_lists_exactly_the_users_sessions(store: Arc<dyn SessionStore>) {
    let user = unique_user("owner");
    let longer = format!("{user}x");
    let mut mine = Vec::new();
    for i in 0..3 {
        let key = new_key();
        let mut record = sample(Some(&user), LONG_TTL);
        for j in 0..i {
            record
                .data
                .insert(format!("extra-{j}"), "\"x\"".repeat(j + 1));
        }
        record.meta.remember = i % 2 == 0;
        record.meta.user_agent = (i != 1).then(|| format!("agent {i}"));
        record.meta.last_seen = Timestamp(record.meta.last_seen.0 + i as i64);
        create(&store, &key, &record).await;
        mine.push((key, record));
    }
    let their_key = new_key();
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
    let a = new_key();
    let b = new_key();
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
    let keys: Vec<SessionKey> = (0..4).map(|_| new_key()).collect();
    let records: Vec<Record> = keys.iter().map(|_| sample(Some(&user), LONG_TTL)).collect();
    for (k, r) in keys.iter().zip(&records) {
        create(&store, k, r).await;
    }
    let other_key = new_key();
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

// ---------------------------------------------------------------------------------------
// scan and purge

/// Scanning with small pages visits every live session exactly once, with correct
/// summaries, and never an expired one.
pub async fn check_scan_pages_through_every_live_session_once(store: Arc<dyn SessionStore>) {
    let user = unique_user("scan");
    let mut live = HashMap::new();
    for i in 0..25 {
        let key = new_key();
        let mut record = sample((i % 3 == 0).then_some(user.as_str()), LONG_TTL);
        record.data.insert(format!("i{i}"), i.to_string());
        create(&store, &key, &record).await;
        live.insert(key, record);
    }
    let mut expired = HashSet::new();
    let mut latest = Timestamp(0);
    for _ in 0..5 {
        let key = new_key();
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
    let mut latest = Timestamp(0);
    for _ in 0..3 {
        let key = new_key();
        let record = sample(Some(&user), SHORT_TTL);
        latest = latest.max(record.meta.expires_at);
        create(&store, &key, &record).await;
        expired.push(key);
    }
    let mut live = Vec::new();
    for _ in 0..2 {
        let key = new_key();
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

// ---------------------------------------------------------------------------------------
// Odd content

/// Field names that trip up stores that build queries, paths or merge documents from them.
pub const ODD_FIELD_NAMES: &[&str] = &[
    "a\"b",
    "a'b",
    "a.b",
    "a.b.c",
    "$set",
    "$",
    "ключ",
    "🔑 emoji",
    "with space",
    "back\\slash",
    "new\nline",
    "tab\tstop",
    "nul\0byte",
    "",
    "'; DROP TABLE sessions; --",
    "user",
    "expires_at",
    "created_at",
    "last_seen",
    "remember",
    "user_agent",
    "data",
    "key",
    "__proto__",
    "{tag}",
    "*",
    "%",
    "_",
    "a:b",
    "\u{2028}",
    "\u{feff}bom",
    "null",
    "[0]",
    "/path/../x",
    "__cr.csrf",
];

/// Field values (JSON text) that must come back byte for byte: stores keep JSON text
/// verbatim, they never parse or re-serialise it.
pub const ODD_VALUES: &[&str] = &[
    "\"\"",
    "null",
    "\"null\"",
    "{}",
    "[]",
    "0",
    "-0",
    "2.50",
    "1e400",
    "12345678901234567890123",
    "true",
    "false",
    " { \"a\" : [1, 2.50, \"x\"] } ",
    "{\"b\":1,\"a\":2,\"b\":3}",
    "\"with \\\"quotes\\\" and \\\\ backslash\"",
    "\"\\u0000 \\ud83d\\ude00 \\/\"",
    "\"ünïcødé ✓ 🔑\"",
    "\"'; DROP TABLE sessions; --\"",
    "{\"$set\":{\"a.b\":null}}",
];

/// Field names with quotes, dots, `$`, unicode, control characters, names of metadata
/// columns: stored, patched and removed exactly.
pub async fn check_odd_field_names_survive(store: Arc<dyn SessionStore>) {
    let user = unique_user("names");
    let key = new_key();
    let mut expected = sample(Some(&user), LONG_TTL);
    for (i, name) in ODD_FIELD_NAMES.iter().enumerate() {
        expected.data.insert((*name).to_owned(), i.to_string());
    }
    create(&store, &key, &expected).await;
    assert_record(
        load(&store, &key).await,
        &expected,
        "odd field names after create",
    );
    // Metadata must not be confused with the fields named like it.
    assert_eq!(
        sessions_of(&store, &user).await,
        infos(&[(&key, &expected)])
    );

    let mut p = patch(LONG_TTL);
    for (i, name) in ODD_FIELD_NAMES.iter().enumerate() {
        if i % 2 == 0 {
            p = p.remove(*name);
        } else {
            p = p
                .set(format!("{name}{name}"), "\"set\"")
                .set(*name, "\"patched\"");
        }
    }
    assert_eq!(apply(&store, &key, &p).await, Applied::Done);
    expected.apply(&p);
    assert_record(
        load(&store, &key).await,
        &expected,
        "odd field names after apply",
    );
    assert_eq!(
        sessions_of(&store, &user).await,
        infos(&[(&key, &expected)])
    );
}

/// JSON values that a store might mangle: empty strings, `null`, numbers out of range for
/// `f64`, whitespace, duplicate keys, escapes. Kept verbatim through create and apply; a
/// field whose value is the text `null` is set, not removed.
pub async fn check_odd_values_survive_verbatim(store: Arc<dyn SessionStore>) {
    let key = new_key();
    let mut expected = sample(None, LONG_TTL);
    for (i, value) in ODD_VALUES.iter().enumerate() {
        expected.data.insert(format!("v{i}"), (*value).to_owned());
    }
    create(&store, &key, &expected).await;
    assert_record(
        load(&store, &key).await,
        &expected,
        "odd values after create",
    );

    let mut p = patch(LONG_TTL);
    for (i, value) in ODD_VALUES.iter().enumerate() {
        // Rotate the values among the fields and add new fields holding them.
        let target = ODD_VALUES[(i + 1) % ODD_VALUES.len()];
        p = p.set(format!("v{i}"), target).set(format!("w{i}"), *value);
    }
    assert_eq!(apply(&store, &key, &p).await, Applied::Done);
    expected.apply(&p);
    assert_record(
        load(&store, &key).await,
        &expected,
        "odd values after apply",
    );

    let p = patch(LONG_TTL).set("v0", "null").set("fresh", "null");
    assert_eq!(apply(&store, &key, &p).await, Applied::Done);
    expected.apply(&p);
    let loaded = load(&store, &key).await;
    assert_eq!(
        loaded
            .as_ref()
            .and_then(|r| r.data.get("fresh"))
            .map(String::as_str),
        Some("null"),
        "setting a field to the JSON text null must keep the field"
    );
    assert_record(loaded, &expected, "after setting fields to null");
}

/// Values of about 32 KiB (and a long field name) survive create, apply and listings.
pub async fn check_large_values_survive(store: Arc<dyn SessionStore>) {
    let user = unique_user("large");
    let key = new_key();
    let big_string = format!("\"{}\"", "x".repeat(32 * 1024));
    let big_array = format!(
        "[{}]",
        (0..4096)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let long_name = "n".repeat(1024);
    let mut expected = sample(Some(&user), LONG_TTL);
    expected.data.insert("big".into(), big_string.clone());
    expected.data.insert(long_name.clone(), "1".into());
    create(&store, &key, &expected).await;
    assert_record(
        load(&store, &key).await,
        &expected,
        "large values after create",
    );

    let unicode = format!("\"{}\"", "ü🔑".repeat(6 * 1024));
    let p = patch(LONG_TTL)
        .set("array", big_array)
        .set("unicode", unicode)
        .set("big", format!("\"{}\"", "y".repeat(32 * 1024)));
    assert_eq!(apply(&store, &key, &p).await, Applied::Done);
    expected.apply(&p);
    assert_record(
        load(&store, &key).await,
        &expected,
        "large values after apply",
    );
    let listed = sessions_of(&store, &user).await;
    assert_eq!(listed, infos(&[(&key, &expected)]));
    assert!(
        listed[0].data_bytes > 64 * 1024,
        "data_bytes counts the large values"
    );
}

/// User ids with quotes, SQL, path and glob characters are stored and matched exactly
/// (case-sensitively, never as patterns or prefixes).
pub async fn check_odd_user_ids_are_matched_exactly(store: Arc<dyn SessionStore>) {
    let tag = unique_user("u");
    let odd = [
        "o'brien",
        "a;b",
        "--",
        "../../etc/passwd",
        "%",
        "_",
        "*",
        "?",
        "[ab]",
        "a",
        "ab",
        "A",
        "user:with:colons",
        "{hash}tag",
        "ünï ✓",
        "Robert'); DROP TABLE sessions;--",
        " spaced ",
        "back\\slash",
        "\"quoted\"",
    ];
    let users: Vec<String> = odd
        .iter()
        .enumerate()
        .map(|(i, o)| {
            if i % 2 == 0 {
                format!("{tag}{o}")
            } else {
                format!("{o}{tag}")
            }
        })
        .collect();
    let mut owned = Vec::new();
    for user in &users {
        let key = new_key();
        let mut record = sample(Some(user), LONG_TTL);
        record.meta.user_agent = Some(format!("agent of {user} 'with' \"quotes\" ✓"));
        create(&store, &key, &record).await;
        owned.push((key, record));
    }
    for (user, (key, record)) in users.iter().zip(&owned) {
        assert_record(
            load(&store, key).await,
            record,
            "a session of an odd user id",
        );
        assert_eq!(
            sessions_of(&store, user).await,
            infos(&[(key, record)]),
            "sessions_of({user:?}) must list exactly that user's session"
        );
    }
    assert!(
        sessions_of(&store, &tag).await.is_empty(),
        "sessions_of matched a prefix"
    );
    assert!(
        sessions_of(&store, &format!("{tag}%")).await.len() == 1,
        "only the user literally named with % matches"
    );

    // Deleting the pattern-like users removes only them.
    for pattern in ["%", "_", "*", "?", "[ab]"] {
        let i = odd.iter().position(|o| *o == pattern).unwrap();
        assert_eq!(
            delete_user(&store, &users[i], None).await,
            1,
            "delete_user({:?}) must delete exactly one session",
            users[i]
        );
    }
    let survivors = odd
        .iter()
        .enumerate()
        .filter(|(_, o)| !["%", "_", "*", "?", "[ab]"].contains(o));
    for (i, _) in survivors {
        assert!(
            load(&store, &owned[i].0).await.is_some(),
            "deleting pattern-like users deleted {:?}'s session",
            users[i]
        );
    }
}

/// `ping` succeeds on a working store.
pub async fn check_ping_answers(store: Arc<dyn SessionStore>) {
    store
        .ping()
        .await
        .unwrap_or_else(|e| panic!("ping failed: {e}"));
}
