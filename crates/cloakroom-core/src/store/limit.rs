//! The concurrent-session limit's part of the store contract: what
//! [`SessionStore::create_limited`](super::SessionStore::create_limited) enforces, its
//! outcome, and the one decision every store makes inside its atomic step ([`admission`]).

use super::Created;
use crate::id::{SessionKey, Timestamp};

/// What [`SessionStore::create_limited`](super::SessionStore::create_limited) enforces: a
/// user may hold at most `max` live sessions, the new one included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Most live sessions one user may hold (at least 1).
    pub max: usize,
    /// What to do when the new session would be one too many.
    pub policy: LimitPolicy,
    /// The session the new record replaces (a renewal of a session already logged in): not
    /// counted and never ended, since the engine deletes it right after.
    pub replacing: Option<SessionKey>,
}

/// What happens when a login would exceed [`Limit::max`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitPolicy {
    /// End the user's least recently seen sessions (smallest `last_seen`, ties by
    /// `created_at`) to make room; each is replaced by a tombstone
    /// ([`Record::is_ended`](super::Record::is_ended)).
    #[default]
    EndLeastRecentlySeen,
    /// Refuse the new session ([`Admitted::Refused`]); the others stay.
    RefuseNew,
}

/// Outcome of [`SessionStore::create_limited`](super::SessionStore::create_limited).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// The record was written; `ended` are the sessions ended to make room (now tombstones).
    Done {
        /// Keys of the sessions ended, least recently seen first.
        ended: Vec<SessionKey>,
    },
    /// A live record already has this key; nothing was written or ended.
    Collision,
    /// The user is at the limit and the policy refuses; nothing was written or ended.
    Refused,
}

/// A plain create's outcome as an admission that ended nothing.
impl From<Created> for Admitted {
    fn from(created: Created) -> Self {
        match created {
            Created::Done => Admitted::Done { ended: Vec::new() },
            Created::Collision => Admitted::Collision,
        }
    }
}

/// Picks, from a user's live sessions as `(key, last_seen, created_at)`, those to end so that
/// a new one fits under `limit` (least recently seen first), or `None` when the policy
/// refuses. `limit.replacing` is neither counted nor picked. The one decision every store
/// makes inside its atomic step.
pub fn admission(
    limit: &Limit,
    mut live: Vec<(SessionKey, Timestamp, Timestamp)>,
) -> Option<Vec<SessionKey>> {
    live.retain(|(k, ..)| Some(*k) != limit.replacing);
    let max = limit.max.max(1);
    if live.len() < max {
        return Some(Vec::new());
    }
    if limit.policy == LimitPolicy::RefuseNew {
        return None;
    }
    live.sort_by_key(|(k, seen, created)| (*seen, *created, *k));
    let over = live.len() + 1 - max;
    Some(live.into_iter().take(over).map(|(k, ..)| k).collect())
}
