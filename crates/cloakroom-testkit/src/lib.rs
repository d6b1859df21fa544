//! Test support for Cloakroom stores: the conformance suite every [`SessionStore`] must pass.
//!
//! In a store crate's `tests/conformance.rs`:
//!
//! ```
//! use std::sync::Arc;
//! use cloakroom_core::store::{MemoryStore, SessionStore};
//!
//! // One `#[test]` per check, each on a fresh store (the expression is evaluated per test).
//! cloakroom_testkit::conformance_tests!(async { Arc::new(MemoryStore::new()) as Arc<dyn SessionStore> });
//! # fn main() {}
//! ```
//!
//! The factory is an expression that evaluates to a future whose output is a [`Fixture`]:
//! an `Arc<dyn SessionStore>`, or a pair `(store, guard)` where `guard` (a temporary
//! directory, a spawned server) lives until the check ends. A second argument says what
//! [`SessionStore::purge_expired`] is expected to return:
//!
//! ```
//! use std::sync::Arc;
//! use cloakroom_core::store::{MemoryStore, SessionStore};
//! use cloakroom_testkit::Purge;
//!
//! cloakroom_testkit::conformance_tests!(
//!     async { Arc::new(MemoryStore::new()) as Arc<dyn SessionStore> },
//!     purge = Purge::EngineExpires,
//! );
//! # fn main() {}
//! ```
//!
//! Each check is also a public function (`check_*`, in [`conformance`] and re-exported here)
//! so a harness that cannot use the macro can call them itself. The checks use fresh random
//! keys and user names, so several can share one backend (a Redis server) at once.

pub mod conformance;
pub mod dbsc;
pub mod demo_client;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cloakroom_core::store::SessionStore;

pub use conformance::*;

/// A key prefix no other test of this process uses (`{kind}-{pid}-{n}:`), so tests sharing a
/// server never see each other's keys.
pub fn unique_prefix(kind: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{kind}-{}-{n}:", std::process::id())
}

/// The store key of a new random session id.
pub fn new_key() -> cloakroom_core::session::SessionKey {
    cloakroom_core::session::SessionId::generate().key()
}

/// What a store under test is handed to the checks as: the store, plus whatever must stay
/// alive while it is used.
pub trait Fixture: Send + 'static {
    /// The store to check.
    fn store(&self) -> Arc<dyn SessionStore>;
}

impl Fixture for Arc<dyn SessionStore> {
    fn store(&self) -> Arc<dyn SessionStore> {
        Arc::clone(self)
    }
}

impl<S: SessionStore> Fixture for Arc<S> {
    fn store(&self) -> Arc<dyn SessionStore> {
        Arc::clone(self) as Arc<dyn SessionStore>
    }
}

/// A store and a guard (a temporary directory, a server process) dropped after the check.
impl<G: Send + 'static> Fixture for (Arc<dyn SessionStore>, G) {
    fn store(&self) -> Arc<dyn SessionStore> {
        Arc::clone(&self.0)
    }
}

/// A store and a guard (a temporary directory, a server process) dropped after the check.
impl<S: SessionStore, G: Send + 'static> Fixture for (Arc<S>, G) {
    fn store(&self) -> Arc<dyn SessionStore> {
        Arc::clone(&self.0) as Arc<dyn SessionStore>
    }
}

/// What [`check_challenges_with`] expects of a store's single-use challenges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Challenges {
    /// The store keeps them (every store that supports DBSC).
    #[default]
    Kept,
    /// The store refuses them with [`ErrorKind::Config`](cloakroom_core::store::ErrorKind)
    /// (a format that cannot support DBSC, such as pycket's).
    Refused,
}

/// What the concurrent-session limit checks expect of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SessionLimit {
    /// `create_limited` enforces the limit atomically (every store of this workspace but
    /// pycket's).
    #[default]
    Enforced,
    /// `create_limited` of a logged-in record fails with a config error and writes nothing
    /// (a format with no admission state, pycket's): logins under a limit are refused.
    Refused,
}

/// What [`check_purge_expired_with`] expects `purge_expired` to return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Purge {
    /// The store keeps expired records until purged: the count covers every record that
    /// expired (stores such as SQLite and the memory store).
    #[default]
    Counts,
    /// The backend drops expired records by itself (Redis): any count is accepted, only
    /// the outcome (expired gone, live kept) is checked.
    EngineExpires,
}

/// How long one check may run before it fails as hung.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs one check the way the macro does: on a fresh multi-threaded runtime with two
/// workers, failing (panicking) if it runs longer than [`CHECK_TIMEOUT`].
///
/// # Panics
/// When the check fails, times out, or the runtime cannot be built.
pub fn run<F, Fut, X, C, CFut>(factory: F, check: C)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = X>,
    X: Fixture,
    C: FnOnce(Arc<dyn SessionStore>) -> CFut,
    CFut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a tokio runtime");
    runtime.block_on(async move {
        let fixture = factory().await;
        let store = fixture.store();
        match tokio::time::timeout(CHECK_TIMEOUT, check(store)).await {
            Ok(()) => {}
            Err(_) => panic!("the check did not finish within {CHECK_TIMEOUT:?}"),
        }
        drop(fixture);
    });
}

/// Expands to `mod conformance { ... }` with one `#[test]` per conformance check, each on
/// a fresh store from the factory, on a multi-threaded tokio runtime with two workers.
///
/// `conformance_tests!(factory)`, `conformance_tests!(factory, purge = Purge::EngineExpires)`
/// or `conformance_tests!(factory, purge = .., challenges = Challenges::Refused)`;
/// see the [crate docs](crate). Items the factory names must be in scope where the macro is
/// invoked (the module does `use super::*`).
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::conformance_tests!($factory, purge = $crate::Purge::Counts);
    };
    ($factory:expr, purge = $purge:expr $(,)?) => {
        $crate::conformance_tests!(
            $factory,
            purge = $purge,
            challenges = $crate::Challenges::Kept
        );
    };
    ($factory:expr, purge = $purge:expr, challenges = $challenges:expr $(,)?) => {
        $crate::conformance_tests!(
            $factory,
            purge = $purge,
            challenges = $challenges,
            limit = $crate::SessionLimit::Enforced
        );
    };
    (
        $factory:expr,
        purge = $purge:expr,
        challenges = $challenges:expr,
        limit = $limit:expr $(,)?
    ) => {
        /// The store conformance suite (cloakroom-testkit).
        mod conformance {
            #[allow(unused_imports)]
            use super::*;

            $crate::__conformance_case!(
                $factory,
                grace_old_ticket_reaches_the_new_session,
                check_grace_old_ticket_reaches_the_new_session
            );
            $crate::__conformance_case!($factory, grace_ends_on_time, check_grace_ends_on_time);
            $crate::__conformance_case!(
                $factory,
                grace_logout_ends_both_tickets,
                check_grace_logout_ends_both_tickets
            );
            $crate::__conformance_case!(
                $factory,
                login_rotation_has_no_grace,
                check_login_rotation_has_no_grace
            );
            $crate::__conformance_case!(
                $factory,
                ended_fires_at_once_in_process,
                check_ended_fires_at_once_in_process
            );
            $crate::__conformance_case!(
                $factory,
                ended_sees_other_processes_within_the_poll,
                check_ended_sees_other_processes_within_the_poll
            );
            $crate::__conformance_case!($factory, create_then_load, check_create_then_load);
            $crate::__conformance_limit_case!(
                $factory,
                $limit,
                limit_race_ends_the_least_recently_seen,
                check_limit_race_ends_the_least_recently_seen
            );
            $crate::__conformance_limit_case!(
                $factory,
                $limit,
                limit_race_refuses_past_the_limit,
                check_limit_race_refuses_past_the_limit
            );
            $crate::__conformance_limit_case!(
                $factory,
                $limit,
                limit_ends_in_last_seen_order,
                check_limit_ends_in_last_seen_order
            );
            $crate::__conformance_case!($factory, load_unknown_is_none, check_load_unknown_is_none);
            $crate::__conformance_case!(
                $factory,
                create_collision_keeps_the_live_record,
                check_create_collision_keeps_the_live_record
            );
            $crate::__conformance_case!(
                $factory,
                concurrent_creates_have_one_winner,
                check_concurrent_creates_have_one_winner
            );
            $crate::__conformance_case!(
                $factory,
                create_over_an_expired_record,
                check_create_over_an_expired_record
            );
            $crate::__conformance_case!(
                $factory,
                apply_sets_and_removes_fields,
                check_apply_sets_and_removes_fields
            );
            $crate::__conformance_case!(
                $factory,
                apply_updates_remember_only_when_given,
                check_apply_updates_remember_only_when_given
            );
            $crate::__conformance_case!(
                $factory,
                apply_caps_expiry_at_max_lifetime,
                check_apply_caps_expiry_at_max_lifetime
            );
            $crate::__conformance_case!(
                $factory,
                apply_refuses_a_record_past_its_lifetime_or_idle_time,
                check_apply_refuses_a_record_past_its_lifetime_or_idle_time
            );
            $crate::__conformance_case!(
                $factory,
                apply_same_field_last_write_wins,
                check_apply_same_field_last_write_wins
            );
            $crate::__conformance_case!(
                $factory,
                apply_on_unknown_key_is_missing,
                check_apply_on_unknown_key_is_missing
            );
            $crate::__conformance_case!(
                $factory,
                apply_on_deleted_key_is_missing,
                check_apply_on_deleted_key_is_missing
            );
            $crate::__conformance_case!(
                $factory,
                apply_on_expired_key_is_missing,
                check_apply_on_expired_key_is_missing
            );
            $crate::__conformance_case!(
                $factory,
                touch_moves_only_the_times,
                check_touch_moves_only_the_times
            );
            $crate::__conformance_case!(
                $factory,
                touch_on_unknown_or_deleted_key_is_missing,
                check_touch_on_unknown_or_deleted_key_is_missing
            );
            $crate::__conformance_case!(
                $factory,
                touch_on_expired_key_is_missing,
                check_touch_on_expired_key_is_missing
            );
            $crate::__conformance_case!(
                $factory,
                patches_on_different_fields_merge,
                check_patches_on_different_fields_merge
            );
            $crate::__conformance_case!(
                $factory,
                concurrent_patches_all_survive,
                check_concurrent_patches_all_survive
            );
            $crate::__conformance_case!(
                $factory,
                no_resurrection_under_concurrency,
                check_no_resurrection_under_concurrency
            );
            $crate::__conformance_case!(
                $factory,
                delete_reports_a_live_record_once,
                check_delete_reports_a_live_record_once
            );
            $crate::__conformance_case!(
                $factory,
                expiry_is_honoured_everywhere,
                check_expiry_is_honoured_everywhere
            );
            $crate::__conformance_case!(
                $factory,
                sessions_of_lists_exactly_the_users_sessions,
                check_sessions_of_lists_exactly_the_users_sessions
            );
            $crate::__conformance_case!(
                $factory,
                deleted_sessions_leave_the_user_index,
                check_deleted_sessions_leave_the_user_index
            );
            $crate::__conformance_case!(
                $factory,
                delete_user_with_and_without_except,
                check_delete_user_with_and_without_except
            );
            $crate::__conformance_case!(
                $factory,
                scan_pages_through_every_live_session_once,
                check_scan_pages_through_every_live_session_once
            );
            $crate::__conformance_case!(
                $factory,
                odd_field_names_survive,
                check_odd_field_names_survive
            );
            $crate::__conformance_case!(
                $factory,
                odd_values_survive_verbatim,
                check_odd_values_survive_verbatim
            );
            $crate::__conformance_case!($factory, large_values_survive, check_large_values_survive);
            $crate::__conformance_case!(
                $factory,
                odd_user_ids_are_matched_exactly,
                check_odd_user_ids_are_matched_exactly
            );
            $crate::__conformance_case!($factory, ping_answers, check_ping_answers);

            #[test]
            fn challenges_are_single_use_and_expire() {
                $crate::run(
                    || $factory,
                    |store| $crate::check_challenges_with(store, $challenges),
                );
            }

            #[test]
            fn purge_expired_removes_only_expired_records() {
                $crate::run(
                    || $factory,
                    |store| $crate::check_purge_expired_with(store, $purge),
                );
            }
        }
    };
}

/// Expands to `mod event_log { ... }` with one `#[test]` per event log check
/// ([`check_event_log_records_each_change_once`] and the others), each on a fresh store
/// with an event log.
///
/// `event_log_tests!(factory)` or `event_log_tests!(factory, expiry = ExpiryEvents::Noticed)`:
/// `factory` is a function (or closure) from the number of events the store should keep to
/// the future of a [`Fixture`]. The gap check asks for a cap of 20 and writes 300 events,
/// then purges; every other check asks for 100,000.
#[macro_export]
macro_rules! event_log_tests {
    ($factory:expr $(,)?) => {
        $crate::event_log_tests!($factory, expiry = $crate::ExpiryEvents::Purged);
    };
    ($factory:expr, expiry = $expiry:expr $(,)?) => {
        /// The event log conformance checks (cloakroom-testkit).
        mod event_log {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn records_each_change_once() {
                $crate::run(
                    || ($factory)(100_000),
                    $crate::check_event_log_records_each_change_once,
                );
            }

            #[test]
            fn skips_changes_that_did_not_happen() {
                $crate::run(
                    || ($factory)(100_000),
                    $crate::check_event_log_skips_changes_that_did_not_happen,
                );
            }

            #[test]
            fn concurrent_changes_each_once() {
                $crate::run(
                    || ($factory)(100_000),
                    $crate::check_event_log_concurrent_changes_each_once,
                );
            }

            #[test]
            fn through_the_engine() {
                $crate::run(
                    || ($factory)(100_000),
                    $crate::check_event_log_through_the_engine,
                );
            }

            #[test]
            fn wakes_watchers_of_other_engines() {
                $crate::run(
                    || ($factory)(100_000),
                    $crate::check_ended_follows_the_event_log,
                );
            }

            #[test]
            fn reports_gaps() {
                $crate::run(|| ($factory)(20), $crate::check_event_log_reports_gaps);
            }

            #[test]
            fn expiry_logged_once() {
                $crate::run(
                    || ($factory)(100_000),
                    |store| $crate::check_event_log_expiry_logged_once(store, $expiry),
                );
            }

            #[test]
            fn purge_logs_expiry() {
                $crate::run(
                    || ($factory)(100_000),
                    |store| $crate::check_event_log_purge_logs_expiry(store, $expiry),
                );
            }
        }
    };
}

/// One test of [`conformance_tests!`] on the concurrent-session limit: `$check` where the
/// store enforces it, else the check that it refuses ([`SessionLimit`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_limit_case {
    ($factory:expr, $limit:expr, $name:ident, $check:ident) => {
        #[test]
        fn $name() {
            $crate::run(
                || $factory,
                |store| async move {
                    match $limit {
                        $crate::SessionLimit::Enforced => $crate::$check(store).await,
                        $crate::SessionLimit::Refused => {
                            $crate::check_limit_refused_as_config(store).await
                        }
                    }
                },
            );
        }
    };
}

/// One test of [`conformance_tests!`]: `fn $name` running `$check`.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_case {
    ($factory:expr, $name:ident, $check:ident) => {
        #[test]
        fn $name() {
            $crate::run(|| $factory, $crate::$check);
        }
    };
}

pub mod browser;
pub mod pki;
pub mod postgres_server;
pub mod probe;
pub mod process;
pub mod redis_cluster;
pub mod redis_server;
pub mod sealed;
pub mod sentinel_server;
pub mod slow_clients;
mod spawn;
pub mod store_checks;
