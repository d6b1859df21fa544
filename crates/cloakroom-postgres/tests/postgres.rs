//! What only the PostgreSQL store has: migrations shared by several instances, a schema
//! version, the database going away and coming back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloakroom_core::session::{SessionId, SessionKey, Timestamp};
use cloakroom_core::store::{Created, ErrorKind, Record, SessionStore};
use cloakroom_postgres::{PostgresStore, SCHEMA_VERSION, VERSION_TABLE};
use cloakroom_testkit::postgres_server::PostgresServer;

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A raw connection for set-up and inspection.
async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("a raw connection");
    tokio::spawn(conn);
    client
}

/// A fresh, empty database on the shared server; its URL.
async fn empty_database() -> String {
    let server = PostgresServer::shared();
    let name = unique("db");
    raw(&server.url())
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("creating a database");
    server.url_for(&name)
}

fn record() -> Record {
    let now = Timestamp::now();
    let mut r = Record::new(now, now.plus(Duration::from_secs(600)));
    r.data.insert("n".into(), "1".into());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_opening_one_empty_database_at_once_both_work() {
    let url = empty_database().await;
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresStore::open(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.unwrap().expect("every concurrent open succeeds"));
    }
    // Each migration ran once: one version row per version.
    let rows = raw(&url)
        .await
        .query(
            &format!("SELECT version FROM {VERSION_TABLE} ORDER BY version"),
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    // They share the table.
    let key = SessionId::generate().key();
    assert_eq!(
        stores[0].create(&key, &record()).await.unwrap(),
        Created::Done
    );
    assert!(stores[3].load(&key).await.unwrap().is_some());
    assert_eq!(
        stores[1].create(&key, &record()).await.unwrap(),
        Created::Collision
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_with_a_clear_error() {
    let url = empty_database().await;
    drop(PostgresStore::open(&url).await.unwrap());
    raw(&url)
        .await
        .execute(
            &format!(
                "INSERT INTO {VERSION_TABLE} (table_name, version) VALUES ('cloakroom_sessions', $1)"
            ),
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .unwrap();
    let err = PostgresStore::open(&url).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let text = err.to_string();
    assert!(text.contains("newer"), "{text}");
    assert!(
        text.contains(&format!("version {}", SCHEMA_VERSION + 1)),
        "{text}"
    );
    // Another table in the same database is still fine.
    PostgresStore::open(&format!("{url}?table=other"))
        .await
        .unwrap();
}

/// Version 3 made session keys 16 bytes: opening a version-2 table converts the keys of its
/// sessions, challenges and event log (whoever opens it), so plaintext sessions stay valid;
/// a session with sealed values (whose associated data was the old key) is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_table_gets_16_byte_keys_and_keeps_its_sessions() {
    let url = empty_database().await;
    drop(
        PostgresStore::open(&format!("{url}?events=100"))
            .await
            .unwrap(),
    );
    // The 32-byte key of versions 1 and 2 (the whole SHA-256 of the id) began with the
    // 16-byte key.
    let old = |k: &SessionKey| [&k.as_bytes()[..], &[0xa5; 16]].concat();
    let (plain, sealed, agent) = (
        SessionId::generate().key(),
        SessionId::generate().key(),
        SessionId::generate().key(),
    );
    let r = record();
    let (created, expires) = (r.meta.created_at.as_millis(), r.meta.expires_at.as_millis());
    let old_handle = URL_SAFE_NO_PAD.encode(old(&plain));
    let client = raw(&url).await;
    client
        .batch_execute(&format!(
            "DELETE FROM {VERSION_TABLE} WHERE (table_name, version) IN
                 (('cloakroom_sessions', 3), ('cloakroom_sessions_events', 2))"
        ))
        .await
        .unwrap();
    for (k, agent, data) in [
        (&plain, "test agent", r#"{"n": "1"}"#),
        (&sealed, "test agent", r#"{"n": "~2AAAA"}"#),
        (&agent, "~2AAAA", r#"{"n": "1"}"#),
    ] {
        client
            .execute(
                "INSERT INTO cloakroom_sessions (key, created_at, last_seen, expires_at, user_agent, data)
                 VALUES ($1, $2, $2, $3, $4, $5::text::jsonb)",
                &[&old(k), &created, &expires, &agent, &data],
            )
            .await
            .unwrap();
    }
    client
        .execute(
            "INSERT INTO cloakroom_sessions_dbsc (challenge, session, expires_at) VALUES ('c', $1, $2)",
            &[&old(&plain), &expires],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO cloakroom_sessions_events (seq, at, kind, session, previous)
             VALUES (1, $1, 'rotated', $2, $3)",
            &[&created, &old(&plain), &old_handle],
        )
        .await
        .unwrap();
    // Opened without the log: a log the table has is converted all the same.
    let store = PostgresStore::open(&url).await.unwrap();
    let loaded = store
        .load(&plain)
        .await
        .unwrap()
        .expect("the session is kept");
    assert_eq!(loaded.data["n"], "1");
    assert_eq!(store.load(&sealed).await.unwrap(), None);
    assert_eq!(store.load(&agent).await.unwrap(), None);
    let count: i64 = client
        .query_one("SELECT count(*) FROM cloakroom_sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
    let challenge: Vec<u8> = client
        .query_one("SELECT session FROM cloakroom_sessions_dbsc", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(challenge, plain.as_bytes());
    let row = client
        .query_one(
            "SELECT session, previous FROM cloakroom_sessions_events",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Vec<u8>>(0), plain.as_bytes());
    assert_eq!(SessionKey::from_handle(row.get(1)), Some(plain));
    let versions: Vec<(String, i32)> = client
        .query(
            &format!("SELECT table_name, version FROM {VERSION_TABLE}"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(versions.contains(&("cloakroom_sessions".into(), SCHEMA_VERSION)));
    assert!(versions.contains(&("cloakroom_sessions_events".into(), 2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_it_did_not_create_is_refused() {
    let url = empty_database().await;
    raw(&url)
        .await
        .batch_execute("CREATE TABLE cloakroom_sessions (id int)")
        .await
        .unwrap();
    let err = PostgresStore::open(&url).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("did not create"), "{err}");
}

/// The database goes away: operations fail within the timeout as Unavailable or Timeout;
/// it comes back on the same port: the same store works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_fails_fast_and_the_store_recovers() {
    // A server of its own: the shared one serves the other tests.
    let server = Arc::new(
        tokio::task::spawn_blocking(PostgresServer::start)
            .await
            .unwrap(),
    );
    let url = format!("{}?timeout_ms=2000&pool_size=4", server.url());
    let store = PostgresStore::open(&url).await.unwrap();
    let key = SessionId::generate().key();
    assert_eq!(store.create(&key, &record()).await.unwrap(), Created::Done);
    // Warm every pooled connection, so the outage hits connections that were fine.
    let loads: Vec<_> = (0..8)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move { s.load(&key).await })
        })
        .collect();
    for l in loads {
        assert!(l.await.unwrap().unwrap().is_some());
    }

    let s = Arc::clone(&server);
    tokio::task::spawn_blocking(move || s.stop()).await.unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(20), store.load(&key))
            .await
            .expect("a store operation hung while the database was down");
        let err = outcome.expect_err("the database is down");
        assert!(
            matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
            "{err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
        assert!(store.ping().await.is_err());
    }

    let s = Arc::clone(&server);
    tokio::task::spawn_blocking(move || s.restart())
        .await
        .unwrap();
    // The data survived the restart; the pool reconnects by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.load(&key).await {
            Ok(found) => {
                assert!(found.is_some(), "the session survived the restart");
                break;
            }
            Err(e) if Instant::now() > deadline => panic!("the store did not recover: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    store.ping().await.unwrap();
    let other = SessionId::generate().key();
    assert_eq!(
        store.create(&other, &record()).await.unwrap(),
        Created::Done
    );
}

/// A statement stuck behind a lock ends as `Timeout`: by the server's `statement_timeout`
/// (applied per connection from `?statement_timeout_ms=`), or by the store's own bound when
/// the server has none; the store works again once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_statement_times_out_and_the_store_goes_on() {
    let url = empty_database().await;
    let by_server =
        PostgresStore::open(&format!("{url}?statement_timeout_ms=300&timeout_ms=10000"))
            .await
            .unwrap();
    let by_client = PostgresStore::open(&format!("{url}?statement_timeout_ms=0&timeout_ms=500"))
        .await
        .unwrap();
    let key = SessionId::generate().key();
    assert_eq!(
        by_server.create(&key, &record()).await.unwrap(),
        Created::Done
    );

    let mut locker = raw(&url).await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE cloakroom_sessions IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    for (store, within) in [(&by_server, 8), (&by_client, 8)] {
        let started = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(20), store.load(&key))
            .await
            .expect("a blocked load hung")
            .expect_err("the table is locked");
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert!(started.elapsed() < Duration::from_secs(within), "{err}");
    }
    tx.rollback().await.unwrap();
    assert!(by_server.load(&key).await.unwrap().is_some());
    assert!(by_client.load(&key).await.unwrap().is_some());
}

/// The background task deletes expired rows (they were already invisible).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_task_purges_expired_rows() {
    let url = empty_database().await;
    let store = PostgresStore::builder()
        .purge_interval(Some(Duration::from_millis(200)))
        .open(&url)
        .await
        .unwrap();
    let now = Timestamp::now();
    let short = Record::new(now, now.plus(Duration::from_millis(100)));
    store
        .create(&SessionId::generate().key(), &short)
        .await
        .unwrap();
    store
        .create(&SessionId::generate().key(), &record())
        .await
        .unwrap();
    let client = raw(&url).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = client
            .query_one("SELECT count(*) FROM cloakroom_sessions", &[])
            .await
            .unwrap()
            .get(0);
        if n == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} rows left: no purge");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Unix socket (host = a directory, percent-encoded as libpq allows) works with the
/// default `sslmode=prefer`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_sockets_work() {
    let server = PostgresServer::shared();
    let dir = server
        .socket_dir()
        .display()
        .to_string()
        .replace('/', "%2F");
    let url = format!(
        "postgresql://postgres@{dir}:{}/postgres?table={}",
        server.port(),
        unique("unix")
    );
    let store = PostgresStore::open(&url).await.unwrap();
    let key = SessionId::generate().key();
    assert_eq!(store.create(&key, &record()).await.unwrap(), Created::Done);
    assert!(store.load(&key).await.unwrap().is_some());
}
