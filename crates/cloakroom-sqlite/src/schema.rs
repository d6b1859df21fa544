//! The schema, versioned with `PRAGMA user_version`.

use cloakroom_core::store::{Error, ErrorKind, Result};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::SqlContext;

/// The schema version this crate writes and reads (`PRAGMA user_version`).
///
/// - 1: the table, an index on the user and one on `expires_at`.
/// - 2: without the `expires_at` index. Every patch and touch moves `expires_at`, so that
///   index cost each write a delete and an insert in its b-tree (about 40% of a write's CPU,
///   measured: `examples/write_paths.rs`); the purge now scans the table in rowid chunks
///   instead. Opening a version-1 file migrates it (drops the index); a version-1 binary
///   refuses a version-2 file.
/// - 3: adds the `challenges` table (single-use DBSC challenges).
/// - 4: session keys are 16 bytes ([`SessionKey::LEN`](cloakroom_core::SessionKey::LEN)).
///   Opening an older file converts its keys to their first 16 bytes, so its sessions stay
///   valid (a session holding sealed values ends instead).
pub const SCHEMA_VERSION: i64 = 4;

/// Version 4, for a new file: version 2 and [`CHALLENGES`] (version 4 changed the keys'
/// length, not the tables).
///
/// Version 2: A rowid table with the key as a unique index rather than `WITHOUT ROWID`:
/// session rows often hold kilobytes of data, and SQLite advises `WITHOUT ROWID` only for
/// rows under about 1/20 of a page. `data` is a JSON object of field name -> the field's
/// JSON text *as a JSON string*, so that `json_patch` (RFC 7396) can set a field
/// (`"name": "<json text>"`) or remove it (`"name": null`) in the same UPDATE.
const V2: &str = "
CREATE TABLE sessions (
    key         BLOB    NOT NULL PRIMARY KEY,
    user        TEXT,
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    user_agent  TEXT,
    remember    INTEGER NOT NULL DEFAULT 0,
    data        TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX sessions_by_user ON sessions (user) WHERE user IS NOT NULL;
";

/// From version 2 to 3: single-use challenges (`session` is the session key), taken with
/// `DELETE ... RETURNING`.
const CHALLENGES: &str = "
CREATE TABLE challenges (
    challenge   TEXT    NOT NULL PRIMARY KEY,
    session     BLOB    NOT NULL,
    expires_at  INTEGER NOT NULL
);
";

/// The event log (`SqliteStoreBuilder::event_log`), created when a store is opened with it
/// and not otherwise: a file without these tables keeps no log, and nothing about it
/// changes. `events` is append-only (`seq` from `AUTOINCREMENT`, never reused, even after
/// the newest rows are trimmed); `events_state` is one row: how many events to keep (the
/// last opener's setting) and `trimmed`, the highest `seq` the purge deleted (a reader from
/// before it was told of a gap). Outside `user_version`: the log is optional, and a file
/// with one is still a version-3 file.
const EVENTS: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    session  BLOB    NOT NULL,
    previous TEXT,
    user     TEXT
);
CREATE TABLE IF NOT EXISTS events_state (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    keep     INTEGER NOT NULL,
    trimmed  INTEGER NOT NULL DEFAULT 0
);
";

/// From version 1 to 2.
const V1_TO_V2: &str = "DROP INDEX IF EXISTS sessions_by_expiry;";

/// From 32-byte session keys (SHA-256 of the id) to 16-byte ones (its first 16 bytes), so
/// the sessions stay valid: the new key of a ticket is a prefix of its old one. A record
/// holding a sealed value (`~` starts it, and never a JSON text) is deleted instead: its
/// values were sealed with the old key as associated data and would not open under the new
/// one (that session ends; its user signs in again). A rotation's forward converts but is
/// no longer found (its key is derived from the key it forwards); it expires with its grace.
const KEYS_TO_V4: &str = "
DELETE FROM sessions WHERE length(key) = 32 AND (
    user_agent LIKE '~%'
    OR EXISTS (SELECT 1 FROM json_each(sessions.data) AS f
               WHERE f.type = 'text' AND f.value LIKE '~%'));
UPDATE sessions SET key = substr(key, 1, 16) WHERE length(key) = 32;
UPDATE challenges SET session = substr(session, 1, 16) WHERE length(session) = 32;
";

/// [`KEYS_TO_V4`] for the event log: its session keys, and its previous handles (43
/// characters of base64url to 22: the first 21 characters, then the 22nd with its last 4
/// bits, which came from the 17th byte, cleared).
const EVENT_KEYS_TO_V4: &str = "
UPDATE events SET session = substr(session, 1, 16) WHERE length(session) = 32;
UPDATE events SET previous = substr(previous, 1, 21) || substr(
    'AAAAAAAAAAAAAAAAQQQQQQQQQQQQQQQQggggggggggggggggwwwwwwwwwwwwwwww',
    instr('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_',
          substr(previous, 22, 1)), 1)
WHERE length(previous) = 43;
";

/// Brings the database to [`SCHEMA_VERSION`], or refuses it; with `events` (how many to
/// keep), also creates the event log's tables (or sets how many it keeps). Returns how many
/// events the file's log keeps, `None` when it has none: a file that has a log keeps it
/// whoever opens it, so that no write of any process goes unlogged.
///
/// Runs in an IMMEDIATE transaction, so two processes opening a new file at once do not
/// both create the schema.
pub(crate) fn migrate(conn: &mut Connection, events: Option<u64>) -> Result<Option<u64>> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("starting the schema migration")?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .ctx("reading the schema version")?;
    let has_table: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'sessions')",
            [],
            |row| row.get(0),
        )
        .ctx("reading the schema")?;
    match version {
        0 if has_table => {
            return Err(Error::new(
                ErrorKind::Config,
                "the database already has a `sessions` table that cloakroom-sqlite did not \
                 create (user_version 0): use another file",
            ));
        }
        0 => {
            tx.execute_batch(V2).ctx("creating the schema")?;
            tx.execute_batch(CHALLENGES).ctx("creating the schema")?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .ctx("setting the schema version")?;
        }
        1..=SCHEMA_VERSION if !has_table => {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "the database says schema version {version} (PRAGMA user_version) \
                     but has no `sessions` table: it belongs to another program"
                ),
            ));
        }
        1..=3 => {
            if version == 1 {
                tx.execute_batch(V1_TO_V2)
                    .ctx("migrating the schema from version 1 to 2")?;
            }
            if version <= 2 {
                tx.execute_batch(CHALLENGES)
                    .ctx("migrating the schema from version 2 to 3")?;
            }
            tx.execute_batch(KEYS_TO_V4)
                .ctx("migrating the schema from version 3 to 4")?;
            if has_events(&tx)? {
                tx.execute_batch(EVENT_KEYS_TO_V4)
                    .ctx("migrating the event log to version 4")?;
            }
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .ctx("setting the schema version")?;
        }
        SCHEMA_VERSION => {}
        v if v > SCHEMA_VERSION => {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "the session database has schema version {v}, newer than the {SCHEMA_VERSION} \
                     this cloakroom-sqlite understands: upgrade cloakroom, or use another file"
                ),
            ));
        }
        v => {
            return Err(Error::new(
                ErrorKind::Config,
                format!("the session database has an invalid schema version {v}"),
            ));
        }
    }
    let keep = match events {
        Some(keep) => {
            let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
            tx.execute_batch(EVENTS).ctx("creating the event log")?;
            tx.execute(
                "INSERT INTO events_state (id, keep) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET keep = excluded.keep",
                [keep],
            )
            .ctx("setting the event log's retention")?;
            Some(keep)
        }
        None => match has_events(&tx)? {
            true => tx
                .query_row("SELECT keep FROM events_state WHERE id = 1", [], |row| {
                    row.get::<_, i64>(0)
                })
                .optional()
                .ctx("reading the event log's retention")?,
            false => None,
        },
    };
    tx.commit().ctx("committing the schema migration")?;
    Ok(keep.map(|k| k.max(1) as u64))
}

/// Whether the file has an event log.
fn has_events(conn: &Connection) -> Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'events_state')",
        [],
        |row| row.get(0),
    )
    .ctx("reading the schema")
}
