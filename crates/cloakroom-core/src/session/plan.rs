//! The commit's plan: what the request's session needs written, one of a handful of
//! [`CommitPlan`]s decided from the [`State`] alone, with no store and no clock.

use std::time::Duration;

use super::limits::deadline;
use super::state::{Phase, State};
use super::{SessionConfig, Timestamp};

/// What the commit will do, decided by [`plan`] from the state alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CommitPlan {
    /// Nothing to write; `clear_cookie` when a ticket came in whose session is gone.
    Nothing { clear_cookie: bool },
    /// The session ended: delete the retired records (and a ticket's, if never loaded).
    Delete { clear_cookie: bool },
    /// Writes made without a load: one patch the store caps by the absolute lifetime and
    /// refuses for a record a load would refuse (idle or lifetime over); if the session is
    /// gone by then, a new session holding the values set.
    Blind {
        expires_at: Timestamp,
        max_lifetime: Duration,
        max_idle: Duration,
    },
    /// A record to create (a new session, or a renewal under a new id), then the old one(s)
    /// deleted.
    Create {
        last_seen: Timestamp,
        expires_at: Timestamp,
        renewed: bool,
    },
    /// Changed fields patched into the stored record.
    Patch {
        expires_at: Timestamp,
        remember: Option<bool>,
        send_cookie: bool,
    },
    /// Only the expiry moves.
    Touch {
        expires_at: Timestamp,
        send_cookie: bool,
    },
}

/// What committing `st` at `now` takes; `had_cookie`: the request carried a cookie of our
/// name. Every branch of the commit state machine is one arm here.
pub(super) fn plan(
    st: &State,
    had_cookie: bool,
    now: Timestamp,
    config: &SessionConfig,
) -> CommitPlan {
    let ended = !st.retired.is_empty();
    let live = match &st.phase {
        Phase::Destroyed => {
            return CommitPlan::Delete {
                clear_cookie: had_cookie || ended,
            };
        }
        Phase::Unloaded { .. } if !st.changes.is_empty() => {
            return CommitPlan::Blind {
                expires_at: now.plus(config.idle_timeout),
                max_lifetime: config.absolute_lifetime,
                max_idle: config.idle_timeout,
            };
        }
        Phase::Unloaded { .. } => {
            return CommitPlan::Nothing {
                clear_cookie: false,
            };
        }
        Phase::Absent { stale } => {
            return CommitPlan::Nothing {
                clear_cookie: *stale,
            };
        }
        Phase::Live(live) => live,
    };
    let meta = &live.record.meta;
    let expires_at = deadline(config, meta.created_at, now);
    if live.stored.is_none() || live.renew {
        let empty = live.stored.is_none()
            && live.record.data.is_empty()
            && meta.user.is_none()
            && !live.renew
            && !live.remember_changed;
        if empty {
            // Created then emptied within the request: nothing worth a cookie (but a session
            // this request logged out stays ended).
            return if ended {
                CommitPlan::Delete { clear_cookie: true }
            } else {
                CommitPlan::Nothing {
                    clear_cookie: false,
                }
            };
        }
        return CommitPlan::Create {
            last_seen: now,
            expires_at,
            renewed: live.renew || ended,
        };
    }
    if !st.changes.is_empty() || live.remember_changed {
        return CommitPlan::Patch {
            expires_at,
            remember: live.remember_changed.then_some(meta.remember),
            send_cookie: live.remember_changed || meta.remember,
        };
    }
    if expires_at > meta.expires_at && meta.last_seen.plus(config.touch_interval()) <= now {
        return CommitPlan::Touch {
            expires_at,
            send_cookie: meta.remember,
        };
    }
    CommitPlan::Nothing {
        clear_cookie: false,
    }
}

#[cfg(test)]
mod tests {
    //! Every branch of the state machine as a unit test of [`plan`]: no store, no clock.

    use super::*;
    use crate::session::SessionId;
    use crate::session::state::Live;
    use crate::store::Record;

    const NOW: Timestamp = Timestamp::from_millis(1_000_000_000_000);

    fn config() -> SessionConfig {
        SessionConfig::default()
    }

    fn state(phase: Phase) -> State {
        State::new(phase)
    }

    /// A stored session, created an hour ago, last seen `seen_ago` ago.
    fn stored(seen_ago: Duration) -> Live {
        let created = Timestamp::from_millis(NOW.as_millis() - 3_600_000);
        let seen =
            Timestamp::from_millis(NOW.as_millis() - i64::try_from(seen_ago.as_millis()).unwrap());
        let mut record = Record::new(created, deadline(&config(), created, seen));
        record.meta.last_seen = seen;
        let id = SessionId::from_bytes([1; 32]);
        let key = id.key();
        Live::loaded(Some(id), key, record, None)
    }

    fn fresh() -> Live {
        Live::new(NOW, deadline(&config(), NOW, NOW))
    }

    fn plan_of(st: &State, had_cookie: bool) -> CommitPlan {
        plan(st, had_cookie, NOW, &config())
    }

    fn with_change(mut st: State) -> State {
        st.changes.insert("a".into(), Some("1".into()));
        st
    }

    #[test]
    fn no_session_writes_nothing_and_a_stale_ticket_clears_the_cookie() {
        let absent = state(Phase::Absent { stale: false });
        assert_eq!(
            plan_of(&absent, false),
            CommitPlan::Nothing {
                clear_cookie: false
            }
        );
        let stale = state(Phase::Absent { stale: true });
        assert_eq!(
            plan_of(&stale, true),
            CommitPlan::Nothing { clear_cookie: true }
        );
    }

    #[test]
    fn an_unread_session_is_not_touched_and_blind_writes_patch() {
        let unloaded = || {
            state(Phase::Unloaded {
                first: SessionId::from_bytes([2; 32]),
                fallbacks: Vec::new(),
            })
        };
        assert_eq!(
            plan_of(&unloaded(), true),
            CommitPlan::Nothing {
                clear_cookie: false
            }
        );
        let c = config();
        assert_eq!(
            plan_of(&with_change(unloaded()), true),
            CommitPlan::Blind {
                expires_at: NOW.plus(c.idle_timeout),
                max_lifetime: c.absolute_lifetime,
                max_idle: c.idle_timeout,
            }
        );
    }

    #[test]
    fn a_new_session_is_created_unless_it_ended_up_empty() {
        let mut st = state(Phase::Live(fresh()));
        assert_eq!(
            plan_of(&st, false),
            CommitPlan::Nothing {
                clear_cookie: false
            }
        );
        st.record_mut().unwrap().data.insert("a".into(), "1".into());
        let expected = CommitPlan::Create {
            last_seen: NOW,
            expires_at: deadline(&config(), NOW, NOW),
            renewed: false,
        };
        assert_eq!(plan_of(&st, false), expected);
        // A remember-me choice alone is worth a session too.
        let mut live = fresh();
        live.record.meta.remember = true;
        live.remember_changed = true;
        assert!(matches!(
            plan_of(&state(Phase::Live(live)), false),
            CommitPlan::Create { renewed: false, .. }
        ));
    }

    #[test]
    fn a_renewal_creates_under_the_new_id() {
        let mut live = stored(Duration::from_secs(1));
        live.renew = true;
        live.id = Some(SessionId::from_bytes([3; 32]));
        let expected = CommitPlan::Create {
            last_seen: NOW,
            expires_at: deadline(&config(), live.record.meta.created_at, NOW),
            renewed: true,
        };
        assert_eq!(plan_of(&state(Phase::Live(live)), true), expected);
        // A brand-new session logging in: created, reported as a renewal.
        let mut live = fresh();
        live.renew = true;
        assert!(matches!(
            plan_of(&state(Phase::Live(live)), false),
            CommitPlan::Create { renewed: true, .. }
        ));
    }

    #[test]
    fn changes_to_a_stored_session_are_a_patch() {
        let st = with_change(state(Phase::Live(stored(Duration::from_secs(1)))));
        let created = Timestamp::from_millis(NOW.as_millis() - 3_600_000);
        assert_eq!(
            plan_of(&st, true),
            CommitPlan::Patch {
                expires_at: deadline(&config(), created, NOW),
                remember: None,
                send_cookie: false,
            }
        );
        // A remember-me change alone patches and refreshes the cookie.
        let mut live = stored(Duration::from_secs(1));
        live.record.meta.remember = true;
        live.remember_changed = true;
        assert!(matches!(
            plan_of(&state(Phase::Live(live)), true),
            CommitPlan::Patch {
                remember: Some(true),
                send_cookie: true,
                ..
            }
        ));
    }

    #[test]
    fn an_unchanged_session_is_touched_at_most_every_touch_interval() {
        let interval = config().touch_interval();
        let recent = state(Phase::Live(stored(interval / 2)));
        assert_eq!(
            plan_of(&recent, true),
            CommitPlan::Nothing {
                clear_cookie: false
            }
        );
        let due = state(Phase::Live(stored(interval * 2)));
        let created = Timestamp::from_millis(NOW.as_millis() - 3_600_000);
        assert_eq!(
            plan_of(&due, true),
            CommitPlan::Touch {
                expires_at: deadline(&config(), created, NOW),
                send_cookie: false,
            }
        );
    }

    #[test]
    fn a_session_at_its_absolute_lifetime_is_not_touched() {
        let mut live = stored(config().touch_interval() * 2);
        // Created so long ago that its deadline is its absolute lifetime, already recorded.
        live.record.meta.created_at =
            Timestamp::from_millis(NOW.as_millis() - 29 * 24 * 3_600_000 - 3_600_000);
        live.record.meta.expires_at = deadline(&config(), live.record.meta.created_at, NOW);
        assert_eq!(
            plan_of(&state(Phase::Live(live)), true),
            CommitPlan::Nothing {
                clear_cookie: false
            }
        );
    }

    #[test]
    fn a_destroyed_session_is_deleted_and_its_cookie_cleared() {
        let mut st = state(Phase::Destroyed);
        assert_eq!(
            plan_of(&st, false),
            CommitPlan::Delete {
                clear_cookie: false
            }
        );
        assert_eq!(
            plan_of(&st, true),
            CommitPlan::Delete { clear_cookie: true }
        );
        st.retired.push(SessionId::from_bytes([4; 32]).key());
        assert_eq!(
            plan_of(&st, false),
            CommitPlan::Delete { clear_cookie: true }
        );
    }

    #[test]
    fn a_write_after_logout_starts_a_new_session_and_the_old_stays_ended() {
        let mut st = state(Phase::Live(fresh()));
        st.retired.push(SessionId::from_bytes([5; 32]).key());
        // Emptied again: only the deletion remains.
        assert_eq!(
            plan_of(&st, true),
            CommitPlan::Delete { clear_cookie: true }
        );
        st.record_mut()
            .unwrap()
            .data
            .insert("flash".into(), "1".into());
        assert!(matches!(
            plan_of(&st, true),
            CommitPlan::Create { renewed: true, .. }
        ));
    }
}
