//! The checks are real: a simple correct store passes the whole suite, and the same store
//! with one deliberate fault fails the check that guards against it.

use std::collections::HashMap;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cloakroom_core::session::{SessionKey, Timestamp};
use cloakroom_core::store::{
    Admitted, Applied, Created, Cursor, Error, ErrorKind, Limit, Page, Patch, Record, Result,
    SessionInfo, SessionStore,
};
use cloakroom_testkit::*;

/// Bugs the naive store can be told to have.
#[derive(Clone, Copy, Debug, Default)]
struct Faults {
    create_overwrites: bool,
    apply_upserts: bool,
    touch_upserts: bool,
    ignore_expiry: bool,
    lost_updates: bool,
    prefix_users: bool,
    trims_values: bool,
    scan_skips: bool,
    delete_user_ignores_except: bool,
    purge_everything: bool,
    purge_counts_nothing: bool,
    touch_sets_remember: bool,
    remember_none_clears: bool,
    mixes_up_times: bool,
    collision_indexes: bool,
    null_removes: bool,
    drops_empty_names: bool,
    scan_lists_forwards: bool,
    racy_challenges: bool,
    racy_limit: bool,
    limit_ends_newest: bool,
}

/// A store as simple as possible: one map behind one mutex, the user index derived by
/// looking at every record.
#[derive(Debug, Default)]
struct NaiveStore {
    map: Mutex<HashMap<SessionKey, Record>>,
    challenges: Mutex<HashMap<String, (SessionKey, Timestamp)>>,
    /// Users of records rejected by `create` (for the `collision_indexes` fault).
    ghost_index: Mutex<Vec<(String, SessionKey)>>,
    faults: Faults,
}

impl NaiveStore {
    fn new(faults: Faults) -> Arc<Self> {
        Arc::new(NaiveStore {
            faults,
            ..NaiveStore::default()
        })
    }

    fn live(&self, r: &Record, now: Timestamp) -> bool {
        self.faults.ignore_expiry || r.meta.expires_at > now
    }

    fn user_matches(&self, r: &Record, user: &str) -> bool {
        match &r.meta.user {
            Some(u) if self.faults.prefix_users => u.starts_with(user),
            Some(u) => u == user,
            None => false,
        }
    }

    fn stored(&self, record: &Record) -> Record {
        let mut r = record.clone();
        if self.faults.trims_values {
            for v in r.data.values_mut() {
                *v = v.trim().to_owned();
            }
        }
        if self.faults.drops_empty_names {
            r.data.remove("");
        }
        r
    }

    fn patched(&self, r: &mut Record, patch: &Patch) {
        let before = r.meta.remember;
        r.apply(patch);
        if self.faults.null_removes {
            for (name, value) in &patch.set {
                if value == "null" {
                    r.data.remove(name);
                }
            }
        }
        if self.faults.remember_none_clears && patch.remember.is_none() && before {
            r.meta.remember = false;
        }
        *r = self.stored(r);
    }
}

#[async_trait]
impl SessionStore for NaiveStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<Record>> {
        let now = Timestamp::now();
        let map = self.map.lock().unwrap();
        Ok(map
            .get(key)
            .filter(|r| self.live(r, now))
            .cloned()
            .map(|mut r| {
                if self.faults.mixes_up_times {
                    r.meta.last_seen = r.meta.created_at;
                }
                r
            }))
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> Result<Created> {
        let now = Timestamp::now();
        let mut map = self.map.lock().unwrap();
        if let Some(r) = map.get(key) {
            if r.meta.expires_at > now && !self.faults.create_overwrites {
                if self.faults.collision_indexes {
                    if let Some(u) = &record.meta.user {
                        self.ghost_index.lock().unwrap().push((u.clone(), *key));
                    }
                }
                return Ok(Created::Collision);
            }
        }
        map.insert(*key, self.stored(record));
        Ok(Created::Done)
    }

    async fn create_limited(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: &Limit,
    ) -> Result<Admitted> {
        let now = Timestamp::now();
        let user = record.meta.user.clone().unwrap_or_default();
        let decide = |map: &HashMap<SessionKey, Record>| {
            let live = map
                .iter()
                .filter(|(_, r)| self.live(r, now) && self.user_matches(r, &user))
                .map(|(k, r)| (*k, r.meta.last_seen, r.meta.created_at))
                .collect::<Vec<_>>();
            let mut ended = cloakroom_core::store::admission(limit, live.clone());
            if let (Some(e), true) = (&mut ended, self.faults.limit_ends_newest) {
                let mut newest = live;
                newest.sort_by_key(|(_, seen, _)| std::cmp::Reverse(*seen));
                *e = newest.iter().take(e.len()).map(|(k, ..)| *k).collect();
            }
            ended
        };
        let ended = if self.faults.racy_limit {
            // Count, then write: concurrent logins all see room.
            let ended = decide(&self.map.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
            ended
        } else {
            None
        };
        let mut map = self.map.lock().unwrap();
        let ended = match ended {
            Some(e) => Some(e),
            None => decide(&map),
        };
        if map.get(key).is_some_and(|r| r.meta.expires_at > now) {
            return Ok(Admitted::Collision);
        }
        let Some(ended) = ended else {
            return Ok(Admitted::Refused);
        };
        for k in &ended {
            if let Some(r) = map.get_mut(k) {
                *r = Record::ended_by_limit(now, r.meta.expires_at);
            }
        }
        map.insert(*key, self.stored(record));
        Ok(Admitted::Done { ended })
    }

    async fn apply(&self, key: &SessionKey, patch: &Patch) -> Result<Applied> {
        // A blind patch never revives a record past its lifetime or idle time.
        fn refused(r: &Record, patch: &Patch) -> bool {
            patch.refuses(r.meta.created_at, r.meta.last_seen)
        }
        let now = Timestamp::now();
        if self.faults.lost_updates {
            // Read, think, write the whole record back: the classic lost update.
            let current = self.map.lock().unwrap().get(key).cloned();
            let Some(mut r) = current.filter(|r| self.live(r, now) && !refused(r, patch)) else {
                return Ok(Applied::Missing);
            };
            tokio::time::sleep(Duration::from_millis(2)).await;
            self.patched(&mut r, patch);
            self.map.lock().unwrap().insert(*key, r);
            return Ok(Applied::Done);
        }
        let mut map = self.map.lock().unwrap();
        match map.get_mut(key) {
            Some(r) if self.live(r, now) && !refused(r, patch) => {
                self.patched(r, patch);
                Ok(Applied::Done)
            }
            _ if self.faults.apply_upserts => {
                let mut r = Record::new(patch.last_seen, patch.expires_at);
                self.patched(&mut r, patch);
                map.insert(*key, r);
                Ok(Applied::Missing)
            }
            _ => Ok(Applied::Missing),
        }
    }

    async fn touch(
        &self,
        key: &SessionKey,
        last_seen: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Applied> {
        let now = Timestamp::now();
        let mut map = self.map.lock().unwrap();
        match map.get_mut(key) {
            Some(r) if self.live(r, now) => {
                r.meta.last_seen = last_seen;
                r.meta.expires_at = expires_at;
                if self.faults.touch_sets_remember {
                    r.meta.remember = true;
                }
                Ok(Applied::Done)
            }
            _ if self.faults.touch_upserts => {
                let r = map
                    .entry(*key)
                    .or_insert_with(|| Record::new(last_seen, expires_at));
                r.meta.last_seen = last_seen;
                r.meta.expires_at = expires_at;
                Ok(Applied::Missing)
            }
            _ => Ok(Applied::Missing),
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<bool> {
        let now = Timestamp::now();
        let removed = self.map.lock().unwrap().remove(key);
        Ok(removed.is_some_and(|r| self.live(&r, now)))
    }

    async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>> {
        let now = Timestamp::now();
        let map = self.map.lock().unwrap();
        let mut out: Vec<SessionInfo> = map
            .iter()
            .filter(|(_, r)| self.live(r, now) && self.user_matches(r, user))
            .map(|(k, r)| r.info(*k))
            .collect();
        for (u, k) in self.ghost_index.lock().unwrap().iter() {
            if u == user {
                if let Some(r) = map.get(k) {
                    out.push(r.info(*k));
                }
            }
        }
        Ok(out)
    }

    async fn delete_user(&self, user: &str, except: Option<&SessionKey>) -> Result<u64> {
        let now = Timestamp::now();
        let except = if self.faults.delete_user_ignores_except {
            None
        } else {
            except
        };
        let mut map = self.map.lock().unwrap();
        let doomed: Vec<SessionKey> = map
            .iter()
            .filter(|(k, r)| Some(*k) != except && self.user_matches(r, user))
            .map(|(k, _)| *k)
            .collect();
        let mut n = 0;
        for k in doomed {
            if map.remove(&k).is_some_and(|r| self.live(&r, now)) {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn scan(&self, cursor: Cursor, limit: usize) -> Result<Page> {
        let now = Timestamp::now();
        let after = if cursor.as_str().is_empty() {
            None
        } else {
            Some(
                SessionKey::from_handle(cursor.as_str())
                    .ok_or_else(|| Error::new(ErrorKind::Config, "bad cursor"))?,
            )
        };
        let map = self.map.lock().unwrap();
        let mut keys: Vec<&SessionKey> = map
            .keys()
            .filter(|k| after.is_none_or(|a| **k > a))
            .collect();
        keys.sort();
        let limit = limit.max(1);
        let page: Vec<&SessionKey> = keys.iter().take(limit).copied().collect();
        let sessions = page
            .iter()
            .filter(|k| {
                let r = &map[**k];
                self.live(r, now)
                    && (self.faults.scan_lists_forwards || !r.is_forward())
                    && !r.is_ended()
            })
            .map(|k| map[*k].info(**k))
            .collect();
        let next = if keys.len() > limit {
            let last = if self.faults.scan_skips {
                keys[limit]
            } else {
                page[limit - 1]
            };
            Some(Cursor::new(last.to_handle()))
        } else {
            None
        };
        Ok(Page { sessions, next })
    }

    async fn purge_expired(&self) -> Result<u64> {
        let now = Timestamp::now();
        let mut map = self.map.lock().unwrap();
        let before = map.len();
        if self.faults.purge_everything {
            map.clear();
        } else {
            map.retain(|_, r| r.meta.expires_at > now);
        }
        let n = (before - map.len()) as u64;
        Ok(if self.faults.purge_counts_nothing {
            0
        } else {
            n
        })
    }

    async fn put_challenge(
        &self,
        challenge: &str,
        session: &SessionKey,
        expires_at: Timestamp,
    ) -> Result<Created> {
        let now = Timestamp::now();
        let mut map = self.challenges.lock().unwrap();
        if map.get(challenge).is_some_and(|(_, e)| *e > now) {
            return Ok(Created::Collision);
        }
        map.insert(challenge.to_owned(), (*session, expires_at));
        Ok(Created::Done)
    }

    async fn take_challenge(&self, challenge: &str) -> Result<Option<SessionKey>> {
        let now = Timestamp::now();
        if self.faults.racy_challenges {
            // Read, then remove: concurrent takes all see the challenge.
            let found = self.challenges.lock().unwrap().get(challenge).copied();
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.challenges.lock().unwrap().remove(challenge);
            return Ok(found.map(|(k, _)| k));
        }
        let taken = self.challenges.lock().unwrap().remove(challenge);
        Ok(taken
            .filter(|(_, e)| self.faults.ignore_expiry || *e > now)
            .map(|(k, _)| k))
    }
}

// The correct naive store passes everything.
mod naive {
    use super::*;
    cloakroom_testkit::conformance_tests!(async { NaiveStore::new(Faults::default()) });
}

/// Runs `check` on a naive store with `faults`; true if the check failed.
fn fails<C, Fut>(faults: Faults, check: C) -> bool
where
    C: FnOnce(Arc<dyn SessionStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    catch_unwind(AssertUnwindSafe(|| {
        run(|| async move { NaiveStore::new(faults) }, check);
    }))
    .is_err()
}

macro_rules! caught {
    ($name:ident, $fault:ident, $($check:path),+ $(,)?) => {
        #[test]
        fn $name() {
            let faults = Faults { $fault: true, ..Faults::default() };
            $(
                assert!(
                    fails(faults, $check),
                    "{} did not catch the fault `{}`",
                    stringify!($check),
                    stringify!($fault),
                );
            )+
        }
    };
}

caught!(
    create_overwriting,
    create_overwrites,
    check_create_collision_keeps_the_live_record,
    check_concurrent_creates_have_one_winner
);
caught!(
    collision_indexing_the_rejected_user,
    collision_indexes,
    check_create_collision_keeps_the_live_record
);
caught!(
    apply_upserting,
    apply_upserts,
    check_apply_on_unknown_key_is_missing,
    check_apply_on_deleted_key_is_missing,
    check_apply_on_expired_key_is_missing
);
caught!(
    touch_upserting,
    touch_upserts,
    check_touch_on_unknown_or_deleted_key_is_missing,
    check_touch_on_expired_key_is_missing,
    check_no_resurrection_under_concurrency
);
caught!(
    ignoring_expiry,
    ignore_expiry,
    check_expiry_is_honoured_everywhere,
    check_apply_on_expired_key_is_missing,
    check_touch_on_expired_key_is_missing,
    check_scan_pages_through_every_live_session_once,
    check_challenges_expire
);
caught!(
    taking_a_challenge_twice,
    racy_challenges,
    check_challenges_are_single_use_under_concurrency
);
caught!(
    losing_concurrent_updates,
    lost_updates,
    check_concurrent_patches_all_survive,
    check_no_resurrection_under_concurrency
);
caught!(
    matching_users_by_prefix,
    prefix_users,
    check_sessions_of_lists_exactly_the_users_sessions,
    check_odd_user_ids_are_matched_exactly
);
caught!(
    normalising_values,
    trims_values,
    check_odd_values_survive_verbatim
);
caught!(
    dropping_empty_field_names,
    drops_empty_names,
    check_odd_field_names_survive
);
caught!(
    treating_null_as_removal,
    null_removes,
    check_odd_values_survive_verbatim
);
caught!(
    skipping_in_scans,
    scan_skips,
    check_scan_pages_through_every_live_session_once
);
caught!(
    revoking_the_current_session,
    delete_user_ignores_except,
    check_delete_user_with_and_without_except
);
caught!(purging_live_records, purge_everything, check_purge_expired);
caught!(
    not_counting_purged_records,
    purge_counts_nothing,
    check_purge_expired
);
caught!(
    touch_changing_more_than_times,
    touch_sets_remember,
    check_touch_moves_only_the_times
);
caught!(
    clearing_remember_without_being_asked,
    remember_none_clears,
    check_apply_updates_remember_only_when_given
);
caught!(mixing_up_times, mixes_up_times, check_create_then_load);
caught!(
    enforcing_the_session_limit_without_atomicity,
    racy_limit,
    check_limit_race_ends_the_least_recently_seen,
    check_limit_race_refuses_past_the_limit
);
caught!(
    ending_the_newest_sessions_at_the_limit,
    limit_ends_newest,
    check_limit_ends_in_last_seen_order
);
caught!(
    listing_grace_forwards_as_sessions,
    scan_lists_forwards,
    check_grace_old_ticket_reaches_the_new_session
);

#[test]
fn a_store_that_expires_by_itself_may_count_nothing() {
    let faults = Faults {
        purge_counts_nothing: true,
        ..Faults::default()
    };
    assert!(!fails(faults, |store| check_purge_expired_with(
        store,
        Purge::EngineExpires
    )));
}
