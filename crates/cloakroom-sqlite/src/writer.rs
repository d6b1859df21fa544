//! Group commit: one writer thread owns the write connection and runs every queued write of
//! the moment in one `BEGIN IMMEDIATE ... COMMIT`.
//!
//! A caller queues a job (its statement as a closure and a oneshot for its answer) and awaits
//! the answer. The thread takes one job (yielding a few times before it sleeps, see
//! [`YIELDS_BEFORE_SLEEP`]), then whatever else is queued up to [`MAX_BATCH`] (no timer: an
//! idle store commits each write alone, at once), runs them in one transaction and answers
//! them only after `COMMIT` returned:
//!
//! - a job's own failure (a statement error) is that job's answer only: SQLite undoes the
//!   failed statement and keeps the transaction, and every job is one statement, so there is
//!   nothing of it to undo beyond that (no savepoint needed; the jobs of several statements,
//!   a limited create and the event log's writes, run under a savepoint of their own and
//!   undo all of it). If SQLite rolled the whole
//!   transaction back instead (it may on `SQLITE_FULL`, `IOERR`, `NOMEM`), the batch is lost;
//! - a batch that cannot begin, is lost, or fails to commit answers every job of it with
//!   that error: nothing is reported done that was not committed;
//! - a job whose caller stopped waiting (the store timeout) is skipped, not run;
//! - if the thread dies (a panic), the oneshots of its queued and running jobs are dropped,
//!   so their callers get an error rather than wait; the next write starts a new thread.

use std::fmt;
use std::sync::{Arc, Mutex};

use cloakroom_core::store::{Error, ErrorKind, Result};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::pool::{Target, open_file};

/// Most jobs in one transaction.
pub(crate) const MAX_BATCH: usize = 64;
/// Jobs that may wait in the queue; past it callers wait for room (the store timeout
/// bounds that wait as any other).
const QUEUE: usize = 1024;

/// The writer thread's handle: queues jobs, restarts the thread if it died.
pub(crate) struct Writer {
    target: Target,
    busy_timeout: std::time::Duration,
    queue: Mutex<mpsc::Sender<Box<dyn Job>>>,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the thread with `conn`, a configured and migrated connection.
    pub(crate) fn start(
        target: Target,
        busy_timeout: std::time::Duration,
        conn: Connection,
    ) -> Result<Self> {
        let queue = spawn(conn)?;
        Ok(Writer {
            target,
            busy_timeout,
            queue: Mutex::new(queue),
        })
    }

    /// Runs `work` in the next batch; its answer once the batch is committed.
    pub(crate) async fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Task { work, reply });
        let queue = self.sender()?;
        if let Err(mpsc::error::SendError(job)) = queue.send(job).await {
            // The thread died since `sender` looked: one new thread, one more try.
            self.restart(&queue)?.send(job).await.map_err(|_| gone())?;
        }
        answer.await.map_err(|_| gone())?
    }

    /// Jobs waiting in the queue (not yet taken by the thread).
    #[cfg(test)]
    fn queued(&self) -> usize {
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.max_capacity() - queue.capacity()
    }

    /// The queue of a live thread (a new one if the last died).
    fn sender(&self) -> Result<mpsc::Sender<Box<dyn Job>>> {
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if queue.is_closed() {
            return self.restart(&queue);
        }
        Ok(queue)
    }

    /// Replaces a dead thread's queue `dead` with a new thread's, unless another caller did.
    fn restart(&self, dead: &mpsc::Sender<Box<dyn Job>>) -> Result<mpsc::Sender<Box<dyn Job>>> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.same_channel(dead) {
            tracing::warn!("the sqlite writer thread stopped; starting a new one");
            let conn = match &self.target {
                Target::File(path) => open_file(path, self.busy_timeout)?,
                // The in-memory database lived on the dead thread's connection.
                Target::Memory => {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        "the in-memory sqlite database was lost with its writer thread",
                    ));
                }
            };
            *queue = spawn(conn)?;
        }
        Ok(queue.clone())
    }
}

fn spawn(conn: Connection) -> Result<mpsc::Sender<Box<dyn Job>>> {
    let (queue, jobs) = mpsc::channel(QUEUE);
    std::thread::Builder::new()
        .name("cloakroom-sqlite-writer".into())
        .spawn(move || write_batches(&conn, jobs))
        .map_err(|e| {
            Error::new(
                ErrorKind::Backend,
                "starting the sqlite writer thread failed",
            )
            .with_source(e)
        })?;
    Ok(queue)
}

/// The error of a caller whose job was dropped unanswered (the thread died).
fn gone() -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "the sqlite writer thread stopped before answering",
    )
}

/// How many times the thread, finding the queue empty after a batch, yields its core and
/// looks again before it sleeps. Under load the next write usually arrives within those few
/// microseconds, and taking it awake spares both sides a sleep and a wake-up (a futex call
/// each, and a context switch): the `write` case measured 1.18x [0.96-1.43] the throughput
/// in alternating rounds, at less CPU per request (BENCHMARKS.md, SQLite). An idle store pays nothing
/// (the thread sleeps); a lone write pays at most this many `sched_yield` calls after it.
const YIELDS_BEFORE_SLEEP: u32 = 32;

/// The next job: taken from the queue while yielding, then waited for asleep. `None` when
/// every sender is gone.
fn next_job(jobs: &mut mpsc::Receiver<Box<dyn Job>>) -> Option<Box<dyn Job>> {
    for _ in 0..YIELDS_BEFORE_SLEEP {
        match jobs.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::error::TryRecvError::Empty) => std::thread::yield_now(),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
        }
    }
    jobs.blocking_recv()
}

/// The thread: batches until every sender is gone (the store dropped).
fn write_batches(conn: &Connection, mut jobs: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = next_job(&mut jobs) {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        batch.retain(|job| !job.abandoned());
        if !batch.is_empty() {
            commit_batch(conn, &mut batch);
        }
        batch.clear();
    }
}

/// Runs `batch` in one transaction and answers every job.
fn commit_batch(conn: &Connection, batch: &mut Vec<Box<dyn Job>>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let failure = Failure::new(crate::error::sql_error(e, "starting a write transaction"));
        for job in batch.drain(..) {
            job.fail(&failure);
        }
        return;
    }
    let mut done: Vec<Box<dyn Finish>> = Vec::with_capacity(batch.len());
    let mut lost = None;
    for job in batch.drain(..) {
        if let Some(failure) = &lost {
            job.fail(failure);
            continue;
        }
        let finish = job.run(conn);
        if finish.failed() && conn.is_autocommit() {
            // SQLite rolled the transaction back: the jobs before this one are undone too.
            lost = Some(Failure::new(Error::new(
                ErrorKind::Backend,
                "a session write failed and SQLite rolled back its whole batch",
            )));
        }
        done.push(finish);
    }
    let outcome = match lost {
        Some(failure) => Err(failure),
        None => conn
            .execute_batch("COMMIT")
            .map_err(|e| Failure::new(crate::error::sql_error(e, "committing session writes"))),
    };
    if outcome.is_err() && !conn.is_autocommit() {
        // A failed COMMIT (e.g. a deferred constraint) leaves the transaction open.
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::warn!(error = %e, "rolling back a failed sqlite batch failed");
        }
    }
    for finish in done {
        finish.finish(outcome.as_ref().err());
    }
}

/// One batch's failure, shared by its jobs' answers.
#[derive(Clone)]
pub(crate) struct Failure(Arc<Error>);

impl Failure {
    fn new(e: Error) -> Self {
        Failure(Arc::new(e))
    }

    /// The error for one job of the batch.
    fn error(&self) -> Error {
        Error::new(self.0.kind(), self.0.message().to_owned())
            .with_source(Cause(Arc::clone(&self.0)))
    }
}

/// The shared error's cause as a job error's source.
#[derive(Debug)]
struct Cause(Arc<Error>);

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The job's error repeats the message; show only the cause, if any.
        match std::error::Error::source(&*self.0) {
            Some(cause) => fmt::Display::fmt(cause, f),
            None => f.write_str("the batch failed"),
        }
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}

/// A queued write.
trait Job: Send {
    /// Whether its caller stopped waiting.
    fn abandoned(&self) -> bool;
    /// Runs it inside the batch's transaction; the answer waits for the commit.
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Finish>;
    /// Answers it with the batch's failure, without running it.
    fn fail(self: Box<Self>, failure: &Failure);
}

/// A job that ran and waits for its batch's commit.
trait Finish: Send {
    /// Whether the job itself failed.
    fn failed(&self) -> bool;
    /// Answers the caller: the job's own result if the batch committed (`None`), else the
    /// batch's failure.
    fn finish(self: Box<Self>, failure: Option<&Failure>);
}

struct Task<T, F> {
    work: F,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Task<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
{
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Finish> {
        let result = (self.work)(conn);
        Box::new(Ran {
            result,
            reply: self.reply,
        })
    }

    fn fail(self: Box<Self>, failure: &Failure) {
        let _ = self.reply.send(Err(failure.error()));
    }
}

struct Ran<T> {
    result: Result<T>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T: Send + 'static> Finish for Ran<T> {
    fn failed(&self) -> bool {
        self.result.is_err()
    }

    fn finish(self: Box<Self>, failure: Option<&Failure>) {
        let answer = match failure {
            None => self.result,
            Some(failure) => Err(failure.error()),
        };
        let _ = self.reply.send(answer);
    }
}

#[cfg(test)]
mod tests {
    //! Batches made on purpose: a job holds the writer thread while the jobs under test
    //! queue up behind it, so they are taken as one batch when it lets go.

    use std::path::Path;
    use std::time::Duration;

    use cloakroom_core::session::{SessionId, SessionKey, Timestamp};
    use cloakroom_core::store::{Applied, Created, ErrorKind, Patch, Record, SessionStore};
    use tokio::task::JoinHandle;

    use super::*;
    use crate::SqliteStore;
    use crate::error::SqlContext;

    fn key() -> SessionKey {
        SessionId::generate().key()
    }

    fn record(ttl: Duration) -> Record {
        let now = Timestamp::now();
        let mut record = Record::new(now, now.plus(ttl));
        record.data.insert("name".into(), "\"Ada\"".into());
        record
    }

    fn patch(field: &str) -> Patch {
        let now = Timestamp::now();
        Patch::new(now, now.plus(Duration::from_secs(600))).set(field, "1")
    }

    async fn file_store(path: &Path) -> SqliteStore {
        SqliteStore::builder()
            .purge_interval(None)
            .open(path)
            .await
            .unwrap()
    }

    fn raw(path: &Path) -> Connection {
        Connection::open(path).unwrap()
    }

    /// Holds the writer thread until the returned sender sends (or is dropped).
    async fn hold(store: &SqliteStore) -> (std::sync::mpsc::Sender<()>, JoinHandle<()>) {
        let (started, running) = oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let held = store.clone();
        let task = tokio::spawn(async move {
            held.write(move |_| {
                let _ = started.send(());
                let _ = released.recv();
                Ok(())
            })
            .await
            .unwrap();
        });
        running.await.unwrap();
        (release, task)
    }

    /// Spawns a store call (`|s| s.op(...)`) that queues behind the held writer, and waits
    /// until it is queued (so calls queue in the order written); its answer as `Debug` text.
    macro_rules! queue {
        ($store:expr, |$s:ident| $call:expr) => {{
            let before = $store.inner.writer.queued();
            let $s = $store.clone();
            let task = tokio::spawn(async move { $call.await.map(|r| format!("{r:?}")) });
            until_queued(&$store, before + 1).await;
            task
        }};
    }

    async fn until_queued(store: &SqliteStore, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.inner.writer.queued() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the jobs did not queue"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(store.inner.writer.queued(), n);
    }

    async fn answer(task: JoinHandle<Result<String>>) -> Result<String> {
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("answered, not hung")
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_in_a_batch_leaves_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = file_store(&path).await;
        let (a, b, bad, gone, doomed, new) = (key(), key(), key(), key(), key(), key());
        for k in [a, b, bad, doomed] {
            let created = store.create(&k, &record(Duration::from_secs(600))).await;
            assert_eq!(created.unwrap(), Created::Done);
        }
        raw(&path)
            .execute(
                "UPDATE sessions SET data = 'not json' WHERE key = ?1",
                [bad.as_bytes().to_vec()],
            )
            .unwrap();

        let (release, held) = hold(&store).await;
        let ops = vec![
            queue!(store, |s| s.apply(&a, &patch("x"))),
            queue!(store, |s| s.apply(&bad, &patch("x"))),
            queue!(store, |s| s.apply(&gone, &patch("x"))),
            queue!(store, |s| s.create(&a, &record(Duration::from_secs(60)))),
            queue!(store, |s| s.delete(&doomed)),
            queue!(store, |s| s.create(&new, &record(Duration::from_secs(60)))),
            queue!(store, |s| s.apply(&b, &patch("y"))),
        ];
        until_queued(&store, ops.len()).await;
        release.send(()).unwrap();
        held.await.unwrap();
        let mut answers = Vec::new();
        for op in ops {
            answers.push(answer(op).await.map_err(|e| e.kind()));
        }
        let ok = |s: &str| Ok(s.to_owned());
        assert_eq!(
            answers,
            [
                ok("Done"),
                Err(ErrorKind::Corrupt),
                ok("Missing"),
                ok("Collision"),
                ok("true"),
                ok("Done"),
                ok("Done"),
            ]
        );
        // What they said is what was committed.
        assert!(
            store
                .load(&a)
                .await
                .unwrap()
                .unwrap()
                .data
                .contains_key("x")
        );
        assert!(
            store
                .load(&b)
                .await
                .unwrap()
                .unwrap()
                .data
                .contains_key("y")
        );
        assert!(store.load(&new).await.unwrap().is_some());
        assert!(store.load(&doomed).await.unwrap().is_none());
        assert!(store.load(&gone).await.unwrap().is_none());
        assert_eq!(
            store.load(&bad).await.unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn patches_after_a_delete_or_past_expiry_in_one_batch_resurrect_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = file_store(&path).await;
        let (deleted, expired, idle, live) = (key(), key(), key(), key());
        for k in [deleted, idle, live] {
            let created = store.create(&k, &record(Duration::from_secs(600))).await;
            assert_eq!(created.unwrap(), Created::Done);
        }
        let short = record(Duration::from_millis(30));
        assert_eq!(store.create(&expired, &short).await.unwrap(), Created::Done);
        tokio::time::sleep(Duration::from_millis(60)).await;

        let (release, held) = hold(&store).await;
        let now = Timestamp::now();
        let later = now.plus(Duration::from_secs(600));
        // A blind write whose idle bound is over (the record was last seen > 1 ms ago).
        let mut blind = Patch::new(now.plus(Duration::from_secs(1)), later).set("x", "1");
        blind.max_idle = Some(Duration::from_millis(1));
        let ops = vec![
            queue!(store, |s| s.delete(&deleted)),
            queue!(store, |s| s.apply(&deleted, &patch("x"))),
            queue!(store, |s| s.touch(&deleted, now, later)),
            queue!(store, |s| s.apply(&expired, &patch("x"))),
            queue!(store, |s| s.touch(&expired, now, later)),
            queue!(store, |s| s.apply(&idle, &blind)),
            queue!(store, |s| s.apply(&live, &patch("x"))),
        ];
        until_queued(&store, ops.len()).await;
        release.send(()).unwrap();
        held.await.unwrap();
        let mut answers = Vec::new();
        for op in ops {
            answers.push(answer(op).await.unwrap());
        }
        assert_eq!(
            answers,
            [
                "true", "Missing", "Missing", "Missing", "Missing", "Missing", "Done"
            ]
        );
        assert!(store.load(&deleted).await.unwrap().is_none());
        assert!(store.load(&expired).await.unwrap().is_none());
        assert!(
            !store
                .load(&idle)
                .await
                .unwrap()
                .unwrap()
                .data
                .contains_key("x")
        );
        assert!(
            store
                .load(&live)
                .await
                .unwrap()
                .unwrap()
                .data
                .contains_key("x")
        );
        let rows: i64 = raw(&path)
            .query_row(
                "SELECT count(*) FROM sessions WHERE data LIKE '%\"x\"%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 1, "only the live session got x");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_fails_every_write_of_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        // A real failing COMMIT: a deferred foreign key left broken in the transaction.
        let mut conn = crate::pool::open_file(&path, Duration::from_secs(5)).unwrap();
        crate::builder::enable_wal(&conn).unwrap();
        crate::schema::migrate(&mut conn, None).unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TEMP TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TEMP TABLE child (p INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);",
        )
        .unwrap();
        let store = SqliteStore::builder()
            .purge_interval(None)
            .finish(Target::File(path.clone()), conn)
            .unwrap();
        let (a, doomed, new) = (key(), key(), key());
        for k in [a, doomed] {
            let created = store.create(&k, &record(Duration::from_secs(600))).await;
            assert_eq!(created.unwrap(), Created::Done);
        }

        let (release, held) = hold(&store).await;
        let ops = vec![
            queue!(store, |s| s.apply(&a, &patch("x"))),
            queue!(store, |s| s.delete(&doomed)),
            queue!(store, |s| s.write(|c| {
                c.execute("INSERT INTO temp.child VALUES (1)", [])
                    .ctx("breaking")
            })),
            queue!(store, |s| s.create(&new, &record(Duration::from_secs(60)))),
        ];
        until_queued(&store, ops.len()).await;
        release.send(()).unwrap();
        held.await.unwrap();
        for op in ops {
            let err = answer(op).await.unwrap_err();
            assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
        }
        // Nothing of the batch was committed.
        assert!(
            !store
                .load(&a)
                .await
                .unwrap()
                .unwrap()
                .data
                .contains_key("x")
        );
        assert!(store.load(&doomed).await.unwrap().is_some());
        assert!(store.load(&new).await.unwrap().is_none());
        // The transaction was rolled back: the next batch works.
        assert_eq!(store.apply(&a, &patch("x")).await.unwrap(), Applied::Done);
        assert!(
            store
                .load(&a)
                .await
                .unwrap()
                .unwrap()
                .data
                .contains_key("x")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_writer_thread_answers_with_errors_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = file_store(&path).await;
        let keys: Vec<SessionKey> = (0..MAX_BATCH + 6).map(|_| key()).collect();
        for k in &keys {
            let created = store.create(k, &record(Duration::from_secs(600))).await;
            assert_eq!(created.unwrap(), Created::Done);
        }

        let (release, held) = hold(&store).await;
        // One batch of MAX_BATCH jobs with a panic among them, and 6 more left in the queue.
        let mut ops = Vec::new();
        for (i, k) in keys.iter().copied().enumerate() {
            if i == 3 {
                ops.push(queue!(store, |s| s
                    .write(|_| -> Result<()> { panic!("a bug in a write job") })));
            }
            ops.push(queue!(store, |s| s.apply(&k, &patch("x"))));
        }
        until_queued(&store, ops.len()).await;
        release.send(()).unwrap();
        held.await.unwrap();
        for op in ops {
            let err = answer(op).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        }
        // Nothing was committed; a new thread takes the next write.
        let patched: i64 = raw(&path)
            .query_row(
                "SELECT count(*) FROM sessions WHERE data LIKE '%\"x\"%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(patched, 0);
        assert_eq!(
            store.apply(&keys[0], &patch("x")).await.unwrap(),
            Applied::Done
        );
        assert!(
            store
                .load(&keys[0])
                .await
                .unwrap()
                .unwrap()
                .data
                .contains_key("x")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_writes_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = file_store(&path).await;
        let k = key();
        let (release, held) = hold(&store).await;
        let op = queue!(store, |s| s.create(&k, &record(Duration::from_secs(60))));
        until_queued(&store, 1).await;
        op.abort();
        let _ = op.await;
        release.send(()).unwrap();
        held.await.unwrap();
        store.ping().await.unwrap();
        assert!(!store.delete(&key()).await.unwrap());
        assert!(
            store.load(&k).await.unwrap().is_none(),
            "the abandoned create did not run"
        );
    }
}
