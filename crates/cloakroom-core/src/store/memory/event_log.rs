//! The memory store's event log: a ring of the newest events, each logged change made and
//! logged under its lock.

use std::sync::Mutex;

use async_trait::async_trait;

use super::{MemoryStore, lock};
use crate::id::{SessionKey, Timestamp};
use crate::session::{EndReason, Event, EventKind};
use crate::store::{
    Admitted, Batch, Error, ErrorKind, EventLog, Limit, LoggedEvent, Position, Record, Result,
};

/// The memory store's event log: the newest `cap` events, numbered from 1.
pub(super) struct Ring {
    events: std::collections::VecDeque<(u64, Event)>,
    /// The number the next event gets.
    next: u64,
    cap: usize,
}

impl Ring {
    pub(super) fn push(&mut self, event: Event) {
        if self.events.len() == self.cap {
            self.events.pop_front();
        }
        self.events.push_back((self.next, event));
        self.next += 1;
    }

    fn read(&self, after: &Position, max: usize) -> Result<Batch> {
        let after: u64 = match after.is_start() {
            true => 0,
            false => (after.as_str().parse()).map_err(|_| {
                Error::new(
                    ErrorKind::Config,
                    "not a position of this memory store's log",
                )
            })?,
        };
        // Everything numbered up to here was dropped by the cap.
        let dropped = self.events.front().map_or(self.next, |(n, _)| *n) - 1;
        let events: Vec<LoggedEvent> = (self.events.iter())
            .skip_while(|(n, _)| *n <= after)
            .take(max)
            .map(|(n, e)| LoggedEvent {
                position: Position::new(n.to_string()),
                event: e.clone(),
            })
            .collect();
        let next = events
            .last()
            .map_or_else(|| Position::new(after.to_string()), |e| e.position.clone());
        Ok(Batch {
            events,
            next,
            gap: after < dropped,
        })
    }
}

impl MemoryStore {
    /// This store with an event log keeping the newest `capacity` events (at least 1): every
    /// session created, rotated or ended through the engine is logged under the same lock as
    /// the change, and the sweep logs each session it finds expired
    /// ([`EventLog`]). Like the sessions, the log lives in this process only.
    #[must_use]
    pub fn with_event_log(self, capacity: usize) -> Self {
        let ring = Ring {
            events: std::collections::VecDeque::new(),
            next: 1,
            cap: capacity.max(1),
        };
        let _ = self.inner.log.set(Mutex::new(ring));
        self
    }

    fn log(&self) -> Result<std::sync::MutexGuard<'_, Ring>> {
        (self.inner.log.get().map(lock))
            .ok_or_else(|| Error::new(ErrorKind::Config, "this memory store keeps no event log"))
    }
}

#[async_trait]
impl EventLog for MemoryStore {
    async fn create_logged(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: Option<&Limit>,
        event: &Event,
    ) -> Result<Admitted> {
        let mut log = self.log()?;
        let admitted = match limit {
            Some(limit) => self.create_limited_now(key, record, limit)?,
            None => Admitted::from(self.create_now(key, record)?),
        };
        if let Admitted::Done { ended } = &admitted {
            for gone in ended {
                log.push(Event {
                    kind: EventKind::Ended(EndReason::Limit),
                    session: *gone,
                    user: record.meta.user.clone(),
                    at: event.at,
                });
            }
            log.push(Event {
                session: *key,
                user: record.meta.user.clone(),
                ..event.clone()
            });
        }
        Ok(admitted)
    }

    async fn delete_logged(&self, key: &SessionKey, event: &Event) -> Result<bool> {
        let mut log = self.log()?;
        let Some(deleted) = self.delete_now(key) else {
            return Ok(false);
        };
        log.push(Event {
            session: *key,
            user: deleted.user.map(String::from),
            ..event.clone()
        });
        Ok(true)
    }

    async fn delete_user_logged(
        &self,
        user: &str,
        except: Option<&SessionKey>,
        reason: EndReason,
        at: Timestamp,
    ) -> Result<u64> {
        let mut log = self.log()?;
        let deleted = self.delete_user_now(user, except);
        for key in &deleted {
            log.push(Event {
                kind: EventKind::Ended(reason),
                session: *key,
                user: Some(user.to_owned()),
                at,
            });
        }
        Ok(deleted.len() as u64)
    }

    async fn read(&self, after: &Position, max: usize) -> Result<Batch> {
        self.log()?.read(after, max)
    }
}
