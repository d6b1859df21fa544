//! The durable event log: lifecycle [`Event`]s written by the store in the same atomic step
//! as the change they describe, and read back from a [`Position`].
//!
//! A store keeps a log when it is built with one (`MemoryStore::with_event_log`,
//! the SQLite and PostgreSQL `events` options, the Redis builder's `event_log`); it then
//! answers [`SessionStore::event_log`](super::SessionStore::event_log), and the engine makes
//! every lifecycle change through the logged operations of [`EventLog`]. The contract:
//!
//! - **Atomic.** The event is written in the same transaction, script or lock as the change:
//!   no committed change lacks its event, no event exists for a change that did not commit.
//! - **Ordered.** Events are read in the order their changes committed; a [`Position`]
//!   names one event, and reading after it returns only later ones.
//! - **Bounded, never silently.** The store keeps the newest events only (a length cap or a
//!   retention); a reader whose position is older than what is kept gets
//!   [`Batch::gap`] set: it lost events and is told so.
//! - **At least once.** A consumer keeps the position of the last event it handled and
//!   reads after it; after a crash it reads some events again, never fewer.
//!
//! Expiry is logged where the store sees it: by the purge (memory, SQLite, PostgreSQL).
//! Redis expires keys by itself and says nothing reliable when it does, so its log records
//! the expiry of a logged-in session once, when the store notices it (its user's index
//! still names it), and never an anonymous session's (see each store's docs).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;

use super::{Admitted, Limit, Record, Result, SessionStore};
use crate::id::{SessionKey, Timestamp};
use crate::session::{EndReason, Event, EventKind};

/// Where a reader is in a store's event log: the position of the last event it handled
/// ([`LoggedEvent::position`]), or [`Position::start`]. Text a store wrote and parses back;
/// keep it as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Position(String);

impl Position {
    /// Before the first event (a reader from here gets a gap once the store has dropped any).
    pub fn start() -> Self {
        Position::default()
    }

    /// The position with this text (a store's own, or [`Position::start`] for the empty text).
    pub fn new(text: impl Into<String>) -> Self {
        Position(text.into())
    }

    /// The text, as a store wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is [`Position::start`].
    pub fn is_start(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "start" } else { &self.0 })
    }
}

impl FromStr for Position {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "" | "start" | "0" => Position::start(),
            other => Position::new(other),
        })
    }
}

/// One event read from the log, with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedEvent {
    /// Where this event is: read after it for the next ones.
    pub position: Position,
    /// The event.
    pub event: Event,
}

/// What one [`EventLog::read`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Events after the position read from, oldest first (at most the `max` asked for).
    pub events: Vec<LoggedEvent>,
    /// Where to read next: the last event's position, or the position read from when there
    /// was none.
    pub next: Position,
    /// Events between the position read from and the first one returned were dropped (by
    /// the cap or the retention) before this reader saw them.
    pub gap: bool,
}

/// The changes a store makes together with their event, and the reader of its log.
///
/// Only the changes that are lifecycle events go through here: a new session (created, or
/// rotated from a previous one), an end (logout, revocation, the limit). Data writes and
/// touches are no events and stay on [`SessionStore`](super::SessionStore)'s own operations.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// [`SessionStore::create`](super::SessionStore::create) (or, with a `limit`,
    /// [`create_limited`](super::SessionStore::create_limited)) and `event` (a
    /// [`EventKind::Created`] or [`EventKind::Rotated`] of `key`) in one atomic step. The
    /// sessions the limit ends are logged too, each as [`EndReason::Limit`] of the user, at
    /// `event.at`. A collision or a refusal logs nothing.
    async fn create_logged(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: Option<&Limit>,
        event: &Event,
    ) -> Result<Admitted>;

    /// [`SessionStore::delete`](super::SessionStore::delete) and, when a live record was
    /// there, `event` (an [`EventKind::Ended`] of `key`) in one atomic step. The event names
    /// the record's user (whatever `event.user` says).
    async fn delete_logged(&self, key: &SessionKey, event: &Event) -> Result<bool>;

    /// [`SessionStore::delete_user`](super::SessionStore::delete_user) and one
    /// `Ended(reason)` event per session it deleted, at `at`, in one atomic step.
    async fn delete_user_logged(
        &self,
        user: &str,
        except: Option<&SessionKey>,
        reason: EndReason,
        at: Timestamp,
    ) -> Result<u64>;

    /// At most `max` events after `after`, oldest first.
    async fn read(&self, after: &Position, max: usize) -> Result<Batch>;

    /// The position after the last event logged so far: where a reader that wants only
    /// what happens from now on starts. Reads to the end by default.
    async fn tail(&self) -> Result<Position> {
        let mut at = Position::start();
        loop {
            let batch = self.read(&at, 1000).await?;
            if batch.events.is_empty() {
                return Ok(batch.next);
            }
            at = batch.next;
        }
    }

    /// [`read`](Self::read), but when there is no event after `after` yet, waits up to
    /// `wait` for one (a follower's long poll: `cloakroom events --follow`, the engine's end
    /// signal). By default it reads again every [`FOLLOW_POLL`] until then; a store that can
    /// be told (Redis `XREAD BLOCK`) overrides it.
    async fn read_wait(&self, after: &Position, max: usize, wait: Duration) -> Result<Batch> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let batch = self.read(after, max).await?;
            let now = tokio::time::Instant::now();
            if !batch.events.is_empty() || batch.gap || now >= deadline {
                return Ok(batch);
            }
            tokio::time::sleep(FOLLOW_POLL.min(deadline - now)).await;
        }
    }
}

/// How often the default [`EventLog::read_wait`] reads again while it waits.
pub const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// The fixed label of an event kind in a store's log: `created`, `rotated`, or the end
/// reason (`logout`, `revoked`, `limit`, `expired`, `gone`).
pub fn kind_label(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Created => "created",
        EventKind::Rotated { .. } => "rotated",
        EventKind::Ended(reason) => reason.as_str(),
    }
}

/// The event a store logged as `label` (see [`kind_label`]); `previous` is the handle a
/// rotation came from. `None` for an unknown label or a rotation without a valid previous
/// handle.
pub fn parse_kind(label: &str, previous: Option<&str>) -> Option<EventKind> {
    Some(match label {
        "created" => EventKind::Created,
        "rotated" => EventKind::Rotated {
            previous: SessionKey::from_handle(previous?)?,
        },
        "logout" => EventKind::Ended(EndReason::Logout),
        "revoked" => EventKind::Ended(EndReason::Revoked),
        "limit" => EventKind::Ended(EndReason::Limit),
        "expired" => EventKind::Ended(EndReason::Expired),
        "gone" => EventKind::Ended(EndReason::Gone),
        _ => return None,
    })
}

/// The previous handle of a rotation, for a store's `previous` column.
pub fn previous_handle(kind: &EventKind) -> Option<String> {
    match kind {
        EventKind::Rotated { previous } => Some(previous.to_handle()),
        _ => None,
    }
}

/// Writes `record` under `key` (under `limit`, if any), a change that is the event `kind`:
/// through the store's event log when it keeps one, so the event is written with it.
pub(crate) async fn create_session(
    store: &dyn SessionStore,
    key: &SessionKey,
    record: &Record,
    limit: Option<&Limit>,
    kind: EventKind,
) -> Result<Admitted> {
    if let Some(log) = store.event_log() {
        let event = Event {
            kind,
            session: *key,
            user: record.meta.user.clone(),
            at: record.meta.last_seen,
        };
        return log.create_logged(key, record, limit, &event).await;
    }
    match limit {
        Some(limit) => store.create_limited(key, record, limit).await,
        None => Ok(Admitted::from(store.create(key, record).await?)),
    }
}

/// Deletes the session under `key`, which ended for `reason`: through the store's event log
/// when it keeps one (so the end is logged with it), else a plain
/// [`delete`](super::SessionStore::delete). `true` if a live record was there. What the
/// engine and the admin CLI end sessions with.
///
/// # Errors
/// The store's.
pub async fn end_session(
    store: &dyn SessionStore,
    key: &SessionKey,
    reason: EndReason,
    user: Option<&str>,
) -> Result<bool> {
    match store.event_log() {
        Some(log) => {
            let event = Event {
                kind: EventKind::Ended(reason),
                session: *key,
                user: user.map(str::to_owned),
                at: Timestamp::now(),
            };
            log.delete_logged(key, &event).await
        }
        None => store.delete(key).await,
    }
}

/// Deletes the sessions of `user` but `except`, which ended for `reason`: through the
/// store's event log when it keeps one, else a plain
/// [`delete_user`](super::SessionStore::delete_user). How many were deleted.
///
/// # Errors
/// The store's.
pub async fn end_user(
    store: &dyn SessionStore,
    user: &str,
    except: Option<&SessionKey>,
    reason: EndReason,
) -> Result<u64> {
    match store.event_log() {
        Some(log) => {
            let now = Timestamp::now();
            log.delete_user_logged(user, except, reason, now).await
        }
        None => store.delete_user(user, except).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionId;

    #[test]
    fn labels_round_trip() {
        let previous = SessionId::generate().key();
        let kinds = [
            EventKind::Created,
            EventKind::Rotated { previous },
            EventKind::Ended(EndReason::Logout),
            EventKind::Ended(EndReason::Revoked),
            EventKind::Ended(EndReason::Limit),
            EventKind::Ended(EndReason::Expired),
            EventKind::Ended(EndReason::Gone),
        ];
        for kind in kinds {
            let prev = previous_handle(&kind);
            assert_eq!(
                parse_kind(kind_label(&kind), prev.as_deref()),
                Some(kind.clone())
            );
        }
        assert_eq!(parse_kind("rotated", None), None);
        assert_eq!(parse_kind("nope", None), None);
    }

    #[test]
    fn positions_parse() {
        assert!("start".parse::<Position>().unwrap().is_start());
        assert!("".parse::<Position>().unwrap().is_start());
        assert_eq!("17".parse::<Position>().unwrap().as_str(), "17");
        assert_eq!(Position::start().to_string(), "start");
    }
}
