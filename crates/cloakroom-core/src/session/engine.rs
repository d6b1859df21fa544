//! [`SessionEngine`]: one per application (store, keys, configuration); turns each
//! request's `Cookie` headers into a [`Session`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use super::handle::Session;
use super::limits::timed;
use super::shared::Shared;
use super::state::Phase;
use super::{MAX_CANDIDATES, Result, SessionConfig, SessionId, SessionKey};
use crate::cookie::{SignedTicket, TicketFormat};
use crate::keys::KeyRing;
use crate::store::{self, IntoSessionStore, SessionInfo, SessionStore};

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
    /// An engine over `store`, signing tickets with `keys`.
    pub fn new(store: impl IntoSessionStore, keys: KeyRing, config: SessionConfig) -> Self {
        let store = store.into_session_store();
        SessionEngine {
            shared: Arc::new(Shared {
                store,
                keys,
                config,
                format: Arc::new(SignedTicket),
            }),
        }
    }

    /// The same engine with another ticket format (default [`SignedTicket`]).
    #[must_use]
    pub fn with_ticket_format(self, format: Arc<dyn TicketFormat>) -> Self {
        let s = &self.shared;
        SessionEngine {
            shared: Arc::new(Shared {
                store: s.store.clone(),
                keys: s.keys.clone(),
                config: s.config.clone(),
                format,
            }),
        }
    }

    /// The ticket format.
    pub fn ticket_format(&self) -> &Arc<dyn TicketFormat> {
        &self.shared.format
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.shared.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.shared.store
    }

    /// The key ring.
    pub fn keys(&self) -> &KeyRing {
        &self.shared.keys
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
    /// verifies is kept, in header order, up to [`MAX_CANDIDATES`]; the first load tries them
    /// in that order and the session is the **first whose record the store knows** (live and
    /// within this server's timeouts). So a planted garbage pair, or a planted ticket of a
    /// session that has ended, cannot shadow the real one. A planted ticket of a *live*
    /// session (the attacker's own) that comes first does win: the server cannot tell it
    /// apart; `__Host-` cookie names (HTTPS) stop neighbours from planting it.
    ///
    /// With one verified ticket (the usual case) this allocates nothing and costs one store
    /// load, exactly as before; each further ticket costs at most one more load, only when
    /// the ones before it are unknown.
    pub fn session_from_headers<'h>(
        &self,
        cookie_headers: impl IntoIterator<Item = &'h [u8]>,
    ) -> Session {
        let name = self.shared.config.cookie.name.as_str();
        let mut first = None;
        let mut more = Vec::new();
        let mut had_cookie = false;
        for value in crate::cookie::cookie_values(cookie_headers, name) {
            had_cookie = true;
            match self.shared.format.decode(&self.shared.keys, name, value) {
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
        self.new_session(first, more, had_cookie)
    }

    /// The session for an already verified id (for adapters that read tickets themselves).
    pub fn session_with_id(&self, incoming: Option<SessionId>, had_cookie: bool) -> Session {
        self.new_session(incoming, Vec::new(), had_cookie)
    }

    fn new_session(
        &self,
        incoming: Option<SessionId>,
        fallbacks: Vec<SessionId>,
        had_cookie: bool,
    ) -> Session {
        let phase = match incoming {
            Some(first) => Phase::Unloaded { first, fallbacks },
            None => Phase::Absent { stale: false },
        };
        Session::new(self.shared.clone(), had_cookie, phase)
    }

    /// Runs a store operation under the configured timeout.
    async fn timed<T>(&self, fut: impl Future<Output = store::Result<T>>) -> Result<T> {
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
                self.timed(store.delete(handle)).await
            }
            _ => Ok(false),
        }
    }
}
