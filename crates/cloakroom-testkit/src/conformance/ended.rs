//! [`Session::ended`] through session engines over the store: ends made by the watcher's
//! own engine (logout, revocation) fire at once with their reason; a rotation moves the
//! watcher instead of firing it; an end made by another engine over the same store (as
//! another process would) fires within the poll interval, as does expiry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloakroom_core::session::{EndReason, Ended, SessionEngine, SessionSettings};
use cloakroom_core::store::SessionStore;
use cloakroom_core::{Key, KeyRing};

use super::unique_user;

/// The poll interval of the checks' engines.
const POLL: Duration = Duration::from_millis(150);
/// How long an end made in-process may take to reach a watcher (scheduling only).
const AT_ONCE: Duration = Duration::from_millis(500);
/// How long an end made elsewhere may take: the poll interval plus a loaded machine's slack.
const POLLED: Duration = Duration::from_millis(150 + 1_500);

fn engine(store: &Arc<dyn SessionStore>, keys: &KeyRing) -> SessionEngine {
    SessionSettings::new(Arc::clone(store), keys.clone())
        .with_end_poll(POLL)
        .expect("a valid poll interval")
        .build()
}

/// A logged-in session of `user`: its `name=ticket` pair.
async fn login(engine: &SessionEngine, user: &str) -> String {
    let s = engine.session(None);
    s.login(user).await.unwrap();
    cookie(engine, &s).await.expect("a login sets a cookie")
}

async fn cookie(engine: &SessionEngine, s: &cloakroom_core::session::Session) -> Option<String> {
    let outcome = engine
        .commit(s, Some("conformance/ended"))
        .await
        .unwrap_or_else(|e| panic!("commit failed: {e}"));
    outcome
        .set_cookie
        .map(|c| c.split(';').next().unwrap_or_default().to_owned())
}

/// The end signal of the session of `ticket`, from a request of `engine`.
async fn watch(engine: &SessionEngine, ticket: &str) -> Ended {
    let s = engine.session(Some(ticket));
    let ended = s.ended().await.unwrap_or_else(|e| panic!("ended(): {e}"));
    cookie(engine, &s).await;
    ended
}

/// Waits for `ended` at most `within`: the reason and how long it took.
async fn fired(ended: Ended, within: Duration, what: &str) -> (EndReason, Duration) {
    let start = Instant::now();
    match tokio::time::timeout(within, ended).await {
        Ok(reason) => (reason, start.elapsed()),
        Err(_) => panic!("{what}: the end signal did not fire within {within:?}"),
    }
}

/// `ended` must not fire within `wait`; gives it back.
async fn quiet(mut ended: Ended, wait: Duration, what: &str) -> Ended {
    if let Ok(reason) = tokio::time::timeout(wait, &mut ended).await {
        panic!("{what}: the end signal fired ({reason}) for a live session");
    }
    ended
}

/// Ends made by the watcher's own engine reach it at once, with their reason; a rotation
/// does not end the session, and the watcher follows it to the new id.
pub async fn check_ended_fires_at_once_in_process(store: Arc<dyn SessionStore>) {
    let keys = KeyRing::single(Key::generate());
    let engine = engine(&store, &keys);
    let user = unique_user("ended");

    // Logout, from another request.
    let ticket = login(&engine, &user).await;
    let ended = quiet(watch(&engine, &ticket).await, POLL * 3, "a live session").await;
    let s = engine.session(Some(&ticket));
    s.logout().await.unwrap();
    cookie(&engine, &s).await;
    let (reason, _) = fired(ended, AT_ONCE, "a logout").await;
    assert_eq!(reason, EndReason::Logout, "a logout ends with Logout");

    // A rotation moves the watcher; the logout of the new ticket then fires it.
    let ticket = login(&engine, &user).await;
    let ended = watch(&engine, &ticket).await;
    let s = engine.session(Some(&ticket));
    s.cycle_id().await.unwrap();
    let rotated = cookie(&engine, &s).await.expect("a rotation sets a cookie");
    let ended = quiet(ended, POLL * 3, "a rotated session").await;
    let s = engine.session(Some(&rotated));
    s.logout().await.unwrap();
    cookie(&engine, &s).await;
    let (reason, _) = fired(ended, AT_ONCE, "a logout after a rotation").await;
    assert_eq!(reason, EndReason::Logout);

    // Revocation of all the user's sessions but one: the others fire, that one does not.
    let kept = login(&engine, &user).await;
    let gone = login(&engine, &user).await;
    let kept_watch = watch(&engine, &kept).await;
    let gone_watch = watch(&engine, &gone).await;
    let s = engine.session(Some(&kept));
    let n = engine.revoke_others(&s).await.unwrap();
    cookie(&engine, &s).await;
    assert_eq!(n, 1, "revoke_others ends the other session");
    let (reason, _) = fired(gone_watch, AT_ONCE, "revoke_others").await;
    assert_eq!(reason, EndReason::Revoked);
    let kept_watch = quiet(kept_watch, POLL * 3, "the session revoke_others kept").await;

    // Revocation of one session by its handle.
    let s = engine.session(Some(&kept));
    let handle = engine.handle_of(&s).await.unwrap().expect("a handle");
    assert!(engine.revoke(&user, &handle).await.unwrap());
    let (reason, _) = fired(kept_watch, AT_ONCE, "revoke").await;
    assert_eq!(reason, EndReason::Revoked);
}

/// An end made by another engine over the same store (another process) reaches a watcher
/// within the poll interval; so does the session's expiry.
pub async fn check_ended_sees_other_processes_within_the_poll(store: Arc<dyn SessionStore>) {
    let keys = KeyRing::single(Key::generate());
    let here = engine(&store, &keys);
    let there = engine(&store, &keys);
    let user = unique_user("ended-elsewhere");

    let ticket = login(&here, &user).await;
    let ended = quiet(watch(&here, &ticket).await, POLL * 3, "a live session").await;
    let s = there.session(Some(&ticket));
    s.logout().await.unwrap();
    cookie(&there, &s).await;
    let (reason, took) = fired(ended, POLLED, "a logout by another engine").await;
    // Without an event log the poll sees the record gone and cannot know why: Gone. With
    // one, the reason is in the log before the record is gone, and the watcher waits for it
    // even when the poll comes first.
    let logged = store.event_log().is_some();
    let want = |why: EndReason, got: &EndReason| match logged {
        true => *got == why,
        false => *got == EndReason::Gone,
    };
    assert!(
        want(EndReason::Logout, &reason),
        "a logout elsewhere: {reason:?}"
    );
    assert!(took <= POLLED, "took {took:?}");

    let ticket = login(&here, &user).await;
    let ended = watch(&here, &ticket).await;
    let n = there.revoke_all(&user, None).await.unwrap();
    assert!(n >= 1, "revoke_all by another engine ends the session");
    let (reason, _) = fired(ended, POLLED, "revoke_all by another engine").await;
    assert!(
        want(EndReason::Revoked, &reason),
        "revoke_all elsewhere: {reason:?}"
    );

    // Expiry: a session with a one-second idle timeout, left alone.
    let short = SessionSettings::new(Arc::clone(&store), keys.clone())
        .with_end_poll(Duration::from_secs(60))
        .expect("a valid poll interval")
        .with_idle_timeout(Duration::from_secs(1))
        .expect("a valid idle timeout")
        .build();
    let ticket = login(&short, &user).await;
    let ended = watch(&short, &ticket).await;
    let (reason, took) = fired(ended, Duration::from_secs(4), "expiry").await;
    assert_eq!(
        reason,
        EndReason::Expired,
        "an idle timeout ends with Expired"
    );
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

/// With an event log, an end made by another engine (another process) reaches a watcher
/// from the log, with its reason, long before the poll (set to a minute here) would: a
/// logout, a rotation followed across engines, a revocation of all the user's sessions.
pub async fn check_ended_follows_the_event_log(store: Arc<dyn SessionStore>) {
    let keys = KeyRing::single(Key::generate());
    let slow = |store: &Arc<dyn SessionStore>| {
        SessionSettings::new(Arc::clone(store), keys.clone())
            .with_end_poll(Duration::from_secs(60))
            .expect("a valid poll interval")
            .build()
    };
    let (here, there) = (slow(&store), slow(&store));
    let user = unique_user("ended-log");
    let within = Duration::from_millis(1_500);

    let ticket = login(&here, &user).await;
    let ended = watch(&here, &ticket).await;
    let s = there.session(Some(&ticket));
    s.logout().await.unwrap();
    cookie(&there, &s).await;
    let (reason, took) = fired(ended, within, "a logout by another engine").await;
    assert_eq!(reason, EndReason::Logout, "the log says why");
    assert!(took <= within, "took {took:?}");

    // A rotation made elsewhere moves the watcher; the revocation then reaches it.
    let ticket = login(&here, &user).await;
    let ended = watch(&here, &ticket).await;
    let s = there.session(Some(&ticket));
    s.cycle_id().await.unwrap();
    cookie(&there, &s).await;
    let ended = quiet(ended, Duration::from_millis(600), "a rotation elsewhere").await;
    there.revoke_all(&user, None).await.unwrap();
    let (reason, _) = fired(ended, within, "revoke_all by another engine").await;
    assert_eq!(reason, EndReason::Revoked);
}
