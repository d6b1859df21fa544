//! [`SessionEngine`]: one per application (store, keys, configuration); turns each
//! request's `Cookie` headers into a [`Session`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use super::handle::Session;
#[cfg(test)]
use super::lifecycle::DEFAULT_END_POLL;
use super::lifecycle::{EndReason, EventKind, Lifecycle};
use super::limits::timed;
use super::shared::Shared;
use super::state::Phase;
use super::{
    CommitOutcome, Error, ErrorKind, MAX_CANDIDATES, Result, SessionConfig, SessionId, SessionKey,
    Transport, transport,
};
use crate::cookie::TicketFormat;
use crate::keys::KeyRing;
#[cfg(test)]
use crate::store::IntoSessionStore;
use crate::store::{self, SessionInfo, SessionStore};
use crate::store::{end_session, end_user};

/// One per application: the store, the keys and the configuration.
///
/// Requests' `Cookie` headers are read as bytes (a neighbour's malformed cookie costs only
/// itself). When a request carries several cookies of our name, the session is the first
/// whose ticket verifies **and** whose record the store knows; see
/// [`SessionEngine::session_from_headers`].
#[derive(Clone)]
pub struct SessionEngine {
    shared: Arc<Shared>,
}

impl fmt::Debug for SessionEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionEngine")
            .field("keys", &self.shared.keys)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl SessionEngine {
    /// An engine from checked parts: only [`SessionSettings::build`](super::SessionSettings::build)
    /// (and the crate's tests) call it.
    pub(crate) fn from_parts(
        store: Arc<dyn SessionStore>,
        keys: KeyRing,
        config: SessionConfig,
        format: Arc<dyn TicketFormat>,
        lifecycle: Lifecycle,
    ) -> Self {
        SessionEngine {
            shared: Arc::new(Shared {
                store,
                keys,
                config,
                format,
                lifecycle,
            }),
        }
    }

    /// The engine a session of it shares its state with.
    #[cfg(feature = "dbsc")]
    pub(super) fn of_shared(shared: Arc<Shared>) -> Self {
        SessionEngine { shared }
    }

    /// An engine over `store` with `config` and the default ticket format, for the crate's
    /// tests (which set fields the settings check).
    #[cfg(test)]
    pub(crate) fn new(store: impl IntoSessionStore, keys: KeyRing, config: SessionConfig) -> Self {
        let format = Arc::new(crate::cookie::SignedTicket(keys.clone()));
        let lifecycle = Lifecycle::new(None, DEFAULT_END_POLL);
        Self::from_parts(store.into_session_store(), keys, config, format, lifecycle)
    }

    /// The ticket format.
    #[cfg(test)]
    pub(crate) fn ticket_format(&self) -> &Arc<dyn TicketFormat> {
        &self.shared.format
    }

    /// The configuration.
    #[cfg(any(test, feature = "dbsc"))]
    pub(crate) fn config(&self) -> &SessionConfig {
        &self.shared.config
    }

    /// The key ring.
    #[cfg(any(test, feature = "dbsc"))]
    pub(crate) fn keys(&self) -> &KeyRing {
        &self.shared.keys
    }

    /// The store.
    #[cfg(feature = "dbsc")]
    pub(crate) fn store(&self) -> &Arc<dyn SessionStore> {
        &self.shared.store
    }

    /// The largest session data `set` accepts ([`SessionSettings::with_max_data_bytes`](super::SessionSettings::with_max_data_bytes)).
    pub fn max_data_bytes(&self) -> usize {
        self.shared.config.max_data_bytes
    }

    /// The session of a request whose `Cookie` header is `cookie_header` (a convenience for
    /// tests and single-header callers; see [`SessionEngine::session_from_headers`]).
    pub fn session(&self, cookie_header: Option<&str>) -> Session {
        self.session_from_headers(cookie_header.map(str::as_bytes))
    }

    /// The session of a request, from its `Cookie` header values as bytes (every `Cookie`
    /// header of the request: HTTP/2 sends several), read with
    /// [`cookie_values`](crate::cookie::cookie_values): a neighbour's malformed cookie
    /// costs nothing but itself.
    ///
    /// Nothing is loaded yet, and a cookie that does not verify means no session (and no store
    /// call). **Several cookies of our name** (a neighbour on the same site can plant one; a
    /// browser sends a planted cookie with a longer `Path` *before* ours): every ticket that
    /// verifies is kept, in header order, up to 4; the first load tries them
    /// in that order and the session is the **first whose record the store knows** (live and
    /// within this server's timeouts). So a planted garbage pair, or a planted ticket of a
    /// session that has ended, cannot shadow the real one. A planted ticket of a *live*
    /// session (the attacker's own) that comes first does win: the server cannot tell it
    /// apart; `__Host-` cookie names (HTTPS) stop neighbours from planting it.
    ///
    /// With one verified ticket (the usual case) this allocates nothing and costs one store
    /// load; each further ticket costs at most one more load, only when
    /// the ones before it are unknown.
    pub fn session_from_headers<'h>(
        &self,
        cookie_headers: impl IntoIterator<Item = &'h [u8]>,
    ) -> Session {
        let (first, more, had_cookie) = self.cookie_tickets(cookie_headers);
        self.new_session(first, more, had_cookie, false)
    }

    /// The verified tickets of our cookie name in `cookie_headers` (the first, the others up
    /// to [`MAX_CANDIDATES`]), and whether any cookie of our name came.
    fn cookie_tickets<'h>(
        &self,
        cookie_headers: impl IntoIterator<Item = &'h [u8]>,
    ) -> (Option<SessionId>, Vec<SessionId>, bool) {
        let name = self.shared.config.cookie.name.as_str();
        let mut first = None;
        let mut more = Vec::new();
        let mut had_cookie = false;
        for value in crate::cookie::cookie_values(cookie_headers, name) {
            had_cookie = true;
            match self.shared.format.decode(name, value) {
                Ok(id) if first.is_none() => first = Some(id),
                Ok(id) if first.as_ref() == Some(&id) || more.contains(&id) => {}
                Ok(id) => {
                    more.push(id);
                    if more.len() + 1 >= MAX_CANDIDATES {
                        break;
                    }
                }
                Err(reason) => tracing::debug!(%reason, "ignoring session cookie"),
            }
        }
        (first, more, had_cookie)
    }

    /// The request header a ticket is read from (lower case), or `None` when the transport
    /// is the cookie only: adapters read that header only when this names one, so a
    /// cookie-only engine never looks at request headers beyond `Cookie`.
    pub fn ticket_header(&self) -> Option<&str> {
        match self.shared.config.transport {
            Transport::Cookie => None,
            _ => Some(&self.shared.config.ticket_header),
        }
    }

    /// The session of a request, from its `Cookie` header values (as
    /// [`session_from_headers`](Self::session_from_headers) reads them) and the value of its
    /// [`ticket_header`](Self::ticket_header), if the transport reads one and the request
    /// sent it. By [`Transport`]:
    ///
    /// - `Cookie`: the cookies only (`ticket_header` is ignored);
    /// - `Header`: the header only (cookies of our name are ignored);
    /// - `CookieAndHeader`: a header ticket with no cookie of our name makes a header session
    ///   ([`Session::from_header`]: no CSRF token needed); with the session cookie too, the
    ///   request is a cookie request (the CSRF check as for any cookie), and its session is
    ///   the one both name.
    ///
    /// A header value that is not a ticket this server signed (another scheme, garbage, over
    /// the cookie size limit) is no ticket: no session, and no store call.
    ///
    /// # Errors
    /// [`ErrorKind::TicketConflict`](super::ErrorKind::TicketConflict): the header's ticket
    /// and the cookies' name different sessions (the adapters answer 400).
    pub fn request_session<'h>(
        &self,
        cookie_headers: impl IntoIterator<Item = &'h [u8]>,
        ticket_header: Option<&[u8]>,
    ) -> Result<Session> {
        let config = &self.shared.config;
        let header = match config.transport {
            Transport::Cookie => return Ok(self.session_from_headers(cookie_headers)),
            _ => ticket_header.and_then(|v| self.header_ticket(v)),
        };
        if config.transport == Transport::Header {
            let verified = header.is_some();
            return Ok(self.new_session(header, Vec::new(), verified, verified));
        }
        let (first, more, had_cookie) = self.cookie_tickets(cookie_headers);
        let Some(id) = header else {
            return Ok(self.new_session(first, more, had_cookie, false));
        };
        if !had_cookie {
            return Ok(self.new_session(Some(id), Vec::new(), true, true));
        }
        // A cookie came too: a cookie request. Its session must be the header's.
        if first.is_some() && !first.iter().chain(&more).any(|c| *c == id) {
            return Err(Error::new(
                ErrorKind::TicketConflict,
                "the session cookie and the ticket header name different sessions",
            ));
        }
        Ok(self.new_session(Some(id), Vec::new(), true, false))
    }

    /// The verified ticket in a ticket header's value, if it is one.
    fn header_ticket(&self, value: &[u8]) -> Option<SessionId> {
        let config = &self.shared.config;
        let ticket = transport::header_ticket(config.ticket_header == "authorization", value)?;
        let name = config.cookie.name.as_str();
        match self.shared.format.decode(name, ticket) {
            Ok(id) => Some(id),
            Err(reason) => {
                tracing::debug!(%reason, "ignoring session ticket header");
                None
            }
        }
    }

    fn new_session(
        &self,
        incoming: Option<SessionId>,
        fallbacks: Vec<SessionId>,
        had_ticket: bool,
        from_header: bool,
    ) -> Session {
        let phase = match incoming {
            Some(first) => Phase::Unloaded { first, fallbacks },
            None => Phase::Absent { stale: false },
        };
        Session::new(self.shared.clone(), had_ticket, from_header, phase)
    }

    /// Runs a store operation under the configured timeout.
    pub(crate) async fn timed<T>(&self, fut: impl Future<Output = store::Result<T>>) -> Result<T> {
        timed(self.shared.config.store_timeout, fut).await
    }

    /// Sessions of `user` (for "your devices" pages).
    ///
    /// # Errors
    /// Store failures.
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<SessionInfo>> {
        self.timed(self.shared.store.sessions_of(user)).await
    }

    /// Deletes one session by its handle if it belongs to `user`; `true` if it did.
    ///
    /// # Errors
    /// Store failures.
    pub async fn revoke(&self, user: &str, handle: &SessionKey) -> Result<bool> {
        let store = &self.shared.store;
        match self.timed(store.load(handle)).await? {
            Some(r) if r.meta.user.as_deref() == Some(user) => {
                let revoked = end_session(&**store, handle, EndReason::Revoked, Some(user));
                let deleted = self.timed(revoked).await?;
                if deleted {
                    let ended = EventKind::Ended(EndReason::Revoked);
                    self.shared.lifecycle.emit(ended, handle, Some(user));
                }
                Ok(deleted)
            }
            _ => Ok(false),
        }
    }

    /// Deletes every session of `user` but `except` (none: all of them); returns how many.
    ///
    /// # Errors
    /// Store failures.
    ///
    /// Open [`Session::ended`] watchers of those sessions in this process resolve at once.
    /// With a [listener](super::SessionSettings::with_listener), the user's sessions are
    /// listed first (one more store call) so that each gets its event; a session created
    /// between the listing and the deletion is ended without one.
    pub async fn revoke_all(&self, user: &str, except: Option<&SessionKey>) -> Result<u64> {
        let lifecycle = &self.shared.lifecycle;
        let listed = match lifecycle.has_listener() {
            true => self
                .sessions_of(user)
                .await?
                .into_iter()
                .map(|i| i.key)
                .collect(),
            false => Vec::new(),
        };
        let store = &*self.shared.store;
        let revoked = end_user(store, user, except, EndReason::Revoked);
        let deleted = self.timed(revoked).await?;
        lifecycle.emit_user(user, except, (&listed, deleted), EndReason::Revoked);
        Ok(deleted)
    }

    /// Deletes every other session of the user `session` is logged in as; returns how many.
    ///
    /// # Errors
    /// Store failures, or [`ErrorKind::NotLoggedIn`](super::ErrorKind::NotLoggedIn).
    pub async fn revoke_others(&self, session: &Session) -> Result<u64> {
        let (user, current) = session.user_and_stored_key().await?;
        let user = user.ok_or_else(|| Error::new(ErrorKind::NotLoggedIn, "not logged in"))?;
        self.revoke_all(&user, current.as_ref()).await
    }

    /// The public handle (store key) of `session`, as [`sessions_of`](Self::sessions_of)
    /// lists it; `None` without a session. After a login this is already the new handle.
    ///
    /// # Errors
    /// Store failures.
    pub async fn handle_of(&self, session: &Session) -> Result<Option<SessionKey>> {
        session.handle().await
    }

    /// Whether the store answers within the store timeout (for health checks).
    ///
    /// # Errors
    /// Store failures, or no answer in time.
    pub async fn ping(&self) -> Result<()> {
        self.timed(self.shared.store.ping()).await
    }

    /// Commits `session` (a session of this engine) when the response is ready: the commit
    /// state machine, one store operation (two for a login). Adapters call it once per
    /// request; later changes to the session fail with
    /// [`ErrorKind::Committed`](super::ErrorKind::Committed). `user_agent` (the request's
    /// `User-Agent`) is recorded if this creates the session.
    ///
    /// # Errors
    /// Store failures (answer 503: nothing the handler did to the session was saved, except
    /// that a failed renewal leaves the old session usable).
    pub async fn commit(
        &self,
        session: &Session,
        user_agent: Option<&str>,
    ) -> Result<CommitOutcome> {
        session.commit(user_agent).await
    }

    /// The commit, done at once when it needs no store operation (the usual case of a request
    /// that only read its session, or had none): `None` when it does, and then
    /// [`commit`](Self::commit) must run. Lets an adapter skip an asynchronous step (and its
    /// allocation) on most requests.
    pub fn commit_now(&self, session: &Session) -> Option<CommitOutcome> {
        session.commit_now()
    }
}
