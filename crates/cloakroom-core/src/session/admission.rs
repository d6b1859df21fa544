//! The concurrent-session limit, as the engine applies it
//! ([`SessionSettings::with_max_sessions_per_user`](super::SessionSettings::with_max_sessions_per_user)).
//! The store enforces it atomically when a logged-in record is created
//! ([`SessionStore::create_limited`](crate::store::SessionStore::create_limited)); this module
//! decides when that applies, checks early for a refusing policy (so a login handler gets
//! [`ErrorKind::SessionLimit`] while it can still render a page), and turns the tombstone
//! an ended session leaves into "no session, and a flash message saying why" on that
//! session's next request. Ordinary requests pay nothing: a tombstone is only ever met by
//! the load the request makes anyway.

use super::handle::Session;
use super::limits::timed;
use super::state::Live;
use super::{Error, ErrorKind, Result, SessionConfig, SessionKey};
use crate::flash::{Level, Message, SESSION_FIELD};
use crate::store::{EndedBy, Limit, LimitPolicy, Record};

/// The flash message of a session an admin ended (followed by their message, if any).
pub const ENDED_BY_ADMIN_MESSAGE: &str = "You were signed out here by an administrator.";

/// The flash message of a session ended by the concurrent-session limit.
pub const ENDED_BY_LIMIT_MESSAGE: &str =
    "You were signed out here because your account signed in on too many devices.";

/// The limit a new record must be created under: `Some` for a logged-in record when a
/// limit is configured; `replacing` is the record a renewal replaces.
pub(super) fn limit_for(
    config: &SessionConfig,
    record: &Record,
    replacing: Option<SessionKey>,
) -> Option<Limit> {
    let max = config.max_sessions_per_user?;
    record.meta.user.as_ref()?;
    Some(Limit {
        max,
        policy: config.session_limit_policy,
        replacing,
    })
}

/// The error of a login refused by the limit.
pub(super) fn refused() -> Error {
    Error::new(
        ErrorKind::SessionLimit,
        "the user holds the most sessions allowed; the login was refused",
    )
}

/// Makes `live` (a session this request starts) carry the flash that says why its previous
/// session ended.
pub(super) fn flash_ended(live: &mut Live, why: Option<EndedBy>) -> (String, String) {
    let text = match why {
        Some(EndedBy::Admin(Some(message))) => format!("{ENDED_BY_ADMIN_MESSAGE} {message}"),
        Some(EndedBy::Admin(None)) => ENDED_BY_ADMIN_MESSAGE.to_owned(),
        _ => ENDED_BY_LIMIT_MESSAGE.to_owned(),
    };
    let message = Message {
        level: Level::Warning,
        text,
    };
    let json = serde_json::to_string(&[message]).expect("messages serialize");
    live.record
        .data
        .insert(SESSION_FIELD.to_owned(), json.clone());
    (SESSION_FIELD.to_owned(), json)
}

impl Session {
    /// With a refusing limit, fails a login of `user` that the limit would refuse (one
    /// `sessions_of`), so the handler can show why. The commit checks again, atomically:
    /// this is the early answer, not the guarantee.
    pub(super) async fn check_session_limit(&self, user: &str) -> Result<()> {
        let config = self.config();
        let Some(max) = config.max_sessions_per_user else {
            return Ok(());
        };
        if config.session_limit_policy != LimitPolicy::RefuseNew {
            return Ok(());
        }
        let (current_user, stored) = self.user_and_stored_key().await?;
        let limit = config.store_timeout;
        let sessions = timed(limit, self.store().sessions_of(user)).await?;
        let replacing = stored.filter(|_| current_user.as_deref() == Some(user));
        let others = sessions.iter().filter(|s| Some(s.key) != replacing).count();
        if others >= max {
            return Err(refused());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::keys::{Key, KeyRing};
    use crate::session::{SessionEngine, SessionSettings};
    use crate::store::MemoryStore;

    fn engine(store: &Arc<MemoryStore>, policy: LimitPolicy) -> SessionEngine {
        SessionSettings::new(store.clone(), KeyRing::single(Key::generate()))
            .with_max_sessions_per_user(3)
            .unwrap()
            .with_session_limit_policy(policy)
            .build()
    }

    /// Logs `user` in from a new browser: its `name=ticket` pair.
    async fn login(engine: &SessionEngine, user: &str) -> Result<String> {
        let s = engine.session(None);
        s.login(user).await?;
        let cookie = engine.commit(&s, None).await?.set_cookie.unwrap();
        Ok(cookie.split(';').next().unwrap().to_owned())
    }

    #[tokio::test]
    async fn the_fourth_login_ends_the_first_and_its_browser_is_told_once() {
        let store = Arc::new(MemoryStore::new());
        let engine = engine(&store, LimitPolicy::EndLeastRecentlySeen);
        let mut browsers = Vec::new();
        for _ in 0..4 {
            browsers.push(login(&engine, "ada").await.unwrap());
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        assert_eq!(engine.sessions_of("ada").await.unwrap().len(), 3);

        // The first browser's next request: no session, and a flash that says why.
        let next = engine.session(Some(&browsers[0]));
        assert_eq!(
            next.user().await.unwrap(),
            None,
            "the ended session is gone"
        );
        let shown = next.flash().take().await.unwrap();
        assert_eq!(shown.len(), 1);
        assert_eq!(shown[0].text, ENDED_BY_LIMIT_MESSAGE);
        let outcome = engine.commit(&next, None).await.unwrap();
        assert!(
            outcome.set_cookie.unwrap().contains("Max-Age=0"),
            "the ended ticket is cleared"
        );
        // Shown once: the tombstone went with that commit.
        let again = engine.session(Some(&browsers[0]));
        assert!(again.flash().take().await.unwrap().is_empty());
        // The others are still logged in.
        for b in &browsers[1..] {
            let s = engine.session(Some(b));
            assert_eq!(s.user().await.unwrap().as_deref(), Some("ada"));
        }
    }

    #[tokio::test]
    async fn a_flash_not_shown_moves_into_a_new_session() {
        let store = Arc::new(MemoryStore::new());
        let engine = engine(&store, LimitPolicy::EndLeastRecentlySeen);
        let first = login(&engine, "ada").await.unwrap();
        for _ in 0..3 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            login(&engine, "ada").await.unwrap();
        }
        // A request that does not show flashes (a redirect to the login page, say).
        let redirect = engine.session(Some(&first));
        assert_eq!(redirect.user().await.unwrap(), None);
        let cookie = engine
            .commit(&redirect, None)
            .await
            .unwrap()
            .set_cookie
            .unwrap();
        let ticket = cookie.split(';').next().unwrap();
        assert_ne!(ticket, first, "a new anonymous session carries the flash");
        let page = engine.session(Some(ticket));
        let shown = page.flash().take().await.unwrap();
        assert_eq!(shown[0].text, ENDED_BY_LIMIT_MESSAGE);
    }

    #[tokio::test]
    async fn a_refusing_limit_fails_the_login_early_and_at_commit() {
        let store = Arc::new(MemoryStore::new());
        let engine = engine(&store, LimitPolicy::RefuseNew);
        for _ in 0..2 {
            login(&engine, "ada").await.unwrap();
        }
        // Two logins pass the early check at once; the commit admits one.
        let (a, b) = (engine.session(None), engine.session(None));
        a.login("ada").await.unwrap();
        b.login("ada").await.unwrap();
        engine.commit(&a, None).await.unwrap();
        let err = engine.commit(&b, None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionLimit);
        #[cfg(feature = "http")]
        assert_eq!(
            crate::response::error_status(&err),
            http::StatusCode::CONFLICT
        );
        // Now the early check refuses, before anything is written.
        let err = login(&engine, "ada").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SessionLimit);
        assert_eq!(engine.sessions_of("ada").await.unwrap().len(), 3);
        // Another user is not limited by ada's sessions.
        login(&engine, "bob").await.unwrap();
    }

    #[tokio::test]
    async fn renewing_a_session_at_the_limit_ends_nobody() {
        let store = Arc::new(MemoryStore::new());
        let engine = engine(&store, LimitPolicy::RefuseNew);
        let mut browsers = Vec::new();
        for _ in 0..3 {
            browsers.push(login(&engine, "ada").await.unwrap());
        }
        let s = engine.session(Some(&browsers[0]));
        s.cycle_id().await.unwrap();
        engine.commit(&s, None).await.unwrap();
        let again = engine.session(Some(&browsers[1]));
        again.login("ada").await.unwrap();
        engine.commit(&again, None).await.unwrap();
        assert_eq!(engine.sessions_of("ada").await.unwrap().len(), 3);
    }

    #[test]
    fn a_zero_limit_is_refused() {
        let settings = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate()));
        let err = settings.with_max_sessions_per_user(0).unwrap_err();
        assert_eq!(err.kind(), crate::ConfigErrorKind::ZeroLimit);
    }
}
