//! Redis session store for Cloakroom, on [redis-rs](https://docs.rs/redis): a standalone
//! server (`redis://host:port/db`) or a Redis Cluster (`redis+cluster://host:port,host:port`),
//! in plain text or over TLS (`rediss://`, `rediss+cluster://`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), cloakroom_core::store::Error> {
//! use std::time::Duration;
//! use cloakroom_redis::RedisStore;
//!
//! let store = RedisStore::open("redis://127.0.0.1:6379/0").await?;
//! let managed = RedisStore::open("rediss://app:s3cret@redis.example.com:6380/0").await?;
//! let tuned = RedisStore::builder("redis+cluster://10.0.0.1:6379,10.0.0.2:6379")
//!     .prefix("myapp:")
//!     .command_timeout(Duration::from_millis(500))
//!     .build()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! Each session is a hash at `<prefix>s:` followed by the 16 bytes of its
//! [`SessionKey`](cloakroom_core::SessionKey), raw (128 bits of a hash of the session id:
//! the store never sees ids; raw bytes keep the key at 28 bytes with the default prefix,
//! within Redis's 32-byte allocation class, where the 22-character text form would take
//! 48; `redis-cli` shows them escaped). A key under `<prefix>s:` whose tail is not 16
//! bytes (a 32-byte one, say) names no session: no operation finds it,
//! [`SessionStore::scan`](cloakroom_core::SessionStore::scan) skips it, and Redis drops it
//! at its own expiry. Data
//! field `name` is the hash field `d:name` holding the JSON text verbatim; metadata lives in
//! one-letter fields, kept only when they say something: `e` (expires at) and `c` (created
//! at), milliseconds since the epoch; `s` (last seen, once it differs from `c`), `r` (`1`:
//! remember me), `u` (user) and `a` (user agent). A one-field anonymous session is 3
//! fields, a 46-byte listpack. The key expires by `PEXPIREAT` at the record's expiry, so
//! Redis drops dead sessions by itself and [`SessionStore::purge_expired`](cloakroom_core::SessionStore::purge_expired) removes nothing
//! (with an [event log](#event-log), it logs the expiries it notices).
//!
//! On a Redis Cluster, session keys, user indexes and event streams carry a hash tag naming
//! one of 16 shards (`<prefix>s:{t}<raw>`, `<prefix>u:{t}<user>`), and a user's sessions
//! are created in the user's shard (the engine chooses their ids so;
//! [`SessionStore::placement`](cloakroom_core::SessionStore::placement)), so the scripts
//! that reach a user's index and sessions together run on a Cluster as on one server.
//!
//! A user's sessions are indexed in a set `<prefix>u:<user>` of handles (the session keys
//! in base64url, [`SessionKey::to_handle`](cloakroom_core::SessionKey::to_handle)). Entries of sessions
//! that expired are removed lazily: when the set is read ([`SessionStore::sessions_of`](cloakroom_core::SessionStore::sessions_of),
//! [`SessionStore::delete_user`](cloakroom_core::SessionStore::delete_user)), and every 16th login once a set holds 32 entries or more,
//! so the set cannot grow without bound; with an [event log](#event-log), also by the expiry
//! sweep, and each expired session's entry is logged as it goes. [`SessionStore::delete`](cloakroom_core::SessionStore::delete) removes the entry at once.
//!
//! A single-use challenge (DBSC) is a string `<prefix>c:<challenge>` holding the session's
//! handle, written by `SET NX PXAT` and taken by `GETDEL` (Redis 6.2+; one key per command,
//! so it runs on a Cluster).
//!
//! # Round trips
//!
//! `load` is one `HGETALL`; `create` is one `RESTORE key expiry payload ABSTTL` (the hash
//! and its expiry in one native command that fails on an existing key: about half of the
//! create script's CPU on Redis), falling back to the create script when the key exists,
//! with `?wait=N`, or once the store's server refused `RESTORE` (an ACL user without
//! `@dangerous`, a proxy). `apply` and `touch` are one transaction each (`MULTI`, `HSET`,
//! `PEXPIREAT .. XX`, `PEXPIREAT .. 0 NX`, `EXEC` in one write: a patch that lands on a
//! deleted or expired session deletes what it wrote inside the same `EXEC`, so it never
//! brings a session back; expiry there goes by Redis's clock, see `transaction.rs`), or
//! the apply script for blind writes, on Redis before 7 and where transactions are refused.
//! `delete` is one Lua script call (`EVALSHA`; redis-rs loads a script on `NOSCRIPT`, e.g.
//! after a Redis restart). A login (`create` with a user) adds one `SADD` (as a script that
//! also reports the set's size); deleting a logged-in session adds one `SREM`. A login
//! under the concurrent-session limit is one script in place of both. Every command,
//! script and transaction touches keys of one slot, so all of it works on Redis Cluster
//! (see the layout above).
//!
//! # URLs
//!
//! - `redis://[user:password@]host:port/db`: one server; `redis+unix:///path/to/socket`
//!   (also `unix://`) over a Unix socket.
//! - `rediss://[user:password@]host:port/db`: one server over TLS (rustls, no OpenSSL). With
//!   an ACL user, `user:password`; with `requirepass`, `:password`.
//! - `redis+cluster://[user:password@]host:port,host:port` and, over TLS,
//!   `rediss+cluster://...`: a Redis Cluster from any reachable nodes as seeds.
//! - `redis+sentinel://[user:password@]host:port,host:port/SERVICE/db` and, over TLS (to the
//!   sentinels and the servers), `rediss+sentinel://...`: the master of `SERVICE` as the
//!   sentinels name it, found again after a failover (no restart). `user:password` are the
//!   servers'; sentinels with a password of their own take `sentinel_password=` (and
//!   `sentinel_username=` for an ACL user) in the query.
//!
//! Query options (an unknown one is an error at open, so a misspelt `ca=` can never fall
//! back to weaker settings unnoticed):
//!
//! | option | meaning |
//! |---|---|
//! | `prefix=app:` | key prefix (percent-encoded if need be), default `cloakroom:` |
//! | `timeout_ms=500` | the bound on every command, connecting included, default 2000 |
//! | `connections=N`, `max_connections=N` | multiplexed connections (below), default 1 |
//! | `ca=PATH` | PEM file of the CA(s) to trust instead of the system roots (TLS) |
//! | `cert=PATH&key=PATH` | client certificate chain and key, PEM, for mutual TLS |
//! | `insecure_skip_verify=true` | **development only**: do not verify the server at all |
//! | `protocol=resp3` | speak RESP3 (default RESP2); `db`, `user`, `pass` for Unix sockets |
//! | `cache=N` | keep up to N records in process memory ([near-cache](#near-cache)), default 0 |
//! | `cache_max_stale_ms=1000` | the near-cache's staleness bound W |
//! | `events=N` | keep a durable [event log](#event-log) of about the newest N events, default off |
//! | `sentinel_password=P` | Sentinel URLs only: the sentinels' own password (`requirepass`) |
//! | `sentinel_username=U` | Sentinel URLs only: the sentinels' ACL user (with `sentinel_password`) |
//!
//! TLS needs this crate's `tls` feature (the `cloakroom` crate's `redis-tls`), which brings
//! rustls with its `ring` provider (C and assembly); without it a TLS URL is an
//! [`ErrorKind::Config`](cloakroom_core::store::ErrorKind::Config) error that names the
//! feature, and nothing of TLS is compiled.
//!
//! TLS verifies the server's certificate and name against the system's root certificates
//! (read through `rustls-native-certs`; `SSL_CERT_FILE`/`SSL_CERT_DIR` are honoured), or
//! against `ca=` alone when given. `insecure_skip_verify=true` disables every check (anyone
//! on the network path can then read and change the sessions) and is logged as a warning
//! each time a store opens. The files are read, and the certificates and key parsed, when
//! the store opens: a missing or unreadable file is an [`ErrorKind::Config`](cloakroom_core::store::ErrorKind::Config) error there,
//! never at the first request. So is a server whose certificate is not trusted (or that
//! wants a client certificate we do not send), and a refused user or password (`WRONGPASS`):
//! configuration errors, not outages. Passwords never appear in errors or `Debug` output.
//!
//! # Connections and failures
//!
//! By default the store keeps **one multiplexed connection** (requests from all tasks are
//! pipelined over it, which is what Redis serves fastest); [`RedisStoreBuilder::connections`]
//! (URL `connections=N`, or `max_connections=N`) opens N and spreads operations
//! over them round-robin, which helps when large replies would otherwise hold up small ones.
//! Each is redis-rs's `MultiplexedConnection` to a standalone server, replaced by a
//! new one when it breaks (one connection attempt at a time; a failed attempt is forgotten
//! and the next command tries again), or redis-rs's cluster connection (one multiplexed
//! connection per node).
//!
//! Every command is bounded by the command timeout (default 2 s): when Redis is down an
//! operation fails with [`ErrorKind::Unavailable`](cloakroom_core::store::ErrorKind::Unavailable) (connection refused or broken) or
//! [`ErrorKind::Timeout`](cloakroom_core::store::ErrorKind::Timeout) within it, never hangs. [`RedisStore::open`] fails with
//! `Unavailable` when it cannot connect; once open, the store reconnects by itself after a
//! Redis restart (an operation whose connection was refused or broke is sent once more on the
//! new connection, within the same timeout; every operation tolerates such a repeat).
//!
//! Needs Redis 6.2 or later (tested with 7; patches by script before 7).
//!
//! # Near-cache
//!
//! `cache=N` (or [`RedisStoreBuilder::near_cache`]) keeps up to N session records in process
//! memory, so a request that only reads its session costs **no Redis command**. It is made
//! correct by Redis's server-assisted client-side caching: each connection runs `CLIENT
//! TRACKING ON NOLOOP` (RESP3, which the option turns on; Redis 6 or later), so Redis pushes
//! an invalidation on the connection that read a key when anyone else changes it. The rules:
//!
//! - **This instance never reads its own stale data.** A write, delete or revocation on this
//!   instance removes the record from the cache before it is sent and again once it is done
//!   (also when it failed or timed out). A patch or touch that succeeded puts the record as
//!   it wrote it back, so a read-then-write request costs one round trip; the transaction (or
//!   script) then reads the key so that Redis keeps tracking it for us.
//! - **Another instance's write or logout** is removed here when Redis's invalidation
//!   arrives, normally well under a millisecond after Redis ran it (measured on loopback;
//!   see BENCHMARKS.md). A read whose reply raced with an invalidation is not cached (a
//!   marker per key, replaced by every invalidation, decides).
//! - **A staleness bound W** (`cache_max_stale_ms`, default 1000): a cached record is served
//!   only while its connection had a reply from Redis within W; a heartbeat `PING`s idle
//!   connections. So a change Redis committed at `t` is never served by this instance after
//!   `t + W`, even when the network holds invalidations up (a stalled or half-open
//!   connection): **a revoked or logged-out session stops working on every instance within
//!   W at most**, and in practice within the push delay.
//! - **A replaced dataset**, which Redis does not announce for `SWAPDB`: every W/4 the
//!   heartbeat rewrites a marker key of the instance's own (`<prefix>near:<random>`, `SET …
//!   PX … GET`, which the store's user must be allowed) and drops the cache when the old value
//!   is not the one it wrote last (an empty, flushed or restored database); a record is only
//!   served while such a check was sent within W.
//! - **The whole cache is dropped** when a connection is lost (invalidations may have been
//!   missed: Redis restarts, failovers), on `FLUSHDB`/`FLUSHALL`, on a replaced dataset, and
//!   after 3W without any reply.
//! - **Expiry** is honoured locally: a cached record past its expiry is gone.
//!
//! With several connections, every command on one session goes over the same connection
//! (its invalidations and replies arrive in one ordered stream). Memory: N records of the
//! sessions' size. A Redis Cluster does not support it (a configuration
//! error at open); providers that disable `CLIENT TRACKING` are refused at open with a
//! message saying so. Counters: [`RedisStore::near_cache_stats`].
//!
//! # Event log
//!
//! `events=N` (or [`RedisStoreBuilder::event_log`]) keeps the durable lifecycle log of
//! [`EventLog`](cloakroom_core::store::EventLog): a Redis Stream at `<prefix>events`. Every
//! session the engine creates, rotates or ends (logout, revocation, the limit) is appended
//! by `XADD <prefix>events MAXLEN ~ N * at .. kind .. session .. [previous ..] [user ..]`
//! **inside the same Lua script as the change**, so Redis runs both or neither: no
//! committed change lacks its event, no event exists for a change that did not happen
//! (a collision, a refusal, nothing to delete). A login then costs one script (the record,
//! the user index and the event) instead of `RESTORE` and the index script; a logout or a
//! revocation of one session, one script (as without the log), with one `XADD` inside;
//! revoking all of a user's sessions, one script in all (one `XADD` per session ended).
//! Positions are stream ids (`1700000000000-0`); a read is one pipeline (`XINFO STREAM`,
//! `XRANGE`), and a follower blocks in `XREAD BLOCK` on a connection of its own. `MAXLEN ~`
//! trims whole stream nodes, so the stream may keep somewhat more than N; a reader behind
//! what was trimmed is told so (a gap, from `XINFO STREAM`: `entries-added` against
//! `length`, and the first entry kept; a reader whose last event was itself the newest one
//! trimmed may be told of a gap it did not suffer, never the other way round).
//!
//! **Expiry** is logged when it is noticed, not when it happens: Redis expires session keys
//! by itself and says nothing reliable when it does, but a logged-in session stays in its
//! user's index set after Redis dropped it, and every script that takes such a member out
//! of the index appends one `expired` event of the user (`at` = when it was noticed) in
//! the same script, only if the member was still there. So each expiry of a logged-in
//! session is logged **exactly once** (two processes noticing it at once log it once; a
//! session we ended leaves the index in the script that logged its end, so it is never
//! also logged as expired), at the first of: a listing of the user's sessions, a
//! revocation of them, a login of the user under the limit, a delete that finds the record
//! past its expiry, and the **expiry sweep**, which one of the processes whose store has
//! the log runs every 5 minutes (one `SCAN` pass over the user index sets, `SMEMBERS` and
//! `EXISTS` of what they name, a script only for a set with an expired member; also
//! [`SessionStore::purge_expired`](cloakroom_core::SessionStore::purge_expired),
//! `cloakroom gc`). **Anonymous sessions** have no index: their expiry is never logged on
//! Redis. Not logged either, as on every store: data writes and touches, and the deletion
//! of a rotated-away record (its successor's `rotated` event
//! names it). The log is as durable as the rest of the data (Redis persistence and
//! replication; `?wait=N` covers the scripts that write it). Needs Redis 7.0 or later. On a
//! Cluster, one stream per shard (`<prefix>events:{t}`, each capped at `N`), in commit
//! order per shard (a user's events share the user's shard) and merged by id when read;
//! a position names one id per shard, and followers poll every 100 ms.
//!

mod acl;
mod builder;
mod cached;
mod codec;
mod conn;
pub mod connection;
mod events;
mod index;
mod layout;
mod limit;
mod near;
mod reconnect;
mod restore;
mod scan;
mod scripts;
mod sentinel;
mod shard;
mod store;
mod transaction;
mod url;
mod wait;

use std::time::Duration;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "cloakroom:";

/// The default bound on every command.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The near-cache's default staleness bound: a cached record is served only while its
/// connection had a reply from Redis within this (URL option `cache_max_stale_ms`).
pub const DEFAULT_CACHE_MAX_STALE: Duration = Duration::from_secs(1);

/// How many requests one operation keeps in flight at once (listings, user revocation).
pub(crate) const FAN_OUT: usize = 128;

/// Keys a `SCAN` call examines (a hint to Redis).
pub(crate) const SCAN_COUNT: usize = 1000;

/// `SCAN` calls one [`SessionStore::scan`](cloakroom_core::SessionStore::scan) call makes at most before it returns a short page.
pub(crate) const SCAN_CALLS: usize = 32;

/// A user index with at least this many entries is pruned now and then on login...
pub(crate) const PRUNE_FROM: i64 = 32;

/// ...every this many logins.
pub(crate) const PRUNE_EVERY: i64 = 16;

pub use crate::builder::RedisStoreBuilder;
pub use crate::near::NearCacheStats;
pub use crate::store::RedisStore;
