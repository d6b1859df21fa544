//! Reading a user index back (both Redis stores keep one: a set per user whose members name
//! the user's sessions): which members still name a live session of the user, and which are
//! stale and should be pruned.

use std::cmp::Reverse;

use cloakroom_core::session::SessionKey;
use cloakroom_core::store::{Record, SessionInfo};

/// A user index's members sorted out: those naming a session (with its key), and the rest.
pub(crate) struct Members<M> {
    /// The session keys the naming members stand for, in order.
    pub(crate) keys: Vec<SessionKey>,
    kept: Vec<M>,
    dead: Vec<M>,
}

impl<M> Members<M> {
    /// Sorts `members` by whether `key_of` finds a session key in them.
    pub(crate) fn sort(members: Vec<M>, key_of: impl Fn(&M) -> Option<SessionKey>) -> Self {
        let mut sorted = Members {
            keys: Vec::with_capacity(members.len()),
            kept: Vec::with_capacity(members.len()),
            dead: Vec::new(),
        };
        for member in members {
            match key_of(&member) {
                Some(key) => {
                    sorted.keys.push(key);
                    sorted.kept.push(member);
                }
                None => sorted.dead.push(member),
            }
        }
        sorted
    }

    /// Given the records loaded for [`Members::keys`] (in order): the infos of those that are
    /// live sessions of `user`, most recently used first, and the members to prune (the
    /// others: gone, expired, or someone else's).
    pub(crate) fn resolve(
        self,
        user: &str,
        records: Vec<Option<Record>>,
    ) -> (Vec<SessionInfo>, Vec<M>) {
        let Members {
            keys,
            kept,
            mut dead,
        } = self;
        let mut infos = Vec::with_capacity(keys.len());
        for ((key, member), record) in keys.into_iter().zip(kept).zip(records) {
            match record {
                Some(r) if r.meta.user.as_deref() == Some(user) => infos.push(r.info(key)),
                _ => dead.push(member),
            }
        }
        infos.sort_by_key(|i| Reverse(i.meta.last_seen));
        (infos, dead)
    }
}
