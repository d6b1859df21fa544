//! The [`SessionStore`] operations of a [`PostgresStore`]: each one statement, except the
//! limited create's admission (one transaction under the user's advisory lock).

use std::time::Duration;

use async_trait::async_trait;
use cloakroom_core::session::{SessionKey, Timestamp};
use cloakroom_core::store::{
    Admitted, Applied, Created, Cursor, Error, ErrorKind, Limit, Page, Patch, Record, Result,
    SessionInfo, SessionStore, kind_label, previous_handle,
};
use tokio::time::Instant;

use crate::rows::{self, encode_data, encode_patch};
use crate::{PURGE_BATCH, PostgresStore};

impl PostgresStore {
    /// `create_limited`, and with `event` its logged form
    /// ([`EventLog::create_logged`](cloakroom_core::store::EventLog::create_logged)): one
    /// transaction holding the user's advisory lock (`pg_advisory_xact_lock`), in two
    /// pipelined round trips: `BEGIN`, the lock, the user's live sessions; then the
    /// tombstones, the insert (with a log: one statement that also logs), `COMMIT`. Any
    /// failure rolls the whole of it back.
    pub(crate) async fn admit(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: &Limit,
        event: Option<&cloakroom_core::session::Event>,
    ) -> Result<Admitted> {
        let Some(user) = record.meta.user.as_deref() else {
            return Ok(Admitted::from(self.create(key, record).await?));
        };
        let data = encode_data(&record.data);
        let m = &record.meta;
        let now = Timestamp::now().as_millis();
        let tombstone = encode_data(
            &Record::ended_by_limit(Timestamp::from_millis(now), Timestamp::from_millis(now)).data,
        );
        let sql = &self.inner.sql;
        let k = key.as_bytes().as_slice();
        statement!(self, "creating a session under the limit", |c| {
            let lock = c.prepare_cached(&sql.limit_lock).await?;
            let live = c.prepare_cached(&sql.limit_live).await?;
            let end = c.prepare_cached(&sql.limit_end).await?;
            let create = c.prepare_cached(&sql.create).await?;
            let logged = match event {
                None => None,
                Some(event) => Some((
                    c.prepare_cached(&sql.log.create_limited).await?,
                    event.at.as_millis(),
                    kind_label(&event.kind),
                    previous_handle(&event.kind),
                )),
            };
            let outcome = async {
                let (lock_params, live_params) = ([&user as _], [&user as _, &now as _, &k as _]);
                let (begin, locked, rows) = tokio::join!(
                    c.batch_execute("BEGIN"),
                    c.execute(&lock, &lock_params),
                    c.query(&live, &live_params),
                );
                begin?;
                locked?;
                let rows = rows?;
                if rows.iter().any(|r| r.get::<_, bool>(3)) {
                    c.batch_execute("ROLLBACK").await?;
                    return Ok(Admitted::Collision);
                }
                let Some(ended) = cloakroom_core::store::admission(limit, live_sessions(&rows))
                else {
                    c.batch_execute("ROLLBACK").await?;
                    return Ok(Admitted::Refused);
                };
                let ended_keys: Vec<&[u8]> =
                    ended.iter().map(|k| k.as_bytes().as_slice()).collect();
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] = [
                    &k,
                    &m.user,
                    &m.created_at.as_millis(),
                    &m.last_seen.as_millis(),
                    &m.expires_at.as_millis(),
                    &m.user_agent,
                    &m.remember,
                    &data,
                    &now,
                ];
                let inserted = match &logged {
                    None => {
                        let end_params = [&ended_keys as _, &now as _, &tombstone as _];
                        let (tombs, inserted, commit) = tokio::join!(
                            c.execute(&end, &end_params),
                            c.execute(&create, &params),
                            c.batch_execute("COMMIT"),
                        );
                        tombs?;
                        let inserted = inserted?;
                        commit?;
                        inserted
                    }
                    // The insert, the tombstones (only if it inserted) and every event: one
                    // statement, so a collision leaves no unlogged end behind.
                    Some((stmt, at, kind, previous)) => {
                        let more: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
                            [at, kind, previous, &tombstone, &ended_keys];
                        let mut logged_params = params.to_vec();
                        logged_params.extend(more);
                        let (logged, commit) = tokio::join!(
                            c.execute(stmt, &logged_params),
                            c.batch_execute("COMMIT"),
                        );
                        let logged = logged?;
                        commit?;
                        u64::from(logged > 0)
                    }
                };
                Ok(if inserted == 1 {
                    Admitted::Done { ended }
                } else {
                    // A plain create raced for this very (random) key: vanishingly rare.
                    Admitted::Collision
                })
            }
            .await;
            if outcome.is_err() {
                // Leaves no transaction open on a pooled connection (a no-op warning if the
                // COMMIT already ended it).
                let _ = c.batch_execute("ROLLBACK").await;
            }
            outcome
        })
    }
}
/// The user's live sessions an admission counts: (key, last seen, created).
fn live_sessions(rows: &[tokio_postgres::Row]) -> Vec<(SessionKey, Timestamp, Timestamp)> {
    rows.iter()
        .filter_map(|r| {
            let key: &[u8] = r.get(0);
            let key = SessionKey::from_bytes(key.try_into().ok()?);
            Some((
                key,
                Timestamp::from_millis(r.get(1)),
                Timestamp::from_millis(r.get(2)),
            ))
        })
        .collect()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl SessionStore for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn event_log(&self) -> Option<&dyn cloakroom_core::store::EventLog> {
        (self.inner.events.get()).map(|_| self as &dyn cloakroom_core::store::EventLog)
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let now = Timestamp::now().as_millis();
        let row = statement!(self, "loading a session", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.load).await?;
            c.query_opt(&stmt, &[&key.as_bytes().as_slice(), &now])
                .await
        })?;
        row.map(|r| rows::record(&r).map(|(_, record)| record))
            .transpose()
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created> {
        Ok(match self.insert(key, record, None).await? {
            true => Created::Done,
            false => Created::Collision,
        })
    }

    /// One transaction holding the user's advisory lock (`pg_advisory_xact_lock`), in two
    /// pipelined round trips: `BEGIN`, the lock, the user's live sessions; then the
    /// tombstones, the insert, `COMMIT`. Any failure rolls the whole of it back.
    async fn create_limited(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: &Limit,
    ) -> Result<Admitted> {
        self.admit(key, record, limit, None).await
    }

    async fn apply(&self, key: &SessionKey, patch: &Patch) -> Result<Applied> {
        let (set, removed) = encode_patch(patch);
        let (lifetime, idle) = (patch.max_lifetime.map(millis), patch.max_idle.map(millis));
        let now = Timestamp::now().as_millis();
        let n = statement!(self, "patching a session", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.apply).await?;
            c.execute(
                &stmt,
                &[
                    &removed,
                    &set,
                    &patch.last_seen.as_millis(),
                    &lifetime,
                    &patch.expires_at.as_millis(),
                    &patch.remember,
                    &key.as_bytes().as_slice(),
                    &now,
                    &idle,
                ],
            )
            .await
        })?;
        Ok(Applied::from(n == 1))
    }

    async fn touch(
        &self,
        key: &SessionKey,
        last_seen: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Applied> {
        let now = Timestamp::now().as_millis();
        let n = statement!(self, "touching a session", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.touch).await?;
            c.execute(
                &stmt,
                &[
                    &last_seen.as_millis(),
                    &expires_at.as_millis(),
                    &key.as_bytes().as_slice(),
                    &now,
                ],
            )
            .await
        })?;
        Ok(Applied::from(n == 1))
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let now = Timestamp::now().as_millis();
        let row = statement!(self, "deleting a session", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.delete).await?;
            c.query_opt(&stmt, &[&key.as_bytes().as_slice()]).await
        })?;
        match row {
            None => Ok(false),
            Some(row) => {
                let expires_at: i64 = row.try_get(0).map_err(|e| {
                    Error::new(ErrorKind::Corrupt, "a session row could not be decoded")
                        .with_source(e)
                })?;
                Ok(expires_at > now)
            }
        }
    }

    async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>> {
        let now = Timestamp::now().as_millis();
        let rows = statement!(self, "listing a user's sessions", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.sessions_of).await?;
            c.query(&stmt, &[&user, &now]).await
        })?;
        rows.iter().map(rows::info).collect()
    }

    async fn delete_user(&self, user: &str, except: Option<&SessionKey>) -> Result<u64> {
        let now = Timestamp::now().as_millis();
        let except = except.map(|k| k.as_bytes().as_slice());
        statement!(self, "deleting a user's sessions", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.delete_user).await?;
            c.execute(&stmt, &[&user, &now, &except]).await
        })
    }

    async fn scan(&self, cursor: Cursor, limit: usize) -> Result<Page> {
        let after: Vec<u8> = if cursor.as_str().is_empty() {
            Vec::new() // sorts before every key
        } else {
            SessionKey::from_handle(cursor.as_str())
                .map(|k| k.as_bytes().to_vec())
                .ok_or_else(|| Error::new(ErrorKind::Config, "invalid scan cursor"))?
        };
        let limit = limit.clamp(1, 10_000);
        let now = Timestamp::now().as_millis();
        let rows = statement!(self, "scanning sessions", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.scan).await?;
            c.query(&stmt, &[&after, &now, &(limit as i64)]).await
        })?;
        let records = rows.iter().map(rows::record).collect::<Result<Vec<_>>>()?;
        let next = (records.len() == limit)
            .then(|| records.last().map(|(key, _)| Cursor::new(key.to_handle())))
            .flatten();
        // A rotation grace's forwarding record is no session.
        let sessions = (records.into_iter())
            .filter(|(_, record)| !record.is_forward() && !record.is_ended())
            .map(|(key, record)| record.info(key))
            .collect();
        Ok(Page { sessions, next })
    }

    async fn purge_expired(&self) -> Result<u64> {
        let now = Timestamp::now().as_millis();
        statement!(self, "purging expired challenges", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.purge_challenges).await?;
            c.execute(&stmt, &[&now]).await
        })?;
        let mut total = 0;
        let logged = self.inner.events.get().is_some();
        loop {
            // One batch per statement, so no statement holds many row locks for long.
            let now = Timestamp::now().as_millis();
            let n = match logged {
                false => statement!(self, "purging expired sessions", |c| {
                    let stmt = c.prepare_cached(&self.inner.sql.purge).await?;
                    c.execute(&stmt, &[&now, &PURGE_BATCH]).await
                })?,
                // The same delete, its expiry events in the same statement.
                true => self.purge_logged(now, PURGE_BATCH).await?,
            };
            total += n;
            if n < PURGE_BATCH as u64 {
                break;
            }
        }
        if logged {
            self.trim_log().await?;
        }
        Ok(total)
    }

    async fn put_challenge(
        &self,
        challenge: &str,
        session: &SessionKey,
        expires_at: Timestamp,
    ) -> Result<Created> {
        let now = Timestamp::now().as_millis();
        let n = statement!(self, "keeping a challenge", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.put_challenge).await?;
            let key = session.as_bytes().as_slice();
            c.execute(&stmt, &[&challenge, &key, &expires_at.as_millis(), &now])
                .await
        })?;
        Ok(Created::from(n == 1))
    }

    async fn take_challenge(&self, challenge: &str) -> Result<Option<SessionKey>> {
        let now = Timestamp::now().as_millis();
        let row = statement!(self, "taking a challenge", |c| {
            let stmt = c.prepare_cached(&self.inner.sql.take_challenge).await?;
            c.query_opt(&stmt, &[&challenge]).await
        })?;
        let Some(row) = row else { return Ok(None) };
        let corrupt = || Error::new(ErrorKind::Corrupt, "a challenge row could not be decoded");
        let session: Vec<u8> = row.try_get(0).map_err(|e| corrupt().with_source(e))?;
        let expires_at: i64 = row.try_get(1).map_err(|e| corrupt().with_source(e))?;
        let session = <[u8; SessionKey::LEN]>::try_from(session).map_err(|_| corrupt())?;
        Ok((expires_at > now).then(|| SessionKey::from_bytes(session)))
    }

    async fn ping(&self) -> Result<()> {
        statement!(self, "pinging the session database", |c| {
            c.simple_query("SELECT 1").await
        })
        .map(|_| ())
    }
}
