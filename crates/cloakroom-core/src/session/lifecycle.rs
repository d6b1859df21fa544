//! Session lifecycle: [`Event`]s for an in-process [`SessionListener`], and the
//! [`Ended`] signal that lets a long-lived connection (WebSocket, server-sent events) close
//! when its session ends anywhere.
//!
//! Both hang off the engine ([`SessionSettings::with_listener`](super::SessionSettings::with_listener),
//! [`Session::ended`](super::Session::ended)). Neither costs a request anything when unused:
//! without a listener nothing is queued, and an end notice to no watcher is one failed
//! broadcast send.

use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::broadcast;

use super::limits::timed;
use super::{SessionKey, Timestamp};
use crate::store::{EndedBy, Position, SessionStore};
use crate::telemetry::{self, SessionEvent};

/// How often an end watcher reads its record by default.
pub(crate) const DEFAULT_END_POLL: Duration = Duration::from_secs(1);

/// How many events wait for the listener before new ones are dropped (and counted).
pub(crate) const LISTENER_QUEUE: usize = 4096;

/// How many end notices a slow watcher may miss before it re-reads the store.
const NOTICE_QUEUE: usize = 256;

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndReason {
    /// The user logged out (through this session, or an old ticket of it).
    Logout,
    /// Revoked: by the user from another device ("your devices"), or all of a user's
    /// sessions at once (a password change, an account deletion).
    Revoked,
    /// Ended by the limit on concurrent sessions per user.
    Limit,
    /// Past the idle timeout or the absolute lifetime.
    Expired,
    /// Gone from the store, by a change this process did not make (another server's logout
    /// or revocation, the admin CLI, the store's own expiry): seen by the poll.
    Gone,
}

impl EndReason {
    /// A short fixed label: `logout`, `revoked`, `limit`, `expired`, `gone`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Logout => "logout",
            EndReason::Revoked => "revoked",
            EndReason::Limit => "limit",
            EndReason::Expired => "expired",
            EndReason::Gone => "gone",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a session.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A record written for a session that had none.
    Created,
    /// The session moved to a new id (a login, [`Session::cycle_id`](super::Session::cycle_id)):
    /// `previous` is the handle it had.
    Rotated {
        /// The session's handle before the rotation (now gone).
        previous: SessionKey,
    },
    /// The session ended.
    Ended(EndReason),
}

/// One lifecycle event: what happened, to which session (its public handle, never the id),
/// whose, and when. Emitted after the change is in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The session's handle (after a rotation, the new one).
    pub session: SessionKey,
    /// The user it was logged in as, if known.
    pub user: Option<String>,
    /// When the change was committed (this server's clock).
    pub at: Timestamp,
}

/// Receives lifecycle events in-process, after each change is committed.
///
/// Called on a thread of its own, in commit order, never on a request's path: a request
/// pays one bounded queue send. A listener that falls more than 4096 events behind loses
/// the newest ones (logged and counted as `cloakroom_session_events_dropped_total`); one
/// that panics is caught, logged and counted (`cloakroom_session_listener_panics_total`),
/// and keeps receiving. Any `Fn(&Event) + Send + Sync` is a listener.
pub trait SessionListener: Send + Sync + 'static {
    /// Handles one event.
    fn on_event(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync + 'static> SessionListener for F {
    fn on_event(&self, event: &Event) {
        self(event);
    }
}

/// Counts `n` sessions of `kind` in the session counters.
fn count(kind: &EventKind, n: u64) {
    let event = match kind {
        EventKind::Created => SessionEvent::Created,
        EventKind::Rotated { .. } => SessionEvent::Rotated,
        EventKind::Ended(reason) => SessionEvent::Ended(reason.as_str()),
    };
    telemetry::sessions(event, n);
}

/// An end or a move, told to the watchers of this process.
#[derive(Clone, Debug)]
enum Notice {
    /// The session under this key ended.
    Session(SessionKey, EndReason),
    /// Every session of `user` but `except` ended.
    User {
        user: String,
        except: Option<SessionKey>,
        reason: EndReason,
    },
    /// The session under `from` now lives under `to`.
    Moved { from: SessionKey, to: SessionKey },
}

/// The engine's lifecycle plumbing: the listener's queue and the watchers' notices.
pub(crate) struct Lifecycle {
    listener: Option<SyncSender<Event>>,
    notices: broadcast::Sender<Notice>,
    /// Whether a task follows the store's event log into `notices` (while watchers are open).
    following: Arc<tokio::sync::Mutex<bool>>,
    /// How often a watcher re-reads its session from the store.
    poll: Duration,
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifecycle")
            .field("listener", &self.listener.is_some())
            .field("poll", &self.poll)
            .finish()
    }
}

impl Lifecycle {
    /// Lifecycle plumbing with `listener` (on a thread of its own) and watchers polling the
    /// store every `poll`.
    pub(crate) fn new(listener: Option<Arc<dyn SessionListener>>, poll: Duration) -> Self {
        let listener = listener.map(|l| {
            let (tx, rx) = sync_channel::<Event>(LISTENER_QUEUE);
            std::thread::Builder::new()
                .name("cloakroom-events".into())
                .spawn(move || {
                    for event in rx {
                        if catch_unwind(AssertUnwindSafe(|| l.on_event(&event))).is_err() {
                            tracing::error!(kind = ?event.kind, "session listener panicked");
                            telemetry::listener_panicked();
                        }
                    }
                })
                .expect("spawning the session listener thread");
            tx
        });
        Lifecycle {
            listener,
            notices: broadcast::channel(NOTICE_QUEUE).0,
            following: Arc::new(tokio::sync::Mutex::new(false)),
            poll,
        }
    }

    /// Counts `event`, queues it for the listener, and tells this process's watchers.
    pub(crate) fn emit(&self, kind: EventKind, session: &SessionKey, user: Option<&str>) {
        count(&kind, 1);
        if let EventKind::Ended(reason) = &kind {
            // No receiver (no open watcher) is the usual case, not an error. (A rotation's
            // notice went out earlier: `moved`.)
            let _ = self.notices.send(Notice::Session(*session, *reason));
        }
        self.queue(kind, session, user);
    }

    /// Tells this process's watchers that the session under `from` now lives under `to`:
    /// sent once the new record is in and before the old one is deleted, so a watcher that
    /// finds the old record gone already has the notice.
    pub(crate) fn moved(&self, from: &SessionKey, to: &SessionKey) {
        let _ = self.notices.send(Notice::Moved {
            from: *from,
            to: *to,
        });
    }

    /// Counts the `deleted` sessions of a bulk end, tells watchers that every session of
    /// `user` but `except` ended, and the listener each of `ended` (the sessions listed
    /// just before).
    pub(crate) fn emit_user(
        &self,
        user: &str,
        except: Option<&SessionKey>,
        (ended, deleted): (&[SessionKey], u64),
        reason: EndReason,
    ) {
        count(&EventKind::Ended(reason), deleted);
        let _ = self.notices.send(Notice::User {
            user: user.to_owned(),
            except: except.copied(),
            reason,
        });
        for key in ended.iter().filter(|k| Some(*k) != except) {
            self.queue(EventKind::Ended(reason), key, Some(user));
        }
    }

    /// Whether anyone listens for per-session events (then a bulk revocation lists the
    /// sessions it ends first).
    pub(crate) fn has_listener(&self) -> bool {
        self.listener.is_some()
    }

    /// Queues the event for the listener; without one, builds nothing (the commit of every
    /// new session comes here).
    fn queue(&self, kind: EventKind, session: &SessionKey, user: Option<&str>) {
        let Some(tx) = &self.listener else { return };
        let event = Event {
            kind,
            session: *session,
            user: user.map(str::to_owned),
            at: Timestamp::now(),
        };
        match tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(event)) => {
                tracing::warn!(kind = ?event.kind, "session listener queue full; event dropped");
                telemetry::event_dropped();
            }
            Err(TrySendError::Disconnected(_)) => telemetry::event_dropped(),
        }
    }

    /// A watcher of the session under `key` (logged in as `user`, expiring at `expires_at`).
    /// With an event log, makes sure a follower runs (from a position no later than now).
    pub(crate) async fn watch(
        &self,
        store: Arc<dyn SessionStore>,
        store_timeout: Duration,
        key: SessionKey,
        user: Option<String>,
        expires_at: Timestamp,
    ) -> Ended {
        let notices = self.notices.subscribe();
        if let Some(log) = store.event_log() {
            // Held while the tail is read, so no watcher goes on before the follower has
            // its start: every end after this call reaches the follower.
            let mut following = self.following.lock().await;
            if !*following {
                match timed(store_timeout, log.tail()).await {
                    Ok(at) => {
                        *following = true;
                        let (notices, flag) = (self.notices.clone(), self.following.clone());
                        tokio::spawn(follow_log(store.clone(), notices, flag, at));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "session end watcher: the event log did not answer; polling only");
                    }
                }
            }
        }
        let poll = self.poll;
        let watch = Watch {
            store,
            store_timeout,
            key,
            user,
            expires_at,
            poll,
        };
        Ended {
            inner: Box::pin(watch.run(notices)),
        }
    }
}

/// How long a watcher whose record the poll found gone waits for the log follower to say
/// why (a few of the follower's reads) before it answers [`EndReason::Gone`].
const LOGGED_GRACE: Duration = Duration::from_millis(500);

/// How long one read of the event log waits for news before the follower looks again
/// whether any watcher is left.
const FOLLOW_WAIT: Duration = Duration::from_secs(1);

/// Follows the store's event log into this process's notices while any watcher is open, so
/// an end made by another process reaches the watchers as soon as the log has it (Redis
/// wakes the follower at once; the other stores' logs are read every
/// [`FOLLOW_POLL`](crate::store::FOLLOW_POLL)). One task per engine, whatever the number
/// of watchers; it starts at the log's tail and stops when the last watcher is gone.
async fn follow_log(
    store: Arc<dyn SessionStore>,
    notices: broadcast::Sender<Notice>,
    following: Arc<tokio::sync::Mutex<bool>>,
    mut at: Position,
) {
    let Some(log) = store.event_log() else { return };
    loop {
        {
            // A watcher subscribes before it takes this lock: none is left behind.
            let mut running = following.lock().await;
            if notices.receiver_count() == 0 {
                *running = false;
                return;
            }
        }
        match log.read_wait(&at, 256, FOLLOW_WAIT).await {
            Ok(batch) => {
                for logged in &batch.events {
                    let e = &logged.event;
                    let notice = match &e.kind {
                        EventKind::Ended(reason) => Notice::Session(e.session, *reason),
                        EventKind::Rotated { previous } => Notice::Moved {
                            from: *previous,
                            to: e.session,
                        },
                        EventKind::Created => continue,
                    };
                    let _ = notices.send(notice);
                }
                at = batch.next;
            }
            Err(e) => {
                tracing::warn!(error = %e, "session end follower: reading the event log failed");
                tokio::time::sleep(FOLLOW_WAIT).await;
            }
        }
    }
}

/// Resolves when a session ends, anywhere, with why ([`Session::ended`](super::Session::ended)).
///
/// Ends made by this process (a logout, a revocation, the session limit) arrive at once. With
/// a store that keeps an event log ([`EventLog`](crate::store::EventLog)), so do ends made by
/// other processes that go through the log (another server's logout, revocation or limit,
/// the admin CLI): one follower task per engine reads the log while watchers are open. Other
/// ends (the store's own expiry, a store without a log) are seen by reading the session's
/// record every poll interval
/// ([`SessionSettings::with_end_poll`](super::SessionSettings::with_end_poll), default 1 s):
/// one store load per open watcher per interval (a Redis near-cache answers it from memory
/// until the record changes). A rotation of the session moves the watcher to the new id. A
/// store that fails to answer keeps the watcher waiting (logged): an outage does not close
/// every open connection.
pub struct Ended {
    inner: Pin<Box<dyn Future<Output = EndReason> + Send>>,
}

impl fmt::Debug for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ended")
    }
}

impl Ended {
    /// A signal that has already fired (a request with no live session).
    pub(crate) fn now(reason: EndReason) -> Self {
        Ended {
            inner: Box::pin(std::future::ready(reason)),
        }
    }
}

impl Future for Ended {
    type Output = EndReason;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<EndReason> {
        self.inner.as_mut().poll(cx)
    }
}

struct Watch {
    store: Arc<dyn SessionStore>,
    store_timeout: Duration,
    key: SessionKey,
    user: Option<String>,
    expires_at: Timestamp,
    poll: Duration,
}

impl Watch {
    async fn run(mut self, mut notices: broadcast::Receiver<Notice>) -> EndReason {
        loop {
            let now = Timestamp::now();
            let to_expiry = Duration::from_millis(
                self.expires_at
                    .as_millis()
                    .saturating_sub(now.as_millis())
                    .max(0) as u64,
            );
            let wait = self.poll.min(to_expiry);
            tokio::select! {
                notice = notices.recv() => match notice {
                    Ok(notice) => {
                        if let Some(reason) = self.apply(notice) {
                            return reason;
                        }
                        continue;
                    }
                    // Missed notices (or no engine left): the store says what happened.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        notices = broadcast::channel(1).1;
                    }
                },
                () = tokio::time::sleep(wait) => {}
            }
            let Some(reason) = self.check().await else {
                continue;
            };
            // Gone from under its key: unless the session moved meanwhile (the notice of a
            // rotation goes out before the old record is deleted, so it is queued by now).
            let key = self.key;
            while let Ok(notice) = notices.try_recv() {
                if let Some(reason) = self.apply(notice) {
                    return reason;
                }
            }
            if self.key != key {
                continue;
            }
            if reason == EndReason::Gone && self.store.event_log().is_some() {
                // A logged end is in the log before its record is gone (one transaction or
                // script): give the follower the time of a read or two to say why.
                match self.logged_reason(&mut notices).await {
                    Some(reason) => return reason,
                    None if self.key != key => continue,
                    None => {}
                }
            }
            return reason;
        }
    }

    /// Notices for up to [`LOGGED_GRACE`]: the reason of this session's end, if one says it.
    async fn logged_reason(
        &mut self,
        notices: &mut broadcast::Receiver<Notice>,
    ) -> Option<EndReason> {
        let key = self.key;
        let deadline = tokio::time::Instant::now() + LOGGED_GRACE;
        while let Ok(Ok(notice)) = tokio::time::timeout_at(deadline, notices.recv()).await {
            if let Some(reason) = self.apply(notice) {
                return Some(reason);
            }
            if self.key != key {
                return None;
            }
        }
        None
    }

    /// What a notice means for this watcher: `Some` when its session ended.
    fn apply(&mut self, notice: Notice) -> Option<EndReason> {
        match notice {
            Notice::Session(key, reason) if key == self.key => Some(reason),
            Notice::User {
                user,
                except,
                reason,
            } if self.user.as_deref() == Some(user.as_str()) && except != Some(self.key) => {
                Some(reason)
            }
            Notice::Moved { from, to } if from == self.key => {
                self.key = to;
                None
            }
            _ => None,
        }
    }

    /// Reads the record: `Some` when the session is gone or past its expiry.
    async fn check(&mut self) -> Option<EndReason> {
        let now = Timestamp::now();
        match timed(self.store_timeout, self.store.load(&self.key)).await {
            Ok(Some(r)) if r.is_ended() => Some(match r.ended_by() {
                Some(EndedBy::Admin(_)) => EndReason::Revoked,
                _ => EndReason::Limit,
            }),
            Ok(Some(r)) if r.meta.user == self.user && r.meta.expires_at > now => {
                self.expires_at = r.meta.expires_at;
                None
            }
            Ok(Some(r)) if r.meta.expires_at <= now => Some(EndReason::Expired),
            Ok(_) if self.expires_at <= now => Some(EndReason::Expired),
            Ok(_) => Some(EndReason::Gone),
            Err(e) => {
                tracing::warn!(error = %e, "session end watcher: the store did not answer");
                // Wait a poll interval before asking again, expiry or not.
                self.expires_at = self.expires_at.max(now.plus(self.poll));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc::{Receiver, channel};

    use super::*;
    use crate::keys::{Key, KeyRing};
    use crate::session::{Session, SessionEngine, SessionSettings};
    use crate::store::MemoryStore;

    /// An engine whose listener forwards every event to the returned receiver.
    fn recorded() -> (SessionEngine, Receiver<Event>) {
        let (tx, rx) = channel();
        let tx = Mutex::new(tx);
        let engine = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate()))
            .with_listener(move |e: &Event| {
                let _ = tx.lock().unwrap().send(e.clone());
            })
            .build();
        (engine, rx)
    }

    async fn commit(engine: &SessionEngine, s: &Session) -> Option<String> {
        let outcome = engine.commit(s, None).await.unwrap();
        (outcome.set_cookie).map(|c| c.split(';').next().unwrap().to_owned())
    }

    fn next(rx: &Receiver<Event>) -> Event {
        rx.recv_timeout(Duration::from_secs(5)).expect("an event")
    }

    #[tokio::test]
    async fn the_listener_sees_every_change_in_order() {
        let (engine, rx) = recorded();
        let s = engine.session(None);
        s.set("a", &1).await.unwrap();
        let ticket = commit(&engine, &s).await.unwrap();
        let created = next(&rx);
        assert_eq!(
            (created.kind.clone(), created.user.clone()),
            (EventKind::Created, None)
        );

        let s = engine.session(Some(&ticket));
        s.login("ada").await.unwrap();
        let ticket = commit(&engine, &s).await.unwrap();
        let login = next(&rx);
        assert_eq!(
            login.kind,
            EventKind::Rotated {
                previous: created.session
            }
        );
        assert_eq!(login.user.as_deref(), Some("ada"));

        let s = engine.session(Some(&ticket));
        s.logout().await.unwrap();
        commit(&engine, &s).await;
        let out = next(&rx);
        assert_eq!(out.kind, EventKind::Ended(EndReason::Logout));
        assert_eq!(
            (out.session, out.user.as_deref()),
            (login.session, Some("ada"))
        );

        // Two sessions of one user, both revoked at once: one event each.
        let mut handles = Vec::new();
        for _ in 0..2 {
            let s = engine.session(None);
            s.login("ada").await.unwrap();
            commit(&engine, &s).await;
            handles.push(next(&rx).session);
        }
        assert_eq!(engine.revoke_all("ada", None).await.unwrap(), 2);
        let mut revoked = [next(&rx), next(&rx)];
        revoked.sort_by_key(|e| e.session);
        handles.sort();
        for (event, handle) in revoked.iter().zip(&handles) {
            assert_eq!(event.kind, EventKind::Ended(EndReason::Revoked));
            assert_eq!(event.session, *handle);
        }
        // A logout of a ticket whose session is already gone ends nothing: no event.
        let s = engine.session(Some(&ticket));
        s.logout().await.unwrap();
        commit(&engine, &s).await;
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    }

    #[tokio::test]
    async fn a_panicking_listener_is_caught_and_keeps_listening() {
        let (tx, rx) = channel();
        let tx = Mutex::new(tx);
        let engine = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate()))
            .with_listener(move |e: &Event| {
                let _ = tx.lock().unwrap().send(e.kind.clone());
                assert!(!matches!(e.kind, EventKind::Created), "listener bug");
            })
            .build();
        let s = engine.session(None);
        s.login("bo").await.unwrap();
        let ticket = commit(&engine, &s).await.unwrap();
        assert_eq!(next_kind(&rx), EventKind::Created);
        let s = engine.session(Some(&ticket));
        s.logout().await.unwrap();
        commit(&engine, &s).await;
        assert_eq!(next_kind(&rx), EventKind::Ended(EndReason::Logout));
    }

    fn next_kind(rx: &Receiver<EventKind>) -> EventKind {
        rx.recv_timeout(Duration::from_secs(5)).expect("an event")
    }

    #[tokio::test]
    async fn a_session_the_limit_ends_fires_its_watcher_and_the_listener() {
        let (tx, rx) = channel();
        let tx = Mutex::new(tx);
        let engine = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate()))
            .with_max_sessions_per_user(1)
            .unwrap()
            .with_listener(move |e: &Event| {
                let _ = tx.lock().unwrap().send(e.clone());
            })
            .build();
        let s = engine.session(None);
        s.login("cy").await.unwrap();
        let first = commit(&engine, &s).await.unwrap();
        let watched = next(&rx).session;
        let s = engine.session(Some(&first));
        let ended = s.ended().await.unwrap();
        commit(&engine, &s).await;

        let s = engine.session(None);
        s.login("cy").await.unwrap();
        commit(&engine, &s).await;
        let reason = tokio::time::timeout(Duration::from_millis(500), ended).await;
        assert_eq!(reason.expect("fired at once"), EndReason::Limit);
        let event = next(&rx);
        assert_eq!(event.kind, EventKind::Ended(EndReason::Limit));
        assert_eq!(
            (event.session, event.user.as_deref()),
            (watched, Some("cy"))
        );
        assert_eq!(next(&rx).kind, EventKind::Created);

        // The ended browser's next request gets the flash (in a new, anonymous session) and
        // deletes the tombstone: no second end (that one was told when it happened).
        let s = engine.session(Some(&first));
        assert_eq!(s.user().await.unwrap(), None);
        commit(&engine, &s).await;
        let flash = next(&rx);
        assert_eq!((flash.kind, flash.user), (EventKind::Created, None));
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    }

    #[tokio::test]
    async fn a_request_without_a_stored_session_has_fired_already() {
        let engine =
            SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate())).build();
        let s = engine.session(None);
        assert_eq!(s.ended().await.unwrap().await, EndReason::Gone);
        s.logout().await.unwrap();
        assert_eq!(s.ended().await.unwrap().await, EndReason::Logout);
    }
}
