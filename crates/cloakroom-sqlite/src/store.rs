//! The [`SessionStore`] operations of a [`SqliteStore`]: reads on the reading pool, each
//! write one job of the writer thread (one statement, or a limited create's admission under
//! a savepoint), and the purge in rowid steps.

use async_trait::async_trait;
use cloakroom_core::session::{SessionKey, Timestamp};
use cloakroom_core::store::{
    Admitted, Applied, Created, Cursor, Error, ErrorKind, Limit, Meta, Page, Patch, Record, Result,
    SessionInfo, SessionStore, admission,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::SqlContext;
use crate::rows::{
    COLUMNS, RawRow, columns, encode_data, key_param, merge_patch, parse_cursor, raw_row,
};
use crate::{PURGE_BATCH, PURGE_PAUSE_MAX, SqliteStore, events};

/// Inserts a record, or replaces a row only if it has expired: one statement, so two creates
/// of one key cannot both win.
pub(crate) fn insert(
    conn: &Connection,
    key: &SessionKey,
    data: &str,
    meta: &Meta,
) -> Result<Created> {
    let now = Timestamp::now();
    let changed = conn
                .prepare_cached(
                    "INSERT INTO sessions (key, user, created_at, last_seen, expires_at, user_agent, remember, data)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (key) DO UPDATE SET
                         user = excluded.user, created_at = excluded.created_at,
                         last_seen = excluded.last_seen, expires_at = excluded.expires_at,
                         user_agent = excluded.user_agent, remember = excluded.remember,
                         data = excluded.data
                     WHERE sessions.expires_at <= ?9",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        key_param(key),
                        meta.user,
                        meta.created_at.as_millis(),
                        meta.last_seen.as_millis(),
                        meta.expires_at.as_millis(),
                        meta.user_agent,
                        meta.remember,
                        data,
                        now.as_millis(),
                    ])
                })
                .ctx("creating a session")?;
    Ok(Created::from(changed == 1))
}

/// `create_limited` inside the writer's transaction (every write of the file goes through
/// it, and `BEGIN IMMEDIATE` holds the file's write lock, so no other write, of this process
/// or another, comes between the count and the insert), under a savepoint so a failure
/// leaves nothing half done.
pub(crate) fn insert_limited(
    conn: &Connection,
    key: &SessionKey,
    data: &str,
    meta: &Meta,
    limit: &Limit,
) -> Result<Admitted> {
    conn.execute_batch("SAVEPOINT limited")
        .ctx("starting a limited create")?;
    let result = admit(conn, key, data, meta, limit);
    let end = match result {
        Ok(_) => "RELEASE limited",
        Err(_) => "ROLLBACK TO limited; RELEASE limited",
    };
    conn.execute_batch(end).ctx("ending a limited create")?;
    result
}

fn admit(
    conn: &Connection,
    key: &SessionKey,
    data: &str,
    meta: &Meta,
    limit: &Limit,
) -> Result<Admitted> {
    let now = Timestamp::now();
    let live = conn
        .prepare_cached("SELECT 1 FROM sessions WHERE key = ?1 AND expires_at > ?2")
        .and_then(|mut stmt| stmt.exists(params![key_param(key), now.as_millis()]))
        .ctx("checking a key")?;
    if live {
        return Ok(Admitted::Collision);
    }
    let rows = conn
        .prepare_cached(
            "SELECT key, last_seen, created_at FROM sessions WHERE user = ?1 AND expires_at > ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![meta.user, now.as_millis()], |row| {
                Ok((
                    row.get::<_, Vec<u8>>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .ctx("counting a user's sessions")?;
    let sessions = rows
        .into_iter()
        .filter_map(|(k, seen, created)| {
            let k = SessionKey::from_bytes(k.try_into().ok()?);
            Some((
                k,
                Timestamp::from_millis(seen),
                Timestamp::from_millis(created),
            ))
        })
        .collect();
    let Some(ended) = admission(limit, sessions) else {
        return Ok(Admitted::Refused);
    };
    let tombstone = encode_data(&Record::ended_by_limit(now, now).data);
    for k in &ended {
        // The tombstone keeps the ended session's expiry.
        conn.prepare_cached(
            "UPDATE sessions SET user = NULL, user_agent = NULL, remember = 0,
                 created_at = ?2, last_seen = ?2, data = ?3
             WHERE key = ?1",
        )
        .and_then(|mut stmt| stmt.execute(params![key_param(k), now.as_millis(), tombstone]))
        .ctx("ending a session for the limit")?;
    }
    Ok(match insert(conn, key, data, meta)? {
        Created::Done => Admitted::Done { ended },
        Created::Collision => Admitted::Collision,
    })
}

// ---------------------------------------------------------------------------------------
// The store

/// A live session by its key (`?1`) at a time (`?2`).
const LOAD: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM sessions WHERE key = ?1 AND expires_at > ?2"
);

#[async_trait]
impl SessionStore for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn event_log(&self) -> Option<&dyn cloakroom_core::store::EventLog> {
        self.inner
            .events
            .map(|_| self as &dyn cloakroom_core::store::EventLog)
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let key = *key;
        let fetch = move |conn: &Connection| {
            let now = Timestamp::now();
            let mut stmt = conn.prepare_cached(LOAD)?;
            (stmt.query_row(params![key_param(&key), now.as_millis()], raw_row)).optional()
        };
        let here = self
            .inner
            .reads
            .as_ref()
            .and_then(|pool| pool.run_here(fetch));
        let row = match here {
            Some(row) => row.ctx("loading a session")?,
            None => {
                let load = move |conn: &Connection| fetch(conn).ctx("loading a session");
                self.read_conn(load).await?
            }
        };
        row.map(RawRow::record).transpose()
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created> {
        let key = *key;
        let data = encode_data(&record.data);
        let meta = record.meta.clone();
        self.write(move |conn| insert(conn, &key, &data, &meta))
            .await
    }

    async fn create_limited(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: &Limit,
    ) -> Result<Admitted> {
        let (key, limit) = (*key, *limit);
        let data = encode_data(&record.data);
        let meta = record.meta.clone();
        self.write(move |conn| insert_limited(conn, &key, &data, &meta, &limit))
            .await
    }

    async fn apply(&self, key: &SessionKey, patch: &Patch) -> Result<Applied> {
        let key = *key;
        let merge = merge_patch(patch);
        let (last_seen, expires_at, remember) = (patch.last_seen, patch.expires_at, patch.remember);
        let millis = |d: Option<std::time::Duration>| {
            d.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        };
        let (lifetime, idle) = (millis(patch.max_lifetime), millis(patch.max_idle));
        self.write(move |conn| {
            let now = Timestamp::now();
            // A blind write's bounds refuse a record a load would refuse (see `Patch`).
            let changed = conn
                .prepare_cached(
                    "UPDATE sessions SET
                         data = CASE WHEN ?1 IS NULL THEN data ELSE json_patch(data, ?1) END,
                         last_seen = ?2,
                         expires_at = CASE WHEN ?7 IS NULL THEN ?3 ELSE min(?3, created_at + ?7) END,
                         remember = coalesce(?4, remember)
                     WHERE key = ?5 AND expires_at > ?6
                       AND (?7 IS NULL OR created_at + ?7 > ?2)
                       AND (?8 IS NULL OR last_seen + ?8 > ?2)",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        merge,
                        last_seen.as_millis(),
                        expires_at.as_millis(),
                        remember,
                        key_param(&key),
                        now.as_millis(),
                        lifetime,
                        idle,
                    ])
                })
                .ctx("patching a session")?;
            Ok(Applied::from(changed == 1))
        })
        .await
    }

    async fn touch(
        &self,
        key: &SessionKey,
        last_seen: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Applied> {
        let key = *key;
        self.write(move |conn| {
            let now = Timestamp::now();
            let changed = conn
                .prepare_cached(
                    "UPDATE sessions SET last_seen = ?1, expires_at = ?2
                     WHERE key = ?3 AND expires_at > ?4",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        last_seen.as_millis(),
                        expires_at.as_millis(),
                        key_param(&key),
                        now.as_millis(),
                    ])
                })
                .ctx("touching a session")?;
            Ok(Applied::from(changed == 1))
        })
        .await
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let key = *key;
        self.write(move |conn| {
            let now = Timestamp::now();
            // Deletes an expired row too (it is garbage), but reports only a live one.
            let expires_at: Option<i64> = conn
                .prepare_cached("DELETE FROM sessions WHERE key = ?1 RETURNING expires_at")
                .and_then(|mut stmt| {
                    stmt.query_row(params![key_param(&key)], |row| row.get(0))
                        .optional()
                })
                .ctx("deleting a session")?;
            Ok(expires_at.is_some_and(|t| t > now.as_millis()))
        })
        .await
    }

    async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>> {
        let user = user.to_owned();
        self.read_conn(move |conn| {
            let now = Timestamp::now();
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM sessions
                     WHERE user = ?1 AND expires_at > ?2
                     ORDER BY last_seen DESC"
                ))
                .and_then(|mut stmt| {
                    stmt.query_map(params![user, now.as_millis()], raw_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .ctx("listing a user's sessions")?;
            rows.into_iter().map(RawRow::info).collect()
        })
        .await
    }

    async fn delete_user(&self, user: &str, except: Option<&SessionKey>) -> Result<u64> {
        let user = user.to_owned();
        let except = except.map(|k| k.as_bytes().to_vec());
        self.write(move |conn| {
            let now = Timestamp::now();
            // `key IS NOT NULL` (no exception) is true for every row.
            let n = conn
                .prepare_cached(
                    "DELETE FROM sessions WHERE user = ?1 AND expires_at > ?2 AND key IS NOT ?3",
                )
                .and_then(|mut stmt| stmt.execute(params![user, now.as_millis(), except]))
                .ctx("deleting a user's sessions")?;
            Ok(n as u64)
        })
        .await
    }

    async fn scan(&self, cursor: Cursor, limit: usize) -> Result<Page> {
        let after = parse_cursor(&cursor)?;
        let limit = limit.clamp(1, 10_000);
        self.read_conn(move |conn| {
            let now = Timestamp::now();
            // Keyset pagination on the primary key: stable under concurrent writes, and
            // each page is one index range scan.
            let rows = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM sessions
                     WHERE key > ?1 AND expires_at > ?2
                     ORDER BY key LIMIT ?3"
                ))
                .and_then(|mut stmt| {
                    stmt.query_map(params![after, now.as_millis(), limit as i64], raw_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })
                .ctx("scanning sessions")?;
            let next = (rows.len() == limit)
                .then(|| {
                    rows.last()
                        .map(|r| Cursor::new(SessionKey::from_bytes(r.key).to_handle()))
                })
                .flatten();
            let mut sessions = Vec::with_capacity(rows.len());
            for row in rows {
                let key = SessionKey::from_bytes(row.key);
                let record = row.record()?;
                // A rotation grace's forwarding record is no session.
                if !record.is_forward() && !record.is_ended() {
                    sessions.push(record.info(key));
                }
            }
            Ok(Page { sessions, next })
        })
        .await
    }

    async fn purge_expired(&self) -> Result<u64> {
        // No index on the expiry (schema v2): the table is walked in rowid order, PURGE_BATCH
        // rows per step, each step one job of the writer followed by a checkpoint aside and a
        // pause as long as the step, so requests' writes go in between and neither the step
        // nor the checkpoint it causes holds the writer for long.
        self.write(|conn| {
            conn.prepare_cached("DELETE FROM challenges WHERE expires_at <= ?1")
                .and_then(|mut stmt| stmt.execute(params![Timestamp::now().as_millis()]))
                .ctx("purging expired challenges")
        })
        .await?;
        let mut total = 0;
        let mut after = 0_i64;
        let logged = self.inner.events.is_some();
        loop {
            let started = std::time::Instant::now();
            let (n, next) = self
                .write(move |conn| {
                    let now = Timestamp::now();
                    // The last rowid of this step, or none when the rest of the table is
                    // shorter than a step.
                    let end: Option<i64> = conn
                        .prepare_cached(
                            "SELECT rowid FROM sessions WHERE rowid > ?1
                             ORDER BY rowid LIMIT 1 OFFSET ?2",
                        )
                        .and_then(|mut stmt| {
                            stmt.query_row(params![after, PURGE_BATCH as i64 - 1], |row| row.get(0))
                                .optional()
                        })
                        .ctx("purging expired sessions")?;
                    let delete = |conn: &Connection| {
                        conn.prepare_cached(
                            "DELETE FROM sessions
                             WHERE rowid > ?1 AND rowid <= ?2 AND expires_at <= ?3",
                        )
                        .and_then(|mut stmt| {
                            stmt.execute(params![after, end.unwrap_or(i64::MAX), now.as_millis()])
                        })
                        .ctx("purging expired sessions")
                    };
                    let n = match logged {
                        false => delete(conn)?,
                        // The expiry events and the delete: one unit of this transaction.
                        true => events::atomic(
                            conn,
                            |conn| {
                                events::log_purged(conn, after, end.unwrap_or(i64::MAX), now)?;
                                delete(conn)
                            },
                            |_| true,
                        )?,
                    };
                    Ok((n, end))
                })
                .await?;
            total += n as u64;
            match next {
                Some(end) => after = end,
                None => break,
            }
            let pause = started.elapsed().min(PURGE_PAUSE_MAX);
            let paused = std::time::Instant::now();
            self.checkpoint_aside().await;
            tokio::time::sleep(pause.saturating_sub(paused.elapsed())).await;
        }
        if logged {
            self.write(events::trim).await?;
        }
        Ok(total)
    }

    async fn put_challenge(
        &self,
        challenge: &str,
        session: &SessionKey,
        expires_at: Timestamp,
    ) -> Result<Created> {
        let (challenge, session) = (challenge.to_owned(), *session);
        self.write(move |conn| {
            // Replaces only an expired row: one statement, so two puts cannot both win.
            let n = conn
                .prepare_cached(
                    "INSERT INTO challenges (challenge, session, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (challenge) DO UPDATE SET
                         session = excluded.session, expires_at = excluded.expires_at
                     WHERE challenges.expires_at <= ?4",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        challenge,
                        key_param(&session),
                        expires_at.as_millis(),
                        Timestamp::now().as_millis()
                    ])
                })
                .ctx("keeping a challenge")?;
            Ok(Created::from(n == 1))
        })
        .await
    }

    async fn take_challenge(&self, challenge: &str) -> Result<Option<SessionKey>> {
        let challenge = challenge.to_owned();
        self.write(move |conn| {
            let row: Option<(Vec<u8>, i64)> = conn
                .prepare_cached(
                    "DELETE FROM challenges WHERE challenge = ?1 RETURNING session, expires_at",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![challenge], |row| Ok((row.get(0)?, row.get(1)?)))
                        .optional()
                })
                .ctx("taking a challenge")?;
            let Some((session, expires_at)) = row else {
                return Ok(None);
            };
            let session = <[u8; SessionKey::LEN]>::try_from(session).map_err(|_| {
                Error::new(
                    ErrorKind::Corrupt,
                    "a challenge row holds a malformed session key",
                )
            })?;
            Ok(
                (expires_at > Timestamp::now().as_millis())
                    .then(|| SessionKey::from_bytes(session)),
            )
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.read_conn(|conn| {
            conn.prepare_cached("SELECT 1")
                .and_then(|mut stmt| stmt.query_row([], |row| row.get::<_, i64>(0)))
                .ctx("pinging the session database")?;
            Ok(())
        })
        .await
    }
}
