//! The rotation grace through a session engine over the store
//! ([`SessionSettings::with_rotation_grace`]): the old ticket of a `cycle_id` reaches the
//! new record (reads and writes) until the grace ends and not after, a logout through either
//! ticket ends both, a login keeps no grace, and no forwarding record is ever listed as a
//! session.

use std::sync::Arc;
use std::time::Duration;

use cloakroom_core::session::{CommitAction, Session, SessionEngine, SessionSettings, Timestamp};
use cloakroom_core::store::SessionStore;
use cloakroom_core::{Key, KeyRing};

use super::{load, scan_all, sessions_of, unique_user, wait_past};

/// A short grace, so that the end-of-grace check waits about a second.
const SHORT: Duration = Duration::from_secs(1);

fn engine(store: &Arc<dyn SessionStore>, grace: Duration) -> SessionEngine {
    SessionSettings::new(Arc::clone(store), KeyRing::single(Key::generate()))
        .with_rotation_grace(grace)
        .unwrap_or_else(|e| panic!("a grace of {grace:?}: {e}"))
        .build()
}

/// Commits `session`, returning the `name=ticket` pair of its new cookie (if it set one) and
/// what the commit did.
async fn commit(engine: &SessionEngine, session: &Session) -> (Option<String>, CommitAction) {
    let outcome = engine
        .commit(session, Some("conformance/grace"))
        .await
        .unwrap_or_else(|e| panic!("commit failed: {e}"));
    let pair = outcome
        .set_cookie
        .map(|c| c.split(';').next().unwrap_or_default().to_owned());
    (pair, outcome.action)
}

/// A logged-in session of `user` with `a = 1`: its ticket.
async fn logged_in(engine: &SessionEngine, user: &str) -> String {
    let s = engine.session(None);
    s.login(user).await.unwrap();
    s.set("a", &1).await.unwrap();
    commit(engine, &s).await.0.expect("a login sets a cookie")
}

/// `cycle_id` on the session of `ticket`: the new ticket and when the rotation began.
async fn rotate(engine: &SessionEngine, ticket: &str) -> (String, Timestamp) {
    let s = engine.session(Some(ticket));
    s.cycle_id().await.unwrap();
    let at = Timestamp::now();
    let (pair, action) = commit(engine, &s).await;
    assert_eq!(action, CommitAction::Renewed);
    (pair.expect("a rotation sets a cookie"), at)
}

async fn exists(engine: &SessionEngine, ticket: &str) -> bool {
    engine.session(Some(ticket)).exists().await.unwrap()
}

/// Within the grace, the old ticket of a `cycle_id` reads the new session, and its writes
/// (after a read, and blind) land in the new record without a new cookie; the user index
/// and scan list the new record only.
pub async fn check_grace_old_ticket_reaches_the_new_session(store: Arc<dyn SessionStore>) {
    let engine = engine(&store, Duration::from_secs(30));
    let user = unique_user("grace");
    let old = logged_in(&engine, &user).await;
    let (new, _) = rotate(&engine, &old).await;
    assert_ne!(old, new);

    let s = engine.session(Some(&old));
    assert_eq!(
        s.get::<i32>("a").await.unwrap(),
        Some(1),
        "old ticket, read"
    );
    assert_eq!(s.user().await.unwrap().as_deref(), Some(user.as_str()));
    s.set("b", &2).await.unwrap();
    let (cookie, action) = commit(&engine, &s).await;
    assert_eq!(
        action,
        CommitAction::Patched,
        "old ticket, write after a read"
    );
    assert_eq!(cookie, None, "no cookie for the old ticket");
    let blind = engine.session(Some(&old));
    blind.set("c", &3).await.unwrap();
    let (cookie, action) = commit(&engine, &blind).await;
    assert_eq!(action, CommitAction::Patched, "old ticket, blind write");
    assert_eq!(cookie, None);

    let handle = engine.handle_of(&engine.session(Some(&new))).await.unwrap();
    let handle = handle.expect("the new ticket has a session");
    let record = load(&store, &handle).await.expect("the new record");
    for (field, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
        assert_eq!(
            record.data.get(field).map(String::as_str),
            Some(value),
            "{field}"
        );
    }
    let listed = sessions_of(&store, &user).await;
    assert_eq!(listed.len(), 1, "the user index lists the new record only");
    assert_eq!(listed[0].key, handle);
    // No forwarding record is listed by scan (one has at most one field and no user).
    let scanned = scan_all(&store, 50).await;
    assert!(scanned.contains_key(&handle));
    for info in scanned.values() {
        if info.meta.user.is_none() && info.fields == 1 {
            let record = load(&store, &info.key).await;
            assert!(
                !record.is_some_and(|r| r.is_forward()),
                "scan listed a forwarding record"
            );
        }
    }
}

/// The old ticket stops at the end of the grace; the new one goes on.
pub async fn check_grace_ends_on_time(store: Arc<dyn SessionStore>) {
    let engine = engine(&store, SHORT);
    let old = logged_in(&engine, &unique_user("grace-end")).await;
    let (new, at) = rotate(&engine, &old).await;
    wait_past(at.plus(SHORT)).await;
    assert!(
        !exists(&engine, &old).await,
        "the old ticket outlived the grace"
    );
    let blind = engine.session(Some(&old));
    blind.set("late", &1).await.unwrap();
    let (_, action) = commit(&engine, &blind).await;
    assert_eq!(
        action,
        CommitAction::Created,
        "a late write starts a new session"
    );
    let s = engine.session(Some(&new));
    assert_eq!(s.get::<i32>("a").await.unwrap(), Some(1));
    assert_eq!(s.get::<i32>("late").await.unwrap(), None);
}

/// A logout through either ticket, within the grace, ends both at once.
pub async fn check_grace_logout_ends_both_tickets(store: Arc<dyn SessionStore>) {
    let engine = engine(&store, Duration::from_secs(30));
    for through_old in [true, false] {
        for read_first in [true, false] {
            let user = unique_user("grace-logout");
            let old = logged_in(&engine, &user).await;
            let (new, _) = rotate(&engine, &old).await;
            let s = engine.session(Some(if through_old { &old } else { &new }));
            if read_first {
                assert!(s.exists().await.unwrap());
            }
            s.logout().await.unwrap();
            commit(&engine, &s).await;
            let case = format!("through the old ticket: {through_old}, read first: {read_first}");
            assert!(!exists(&engine, &old).await, "old ticket alive; {case}");
            assert!(!exists(&engine, &new).await, "new ticket alive; {case}");
            assert!(sessions_of(&store, &user).await.is_empty(), "{case}");
        }
    }
}

/// A login's rotation keeps no grace (session fixation), nor a `cycle_id` in the request
/// that logs in.
pub async fn check_login_rotation_has_no_grace(store: Arc<dyn SessionStore>) {
    let engine = engine(&store, Duration::from_secs(30));
    for cycle in [None, Some("before"), Some("after")] {
        let anonymous = engine.session(None);
        anonymous.set("cart", &3).await.unwrap();
        let old = commit(&engine, &anonymous).await.0.unwrap();
        let s = engine.session(Some(&old));
        if cycle == Some("before") {
            s.cycle_id().await.unwrap();
        }
        s.login(&unique_user("grace-login")).await.unwrap();
        if cycle == Some("after") {
            s.cycle_id().await.unwrap();
        }
        let (new, _) = commit(&engine, &s).await;
        let new = new.expect("a login sets a cookie");
        assert!(
            !exists(&engine, &old).await,
            "the pre-login ticket still works (cycle_id {cycle:?} the login)"
        );
        let blind = engine.session(Some(&old));
        blind.set("cart", &4).await.unwrap();
        assert_eq!(commit(&engine, &blind).await.1, CommitAction::Created);
        let after = engine.session(Some(&new));
        assert_eq!(after.get::<i32>("cart").await.unwrap(), Some(3));
    }
}
