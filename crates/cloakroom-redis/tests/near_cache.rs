//! The near-cache (`?cache=N`) against real Redis servers: cached reads cost no command,
//! this instance never reads its own stale data, another instance's writes and logouts
//! reach it through Redis's invalidations (the window is printed), a flush or a restart of
//! Redis drops it, a silent connection stops it from serving, bad options fail at open.
//! (The conformance suite runs with the cache on in tests/conformance.rs.)

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cloakroom_core::session::{SessionKey, Timestamp};
use cloakroom_core::store::{Applied, Created, ErrorKind, Patch, Record, SessionStore};
use cloakroom_redis::RedisStore;
use cloakroom_testkit::redis_server::{RedisCluster, RedisServer, Resp};
use cloakroom_testkit::{new_key, unique_prefix};

const HOUR: Duration = Duration::from_secs(3600);

/// What the near-cache's heartbeat sends: the dataset marker's `SET … GET`, and `PING`s.
const HEARTBEAT: &[&str] = &["set", "ping"];

fn record(value: &str) -> Record {
    let now = Timestamp::now();
    let mut r = Record::new(now, now.plus(HOUR));
    r.data.insert("v".into(), value.into());
    r
}

fn value(r: &Option<Record>) -> Option<&str> {
    r.as_ref().and_then(|r| r.data.get("v")).map(String::as_str)
}

fn set(v: &str) -> Patch {
    let now = Timestamp::now();
    Patch::new(now, now.plus(HOUR)).set("v", v)
}

/// Two stores on one server and prefix: A with the near-cache (`options` added to the URL),
/// B without.
async fn pair(server: &RedisServer, options: &str) -> (RedisStore, RedisStore) {
    let prefix = unique_prefix("near");
    let a = RedisStore::builder(format!("{}?cache=1000{options}", server.url()))
        .prefix(&prefix)
        .build()
        .await
        .expect("open A");
    let b = RedisStore::builder(server.url())
        .prefix(&prefix)
        .build()
        .await
        .expect("open B");
    (a, b)
}

#[tokio::test]
async fn cached_reads_cost_no_redis_command() {
    let server = RedisServer::start();
    // A wide staleness bound: a stall of the test machine must not turn hits into reads.
    let (a, _b) = pair(&server, "&cache_max_stale_ms=60000").await;
    let key = new_key();
    assert_eq!(a.create(&key, &record("1")).await.unwrap(), Created::Done);
    assert_eq!(value(&a.load(&key).await.unwrap()), Some("1"));
    server.reset_stats();
    for _ in 0..200 {
        assert_eq!(value(&a.load(&key).await.unwrap()), Some("1"));
    }
    let sent = server.commands_sent();
    assert!(
        sent.iter().all(|c| HEARTBEAT.contains(&c.as_str())),
        "cached reads sent commands: {sent:?}"
    );
    let stats = a.near_cache_stats().expect("stats");
    assert!(stats.hits >= 200, "{stats:?}");
    assert_eq!(stats.misses, 1, "{stats:?}");
    // A store without `cache=` has no near-cache.
    assert!(_b.near_cache_stats().is_none());
}

#[tokio::test]
async fn this_instance_never_reads_its_own_stale_data() {
    let server = RedisServer::start();
    let (a, _b) = pair(&server, "&connections=2").await;
    let key = new_key();
    a.create(&key, &record("0")).await.unwrap();
    for i in 1..=200 {
        assert_eq!(
            value(&a.load(&key).await.unwrap()).map(str::to_owned),
            Some((i - 1).to_string())
        );
        assert_eq!(
            a.apply(&key, &set(&i.to_string())).await.unwrap(),
            Applied::Done
        );
        assert_eq!(
            value(&a.load(&key).await.unwrap()).map(str::to_owned),
            Some(i.to_string())
        );
    }
    let later = Timestamp::now().plus(Duration::from_secs(7200));
    assert_eq!(
        a.touch(&key, Timestamp::now(), later).await.unwrap(),
        Applied::Done
    );
    let loaded = a.load(&key).await.unwrap().expect("live");
    assert_eq!(loaded.meta.expires_at, later);
    assert!(a.delete(&key).await.unwrap());
    assert_eq!(a.load(&key).await.unwrap(), None);
}

/// Polls `a` every millisecond until `done` holds for what it loads; returns how long it took.
async fn window(
    a: &RedisStore,
    key: &SessionKey,
    done: impl Fn(&Option<Record>) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if done(&a.load(key).await.unwrap()) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "A never saw B's change"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn another_instances_write_and_logout_reach_the_cache() {
    let server = RedisServer::start();
    let (a, b) = pair(&server, "").await;
    let key = new_key();
    b.create(&key, &record("from B")).await.unwrap();
    assert_eq!(value(&a.load(&key).await.unwrap()), Some("from B"));
    assert_eq!(
        value(&a.load(&key).await.unwrap()),
        Some("from B"),
        "cached"
    );

    let written = Instant::now();
    b.apply(&key, &set("note from B")).await.unwrap();
    let seen = window(&a, &key, |r| value(r) == Some("note from B")).await;
    println!(
        "write on B seen by A after {:?} (B's write took {:?})",
        seen,
        written.elapsed() - seen
    );

    assert_eq!(value(&a.load(&key).await.unwrap()), Some("note from B"));
    assert!(b.delete(&key).await.unwrap());
    let gone = window(&a, &key, Option::is_none).await;
    println!("logout on B refused by A after {gone:?}");
    // Once anything came back on A's connection, the invalidation is certainly applied.
    a.ping().await.unwrap();
    assert_eq!(a.load(&key).await.unwrap(), None);
    let stats = a.near_cache_stats().unwrap();
    assert!(stats.remote_invalidations >= 2, "{stats:?}");
}

/// B changes a record as fast as it can from four tasks while A reads it in a loop; once B
/// has stopped and a reply has come back on A's connection, A must read Redis's value. A
/// read whose reply was cached after the invalidation that followed it (the race redis-rs's
/// own cache has) would stay stale until the session expires.
#[tokio::test]
async fn reads_racing_writes_never_leave_a_stale_record() {
    let server = RedisServer::start();
    let (a, b) = pair(&server, "").await;
    let key = new_key();
    b.create(&key, &record("0")).await.unwrap();
    let counter = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (b, key, counter) = (b.clone(), key, counter.clone());
            tokio::spawn(async move {
                for _ in 0..400 {
                    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                    b.apply(&key, &set(&n.to_string())).await.unwrap();
                }
            })
        })
        .collect();
    let reader = {
        let (a, key) = (a.clone(), key);
        tokio::spawn(async move {
            let mut loads = 0;
            while loads < 3000 {
                a.load(&key).await.unwrap();
                loads += 1;
                if loads % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    reader.await.unwrap();
    let in_redis = b.load(&key).await.unwrap();
    a.ping().await.unwrap();
    for _ in 0..20 {
        assert_eq!(value(&a.load(&key).await.unwrap()), value(&in_redis));
    }
    println!("{:?}", a.near_cache_stats().unwrap());
}

/// A write puts the record it wrote back in the cache (one command per read-then-write
/// request), and Redis keeps telling A about the key afterwards: B's next write reaches A.
#[tokio::test]
async fn writes_go_through_and_stay_tracked() {
    let server = RedisServer::start();
    // A wide staleness bound: no heartbeat among the commands counted.
    let (a, b) = pair(&server, "&cache_max_stale_ms=60000").await;
    let key = new_key();
    a.create(&key, &record("-")).await.unwrap();
    a.apply(&key, &set("0")).await.unwrap();
    assert_eq!(value(&a.load(&key).await.unwrap()), Some("0"));
    for i in 1..=20 {
        server.reset_stats();
        assert_eq!(
            value(&a.load(&key).await.unwrap()).map(str::to_owned),
            Some((i - 1).to_string())
        );
        a.apply(&key, &set(&i.to_string())).await.unwrap();
        let sent = server.commands_sent();
        // One transaction; its `EXISTS` has Redis track the key for A again.
        assert_eq!(
            sent,
            ["multi", "hset", "pexpireat", "pexpireat", "exists"],
            "read-then-write {i}"
        );
        // B changes what A just wrote: A must not keep serving its own write.
        let theirs = format!("b{i}");
        b.apply(&key, &set(&theirs)).await.unwrap();
        a.ping().await.unwrap();
        assert_eq!(value(&a.load(&key).await.unwrap()), Some(theirs.as_str()));
        a.apply(&key, &set(&i.to_string())).await.unwrap();
    }
    // A touch goes through too.
    let later = Timestamp::now().plus(Duration::from_secs(7200));
    a.touch(&key, Timestamp::now(), later).await.unwrap();
    server.reset_stats();
    assert_eq!(a.load(&key).await.unwrap().unwrap().meta.expires_at, later);
    assert!(server.commands_sent().is_empty());
    // The absolute lifetime caps a written-through expiry as the script caps it in Redis.
    let mut capped = set("capped");
    capped.max_lifetime = Some(Duration::from_secs(60));
    a.apply(&key, &capped).await.unwrap();
    let cached = a.load(&key).await.unwrap().unwrap();
    assert_eq!(Some(cached), b.load(&key).await.unwrap());
}

/// A and B both write the same record (different fields) as fast as they can while A reads
/// it; afterwards A's view equals Redis's.
#[tokio::test]
async fn both_instances_writing_converge() {
    let server = RedisServer::start();
    let (a, b) = pair(&server, "").await;
    let key = new_key();
    a.create(&key, &record("0")).await.unwrap();
    let tasks: Vec<_> = [("a", a.clone()), ("b", b.clone())]
        .into_iter()
        .flat_map(|(field, store)| {
            (0..2).map(move |t| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..300 {
                        let now = Timestamp::now();
                        let patch = Patch::new(now, now.plus(HOUR)).set(field, format!("{t}-{i}"));
                        store.load(&key).await.unwrap();
                        store.apply(&key, &patch).await.unwrap();
                    }
                })
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    a.ping().await.unwrap();
    let in_redis = b.load(&key).await.unwrap();
    assert_eq!(a.load(&key).await.unwrap(), in_redis);
    println!("{:?}", a.near_cache_stats().unwrap());
}

#[tokio::test]
async fn a_flushed_database_empties_the_cache() {
    let server = RedisServer::start();
    let (a, _b) = pair(&server, "").await;
    let key = new_key();
    a.create(&key, &record("1")).await.unwrap();
    assert!(a.load(&key).await.unwrap().is_some());
    assert!(matches!(server.command(&["FLUSHDB"]), Ok(Resp::Simple(_))));
    a.ping().await.unwrap();
    assert_eq!(a.load(&key).await.unwrap(), None);
    assert!(a.near_cache_stats().unwrap().flushes >= 1);
}

/// Loads `key` on `a` every millisecond until `done` holds for what it loads, after the
/// dataset was replaced at `replaced` (Redis sends no invalidation for it); returns how long
/// it took. Fails if a load begun later than the staleness bound `bound` after the
/// replacement still returns the old view: the bound holds from the replacement on.
async fn replaced_within(
    a: &RedisStore,
    key: &SessionKey,
    replaced: Instant,
    bound: Duration,
    done: impl Fn(&Option<Record>) -> bool,
) -> Duration {
    // The cache's clock counts whole milliseconds.
    let bound = bound + Duration::from_millis(5);
    loop {
        let started = Instant::now();
        let loaded = a.load(key).await.unwrap();
        let after = started.duration_since(replaced);
        if done(&loaded) {
            return after;
        }
        assert!(
            after <= bound,
            "the old record {loaded:?} was served {after:?} after the dataset was replaced \
             (bound {bound:?}): {:?}",
            a.near_cache_stats()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// `SWAPDB` puts another dataset in place (here an empty one) and Redis sends no
/// invalidation for it: the cache must still stop serving the old records within W of the
/// swap, and drop them (the heartbeat checks a marker key in the database).
#[tokio::test]
async fn swapdb_drops_the_cache_within_the_bound() {
    const W: Duration = Duration::from_millis(200);
    let server = RedisServer::start();
    let (a, _b) = pair(&server, "&cache_max_stale_ms=200").await;
    let key = new_key();
    a.create(&key, &record("1")).await.unwrap();
    assert!(a.load(&key).await.unwrap().is_some());
    let hits = a.near_cache_stats().unwrap().hits;
    assert!(a.load(&key).await.unwrap().is_some());
    assert_eq!(a.near_cache_stats().unwrap().hits, hits + 1, "cached");
    assert!(matches!(
        server.command(&["SWAPDB", "0", "1"]),
        Ok(Resp::Simple(_))
    ));
    let swapped = Instant::now();
    let gone = replaced_within(&a, &key, swapped, W, Option::is_none).await;
    println!("SWAPDB to an empty database: the session refused after {gone:?}");
    assert!(a.near_cache_stats().unwrap().flushes >= 1);
}

/// A dataset restored from a copy of this one (the marker key included, as in any backup)
/// and swapped in: the marker has moved on since the copy, so the cache is dropped and A
/// reads the restored record.
#[tokio::test]
async fn a_restored_copy_swapped_in_drops_the_cache_within_the_bound() {
    const W: Duration = Duration::from_millis(200);
    let server = RedisServer::start();
    let (a, b) = pair(&server, "&cache_max_stale_ms=200").await;
    let key = new_key();
    a.create(&key, &record("backed up")).await.unwrap();
    // The copy: every key of database 0 into database 1.
    let Ok(Resp::Array(Some(keys))) = server.command(&["KEYS", "*"]) else {
        panic!("KEYS");
    };
    for key in keys {
        let Resp::Bulk(Some(name)) = key else {
            panic!("KEYS: {key:?}");
        };
        let copied = server.command_bytes(&[b"COPY", &name, &name, b"DB", b"1"]);
        assert!(matches!(copied, Ok(Resp::Int(1))), "{name:?}: {copied:?}");
    }
    // Later (a few heartbeats), the session changes and A caches the new record.
    tokio::time::sleep(W).await;
    b.apply(&key, &set("changed")).await.unwrap();
    window(&a, &key, |r| value(r) == Some("changed")).await;
    let hits = a.near_cache_stats().unwrap().hits;
    assert_eq!(value(&a.load(&key).await.unwrap()), Some("changed"));
    assert_eq!(a.near_cache_stats().unwrap().hits, hits + 1, "cached");
    // The operator puts the copy back in place.
    assert!(matches!(
        server.command(&["SWAPDB", "0", "1"]),
        Ok(Resp::Simple(_))
    ));
    let swapped = Instant::now();
    let restored = replaced_within(&a, &key, swapped, W, |r| value(r) == Some("backed up")).await;
    println!("restored copy swapped in: the restored record read after {restored:?}");
}

#[tokio::test]
async fn a_redis_restart_drops_the_cache() {
    let server = RedisServer::start();
    let (a, _b) = pair(&server, "&timeout_ms=500").await;
    let key = new_key();
    a.create(&key, &record("1")).await.unwrap();
    assert!(a.load(&key).await.unwrap().is_some());
    // Restarted while A's runtime runs (as a server restarting under a live app would be):
    // the closed connection is noticed at once.
    let server = Arc::new(server);
    let restarting = server.clone();
    tokio::task::spawn_blocking(move || restarting.restart())
        .await
        .unwrap();
    // The restarted server is empty: A must never answer with the old record again.
    let start = Instant::now();
    loop {
        match a.load(&key).await {
            Ok(None) => break,
            Ok(Some(r)) => panic!("stale record served after a Redis restart: {r:?}"),
            Err(e) => assert!(
                matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
                "{e}"
            ),
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never reconnected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.near_cache_stats().unwrap().flushes >= 1);
}

/// With Redis paused (as a network stall would), no reply proves the connection fresh: the
/// cache stops serving once the staleness bound has passed.
#[tokio::test]
async fn a_silent_connection_stops_the_cache_within_the_bound() {
    let server = RedisServer::start();
    let (a, _b) = pair(&server, "&cache_max_stale_ms=200&timeout_ms=400").await;
    let key = new_key();
    a.create(&key, &record("1")).await.unwrap();
    assert!(a.load(&key).await.unwrap().is_some());
    assert!(a.load(&key).await.unwrap().is_some(), "cached");
    assert!(matches!(
        server.command(&["CLIENT", "PAUSE", "3000", "ALL"]),
        Ok(Resp::Simple(_))
    ));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let hits = a.near_cache_stats().unwrap().hits;
    let outcome = a.load(&key).await;
    assert_eq!(
        a.near_cache_stats().unwrap().hits,
        hits,
        "served while unproven"
    );
    assert!(outcome.is_err(), "Redis is paused: {outcome:?}");
    let _ = server.command(&["CLIENT", "UNPAUSE"]);
    // Afterwards it serves again.
    let start = Instant::now();
    while a.load(&key).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(5));
    }
    assert!(a.load(&key).await.unwrap().is_some());
}

#[tokio::test]
async fn bad_cache_options_fail_at_open() {
    let server = RedisServer::shared();
    for options in [
        "?cache=x",
        "?cache=5&protocol=resp2",
        "?cache=5&cache_max_stale_ms=0",
        "?cache=5&cache_max_stale_ms=soon",
    ] {
        let err = RedisStore::open(&format!("{}{options}", server.url()))
            .await
            .expect_err(options);
        assert_eq!(err.kind(), ErrorKind::Config, "{options}: {err}");
    }
    let cluster = RedisCluster::shared();
    let err = RedisStore::open(&format!("{}?cache=5", cluster.url()))
        .await
        .expect_err("cluster");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("Cluster"), "{err}");

    // A user not allowed CLIENT TRACKING (as on services that disable it).
    let own = RedisServer::start();
    let acl = [
        "ACL", "SETUSER", "notrack", "on", ">pw", "~*", "+@all", "-client",
    ];
    assert!(matches!(own.command(&acl), Ok(Resp::Simple(_))));
    let url = format!("redis://notrack:pw@127.0.0.1:{}/0?cache=5", own.port());
    let err = RedisStore::open(&url).await.expect_err("no tracking");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("CLIENT TRACKING"), "{err}");
    // The same user without the cache is fine.
    RedisStore::open(&format!("redis://notrack:pw@127.0.0.1:{}/0", own.port()))
        .await
        .expect("open without cache");
    // A user not allowed to write the dataset marker (`SET`).
    let acl = [
        "ACL", "SETUSER", "noset", "on", ">pw", "~*", "+@all", "-set",
    ];
    assert!(matches!(own.command(&acl), Ok(Resp::Simple(_))));
    let url = format!("redis://noset:pw@127.0.0.1:{}/0?cache=5", own.port());
    let err = RedisStore::open(&url).await.expect_err("no SET");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("marker"), "{err}");
}

/// Through Sentinel, a master demoted behind the store's back (here by hand; in real life
/// a failover this instance's connection did not notice, e.g. while the old master was cut
/// off from the sentinels) is caught by the heartbeat's `ROLE`: the connection and the
/// cache are dropped, and A stops answering from a server that is no longer the master.
#[tokio::test]
async fn a_demoted_sentinel_master_is_dropped_by_the_heartbeat() {
    use cloakroom_testkit::sentinel_server::SentinelTopology;
    let topology = SentinelTopology::start();
    let url = format!(
        "{}?cache=100&cache_max_stale_ms=200&timeout_ms=500",
        topology.url(0)
    );
    let a = common::open_fresh(url, "near").await;
    let key = new_key();
    a.create(&key, &record("1")).await.unwrap();
    assert!(a.load(&key).await.unwrap().is_some());
    assert!(a.load(&key).await.unwrap().is_some(), "cached");
    let master = topology.master_port();
    let replica = topology
        .servers()
        .iter()
        .map(RedisServer::port)
        .find(|p| *p != master)
        .unwrap();
    let port = replica.to_string();
    let demote = [
        (replica, vec!["REPLICAOF", "NO", "ONE"]),
        (master, vec!["REPLICAOF", "127.0.0.1", port.as_str()]),
    ];
    for (server, args) in demote {
        let reply = topology.server(server).command(&args);
        assert!(matches!(reply, Ok(Resp::Simple(_))), "{args:?}: {reply:?}");
    }
    // A few heartbeats (every W/4 = 50 ms while A is idle).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(a.near_cache_stats().unwrap().flushes >= 1);
    let hits = a.near_cache_stats().unwrap().hits;
    let outcome = a.load(&key).await;
    assert_eq!(
        a.near_cache_stats().unwrap().hits,
        hits,
        "served from the cache"
    );
    // The sentinels still name the old master (they notice in seconds): it refuses to be
    // used as a master, so A answers "unavailable" instead of reading from a replica.
    let err = outcome.expect_err("read from a demoted master");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

/// With the `metrics` feature every counted figure of `near_cache_stats` is also a counter of
/// the `metrics` facade, `cloakroom_redis_near_cache_<field>_total`, with the same value.
#[cfg(feature = "metrics")]
#[tokio::test]
async fn every_near_cache_figure_is_a_metric() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // A's near-cache registers its counters when opened, with this thread's recorder.
    let guard = metrics::set_default_local_recorder(&recorder);
    let server = RedisServer::shared();
    let (a, b) = pair(server, "&cache_max_stale_ms=60000").await;
    drop(guard);
    let key = new_key();
    a.create(&key, &record("1")).await.unwrap();
    a.load(&key).await.unwrap();
    a.load(&key).await.unwrap();
    a.apply(&key, &set("2")).await.unwrap();
    b.apply(&key, &set("3")).await.unwrap();
    // B's write reaches A as an invalidation; then nothing changes the figures.
    let start = Instant::now();
    while a.near_cache_stats().unwrap().remote_invalidations == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "no invalidation");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stats = a.near_cache_stats().unwrap();
    let metrics: Vec<(String, u64)> = (snapshotter.snapshot().into_vec().into_iter())
        .filter_map(|(key, _, _, value)| match value {
            DebugValue::Counter(n) => Some((key.key().name().to_owned(), n)),
            _ => None,
        })
        .collect();
    // `NearCacheStats { hits: 1, misses: 2, ... }`, the gauges (`entries`, `capacity`) aside.
    let fields = |s: String| -> Vec<(String, u64)> {
        let inner = s.split_once('{').and_then(|(_, r)| r.strip_suffix('}'));
        (inner.unwrap().split(','))
            .map(|f| f.trim().split_once(": ").unwrap())
            .filter(|(name, _)| !["entries", "capacity"].contains(name))
            .map(|(name, v)| (name.to_owned(), v.parse().unwrap()))
            .collect()
    };
    let figures = fields(format!("{stats:?}"));
    assert_eq!(figures.len(), metrics.len(), "{metrics:?}");
    for (name, figure) in &figures {
        let metric = format!("cloakroom_redis_near_cache_{name}_total");
        let found = metrics.iter().find(|(n, _)| *n == metric);
        let (_, value) = found.unwrap_or_else(|| panic!("{metric} missing: {metrics:?}"));
        assert_eq!(value, figure, "{metric}");
    }
    assert!(
        stats.hits >= 1 && stats.remote_invalidations >= 1,
        "{stats:?}"
    );
}
