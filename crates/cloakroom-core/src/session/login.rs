//! Who the session is for: logging in and out, renewing the id, and the signal that fires
//! when the session ends.

use super::handle::Session;
use super::lifecycle::{EndReason, Ended};
use super::recent::{self, AuthMethod};
use super::state::{Live, Phase};
use super::{CSRF_SECRET_FIELD, Error, ErrorKind, Result, SessionKey};

impl Session {
    /// Logs the session in as `user` who proved it with a password: [`login_with`](Self::login_with)
    /// and [`AuthMethod::Password`].
    ///
    /// # Errors
    /// Store failures, an empty user, or a committed response.
    pub async fn login(&self, user: &str) -> Result<()> {
        self.login_with(user, AuthMethod::Password).await
    }

    /// Logs the session in as `user`, who proved it by `method`: a new id (so a ticket
    /// planted before login is worthless), the user index updated, the CSRF secret rotated,
    /// the time and method recorded ([`last_authentication`](Self::last_authentication)).
    /// Data is kept. A login restored from a remember-me token records
    /// [`AuthMethod::RememberMe`], which never passes
    /// [`authenticated_within`](Self::authenticated_within).
    ///
    /// # Errors
    /// Store failures, an empty user, a bad [`AuthMethod::Other`] name, or a committed
    /// response.
    pub async fn login_with(&self, user: &str, method: AuthMethod) -> Result<()> {
        let auth = recent::record_now(&method)?;
        if user.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidUser,
                "user id must not be empty",
            ));
        }
        self.check_session_limit(user).await?;
        let mut st = self.state_mut().await?;
        // The renewal writes the whole record anew: a pending change of the CSRF secret
        // must not survive it.
        st.changes.remove(CSRF_SECRET_FIELD);
        st.changes.remove(recent::AUTH_FIELD);
        let live = st.live_or(|| self.fresh());
        live.record.meta.user = Some(user.to_owned());
        live.record.data.remove(CSRF_SECRET_FIELD);
        // The renewal writes the whole record: the new authentication goes in with it.
        live.record.data.insert(recent::AUTH_FIELD.to_owned(), auth);
        // A login binds to a device anew (DBSC): the commit offers registration again.
        #[cfg(feature = "dbsc")]
        live.record.data.remove(super::DEVICE_KEY_FIELD);
        self.renew(live);
        // A login changes privilege: the old ticket must stop at once (session fixation).
        live.grace = false;
        Ok(())
    }

    /// A signal that resolves, with the reason, when this session ends anywhere: a logout,
    /// a revocation from another device or by an admin, the session limit, expiry. Owned
    /// (`'static`), so a WebSocket or server-sent-events handler can keep it after the
    /// response has started and `select!` on it to close the connection:
    ///
    /// ```
    /// # async fn stream(session: cloakroom_core::session::Session) -> cloakroom_core::session::Result<()> {
    /// let ended = session.ended().await?;
    /// tokio::select! {
    ///     reason = ended => println!("session ended ({reason}); closing"),
    ///     () = std::future::pending::<()>() => {} // the connection's own work
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// How soon it fires is in [`Ended`]: at once for ends made by this process, within the
    /// [poll interval](super::SessionSettings::with_end_poll) for the others. A rotation
    /// ([`login`](Self::login), [`cycle_id`](Self::cycle_id)) is not an end: the signal
    /// follows the session to its new id. A request without a stored session (none, or one
    /// this request creates) gets a signal that has already fired ([`EndReason::Gone`];
    /// [`EndReason::Logout`] after [`logout`](Self::logout)).
    ///
    /// # Errors
    /// Store failures (loading the session).
    pub async fn ended(&self) -> Result<Ended> {
        let st = self.state().await?;
        let live = match &st.phase {
            Phase::Live(live) => live,
            Phase::Destroyed => return Ok(Ended::now(EndReason::Logout)),
            _ => return Ok(Ended::now(EndReason::Gone)),
        };
        let Some(key) = live.stored else {
            return Ok(Ended::now(EndReason::Gone));
        };
        let (user, expires_at) = (live.record.meta.user.clone(), live.record.meta.expires_at);
        drop(st);
        let shared = &self.inner.shared;
        let store = shared.store.clone();
        let timeout = shared.config.store_timeout;
        Ok(shared
            .lifecycle
            .watch(store, timeout, key, user, expires_at)
            .await)
    }

    /// The user the session is logged in as.
    ///
    /// # Errors
    /// Store failures.
    pub async fn user(&self) -> Result<Option<String>> {
        let st = self.state().await?;
        Ok(st.record().and_then(|r| r.meta.user.clone()))
    }

    /// Logs out: the session is deleted from the store at commit and the cookie removed. Needs no load:
    /// without one, when the request carried several verified tickets (see
    /// [`SessionEngine::session_from_headers`](super::SessionEngine::session_from_headers)),
    /// the sessions of all of them are deleted. A change made afterwards starts a new
    /// session (new id); the destroyed one stays destroyed.
    ///
    /// # Errors
    /// A committed response.
    pub async fn logout(&self) -> Result<()> {
        let mut st = self.inner.state.lock().await;
        if st.committed {
            return Err(Error::new(
                ErrorKind::Committed,
                "logout after the response was committed; the session was not ended",
            ));
        }
        let phase = std::mem::replace(&mut st.phase, Phase::Destroyed);
        match phase {
            Phase::Unloaded { first, fallbacks } => {
                let keys = std::iter::once(&first).chain(&fallbacks);
                let keys: Vec<SessionKey> = keys.map(|id| self.key_of(id)).collect();
                st.retired.extend(keys);
            }
            Phase::Live(live) => {
                st.retired.extend(live.stored);
                st.retired_forward = live.forward;
                st.retired_user = live.record.meta.user;
            }
            Phase::Absent { .. } | Phase::Destroyed => {}
        }
        st.changes.clear();
        Ok(())
    }

    /// Gives the session a new id, keeping its data (a periodic rotation, a remember-me
    /// refresh); the old ticket stops working, after the rotation grace if one is configured
    /// ([`SessionSettings::with_rotation_grace`](super::SessionSettings::with_rotation_grace)),
    /// unless this request also logs in (a login has no grace). A device-bound session (DBSC)
    /// loses its binding with its old id and is offered registration again.
    ///
    /// # Errors
    /// Store failures, or a committed response.
    pub async fn cycle_id(&self) -> Result<()> {
        let mut st = self.state_mut().await?;
        if let Phase::Live(live) = &mut st.phase {
            // Already renewing for a login: that renewal keeps no grace.
            live.grace = !live.renew || live.grace;
            // The DBSC session identifier is the handle, which changes: the device binds
            // anew (the commit offers registration again, as after a login).
            live.record.data.remove(super::DEVICE_KEY_FIELD);
            self.renew(live);
        }
        Ok(())
    }

    /// Marks `live` for a new id at commit.
    fn renew(&self, live: &mut Live) {
        live.renew = true;
        live.id = Some(self.inner.shared.new_id(&live.record));
    }
}
