//! The [`SessionStore`] operations of a [`PycketStore`]: reads on the shared connections,
//! writes as `WATCH`/`MULTI` transactions on the pool (see `transaction`).

use super::*;

impl PycketStore {
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
    fn kind(&self) -> &'static str {
        "pycket"
    }

    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.load_key(&pycket_uuid(key)).await
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created> {
        let rkey = pycket_uuid(key);
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

    /// The pycket format keeps no admission state the limit could be enforced on
    /// atomically: a logged-in create under a limit fails (`Config`), so a misconfigured app
    /// refuses logins (503) rather than admit them over the limit.
    async fn create_limited(
        &self,
        key: &SessionKey,
        record: &Record,
        _limit: &cloakroom_core::store::Limit,
    ) -> Result<cloakroom_core::store::Admitted> {
        use cloakroom_core::store::Admitted;
        if record.meta.user.is_some() {
            return Err(cloakroom_core::store::Error::new(
                cloakroom_core::store::ErrorKind::Config,
                "the pycket store does not support max_sessions_per_user",
            ));
        }
        Ok(Admitted::from(self.create(key, record).await?))
    }

    async fn apply(&self, key: &SessionKey, patch: &Patch) -> Result<Applied> {
        match self
            .transact("apply", &pycket_uuid(key), &Op::Apply(patch))
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
        match self.transact("touch", &pycket_uuid(key), &op).await? {
            Outcome::Applied(a) => Ok(a),
            _ => unreachable!("touch reports Applied"),
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let rkey = pycket_uuid(key);
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
        // Members naming no session, and those whose session is gone, expired or someone
        // else's, are pruned.
        let (named, mut dead): (Vec<String>, Vec<String>) =
            members.into_iter().partition(|m| pycket_key(m).is_some());
        let keys: Vec<SessionKey> = named.iter().filter_map(|m| pycket_key(m)).collect();
        let records = self.load_many(&keys).await?;
        let mut infos = Vec::with_capacity(keys.len());
        for ((key, member), record) in keys.into_iter().zip(named).zip(records) {
            match record {
                Some(r) if r.meta.user.as_deref() == Some(user) => infos.push(r.info(key)),
                _ => dead.push(member),
            }
        }
        infos.sort_by_key(|i| std::cmp::Reverse(i.meta.last_seen));
        self.unindex(user, &dead).await;
        Ok(infos)
    }

    async fn delete_user(&self, user: &str, except: Option<&SessionKey>) -> Result<u64> {
        let except = except.map(pycket_uuid);
        let members: Vec<String> = self
            .index_members("delete_user", user)
            .await?
            .into_iter()
            .filter(|m| Some(m) != except.as_ref())
            .collect();
        let mut deleted = 0;
        for member in &members {
            if pycket_key(member).is_none() {
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
        let (mut scan_cursor, mut after) = if cursor.as_str().is_empty() {
            (0u64, None)
        } else {
            let (c, a) = cursor.as_str().split_once(':').ok_or_else(bad)?;
            let c: u64 = c.parse().map_err(|_| bad())?;
            let a = match a {
                "" => None,
                a => Some(pycket_key(a).map(|k| pycket_uuid(&k)).ok_or_else(bad)?),
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
                .filter_map(|k| pycket_key(&k).map(|key| (k, key)))
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
                    // A rotation grace's forwarding record is no session.
                    if let Some(record) = record.filter(|r| !r.is_forward()) {
                        sessions.push(record.info(*key));
                    }
                }
                taken += want;
                if sessions.len() == limit && taken < batch.len() {
                    let last = &batch[taken - 1].0;
                    return Ok(Page {
                        sessions,
                        next: Some(Cursor::new(format!("{scan_cursor}:{last}"))),
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
            next: Some(Cursor::new(format!("{scan_cursor}:"))),
        })
    }

    async fn purge_expired(&self) -> Result<u64> {
        // Redis expires the keys by itself.
        Ok(0)
    }

    async fn put_challenge(&self, _: &str, _: &SessionKey, _: Timestamp) -> Result<Created> {
        Err(no_dbsc())
    }

    async fn take_challenge(&self, _: &str) -> Result<Option<SessionKey>> {
        Err(no_dbsc())
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

/// The pycket format has no place for DBSC challenges (Tornado reads this database).
fn no_dbsc() -> Error {
    Error::new(
        ErrorKind::Config,
        "the pycket format does not support DBSC (device-bound sessions): use another store",
    )
}
