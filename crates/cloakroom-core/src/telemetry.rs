//! Telemetry with the `metrics` feature: counters and histograms through the
//! [`metrics`](https://docs.rs/metrics) facade (any recorder: Prometheus, OpenTelemetry, ...),
//! and a `tracing` span (`cloakroom.store`, level DEBUG, fields `store` and `operation`;
//! never ids, keys or data) around every store operation. Without the feature every
//! function here is empty.
//!
//! Everything is recorded here: the session counters from the commit, the load and the
//! revocations; the store figures from the wrapper [`SessionSettings::build`] puts around the
//! store (named by [`SessionStore::kind`]); the CSRF refusals from the core's refusal
//! response. Names, units and labels: the README's *Metrics and traces* table.
//!
//! Install the recorder before [`SessionSettings::build`]: the store histograms are
//! registered once, when the engine is built (so a store operation costs no lookup).
//!
//! [`SessionSettings::build`]: crate::session::SessionSettings::build
//! [`SessionStore::kind`]: crate::store::SessionStore::kind

use std::sync::Arc;

use crate::store::SessionStore;

/// A session counted by [`sessions`].
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))] // the reason is only read by a recorder
pub(crate) enum SessionEvent {
    /// A record written for a session that had none.
    Created,
    /// A session's record replaced under a new id (login, `cycle_id`).
    Rotated,
    /// A session ended, for this reason: `logout`, `revoked`, `expired` (a request's ticket
    /// whose session was gone or past its timeouts), `vanished` (gone while the request ran).
    Ended(&'static str),
}

/// Counts `n` sessions of `event`.
pub(crate) fn sessions(event: SessionEvent, n: u64) {
    #[cfg(feature = "metrics")]
    match event {
        SessionEvent::Created => metrics::counter!("cloakroom_sessions_created_total").increment(n),
        SessionEvent::Rotated => metrics::counter!("cloakroom_sessions_rotated_total").increment(n),
        SessionEvent::Ended(reason) => {
            metrics::counter!("cloakroom_sessions_ended_total", "reason" => reason).increment(n);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (event, n);
}

/// Counts a lifecycle event the listener's full queue dropped.
pub(crate) fn event_dropped() {
    #[cfg(feature = "metrics")]
    metrics::counter!("cloakroom_session_events_dropped_total").increment(1);
}

/// Counts a panic of the session listener (caught).
pub(crate) fn listener_panicked() {
    #[cfg(feature = "metrics")]
    metrics::counter!("cloakroom_session_listener_panics_total").increment(1);
}

/// Counts a request refused by CSRF protection.
#[cfg(feature = "http")]
pub(crate) fn csrf_refused(reason: crate::csrf::Reason) {
    #[cfg(feature = "metrics")]
    metrics::counter!("cloakroom_csrf_rejections_total", "reason" => reason.as_str()).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// The store the engine uses: `store` itself, or with the feature, `store` measured.
pub(crate) fn instrument(store: Arc<dyn SessionStore>) -> Arc<dyn SessionStore> {
    #[cfg(feature = "metrics")]
    let store: Arc<dyn SessionStore> = Arc::new(instrumented::Instrumented::new(store));
    store
}

#[cfg(feature = "metrics")]
mod instrumented {
    use std::future::Future;
    use std::sync::Arc;
    use std::time::Instant;

    use async_trait::async_trait;
    use metrics::Histogram;
    use tracing::Instrument as _;

    use crate::id::{SessionKey, Timestamp};
    use crate::session::{EndReason, Event};
    use crate::store::{
        Admitted, Applied, Batch, Created, Cursor, Error, ErrorKind, EventLog, Limit, Page, Patch,
        Position, Record, Result, SessionInfo, SessionStore,
    };

    /// The store operations, as the `operation` label names them.
    const OPERATIONS: [&str; 14] = [
        "load",
        "create",
        "apply",
        "touch",
        "delete",
        "sessions_of",
        "delete_user",
        "scan",
        "purge_expired",
        "ping",
        "put_challenge",
        "take_challenge",
        "create_limited",
        "read_events",
    ];

    /// A store whose every operation is timed, counted when it fails and run in a span.
    pub(super) struct Instrumented {
        inner: Arc<dyn SessionStore>,
        /// `inner.kind()`.
        store: &'static str,
        /// One histogram per operation, in the order of [`OPERATIONS`].
        durations: [Histogram; OPERATIONS.len()],
    }

    impl Instrumented {
        pub(super) fn new(inner: Arc<dyn SessionStore>) -> Self {
            let store = inner.kind();
            // Described first: a recorder may fix the unit when a histogram is registered
            // (an OpenTelemetry instrument takes its unit when it is created).
            metrics::describe_histogram!(
                "cloakroom_store_operation_duration_seconds",
                metrics::Unit::Seconds,
                "Session store operations, by store kind and operation."
            );
            let durations = OPERATIONS.map(|operation| {
                metrics::histogram!(
                    "cloakroom_store_operation_duration_seconds",
                    "store" => store,
                    "operation" => operation,
                )
            });
            Instrumented {
                inner,
                store,
                durations,
            }
        }

        /// Runs operation number `op`: timed (also when it is dropped unfinished, as at the
        /// engine's store timeout), its failure counted by kind, inside a span.
        async fn run<T>(&self, op: usize, fut: impl Future<Output = Result<T>>) -> Result<T> {
            let mut timer = Timer {
                start: Instant::now(),
                histogram: &self.durations[op],
                failed: Some("timeout"),
                labels: (self.store, OPERATIONS[op]),
            };
            let span = tracing::debug_span!(
                "cloakroom.store",
                store = self.store,
                operation = OPERATIONS[op]
            );
            let result = fut.instrument(span).await;
            timer.failed = result.as_ref().err().map(|e| error_label(e.kind()));
            result
        }
    }

    /// Records an operation's duration when dropped, and its failure if it failed (an
    /// operation dropped before it finished counts as a `timeout`).
    struct Timer<'a> {
        start: Instant,
        histogram: &'a Histogram,
        failed: Option<&'static str>,
        labels: (&'static str, &'static str),
    }

    impl Drop for Timer<'_> {
        fn drop(&mut self) {
            self.histogram.record(self.start.elapsed());
            if let Some(kind) = self.failed {
                let (store, operation) = self.labels;
                metrics::counter!(
                    "cloakroom_store_errors_total",
                    "store" => store,
                    "operation" => operation,
                    "kind" => kind,
                )
                .increment(1);
            }
        }
    }

    fn error_label(kind: ErrorKind) -> &'static str {
        match kind {
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Backend => "backend",
            ErrorKind::Config => "config",
        }
    }

    #[async_trait]
    impl SessionStore for Instrumented {
        async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
            self.run(0, self.inner.load(key)).await
        }

        async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created> {
            self.run(1, self.inner.create(key, record)).await
        }

        async fn create_limited(
            &self,
            key: &SessionKey,
            record: &Record,
            limit: &Limit,
        ) -> Result<Admitted> {
            self.run(12, self.inner.create_limited(key, record, limit))
                .await
        }

        async fn apply(&self, key: &SessionKey, patch: &Patch) -> Result<Applied> {
            self.run(2, self.inner.apply(key, patch)).await
        }

        async fn touch(
            &self,
            key: &SessionKey,
            last_seen: Timestamp,
            expires_at: Timestamp,
        ) -> Result<Applied> {
            self.run(3, self.inner.touch(key, last_seen, expires_at))
                .await
        }

        async fn delete(&self, key: &SessionKey) -> Result<bool> {
            self.run(4, self.inner.delete(key)).await
        }

        async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>> {
            self.run(5, self.inner.sessions_of(user)).await
        }

        async fn delete_user(&self, user: &str, except: Option<&SessionKey>) -> Result<u64> {
            self.run(6, self.inner.delete_user(user, except)).await
        }

        async fn scan(&self, cursor: Cursor, limit: usize) -> Result<Page> {
            self.run(7, self.inner.scan(cursor, limit)).await
        }

        async fn purge_expired(&self) -> Result<u64> {
            self.run(8, self.inner.purge_expired()).await
        }

        async fn ping(&self) -> Result<()> {
            self.run(9, self.inner.ping()).await
        }

        async fn put_challenge(
            &self,
            challenge: &str,
            session: &SessionKey,
            expires_at: Timestamp,
        ) -> Result<Created> {
            let put = self.inner.put_challenge(challenge, session, expires_at);
            self.run(10, put).await
        }

        async fn take_challenge(&self, challenge: &str) -> Result<Option<SessionKey>> {
            self.run(11, self.inner.take_challenge(challenge)).await
        }

        fn kind(&self) -> &'static str {
            self.store
        }

        fn event_log(&self) -> Option<&dyn EventLog> {
            self.inner.event_log().map(|_| self as &dyn EventLog)
        }

        fn placement(&self) -> Option<crate::store::Placement> {
            self.inner.placement()
        }
    }

    impl Instrumented {
        fn log(&self) -> Result<&dyn EventLog> {
            (self.inner.event_log())
                .ok_or_else(|| Error::new(ErrorKind::Config, "the store keeps no event log"))
        }
    }

    /// The logged operations, timed as the plain ones they extend.
    #[async_trait]
    impl EventLog for Instrumented {
        async fn create_logged(
            &self,
            key: &SessionKey,
            record: &Record,
            limit: Option<&Limit>,
            event: &Event,
        ) -> Result<Admitted> {
            let op = if limit.is_some() { 12 } else { 1 };
            self.run(op, self.log()?.create_logged(key, record, limit, event))
                .await
        }

        async fn delete_logged(&self, key: &SessionKey, event: &Event) -> Result<bool> {
            self.run(4, self.log()?.delete_logged(key, event)).await
        }

        async fn delete_user_logged(
            &self,
            user: &str,
            except: Option<&SessionKey>,
            reason: EndReason,
            at: Timestamp,
        ) -> Result<u64> {
            let delete = self.log()?.delete_user_logged(user, except, reason, at);
            self.run(6, delete).await
        }

        async fn read(&self, after: &Position, max: usize) -> Result<Batch> {
            self.run(13, self.log()?.read(after, max)).await
        }

        /// Not timed: its time is mostly waiting.
        async fn read_wait(
            &self,
            after: &Position,
            max: usize,
            wait: std::time::Duration,
        ) -> Result<Batch> {
            self.log()?.read_wait(after, max, wait).await
        }
    }
}
