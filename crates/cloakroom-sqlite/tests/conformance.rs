//! The store conformance suite on SQLite: a temporary database file per check, and the
//! in-memory database (a single connection).

use std::sync::Arc;

use cloakroom_core::store::SessionStore;
use cloakroom_sqlite::SqliteStore;

/// A store on a fresh file in a temporary directory that lives as long as the check.
async fn temp_file_store() -> (Arc<dyn SessionStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path().join("sessions.db"))
        .await
        .expect("opening a new database file");
    (Arc::new(store), dir)
}

cloakroom_testkit::conformance_tests!(temp_file_store());

mod in_memory {
    use super::*;

    cloakroom_testkit::conformance_tests!(async {
        Arc::new(
            SqliteStore::open_in_memory()
                .await
                .expect("an in-memory database"),
        )
    });
}

cloakroom_testkit::sealed_engine_tests!(temp_file_store());

/// A dump of the database: the file and its write-ahead log, as a thief would copy them.
#[tokio::test]
async fn a_sealed_marker_is_not_in_the_database_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::open(&path).await.expect("a new database file");
    let files = [path.clone(), dir.path().join("sessions.db-wal")];
    cloakroom_testkit::sealed::check_sealed_marker_not_in_dump(Arc::new(store), |_| async {
        let read = |p: &std::path::PathBuf| std::fs::read(p).unwrap_or_default();
        files.iter().flat_map(read).collect()
    })
    .await;
}

/// A store on a fresh file keeping an event log of about `cap` events.
async fn logged_file_store(cap: usize) -> (Arc<dyn SessionStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::builder()
        .event_log(cap as u64)
        .open(dir.path().join("sessions.db"))
        .await
        .expect("opening a new database file with an event log");
    (Arc::new(store), dir)
}

cloakroom_testkit::event_log_tests!(logged_file_store);

mod in_memory_with_log {
    use super::*;

    cloakroom_testkit::event_log_tests!(|cap: usize| async move {
        Arc::new(
            SqliteStore::builder()
                .event_log(cap as u64)
                .open_in_memory()
                .await
                .expect("an in-memory database with an event log"),
        ) as Arc<dyn SessionStore>
    });
}

/// What only the SQLite event log has to show: it lives in the file (reopened, by a process
/// that did not ask for it too), and a change whose event cannot be written does not happen.
mod event_log_sqlite {
    use std::time::Duration;

    use cloakroom_core::session::{EndReason, Event, EventKind, SessionId, SessionKey, Timestamp};
    use cloakroom_core::store::{ErrorKind, Position, Record};

    use super::*;

    fn record(user: &str) -> Record {
        let now = Timestamp::now();
        let mut r = Record::new(now, now.plus(Duration::from_secs(600)));
        r.meta.user = Some(user.to_owned());
        r
    }

    fn event(kind: EventKind, key: SessionKey) -> Event {
        Event {
            kind,
            session: key,
            user: None,
            at: Timestamp::now(),
        }
    }

    async fn open(path: &std::path::Path, events: Option<u64>) -> SqliteStore {
        let mut builder = SqliteStore::builder().purge_interval(None);
        if let Some(n) = events {
            builder = builder.event_log(n);
        }
        builder.open(path).await.expect("opening the file")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_survives_reopening_and_stays_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let plain = open(&path, None).await;
        assert!(plain.event_log().is_none(), "off by default");
        drop(plain);
        let (a, b) = (SessionId::generate().key(), SessionId::generate().key());
        {
            let store = open(&path, Some(3)).await;
            let log = store.event_log().expect("a log");
            log.create_logged(&a, &record("ada"), None, &event(EventKind::Created, a))
                .await
                .unwrap();
        }
        // Reopened without asking for a log: the file has one, so it is kept (3 events).
        let store = open(&path, None).await;
        let log = store.event_log().expect("the file's log is kept on");
        let rotated = EventKind::Rotated { previous: a };
        log.create_logged(&b, &record("ada"), None, &event(rotated.clone(), b))
            .await
            .unwrap();
        let batch = log.read(&Position::start(), 10).await.unwrap();
        let got: Vec<_> = batch
            .events
            .iter()
            .map(|e| (e.event.kind.clone(), e.event.session))
            .collect();
        assert_eq!(got, vec![(EventKind::Created, a), (rotated, b)]);
        assert_eq!(batch.next.as_str(), "2");
        // Its retention (3) came from the file: five more, a purge, and the first are gone.
        for _ in 0..5 {
            let k = SessionId::generate().key();
            log.create_logged(&k, &record("ada"), None, &event(EventKind::Created, k))
                .await
                .unwrap();
        }
        store.purge_expired().await.unwrap();
        let batch = log.read(&Position::start(), 10).await.unwrap();
        assert!(batch.gap);
        assert_eq!(batch.events.len(), 3);
        let err = log.read(&Position::new("nope"), 10).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    /// An event that cannot be written (a trigger refuses it) fails the change with it: the
    /// session is still there and nothing is logged; once the event can be written, it is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_whose_event_fails_does_not_happen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = open(&path, Some(100)).await;
        let log = store.event_log().expect("a log");
        let (key, other) = (SessionId::generate().key(), SessionId::generate().key());
        for k in [key, other] {
            log.create_logged(&k, &record("bob"), None, &event(EventKind::Created, k))
                .await
                .unwrap();
        }
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.kind = 'revoked'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
        let logout = event(EventKind::Ended(EndReason::Logout), key);
        let revoked = log.delete_user_logged("bob", None, EndReason::Revoked, Timestamp::now());
        assert!(revoked.await.is_err());
        assert_eq!(
            store.sessions_of("bob").await.unwrap().len(),
            2,
            "nothing deleted"
        );
        let batch = log.read(&Position::start(), 100).await.unwrap();
        assert_eq!(batch.events.len(), 2, "only the creations are logged");
        // The same batch's other writes are not affected: a logout is.
        assert!(log.delete_logged(&key, &logout).await.unwrap());
        raw.execute_batch("DROP TRIGGER refuse").unwrap();
        let revoked = log.delete_user_logged("bob", None, EndReason::Revoked, Timestamp::now());
        assert_eq!(revoked.await.unwrap(), 1);
        let batch = log.read(&batch.next, 100).await.unwrap();
        let got: Vec<_> = batch
            .events
            .iter()
            .map(|e| (e.event.kind.clone(), e.event.session))
            .collect();
        assert_eq!(
            got,
            vec![
                (EventKind::Ended(EndReason::Logout), key),
                (EventKind::Ended(EndReason::Revoked), other)
            ]
        );
    }
}

/// Not a test: what the event log costs a write (BENCHMARKS.md). Run with
/// `cargo test --workspace --test conformance -- --ignored --nocapture logged_write_cost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn logged_write_cost() {
    let dir = tempfile::tempdir().unwrap();
    let builder = || SqliteStore::builder().purge_interval(None);
    let plain: Arc<dyn SessionStore> =
        Arc::new(builder().open(dir.path().join("plain.db")).await.unwrap());
    let logged: Arc<dyn SessionStore> = Arc::new(
        builder()
            .event_log(1_000_000)
            .open(dir.path().join("logged.db"))
            .await
            .unwrap(),
    );
    cloakroom_testkit::measure_event_log_cost("sqlite", plain, logged).await;
}
