//! The expiry sweep: session keys Redis expired while still in a user index are found
//! and logged as `expired` once ([`NOTICE`]), in the background and on a purge.

use super::*;

/// How often a store with a log runs the expiry sweep ([`RedisStore::sweep_expired`]) by
/// itself.
pub(crate) const EXPIRY_SWEEP: Duration = Duration::from_secs(300);

/// Runs the expiry sweep of the store every [`EXPIRY_SWEEP`] until the store is dropped,
/// when no other process on the prefix took the turn ([`RedisStore::take_sweep_turn`]).
pub(crate) async fn sweep_periodically(store: std::sync::Weak<crate::store::Inner>) {
    let mut tick = tokio::time::interval(EXPIRY_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate
    loop {
        tick.tick().await;
        let Some(inner) = store.upgrade() else { return };
        let store = RedisStore { inner };
        let Some(log) = &store.inner.log else { return };
        match store.take_sweep_turn().await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "the expiry sweep failed");
                continue;
            }
        }
        match store.sweep_expired(log).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(expired = n, "logged expired sessions"),
            Err(e) => tracing::warn!(error = %e, "the expiry sweep failed"),
        }
    }
}

impl RedisStore {
    /// Removes `members` (none: all) from `user`'s index where they name no live session of
    /// the user, logging each one whose record expired ([`NOTICE`]). How many expiries it
    /// logged.
    pub(crate) async fn notice(&self, log: &Log, user: &str, members: &[Vec<u8>]) -> Result<u64> {
        let (ukey, shard) = (self.user_key(user), self.shard_of_user(user));
        let mut args = vec![
            self.session_key_prefix(shard),
            user.as_bytes().to_vec(),
            millis(Timestamp::now()),
            log.cap.clone(),
        ];
        args.extend(members.iter().cloned());
        let keys: [&[u8]; 2] = [ukey.as_bytes(), log.key(shard)];
        let logged = self
            .script_on("noticing expiries", &NOTICE, &keys, &args)
            .await?;
        Ok(u64::try_from(reply::<i64>(logged)?).unwrap_or(0))
    }

    /// [`NOTICE`] on each user's index with the members given, in flight together (up to
    /// [`FAN_OUT`](crate::FAN_OUT) at once). How many expiries it logged.
    pub(super) async fn notice_many(
        &self,
        log: &Log,
        suspects: &[(String, Vec<Vec<u8>>)],
    ) -> Result<u64> {
        let now = millis(Timestamp::now());
        let replies = self
            .many("expiry sweep", suspects.len(), |i, mut conn| {
                let (user, members) = &suspects[i];
                let shard = self.shard_of_user(user);
                let mut invocation = NOTICE.prepare_invoke();
                invocation
                    .key(self.user_key(user).as_bytes())
                    .key(log.key(shard))
                    .arg(self.session_key_prefix(shard))
                    .arg(user.as_bytes())
                    .arg(now.as_slice())
                    .arg(log.cap.as_slice());
                for member in members {
                    invocation.arg(member.as_slice());
                }
                async move { invocation.invoke_async::<Value>(&mut conn).await }
            })
            .await?;
        if self.inner.wait > 0 && !replies.is_empty() {
            // `?wait=N`: the scripts went out on any of the connections.
            let (wait, timeout) = (self.inner.wait, self.inner.timeout);
            bounded(timeout, "expiry sweep (wait)", || {
                crate::wait::wait_on_all(&self.inner.conns, wait, timeout)
            })
            .await?;
        }
        let mut logged = 0;
        for one in replies {
            logged += u64::try_from(reply::<i64>(one)?).unwrap_or(0);
        }
        Ok(logged)
    }

    /// Whether this process sweeps now: `SET <prefix>events:sweep 1 NX PX <interval>`
    /// holds for whichever process on the prefix asks first in an interval, so the periodic
    /// sweeps of many processes cost about one sweep per interval.
    pub(super) async fn take_sweep_turn(&self) -> Result<bool> {
        let key = format!("{}events:sweep", self.inner.prefix);
        let ms = u64::try_from(EXPIRY_SWEEP.as_millis()).unwrap_or(u64::MAX);
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ms.saturating_sub(1000).max(1));
        let set = self
            .query("expiry sweep (turn)", key.as_bytes(), cmd)
            .await?;
        Ok(!matches!(set, Value::Nil))
    }

    /// The expiry sweep: every user index under the prefix (one `SCAN` pass, `MATCH
    /// <prefix>u:* TYPE set`). Each batch of index sets is read (`SMEMBERS`), the records
    /// their members name checked (`EXISTS`, all in flight together), and only the indexes
    /// with a member whose record is gone (or that names no session key) go through
    /// [`NOTICE`] with those members, which checks them again and logs each expiry once.
    /// An index whose sessions all exist costs two native commands a member and no script
    /// (about a tenth of the script's time in Redis). A record past its expiry that Redis
    /// has not dropped yet is left for the next sweep. How many expiries it logged.
    pub(crate) async fn sweep_expired(&self, log: &Log) -> Result<u64> {
        let pattern = format!("{}u:*", crate::scan::glob_escape(&self.inner.prefix));
        let mut logged = 0;
        // Every master of a Cluster (one server: itself).
        for (_, addr) in self.scan_nodes().await? {
            let addr = addr.unwrap_or_default();
            let mut cursor = 0_u64;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(crate::SCAN_COUNT)
                    .arg("TYPE")
                    .arg("set");
                let scanned = self.query_node("expiry sweep (SCAN)", &addr, cmd).await?;
                let (next, found): (u64, Vec<Vec<u8>>) = reply(scanned)?;
                let users: Vec<String> =
                    found.iter().filter_map(|k| self.user_of_index(k)).collect();
                let suspects = self.suspects(&users).await?;
                logged += self.notice_many(log, &suspects).await?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(logged)
    }

    /// For the sweep: the members of each of `users`' indexes whose record is gone or that
    /// name no session key, by user (users with none are left out).
    pub(super) async fn suspects(&self, users: &[String]) -> Result<Vec<(String, Vec<Vec<u8>>)>> {
        let sets = self
            .many("expiry sweep (SMEMBERS)", users.len(), |i, mut conn| {
                let mut cmd = redis::cmd("SMEMBERS");
                cmd.arg(self.user_key(&users[i]));
                async move { cmd.query_async::<Value>(&mut conn).await }
            })
            .await?;
        let mut members = Vec::new(); // (user, member, the session's Redis key)
        for (i, set) in sets.into_iter().enumerate() {
            for member in reply::<Vec<Vec<u8>>>(set)? {
                let rkey = std::str::from_utf8(&member)
                    .ok()
                    .and_then(SessionKey::from_handle)
                    .map(|k| self.session_key(&k));
                members.push((i, member, rkey));
            }
        }
        let named: Vec<&Vec<u8>> = members.iter().filter_map(|(.., k)| k.as_ref()).collect();
        let exists = self
            .many("expiry sweep (EXISTS)", named.len(), |i, mut conn| {
                let mut cmd = redis::cmd("EXISTS");
                cmd.arg(named[i].as_slice());
                async move { cmd.query_async::<Value>(&mut conn).await }
            })
            .await?;
        let mut exists = exists.into_iter();
        let mut suspects: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
        for (i, member, rkey) in members {
            let gone = match rkey {
                Some(_) => reply::<i64>(exists.next().unwrap_or(Value::Int(1)))? == 0,
                None => true,
            };
            if !gone {
                continue;
            }
            match suspects.last_mut() {
                Some((user, list)) if *user == users[i] => list.push(member),
                _ => suspects.push((users[i].clone(), vec![member])),
            }
        }
        Ok(suspects)
    }
}
