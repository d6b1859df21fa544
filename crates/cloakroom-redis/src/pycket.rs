//! [`PycketStore`]: sessions in the Redis format of [pycket](https://pypi.org/project/pycket/)
//! 0.3 (Tornado), so a Cloakroom app and a Tornado + pycket app share sessions.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cloakroom_core::store::Error> {
//! use cloakroom_redis::PycketStore;
//! // pycket's storage settings {'db_sessions': 5, 'db_notifications': 11}:
//! let store = PycketStore::open("pycket+redis://127.0.0.1:6379/5?notifications_db=11").await?;
//! # Ok(()) }
//! ```
//!
//! Pair it with [`PycketTicket`](cloakroom_core::tornado::PycketTicket) and the cookie name
//! `PYCKET_ID` in the session layer: the cookie then holds a Tornado v2 signed value of the
//! session's uuid, as pycket's `set_secure_cookie` makes it.
//!
//! # URL
//!
//! `pycket+redis://[user:password@]host:port[/db][?notifications_db=N]`: sessions in database
//! `db` (default 0, pycket's `db_sessions`), notifications in `N` (default 1, pycket's
//! `db_notifications`; it must differ from `db`). Also `timeout_ms` (the bound on every
//! operation, default 2 s), `connections` (how many dedicated connections transactions may
//! use at once, default 8) and `prefix` (of the user index keys, default `cloakroom:`); other
//! parameters go to redis-rs. TLS and Redis Cluster are not supported (pycket uses numbered
//! databases, which Cluster lacks).
//!
//! # Layout (pycket's)
//!
//! - **Key**: the session's bare uuid text (`0ca7a58c-ee4e-4a07-b606-20dbd97281e7`), a
//!   `STRING`. The [`SessionKey`] of a pycket session is the uuid's 16 bytes and 16 zero
//!   bytes ([`pycket_uuid`]). Any other key (Cloakroom's own random keys, as the
//!   conformance suite uses) is stored under its 43-character handle
//!   ([`SessionKey::to_handle`]): such sessions work here, but Tornado never finds them.
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
//! [`RedisStore`](crate::RedisStore)'s. [`SessionStore::scan`] walks the database with
//! `SCAN ... TYPE string` and skips keys that are not session keys (uuids or handles).
//! [`SessionStore::purge_expired`] is a no-op: Redis expires the keys.

mod pool;
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
use cloakroom_core::tornado::{pycket_key, pycket_uuid};
use futures_util::{StreamExt, TryStreamExt};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, Value as RedisValue};
use serde_pickle::{DeOptions, HashableValue, SerOptions, Value};

use crate::conn::{Conn, Target, bounded, map_error, redact, take_options, worth_retrying};
use crate::pycket::pool::Pool;

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

/// The Redis key of a session: its uuid text for a pycket key, else its handle.
pub fn redis_key(key: &SessionKey) -> String {
    pycket_uuid(key).unwrap_or_else(|| key.to_handle())
}

/// The session key of a Redis key made by [`redis_key`]; `None` for other keys.
pub fn session_key_of(redis_key: &str) -> Option<SessionKey> {
    if let Some(key) = pycket_key(redis_key) {
        return Some(key);
    }
    let key = SessionKey::from_handle(redis_key)?;
    // A handle of a key with a zero tail would be stored under its uuid instead.
    pycket_uuid(&key).is_none().then_some(key)
}

/// The fields of a pickled pycket session dict, as [`PycketStore`] reads them: JSON text per
/// `str` key, without `__cr.meta`.
///
/// # Errors
/// [`ErrorKind::Corrupt`] for bytes that are not a pickled dict.
pub fn fields_from_pickle(pickle: &[u8]) -> Result<Fields> {
    let stored = Stored::decode(pickle, false)?;
    let meta = stored.meta();
    Ok(stored.fields(&meta.json))
}

/// A pickle (protocol 3) of a dict holding the Python values of `fields` (JSON text per
/// key), as [`PycketStore`] writes session data (without its metadata).
///
/// # Errors
/// [`ErrorKind::Corrupt`] if the pickle cannot be made.
pub fn pickle_from_fields(fields: &Fields) -> Result<Vec<u8>> {
    let dict = fields
        .iter()
        .map(|(k, v)| (HashableValue::String(k.clone()), value::stand_in(v)))
        .collect();
    Stored { dict }.encode()
}

fn corrupt(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::Corrupt, message)
}

fn config(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::Config, message)
}

/// A session dict as pickled in Redis.
struct Stored {
    dict: BTreeMap<HashableValue, Value>,
}

/// What `__cr.meta` holds (every part optional: Tornado-made records have none).
#[derive(Default)]
struct StoredMeta {
    created: Option<i64>,
    seen: Option<i64>,
    exp: Option<i64>,
    user: Option<String>,
    user_agent: Option<String>,
    remember: bool,
    /// Verbatim JSON texts of fields whose Python value does not reproduce them.
    json: BTreeMap<String, String>,
}

fn key(name: &str) -> HashableValue {
    HashableValue::String(name.to_owned())
}

/// serde-pickle's decoder, with a panic inside it (a bug of the decoder on hostile input)
/// turned into an error: a session store must never take the request down.
fn decode_guarded(bytes: &[u8], options: DeOptions) -> serde_pickle::Result<Value> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        serde_pickle::value_from_slice(bytes, options)
    }))
    .unwrap_or_else(|_| {
        Err(serde_pickle::Error::Syntax(
            serde_pickle::ErrorCode::Structure("the pickle decoder failed on this input".into()),
        ))
    })
}

impl Stored {
    /// Decodes a pickled dict. `strict`: refuse what a rewrite would lose (class instances,
    /// unknown globals); otherwise those read as `None` or their bare state.
    fn decode(bytes: &[u8], strict: bool) -> Result<Stored> {
        if !value::within_limits(bytes) {
            return Err(corrupt(
                "the pycket session pickle is too large or too deeply self-referencing to decode \
                 safely (limits: 4 MiB pickled, 16 Mi values and bytes decoded)",
            ));
        }
        let options = DeOptions::new().decode_strings();
        let decoded = if strict {
            if !value::is_plain_data(bytes) {
                return Err(corrupt(
                    "the pycket session holds Python objects other than plain data (e.g. class \
                     instances); Cloakroom will not rewrite it and lose them",
                ));
            }
            decode_guarded(bytes, options).map_err(|e| {
                corrupt(
                    "the pycket session holds values Cloakroom cannot rewrite without loss \
                     (e.g. a datetime); store plain values",
                )
                .with_source(e)
            })?
        } else {
            decode_guarded(
                bytes,
                options
                    .replace_unresolved_globals()
                    .replace_recursive_structures(),
            )
            .map_err(|e| corrupt("not a pickle").with_source(e))?
        };
        match decoded {
            Value::Dict(dict) => Ok(Stored { dict }),
            _ => Err(corrupt("the pickle is not a dict")),
        }
    }

    fn encode(&self) -> Result<Vec<u8>> {
        // Protocol 3: what serde-pickle writes by default, read by every Python 3.
        serde_pickle::value_to_vec(&Value::Dict(self.dict.clone()), SerOptions::new())
            .map_err(|e| corrupt("cannot pickle the session").with_source(e))
    }

    fn meta(&self) -> StoredMeta {
        let Some(Value::Dict(m)) = self.dict.get(&key(META_KEY)) else {
            return StoredMeta::default();
        };
        let int = |name: &str| match m.get(&key(name)) {
            Some(Value::I64(i)) => Some(*i),
            _ => None,
        };
        let text = |name: &str| match m.get(&key(name)) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let json = match m.get(&key("json")) {
            Some(Value::Dict(j)) => j
                .iter()
                .filter_map(|(k, v)| match (k, v) {
                    (HashableValue::String(k), Value::String(v)) => Some((k.clone(), v.clone())),
                    _ => None,
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        StoredMeta {
            created: int("created"),
            seen: int("seen"),
            exp: int("exp"),
            user: text("user"),
            user_agent: text("ua"),
            remember: matches!(m.get(&key("remember")), Some(Value::Bool(true))),
            json,
        }
    }

    /// The session fields (JSON text), `json` giving verbatim texts.
    fn fields(&self, json: &BTreeMap<String, String>) -> Fields {
        self.dict
            .iter()
            .filter_map(|(k, v)| {
                let HashableValue::String(name) = k else {
                    return None;
                };
                if name == META_KEY || name == FLASH_FIELD {
                    return None;
                }
                let text = match json.get(name) {
                    Some(t) if value::stand_in(t) == *v => t.clone(),
                    _ => value::to_json(v),
                };
                Some((name.clone(), text))
            })
            .collect()
    }

    fn set_field(&mut self, json: &mut BTreeMap<String, String>, name: &str, text: &str) {
        let v = value::stand_in(text);
        if value::to_json(&v) == text {
            json.remove(name);
        } else {
            json.insert(name.to_owned(), text.to_owned());
        }
        self.dict.insert(key(name), v);
    }

    fn remove_field(&mut self, json: &mut BTreeMap<String, String>, name: &str) {
        self.dict.remove(&key(name));
        json.remove(name);
    }

    /// Writes `__cr.meta`.
    fn set_meta(&mut self, meta: &Meta, mut json: BTreeMap<String, String>) {
        json.retain(|name, _| self.dict.contains_key(&key(name)));
        let opt = |s: &Option<String>| s.clone().map_or(Value::None, Value::String);
        let mut m = BTreeMap::new();
        m.insert(key("v"), Value::I64(1));
        m.insert(key("created"), Value::I64(meta.created_at.0));
        m.insert(key("seen"), Value::I64(meta.last_seen.0));
        m.insert(key("exp"), Value::I64(meta.expires_at.0));
        m.insert(key("user"), opt(&meta.user));
        m.insert(key("ua"), opt(&meta.user_agent));
        m.insert(key("remember"), Value::Bool(meta.remember));
        if !json.is_empty() {
            let j = json
                .into_iter()
                .map(|(k, v)| (HashableValue::String(k), Value::String(v)))
                .collect();
            m.insert(key("json"), Value::Dict(j));
        }
        self.dict.insert(key(META_KEY), Value::Dict(m));
    }

    /// A record's data and metadata as a session dict.
    fn from_record(record: &Record) -> Result<Stored> {
        let mut stored = Stored {
            dict: BTreeMap::new(),
        };
        let mut json = BTreeMap::new();
        for (name, text) in &record.data {
            if name == FLASH_FIELD {
                continue;
            }
            check_field(name)?;
            stored.set_field(&mut json, name, text);
        }
        stored.set_meta(&record.meta, json);
        Ok(stored)
    }
}

fn check_field(name: &str) -> Result<()> {
    if name == META_KEY {
        return Err(config(
            "the field name __cr.meta is reserved by the pycket store for its metadata",
        ));
    }
    Ok(())
}

/// The engine's view of a stored record's times and owner; see the module docs for the
/// rules on records written by Tornado.
fn record_meta(stored: &StoredMeta, pttl: i64, now: Timestamp) -> Meta {
    let day = PYCKET_EXPIRE.as_millis() as i64;
    let ttl_exp = (pttl >= 0).then(|| now.0 + pttl);
    let (expires_at, rewritten) = match (stored.exp, ttl_exp) {
        (Some(exp), Some(t)) if (t - exp).abs() <= TTL_TOLERANCE_MS => (exp, false),
        (Some(exp), None) => (exp, false),
        (_, Some(t)) => (t, true),
        (None, None) => (now.0 + day, true),
    };
    // When pycket last wrote: its EXPIRE gives the key 24 hours.
    let pycket_write = ttl_exp.map_or(now.0, |t| (t - day).min(now.0));
    let last_seen = match stored.seen {
        Some(seen) if !rewritten => seen,
        Some(seen) => seen.max(pycket_write),
        None => pycket_write,
    };
    Meta {
        created_at: Timestamp(stored.created.unwrap_or(last_seen)),
        last_seen: Timestamp(last_seen),
        expires_at: Timestamp(expires_at),
        user: stored.user.clone(),
        user_agent: stored.user_agent.clone(),
        remember: stored.remember,
    }
}

/// The `__cr.flash` JSON of a notifications dict; `None` when it holds no message.
fn flash_from_notes(notes: &BTreeMap<HashableValue, Value>) -> Option<String> {
    let mut messages = Vec::new();
    for (name, v) in notes {
        let level = match value::key_text(name).as_str() {
            "success" => Level::Success,
            "warning" => Level::Warning,
            "error" => Level::Error,
            _ => Level::Info,
        };
        let text_of = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::None => None,
            other => Some(value::to_json(other)),
        };
        match v {
            Value::List(items) | Value::Tuple(items) => {
                messages.extend(
                    items
                        .iter()
                        .filter_map(text_of)
                        .map(|text| Message { level, text }),
                );
            }
            other => messages.extend(text_of(other).map(|text| Message { level, text })),
        }
    }
    (!messages.is_empty()).then(|| serde_json::to_string(&messages).expect("messages serialize"))
}

/// The notifications dict for a `__cr.flash` JSON text; `None` for no message.
fn notes_from_flash(json: &str) -> Result<Option<Vec<u8>>> {
    let messages: Vec<Message> = serde_json::from_str(json).map_err(|e| {
        config("the __cr.flash field must be a JSON list of {level, text} messages").with_source(e)
    })?;
    if messages.is_empty() {
        return Ok(None);
    }
    let mut texts: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for m in messages {
        texts.entry(m.level.as_str()).or_default().push(m.text);
    }
    let dict = texts
        .into_iter()
        .map(|(level, texts)| (key(level), Value::String(texts.join("\n"))))
        .collect();
    Stored { dict }.encode().map(Some)
}

/// What a transaction does to the notifications dict.
enum FlashOp {
    /// Keep it, with the session's expiry.
    Keep,
    /// Replace it with this pickle.
    Set(Vec<u8>),
    /// Delete it.
    Delete,
}

/// One transactional operation.
enum Op<'a> {
    Create(&'a Record),
    Apply(&'a Patch),
    Touch(Timestamp, Timestamp),
    Delete,
    DeleteOwned(&'a str),
}

/// What a transaction reports.
enum Outcome {
    Created(Created),
    Applied(Applied),
    /// Whether a live record was deleted, and whose it was.
    Deleted(bool, Option<String>),
}

enum Attempt {
    Done(Outcome),
    /// Another client changed the key between `WATCH` and `EXEC`.
    Conflict,
}

enum TxError {
    Redis(RedisError),
    Store(Error),
}

impl From<RedisError> for TxError {
    fn from(e: RedisError) -> Self {
        TxError::Redis(e)
    }
}

impl From<Error> for TxError {
    fn from(e: Error) -> Self {
        TxError::Store(e)
    }
}

type TxResult = std::result::Result<Attempt, TxError>;

/// Sessions in pycket's Redis format; see the [module docs](self).
///
/// Cheap to clone (clones share the connections).
#[derive(Clone)]
pub struct PycketStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Multiplexed connection to the sessions database (reads, the user index).
    sessions: Conn,
    /// Multiplexed connection to the notifications database (reads).
    notes: Conn,
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

/// Options for [`PycketStore`]; made by [`PycketStore::builder`].
#[must_use = "call .build().await to open the store"]
#[derive(Clone)]
pub struct PycketStoreBuilder {
    url: String,
    prefix: Option<String>,
    command_timeout: Option<Duration>,
    connections: Option<usize>,
}

impl fmt::Debug for PycketStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PycketStoreBuilder")
            .field("url", &redact(&self.url))
            .field("prefix", &self.prefix)
            .field("command_timeout", &self.command_timeout)
            .field("connections", &self.connections)
            .finish()
    }
}

/// A `pycket+redis://` URL taken apart.
#[derive(Debug, PartialEq, Eq)]
struct PycketUrl {
    /// redis-rs URL of the sessions database.
    sessions: String,
    /// redis-rs URL of the notifications database.
    notes: String,
    sessions_db: i64,
    notifications_db: i64,
    prefix: Option<String>,
    timeout: Option<Duration>,
    connections: Option<usize>,
}

fn parse_url(url: &str) -> Result<PycketUrl> {
    let shown = redact(url);
    let (scheme, rest) = url
        .trim()
        .split_once("://")
        .ok_or_else(|| config(format!("not a pycket+redis:// URL: {shown}")))?;
    if !scheme.eq_ignore_ascii_case("pycket+redis") {
        return Err(config(format!(
            "a pycket store URL starts with pycket+redis://, not {scheme}://"
        )));
    }
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() || authority.ends_with('@') {
        return Err(config(format!("no host in {shown}")));
    }
    let db = |text: &str, what: &str| -> Result<i64> {
        text.parse::<u32>()
            .map(i64::from)
            .map_err(|_| config(format!("bad {what} in {shown}")))
    };
    let sessions_db = match path.trim_end_matches('/') {
        "" => DEFAULT_SESSIONS_DB,
        p => db(p, "database number")?,
    };
    let mut notifications_db = DEFAULT_NOTIFICATIONS_DB;
    let mut others = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("notifications_db", v)) => notifications_db = db(v, "notifications_db")?,
            _ => others.push(pair),
        }
    }
    if notifications_db == sessions_db {
        return Err(config(format!(
            "notifications_db must differ from the sessions database ({sessions_db}): pycket \
             keeps both under the same keys"
        )));
    }
    let query = if others.is_empty() {
        String::new()
    } else {
        format!("?{}", others.join("&"))
    };
    let (sessions, options) = take_options(&format!("redis://{authority}/{sessions_db}{query}"))?;
    let rest_query = sessions
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    Ok(PycketUrl {
        notes: format!("redis://{authority}/{notifications_db}{rest_query}"),
        sessions,
        sessions_db,
        notifications_db,
        prefix: options.prefix,
        timeout: options.timeout,
        connections: options.connections,
    })
}

impl PycketStoreBuilder {
    /// The prefix of the user index keys (default `cloakroom:`; URL option `prefix`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// The bound on every operation, connecting included (default 2 s; URL option
    /// `timeout_ms`). Must not be zero.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = Some(timeout);
        self
    }

    /// How many dedicated connections transactions may hold at once (default 8; URL option
    /// `connections`). Reads share two multiplexed connections whatever this is.
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = Some(n);
        self
    }

    /// Connects and returns the store.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a bad URL or option, [`ErrorKind::Unavailable`] when Redis
    /// cannot be reached within the timeout.
    pub async fn build(self) -> Result<PycketStore> {
        let url = parse_url(&self.url)?;
        let timeout = self
            .command_timeout
            .or(url.timeout)
            .unwrap_or(crate::DEFAULT_COMMAND_TIMEOUT);
        if timeout.is_zero() {
            return Err(config("the command timeout must not be zero"));
        }
        let connections = self
            .connections
            .or(url.connections)
            .unwrap_or(DEFAULT_CONNECTIONS);
        if connections == 0 {
            return Err(config("at least one connection is needed"));
        }
        let shown_url = redact(&self.url);
        let sessions = Conn::open(
            &Target::Standalone(url.sessions.clone()),
            timeout,
            &shown_url,
        )
        .await?;
        let notes = Conn::open(&Target::Standalone(url.notes.clone()), timeout, &shown_url).await?;
        let client = redis::Client::open(url.sessions.as_str())
            .map_err(|e| config(format!("bad Redis URL {shown_url}")).with_source(e))?;
        let settings = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        Ok(PycketStore {
            inner: Arc::new(Inner {
                sessions,
                notes,
                pool: Pool::new(client, settings, connections),
                stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
                hasher: std::collections::hash_map::RandomState::new(),
                sessions_db: url.sessions_db,
                notifications_db: url.notifications_db,
                prefix: self
                    .prefix
                    .or(url.prefix)
                    .unwrap_or_else(|| crate::DEFAULT_PREFIX.to_owned()),
                timeout,
                shown_url,
            }),
        })
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
            prefix: None,
            command_timeout: None,
            connections: None,
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

    /// Runs `op` on `rkey` as a transaction (see the module docs), retrying conflicts.
    async fn transact(&self, what: &'static str, rkey: &str, op: &Op<'_>) -> Result<Outcome> {
        let run = async {
            let _queue = self.stripe(rkey).lock().await;
            let mut reconnected = false;
            let mut conflicts = 0u32;
            loop {
                let mut lease = match self.inner.pool.lease().await {
                    Ok(lease) => lease,
                    Err(e) if worth_retrying(&e) && !reconnected => {
                        reconnected = true;
                        self.inner.pool.clear();
                        continue;
                    }
                    Err(e) => return Err(map_error(e, what)),
                };
                match self.attempt(lease.conn(), rkey, op).await {
                    Ok(Attempt::Done(outcome)) => {
                        lease.release();
                        return Ok(outcome);
                    }
                    Ok(Attempt::Conflict) => {
                        lease.release();
                        conflicts += 1;
                        if conflicts >= MAX_CONFLICTS {
                            return Err(Error::new(
                                ErrorKind::Backend,
                                format!(
                                    "pycket {what}: the key kept changing under {MAX_CONFLICTS} \
                                     transactions"
                                ),
                            ));
                        }
                        self.backoff(conflicts).await;
                    }
                    // The lease is dropped (closed): it may hold a WATCH.
                    Err(TxError::Store(e)) => return Err(e),
                    Err(TxError::Redis(e)) if worth_retrying(&e) && !reconnected => {
                        reconnected = true;
                        self.inner.pool.clear();
                    }
                    Err(TxError::Redis(e)) => return Err(map_error(e, what)),
                }
            }
        };
        match tokio::time::timeout(self.inner.timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("pycket {what}: no reply within {:?}", self.inner.timeout),
            )),
        }
    }

    async fn backoff(&self, attempt: u32) {
        let seed = (attempt, Timestamp::now().0, std::thread::current().id());
        let cap = 200u64 << attempt.min(5);
        let micros = self.inner.hasher.hash_one(seed) % cap;
        tokio::time::sleep(Duration::from_micros(micros)).await;
    }

    /// One attempt of a transaction on a dedicated connection.
    async fn attempt(&self, c: &mut MultiplexedConnection, rkey: &str, op: &Op<'_>) -> TxResult {
        if let Op::Delete = op {
            return self.delete_once(c, rkey).await;
        }
        redis::cmd("WATCH").arg(rkey).exec_async(c).await?;
        if let Op::Create(record) = op {
            return self.create_once(c, rkey, record).await;
        }
        let (raw, pttl): (Option<Vec<u8>>, i64) = redis::pipe()
            .cmd("GET")
            .arg(rkey)
            .cmd("PTTL")
            .arg(rkey)
            .query_async(c)
            .await?;
        let now = Timestamp::now();
        let raw = match raw {
            Some(raw) if pttl != -2 => raw,
            _ => {
                redis::cmd("UNWATCH").exec_async(c).await?;
                return Ok(Attempt::Done(match op {
                    Op::DeleteOwned(_) => Outcome::Deleted(false, None),
                    _ => Outcome::Applied(Applied::Missing),
                }));
            }
        };
        if let Op::DeleteOwned(user) = op {
            let stored = Stored::decode(&raw, false)?;
            let meta = record_meta(&stored.meta(), pttl, now);
            if meta.user.as_deref() != Some(*user) || meta.expires_at <= now {
                redis::cmd("UNWATCH").exec_async(c).await?;
                return Ok(Attempt::Done(Outcome::Deleted(false, None)));
            }
            let mut p = redis::pipe();
            p.atomic().cmd("DEL").arg(rkey);
            self.notes_part(&mut p, rkey, &FlashOp::Delete, None);
            let reply: RedisValue = p.query_async(c).await?;
            return Ok(match reply {
                RedisValue::Nil => Attempt::Conflict,
                _ => Attempt::Done(Outcome::Deleted(true, meta.user)),
            });
        }
        let mut stored = Stored::decode(&raw, true)?;
        let stored_meta = stored.meta();
        let mut meta = record_meta(&stored_meta, pttl, now);
        if meta.expires_at <= now {
            redis::cmd("UNWATCH").exec_async(c).await?;
            return Ok(Attempt::Done(Outcome::Applied(Applied::Missing)));
        }
        let mut json = stored_meta.json;
        let mut flash = FlashOp::Keep;
        match op {
            Op::Apply(patch) => {
                for name in &patch.remove {
                    if name == FLASH_FIELD {
                        flash = FlashOp::Delete;
                    } else {
                        stored.remove_field(&mut json, name);
                    }
                }
                for (name, text) in &patch.set {
                    if name == FLASH_FIELD {
                        flash = match notes_from_flash(text)? {
                            Some(bytes) => FlashOp::Set(bytes),
                            None => FlashOp::Delete,
                        };
                    } else {
                        check_field(name)?;
                        stored.set_field(&mut json, name, text);
                    }
                }
                meta.last_seen = patch.last_seen;
                meta.expires_at = patch.expiry_for(meta.created_at);
                if let Some(remember) = patch.remember {
                    meta.remember = remember;
                }
            }
            Op::Touch(last_seen, expires_at) => {
                meta.last_seen = *last_seen;
                meta.expires_at = *expires_at;
            }
            Op::Create(_) | Op::Delete | Op::DeleteOwned(_) => unreachable!("handled above"),
        }
        stored.set_meta(&meta, json);
        let mut p = redis::pipe();
        p.atomic();
        let live = meta.expires_at > now;
        if live {
            p.cmd("SET")
                .arg(rkey)
                .arg(stored.encode()?)
                .arg("PXAT")
                .arg(meta.expires_at.0);
        } else {
            // Past its lifetime: gone, as if Redis had expired it.
            p.cmd("DEL").arg(rkey);
            if let Some(user) = &meta.user {
                p.cmd("SREM").arg(self.user_key(user)).arg(rkey);
            }
        }
        self.notes_part(&mut p, rkey, &flash, live.then_some(meta.expires_at));
        let reply: RedisValue = p.query_async(c).await?;
        Ok(match reply {
            RedisValue::Nil => Attempt::Conflict,
            _ => Attempt::Done(Outcome::Applied(Applied::Done)),
        })
    }

    async fn create_once(
        &self,
        c: &mut MultiplexedConnection,
        rkey: &str,
        record: &Record,
    ) -> TxResult {
        let exists: bool = redis::cmd("EXISTS").arg(rkey).query_async(c).await?;
        let now = Timestamp::now();
        if exists || record.meta.expires_at <= now {
            redis::cmd("UNWATCH").exec_async(c).await?;
            // A record already expired is written nowhere, as if Redis had dropped it.
            return Ok(Attempt::Done(Outcome::Created(if exists {
                Created::Collision
            } else {
                Created::Done
            })));
        }
        let stored = Stored::from_record(record)?;
        let flash = match record.data.get(FLASH_FIELD) {
            Some(text) => match notes_from_flash(text)? {
                Some(bytes) => FlashOp::Set(bytes),
                None => FlashOp::Delete,
            },
            // A new session starts without notifications.
            None => FlashOp::Delete,
        };
        let exp = record.meta.expires_at;
        let mut p = redis::pipe();
        p.atomic()
            .cmd("SET")
            .arg(rkey)
            .arg(stored.encode()?)
            .arg("PXAT")
            .arg(exp.0);
        if let Some(user) = &record.meta.user {
            p.cmd("SADD").arg(self.user_key(user)).arg(rkey);
        }
        self.notes_part(&mut p, rkey, &flash, Some(exp));
        let reply: RedisValue = p.query_async(c).await?;
        Ok(match reply {
            RedisValue::Nil => Attempt::Conflict,
            _ => Attempt::Done(Outcome::Created(Created::Done)),
        })
    }

    async fn delete_once(&self, c: &mut MultiplexedConnection, rkey: &str) -> TxResult {
        let mut p = redis::pipe();
        p.atomic().cmd("GET").arg(rkey).cmd("DEL").arg(rkey);
        self.notes_part(&mut p, rkey, &FlashOp::Delete, None);
        let reply: Vec<RedisValue> = p.query_async(c).await?;
        let raw = match reply.first() {
            Some(RedisValue::BulkString(b)) => Some(b.clone()),
            _ => None,
        };
        let deleted = matches!(reply.get(1), Some(RedisValue::Int(1)));
        let user = raw
            .filter(|_| deleted)
            .and_then(|raw| Stored::decode(&raw, false).ok())
            .and_then(|s| s.meta().user);
        Ok(Attempt::Done(Outcome::Deleted(deleted, user)))
    }

    /// Queues the notifications part of a transaction: `SELECT` the notifications database,
    /// apply `flash` (deleting when the session is gone, `exp` `None`), `SELECT` back.
    fn notes_part(
        &self,
        p: &mut redis::Pipeline,
        rkey: &str,
        flash: &FlashOp,
        exp: Option<Timestamp>,
    ) {
        p.cmd("SELECT").arg(self.inner.notifications_db);
        match (flash, exp) {
            (FlashOp::Set(bytes), Some(exp)) => {
                p.cmd("SET").arg(rkey).arg(bytes).arg("PXAT").arg(exp.0);
            }
            (FlashOp::Keep, Some(exp)) => {
                p.cmd("PEXPIREAT").arg(rkey).arg(exp.0);
            }
            _ => {
                p.cmd("DEL").arg(rkey);
            }
        }
        p.cmd("SELECT").arg(self.inner.sessions_db);
    }

    /// `GET` + `PTTL` of the session and `GET` of its notifications, decoded.
    async fn load_key(&self, rkey: &str) -> Result<Option<Record>> {
        let timeout = self.inner.timeout;
        let session = bounded(timeout, "load", || {
            let mut conn = self.inner.sessions.clone();
            let mut p = redis::pipe();
            p.cmd("GET").arg(rkey).cmd("PTTL").arg(rkey);
            async move { p.query_async::<(Option<Vec<u8>>, i64)>(&mut conn).await }
        });
        let notes = bounded(timeout, "load (notifications)", || {
            let mut conn = self.inner.notes.clone();
            let mut cmd = redis::cmd("GET");
            cmd.arg(rkey);
            async move { cmd.query_async::<Option<Vec<u8>>>(&mut conn).await }
        });
        let ((raw, pttl), notes) = futures_util::future::try_join(session, notes).await?;
        let Some(raw) = raw else {
            return Ok(None);
        };
        if pttl == -2 {
            return Ok(None);
        }
        let now = Timestamp::now();
        let stored = Stored::decode(&raw, false)?;
        let stored_meta = stored.meta();
        let meta = record_meta(&stored_meta, pttl, now);
        if meta.expires_at <= now {
            return Ok(None);
        }
        let mut data = stored.fields(&stored_meta.json);
        if let Some(notes) = notes {
            match Stored::decode(&notes, false) {
                Ok(n) => {
                    if let Some(flash) = flash_from_notes(&n.dict) {
                        data.insert(FLASH_FIELD.to_owned(), flash);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "ignoring undecodable pycket notifications"),
            }
        }
        Ok(Some(Record { data, meta }))
    }

    /// Loads several sessions, some in flight at once.
    async fn load_many(&self, keys: &[SessionKey]) -> Result<Vec<Option<Record>>> {
        let loads = keys
            .iter()
            .copied()
            .map(|k| async move { self.load(&k).await });
        futures_util::stream::iter(loads)
            .buffered(FAN_OUT)
            .try_collect()
            .await
    }

    async fn query(&self, what: &'static str, cmd: redis::Cmd) -> Result<RedisValue> {
        bounded(self.inner.timeout, what, || {
            let mut conn = self.inner.sessions.clone();
            let cmd = cmd.clone();
            async move { cmd.query_async::<RedisValue>(&mut conn).await }
        })
        .await
    }

    async fn index_members(&self, what: &'static str, user: &str) -> Result<Vec<String>> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(self.user_key(user));
        let reply = self.query(what, cmd).await?;
        let members: Vec<Vec<u8>> = redis::from_redis_value(reply)
            .map_err(|e| corrupt("unexpected SMEMBERS reply").with_source(e))?;
        // A member that is not UTF-8 cannot be a session key; keep it for pruning anyway.
        Ok(members
            .into_iter()
            .map(|m| String::from_utf8_lossy(&m).into_owned())
            .collect())
    }

    async fn unindex(&self, user: &str, members: &[String]) {
        if members.is_empty() {
            return;
        }
        let mut cmd = redis::cmd("SREM");
        cmd.arg(self.user_key(user)).arg(members);
        if let Err(e) = self.query("unindex", cmd).await {
            tracing::debug!(error = %e, "could not prune a user index; will retry later");
        }
    }
}

#[async_trait]
impl SessionStore for PycketStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.load_key(&redis_key(key)).await
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created> {
        let rkey = redis_key(key);
        let Outcome::Created(created) = self.transact("create", &rkey, &Op::Create(record)).await?
        else {
            unreachable!("create reports Created")
        };
        if let (Created::Done, Some(user)) = (created, &record.meta.user) {
            let mut cmd = redis::cmd("SCARD");
            cmd.arg(self.user_key(user));
            if let Ok(RedisValue::Int(size)) = self.query("create (index size)", cmd).await {
                if size >= PRUNE_FROM && size % PRUNE_EVERY == 0 {
                    if let Err(e) = self.sessions_of(user).await {
                        tracing::debug!(error = %e, "could not prune a user index");
                    }
                }
            }
        }
        Ok(created)
    }

    async fn apply(&self, key: &SessionKey, patch: &Patch) -> Result<Applied> {
        match self
            .transact("apply", &redis_key(key), &Op::Apply(patch))
            .await?
        {
            Outcome::Applied(a) => Ok(a),
            _ => unreachable!("apply reports Applied"),
        }
    }

    async fn touch(
        &self,
        key: &SessionKey,
        last_seen: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Applied> {
        let op = Op::Touch(last_seen, expires_at);
        match self.transact("touch", &redis_key(key), &op).await? {
            Outcome::Applied(a) => Ok(a),
            _ => unreachable!("touch reports Applied"),
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let rkey = redis_key(key);
        let Outcome::Deleted(live, user) = self.transact("delete", &rkey, &Op::Delete).await?
        else {
            unreachable!("delete reports Deleted")
        };
        if let Some(user) = user {
            self.unindex(&user, &[rkey]).await;
        }
        Ok(live)
    }

    async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>> {
        let members = self.index_members("sessions_of", user).await?;
        let mut dead = Vec::new();
        let mut keys = Vec::with_capacity(members.len());
        let mut kept = Vec::with_capacity(members.len());
        for member in members {
            match session_key_of(&member) {
                Some(key) => {
                    keys.push(key);
                    kept.push(member);
                }
                None => dead.push(member),
            }
        }
        let records = self.load_many(&keys).await?;
        let mut out = Vec::with_capacity(keys.len());
        for ((key, member), record) in keys.into_iter().zip(kept).zip(records) {
            match record {
                Some(r) if r.meta.user.as_deref() == Some(user) => out.push(r.info(key)),
                _ => dead.push(member),
            }
        }
        self.unindex(user, &dead).await;
        out.sort_by_key(|i| std::cmp::Reverse(i.meta.last_seen));
        Ok(out)
    }

    async fn delete_user(&self, user: &str, except: Option<&SessionKey>) -> Result<u64> {
        let except = except.map(redis_key);
        let members: Vec<String> = self
            .index_members("delete_user", user)
            .await?
            .into_iter()
            .filter(|m| Some(m) != except.as_ref())
            .collect();
        let mut deleted = 0;
        for member in &members {
            if session_key_of(member).is_none() {
                continue;
            }
            let op = Op::DeleteOwned(user);
            if let Outcome::Deleted(true, _) = self.transact("delete_user", member, &op).await? {
                deleted += 1;
            }
        }
        // Every member handled is gone now (deleted, expired or someone else's).
        self.unindex(user, &members).await;
        Ok(deleted)
    }

    async fn scan(&self, cursor: Cursor, limit: usize) -> Result<Page> {
        let limit = limit.max(1);
        let bad = || config("invalid scan cursor");
        let (mut scan_cursor, mut after) = if cursor.0.is_empty() {
            (0u64, None)
        } else {
            let (c, a) = cursor.0.split_once(':').ok_or_else(bad)?;
            let c: u64 = c.parse().map_err(|_| bad())?;
            let a = match a {
                "" => None,
                a => Some(session_key_of(a).map(|k| redis_key(&k)).ok_or_else(bad)?),
            };
            (c, a)
        };
        let mut sessions = Vec::new();
        for _ in 0..SCAN_CALLS {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(scan_cursor)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .arg("TYPE")
                .arg("string");
            let reply = self.query("scan", cmd).await?;
            let (next, found): (String, Vec<Vec<u8>>) = redis::from_redis_value(reply)
                .map_err(|e| corrupt("unexpected SCAN reply").with_source(e))?;
            let next: u64 = next
                .parse()
                .map_err(|_| corrupt("unexpected SCAN cursor"))?;
            let mut batch: Vec<(String, SessionKey)> = found
                .into_iter()
                .filter_map(|k| String::from_utf8(k).ok())
                .filter_map(|k| session_key_of(&k).map(|key| (k, key)))
                .collect();
            batch.sort();
            batch.dedup();
            if let Some(a) = &after {
                batch.retain(|(k, _)| k > a);
            }
            let mut taken = 0;
            while taken < batch.len() {
                let want = (limit - sessions.len()).min(batch.len() - taken);
                let chunk: Vec<SessionKey> =
                    batch[taken..taken + want].iter().map(|(_, k)| *k).collect();
                for (key, record) in chunk.iter().zip(self.load_many(&chunk).await?) {
                    if let Some(record) = record {
                        sessions.push(record.info(*key));
                    }
                }
                taken += want;
                if sessions.len() == limit && taken < batch.len() {
                    let last = &batch[taken - 1].0;
                    return Ok(Page {
                        sessions,
                        next: Some(Cursor(format!("{scan_cursor}:{last}"))),
                    });
                }
            }
            after = None;
            if next == 0 {
                return Ok(Page {
                    sessions,
                    next: None,
                });
            }
            scan_cursor = next;
            if sessions.len() == limit {
                break;
            }
        }
        Ok(Page {
            sessions,
            next: Some(Cursor(format!("{scan_cursor}:"))),
        })
    }

    async fn purge_expired(&self) -> Result<u64> {
        // Redis expires the keys by itself.
        Ok(0)
    }

    async fn ping(&self) -> Result<()> {
        self.query("ping", redis::cmd("PING")).await?;
        bounded(self.inner.timeout, "ping", || {
            let mut conn = self.inner.notes.clone();
            async move {
                redis::cmd("PING")
                    .query_async::<RedisValue>(&mut conn)
                    .await
            }
        })
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("pycket+redis://127.0.0.1:6379/5?notifications_db=11").unwrap();
        assert_eq!(u.sessions, "redis://127.0.0.1:6379/5");
        assert_eq!(u.notes, "redis://127.0.0.1:6379/11");
        assert_eq!((u.sessions_db, u.notifications_db), (5, 11));
        let u = parse_url("PYCKET+REDIS://:pw@h:1?timeout_ms=300&prefix=a%3A&protocol=3").unwrap();
        assert_eq!(u.sessions, "redis://:pw@h:1/0?protocol=3");
        assert_eq!(u.notes, "redis://:pw@h:1/1?protocol=3");
        assert_eq!(u.timeout, Some(Duration::from_millis(300)));
        assert_eq!(u.prefix.as_deref(), Some("a:"));
        for bad in [
            "redis://h/0",
            "pycket+redis://",
            "pycket+redis://h/x",
            "pycket+redis://h/2?notifications_db=2",
            "pycket+redis://h/0?notifications_db=-1",
            "pycket+redis://h?timeout_ms=x",
        ] {
            assert_eq!(
                parse_url(bad).unwrap_err().kind(),
                ErrorKind::Config,
                "{bad}"
            );
        }
        let err = parse_url("pycket+redis://:hunter2@h/1?notifications_db=1").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn redis_keys_are_uuids_or_handles() {
        let uuid = "0ca7a58c-ee4e-4a07-b606-20dbd97281e7";
        let key = pycket_key(uuid).unwrap();
        assert_eq!(redis_key(&key), uuid);
        assert_eq!(session_key_of(uuid), Some(key));
        let random = SessionKey::from_bytes([7; 32]);
        assert_eq!(redis_key(&random), random.to_handle());
        assert_eq!(session_key_of(&random.to_handle()), Some(random));
        // The handle of a zero-tail key is not a session key: that key lives under its uuid.
        assert_eq!(session_key_of(&key.to_handle()), None);
        for junk in ["cloakroom:u:ada", "", "x", &uuid.to_uppercase()] {
            assert_eq!(session_key_of(junk), None, "{junk}");
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
        let mut record = Record::new(Timestamp(now.0 - 5000), now.plus(Duration::from_secs(60)));
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
        let pttl = record.meta.expires_at.0 - now.0;
        assert_eq!(record_meta(&meta, pttl, now), record.meta);
        // Tornado changed `a`: its new value wins over the kept text.
        let mut changed = back;
        changed.dict.insert(key("a"), Value::F64(3.0));
        assert_eq!(changed.fields(&meta.json)["a"], "3.0");
    }

    #[test]
    fn records_written_by_tornado_get_times_from_the_ttl() {
        let now = Timestamp(1_764_320_000_000);
        let day = PYCKET_EXPIRE.as_millis() as i64;
        // Written 10 minutes ago by pycket: TTL 23h50m left.
        let pttl = day - 600_000;
        let meta = record_meta(&StoredMeta::default(), pttl, now);
        assert_eq!(meta.expires_at, Timestamp(now.0 + pttl));
        assert_eq!(meta.last_seen, Timestamp(now.0 - 600_000));
        assert_eq!(meta.created_at, meta.last_seen);
        assert_eq!(meta.user, None);
        // Ours, then rewritten by pycket a minute ago: the TTL wins, and counts as activity.
        let ours = StoredMeta {
            created: Some(now.0 - 3_600_000),
            seen: Some(now.0 - 3_000_000),
            exp: Some(now.0 + 1_000_000),
            user: Some("ada".into()),
            ..StoredMeta::default()
        };
        let meta = record_meta(&ours, day - 60_000, now);
        assert_eq!(meta.expires_at, Timestamp(now.0 + day - 60_000));
        assert_eq!(meta.last_seen, Timestamp(now.0 - 60_000));
        assert_eq!(meta.created_at, Timestamp(now.0 - 3_600_000));
        // No TTL (between pycket's SET and EXPIRE): the stored expiry.
        assert_eq!(
            record_meta(&ours, -1, now).expires_at,
            Timestamp(now.0 + 1_000_000)
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
