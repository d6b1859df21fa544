//! What only the SQLite store has: a file that outlives the process, a schema version, other
//! processes on the same file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cloakroom_core::session::{SessionId, SessionKey, Timestamp};
use cloakroom_core::store::{Applied, Created, ErrorKind, Patch, Record, SessionStore};
use cloakroom_sqlite::{SCHEMA_VERSION, SqliteStore};
use rusqlite::Connection;

fn record(ttl: Duration) -> Record {
    let now = Timestamp::now();
    let mut record = Record::new(now, now.plus(ttl));
    record.data.insert("name".into(), "\"Ada\"".into());
    record.meta.user = Some("ada".into());
    record.meta.user_agent = Some("test agent".into());
    record
}

fn key() -> SessionKey {
    SessionId::generate().key()
}

/// A 32-byte session key as schema versions 1 to 3 stored it (the whole SHA-256 of the id),
/// for the new `key`: the new key is its first 16 bytes.
fn old_key(key: &SessionKey) -> Vec<u8> {
    [&key.as_bytes()[..], &[0xa5; 16]].concat()
}

fn raw(path: &Path) -> Connection {
    Connection::open(path).expect("a raw connection")
}

fn count_rows(path: &Path) -> i64 {
    raw(path)
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .expect("counting rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_the_file_keeps_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let k = key();
    let mut expected = record(Duration::from_secs(600));
    {
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.create(&k, &expected).await.unwrap(), Created::Done);
        let patch = Patch::new(Timestamp::now(), expected.meta.expires_at).set("n", "1");
        assert_eq!(store.apply(&k, &patch).await.unwrap(), Applied::Done);
        expected.apply(&patch);
    }
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.load(&k).await.unwrap(), Some(expected));
    assert_eq!(store.sessions_of("ada").await.unwrap().len(), 1);
    assert_eq!(store.path(), Some(path.as_path()));
}

#[tokio::test]
async fn a_newer_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    SqliteStore::open(&path).await.unwrap();
    raw(&path)
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    let text = err.to_string();
    let newer = format!("schema version {}", SCHEMA_VERSION + 1);
    assert!(text.contains(&newer), "{text}");
    assert!(
        text.contains("sessions.db"),
        "the message names the file: {text}"
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_database_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, "this is not a database, just text\n".repeat(200)).unwrap();
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    let text = err.to_string();
    assert!(text.contains("not a SQLite database"), "{text}");
    assert!(text.contains("garbage.db"), "{text}");
    assert!(std::error::Error::source(&err).is_some());
    // The file is left as it was.
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("this is not")
    );
}

#[tokio::test]
async fn another_programs_tables_are_not_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    raw(&path)
        .execute_batch("CREATE TABLE sessions (id INTEGER PRIMARY KEY, blob TEXT);")
        .unwrap();
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");

    // Version 1 without our table: someone else's use of user_version.
    let other = dir.path().join("other.db");
    let conn = raw(&other);
    conn.execute_batch("CREATE TABLE users (name TEXT); PRAGMA user_version = 1;")
        .unwrap();
    drop(conn);
    let err = SqliteStore::open(&other).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

#[tokio::test]
async fn other_tables_in_the_same_file_are_fine() {
    // The demo keeps its accounts in the same file by default.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.db");
    raw(&path)
        .execute_batch("CREATE TABLE users (name TEXT PRIMARY KEY, hash TEXT);")
        .unwrap();
    let store = SqliteStore::open(&path).await.unwrap();
    store.ping().await.unwrap();
    let conn = raw(&path);
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // users, and ours: sessions and challenges.
    assert_eq!(tables, 3);
}

#[tokio::test]
async fn the_schema_is_what_the_design_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let _store = SqliteStore::open(&path).await.unwrap();
    let conn = raw(&path);
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");

    let plan = |sql: &str| -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows.join("; ")
    };
    let by_user = plan("SELECT * FROM sessions WHERE user = 'a' AND expires_at > 0");
    assert!(by_user.contains("sessions_by_user"), "{by_user}");
    // No index on the expiry (every write moves it); the purge walks rowid ranges.
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'sessions'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        !indexes.iter().any(|name| name.contains("expiry")),
        "{indexes:?}"
    );
    let purge = plan("DELETE FROM sessions WHERE rowid > 1 AND rowid <= 1000 AND expires_at <= 0");
    assert!(purge.contains("INTEGER PRIMARY KEY"), "{purge}");
    let scan =
        plan("SELECT * FROM sessions WHERE key > x'00' AND expires_at > 0 ORDER BY key LIMIT 7");
    assert!(
        scan.contains("INDEX") && !scan.contains("TEMP B-TREE"),
        "{scan}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_see_each_others_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = Arc::new(SqliteStore::open(&path).await.unwrap());
    let b = Arc::new(SqliteStore::open(&path).await.unwrap());
    let k = key();
    let r = record(Duration::from_secs(600));
    assert_eq!(a.create(&k, &r).await.unwrap(), Created::Done);
    assert_eq!(b.create(&k, &r).await.unwrap(), Created::Collision);

    // Both write different fields at once: every write lands (the busy timeout queues the
    // two stores' writers).
    let mut handles = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        handles.push(tokio::spawn(async move {
            let p = Patch::new(
                Timestamp::now(),
                Timestamp::now().plus(Duration::from_secs(600)),
            )
            .set(format!("f{i}"), i.to_string());
            store.apply(&k, &p).await.unwrap()
        }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap(), Applied::Done);
    }
    assert_eq!(a.load(&k).await.unwrap().unwrap().data.len(), 41);
    assert!(b.delete(&k).await.unwrap());
    assert_eq!(a.load(&k).await.unwrap(), None);
}

#[tokio::test]
async fn a_lock_held_past_the_busy_timeout_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.db");
    let store = SqliteStore::builder()
        .busy_timeout(Duration::from_millis(100))
        .open(&path)
        .await
        .unwrap();
    let k = key();
    store
        .create(&k, &record(Duration::from_secs(600)))
        .await
        .unwrap();

    let conn = raw(&path);
    conn.execute_batch("BEGIN IMMEDIATE").unwrap();
    let p = Patch::new(
        Timestamp::now(),
        Timestamp::now().plus(Duration::from_secs(600)),
    )
    .set("x", "1");
    let err = store.apply(&k, &p).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    // Reads go on under WAL.
    assert!(store.load(&k).await.unwrap().is_some());
    conn.execute_batch("ROLLBACK").unwrap();
    assert_eq!(store.apply(&k, &p).await.unwrap(), Applied::Done);
}

#[tokio::test]
async fn undecodable_data_is_corrupt_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let k = key();
    store
        .create(&k, &record(Duration::from_secs(600)))
        .await
        .unwrap();
    raw(&path)
        .execute("UPDATE sessions SET data = 'not json'", [])
        .unwrap();
    assert_eq!(store.load(&k).await.unwrap_err().kind(), ErrorKind::Corrupt);
    assert_eq!(
        store.sessions_of("ada").await.unwrap_err().kind(),
        ErrorKind::Corrupt
    );
    let p = Patch::new(
        Timestamp::now(),
        Timestamp::now().plus(Duration::from_secs(600)),
    )
    .set("x", "1");
    assert_eq!(
        store.apply(&k, &p).await.unwrap_err().kind(),
        ErrorKind::Corrupt
    );

    raw(&path)
        .execute("UPDATE sessions SET data = '{\"a\":1}'", [])
        .unwrap();
    assert_eq!(store.load(&k).await.unwrap_err().kind(), ErrorKind::Corrupt);
    // Deleting a damaged session still works, and the store goes on.
    assert!(store.delete(&k).await.unwrap());
    store.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_task_purges_expired_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::builder()
        .purge_interval(Some(Duration::from_millis(50)))
        .open(&path)
        .await
        .unwrap();
    let live = key();
    store
        .create(&live, &record(Duration::from_secs(600)))
        .await
        .unwrap();
    for _ in 0..3 {
        store
            .create(&key(), &record(Duration::from_millis(50)))
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while count_rows(&path) > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "expired rows were not purged"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(store.load(&live).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_task_stops_with_the_store() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let store = SqliteStore::builder()
        .purge_interval(Some(Duration::from_millis(10)))
        .open_in_memory()
        .await
        .unwrap();
    assert_eq!(metrics.num_alive_tasks(), before + 1, "the purge task runs");
    drop(store);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while metrics.num_alive_tasks() > before {
        assert!(
            std::time::Instant::now() < deadline,
            "the purge task outlived the store"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let quiet = SqliteStore::builder()
        .purge_interval(None)
        .open_in_memory()
        .await
        .unwrap();
    assert_eq!(
        metrics.num_alive_tasks(),
        before,
        "no purge task when turned off"
    );
    drop(quiet);
}

#[tokio::test]
async fn purge_deletes_large_backlogs_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::builder()
        .purge_interval(None)
        .open(&path)
        .await
        .unwrap();
    let mut conn = raw(&path);
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO sessions (key, created_at, last_seen, expires_at, data)
                 VALUES (?1, 0, 0, ?2, '{}')",
            )
            .unwrap();
        // Live rows among the expired ones: the purge's rowid walk goes past them.
        for i in 0..2500 {
            let expires = if i % 7 == 3 { i64::MAX } else { 1 };
            insert
                .execute(rusqlite::params![key().as_bytes().to_vec(), expires])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    assert_eq!(store.purge_expired().await.unwrap(), 2143);
    assert_eq!(count_rows(&path), 357);
    assert_eq!(store.purge_expired().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_operations_give_their_connection_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::builder()
        .pool_size(1)
        .open(&path)
        .await
        .unwrap();
    let k = key();
    store
        .create(&k, &record(Duration::from_secs(600)))
        .await
        .unwrap();
    for _ in 0..20 {
        // A caller that times out at once (the session layer's store timeout).
        let _ = tokio::time::timeout(Duration::from_micros(1), store.load(&k)).await;
        let p = Patch::new(
            Timestamp::now(),
            Timestamp::now().plus(Duration::from_secs(600)),
        )
        .set("x", "1");
        let _ = tokio::time::timeout(Duration::from_micros(1), store.apply(&k, &p)).await;
    }
    let loaded = tokio::time::timeout(Duration::from_secs(5), store.load(&k))
        .await
        .expect("the single connection came back")
        .unwrap();
    assert!(loaded.is_some());
}

#[tokio::test]
async fn memory_paths_and_bad_paths() {
    let store = SqliteStore::open(":memory:").await.unwrap();
    assert_eq!(store.path(), None);
    let k = key();
    store
        .create(&k, &record(Duration::from_secs(600)))
        .await
        .unwrap();
    assert!(store.load(&k).await.unwrap().is_some());

    assert_eq!(
        SqliteStore::open("").await.unwrap_err().kind(),
        ErrorKind::Config
    );
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteStore::open(dir.path().join("no/such/dir/s.db"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("no/such/dir"), "{err}");
}

#[tokio::test]
async fn scan_rejects_a_foreign_cursor() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let err = store
        .scan(cloakroom_core::store::Cursor::new("3:not-a-handle"), 10)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[test]
fn debug_names_the_file_and_settings_only() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::builder()
            .pool_size(3)
            .open(dir.path().join("s.db"))
            .await
            .unwrap();
        let k = key();
        let mut r = record(Duration::from_secs(60));
        r.data.insert("secret".into(), "\"hunter2\"".into());
        store.create(&k, &r).await.unwrap();
        let text = format!("{store:?}");
        assert!(
            text.contains("s.db") && text.contains("pool_size: 3"),
            "{text}"
        );
        assert!(!text.contains("hunter2"));
    });
}

/// The schema before group commit: the same table with an index on `expires_at`.
const SCHEMA_V1: &str = "
CREATE TABLE sessions (
    key         BLOB    NOT NULL PRIMARY KEY,
    user        TEXT,
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    user_agent  TEXT,
    remember    INTEGER NOT NULL DEFAULT 0,
    data        TEXT    NOT NULL DEFAULT '{}'
);
CREATE INDEX sessions_by_user ON sessions (user) WHERE user IS NOT NULL;
CREATE INDEX sessions_by_expiry ON sessions (expires_at);
PRAGMA user_version = 1;
";

#[tokio::test]
async fn a_version_1_database_is_migrated_and_keeps_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.db");
    let k = key();
    let r = record(Duration::from_secs(600));
    {
        let conn = raw(&path);
        conn.execute_batch(SCHEMA_V1).unwrap();
        conn.execute(
            "INSERT INTO sessions (key, user, created_at, last_seen, expires_at, data)
             VALUES (?1, 'ada', ?2, ?2, ?3, '{\"name\":\"\\\"Ada\\\"\"}')",
            rusqlite::params![
                old_key(&k),
                r.meta.created_at.as_millis(),
                r.meta.expires_at.as_millis()
            ],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let loaded = store
        .load(&k)
        .await
        .unwrap()
        .expect("the v1 session is kept");
    assert_eq!(loaded.data.get("name").map(String::as_str), Some("\"Ada\""));
    let conn = raw(&path);
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let expiry_index: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'sessions_by_expiry'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(expiry_index, 0, "the migration drops the expiry index");
    // Writes and the purge work on the migrated file; reopening is a no-op.
    let p = Patch::new(Timestamp::now(), r.meta.expires_at).set("n", "1");
    assert_eq!(store.apply(&k, &p).await.unwrap(), Applied::Done);
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    drop(store);
    let again = SqliteStore::open(&path).await.unwrap();
    assert_eq!(again.load(&k).await.unwrap().unwrap().data.len(), 2);
}

/// Version 4 made session keys 16 bytes: opening a version-3 file converts the keys of its
/// sessions, challenges and event log, so plaintext sessions stay valid; a session with
/// sealed values (whose associated data was the old key) is deleted.
#[tokio::test]
async fn a_version_3_database_gets_16_byte_keys_and_keeps_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.db");
    drop(
        SqliteStore::builder()
            .event_log(100)
            .open(&path)
            .await
            .unwrap(),
    );
    let (plain, sealed, agent) = (key(), key(), key());
    let r = record(Duration::from_secs(600));
    let (created, expires) = (r.meta.created_at.as_millis(), r.meta.expires_at.as_millis());
    let old_handle = URL_SAFE_NO_PAD.encode(old_key(&plain));
    assert_eq!(old_handle.len(), 43);
    {
        let conn = raw(&path);
        let insert = |k: &SessionKey, agent: &str, data: &str| {
            conn.execute(
                "INSERT INTO sessions (key, user, created_at, last_seen, expires_at, user_agent, data)
                 VALUES (?1, 'ada', ?2, ?2, ?3, ?4, ?5)",
                rusqlite::params![old_key(k), created, expires, agent, data],
            )
            .unwrap();
        };
        insert(&plain, "test agent", r#"{"name":"\"Ada\""}"#);
        insert(&sealed, "test agent", r#"{"name":"~2AAAA"}"#);
        insert(&agent, "~2AAAA", r#"{"name":"\"Ada\""}"#);
        conn.execute(
            "INSERT INTO challenges (challenge, session, expires_at) VALUES ('c', ?1, ?2)",
            rusqlite::params![old_key(&plain), expires],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO events (at, kind, session, previous, user) VALUES (?1, 'rotated', ?2, ?3, 'ada')",
            rusqlite::params![created, old_key(&plain), old_handle],
        )
        .unwrap();
        conn.pragma_update(None, "user_version", 3).unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let loaded = store
        .load(&plain)
        .await
        .unwrap()
        .expect("the session is kept");
    assert_eq!(loaded.data["name"], "\"Ada\"");
    assert_eq!(store.load(&sealed).await.unwrap(), None);
    assert_eq!(store.load(&agent).await.unwrap(), None);
    assert_eq!(count_rows(&path), 1);
    let conn = raw(&path);
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let challenge: Vec<u8> = conn
        .query_row("SELECT session FROM challenges", [], |r| r.get(0))
        .unwrap();
    assert_eq!(challenge, plain.as_bytes());
    let (session, previous): (Vec<u8>, String) = conn
        .query_row("SELECT session, previous FROM events", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(session, plain.as_bytes());
    assert_eq!(SessionKey::from_handle(&previous), Some(plain));
    // Writes work on the converted file; reopening is a no-op.
    let p = Patch::new(Timestamp::now(), r.meta.expires_at).set("n", "1");
    assert_eq!(store.apply(&plain, &p).await.unwrap(), Applied::Done);
    drop(store);
    let again = SqliteStore::open(&path).await.unwrap();
    assert_eq!(again.load(&plain).await.unwrap().unwrap().data.len(), 2);
}

/// Many writers on one store at once, every kind of write: none is lost, none lands twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_writers_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    let sessions: Vec<SessionKey> = (0..8).map(|_| key()).collect();
    for k in &sessions {
        let created = store.create(k, &record(Duration::from_secs(600))).await;
        assert_eq!(created.unwrap(), Created::Done);
    }
    // 64 tasks x 25 writes: each sets its own field on one of 8 shared sessions (different
    // fields of one session in the same batch), creates and deletes a session of its own.
    let mut tasks = Vec::new();
    for t in 0..64_usize {
        let store = Arc::clone(&store);
        let k = sessions[t % sessions.len()];
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let now = Timestamp::now();
                let p = Patch::new(now, now.plus(Duration::from_secs(600)))
                    .set(format!("t{t}"), i.to_string());
                assert_eq!(store.apply(&k, &p).await.unwrap(), Applied::Done);
                if i % 5 == 0 {
                    let own = key();
                    let r = record(Duration::from_secs(600));
                    assert_eq!(store.create(&own, &r).await.unwrap(), Created::Done);
                    assert_eq!(
                        store.touch(&own, now, r.meta.expires_at).await.unwrap(),
                        Applied::Done
                    );
                    assert!(store.delete(&own).await.unwrap());
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for (s, k) in sessions.iter().enumerate() {
        let data = store.load(k).await.unwrap().unwrap().data;
        for t in (s..64).step_by(sessions.len()) {
            assert_eq!(
                data.get(&format!("t{t}")).map(String::as_str),
                Some("24"),
                "t{t}"
            );
        }
        assert_eq!(data.len(), 1 + 64 / sessions.len());
    }
    assert_eq!(count_rows(&path), sessions.len() as i64);
}
