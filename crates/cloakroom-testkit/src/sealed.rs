//! Sealed session data ([`SessionSettings::with_sealed_data`]) through a real
//! [`SessionEngine`] on a store: the conformance suite is store-level and sealing is the
//! engine's, so these checks drive requests (create, patch, blind write, login renewal) and
//! look at what the store holds. Each store's test file runs them with
//! [`sealed_engine_tests!`](crate::sealed_engine_tests), and a dump of its own backend with
//! [`check_sealed_marker_not_in_dump`].
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use cloakroom_core::store::MemoryStore;
//!
//! cloakroom_testkit::sealed::check_sealed_round_trip(Arc::new(MemoryStore::new())).await;
//! # });
//! ```

use std::future::Future;
use std::sync::Arc;

use cloakroom_core::cookie::decode_ticket;
use cloakroom_core::session::{
    CommitAction, ErrorKind, Session, SessionEngine, SessionId, SessionKey, SessionSettings,
    Timestamp, seal,
};
use cloakroom_core::store::{self, Applied, Patch, Record, SessionStore};
use cloakroom_core::{Key, KeyRing};

/// A marker no other check (or run) writes: what a dump must not contain.
pub fn marker() -> String {
    format!("marker-{}", &crate::new_key().to_handle()[..20])
}

fn engine(store: &Arc<dyn SessionStore>, keys: &KeyRing, sealed: bool) -> SessionEngine {
    (SessionSettings::new(Arc::clone(store), keys.clone()).with_sealed_data(sealed))
        .expect("sealing is allowed with the default ticket format")
        .build()
}

/// Commits `session` and returns the `name=ticket` pair of the cookie it set.
async fn commit(engine: &SessionEngine, session: &Session, agent: Option<&str>) -> String {
    let outcome = engine.commit(session, agent).await.expect("commit");
    let cookie = outcome.set_cookie.expect("a new session sets its cookie");
    cookie.split(';').next().unwrap_or_default().to_owned()
}

/// The id and store key of a `name=ticket` pair.
fn id_and_key(keys: &KeyRing, pair: &str) -> (SessionId, SessionKey) {
    let (name, value) = pair.split_once('=').expect("name=ticket");
    let id = decode_ticket(keys, name, value).expect("a ticket of ours");
    let key = id.key();
    (id, key)
}

async fn raw(store: &Arc<dyn SessionStore>, key: &SessionKey) -> Record {
    store
        .load(key)
        .await
        .expect("load")
        .expect("the record is stored")
}

/// Every data value of `record` is sealed and none shows `marker`.
fn assert_sealed(record: &Record, marker: &str) {
    assert!(!record.data.is_empty());
    for (name, value) in &record.data {
        assert!(seal::is_sealed(value), "field {name:?} stored in the clear");
        assert!(!value.contains(marker), "field {name:?} shows the marker");
    }
}

async fn expect_corrupt(engine: &SessionEngine, pair: &str, what: &str) {
    let err = (engine.session(Some(pair)).get::<String>("note").await)
        .expect_err("a moved value must not be returned");
    assert_eq!(
        err.kind(),
        ErrorKind::Store(store::ErrorKind::Corrupt),
        "{what}: {err}"
    );
}

/// Creates, reads, patches (after a load and blind), renews (login) and removes with
/// sealing on: the store holds only sealed values, the user index and times stay readable,
/// and each request reads plaintext; a renewal re-seals under the new id.
///
/// # Panics
/// When any of that does not hold.
pub async fn check_sealed_round_trip(store: Arc<dyn SessionStore>) {
    let keys = KeyRing::single(Key::generate());
    let engine = engine(&store, &keys, true);
    let marker = marker();
    let s = engine.session(None);
    s.set("note", &marker).await.unwrap();
    s.set("n", &1).await.unwrap();
    let pair = commit(&engine, &s, Some("agent/1")).await;
    let (old_id, key) = id_and_key(&keys, &pair);
    let stored = raw(&store, &key).await;
    assert_sealed(&stored, &marker);
    assert_eq!(
        stored.meta.user_agent.as_deref(),
        Some("agent/1"),
        "readable"
    );

    let r = engine.session(Some(&pair));
    assert_eq!(r.get::<String>("note").await.unwrap(), Some(marker.clone()));
    r.set("n", &2).await.unwrap();
    assert_eq!(
        engine.commit(&r, None).await.unwrap().action,
        CommitAction::Patched
    );
    let patched = raw(&store, &key).await;
    assert_sealed(&patched, &marker);
    assert_eq!(
        patched.data["note"], stored.data["note"],
        "untouched field kept"
    );

    let blind = engine.session(Some(&pair));
    blind.set("blind", &marker).await.unwrap();
    assert_eq!(
        engine.commit(&blind, None).await.unwrap().action,
        CommitAction::Patched
    );
    assert_sealed(&raw(&store, &key).await, &marker);

    let user = format!("sealed-{}", &crate::new_key().to_handle()[..12]);
    let login = engine.session(Some(&pair));
    login.login(&user).await.unwrap();
    let renewed = commit(&engine, &login, None).await;
    let (new_id, new_key) = id_and_key(&keys, &renewed);
    assert!(
        store.load(&key).await.unwrap().is_none(),
        "old record deleted"
    );
    let mut moved = raw(&store, &new_key).await;
    assert_sealed(&moved, &marker);
    assert_eq!(
        moved.meta.user.as_deref(),
        Some(user.as_str()),
        "user readable"
    );
    let listed = engine.sessions_of(&user).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].meta.user_agent.as_deref(), Some("agent/1"));
    assert!(
        seal::open_record(&old_id, &new_key, &mut moved.clone()).is_err(),
        "re-sealed under the new id"
    );
    seal::open_record(&new_id, &new_key, &mut moved).unwrap();
    assert_eq!(moved.data["note"], serde_json::to_string(&marker).unwrap());

    let next = engine.session(Some(&renewed));
    assert_eq!(
        next.get::<String>("blind").await.unwrap(),
        Some(marker.clone())
    );
    assert_eq!(next.get::<i32>("n").await.unwrap(), Some(2));
    assert!(next.remove("blind").await.unwrap());
    engine.commit(&next, None).await.unwrap();
    let last = raw(&store, &new_key).await;
    assert!(!last.data.contains_key("blind"));
    assert_sealed(&last, &marker);
}

/// A sealed value copied into another session's record, or into another field of its own,
/// makes the load fail as corrupt (a 503): the value is never returned.
///
/// # Panics
/// When a moved value is returned or the load does not fail as corrupt.
pub async fn check_sealed_values_moved_are_refused(store: Arc<dyn SessionStore>) {
    let keys = KeyRing::single(Key::generate());
    let engine = engine(&store, &keys, true);
    let mut pairs = Vec::new();
    for note in ["secret of a", "b"] {
        let s = engine.session(None);
        s.set("note", note).await.unwrap();
        s.set("other", "x").await.unwrap();
        pairs.push(commit(&engine, &s, None).await);
    }
    let (_, key_a) = id_and_key(&keys, &pairs[0]);
    let (_, key_b) = id_and_key(&keys, &pairs[1]);
    let sealed_a = raw(&store, &key_a).await.data["note"].clone();
    let now = Timestamp::now();
    let later = now.plus(std::time::Duration::from_secs(600));

    let into_b = Patch::new(now, later).set("note", sealed_a.clone());
    assert_eq!(store.apply(&key_b, &into_b).await.unwrap(), Applied::Done);
    expect_corrupt(&engine, &pairs[1], "copied into another session").await;

    let into_other = Patch::new(now, later).set("other", sealed_a);
    assert_eq!(
        store.apply(&key_a, &into_other).await.unwrap(),
        Applied::Done
    );
    expect_corrupt(&engine, &pairs[0], "copied into another field").await;
}

/// Turning sealing on over plaintext data reads it and seals each value at its next write;
/// turning it off still reads the sealed values.
///
/// # Panics
/// When a value is lost or written in the wrong form.
pub async fn check_sealing_turned_on_and_off(store: Arc<dyn SessionStore>) {
    let keys = KeyRing::single(Key::generate());
    let (plain, sealed) = (engine(&store, &keys, false), engine(&store, &keys, true));
    let s = plain.session(None);
    s.set("a", &1).await.unwrap();
    s.set("b", &2).await.unwrap();
    let pair = commit(&plain, &s, None).await;
    let (_, key) = id_and_key(&keys, &pair);
    assert_eq!(
        raw(&store, &key).await.data["a"],
        "1",
        "plaintext without sealing"
    );

    let on = sealed.session(Some(&pair));
    assert_eq!(on.get::<i32>("a").await.unwrap(), Some(1));
    on.set("b", &3).await.unwrap();
    sealed.commit(&on, None).await.unwrap();
    let mixed = raw(&store, &key).await;
    assert_eq!(mixed.data["a"], "1", "not written: still plaintext");
    assert!(seal::is_sealed(&mixed.data["b"]), "written: sealed");

    let off = plain.session(Some(&pair));
    assert_eq!(
        off.get::<i32>("b").await.unwrap(),
        Some(3),
        "sealed value read"
    );
    off.set("c", &4).await.unwrap();
    plain.commit(&off, None).await.unwrap();
    let after = raw(&store, &key).await;
    assert_eq!(after.data["c"], "4");
    assert!(seal::is_sealed(&after.data["b"]));
    let again = plain.session(Some(&pair));
    assert_eq!(again.get::<i32>("a").await.unwrap(), Some(1));
    assert_eq!(again.get::<i32>("b").await.unwrap(), Some(3));
}

/// With [`SessionSettings::with_sealed_user_agent`], the store and listings show the user
/// agent sealed; a renewal re-seals it, and the ticket opens it.
///
/// # Panics
/// When the agent is stored in the clear or lost.
pub async fn check_sealed_user_agent(store: Arc<dyn SessionStore>) {
    let keys = KeyRing::single(Key::generate());
    let engine = (SessionSettings::new(Arc::clone(&store), keys.clone()))
        .with_sealed_user_agent(true)
        .unwrap()
        .build();
    let agent = marker();
    let s = engine.session(None);
    s.set("a", &1).await.unwrap();
    let pair = commit(&engine, &s, Some(&agent)).await;
    let user = format!("agent-{}", &crate::new_key().to_handle()[..12]);
    let login = engine.session(Some(&pair));
    login.login(&user).await.unwrap();
    let renewed = commit(&engine, &login, None).await;
    let (id, key) = id_and_key(&keys, &renewed);
    let listed = engine.sessions_of(&user).await.unwrap();
    let shown = listed[0].meta.user_agent.clone().unwrap();
    assert!(
        seal::is_sealed(&shown) && !shown.contains(&agent),
        "{shown}"
    );
    let mut record = raw(&store, &key).await;
    assert_eq!(record.data["a"], "1", "data sealing is its own setting");
    seal::open_record(&id, &key, &mut record).unwrap();
    assert_eq!(record.meta.user_agent, Some(agent));
}

/// A scripted session writes a marker with sealing on (create, patch, blind write, login
/// renewal): `dump` (the backend's own bytes: a file, `DUMP`, `pg_dump`) must not contain
/// it. Then the same without sealing: the dump must show that marker, so the dump is known
/// to see session data at all.
///
/// # Panics
/// When the sealed marker is in the dump, or the plaintext one is not.
pub async fn check_sealed_marker_not_in_dump<F, Fut>(store: Arc<dyn SessionStore>, mut dump: F)
where
    F: FnMut(Vec<SessionKey>) -> Fut,
    Fut: Future<Output = Vec<u8>>,
{
    let keys = KeyRing::single(Key::generate());
    let mut written = Vec::new();
    for sealed in [true, false] {
        let engine = engine(&store, &keys, sealed);
        let marker = marker();
        let s = engine.session(None);
        s.set("note", &marker).await.unwrap();
        let pair = commit(&engine, &s, Some("agent/1")).await;
        let r = engine.session(Some(&pair));
        r.set("again", &[&marker, "patched"]).await.unwrap();
        engine.commit(&r, None).await.unwrap();
        let blind = engine.session(Some(&pair));
        blind
            .set("blind", &format!("{marker} blind"))
            .await
            .unwrap();
        engine.commit(&blind, None).await.unwrap();
        let login = engine.session(Some(&pair));
        login.login("dump-user").await.unwrap();
        let renewed = commit(&engine, &login, None).await;
        written.push(id_and_key(&keys, &renewed).1);
        let bytes = dump(written.clone()).await;
        let found = bytes.windows(marker.len()).any(|w| w == marker.as_bytes());
        if sealed {
            assert!(!found, "the sealed marker is in the dump");
        } else {
            assert!(found, "the dump does not show plaintext session data");
        }
    }
}

/// Expands to `mod sealed { ... }`: one `#[test]` per engine-level sealing check, each on a
/// fresh store from the factory (see [`conformance_tests!`](crate::conformance_tests)).
#[macro_export]
macro_rules! sealed_engine_tests {
    ($factory:expr $(,)?) => {
        /// Sealed session data through the engine (cloakroom-testkit).
        mod sealed {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn sealed_round_trip() {
                $crate::run(|| $factory, $crate::sealed::check_sealed_round_trip);
            }
            #[test]
            fn sealed_values_moved_are_refused() {
                $crate::run(
                    || $factory,
                    $crate::sealed::check_sealed_values_moved_are_refused,
                );
            }
            #[test]
            fn sealing_turned_on_and_off() {
                $crate::run(|| $factory, $crate::sealed::check_sealing_turned_on_and_off);
            }
            #[test]
            fn sealed_user_agent() {
                $crate::run(|| $factory, $crate::sealed::check_sealed_user_agent);
            }
        }
    };
}
