//! [`PycketStore`]: sessions in the Redis format of [pycket](https://pypi.org/project/pycket/)
//! 0.3 (Tornado), so a Cloakroom app and a Tornado + pycket app share sessions.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cloakroom_core::store::Error> {
//! use cloakroom_tornado::PycketStore;
//! // pycket's storage settings {'db_sessions': 5, 'db_notifications': 11}:
//! let store = PycketStore::open("pycket+redis://127.0.0.1:6379/5?notifications_db=11").await?;
//! # Ok(()) }
//! ```
//!
//! Pair it with [`PycketTicket`] and the cookie name
//! `PYCKET_ID` in the session layer: the cookie then holds a Tornado v2 signed value of the
//! session's uuid, as pycket's `set_secure_cookie` makes it.
//!
//! # URL
//!
//! `pycket+redis://[user:password@]host:port[/db][?notifications_db=N]`, or over TLS
//! `pycket+rediss://...`: sessions in database `db` (default 0, pycket's `db_sessions`),
//! notifications in `N` (default 1, pycket's `db_notifications`; it must differ from `db`).
//! Also `timeout_ms` (the bound on every operation, default 2 s), `max_connections` (pycket's
//! setting; also `connections`: how many dedicated connections transactions may use at once,
//! default 8), `prefix` (of the user index keys, default `cloakroom:`), the TLS options `ca`,
//! `cert`, `key` and `insecure_skip_verify` and `protocol`, as for
//! [`RedisStore`](cloakroom_redis::RedisStore#urls); any other parameter is an error. Redis Cluster is
//! not supported (pycket uses numbered databases, which Cluster lacks).
//!
//! Through Redis Sentinel:
//! `pycket+redis+sentinel://[user:password@]host:port,host:port/SERVICE[/db]` (TLS:
//! `pycket+rediss+sentinel://`), with the same options (`notifications_db` too), plus
//! `sentinel_password` (and `sentinel_username`) for sentinels with a password of their
//! own. Reads and transactions go to the server the sentinels name as master; after a
//! failover the shared connections and the transaction pool ask them again, so the store
//! follows without a restart (operations fail as unavailable meanwhile), as
//! `redis+sentinel://` does for [`RedisStore`](cloakroom_redis::RedisStore). pycket has no `wait=N`:
//! what a failover can lose is as described in `SECURITY.md` ("Redis Sentinel").
//!
//! # Layout (pycket's)
//!
//! - **Key**: the session's bare uuid text (`0ca7a58c-ee4e-4a07-b606-20dbd97281e7`), a
//!   `STRING`. The [`SessionKey`] of a pycket session is the uuid's 16 bytes
//!   ([`pycket_uuid`], [`pycket_key`]). Every key has that form, including keys that are not
//!   version-4 uuids (a rotation's forward, random keys as the conformance suite uses): such
//!   sessions work here, and Tornado never finds them, since no cookie names them.
//! - **Value**: `pickle.dumps(dict)`. Pickles of protocols 0 to 5 are read; writes use
//!   protocol 3 (`serde-pickle`), which every Python 3 reads.
//! - **Expiry**: `SET key value PXAT <expires_at>`, the record's own expiry (pycket uses
//!   `SET` then `EXPIRE 86400`; when the Tornado side writes, the key gets its 24 hours).
//! - **Notifications** (pycket's `NotificationMixin`): a pickled dict under the same uuid in
//!   the notifications database.
//!
//! # Values
//!
//! Each dict entry with a `str` key is a session field, its value converted to the field's
//! JSON text: `None`, `bool`, `int` (any size), `float`, `str`, `list` and `dict` map to
//! their JSON counterparts; `tuple`, `set` and `frozenset` read as arrays; `bytes` and
//! `bytearray` read as a string holding their standard **base64** (writing that field back
//! from Cloakroom stores a `str`); non-finite floats read as `null`; non-string dict keys
//! inside values read as their JSON text. Entries with non-string keys are ignored (and kept
//! as they are). Writes store the Python value of the JSON text (`"ada"` -> `'ada'`, `42` ->
//! `42`, objects -> `dict`), so the Tornado side reads ordinary Python values.
//!
//! JSON text that would not come back byte for byte from its Python value (`2.50`, key
//! order, escapes, `1e400`) is also kept verbatim in the metadata (below) and returned as
//! long as the Python value still equals it; once the Tornado side changes the value, the
//! new value's JSON is returned.
//!
//! A session holding other Python objects (a `datetime`, a class instance) still loads (such
//! values read as `null`), but Cloakroom refuses to write it ([`ErrorKind::Corrupt`]):
//! rewriting the pickle would destroy those objects. Store such values as strings.
//!
//! # Metadata: the reserved key `__cr.meta`
//!
//! What the session engine keeps about a session (created, last seen and expiry times in
//! milliseconds, user, user agent, "remember me", and the verbatim JSON texts above) has no
//! place in pycket's format: it lives **inside the dict** under the key `__cr.meta`, a dict
//! of plain values. A Tornado app sees that key in `session.keys()` (skip it); Tornado's
//! writes keep it, as pycket rewrites the whole dict. Cloakroom never returns it as a field
//! and refuses to set a field of that name.
//!
//! A record written by Tornado alone (no `__cr.meta`) loads too: its expiry is the key's
//! TTL, its last activity the time of pycket's last write (the TTL minus 24 hours), its
//! creation time the same, and it has no user (the demo treats a set `ID` as logged in).
//! When Tornado rewrote a record that has `__cr.meta`, the TTL (not the stored expiry) is the
//! expiry and pycket's write counts as activity.
//!
//! # Flash messages and pycket's notifications
//!
//! The session field `__cr.flash` (Cloakroom's [flash messages](cloakroom_core::flash)) is
//! not stored in the session dict: it *is* the notifications dict of the same uuid.
//! - Reading: each notification `name: value` becomes one message `{level: name, text:
//!   value}`; names other than `info`, `success`, `warning` and `error` get level `info`; a
//!   list or tuple value gives one message per item; a non-string text reads as its JSON;
//!   `None` values are skipped. Messages come grouped by name, names in sorted order.
//! - Writing the field writes the whole notifications dict, one entry per level: several
//!   messages of one level are **joined with `"\n"`** in their order (pycket keeps one value
//!   per name, and a Tornado app expects a `str`), so Tornado's
//!   `self.notifications.get('success')` returns them all, once. Levels of messages that came
//!   from other names are written under their level. Removing the field (Cloakroom's
//!   [`take`](cloakroom_core::flash::Flash::take)) deletes the notifications key: every
//!   message was shown, once, as pycket's one-time `get` would. A notification the Tornado
//!   side adds between Cloakroom's read and its write is lost, as with pycket itself.
//!
//! # Concurrency
//!
//! pycket's writes are unlocked read-modify-writes of the whole pickle, so two requests
//! writing different keys lose one of the writes. Here every read-modify-write (`create`,
//! `apply`, `touch`, `delete_user`) runs as `WATCH key` / `GET` / `MULTI` ... `EXEC` on a
//! connection of its own, retried (at most 64 times, with a short random backoff) when
//! another client changed the key in between; in one process, writers of one key also queue
//! on a lock, so they do not make each other retry. Writes of the notifications dict go in
//! the same `MULTI` (`SELECT` to the other database and back). A Tornado app sharing the
//! sessions should make its own writes transactional too (the interop test app in
//! `tests/interop/app.py` shows the patch); stock pycket can still overwrite a Cloakroom
//! write that happens between its `GET` and its `SET`.
//!
//! # Users
//!
//! A user's sessions are indexed in a set `<prefix>u:<user>` (default prefix `cloakroom:`)
//! in the sessions database, its members the sessions' Redis keys, pruned lazily like the
//! [`RedisStore`](cloakroom_redis::RedisStore)'s. [`SessionStore::scan`] walks the database with
//! `SCAN ... TYPE string` and skips keys that are not session keys (uuid texts).
//! [`SessionStore::purge_expired`] is a no-op: Redis expires the keys.

mod guard;
mod notifications;
mod pool;
mod record;
mod store;
mod ticket;
mod transaction;
mod url;
mod value;

use std::collections::BTreeMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cloakroom_core::flash::{Level, Message};
use cloakroom_core::session::{SessionKey, Timestamp};
use cloakroom_core::store::{
    Applied, Created, Cursor, Error, ErrorKind, Fields, Meta, Page, Patch, Record, Result,
    SessionInfo, SessionStore,
};
use cloakroom_redis::connection::{
    Master, Options, SharedConnection, bounded, map_error, redact, worth_retrying,
};
use futures_util::{StreamExt, TryStreamExt};
use redis::aio::MultiplexedConnection;
use redis::{RedisError, Value as RedisValue};
use serde_pickle::{DeOptions, HashableValue, SerOptions, Value};

use crate::pycket::pool::Pool;

use notifications::*;
use record::*;
use transaction::*;

pub use record::{fields_from_pickle, pickle_from_fields};
pub use ticket::{PycketTicket, pycket_key, pycket_uuid};
pub use url::PycketStoreBuilder;

/// The reserved dict key holding Cloakroom's metadata; see the [module docs](self).
pub const META_KEY: &str = "__cr.meta";

/// The session field that maps onto pycket's notifications.
const FLASH_FIELD: &str = "__cr.flash";

/// pycket's sessions database when the URL names none.
pub const DEFAULT_SESSIONS_DB: i64 = 0;

/// pycket's notifications database when the URL names none.
pub const DEFAULT_NOTIFICATIONS_DB: i64 = 1;

/// pycket's `EXPIRE` after each write: 24 hours.
pub const PYCKET_EXPIRE: Duration = Duration::from_secs(24 * 3600);

/// How far a key's TTL may stray from the stored expiry before the record counts as
/// rewritten by pycket.
const TTL_TOLERANCE_MS: i64 = 1000;

/// Dedicated transaction connections by default.
const DEFAULT_CONNECTIONS: usize = 8;

/// Attempts of one transaction that lost to another writer before giving up.
const MAX_CONFLICTS: u32 = 64;

/// Per-key lock stripes within the process.
const STRIPES: usize = 64;

/// Loads in flight at once in listings.
const FAN_OUT: usize = 32;

/// Keys a `SCAN` call examines (a hint).
const SCAN_COUNT: usize = 1000;

/// `SCAN` calls one [`SessionStore::scan`] call makes at most.
const SCAN_CALLS: usize = 32;

/// A user index this large is pruned now and then on login...
const PRUNE_FROM: i64 = 32;
/// ...every this many logins.
const PRUNE_EVERY: i64 = 16;

/// Sessions in pycket's Redis format; see the [module docs](self).
///
/// Cheap to clone (clones share the connections).
#[derive(Clone)]
pub struct PycketStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Multiplexed connection to the sessions database (reads, the user index).
    sessions: SharedConnection,
    /// Multiplexed connection to the notifications database (reads).
    notes: SharedConnection,
    /// Dedicated connections (sessions database selected) for transactions.
    pool: Pool,
    stripes: Box<[tokio::sync::Mutex<()>]>,
    hasher: std::collections::hash_map::RandomState,
    sessions_db: i64,
    notifications_db: i64,
    prefix: String,
    timeout: Duration,
    shown_url: String,
}

impl fmt::Debug for PycketStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("PycketStore")
            .field("url", &i.shown_url)
            .field("sessions_db", &i.sessions_db)
            .field("notifications_db", &i.notifications_db)
            .field("prefix", &i.prefix)
            .field("command_timeout", &i.timeout)
            .finish()
    }
}

impl PycketStore {
    /// Connects with the default options; see the [module docs](self) for the URL.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a bad URL, [`ErrorKind::Unavailable`] when Redis cannot be
    /// reached.
    pub async fn open(url: &str) -> Result<PycketStore> {
        Self::builder(url).build().await
    }

    /// Options for a store at `url`.
    pub fn builder(url: impl Into<String>) -> PycketStoreBuilder {
        PycketStoreBuilder {
            url: url.into(),
            options: Options::default(),
        }
    }

    /// The sessions database (pycket's `db_sessions`).
    pub fn sessions_db(&self) -> i64 {
        self.inner.sessions_db
    }

    /// The notifications database (pycket's `db_notifications`).
    pub fn notifications_db(&self) -> i64 {
        self.inner.notifications_db
    }

    /// The Redis key of a user's index set: `<prefix>u:<user>` (in the sessions database).
    pub fn user_key(&self, user: &str) -> String {
        format!("{}u:{user}", self.inner.prefix)
    }

    fn stripe(&self, rkey: &str) -> &tokio::sync::Mutex<()> {
        let h = self.inner.hasher.hash_one(rkey);
        &self.inner.stripes[(h % STRIPES as u64) as usize]
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_keys_are_uuid_texts() {
        let uuid = "0ca7a58c-ee4e-4a07-b606-20dbd97281e7";
        let key = pycket_key(uuid).unwrap();
        assert_eq!(pycket_uuid(&key), uuid);
        let random = SessionKey::from_bytes([7; 16]);
        assert_eq!(pycket_uuid(&random), "07070707-0707-0707-0707-070707070707");
        assert_eq!(pycket_key(&pycket_uuid(&random)), Some(random));
        for junk in [
            "cloakroom:u:ada",
            "",
            "x",
            &uuid.to_uppercase(),
            &key.to_handle(),
        ] {
            assert_eq!(pycket_key(junk), None, "{junk}");
        }
    }

    #[test]
    fn the_known_pycket_record_reads() {
        let known = b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x02ID\x94K*s.";
        let fields = fields_from_pickle(known).unwrap();
        assert_eq!(fields, Fields::from([("ID".to_owned(), "42".to_owned())]));
        let again = fields_from_pickle(&pickle_from_fields(&fields).unwrap()).unwrap();
        assert_eq!(again, fields);
        assert_eq!(
            fields_from_pickle(b"not a pickle").unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        // A pickled list is not a session.
        assert_eq!(
            fields_from_pickle(b"\x80\x03]q\x00.").unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }

    #[test]
    fn records_keep_verbatim_json_and_meta() {
        let now = Timestamp::now();
        let mut record = Record::new(
            Timestamp::from_millis(now.as_millis() - 5000),
            now.plus(Duration::from_secs(60)),
        );
        record.meta.user = Some("ada".into());
        record.meta.remember = true;
        for (k, v) in [("a", "2.50"), ("b", "\"x\""), ("c", "{\"z\":1,\"y\":2}")] {
            record.data.insert(k.into(), v.into());
        }
        let stored = Stored::from_record(&record).unwrap();
        let bytes = stored.encode().unwrap();
        let back = Stored::decode(&bytes, true).unwrap();
        let meta = back.meta();
        assert_eq!(meta.json.len(), 2, "only the non-canonical texts are kept");
        assert_eq!(back.fields(&meta.json), record.data);
        let pttl = record.meta.expires_at.as_millis() - now.as_millis();
        assert_eq!(record_meta(&meta, pttl, now), record.meta);
        // Tornado changed `a`: its new value wins over the kept text.
        let mut changed = back;
        changed.dict.insert(key("a"), Value::F64(3.0));
        assert_eq!(changed.fields(&meta.json)["a"], "3.0");
    }

    #[test]
    fn records_written_by_tornado_get_times_from_the_ttl() {
        let now = Timestamp::from_millis(1_764_320_000_000);
        let day = PYCKET_EXPIRE.as_millis() as i64;
        // Written 10 minutes ago by pycket: TTL 23h50m left.
        let pttl = day - 600_000;
        let meta = record_meta(&StoredMeta::default(), pttl, now);
        assert_eq!(
            meta.expires_at,
            Timestamp::from_millis(now.as_millis() + pttl)
        );
        assert_eq!(
            meta.last_seen,
            Timestamp::from_millis(now.as_millis() - 600_000)
        );
        assert_eq!(meta.created_at, meta.last_seen);
        assert_eq!(meta.user, None);
        // Ours, then rewritten by pycket a minute ago: the TTL wins, and counts as activity.
        let ours = StoredMeta {
            created: Some(now.as_millis() - 3_600_000),
            seen: Some(now.as_millis() - 3_000_000),
            exp: Some(now.as_millis() + 1_000_000),
            user: Some("ada".into()),
            ..StoredMeta::default()
        };
        let meta = record_meta(&ours, day - 60_000, now);
        assert_eq!(
            meta.expires_at,
            Timestamp::from_millis(now.as_millis() + day - 60_000)
        );
        assert_eq!(
            meta.last_seen,
            Timestamp::from_millis(now.as_millis() - 60_000)
        );
        assert_eq!(
            meta.created_at,
            Timestamp::from_millis(now.as_millis() - 3_600_000)
        );
        // No TTL (between pycket's SET and EXPIRE): the stored expiry.
        assert_eq!(
            record_meta(&ours, -1, now).expires_at,
            Timestamp::from_millis(now.as_millis() + 1_000_000)
        );
    }

    #[test]
    fn flash_messages_map_onto_notifications() {
        let json = r#"[{"level":"success","text":"a"},{"level":"info","text":"i"},{"level":"success","text":"b"}]"#;
        let bytes = notes_from_flash(json).unwrap().unwrap();
        let notes = Stored::decode(&bytes, true).unwrap().dict;
        assert_eq!(notes[&key("success")], Value::String("a\nb".into()));
        assert_eq!(notes[&key("info")], Value::String("i".into()));
        assert_eq!(
            flash_from_notes(&notes).unwrap(),
            r#"[{"level":"info","text":"i"},{"level":"success","text":"a\nb"}]"#
        );
        assert_eq!(notes_from_flash("[]").unwrap(), None);
        assert!(notes_from_flash("{\"x\":1}").is_err());
        let mut tornado = BTreeMap::new();
        tornado.insert(key("greeting"), Value::String("hi".into()));
        tornado.insert(key("gone"), Value::None);
        tornado.insert(
            key("warning"),
            Value::List(vec![Value::String("w1".into()), Value::I64(2)]),
        );
        assert_eq!(
            flash_from_notes(&tornado).unwrap(),
            r#"[{"level":"info","text":"hi"},{"level":"warning","text":"w1"},{"level":"warning","text":"2"}]"#
        );
        assert_eq!(flash_from_notes(&BTreeMap::new()), None);
    }
}
