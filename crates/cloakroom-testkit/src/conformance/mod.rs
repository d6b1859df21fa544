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

mod apply;
mod challenges;
mod content;
mod create;
mod ended;
mod events;
mod expiry;
mod grace;
mod limit;
mod merge;
mod scan;
mod touch;
mod users;

pub use apply::*;
pub use challenges::*;
pub use content::*;
pub use create::*;
pub use ended::*;
pub use events::*;
pub use expiry::*;
pub use grace::*;
pub use limit::*;
pub use merge::*;
pub use scan::*;
pub use touch::*;
pub use users::*;

// Helpers shared by the checks.

fn new_key() -> SessionKey {
    SessionId::generate().key()
}

/// A fresh key for a record of `user`: in the user's shard when the store places keys
/// ([`SessionStore::placement`]: Redis Cluster), as the engine makes them.
fn key_for(store: &Arc<dyn SessionStore>, user: &str) -> SessionKey {
    let id =
        cloakroom_core::store::placed(store.placement(), Some(user), SessionId::generate, |id| {
            id.key()
        });
    id.key()
}

/// [`unique_user`], one whose sessions may be under `key` (the key is in the user's shard
/// when the store places keys).
fn unique_user_for(store: &Arc<dyn SessionStore>, prefix: &str, key: &SessionKey) -> String {
    loop {
        let user = unique_user(prefix);
        if store.placement().is_none_or(|p| p.fits(key, Some(&user))) {
            return user;
        }
    }
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
            created_at: Timestamp::from_millis(now.as_millis() - 5_000),
            last_seen: Timestamp::from_millis(now.as_millis() - 1_000),
            expires_at: now.plus(ttl),
            user: user.map(str::to_owned),
            user_agent: Some("Mozilla/5.0 (X11; conformance) \"quoted\"".to_owned()),
            remember: true,
        },
    }
}

fn patch(ttl: Duration) -> Patch {
    let now = Timestamp::now();
    Patch::new(Timestamp::from_millis(now.as_millis() + 7), now.plus(ttl))
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
