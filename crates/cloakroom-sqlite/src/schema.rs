//! The schema, versioned with `PRAGMA user_version`.

use cloakroom_core::store::{Error, ErrorKind, Result};
use rusqlite::{Connection, TransactionBehavior};

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
pub const SCHEMA_VERSION: i64 = 3;

/// Version 3, for a new file: version 2 and [`CHALLENGES`].
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

/// From version 1 to 2.
const V1_TO_V2: &str = "DROP INDEX IF EXISTS sessions_by_expiry;";

/// Brings the database to [`SCHEMA_VERSION`], or refuses it.
///
/// Runs in an IMMEDIATE transaction, so two processes opening a new file at once do not
/// both create the schema.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
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
        1 | 2 => {
            if version == 1 {
                tx.execute_batch(V1_TO_V2)
                    .ctx("migrating the schema from version 1 to 2")?;
            }
            tx.execute_batch(CHALLENGES)
                .ctx("migrating the schema from version 2 to 3")?;
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
    tx.commit().ctx("committing the schema migration")
}
