//! A self-healing multiplexed connection to one Redis server: redis-rs's
//! [`MultiplexedConnection`] (RESP2 or RESP3, pipelining, TLS) plus reconnection.
//!
//! Why not redis-rs's `ConnectionManager`: its reconnection retries with backoff inside one
//! shared future and, when that future ends with anything but an I/O error (a refused
//! `AUTH`, say, while an operator rotates a password), keeps returning that error for ever:
//! the store would need a restart. Here a failed attempt is simply forgotten and the next
//! command tries again, only one attempt runs at a time, and the store's command timeout
//! bounds every wait.
//!
//! A connection is replaced when a command on it fails in a way that leaves it unusable (I/O
//! error, dropped connection, protocol error) or, with `protocol=resp3`, when redis-rs
//! reports it closed (the RESP3 push channel announces every disconnection, so a Redis
//! restart is noticed even while no command is in flight; over RESP2 the first command on the
//! dead connection finds out, and the store sends it once more on a new one). Timeouts do not
//! count: a slow reply is discarded when it arrives and the connection stays.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, PushKind, RedisError, RedisFuture, Value};

use crate::connection::Master;
use crate::near::NearCache;
use crate::sentinel::{demoted, role_name};

type Connecting = Shared<BoxFuture<'static, Result<Live, RedisError>>>;

/// One connection and whether it is known to be dead.
#[derive(Clone)]
struct Live {
    conn: MultiplexedConnection,
    dead: Arc<AtomicBool>,
    generation: u64,
    /// Whether the server must stay the master (a Sentinel service's): a `READONLY` reply
    /// then means it was demoted, and the next connection asks the sentinels again.
    follows_master: bool,
}

enum Slot {
    /// No connection (never connected, or the last one died or failed to connect).
    Empty,
    /// A connection attempt in flight; everyone who needs a connection waits for it.
    Connecting(u64, Connecting),
    Ready(Live),
}

struct State {
    /// A fixed server, or the master the sentinels name.
    client: Master,
    config: AsyncConnectionConfig,
    slot: Mutex<Slot>,
    generation: AtomicU64,
    /// The near-cache this connection serves, and its index among the store's connections.
    track: Option<Tracking>,
}

/// A connection's part in a near-cache: `CLIENT TRACKING ON NOLOOP` on every new connection,
/// pushes handed to the cache, replies proving the connection fresh ([`crate::near`]).
#[derive(Clone)]
pub(crate) struct Tracking {
    pub(crate) cache: Arc<NearCache>,
    pub(crate) index: usize,
}

/// A multiplexed connection that reconnects by itself; see the [module docs](self).
#[derive(Clone)]
pub(crate) struct Reconnecting {
    shared: Arc<State>,
}

fn lock(m: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether an error leaves the connection it happened on unusable.
fn kills_connection(e: &RedisError) -> bool {
    !e.is_timeout() && (e.is_unrecoverable_error() || e.is_io_error())
}

impl Reconnecting {
    /// A connection to the server `client` names, made with `config` (timeouts), serving the
    /// near-cache `track` names if any (RESP3 only); connects on first use
    /// ([`Reconnecting::connect`]).
    pub(crate) fn tracked(
        client: Master,
        config: AsyncConnectionConfig,
        track: Option<Tracking>,
    ) -> Reconnecting {
        Reconnecting {
            shared: Arc::new(State {
                client,
                config,
                slot: Mutex::new(Slot::Empty),
                generation: AtomicU64::new(0),
                track,
            }),
        }
    }

    /// The live connection, connecting first if there is none (one attempt at a time).
    pub(crate) async fn connect(&self) -> Result<(), RedisError> {
        self.live().await.map(drop)
    }

    async fn live(&self) -> Result<Live, RedisError> {
        let (generation, attempt) = {
            let mut slot = lock(&self.shared.slot);
            // An attempt that everyone gave up on (timeout) may have succeeded since.
            if let Slot::Connecting(_, attempt) = &*slot {
                if let Some(Ok(live)) = attempt.peek() {
                    let live = live.clone();
                    *slot = Slot::Ready(live);
                }
            }
            match &*slot {
                Slot::Ready(live) if !live.dead.load(Ordering::Relaxed) => {
                    return Ok(live.clone());
                }
                Slot::Connecting(generation, attempt) if attempt.peek().is_none() => {
                    (*generation, attempt.clone())
                }
                // Not connected, the connection died, or the last attempt failed: try anew.
                Slot::Connecting(..) | Slot::Ready(_) | Slot::Empty => {
                    let generation = self.shared.generation.fetch_add(1, Ordering::Relaxed) + 1;
                    let attempt = open(
                        self.shared.client.clone(),
                        self.shared.config.clone(),
                        generation,
                        self.shared.track.clone(),
                    )
                    .boxed()
                    .shared();
                    // Drive the attempt even if every caller gives up on it (timeout).
                    tokio::spawn(attempt.clone().map(drop));
                    *slot = Slot::Connecting(generation, attempt.clone());
                    (generation, attempt)
                }
            }
        };
        let outcome = attempt.await;
        let mut slot = lock(&self.shared.slot);
        if matches!(&*slot, Slot::Connecting(g, _) if *g == generation) {
            *slot = match &outcome {
                Ok(live) => Slot::Ready(live.clone()),
                Err(_) => Slot::Empty,
            };
        }
        outcome
    }
}

/// One connection attempt. The push sender marks the connection dead when redis-rs reports
/// it closed, and hands invalidations to the near-cache if there is one; with a near-cache,
/// tracking is switched on before the connection is used.
async fn open(
    client: Master,
    config: AsyncConnectionConfig,
    generation: u64,
    track: Option<Tracking>,
) -> Result<Live, RedisError> {
    let dead = Arc::new(AtomicBool::new(false));
    let resp3 = client.settings().protocol().supports_resp3();
    let config = if resp3 {
        let flag = dead.clone();
        let cache = track.as_ref().map(|t| t.cache.clone());
        config.set_push_sender(move |info: redis::PushInfo| {
            if info.kind == PushKind::Disconnection {
                // Dead first, then flushed: no read can be cached from this connection now.
                flag.store(true, Ordering::Relaxed);
            }
            if let Some(cache) = &cache {
                cache.on_push(&info);
            }
            Ok::<(), std::convert::Infallible>(())
        })
    } else {
        config
    };
    // A Sentinel source asks the sentinels for the master first.
    let mut conn = client.connect(&config).await?;
    if track.is_some() {
        let mut tracking = redis::cmd("CLIENT");
        tracking.arg("TRACKING").arg("ON").arg("NOLOOP");
        if let Err(e) = tracking.query_async::<Value>(&mut conn).await {
            if kills_connection(&e) {
                return Err(e);
            }
            return Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "the near-cache (cache=N) needs CLIENT TRACKING: Redis 6 or later, RESP3, \
                 and the command allowed (some managed services disable it)",
                e.to_string(),
            )));
        }
    }
    Ok(Live {
        conn,
        dead,
        generation,
        follows_master: client.follows_master(),
    })
}

impl Live {
    fn check<T>(
        &self,
        result: Result<T, RedisError>,
        track: Option<&Tracking>,
    ) -> Result<T, RedisError> {
        if let Err(e) = &result {
            if kills_connection(e) || (self.follows_master && demoted(e)) {
                tracing::debug!(generation = self.generation, error = %e, "Redis connection lost");
                self.abandon(track, "connection to Redis lost");
            }
        }
        result
    }

    /// Marks the connection dead (the next command gets a new one) and then drops the
    /// near-cache's records, for `why`; nothing more if it was dead already (its death
    /// dropped them, and what is cached now came from a newer connection).
    fn abandon(&self, track: Option<&Tracking>, why: &'static str) {
        if self.dead.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(track) = track {
            track.cache.flush(why);
        }
    }
}

impl Reconnecting {
    /// The time a command is sent, for the near-cache's freshness proof (0 without a cache).
    fn sent(&self) -> u64 {
        self.shared.track.as_ref().map_or(0, |t| t.cache.now_ms())
    }

    /// A reply came for a command sent at `sent`: the connection is proven fresh up to then.
    fn answered<T>(&self, sent: u64, result: &Result<T, RedisError>) {
        if let (Some(track), Ok(_)) = (&self.shared.track, result) {
            track.cache.proven(track.index, sent);
        }
    }
}

impl Reconnecting {
    /// The near-cache's heartbeat on this connection: `check` (the dataset marker's), or a
    /// `PING` when there is none, with a `ROLE` first on a Sentinel service's master, all in
    /// one round trip and sent like any command (the replies prove the connection fresh; a
    /// broken connection is replaced). Returns `check`'s reply (an error reply as an error).
    /// A server that no longer says it is the master (demoted in a failover this connection
    /// did not notice, e.g. cut off from the sentinels) loses the connection (the next
    /// command asks the sentinels again) and the cache its records.
    pub(crate) async fn heartbeat(&self, check: Option<Cmd>) -> Result<Value, RedisError> {
        let follows_master = self.shared.client.follows_master();
        let mut pipe = redis::pipe();
        // Error replies come back as values: each is looked at below.
        pipe.ignore_errors();
        if follows_master {
            pipe.cmd("ROLE");
        } else if check.is_none() {
            pipe.cmd("PING");
        }
        if let Some(check) = check {
            pipe.add_command(check);
        }
        // Sent like any command, on a connection held here: the one a failure abandons.
        let live = self.live().await?;
        let sent = self.sent();
        let result = pipe.query_async(&mut live.conn.clone()).await;
        self.answered(sent, &result);
        let mut replies: Vec<Value> = live.check(result, self.shared.track.as_ref())?;
        if follows_master && replies.first().and_then(role_name).as_deref() != Some("master") {
            self.lost_master(&live);
            let read_only = redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
            return Err(RedisError::from((read_only, "no longer the master")));
        }
        replies.pop().unwrap_or(Value::Nil).extract_error()
    }
}

impl Reconnecting {
    /// The server the connection `probed` talks to no longer says it is the master: that
    /// connection is abandoned, not whichever is current (a newer one, made while the probe
    /// was in flight, checked the role when it connected).
    fn lost_master(&self, probed: &Live) {
        tracing::warn!("the Redis server is no longer the master; asking the sentinels again");
        probed.abandon(
            self.shared.track.as_ref(),
            "the server is no longer the master",
        );
    }
}

impl ConnectionLike for Reconnecting {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut live = self.live().await?;
            let sent = self.sent();
            let result = live.conn.req_packed_command(cmd).await;
            self.answered(sent, &result);
            live.check(result, self.shared.track.as_ref())
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut live = self.live().await?;
            let sent = self.sent();
            let result = live.conn.req_packed_commands(cmd, offset, count).await;
            self.answered(sent, &result);
            live.check(result, self.shared.track.as_ref())
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.client.settings().db()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cloakroom_core::session::Timestamp;
    use cloakroom_core::store::Record;

    use super::*;

    /// A heartbeat probe that finds the server demoted abandons the connection it ran on
    /// only: when that one was replaced while the probe was in flight, the newer connection
    /// and the records cached since stay.
    #[tokio::test]
    async fn a_failed_probe_abandons_only_the_connection_it_ran_on() {
        let server = cloakroom_testkit::redis_server::RedisServer::shared();
        let url = crate::url::RedisUrl::parse(&format!("{}?protocol=resp3", server.url()));
        let client = Master::build(&url.unwrap(), Duration::from_secs(1), "x").unwrap();
        let cache = Arc::new(NearCache::new(10, 1, "p:", Duration::from_secs(60)));
        let track = Tracking {
            cache: cache.clone(),
            index: 0,
        };
        let conn = Reconnecting::tracked(client, AsyncConnectionConfig::new(), Some(track));
        // The probe is sent on the first connection, which then breaks and is replaced.
        let probed = conn.live().await.unwrap();
        probed.abandon(conn.shared.track.as_ref(), "broken");
        let newer = conn.live().await.unwrap();
        assert_ne!(newer.generation, probed.generation);
        let now = Timestamp::now();
        let token = cache.begin(b"p:s:a");
        cache.fill(
            b"p:s:a",
            token,
            Record::new(now, now.plus(Duration::from_secs(60))),
        );
        // Then the probe's reply says "not the master".
        conn.lost_master(&probed);
        assert!(
            !newer.dead.load(Ordering::Relaxed),
            "the newer connection was abandoned"
        );
        assert_eq!(conn.live().await.unwrap().generation, newer.generation);
        assert_eq!(
            cache.stats().entries,
            1,
            "the newer connection's records were dropped"
        );
        // On the connection in use, the same reply abandons it and drops the records.
        conn.lost_master(&newer);
        assert!(newer.dead.load(Ordering::Relaxed));
        assert_eq!(cache.stats().entries, 0);
    }
}
