//! RedisStore beyond the conformance suite: round trips per operation, the key layout,
//! outages and recovery, Cluster distribution, configuration errors.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cloakroom_core::session::{SessionKey, Timestamp};
use cloakroom_core::store::{Applied, Created, Cursor, ErrorKind, Patch, Record, SessionStore};
use cloakroom_redis::RedisStore;
use cloakroom_testkit::redis_server::{RedisCluster, RedisServer, Resp};
use cloakroom_testkit::{new_key, unique_prefix};

fn record(user: Option<&str>, ttl: Duration) -> Record {
    let now = Timestamp::now();
    let mut r = Record::new(now, now.plus(ttl));
    r.data.insert("name".into(), "\"Ada\"".into());
    r.meta.user = user.map(str::to_owned);
    r.meta.user_agent = Some("test agent".into());
    r
}

const HOUR: Duration = Duration::from_secs(3600);

/// Runs `op` between `reset_stats` and `command_count` and returns the commands it sent.
async fn count<F: std::future::Future>(server: &RedisServer, op: F) -> (F::Output, Vec<String>) {
    server.reset_stats();
    let out = op.await;
    (out, server.commands_sent())
}

#[tokio::test]
async fn one_round_trip_per_operation() {
    let server = RedisServer::start();
    let store = RedisStore::open(&server.url()).await.expect("open");
    // Load the scripts first (a cold script costs EVALSHA + SCRIPT LOAD + EVALSHA once).
    let warm = new_key();
    store
        .create(&warm, &record(Some("warm"), HOUR))
        .await
        .unwrap();
    store
        .apply(
            &warm,
            &Patch::new(Timestamp::now(), Timestamp::now().plus(HOUR)),
        )
        .await
        .unwrap();
    store
        .touch(&warm, Timestamp::now(), Timestamp::now().plus(HOUR))
        .await
        .unwrap();
    store.delete(&warm).await.unwrap();
    store.delete_user("warm", None).await.unwrap();

    let key = new_key();
    let user_key = new_key();
    let now = Timestamp::now();
    let patch = Patch::new(now, now.plus(HOUR)).set("a", "1").remove("name");

    let (created, anon_create) = count(&server, store.create(&key, &record(None, HOUR))).await;
    assert_eq!(created.unwrap(), Created::Done);
    let (created, login_create) =
        count(&server, store.create(&user_key, &record(Some("ada"), HOUR))).await;
    assert_eq!(created.unwrap(), Created::Done);
    let (loaded, load) = count(&server, store.load(&key)).await;
    assert!(loaded.unwrap().is_some());
    let (applied, apply) = count(&server, store.apply(&key, &patch)).await;
    assert_eq!(applied.unwrap(), Applied::Done);
    let (touched, touch) = count(&server, store.touch(&key, now, now.plus(HOUR))).await;
    assert_eq!(touched.unwrap(), Applied::Done);
    let (missing, missing_apply) = count(&server, store.apply(&new_key(), &patch)).await;
    assert_eq!(missing.unwrap(), Applied::Missing);
    let (deleted, anon_delete) = count(&server, store.delete(&key)).await;
    assert!(deleted.unwrap());
    let (deleted, login_delete) = count(&server, store.delete(&user_key)).await;
    assert!(deleted.unwrap());
    let (pong, ping) = count(&server, store.ping()).await;
    pong.unwrap();

    println!(
        "commands: load {load:?}, create {anon_create:?}, create with user {login_create:?}, \
              apply {apply:?}, touch {touch:?}, apply on a missing key {missing_apply:?}, \
              delete {anon_delete:?}, delete with user {login_delete:?}, ping {ping:?}"
    );
    assert_eq!(load, ["hgetall"], "load");
    assert_eq!(anon_create, ["restore"], "create");
    assert_eq!(
        login_create,
        ["restore", "evalsha"],
        "create with a user (record + index)"
    );
    // A transaction (MULTI .. EXEC; the slow log shows MULTI and the commands EXEC ran).
    let transaction = ["multi", "hdel", "hset", "pexpireat", "pexpireat"];
    assert_eq!(apply, transaction, "apply");
    assert_eq!(
        touch,
        transaction[..1]
            .iter()
            .chain(&transaction[2..])
            .copied()
            .collect::<Vec<_>>(),
        "touch"
    );
    assert_eq!(missing_apply, transaction, "apply on a missing key");
    assert_eq!(anon_delete, ["evalsha"], "delete");
    assert_eq!(
        login_delete,
        ["evalsha", "srem"],
        "delete with a user (record + index)"
    );
    assert_eq!(ping, ["evalsha"], "ping (the permission check, see acl.rs)");
    assert_eq!(
        server.command_count(),
        1,
        "command_count agrees with commands_sent"
    );

    // After the scripts are flushed (as after a Redis restart) they are loaded once again.
    server.command(&["SCRIPT", "FLUSH"]).unwrap();
    let (deleted, cold) = count(&server, store.delete(&new_key())).await;
    assert!(!deleted.unwrap());
    assert_eq!(
        cold,
        ["evalsha", "script", "evalsha"],
        "delete with a flushed script cache"
    );
    let (_, warm) = count(
        &server,
        store.create(&new_key(), &record(Some("ada"), HOUR)),
    )
    .await;
    assert_eq!(
        warm.len(),
        4,
        "the user index loads its own script once: {warm:?}"
    );
    let (_, warm) = count(&server, store.delete(&new_key())).await;
    assert_eq!(warm, ["evalsha"]);
}

#[tokio::test]
async fn key_layout_and_expiry() {
    let server = RedisServer::shared();
    let store = common::open_fresh(server.url(), "layout").await;
    let prefix = store.prefix().to_owned();
    let key = new_key();
    let mut r = record(Some("grace"), HOUR);
    r.data.insert(
        "m:exp".into(),
        "\"a data field named like metadata\"".into(),
    );
    r.meta.remember = true;
    store.create(&key, &r).await.unwrap();

    // The prefix, `s:`, and the session key's 16 bytes, raw.
    let hash_key = [format!("{prefix}s:").as_bytes(), key.as_bytes()].concat();
    assert_eq!(store.session_key(&key), hash_key);
    assert_eq!(hash_key.len(), prefix.len() + 2 + 16);
    let Ok(Resp::Array(Some(flat))) = server.command_bytes(&[b"HGETALL", &hash_key]) else {
        panic!("no hash at {hash_key:?}");
    };
    let fields: HashSet<String> = flat
        .chunks(2)
        .map(|c| c[0].as_str().unwrap().to_owned())
        .collect();
    // Last seen is the creation time, so there is no `s` field.
    let expected: HashSet<String> = ["d:name", "d:m:exp", "c", "e", "u", "a", "r"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(fields, expected);
    let Ok(Resp::Int(expire_at)) = server.command_bytes(&[b"PEXPIRETIME", &hash_key]) else {
        panic!("no PEXPIRETIME");
    };
    assert_eq!(
        expire_at,
        r.meta.expires_at.as_millis(),
        "PEXPIREAT is the record's expiry"
    );
    let user_set = format!("{prefix}u:grace");
    assert_eq!(store.user_key("grace"), user_set);
    assert_eq!(
        server.command(&["SMEMBERS", &user_set]).unwrap(),
        Resp::Array(Some(vec![Resp::Bulk(Some(key.to_handle().into_bytes()))]))
    );
    assert_eq!(store.load(&key).await.unwrap(), Some(r));

    // A touch moves the Redis expiry too.
    let later = Timestamp::now().plus(2 * HOUR);
    store.touch(&key, Timestamp::now(), later).await.unwrap();
    assert_eq!(
        server.command_bytes(&[b"PEXPIRETIME", &hash_key]).unwrap(),
        Resp::Int(later.as_millis())
    );
    assert_eq!(store.purge_expired().await.unwrap(), 0);
}

/// A hash under `<prefix>s:` whose tail is not a 16-byte key (here a 32-byte one) names no
/// session: neither a load of the key it starts with nor a scan finds it, and a create of
/// that key does not collide with it.
#[tokio::test]
async fn a_hash_under_a_32_byte_key_is_no_session() {
    let server = RedisServer::shared();
    let store = common::open_fresh(server.url(), "long").await;
    let prefix = store.prefix().to_owned();
    let key = new_key();
    let long = [
        format!("{prefix}s:").as_bytes(),
        key.as_bytes(),
        &[0xa5; 16],
    ]
    .concat();
    let at = Timestamp::now().plus(HOUR).as_millis().to_string();
    let now = Timestamp::now().as_millis().to_string();
    for cmd in [
        vec![
            b"HSET".as_slice(),
            &long,
            b"c",
            now.as_bytes(),
            b"e",
            at.as_bytes(),
            b"d:n",
            b"1",
        ],
        vec![b"PEXPIREAT".as_slice(), &long, at.as_bytes()],
    ] {
        server.command_bytes(&cmd).expect("redis command");
    }
    assert_eq!(store.load(&key).await.unwrap(), None);
    assert!(
        store
            .scan(Cursor::start(), 100)
            .await
            .unwrap()
            .sessions
            .is_empty()
    );
    assert_eq!(
        store.create(&key, &record(None, HOUR)).await.unwrap(),
        Created::Done
    );
    let page = store.scan(Cursor::start(), 100).await.unwrap();
    let found: Vec<SessionKey> = page.sessions.iter().map(|s| s.key).collect();
    assert_eq!(found, [key]);
}

/// The hash at `key`, field by field.
fn hash(server: &RedisServer, key: &[u8]) -> std::collections::BTreeMap<String, String> {
    let Ok(Resp::Array(Some(flat))) = server.command_bytes(&[b"HGETALL", key]) else {
        panic!("no hash reply for {key:?}");
    };
    flat.chunks(2)
        .map(|c| {
            let text = |r: &Resp| r.as_str().unwrap().to_owned();
            (text(&c[0]), text(&c[1]))
        })
        .collect()
}

fn field_names(server: &RedisServer, key: &[u8]) -> Vec<String> {
    hash(server, key).into_keys().collect()
}

fn pexpiretime(server: &RedisServer, key: &[u8]) -> i64 {
    match server.command_bytes(&[b"PEXPIRETIME", key]) {
        Ok(Resp::Int(t)) => t,
        other => panic!("PEXPIRETIME: {other:?}"),
    }
}

/// A new anonymous one-field session is `e`, `c` and its data field, nothing else (last seen
/// is the creation time, remember me is off, no user, no user agent), kept as a listpack.
/// Patches and touches add `s` (and `r`), and every field reads back.
#[tokio::test]
async fn new_records_are_compact() {
    let server = RedisServer::shared();
    let store = common::open_fresh(server.url(), "compact").await;
    let key = new_key();
    let rkey = store.session_key(&key);
    let now = Timestamp::now();
    let mut r = Record::new(now, now.plus(HOUR));
    r.data.insert("counter".into(), "1".into());
    assert_eq!(store.create(&key, &r).await.unwrap(), Created::Done);
    let h = hash(server, &rkey);
    assert_eq!(field_names(server, &rkey), ["c", "d:counter", "e"]);
    assert_eq!(h["e"], now.plus(HOUR).as_millis().to_string());
    assert_eq!(h["c"], now.as_millis().to_string());
    assert_eq!(pexpiretime(server, &rkey), now.plus(HOUR).as_millis());
    assert_eq!(
        server
            .command_bytes(&[b"OBJECT", b"ENCODING", &rkey])
            .unwrap(),
        Resp::Bulk(Some(b"listpack".to_vec()))
    );
    assert_eq!(store.load(&key).await.unwrap(), Some(r.clone()));

    let later = Timestamp::from_millis(now.as_millis() + 5);
    let mut patch = Patch::new(later, later.plus(2 * HOUR)).set("counter", "2");
    patch.remember = Some(true);
    assert_eq!(store.apply(&key, &patch).await.unwrap(), Applied::Done);
    r.apply(&patch);
    assert_eq!(
        field_names(server, &rkey),
        ["c", "d:counter", "e", "r", "s"]
    );
    assert_eq!(store.load(&key).await.unwrap(), Some(r.clone()));
    patch.remember = Some(false);
    assert_eq!(store.apply(&key, &patch).await.unwrap(), Applied::Done);
    r.apply(&patch);
    assert_eq!(store.load(&key).await.unwrap(), Some(r.clone()));
    let seen = Timestamp::from_millis(now.as_millis() + 10);
    assert_eq!(
        store.touch(&key, seen, seen.plus(HOUR)).await.unwrap(),
        Applied::Done
    );
    r.meta.last_seen = seen;
    r.meta.expires_at = seen.plus(HOUR);
    assert_eq!(store.load(&key).await.unwrap(), Some(r));
    assert_eq!(pexpiretime(server, &rkey), seen.plus(HOUR).as_millis());
}

/// A record whose `e` passed by the application's clock while Redis still holds the key (the
/// clocks of the two hosts disagree) is gone for a load and for a blind write (the script
/// compares `e` with the application's clock), and a create replaces it. A patch or touch,
/// which follows a load, goes by Redis's clock (see `transaction.rs`): Redis still holds the
/// key, so it lands and moves the expiry.
#[tokio::test]
async fn a_record_expired_by_the_apps_clock_only() {
    let server = RedisServer::shared();
    let store = common::open_fresh(server.url(), "clock").await;
    let key = new_key();
    let rkey = store.session_key(&key);
    let now = Timestamp::now();
    let mut r = Record::new(now, now.plus(HOUR));
    r.data.insert("counter".into(), "1".into());
    assert_eq!(store.create(&key, &r).await.unwrap(), Created::Done);
    let past = (now.as_millis() - 1_000).to_string();
    let expire_by_the_apps_clock = || {
        assert_eq!(
            server
                .command_bytes(&[b"HSET", &rkey, b"e", past.as_bytes()])
                .unwrap(),
            Resp::Int(0)
        );
    };
    expire_by_the_apps_clock();

    assert_eq!(store.load(&key).await.unwrap(), None);
    let mut blind = Patch::new(now, now.plus(HOUR)).set("counter", "2");
    blind.max_idle = Some(2 * HOUR);
    assert_eq!(store.apply(&key, &blind).await.unwrap(), Applied::Missing);
    assert_eq!(hash(server, &rkey)["d:counter"], "1", "nothing written");

    let patch = Patch::new(now, now.plus(2 * HOUR)).set("counter", "3");
    assert_eq!(store.apply(&key, &patch).await.unwrap(), Applied::Done);
    assert_eq!(hash(server, &rkey)["d:counter"], "3");
    assert_eq!(pexpiretime(server, &rkey), now.plus(2 * HOUR).as_millis());
    expire_by_the_apps_clock();
    let later = now.plus(3 * HOUR);
    assert_eq!(store.touch(&key, now, later).await.unwrap(), Applied::Done);
    assert_eq!(hash(server, &rkey)["e"], later.as_millis().to_string());
    assert_eq!(pexpiretime(server, &rkey), later.as_millis());

    expire_by_the_apps_clock();
    let mut fresh = Record::new(now, now.plus(HOUR));
    fresh.data.insert("counter".into(), "9".into());
    assert_eq!(store.create(&key, &fresh).await.unwrap(), Created::Done);
    assert_eq!(store.load(&key).await.unwrap(), Some(fresh));
}

/// Creates and patches with more fields than one Lua `unpack` holds.
#[tokio::test]
async fn big_creates_and_patches() {
    let server = RedisServer::shared();
    let store = common::open_fresh(server.url(), "big").await;
    let now = Timestamp::now();
    let mut patch = Patch::new(now, now.plus(HOUR));
    for i in 0..1_500 {
        patch = patch.set(format!("f{i}"), i.to_string());
    }
    patch.remember = Some(true);
    let key = new_key();
    let mut record = Record::new(now, now.plus(HOUR));
    for i in 0..1_200 {
        record.data.insert(format!("g{i}"), "0".into());
    }
    assert_eq!(store.create(&key, &record).await.unwrap(), Created::Done);
    assert_eq!(store.load(&key).await.unwrap(), Some(record.clone()));
    assert_eq!(store.apply(&key, &patch).await.unwrap(), Applied::Done);
    record.apply(&patch);
    assert_eq!(store.load(&key).await.unwrap(), Some(record));
}

/// Logins keep a user's index from growing without bound: dead entries are pruned.
#[tokio::test]
async fn user_index_is_pruned_on_login() {
    let server = RedisServer::shared();
    let store = common::open_fresh(server.url(), "prune").await;
    let prefix = store.prefix().to_owned();
    let user_set = format!("{prefix}u:busy");
    for _ in 0..40 {
        let r = record(Some("busy"), Duration::from_millis(200));
        store.create(&new_key(), &r).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        server.command(&["SCARD", &user_set]).unwrap(),
        Resp::Int(40)
    );
    let mut live = Vec::new();
    for _ in 0..8 {
        let key = new_key();
        store
            .create(&key, &record(Some("busy"), HOUR))
            .await
            .unwrap();
        live.push(key);
    }
    // The 48th entry triggered a pruning: only live sessions are left.
    assert_eq!(server.command(&["SCARD", &user_set]).unwrap(), Resp::Int(8));
    assert_eq!(store.sessions_of("busy").await.unwrap().len(), 8);
}

/// Redis goes away and comes back: operations fail fast with Unavailable or Timeout, and
/// work again after the restart without reopening the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_redis_restart() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(500);
    let store = RedisStore::builder(server.url())
        .command_timeout(timeout)
        .build()
        .await
        .expect("open");
    let key = new_key();
    store
        .create(&key, &record(Some("ada"), HOUR))
        .await
        .unwrap();

    server.stop();
    let now = Timestamp::now();
    for round in 0..3 {
        let results = [
            ("load", timed(store.load(&key)).await),
            (
                "create",
                timed(store.create(&new_key(), &record(None, HOUR))).await,
            ),
            (
                "apply",
                timed(store.apply(&key, &Patch::new(now, now.plus(HOUR)))).await,
            ),
            ("touch", timed(store.touch(&key, now, now.plus(HOUR))).await),
            ("delete", timed(store.delete(&new_key())).await),
            ("sessions_of", timed(store.sessions_of("ada")).await),
            ("delete_user", timed(store.delete_user("ada", None)).await),
            ("scan", timed(store.scan(Cursor::start(), 10)).await),
            ("ping", timed(store.ping()).await),
        ];
        for (op, (result, took)) in results {
            let err = result.expect_err(op);
            assert!(
                matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
                "{op} while Redis is down: {err}"
            );
            assert!(
                took < Duration::from_secs(3),
                "{op} took {took:?} while Redis is down"
            );
            if round == 0 {
                println!("{op} while down: {:?} after {took:?}: {err}", err.kind());
            }
        }
    }

    server.restart();
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(10);
    let mut failures = 0;
    loop {
        match store.ping().await {
            Ok(()) => break,
            Err(e) => {
                failures += 1;
                assert!(Instant::now() < deadline, "no recovery within 10 s: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let recovered = restarted.elapsed();
    println!("recovered {recovered:?} after the restart ({failures} failed pings before)");
    assert!(
        recovered < Duration::from_secs(5),
        "recovery took {recovered:?}"
    );

    // The restarted server is empty (no persistence); everything works on it.
    assert_eq!(store.load(&key).await.unwrap(), None);
    let fresh = new_key();
    assert_eq!(
        store
            .create(&fresh, &record(Some("ada"), HOUR))
            .await
            .unwrap(),
        Created::Done
    );
    assert!(store.load(&fresh).await.unwrap().is_some());
    assert_eq!(store.sessions_of("ada").await.unwrap().len(), 1);
}

/// A restart between two requests costs no failed request: the broken connection is
/// replaced and the request sent again.
#[tokio::test]
async fn a_restart_between_requests_is_invisible() {
    let server = RedisServer::start();
    let store = RedisStore::open(&server.url()).await.expect("open");
    let key = new_key();
    store.create(&key, &record(None, HOUR)).await.unwrap();
    server.restart();
    let started = Instant::now();
    assert_eq!(
        store.load(&key).await.unwrap(),
        None,
        "the restarted server is empty"
    );
    println!("first request after a restart took {:?}", started.elapsed());
    assert_eq!(
        store.create(&key, &record(None, HOUR)).await.unwrap(),
        Created::Done
    );
}

/// A Redis that accepts commands but does not answer (here: `CLIENT PAUSE`) makes
/// operations fail with Timeout once the command timeout has passed.
#[tokio::test]
async fn a_stalled_redis_times_out() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(300);
    let store = RedisStore::builder(server.url())
        .command_timeout(timeout)
        .build()
        .await
        .expect("open");
    let key = new_key();
    store.create(&key, &record(None, HOUR)).await.unwrap();
    server.command(&["CLIENT", "PAUSE", "1500", "ALL"]).unwrap();
    let (result, took) = timed(store.load(&key)).await;
    let err = result.expect_err("load from a paused server");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(took >= timeout && took < timeout * 3, "took {took:?}");
    let (result, _) = timed(store.touch(&key, Timestamp::now(), Timestamp::now().plus(HOUR))).await;
    assert_eq!(result.expect_err("touch").kind(), ErrorKind::Timeout);
    // Once Redis answers again, so does the store.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.load(&key).await.is_err() {
        assert!(Instant::now() < deadline, "no recovery after the pause");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store.load(&key).await.unwrap().is_some());
}

/// Runs an operation, keeping only whether it failed (and how) and how long it took.
async fn timed<T>(
    op: impl std::future::Future<Output = Result<T, cloakroom_core::store::Error>>,
) -> (Result<(), cloakroom_core::store::Error>, Duration) {
    let started = Instant::now();
    let out = op.await.map(drop);
    (out, started.elapsed())
}

#[tokio::test]
async fn open_fails_clearly() {
    // Nobody listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let err = RedisStore::builder(format!("redis://:hunter2@127.0.0.1:{port}/"))
        .command_timeout(Duration::from_millis(500))
        .build()
        .await
        .expect_err("nothing listens");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "open took {:?}",
        started.elapsed()
    );
    assert!(std::error::Error::source(&err).is_some(), "keeps the cause");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("hunter2"), "the password leaked: {text}");
    assert!(text.contains(&port.to_string()), "names the server: {text}");

    for bad in [
        "http://localhost",
        // Unknown options (a misspelt `ca=`) and TLS options on a plain URL are refused.
        "rediss://localhost?cafile=/etc/ca.pem",
        "redis://localhost?ca=/etc/ca.pem",
        "redis+cluster://",
        "nonsense",
    ] {
        let err = RedisStore::open(bad).await.expect_err(bad);
        assert_eq!(err.kind(), ErrorKind::Config, "{bad}: {err}");
    }
    let err = RedisStore::builder("redis://127.0.0.1:1")
        .command_timeout(Duration::ZERO)
        .build()
        .await
        .expect_err("zero timeout");
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[tokio::test]
async fn url_options_configure_the_store() {
    let server = RedisServer::shared();
    let prefix = unique_prefix("url");
    let url = format!(
        "{}?prefix={prefix}&timeout_ms=750&connections=2",
        server.url()
    );
    let store = RedisStore::open(&url).await.expect("open");
    assert_eq!(store.prefix(), prefix);
    assert_eq!(store.command_timeout(), Duration::from_millis(750));
    assert!(format!("{store:?}").contains("connections: 2"));
    // The builder's own settings win over the URL's.
    let store = RedisStore::builder(url)
        .prefix("other:")
        .build()
        .await
        .unwrap();
    assert_eq!(store.prefix(), "other:");
    assert_eq!(store.command_timeout(), Duration::from_millis(750));
}

#[tokio::test]
async fn debug_output_hides_secrets() {
    let server = RedisServer::shared();
    let url = server.url().replace("redis://", "redis://default:hunter2@");
    // The test server has no password: AUTH with one fails, so look at the builder.
    let builder = RedisStore::builder(url).prefix("p:");
    assert!(!format!("{builder:?}").contains("hunter2"), "{builder:?}");
    let store = common::open_fresh_with(server.url(), "debug", |b| b.connections(2)).await;
    let key = new_key();
    let mut r = record(Some("someone"), HOUR);
    r.data.insert("secret".into(), "\"s3cr3t-value\"".into());
    store.create(&key, &r).await.unwrap();
    let shown = format!("{store:?} {:?}", store.load(&key).await.unwrap());
    assert!(!shown.contains("s3cr3t-value"), "{shown}");
    assert!(shown.contains("connections: 2"), "{shown}");
}

#[tokio::test]
async fn several_connections_share_the_work() {
    let server = RedisServer::shared();
    let store = common::open_fresh_with(server.url(), "pool", |b| b.connections(3)).await;
    let keys: Vec<SessionKey> = (0..30).map(|_| new_key()).collect();
    let tasks: Vec<_> = keys
        .iter()
        .map(|key| {
            let (store, key) = (store.clone(), *key);
            tokio::spawn(async move { store.create(&key, &record(Some("pooled"), HOUR)).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), Created::Done);
    }
    assert_eq!(store.sessions_of("pooled").await.unwrap().len(), 30);
    assert_eq!(
        store.delete_user("pooled", Some(&keys[0])).await.unwrap(),
        29
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_spreads_sessions_and_lists_them_all() {
    let cluster = RedisCluster::shared();
    let store = common::open_fresh(cluster.url(), "spread").await;
    let prefix = store.prefix().to_owned();
    assert!(store.is_cluster());
    let mut mine = HashSet::new();
    for i in 0..60 {
        let user = (i % 2 == 0).then_some("spread-user");
        // A user's sessions in the user's shard, as the engine makes them.
        let placed = cloakroom_core::store::placed(
            store.placement(),
            user,
            cloakroom_core::session::SessionId::generate,
            cloakroom_core::session::SessionId::key,
        );
        let key = placed.key();
        store.create(&key, &record(user, HOUR)).await.unwrap();
        mine.insert(key);
    }
    // Every master holds some of them.
    let pattern = format!("{prefix}s:*");
    for node in cluster.nodes() {
        let Ok(Resp::Array(Some(keys))) = node.command(&["KEYS", &pattern]) else {
            panic!("KEYS failed on node {}", node.port());
        };
        assert!(
            !keys.is_empty(),
            "node {} holds none of the sessions",
            node.port()
        );
    }
    assert_eq!(store.sessions_of("spread-user").await.unwrap().len(), 30);

    // Scanning with small pages crosses every node and lists each session once.
    let mut seen = HashSet::new();
    let mut cursor = Cursor::start();
    let mut pages = 0;
    loop {
        let page = store.scan(cursor, 7).await.unwrap();
        assert!(page.sessions.len() <= 7);
        for info in page.sessions {
            assert!(seen.insert(info.key), "listed twice");
        }
        pages += 1;
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    assert_eq!(seen, mine, "scan lists exactly this store's sessions");

    // A user's record under a key outside the user's shard is refused (the engine never
    // makes one).
    let misplaced = std::iter::repeat_with(new_key)
        .find(|k| !store.placement().unwrap().fits(k, Some("spread-user")))
        .unwrap();
    let err = (store
        .create(&misplaced, &record(Some("spread-user"), HOUR))
        .await)
        .expect_err("a misplaced key");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(pages >= 9, "{pages} pages of at most 7 for 60 sessions");

    let keep = *mine.iter().next().unwrap();
    let kept_is_users = store
        .load(&keep)
        .await
        .unwrap()
        .unwrap()
        .meta
        .user
        .is_some();
    let deleted = store.delete_user("spread-user", Some(&keep)).await.unwrap();
    assert_eq!(deleted, if kept_is_users { 29 } else { 30 });
    store.ping().await.unwrap();
}

#[tokio::test]
async fn passwords_and_databases_from_the_url() {
    let server = RedisServer::start();
    let base = format!("redis://127.0.0.1:{}", server.port());
    // Database 3 and database 0 are separate.
    let db3 = RedisStore::open(&format!("{base}/3")).await.expect("db 3");
    let db0 = RedisStore::open(&format!("{base}/0")).await.expect("db 0");
    let key = new_key();
    assert_eq!(
        db3.create(&key, &record(None, HOUR)).await.unwrap(),
        Created::Done
    );
    assert!(db3.load(&key).await.unwrap().is_some());
    assert!(db0.load(&key).await.unwrap().is_none(), "not in db 0");
    let db3_again = RedisStore::open(&format!("{base}/3")).await.unwrap();
    assert!(db3_again.load(&key).await.unwrap().is_some());

    // With a password set, the right one (with database selection) works; others are
    // configuration errors that say so, never outages.
    assert!(matches!(
        server.command(&["CONFIG", "SET", "requirepass", "s3cret"]),
        Ok(Resp::Simple(_))
    ));
    let authed = RedisStore::open(&format!("redis://:s3cret@127.0.0.1:{}/3", server.port()))
        .await
        .expect("right password");
    assert!(authed.load(&key).await.unwrap().is_some());
    for url in [
        format!("redis://:wrong@127.0.0.1:{}/3", server.port()),
        format!("redis://:wrong@127.0.0.1:{}/0", server.port()),
        format!("redis://127.0.0.1:{}/3", server.port()),
    ] {
        let err = RedisStore::open(&url).await.expect_err(&url);
        assert_ne!(err.kind(), ErrorKind::Unavailable, "{url}: {err}");
        assert!(
            !format!("{err:?}").contains("wrong"),
            "password leaked: {err:?}"
        );
    }
    // Connections made before the password was set stay authenticated (Redis's rule).
    assert!(db0.load(&key).await.unwrap().is_none());
}

/// A reconnection that Redis refuses (here: a password was set and the connections killed)
/// fails the operations, but is not remembered: once Redis accepts the connection again, the
/// store works without being reopened.
#[tokio::test]
async fn a_refused_reconnection_is_not_remembered() {
    let server = RedisServer::start();
    let store = RedisStore::builder(server.url())
        .command_timeout(Duration::from_millis(500))
        .build()
        .await
        .expect("open");
    let key = new_key();
    store.create(&key, &record(None, HOUR)).await.unwrap();
    server
        .command(&["CONFIG", "SET", "requirepass", "now-needed"])
        .unwrap();
    as_admin(&server, "CLIENT KILL TYPE normal");
    let err = store.load(&key).await.expect_err("no password");
    println!("while Redis refuses us: {:?}: {err}", err.kind());
    assert!(!format!("{err:?}").contains("now-needed"), "{err:?}");
    as_admin(&server, "CONFIG SET requirepass \"\"");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match store.load(&key).await {
            Ok(found) => {
                assert!(found.is_some());
                break;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "no recovery: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Runs an inline command authenticated with the password `now-needed` and waits for both
/// replies.
fn as_admin(server: &RedisServer, command: &str) {
    use std::io::{BufRead, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    write!(conn, "AUTH now-needed\r\n{command}\r\n").unwrap();
    let mut replies = std::io::BufReader::new(conn);
    for _ in 0..2 {
        let mut line = String::new();
        replies.read_line(&mut line).unwrap();
        assert!(!line.starts_with('-'), "{command}: {line}");
    }
}

/// `max_connections` (an alias of `connections`) is the number of multiplexed connections,
/// used round-robin.
#[tokio::test]
async fn max_connections_opens_that_many_connections() {
    let server = RedisServer::start();
    let store = RedisStore::open(&format!("{}?max_connections=3", server.url()))
        .await
        .expect("open");
    assert!(format!("{store:?}").contains("connections: 3"), "{store:?}");
    for _ in 0..6 {
        store.ping().await.unwrap();
    }
    let Ok(Resp::Bulk(Some(list))) = server.command(&["CLIENT", "LIST"]) else {
        panic!("CLIENT LIST");
    };
    // Three connections of the store, plus the one asking.
    let clients = String::from_utf8_lossy(&list).lines().count();
    assert_eq!(clients, 4, "{}", String::from_utf8_lossy(&list));
}

/// An event at now of `kind` for `key`.
fn event(
    kind: cloakroom_core::session::EventKind,
    key: &SessionKey,
) -> cloakroom_core::session::Event {
    cloakroom_core::session::Event {
        kind,
        session: *key,
        user: None,
        at: Timestamp::now(),
    }
}

/// Loads the logged scripts (a cold script costs EVALSHA + SCRIPT LOAD + EVALSHA once):
/// four events.
async fn warm_logged_scripts(
    log: &dyn cloakroom_core::store::EventLog,
    limit: &cloakroom_core::store::Limit,
) {
    use cloakroom_core::session::{EndReason, EventKind};
    let warm = new_key();
    let warm_record = record(Some("warm"), HOUR);
    log.create_logged(&warm, &warm_record, None, &event(EventKind::Created, &warm))
        .await
        .unwrap();
    let warm2 = new_key();
    let created = event(EventKind::Created, &warm2);
    log.create_logged(&warm2, &warm_record, Some(limit), &created)
        .await
        .unwrap();
    log.delete_logged(&warm, &event(EventKind::Ended(EndReason::Logout), &warm))
        .await
        .unwrap();
    log.delete_user_logged("warm", None, EndReason::Revoked, Timestamp::now())
        .await
        .unwrap();
}

/// With the event log off (the default), nothing writes the stream.
#[tokio::test]
async fn without_the_event_log_nothing_is_logged() {
    let server = RedisServer::start();
    let plain = common::open_fresh(server.url(), "nolog").await;
    assert!(plain.event_log().is_none());
    server.reset_stats();
    let key = new_key();
    plain
        .create(&key, &record(Some("bob"), HOUR))
        .await
        .unwrap();
    plain.delete(&key).await.unwrap();
    plain.delete_user("bob", None).await.unwrap();
    let stats = server.commandstats();
    assert!(!stats.contains_key("xadd"), "{stats:?}");
}

/// A store opened without `events=N` on a prefix whose log another opener turned on keeps
/// the log too (with that opener's cap), so an admin tool or a second server opened with a
/// plain URL cannot end sessions unlogged; a prefix without a log stays without one.
#[tokio::test]
async fn the_log_is_kept_by_every_opener_of_its_prefix() {
    use cloakroom_core::session::{EndReason, Event, EventKind, Timestamp};
    use cloakroom_core::store::{Position, end_session};

    let server = RedisServer::start();
    let prefix = unique_prefix("sticky");
    let open = |events: Option<usize>| {
        let builder = RedisStore::builder(server.url()).prefix(prefix.clone());
        let builder = match events {
            Some(n) => builder.event_log(n),
            None => builder,
        };
        async move { builder.build().await.expect("open") }
    };
    assert!(
        open(None).await.event_log().is_none(),
        "no log before one is asked for"
    );
    let logged = open(Some(1000)).await;
    let plain = open(None).await;
    assert!(
        plain.event_log().is_some(),
        "the prefix has a log: a plain opener keeps it"
    );

    let key = new_key();
    let event = Event {
        kind: EventKind::Created,
        session: key,
        user: Some("bob".into()),
        at: Timestamp::now(),
    };
    let log = logged.event_log().unwrap();
    log.create_logged(&key, &record(Some("bob"), HOUR), None, &event)
        .await
        .unwrap();
    assert!(
        end_session(&plain, &key, EndReason::Revoked, None)
            .await
            .unwrap()
    );
    let batch = log.read(&Position::start(), 10).await.unwrap();
    let kinds: Vec<_> = batch.events.iter().map(|e| e.event.kind.clone()).collect();
    assert_eq!(
        kinds,
        vec![EventKind::Created, EventKind::Ended(EndReason::Revoked)],
        "the plain opener's revocation is logged"
    );
}

/// With the event log on (`events=N`), each logged write is one script (the `XADD` inside
/// it): a create, a login (record, index and event together), a login under the limit, a
/// user's revocation, a logout (its index entry leaves in the same script).
#[tokio::test]
async fn logged_writes_are_one_script_each() {
    use cloakroom_core::session::{EndReason, EventKind};
    use cloakroom_core::store::{Admitted, Limit, LimitPolicy, Position};

    let server = RedisServer::start();
    let store = common::open_fresh_with(server.url(), "logcount", |b| b.event_log(1000)).await;
    let log = store.event_log().expect("a store with a log");
    let limit = Limit {
        max: 2,
        policy: LimitPolicy::EndLeastRecentlySeen,
        replacing: None,
    };
    warm_logged_scripts(log, &limit).await;

    let (anon, login, limited) = (new_key(), new_key(), new_key());
    let created = EventKind::Created;
    let (done, anon_create) = count(
        &server,
        log.create_logged(
            &anon,
            &record(None, HOUR),
            None,
            &event(created.clone(), &anon),
        ),
    )
    .await;
    assert_eq!(done.unwrap(), Admitted::Done { ended: Vec::new() });
    let ada = record(Some("ada"), HOUR);
    let (_, login_create) = count(
        &server,
        log.create_logged(&login, &ada, None, &event(created.clone(), &login)),
    )
    .await;
    let (_, limited_create) = count(
        &server,
        log.create_logged(
            &limited,
            &ada,
            Some(&limit),
            &event(created.clone(), &limited),
        ),
    )
    .await;
    let logout = EventKind::Ended(EndReason::Logout);
    let (deleted, logout_delete) = count(
        &server,
        log.delete_logged(&login, &event(logout.clone(), &login)),
    )
    .await;
    assert!(deleted.unwrap());
    let (nothing, missing_delete) = count(
        &server,
        log.delete_logged(&new_key(), &event(logout, &anon)),
    )
    .await;
    assert!(!nothing.unwrap());
    let (revoked, revoke_all) = count(
        &server,
        log.delete_user_logged("ada", None, EndReason::Revoked, Timestamp::now()),
    )
    .await;
    assert_eq!(revoked.unwrap(), 1);
    let (batch, read) = count(&server, log.read(&Position::start(), 100)).await;
    let batch = batch.unwrap();
    println!(
        "logged commands: create {anon_create:?}, login {login_create:?}, login under the \
         limit {limited_create:?}, logout {logout_delete:?}, delete of nothing \
         {missing_delete:?}, revoke all {revoke_all:?}, read {read:?}"
    );
    assert_eq!(anon_create, ["evalsha"], "create");
    assert_eq!(
        login_create,
        ["evalsha"],
        "login: record, index and event in one script"
    );
    assert_eq!(limited_create, ["evalsha"], "login under the limit");
    assert_eq!(
        logout_delete,
        ["evalsha"],
        "logout: the delete, its index entry and the event in one script"
    );
    assert_eq!(missing_delete, ["evalsha"], "a delete of nothing");
    assert_eq!(revoke_all, ["evalsha"], "a user's revocation, one script");
    assert_eq!(read, ["xinfo", "xrange"], "a read, one pipeline");
    // warm x4 (created, created, logout, revoked), then anon, login, limited, logout of
    // login, revoked limited: the delete of nothing logged nothing.
    assert_eq!(batch.events.len(), 9, "{:?}", batch.events);
    assert!(!batch.gap);
}

/// The commands clients sent since `reset_stats` (the slow log), by name.
fn sent_commands(server: &RedisServer) -> Vec<String> {
    let Ok(Resp::Array(Some(log))) = server.command(&["SLOWLOG", "GET", "1000000"]) else {
        panic!("SLOWLOG GET");
    };
    let mut names = Vec::new();
    for entry in &log {
        let Resp::Array(Some(fields)) = entry else {
            continue;
        };
        let name = match fields.get(3) {
            Some(Resp::Array(Some(args))) => args
                .first()
                .and_then(Resp::as_str)
                .unwrap_or("")
                .to_ascii_lowercase(),
            _ => continue,
        };
        let addr = fields.get(4).and_then(Resp::as_str).unwrap_or("");
        // A script's own commands have no client address; the statistics are ours.
        let own = ["info", "config", "slowlog"].contains(&name.as_str());
        if !(addr.is_empty() || addr.starts_with('?') || own) {
            names.push(name);
        }
    }
    names
}

/// `INFO commandstats` microseconds of the commands named `names`.
fn commandstats_usec(server: &RedisServer, names: &[String]) -> f64 {
    let Ok(Resp::Bulk(Some(text))) = server.command(&["INFO", "commandstats"]) else {
        panic!("INFO commandstats");
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            names.iter().any(|n| n == name).then_some(())?;
            rest.split(',')
                .find_map(|kv| kv.strip_prefix("usec="))?
                .parse::<f64>()
                .ok()
        })
        .sum()
}

/// One write of the measurement: `op` for `user` (whose login is `key`, whose second login
/// under the limit is `extra`), logged when the store keeps a log.
async fn measured_write(
    store: &RedisStore,
    op: &str,
    user: &str,
    (key, extra): (&SessionKey, &SessionKey),
    limit: &cloakroom_core::store::Limit,
) {
    use cloakroom_core::session::{EndReason, EventKind};
    let created = |key: &SessionKey| event(EventKind::Created, key);
    let log = store.event_log();
    match (op, log) {
        ("create", Some(log)) => {
            let key = new_key();
            let r = record(None, HOUR);
            log.create_logged(&key, &r, None, &created(&key))
                .await
                .map(drop)
        }
        ("create", None) => store
            .create(&new_key(), &record(None, HOUR))
            .await
            .map(drop),
        ("login", Some(log)) => {
            let r = record(Some(user), HOUR);
            log.create_logged(key, &r, None, &created(key))
                .await
                .map(drop)
        }
        ("login", None) => store.create(key, &record(Some(user), HOUR)).await.map(drop),
        ("login (limit 3)", Some(log)) => {
            let r = record(Some(user), HOUR);
            log.create_logged(extra, &r, Some(limit), &created(extra))
                .await
                .map(drop)
        }
        ("login (limit 3)", None) => {
            let r = record(Some(user), HOUR);
            store.create_limited(extra, &r, limit).await.map(drop)
        }
        ("logout", Some(log)) => {
            let logout = event(EventKind::Ended(EndReason::Logout), key);
            log.delete_logged(key, &logout).await.map(drop)
        }
        ("logout", None) => store.delete(key).await.map(drop),
        (_, Some(log)) => {
            let now = Timestamp::now();
            log.delete_user_logged(user, None, EndReason::Revoked, now)
                .await
                .map(drop)
        }
        (_, None) => store.delete_user(user, None).await.map(drop),
    }
    .unwrap();
}

/// What a logged write costs Redis against an unlogged one: the commands the client sent
/// per write (a first round, counted from the slow log), then in a second round with the
/// slow log off, the microseconds Redis spent on those commands (`INFO commandstats`
/// `usec` of the commands the client sends: a script's covers the commands it runs) and
/// the client's wall-clock time, per write. Not a timed test; run by hand with `--ignored
/// --nocapture`, numbers in BENCHMARKS.md.
#[tokio::test]
#[ignore = "a measurement, run by hand"]
async fn measure_the_event_log_cost() {
    use cloakroom_core::store::{Limit, LimitPolicy};

    const N: usize = 2000;
    const OPS: [&str; 5] = [
        "create",
        "login",
        "login (limit 3)",
        "logout",
        "revoke all (1 session)",
    ];
    let server = RedisServer::start();
    let limit = Limit {
        max: 3,
        policy: LimitPolicy::EndLeastRecentlySeen,
        replacing: None,
    };
    let mut counted = std::collections::HashMap::new();
    for (timed, logged) in [(false, false), (false, true), (true, false), (true, true)] {
        let store = common::open_fresh_with(server.url(), "measure", |b| match logged {
            true => b.event_log(100_000),
            false => b,
        })
        .await;
        let users: Vec<String> = (0..N).map(|i| format!("user{i}")).collect();
        let keys: Vec<(SessionKey, SessionKey)> = (0..N).map(|_| (new_key(), new_key())).collect();
        let mut rows = Vec::new();
        for op in OPS {
            server.reset_stats();
            if timed {
                let off = ["CONFIG", "SET", "slowlog-log-slower-than", "-1"];
                server.command(&off).unwrap();
            }
            let started = Instant::now();
            for (user, (key, extra)) in users.iter().zip(&keys) {
                measured_write(&store, op, user, (key, extra), &limit).await;
            }
            let wall = started.elapsed();
            if !timed {
                counted.insert((logged, op), sent_commands(&server));
                continue;
            }
            let names = &counted[&(logged, op)];
            let mut distinct = names.clone();
            distinct.sort();
            distinct.dedup();
            let xadds = server.commandstats().get("xadd").copied().unwrap_or(0);
            let xadd = commandstats_usec(&server, &["xadd".to_owned()]) / (xadds.max(1) as f64);
            rows.push(format!(
                "{op}: {:.2} commands/write ({}), Redis {:.1} usec/write, client {:.1} \
                 usec/write; {xadds} XADD at {xadd:.1} usec each",
                names.len() as f64 / N as f64,
                distinct.join(" "),
                commandstats_usec(&server, &distinct) / N as f64,
                wall.as_secs_f64() * 1e6 / N as f64,
            ));
        }
        if timed {
            println!("logged={logged}\n  {}", rows.join("\n  "));
        }
    }
}

/// Redis does not roll a script back when a command in it fails: each `XADD` runs before the
/// write it describes, so a log that cannot be written (here its key holds a string) leaves
/// the change undone: no session without its event.
#[tokio::test]
async fn a_failed_xadd_leaves_the_change_undone() {
    use cloakroom_core::session::{EndReason, EventKind};
    use cloakroom_core::store::{Limit, LimitPolicy};

    let server = RedisServer::start();
    let store = common::open_fresh_with(server.url(), "clobbered", |b| b.event_log(1000)).await;
    let prefix = store.prefix().to_owned();
    let log = store.event_log().expect("a log");
    let (live, anon, login, limited) = (new_key(), new_key(), new_key(), new_key());
    let ada = record(Some("ada"), HOUR);
    let created = |key: &SessionKey| event(EventKind::Created, key);
    log.create_logged(&live, &ada, None, &created(&live))
        .await
        .unwrap();
    let stream = format!("{prefix}events");
    server.command(&["DEL", &stream]).unwrap();
    server.command(&["SET", &stream, "not a stream"]).unwrap();

    let anon_record = record(None, HOUR);
    let made = created(&anon);
    let err = log.create_logged(&anon, &anon_record, None, &made);
    assert!(err.await.is_err(), "an anonymous create");
    assert!(
        log.create_logged(&login, &ada, None, &created(&login))
            .await
            .is_err()
    );
    let limit = Limit {
        max: 1,
        policy: LimitPolicy::EndLeastRecentlySeen,
        replacing: None,
    };
    let made = created(&limited);
    let err = log.create_logged(&limited, &ada, Some(&limit), &made);
    assert!(err.await.is_err(), "a login under the limit");
    let logout = event(EventKind::Ended(EndReason::Logout), &live);
    assert!(log.delete_logged(&live, &logout).await.is_err());
    let revoke = log.delete_user_logged("ada", None, EndReason::Revoked, Timestamp::now());
    assert!(revoke.await.is_err());

    for key in [&anon, &login, &limited] {
        assert!(store.load(key).await.unwrap().is_none(), "not created");
    }
    let kept = store.load(&live).await.unwrap();
    assert!(
        kept.is_some_and(|r| r.data.contains_key("name")),
        "not ended"
    );
    let infos = store.sessions_of("ada").await.unwrap();
    assert_eq!(infos.len(), 1, "only the first login is a session of ada");
}

/// A follower's `read_wait` blocks in `XREAD BLOCK` on a connection of its own: it wakes as
/// soon as an event is appended (not at the end of its wait), the store's other commands are
/// not held up meanwhile, and with nothing appended it returns empty after its wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_wakes_when_an_event_is_appended() {
    use cloakroom_core::session::EventKind;
    use cloakroom_core::store::Position;

    let server = RedisServer::start();
    let store = common::open_fresh_with(server.url(), "follow", |b| b.event_log(1000)).await;
    let log = store.event_log().expect("a log");

    // Nothing logged: an empty batch after the wait, at the same position.
    let started = Instant::now();
    let batch = log
        .read_wait(&Position::start(), 10, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(batch.events.is_empty() && !batch.gap);
    assert_eq!(batch.next, Position::start());
    assert!(started.elapsed() >= Duration::from_millis(250), "it waited");

    let follower = {
        let store = store.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let log = store.event_log().expect("a log");
            let batch = log
                .read_wait(&Position::start(), 10, Duration::from_secs(20))
                .await
                .unwrap();
            (batch, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The shared connection is not stalled by the block.
    let key = new_key();
    let during = Instant::now();
    store.load(&key).await.unwrap();
    assert!(
        during.elapsed() < Duration::from_secs(1),
        "a load during a block"
    );
    let created = event(EventKind::Created, &key);
    log.create_logged(&key, &record(Some("ada"), HOUR), None, &created)
        .await
        .unwrap();
    let (batch, waited) = follower.await.unwrap();
    assert_eq!(batch.events.len(), 1);
    assert_eq!(batch.events[0].event.session, key);
    assert!(
        waited < Duration::from_secs(5),
        "woke when the event came, not after the wait: {waited:?}"
    );
    // From that position: nothing more.
    let after = log
        .read_wait(&batch.next, 10, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(after.events.is_empty() && !after.gap);
    // A position that is no stream id is a configuration error.
    let err = log
        .read(&Position::new("yesterday"), 10)
        .await
        .expect_err("not a stream id");
    assert_eq!(err.kind(), ErrorKind::Config);
}

/// A login under the concurrent-session limit on a Cluster is one script on one node (the
/// user's index, the sessions it names and the new one share a slot), with the event log
/// off and on; so is the logged revocation of a user's sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_login_under_the_limit_is_one_script() {
    use cloakroom_core::session::{EndReason, Event, EventKind, SessionId};
    use cloakroom_core::store::{Admitted, Limit, LimitPolicy};

    let cluster = RedisCluster::start();
    // The commands clients sent, over every node (the slow log, as `count` reads it).
    let stats = || {
        let mut sent: Vec<String> = cluster
            .nodes()
            .iter()
            .flat_map(RedisServer::commands_sent)
            .collect();
        sent.sort();
        sent
    };
    let reset = || cluster.nodes().iter().for_each(RedisServer::reset_stats);
    let limit = Limit {
        max: 2,
        policy: LimitPolicy::EndLeastRecentlySeen,
        replacing: None,
    };
    for events in [None, Some(1000)] {
        let store = common::open_fresh_with(cluster.url(), "rt", |b| match events {
            Some(n) => b.event_log(n),
            None => b,
        })
        .await;
        let key_of = |user: &str| {
            let placement = store.placement();
            cloakroom_core::store::placed(
                placement,
                Some(user),
                SessionId::generate,
                SessionId::key,
            )
            .key()
        };
        let login = |user: &'static str| {
            let (store, key) = (store.clone(), key_of(user));
            async move {
                let record = record(Some(user), HOUR);
                match store.event_log() {
                    Some(log) => {
                        let event = Event {
                            kind: EventKind::Created,
                            session: key,
                            user: Some(user.into()),
                            at: Timestamp::now(),
                        };
                        log.create_logged(&key, &record, Some(&limit), &event).await
                    }
                    None => store.create_limited(&key, &record, &limit).await,
                }
            }
        };
        // The scripts loaded on every node first.
        for _ in 0..8 {
            login("warm").await.unwrap();
        }
        for n in 0..3 {
            reset();
            let admitted = login("ada").await.unwrap();
            let ended = usize::from(n == 2);
            assert!(
                matches!(&admitted, Admitted::Done { ended: e } if e.len() == ended),
                "{admitted:?}"
            );
            let sent = stats();
            println!("cluster login {n} (log {events:?}): {sent:?}");
            assert_eq!(
                sent,
                ["evalsha"],
                "one script per login under the limit (log {events:?})"
            );
        }
        assert_eq!(store.sessions_of("ada").await.unwrap().len(), 2);
        if let Some(log) = store.event_log() {
            // The script loaded on the user's node first (a user in ada's shard).
            let warm = (0..)
                .map(|i| format!("warm-{i}"))
                .find(|u| {
                    let p = store.placement().unwrap();
                    p.shard_of_user(u) == p.shard_of_user("ada")
                })
                .unwrap();
            (log.delete_user_logged(&warm, None, EndReason::Revoked, Timestamp::now())
                .await)
                .unwrap();
            reset();
            let revoked = log
                .delete_user_logged("ada", None, EndReason::Revoked, Timestamp::now())
                .await
                .unwrap();
            assert_eq!(revoked, 2);
            assert_eq!(stats(), ["evalsha"], "one revocation script");
        }
    }
}
