//! The DBSC flow on a [`SessionEngine`] outside the endpoints: what a login response adds,
//! the bound cookie's checks (the device-bound guard, the early challenge near its expiry)
//! and the store steps the endpoints share.

use std::fmt;
use std::time::Duration;

use super::bound::{BoundRaw, bound_cookie_session, bound_cookie_value};
use super::{
    CHALLENGE_HEADER, DbscPolicy, DbscSettings, REGISTRATION_HEADER, challenge_header,
    new_challenge, registration_header,
};
use crate::cookie::CookieConfig;
use crate::id::{SessionKey, Timestamp};
use crate::session::{CommitAction, CommitOutcome, Result, Session, SessionEngine};
use crate::store::{Applied, Created, Patch, Record};

/// A request whose bound cookie, registered and for session `key`, is in its early-challenge
/// window: what [`SessionEngine::dbsc_near_expiry`] found, for
/// [`SessionEngine::dbsc_response_headers`] at response time.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NearExpiry {
    key: SessionKey,
}

impl fmt::Debug for NearExpiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NearExpiry(REDACTED)")
    }
}
impl SessionEngine {
    /// The DBSC settings, when DBSC is on.
    pub(super) fn dbsc(&self) -> Option<&DbscSettings> {
        self.config()
            .dbsc
            .as_ref()
            .filter(|d| d.policy != DbscPolicy::Off)
    }

    /// The bound cookie: the session cookie's attributes under the name `<name>_bound`.
    pub(super) fn bound_cookie(&self) -> CookieConfig {
        let mut cookie = self.config().cookie.clone();
        cookie.name.push_str("_bound");
        cookie
    }

    /// The headers a response adds after `outcome` (its commit): after a login (the renewal
    /// of a logged-in session) with DBSC on, a bound cookie for the session, which covers
    /// the requests racing the registration, and `Secure-Session-Registration` with a fresh
    /// challenge bound to the session. Empty otherwise, and for a session whose ticket is
    /// answered in a header (an API client: it keeps no cookies).
    ///
    /// # Errors
    /// Store failures.
    pub(crate) async fn dbsc_headers(
        &self,
        session: &Session,
        outcome: &CommitOutcome,
    ) -> Result<Vec<(&'static str, String)>> {
        let Some(dbsc) = self.dbsc() else {
            return Ok(Vec::new());
        };
        // A ticket answered in a header (an API client) gets no cookie: nothing to bind.
        if outcome.action != CommitAction::Renewed
            || outcome.set_cookie.is_none()
            || session.user().await?.is_none()
        {
            return Ok(Vec::new());
        }
        let Some(key) = self.handle_of(session).await? else {
            return Ok(Vec::new());
        };
        let challenge = self.put_challenge(dbsc, &key).await?;
        let registration = registration_header(&dbsc.registration_path, &challenge, None)
            .expect("the path is checked by the settings and the challenge is base64url");
        let lifetime = dbsc.login_grace.min(dbsc.bound_lifetime);
        Ok(vec![
            ("Set-Cookie", self.bound_set_cookie(&key, lifetime, false)),
            (REGISTRATION_HEADER, registration),
        ])
    }

    /// Whether `cookie_header` carries a bound cookie for the session `key` that has not
    /// expired: a MAC check, no store access.
    pub fn dbsc_bound_cookie_valid(&self, key: &SessionKey, cookie_header: Option<&str>) -> bool {
        let cookie = self.bound_cookie();
        crate::cookie::cookie_values(cookie_header.map(str::as_bytes), &cookie.name).any(|value| {
            bound_cookie_session(self.keys(), &cookie.name, value.as_bytes()) == Some(*key)
        })
    }

    /// Whether the response to this request should offer an early challenge: DBSC is on and
    /// `cookie_headers` carry a bound cookie of a registered session that is in its last
    /// stretch (the last 3 minutes, or the last half of a shorter bound lifetime; see
    /// [`DbscSettings::with_bound_lifetime`]). Adapters call it before the application runs
    /// and hand the answer to [`SessionEngine::dbsc_response_headers`]. No store command: the
    /// expiry is read first and the MAC is checked only for a cookie in the window, so a
    /// request with a fresh bound cookie costs a base64 decode.
    pub fn dbsc_near_expiry<'h>(
        &self,
        cookie_headers: impl IntoIterator<Item = &'h [u8]>,
    ) -> Option<NearExpiry> {
        let dbsc = self.dbsc()?;
        let name = format!("{}_bound", self.config().cookie.name);
        let now = Timestamp::now();
        crate::cookie::cookie_values(cookie_headers, &name)
            .filter_map(|value| BoundRaw::decode(value.as_bytes()))
            .filter(|raw| raw.registered() && dbsc.early.due(raw.expires_at(), now))
            .find_map(|raw| raw.verify(self.keys(), &name))
            .map(|key| NearExpiry { key })
    }

    /// The early challenge for a response (Chromium keeps it and signs it at its next
    /// refresh, which then needs no 403 round trip): `Secure-Session-Challenge:
    /// "<challenge>";id="<session identifier>"` with a fresh single-use challenge kept by the
    /// store's `put_challenge` (one store command), when [`SessionEngine::dbsc_near_expiry`]
    /// found the request's bound cookie near its expiry, the response keeps that session
    /// (not a login, `cycle_id` or logout), and this process offered that session none in
    /// the last half window. `None` otherwise, without a store command. The registration and
    /// refresh answers always carry the next challenge.
    ///
    /// # Errors
    /// Store failures.
    pub(crate) async fn dbsc_early_challenge(
        &self,
        session: &Session,
        outcome: &CommitOutcome,
        near: NearExpiry,
    ) -> Result<Option<(&'static str, String)>> {
        let Some(dbsc) = self.dbsc() else {
            return Ok(None);
        };
        if matches!(
            outcome.action,
            CommitAction::Renewed | CommitAction::Destroyed | CommitAction::Vanished
        ) || session.ticket_key().await != Some(near.key)
            || !dbsc.early.admit(&near.key)
        {
            return Ok(None);
        }
        let challenge = self.put_challenge(dbsc, &near.key).await?;
        let value = challenge_header(&challenge, &near.key.to_handle())
            .expect("a challenge and a handle are base64url");
        Ok(Some((CHALLENGE_HEADER, value)))
    }

    /// Everything DBSC adds to a response after its commit, for the adapters. After a commit
    /// that renewed a logged-in session (a login) with DBSC on: a bound cookie for the
    /// session, which covers the requests racing the registration, and
    /// `Secure-Session-Registration` with a fresh challenge bound to the session (nothing
    /// for a session whose ticket is answered in a header: an API client keeps no cookies).
    /// Otherwise, when `near` ([`SessionEngine::dbsc_near_expiry`]) found the request's
    /// bound cookie near its expiry, the response keeps that session and this process
    /// offered it none in the last half window: the early challenge,
    /// `Secure-Session-Challenge: "<challenge>";id="<session identifier>"` (Chromium signs
    /// it at its next refresh, which then needs no 403 round trip), and
    /// `Cache-Control: no-store` (a challenge names the session, so no shared cache may keep
    /// it; an adapter adds that header only where the handler chose no caching policy). One
    /// store command (`put_challenge`) when there is something to add, none otherwise. A
    /// store failure is logged and adds nothing: the response stands without them.
    pub async fn dbsc_response_headers(
        &self,
        session: &Session,
        outcome: &CommitOutcome,
        near: Option<NearExpiry>,
    ) -> Vec<(&'static str, String)> {
        let headers = if outcome.action == CommitAction::Renewed {
            self.dbsc_headers(session, outcome).await
        } else if let Some(near) = near {
            let early = self.dbsc_early_challenge(session, outcome, near).await;
            early.map(|challenge| match challenge {
                Some(challenge) => vec![challenge, ("Cache-Control", "no-store".to_owned())],
                None => Vec::new(),
            })
        } else {
            return Vec::new();
        };
        headers.unwrap_or_else(|error| {
            tracing::warn!(%error, "DBSC headers not added");
            Vec::new()
        })
    }

    pub(super) async fn load_record(&self, key: &SessionKey) -> Result<Option<Record>> {
        self.timed(self.store().load(key)).await
    }

    /// Whether the patch found the record.
    pub(super) async fn apply_patch(&self, key: &SessionKey, patch: &Patch) -> Result<bool> {
        Ok(self.timed(self.store().apply(key, patch)).await? == Applied::Done)
    }

    pub(super) async fn put_challenge(
        &self,
        dbsc: &DbscSettings,
        key: &SessionKey,
    ) -> Result<String> {
        let expires_at = Timestamp::now().plus(dbsc.challenge_ttl);
        loop {
            let challenge = new_challenge();
            let store = self.store();
            if self
                .timed(store.put_challenge(&challenge, key, expires_at))
                .await?
                == Created::Done
            {
                return Ok(challenge);
            }
        }
    }

    pub(super) async fn take_challenge(&self, challenge: &str) -> Result<Option<SessionKey>> {
        self.timed(self.store().take_challenge(challenge)).await
    }

    pub(super) fn bound_set_cookie(
        &self,
        key: &SessionKey,
        lifetime: Duration,
        registered: bool,
    ) -> String {
        let cookie = self.bound_cookie();
        let expires_at = Timestamp::now().plus(lifetime);
        let value = bound_cookie_value(self.keys(), &cookie.name, key, expires_at, registered);
        cookie.set_cookie(&value, Some(lifetime))
    }
}

impl Session {
    /// Whether this request may reach a route that needs a device-bound session (the
    /// adapters' device-bound guards ask): always with DBSC off, without a ticket (no
    /// session to protect: the route's own login check decides), or with a fresh bound
    /// cookie for the ticket's session (a MAC check, no store command). Otherwise the
    /// session is loaded: refused if it registered a device key (a copied ticket without
    /// the bound cookie, which only the device can renew), and under
    /// [`DbscPolicy::Required`] if it is logged in at all (the login's grace is over and
    /// the browser never registered); admitted otherwise.
    ///
    /// # Errors
    /// Store failures.
    pub async fn dbsc_admits<'h>(
        &self,
        cookie_headers: impl IntoIterator<Item = &'h [u8]>,
    ) -> Result<bool> {
        let engine = self.engine();
        let Some(dbsc) = engine.dbsc() else {
            return Ok(true);
        };
        let Some(key) = self.ticket_key().await else {
            return Ok(true);
        };
        let name = engine.bound_cookie().name;
        let fresh = crate::cookie::cookie_values(cookie_headers, &name)
            .any(|v| bound_cookie_session(engine.keys(), &name, v.as_bytes()) == Some(key));
        if fresh {
            return Ok(true);
        }
        let (logged_in, bound) = self.dbsc_state().await?;
        let required = dbsc.policy == DbscPolicy::Required;
        Ok(!bound && (!logged_in || !required))
    }
}
#[cfg(test)]
mod tests;
