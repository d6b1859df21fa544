//! The store's operations with a near-cache ([`crate::near`]): loads answered from process
//! memory when they can be, writes that keep the cache from ever showing this instance its
//! own stale data, key routing, and the heartbeat (with the dataset marker's check).

use std::future::Future;
use std::sync::Weak;

use cloakroom_core::session::Timestamp;
use cloakroom_core::store::{Applied, Record, Result};
use redis::Script;

use crate::conn::Conn;
use crate::near::{NearCache, NearCacheStats};
use crate::reconnect::Reconnecting;
use crate::store::{Inner, RedisStore};

impl RedisStore {
    /// The counters of the near-cache (`None` when the store has none, i.e. without
    /// `cache=N`): hits, misses, invalidations, flushes and what they count.
    pub fn near_cache_stats(&self) -> Option<NearCacheStats> {
        self.inner.near.as_ref().map(|near| near.stats())
    }

    /// The connection for the Redis key `key`: with a near-cache, the one [`Self::route`]
    /// gives; otherwise the next one round-robin ([`Self::conn`]).
    pub(crate) fn conn_for(&self, key: &[u8]) -> Conn {
        match self.inner.near {
            Some(_) => self.inner.conns[self.route(key)].clone(),
            None => self.conn(),
        }
    }

    /// The index of the connection every command on the Redis key `key` goes over when
    /// there is a near-cache, so that its replies and Redis's invalidations of it arrive in
    /// one ordered stream.
    fn route(&self, key: &[u8]) -> usize {
        let n = self.inner.conns.len();
        if n == 1 {
            return 0;
        }
        // The key ends in a hash: spread by its last bytes.
        let spread = key
            .iter()
            .rev()
            .take(4)
            .fold(0usize, |a, &x| a * 256 + usize::from(x));
        spread % n
    }

    /// `read` (a load of the session at the Redis key `rkey`, on [`Self::conn_for`]) through
    /// the near-cache: a live cached record costs no command; otherwise `read`'s record is
    /// cached unless the key was invalidated while it was in flight.
    pub(crate) async fn read_through(
        &self,
        rkey: &[u8],
        read: impl Future<Output = Result<Option<Record>>>,
    ) -> Result<Option<Record>> {
        let Some(near) = &self.inner.near else {
            return read.await;
        };
        if let Some(record) = near.get(rkey, self.route(rkey), Timestamp::now()) {
            return Ok(Some(record));
        }
        let token = near.begin(rkey);
        let decoded = read.await;
        match &decoded {
            Ok(Some(record)) => near.fill(rkey, token, record.clone()),
            // Gone (not cached: a new session may take the key), or failed.
            _ => near.abandon(rkey, token),
        }
        decoded
    }

    /// `write` (a patch of the session at `rkey`, one that re-reads the key) through the
    /// near-cache: the record is taken out of the cache before the write is sent; once Redis
    /// has done it, the record as the write left it (`after(base)`, computed from the cached
    /// record it changed) is put back, unless an invalidation came in between.
    pub(crate) async fn write_through(
        &self,
        rkey: &[u8],
        write: impl Future<Output = Result<Applied>>,
        after: impl FnOnce(Option<Record>) -> Option<Record>,
    ) -> Result<Applied> {
        let Some(near) = &self.inner.near else {
            return write.await;
        };
        let (token, base) = near.begin_write(rkey);
        let result = write.await;
        match (&result, after(base)) {
            (Ok(Applied::Done), Some(record)) => near.fill(rkey, token, record),
            _ => near.abandon(rkey, token),
        }
        result
    }

    /// `write` (deleting the sessions at `rkeys`) with the near-cache kept honest: the keys
    /// are removed before the write is sent and again once it is done, however it ended (a
    /// write that timed out may still run).
    pub(crate) async fn invalidating<T>(
        &self,
        rkeys: &[Vec<u8>],
        write: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let Some(near) = &self.inner.near else {
            return write.await;
        };
        rkeys.iter().for_each(|k| near.invalidate(k));
        let result = write.await;
        rkeys.iter().for_each(|k| near.invalidate(k));
        result
    }

    /// The script to patch a session with: `tracked` with a near-cache (the same script,
    /// then a read of the key, so that Redis tracks it for us again), `plain` otherwise.
    pub(crate) fn tracking(
        &self,
        plain: &'static Script,
        tracked: &'static Script,
    ) -> &'static Script {
        match self.inner.near {
            Some(_) => tracked,
            None => plain,
        }
    }
}

/// One check of the dataset marker ([`NearCache::marker_check`]) on `conn`: the cache is
/// dropped if the database is not the one its records came from, and may serve them for
/// the staleness bound from the time the check was sent.
pub(crate) async fn check_dataset(near: &NearCache, conn: &Reconnecting) -> redis::RedisResult<()> {
    let (check, value) = near.marker_check();
    let sent = near.now_ms();
    let previous = conn.heartbeat(Some(check)).await?;
    near.marker_answered(sent, value, &previous);
    Ok(())
}

/// Every quarter of the staleness bound: checks the dataset marker on the first connection
/// ([`check_dataset`]), keeps the other connections proven fresh while nothing else is sent
/// on them (a `PING` when one has had no reply for a quarter of the bound), and drops the
/// cache when one has had none for three times the bound. Ends when the store is dropped.
pub(crate) async fn heartbeat(store: Weak<Inner>) {
    let Some(period) = store
        .upgrade()
        .and_then(|s| s.near.as_ref().map(|n| n.max_stale() / 4))
    else {
        return;
    };
    let period = period.max(std::time::Duration::from_millis(1));
    let mut flushed = Vec::new();
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = store.upgrade() else { return };
        let Some(near) = inner.near.clone() else {
            return;
        };
        let bound = u64::try_from(near.max_stale().as_millis()).unwrap_or(u64::MAX);
        let quiet = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
        let conns = inner.conns.clone();
        let timeout = inner.timeout;
        drop(inner);
        flushed.resize(conns.len(), false);
        let pings = conns.iter().enumerate().map(|(index, conn)| {
            let near = near.clone();
            let silent = near.unproven_for(index);
            let flush = silent != u64::MAX && silent > bound.saturating_mul(3) && !flushed[index];
            async move {
                if flush {
                    near.flush("no reply from Redis for three times the staleness bound");
                }
                if let Conn::Standalone(conn) = conn {
                    if index == 0 {
                        near.count_heartbeat();
                        let _ = tokio::time::timeout(timeout, check_dataset(&near, conn)).await;
                    } else if silent > quiet {
                        near.count_heartbeat();
                        let _ = tokio::time::timeout(timeout, conn.heartbeat(None)).await;
                    }
                }
                flush
            }
        });
        let outcomes = futures_util::future::join_all(pings).await;
        for (index, flush) in outcomes.into_iter().enumerate() {
            // One flush per silence: counted again only after a reply came.
            flushed[index] = if near.unproven_for(index) <= bound {
                false
            } else {
                flushed[index] || flush
            };
        }
    }
}
