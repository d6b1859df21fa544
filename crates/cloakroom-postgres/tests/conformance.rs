//! The store conformance suite on a real PostgreSQL server (one per test binary), each check
//! on its own table; and again with `?schema=`, each check in its own schema.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use cloakroom_postgres::PostgresStore;
use cloakroom_testkit::postgres_server::PostgresServer;

/// A name no other check of this run uses.
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}_{}", N.fetch_add(1, Ordering::Relaxed))
}

async fn store_with(option: String) -> Arc<PostgresStore> {
    let url = format!("{}?{option}", PostgresServer::shared().url());
    Arc::new(
        PostgresStore::open(&url)
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}")),
    )
}

cloakroom_testkit::conformance_tests!(store_with(format!("table={}", unique("t"))));
cloakroom_testkit::sealed_engine_tests!(store_with(format!("table={}", unique("t"))));

mod with_schema {
    use super::*;

    cloakroom_testkit::conformance_tests!(store_with(format!("schema={}", unique("s"))));
}

/// What a thief of the database gets: `pg_dump` of the session table (every column).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_marker_is_not_in_pg_dump() {
    let server = PostgresServer::shared();
    let table = unique("dump");
    let store = store_with(format!("table={table}")).await;
    cloakroom_testkit::sealed::check_sealed_marker_not_in_dump(store, |_| {
        let out = server
            .pg_dump(&["--data-only", "--table", &table])
            .expect("pg_dump runs");
        async { out }
    })
    .await;
}

/// The event log checks, each on its own table keeping about `cap` events.
mod with_event_log {
    use super::*;

    cloakroom_testkit::event_log_tests!(|cap: usize| store_with(format!(
        "table={}&events={cap}",
        unique("log")
    )));
}

/// What only the PostgreSQL event log has to show: positions follow commit order under
/// concurrent writers, a change whose event cannot be written does not happen, and the log
/// stays on for a process that opens the table without `events=N`.
mod event_log_postgres {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use cloakroom_core::session::{EndReason, Event, EventKind, SessionId, Timestamp};
    use cloakroom_core::store::{Position, Record, SessionStore};

    use super::*;

    fn record(user: &str) -> Record {
        let now = Timestamp::now();
        let mut r = Record::new(now, now.plus(Duration::from_secs(600)));
        r.meta.user = Some(user.to_owned());
        r
    }

    fn event(kind: EventKind, key: cloakroom_core::session::SessionKey) -> Event {
        Event {
            kind,
            session: key,
            user: None,
            at: Timestamp::now(),
        }
    }

    async fn raw() -> tokio_postgres::Client {
        let url = PostgresServer::shared().url();
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("a raw connection");
        tokio::spawn(conn);
        client
    }

    /// A follower reading while 8 writers log 40 sessions each never passes an event that
    /// commits later: what it collected is exactly what the log holds at the end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_misses_nothing_under_concurrent_writers() {
        let store = store_with(format!("table={}&events=100000", unique("order"))).await;
        let writers: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..40 {
                        let key = SessionId::generate().key();
                        let log = store.event_log().expect("a log");
                        let made = log
                            .create_logged(
                                &key,
                                &record("ada"),
                                None,
                                &event(EventKind::Created, key),
                            )
                            .await;
                        made.expect("create_logged");
                    }
                })
            })
            .collect();
        let follower = {
            let store = store.clone();
            tokio::spawn(async move {
                let log = store.event_log().expect("a log");
                let (mut at, mut seen, mut quiet) = (Position::start(), Vec::new(), 0);
                while quiet < 20 {
                    let batch = log.read(&at, 50).await.expect("read");
                    assert!(!batch.gap);
                    quiet = if batch.events.is_empty() {
                        quiet + 1
                    } else {
                        0
                    };
                    seen.extend(batch.events.iter().map(|e| e.position.clone()));
                    at = batch.next;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen
            })
        };
        for w in writers {
            w.await.unwrap();
        }
        let seen = follower.await.unwrap();
        let all = store
            .event_log()
            .unwrap()
            .read(&Position::start(), 10_000)
            .await
            .unwrap();
        let all: Vec<Position> = all.events.into_iter().map(|e| e.position).collect();
        assert_eq!(all.len(), 320);
        assert_eq!(seen, all, "the follower saw every event, in order");
        let numbers: BTreeSet<u64> = all.iter().map(|p| p.as_str().parse().unwrap()).collect();
        assert_eq!(numbers, (1..=320).collect(), "no holes, no repeats");
    }

    /// An event that cannot be written (a trigger refuses it) fails the change with it: the
    /// session is still there and nothing is logged; once the event can be written, it is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_whose_event_fails_does_not_happen() {
        let table = unique("fail");
        let store = store_with(format!("table={table}&events=1000")).await;
        let log = store.event_log().expect("a log");
        let key = SessionId::generate().key();
        log.create_logged(&key, &record("bob"), None, &event(EventKind::Created, key))
            .await
            .unwrap();
        let client = raw().await;
        client
            .batch_execute(&format!(
                "CREATE FUNCTION {table}_refuse() RETURNS trigger LANGUAGE plpgsql AS
                     $$ BEGIN RAISE EXCEPTION 'refused'; END $$;
                 CREATE TRIGGER refuse BEFORE INSERT ON {table}_events FOR EACH ROW
                     WHEN (NEW.kind = 'logout') EXECUTE FUNCTION {table}_refuse();"
            ))
            .await
            .unwrap();
        let logout = event(EventKind::Ended(EndReason::Logout), key);
        assert!(log.delete_logged(&key, &logout).await.is_err());
        assert!(store.load(&key).await.unwrap().is_some(), "not deleted");
        let batch = log.read(&Position::start(), 100).await.unwrap();
        assert_eq!(batch.events.len(), 1, "only the creation is logged");
        client
            .batch_execute(&format!("DROP TRIGGER refuse ON {table}_events"))
            .await
            .unwrap();
        assert!(log.delete_logged(&key, &logout).await.unwrap());
        let batch = log.read(&batch.next, 100).await.unwrap();
        assert_eq!(batch.events.len(), 1);
        assert_eq!(batch.events[0].event.user.as_deref(), Some("bob"));
    }

    /// A store opened without `events=N` on a table that has a log keeps logging (so the
    /// admin CLI's revocations are logged); one on a table without a log has none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_stays_on_for_every_opener() {
        let table = unique("keep");
        let plain = store_with(format!("table={table}")).await;
        assert!(plain.event_log().is_none(), "off by default");
        let logged = store_with(format!("table={table}&events=5")).await;
        assert!(logged.event_log().is_some());
        let again = store_with(format!("table={table}")).await;
        let log = again.event_log().expect("the table's log is kept on");
        let key = SessionId::generate().key();
        log.create_logged(&key, &record("eve"), None, &event(EventKind::Created, key))
            .await
            .unwrap();
        let read = logged.event_log().unwrap();
        let batch = read.read(&Position::start(), 10).await.unwrap();
        assert_eq!(batch.events.len(), 1);
        assert!("x1".parse::<Position>().is_ok());
        let err = read.read(&Position::new("x1"), 10).await.unwrap_err();
        assert_eq!(err.kind(), cloakroom_core::store::ErrorKind::Config);
    }
}

/// Not a test: what the event log costs a write (BENCHMARKS.md). Run with
/// `cargo test --workspace --test conformance -- --ignored --nocapture logged_write_cost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn logged_write_cost() {
    use cloakroom_core::store::SessionStore;

    let plain: Arc<dyn SessionStore> = store_with(format!("table={}", unique("plain"))).await;
    let logged: Arc<dyn SessionStore> =
        store_with(format!("table={}&events=1000000", unique("logged"))).await;
    cloakroom_testkit::measure_event_log_cost("postgres", plain, logged).await;
}

/// An admission under the limit racing a logout of the session it ends: neither fails (no
/// deadlock between the tombstone's row lock and the log's counter), and the session's end
/// is logged once under its user (by whichever committed first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_racing_a_logout_logs_one_end() {
    use std::time::Duration;

    use cloakroom_core::session::{EndReason, Event, EventKind, SessionId, Timestamp};
    use cloakroom_core::store::{Limit, LimitPolicy, Position, Record, SessionStore};

    let store = store_with(format!("table={}&events=100000", unique("race"))).await;
    let event = |kind, session| Event {
        kind,
        session,
        user: None,
        at: Timestamp::now(),
    };
    let record = || {
        let now = Timestamp::now();
        let mut r = Record::new(now, now.plus(Duration::from_secs(600)));
        r.meta.user = Some("cy".into());
        r
    };
    let limit = Limit {
        max: 1,
        policy: LimitPolicy::EndLeastRecentlySeen,
        replacing: None,
    };
    let mut current = SessionId::generate().key();
    let log = store.event_log().unwrap();
    log.create_logged(
        &current,
        &record(),
        None,
        &event(EventKind::Created, current),
    )
    .await
    .unwrap();
    let mut ended = Vec::new();
    for _ in 0..50 {
        let next = SessionId::generate().key();
        let logout = event(EventKind::Ended(EndReason::Logout), current);
        let (fresh, created) = (record(), event(EventKind::Created, next));
        let (admitted, deleted) = tokio::join!(
            log.create_logged(&next, &fresh, Some(&limit), &created),
            log.delete_logged(&current, &logout),
        );
        admitted.expect("the admission");
        deleted.expect("the logout");
        ended.push(current);
        // The tombstone, if the admission won, is no session: out of the way.
        store.delete(&current).await.unwrap();
        current = next;
    }
    let batch = log.read(&Position::start(), 10_000).await.unwrap();
    for key in ended {
        let ends: Vec<_> = (batch.events.iter())
            .filter(|e| e.event.session == key && e.event.user.as_deref() == Some("cy"))
            .filter(|e| matches!(e.event.kind, EventKind::Ended(_)))
            .collect();
        assert_eq!(ends.len(), 1, "one end under the user: {ends:?}");
    }
}
