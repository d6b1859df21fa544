//! The durable event log ([`EventLog`]): the `events` table, written by the writer thread in
//! the same transaction as the change it describes.
//!
//! - **Atomic.** A logged change is one job of the writer (so one batch transaction), and
//!   its statements (the change, then its event rows) run under a savepoint: if any fails,
//!   all of them are undone and the other jobs of the batch are left alone. A change that
//!   did not happen (a collision, a delete of nothing, a refusal) inserts no row.
//! - **Ordered.** SQLite has one writer at a time (the writer thread holds `BEGIN
//!   IMMEDIATE`'s lock until `COMMIT`, and so does any other process writing the file), so
//!   `seq` (`AUTOINCREMENT`: increasing, never reused) is assigned in commit order: a reader
//!   that saw `seq` n has seen every event below it.
//! - **Bounded.** The purge keeps the newest `keep` events and records the highest `seq` it
//!   deleted (`events_state.trimmed`); a read from below it reports a gap. The events and
//!   the mark are read in one statement, so one snapshot.
//!
//! A position is the `seq` as decimal text; `start` (or empty) is 0.

use async_trait::async_trait;
use cloakroom_core::session::{EndReason, Event, EventKind, SessionKey, Timestamp};
use cloakroom_core::store::{
    Admitted, Batch, Error, ErrorKind, EventLog, Limit, LoggedEvent, Position, Record, Result,
    kind_label, parse_kind, previous_handle,
};
use rusqlite::{Connection, params};

use crate::SqliteStore;
use crate::error::SqlContext;
use crate::rows::{encode_data, key_param};
use crate::store::{insert, insert_limited};

/// Whether a row about to be purged is a session (not a rotation grace's forward, not a
/// limit tombstone: `Record::is_forward`, `Record::is_ended`, whose marker fields are
/// `__cr.fwd` and `__cr.ended`). A row whose data is not JSON counts as a session. `CASE`
/// evaluates lazily, so `json_type` never sees invalid JSON.
const IS_SESSION: &str = r#"CASE WHEN user IS NOT NULL THEN 1
     WHEN NOT json_valid(data) THEN 1
     ELSE json_type(data, '$."__cr.fwd"') IS NULL AND json_type(data, '$."__cr.ended"') IS NULL
     END"#;

/// Runs `work` as one unit inside the writer's batch transaction: under a savepoint that is
/// released when it succeeds and `keep`s its answer, and rolled back otherwise (an error, or
/// an answer that means nothing happened, e.g. a create that collided after the limit's
/// tombstones). One logged change is its statements and its events, or nothing.
pub(crate) fn atomic<T>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> Result<T>,
    keep: impl FnOnce(&T) -> bool,
) -> Result<T> {
    conn.execute_batch("SAVEPOINT logged")
        .ctx("starting a logged change")?;
    let result = work(conn);
    let end = match &result {
        Ok(value) if keep(value) => "RELEASE logged",
        _ => "ROLLBACK TO logged; RELEASE logged",
    };
    if conn.is_autocommit() {
        // SQLite rolled the whole transaction back: nothing to release, the writer sees it.
        return result;
    }
    conn.execute_batch(end).ctx("ending a logged change")?;
    result
}

/// Inserts one event row.
fn log(
    conn: &Connection,
    at: Timestamp,
    kind: &EventKind,
    session: &SessionKey,
    user: Option<&str>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO events (at, kind, session, previous, user) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            at.as_millis(),
            kind_label(kind),
            key_param(session),
            previous_handle(kind),
            user,
        ])
    })
    .ctx("logging an event")?;
    Ok(())
}

/// The `seq` a position names.
fn parse_position(position: &Position) -> Result<i64> {
    if position.is_start() {
        return Ok(0);
    }
    position
        .as_str()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "not a position of a sqlite event log (a sequence number)",
            )
        })
}

/// Inside a purge step (the writer's transaction, before its `DELETE`): logs each session
/// about to be deleted from rowids `(after, end]` as expired.
pub(crate) fn log_purged(conn: &Connection, after: i64, end: i64, now: Timestamp) -> Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO events (at, kind, session, previous, user)
         SELECT ?3, 'expired', key, NULL, user FROM sessions
         WHERE rowid > ?1 AND rowid <= ?2 AND expires_at <= ?3 AND ({IS_SESSION})
         ORDER BY rowid"
    ))
    .and_then(|mut stmt| stmt.execute(params![after, end, now.as_millis()]))
    .ctx("logging expired sessions")?;
    Ok(())
}

/// Keeps the newest `events_state.keep` events: deletes the older ones and raises the
/// `trimmed` mark to the highest `seq` deleted, in one job (one transaction). Returns how
/// many were deleted.
pub(crate) fn trim(conn: &Connection) -> Result<u64> {
    let cut: Option<i64> = conn
        .prepare_cached(
            "SELECT seq FROM events ORDER BY seq DESC LIMIT 1
             OFFSET (SELECT keep FROM events_state WHERE id = 1)",
        )
        .and_then(|mut stmt| {
            use rusqlite::OptionalExtension;
            stmt.query_row([], |row| row.get(0)).optional()
        })
        .ctx("trimming the event log")?;
    let Some(cut) = cut else { return Ok(0) };
    atomic(
        conn,
        |conn| {
            let n = conn
                .prepare_cached("DELETE FROM events WHERE seq <= ?1")
                .and_then(|mut stmt| stmt.execute([cut]))
                .ctx("trimming the event log")?;
            conn.prepare_cached("UPDATE events_state SET trimmed = max(trimmed, ?1) WHERE id = 1")
                .and_then(|mut stmt| stmt.execute([cut]))
                .ctx("trimming the event log")?;
            Ok(n as u64)
        },
        |_| true,
    )
}

/// The columns of one read: the trim mark, then an event (all `NULL` when there is none
/// after the position: the mark's row is always there).
struct ReadRow {
    trimmed: i64,
    event: Option<(i64, i64, String, Vec<u8>, Option<String>, Option<String>)>,
}

fn decode(
    seq: i64,
    at: i64,
    kind: &str,
    session: Vec<u8>,
    previous: Option<&str>,
    user: Option<String>,
) -> Result<LoggedEvent> {
    let corrupt = || {
        Error::new(
            ErrorKind::Corrupt,
            format!("event {seq} of the sqlite event log could not be decoded"),
        )
    };
    let session = <[u8; SessionKey::LEN]>::try_from(session).map_err(|_| corrupt())?;
    let kind = parse_kind(kind, previous).ok_or_else(corrupt)?;
    Ok(LoggedEvent {
        position: Position::new(seq.to_string()),
        event: Event {
            kind,
            session: SessionKey::from_bytes(session),
            user,
            at: Timestamp::from_millis(at),
        },
    })
}

#[async_trait]
impl EventLog for SqliteStore {
    async fn create_logged(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: Option<&Limit>,
        event: &Event,
    ) -> Result<Admitted> {
        self.log_on()?;
        let (key, limit, event) = (*key, limit.copied(), event.clone());
        let data = encode_data(&record.data);
        let meta = record.meta.clone();
        self.write(move |conn| {
            atomic(
                conn,
                |conn| {
                    let admitted = match &limit {
                        Some(limit) => insert_limited(conn, &key, &data, &meta, limit)?,
                        None => Admitted::from(insert(conn, &key, &data, &meta)?),
                    };
                    if let Admitted::Done { ended } = &admitted {
                        let user = meta.user.as_deref();
                        let limited = EventKind::Ended(EndReason::Limit);
                        for gone in ended {
                            log(conn, event.at, &limited, gone, user)?;
                        }
                        log(conn, event.at, &event.kind, &key, user)?;
                    }
                    Ok(admitted)
                },
                // A collision after the limit's tombstones (another process's create of this
                // very key): undo them too, they would be unlogged ends.
                |admitted| matches!(admitted, Admitted::Done { .. }),
            )
        })
        .await
    }

    async fn delete_logged(&self, key: &SessionKey, event: &Event) -> Result<bool> {
        self.log_on()?;
        let (key, event) = (*key, event.clone());
        self.write(move |conn| {
            atomic(
                conn,
                |conn| {
                    let now = Timestamp::now();
                    // The user comes from the deleted row itself (same statement).
                    let row: Option<(i64, Option<String>)> = conn
                        .prepare_cached(
                            "DELETE FROM sessions WHERE key = ?1 RETURNING expires_at, user",
                        )
                        .and_then(|mut stmt| {
                            use rusqlite::OptionalExtension;
                            stmt.query_row(params![key_param(&key)], |row| {
                                Ok((row.get(0)?, row.get(1)?))
                            })
                            .optional()
                        })
                        .ctx("deleting a session")?;
                    match row {
                        Some((expires_at, user)) if expires_at > now.as_millis() => {
                            log(conn, event.at, &event.kind, &key, user.as_deref())?;
                            Ok(true)
                        }
                        // An expired row is garbage: deleted, but no session ended here.
                        _ => Ok(false),
                    }
                },
                |_| true,
            )
        })
        .await
    }

    async fn delete_user_logged(
        &self,
        user: &str,
        except: Option<&SessionKey>,
        reason: EndReason,
        at: Timestamp,
    ) -> Result<u64> {
        self.log_on()?;
        let user = user.to_owned();
        let except = except.map(|k| k.as_bytes().to_vec());
        self.write(move |conn| {
            atomic(
                conn,
                |conn| {
                    let now = Timestamp::now();
                    let keys = conn
                        .prepare_cached(
                            "DELETE FROM sessions
                             WHERE user = ?1 AND expires_at > ?2 AND key IS NOT ?3
                             RETURNING key",
                        )
                        .and_then(|mut stmt| {
                            stmt.query_map(params![user, now.as_millis(), except], |row| {
                                row.get::<_, Vec<u8>>(0)
                            })?
                            .collect::<rusqlite::Result<Vec<_>>>()
                        })
                        .ctx("deleting a user's sessions")?;
                    let kind = EventKind::Ended(reason);
                    for key in &keys {
                        let key =
                            <[u8; SessionKey::LEN]>::try_from(key.as_slice()).map_err(|_| {
                                Error::new(ErrorKind::Corrupt, "a session row has a malformed key")
                            })?;
                        log(conn, at, &kind, &SessionKey::from_bytes(key), Some(&user))?;
                    }
                    Ok(keys.len() as u64)
                },
                |_| true,
            )
        })
        .await
    }

    async fn read(&self, after: &Position, max: usize) -> Result<Batch> {
        self.log_on()?;
        let from = parse_position(after)?;
        let max = max.clamp(1, 10_000) as i64;
        let rows = self
            .read_conn(move |conn| {
                // One statement: the events and the trim mark from one snapshot.
                conn.prepare_cached(
                    "SELECT s.trimmed, e.seq, e.at, e.kind, e.session, e.previous, e.user
                     FROM events_state AS s LEFT JOIN
                         (SELECT * FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2) AS e
                     WHERE s.id = 1
                     ORDER BY e.seq",
                )
                .and_then(|mut stmt| {
                    stmt.query_map(params![from, max], |row| {
                        let seq: Option<i64> = row.get(1)?;
                        Ok(ReadRow {
                            trimmed: row.get(0)?,
                            event: match seq {
                                None => None,
                                Some(seq) => Some((
                                    seq,
                                    row.get(2)?,
                                    row.get(3)?,
                                    row.get(4)?,
                                    row.get(5)?,
                                    row.get(6)?,
                                )),
                            },
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()
                })
                .ctx("reading the event log")
            })
            .await?;
        let trimmed = rows.first().map_or(0, |r| r.trimmed);
        let events = rows
            .into_iter()
            .filter_map(|r| r.event)
            .map(|(seq, at, kind, session, previous, user)| {
                decode(seq, at, &kind, session, previous.as_deref(), user)
            })
            .collect::<Result<Vec<_>>>()?;
        let next = events
            .last()
            .map_or_else(|| after.clone(), |e| e.position.clone());
        Ok(Batch {
            events,
            next,
            gap: from < trimmed,
        })
    }
}
