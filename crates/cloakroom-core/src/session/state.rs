//! What a request knows of its session: the [`Phase`] it is in, the field changes not yet
//! written, and the records it has ended. The handle's methods move it from phase to phase;
//! the commit reads it ([`plan`](super::commit::plan)) and writes it out.
//!
//! ```text
//!              load (a live record)                 destroy
//!  Unloaded ───────────────────────────▶ Live ─────────────────▶ Destroyed
//!     │  load (none live)                  ▲  first change          │
//!     └──────────────────▶ Absent ─────────┘◀────────────────────────┘
//! ```
//!
//! `Unloaded` may collect changes without loading (blind writes); a login or `cycle_id`
//! marks a `Live` session for renewal. Whatever the phase, the commit freezes it.

use std::collections::BTreeMap;

use super::seal::SealKey;
use super::{SessionId, SessionKey, Timestamp};
use crate::store::Record;

/// Where the session of a request stands.
#[derive(Debug)]
pub(super) enum Phase {
    /// Verified ticket(s) came in; nothing is loaded yet. `first` is tried first, then the
    /// `fallbacks` (further verified tickets of the request, in header order; empty, so not
    /// allocated, in the usual one-ticket case).
    Unloaded {
        first: SessionId,
        fallbacks: Vec<SessionId>,
    },
    /// No session: no valid ticket came in, or (`stale`) one did and its record is gone.
    Absent { stale: bool },
    /// A session this request can read and change.
    Live(Live),
    /// Ended by this request (logout): its records are in [`State::retired`].
    Destroyed,
}

/// A session with a record.
#[derive(Debug)]
pub(super) struct Live {
    /// The session as this request sees it, its own changes included.
    pub(super) record: Record,
    /// The id the session goes by: the incoming one, or the one reserved for a new or renewed
    /// session (`None` until a handle or the commit needs it).
    pub(super) id: Option<SessionId>,
    /// The store key of the record as stored (computed once, at load); `None` for a session
    /// created by this request.
    pub(super) stored: Option<SessionKey>,
    /// A new id at commit (login, `cycle_id`): the record is written under `id` and the
    /// `stored` one deleted.
    pub(super) renew: bool,
    /// The remember-me flag changed (it decides the cookie's `Max-Age`).
    pub(super) remember_changed: bool,
    /// The renewal changes no privilege (`cycle_id`, not a login): the old ticket may keep
    /// reaching the session for the rotation grace.
    pub(super) grace: bool,
    /// The forwarding record this session was reached through (an old ticket within a
    /// rotation grace; `id` is then `None`: the request does not know the new ticket).
    pub(super) forward: Option<SessionKey>,
}

impl Live {
    /// A session created by this request.
    pub(super) fn new(now: Timestamp, expires_at: Timestamp) -> Self {
        Live {
            record: Record::new(now, expires_at),
            id: None,
            stored: None,
            renew: false,
            remember_changed: false,
            grace: false,
            forward: None,
        }
    }

    /// A session loaded from the store; `id` is `None` when it was reached through the
    /// forwarding record `forward`.
    pub(super) fn loaded(
        id: Option<SessionId>,
        key: SessionKey,
        record: Record,
        forward: Option<SessionKey>,
    ) -> Self {
        Live {
            record,
            id,
            stored: Some(key),
            renew: false,
            remember_changed: false,
            grace: false,
            forward,
        }
    }
}

/// One request's session state; behind the handle's lock.
#[derive(Debug)]
pub(super) struct State {
    pub(super) phase: Phase,
    /// Field changes not yet written: `Some(json)` set, `None` removed.
    pub(super) changes: BTreeMap<String, Option<String>>,
    /// Store keys of records this request ended (logout): deleted at commit.
    pub(super) retired: Vec<SessionKey>,
    /// The user the retired session was logged in as (for its lifecycle event), when known.
    pub(super) retired_user: Option<String>,
    /// The forwarding record the retired session was reached through: deleted with it.
    pub(super) retired_forward: Option<SessionKey>,
    /// Among the retired, the tombstone of a session the limit ended (no lifecycle event:
    /// that end was told when it happened).
    pub(super) retired_tombstone: Option<SessionKey>,
    /// The response was committed: the state is frozen (reads still work).
    pub(super) committed: bool,
    /// When the record was loaded: the clock reading the liveness check used, reused by a
    /// commit that needs no store work (one clock read per read-only request, not two).
    pub(super) loaded_at: Option<Timestamp>,
    /// With sealed data, the key of the loaded record: derived at the load's first sealed
    /// value or the commit's first value to seal, and used by both.
    pub(super) seal_key: Option<SealKey>,
}

impl State {
    pub(super) fn new(phase: Phase) -> Self {
        State {
            phase,
            changes: BTreeMap::new(),
            retired: Vec::new(),
            retired_user: None,
            retired_forward: None,
            retired_tombstone: None,
            committed: false,
            loaded_at: None,
            seal_key: None,
        }
    }

    /// The session's record, if it has one (loaded or created).
    pub(super) fn record(&self) -> Option<&Record> {
        match &self.phase {
            Phase::Live(live) => Some(&live.record),
            _ => None,
        }
    }

    /// The record, made mutable, if there is one.
    pub(super) fn record_mut(&mut self) -> Option<&mut Record> {
        match &mut self.phase {
            Phase::Live(live) => Some(&mut live.record),
            _ => None,
        }
    }

    /// Settles the load: `found` is the live session among the candidates, if any. Blind
    /// changes made before it are laid over what was found (or over a new session, when
    /// none was: `fresh` makes it).
    pub(super) fn settle(&mut self, found: Option<Live>, fresh: impl FnOnce() -> Live) {
        self.phase = match found {
            Some(live) => Phase::Live(live),
            None => Phase::Absent { stale: true },
        };
        if self.changes.is_empty() {
            return;
        }
        self.live_or(fresh);
        let State {
            phase: Phase::Live(live),
            changes,
            ..
        } = self
        else {
            return;
        };
        for (name, change) in changes.iter() {
            match change {
                Some(json) => live.record.data.insert(name.clone(), json.clone()),
                None => live.record.data.remove(name),
            };
        }
    }

    /// The live session, created by `fresh` if there is none (any phase but `Unloaded`,
    /// which must be loaded first).
    pub(super) fn live_or(&mut self, fresh: impl FnOnce() -> Live) -> &mut Live {
        if !matches!(self.phase, Phase::Live(_)) {
            self.phase = Phase::Live(fresh());
        }
        match &mut self.phase {
            Phase::Live(live) => live,
            // Made `Live` two lines above.
            _ => unreachable!(),
        }
    }
}
