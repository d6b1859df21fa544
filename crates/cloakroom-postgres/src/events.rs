//! The durable event log ([`EventLog`]): `<table>_events`, written in the same statement
//! (or, under the limit, the same transaction) as the change it describes.
//!
//! - **Atomic.** Each logged change is one statement whose data-modifying CTEs make the
//!   change and insert its events (`DELETE ... RETURNING` feeds the `INSERT`), so both
//!   commit or neither does; a change that did not happen (a collision, a delete of
//!   nothing) inserts no event. Under the limit, the logged insert (with its tombstones and
//!   events) is the one statement of the admission's transaction after the count.
//! - **Ordered: positions follow commit order.** A `bigserial` hands out numbers at insert
//!   time, and transactions commit in another order: a reader could see 8, pass it, and miss
//!   7 committing a moment later. Here the numbers come from a one-row counter,
//!   `UPDATE <table>_events_state SET n = n + k RETURNING n`, in the change's statement: its
//!   row lock is held until the commit, so the next logged change waits for it and then
//!   numbers after it (READ COMMITTED re-reads the updated row). Any snapshot that shows an
//!   event shows every lower one. The counter is the last lock each logged statement takes
//!   (its `WHERE EXISTS` needs the change's rows first), so it adds no deadlock; it
//!   serializes logged changes for the time of their commit only, and a change that changes
//!   nothing never takes it. (A data-modifying CTE that nothing reads runs at the end of
//!   the statement, after the others: every CTE that takes row locks is read in full
//!   before the counter's `UPDATE`.) Unlogged writes (data, touches) never touch it.
//! - **Bounded.** The purge keeps the newest `keep` events and raises `trimmed` to the
//!   highest `seq` it deleted, in one statement; a read from below it reports a gap. A read
//!   takes the events and the mark in one statement (one snapshot).
//!
//! A position is the `seq` as decimal text; `start` (or empty) is 0.

use async_trait::async_trait;
use cloakroom_core::session::{EndReason, Event, EventKind, SessionKey, Timestamp};
use cloakroom_core::store::{
    Admitted, Batch, Error, ErrorKind, EventLog, Limit, LoggedEvent, Position, Record, Result,
    kind_label, parse_kind, previous_handle,
};

use tokio::time::Instant;

use crate::PostgresStore;
use crate::rows::encode_data;

/// The statements of the event log (names spliced in).
pub(crate) struct LogSql {
    /// `create` and its event: $1..$9 as `create`, $10 at, $11 kind, $12 previous.
    create: String,
    /// The limit's insert, its tombstones and every event: $1..$9 as `create`, $10 at,
    /// $11 kind, $12 previous, $13 the tombstone's data, $14 the ended keys.
    pub(crate) create_limited: String,
    /// $1 key, $2 now, $3 at, $4 kind, $5 previous.
    delete: String,
    /// $1 user, $2 now, $3 except, $4 at, $5 kind.
    delete_user: String,
    /// $1 now, $2 batch size: one purge batch and its expiry events; the rows deleted.
    purge: String,
    /// Keeps the newest `keep` events, raising the trim mark.
    trim: String,
    /// $1 after, $2 max.
    read: String,
}

impl LogSql {
    /// `t`: the sessions table; `e`, `st`: the event log and its state row.
    pub(crate) fn new(t: &str, e: &str, st: &str) -> Self {
        let insert = format!(
            r#"INSERT INTO {t} AS s (key, "user", created_at, last_seen, expires_at, user_agent, remember, data)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
               ON CONFLICT (key) DO UPDATE SET
                   "user" = excluded."user", created_at = excluded.created_at,
                   last_seen = excluded.last_seen, expires_at = excluded.expires_at,
                   user_agent = excluded.user_agent, remember = excluded.remember,
                   data = excluded.data
               WHERE s.expires_at <= $9
               RETURNING key"#
        );
        let columns = r#"(seq, at, kind, session, previous, "user")"#;
        LogSql {
            create: format!(
                "WITH made AS ({insert}),
                      seq AS (UPDATE {st} SET n = n + 1
                              WHERE id AND EXISTS (SELECT 1 FROM made) RETURNING n)
                 INSERT INTO {e} {columns}
                 SELECT seq.n, $10::bigint, $11::text, $1::bytea, $12::text, $2::text FROM seq"
            ),
            // `counted` reads all of `ended`, so the tombstones are written (their row locks
            // taken) before the counter's: the counter stays the last lock taken. A session
            // the limit meant to end that a concurrent logout deleted first is not
            // tombstoned, and not logged twice.
            create_limited: format!(
                r#"WITH made AS ({insert}),
                      ended AS (UPDATE {t} SET "user" = NULL, user_agent = NULL, remember = false,
                                    created_at = $9, last_seen = $9, data = $13::jsonb
                                WHERE key = ANY($14::bytea[]) AND EXISTS (SELECT 1 FROM made)
                                RETURNING key),
                      numbered AS (SELECT key, row_number() OVER
                                       (ORDER BY array_position($14::bytea[], key)) AS i
                                   FROM ended),
                      counted AS (SELECT count(*) AS k FROM numbered),
                      seq AS (UPDATE {st} SET n = n + 1 + counted.k FROM counted
                              WHERE id AND EXISTS (SELECT 1 FROM made) RETURNING n, counted.k)
                 INSERT INTO {e} {columns}
                 SELECT seq.n - seq.k + numbered.i - 1, $10::bigint, 'limit'::text,
                        numbered.key, NULL::text, $2::text
                     FROM seq, numbered
                 UNION ALL
                 SELECT seq.n, $10::bigint, $11::text, $1::bytea, $12::text, $2::text FROM seq"#
            ),
            delete: format!(
                r#"WITH gone AS (DELETE FROM {t} WHERE key = $1 RETURNING key, "user", expires_at),
                      live AS (SELECT key, "user" FROM gone WHERE expires_at > $2),
                      seq AS (UPDATE {st} SET n = n + 1
                              WHERE id AND EXISTS (SELECT 1 FROM live) RETURNING n)
                 INSERT INTO {e} {columns}
                 SELECT seq.n, $3::bigint, $4::text, live.key, $5::text, live."user" FROM seq, live"#
            ),
            delete_user: format!(
                r#"WITH gone AS (DELETE FROM {t} WHERE "user" = $1 AND expires_at > $2
                                   AND key IS DISTINCT FROM $3::bytea RETURNING key),
                      counted AS (SELECT count(*) AS k FROM gone),
                      seq AS (UPDATE {st} SET n = n + counted.k FROM counted
                              WHERE id AND counted.k > 0 RETURNING n, counted.k),
                      logged AS (INSERT INTO {e} {columns}
                                 SELECT seq.n - seq.k + row_number() OVER (ORDER BY gone.key),
                                        $4::bigint, $5::text, gone.key, NULL, $1::text
                                 FROM seq, gone RETURNING 1)
                 SELECT count(*) FROM logged"#
            ),
            purge: format!(
                r#"WITH gone AS (DELETE FROM {t} WHERE key IN
                                   (SELECT key FROM {t} WHERE expires_at <= $1 LIMIT $2)
                                 AND expires_at <= $1
                                 RETURNING key, "user",
                                     ("user" IS NOT NULL
                                      OR NOT (data ? '__cr.fwd' OR data ? '__cr.ended')) AS session),
                      ended AS (SELECT key, "user", row_number() OVER (ORDER BY key) AS i
                                FROM gone WHERE session),
                      counted AS (SELECT count(*) AS k FROM ended),
                      seq AS (UPDATE {st} SET n = n + counted.k FROM counted
                              WHERE id AND counted.k > 0 RETURNING n, counted.k),
                      logged AS (INSERT INTO {e} {columns}
                                 SELECT seq.n - seq.k + ended.i, $1, 'expired', ended.key, NULL,
                                        ended."user"
                                 FROM seq, ended)
                 SELECT count(*) FROM gone"#
            ),
            trim: format!(
                "WITH cut AS (SELECT seq FROM {e} ORDER BY seq DESC LIMIT 1
                              OFFSET (SELECT keep FROM {st} WHERE id)),
                      dropped AS (DELETE FROM {e} WHERE seq <= (SELECT seq FROM cut))
                 UPDATE {st} SET trimmed = greatest(trimmed, cut.seq) FROM cut WHERE id"
            ),
            read: format!(
                r#"SELECT s.trimmed, e.seq, e.at, e.kind, e.session, e.previous, e."user"
                   FROM {st} AS s LEFT JOIN LATERAL
                       (SELECT * FROM {e} WHERE seq > $1 ORDER BY seq LIMIT $2) AS e ON true
                   WHERE s.id
                   ORDER BY e.seq"#
            ),
        }
    }
}

/// The `seq` a position names.
fn parse_position(position: &Position) -> Result<i64> {
    if position.is_start() {
        return Ok(0);
    }
    (position.as_str().parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                "not a position of a postgres event log (a sequence number)",
            )
        })
}

fn corrupt(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::Corrupt, "an event row could not be decoded").with_source(e)
}

/// One event row of a read.
fn decode(row: &tokio_postgres::Row) -> Result<LoggedEvent> {
    let seq: i64 = row.try_get(1).map_err(corrupt)?;
    let at: i64 = row.try_get(2).map_err(corrupt)?;
    let kind: &str = row.try_get(3).map_err(corrupt)?;
    let session: &[u8] = row.try_get(4).map_err(corrupt)?;
    let previous: Option<&str> = row.try_get(5).map_err(corrupt)?;
    let user: Option<String> = row.try_get(6).map_err(corrupt)?;
    let bad = || {
        Error::new(
            ErrorKind::Corrupt,
            format!("event {seq} of the postgres event log could not be decoded"),
        )
    };
    let session = <[u8; SessionKey::LEN]>::try_from(session).map_err(|_| bad())?;
    Ok(LoggedEvent {
        position: Position::new(seq.to_string()),
        event: Event {
            kind: parse_kind(kind, previous).ok_or_else(bad)?,
            session: SessionKey::from_bytes(session),
            user,
            at: Timestamp::from_millis(at),
        },
    })
}

impl PostgresStore {
    /// Fails unless the store keeps an event log.
    fn log_on(&self) -> Result<()> {
        match self.inner.events.get() {
            Some(_) => Ok(()),
            None => Err(Error::new(
                ErrorKind::Config,
                "this postgres store keeps no event log (PostgresStoreBuilder::event_log, ?events=N)",
            )),
        }
    }

    /// One purge batch with its expiry events (one statement): the rows it deleted.
    pub(crate) async fn purge_logged(&self, now: i64, batch: i64) -> Result<u64> {
        let row = statement!(self, "purging expired sessions", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.log.purge).await?;
            c.query_one(&stmt, &[&now, &batch]).await
        })?;
        let n: i64 = row.try_get(0).map_err(corrupt)?;
        Ok(n as u64)
    }

    /// Keeps the newest events only (one statement, which also raises the trim mark).
    pub(crate) async fn trim_log(&self) -> Result<()> {
        statement!(self, "trimming the event log", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.log.trim).await?;
            c.execute(&stmt, &[]).await
        })?;
        Ok(())
    }
}

impl PostgresStore {
    /// Inserts `record` under `key` unless a live one is there (`false` then), and with
    /// `event`, its event in the same statement (the log's form of the insert).
    pub(crate) async fn insert(
        &self,
        key: &SessionKey,
        record: &Record,
        event: Option<&Event>,
    ) -> Result<bool> {
        use tokio_postgres::types::ToSql;

        let data = encode_data(&record.data);
        let m = &record.meta;
        let now = Timestamp::now().as_millis();
        let (created, seen, expires) = (
            m.created_at.as_millis(),
            m.last_seen.as_millis(),
            m.expires_at.as_millis(),
        );
        let key = key.as_bytes().as_slice();
        let logged = event.map(|e| {
            (
                e.at.as_millis(),
                kind_label(&e.kind),
                previous_handle(&e.kind),
            )
        });
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &key,
            &m.user,
            &created,
            &seen,
            &expires,
            &m.user_agent,
            &m.remember,
            &data,
            &now,
        ];
        if let Some((at, kind, previous)) = &logged {
            params.extend([at as &(dyn ToSql + Sync), kind, previous]);
        }
        let sql = match event {
            Some(_) => &self.inner.sql.log.create,
            None => &self.inner.sql.create,
        };
        let n = statement!(self, "creating a session", |c| {
            let stmt = c.prepare_cached(sql).await?;
            c.execute(&stmt, &params).await
        })?;
        Ok(n == 1)
    }
}

#[async_trait]
impl EventLog for PostgresStore {
    async fn create_logged(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: Option<&Limit>,
        event: &Event,
    ) -> Result<Admitted> {
        self.log_on()?;
        if let (Some(limit), Some(_)) = (limit, &record.meta.user) {
            return self.admit(key, record, limit, Some(event)).await;
        }
        Ok(match self.insert(key, record, Some(event)).await? {
            true => Admitted::Done { ended: Vec::new() },
            false => Admitted::Collision,
        })
    }

    async fn delete_logged(&self, key: &SessionKey, event: &Event) -> Result<bool> {
        self.log_on()?;
        let now = Timestamp::now().as_millis();
        let (at, kind, previous) = (
            event.at.as_millis(),
            kind_label(&event.kind),
            previous_handle(&event.kind),
        );
        let n = statement!(self, "deleting a session", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.log.delete).await?;
            c.execute(
                &stmt,
                &[&key.as_bytes().as_slice(), &now, &at, &kind, &previous],
            )
            .await
        })?;
        Ok(n == 1)
    }

    async fn delete_user_logged(
        &self,
        user: &str,
        except: Option<&SessionKey>,
        reason: EndReason,
        at: Timestamp,
    ) -> Result<u64> {
        self.log_on()?;
        let now = Timestamp::now().as_millis();
        let except = except.map(|k| k.as_bytes().as_slice());
        let kind = kind_label(&EventKind::Ended(reason));
        let row = statement!(self, "deleting a user's sessions", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.log.delete_user).await?;
            c.query_one(&stmt, &[&user, &now, &except, &at.as_millis(), &kind])
                .await
        })?;
        let n: i64 = row.try_get(0).map_err(corrupt)?;
        Ok(n as u64)
    }

    async fn read(&self, after: &Position, max: usize) -> Result<Batch> {
        self.log_on()?;
        let from = parse_position(after)?;
        let max = max.clamp(1, 10_000) as i64;
        let rows = statement!(self, "reading the event log", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.log.read).await?;
            c.query(&stmt, &[&from, &max]).await
        })?;
        let trimmed: i64 = match rows.first() {
            Some(row) => row.try_get(0).map_err(corrupt)?,
            None => 0,
        };
        let events = (rows.iter())
            .filter(|row| matches!(row.try_get::<_, Option<i64>>(1), Ok(Some(_))))
            .map(decode)
            .collect::<Result<Vec<_>>>()?;
        let next = (events.last()).map_or_else(|| after.clone(), |e| e.position.clone());
        Ok(Batch {
            events,
            next,
            gap: from < trimmed,
        })
    }
}
