//! [`TokenSource`]: one request's CSRF secrets (the session's, the `_xsrf` cookie's, or one
//! made for this response), what handlers render tokens from, and the cookies the response
//! must then carry.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::cookie::cookie_values;
use crate::session::{self, Session};

use super::{
    CsrfMode, CsrfSettings, FIELD_NAME, RequestHeaders, Secret, decode_token,
    ensure_session_secret, session_secret,
};

/// One request's CSRF token source, made by the adapter's middleware from the request's
/// cookies ([`CsrfSettings::token_source`]) and wrapped by each adapter's `CsrfToken`
/// extractor. Cheap to clone (clones share the request's state). `Debug` prints no secret.
#[derive(Clone)]
pub struct TokenSource {
    session: Option<Session>,
    mode: CsrfMode,
    /// The valid secret of the request's `_xsrf` cookie, if any.
    cookie_secret: Option<Secret>,
    /// Without such a cookie: the slot for a secret made for this response, which the
    /// `_xsrf` cookie must then carry (allocated only for requests without a valid cookie).
    new_cookie: Option<Arc<OnceLock<Secret>>>,
    /// With the SPA cookie on (`None` when off): set when the handler asks for the cookie
    /// to be sent.
    spa_wanted: Option<Arc<AtomicBool>>,
    /// With the SPA cookie on: the value of the request's one, if it sent one.
    spa_current: Option<String>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("mode", &self.mode)
            .field("secret", &"REDACTED")
            .finish()
    }
}

impl CsrfSettings {
    /// The request's token source: its session (put there by the session middleware, which
    /// must run first), its `_xsrf` cookie's secret (the first cookie of that name that
    /// decodes, read as bytes from every `Cookie` header: a neighbour's malformed cookie
    /// costs only itself; a malformed `_xsrf` cookie counts as none) and, with the SPA
    /// cookie on, its SPA cookie.
    pub fn token_source<H: RequestHeaders + ?Sized>(
        &self,
        session: Option<Session>,
        headers: &H,
    ) -> TokenSource {
        let cookie_secret = cookie_values(headers.cookie_headers(), &self.cookie.name)
            .find_map(|v| decode_token(v).ok());
        let spa_current = self
            .spa
            .as_ref()
            .and_then(|spa| spa.request_value(headers.cookie_headers()));
        TokenSource {
            session,
            mode: self.mode,
            new_cookie: cookie_secret.is_none().then(Arc::default),
            cookie_secret,
            spa_wanted: self.spa.as_ref().map(|_| Arc::default()),
            spa_current,
        }
    }
}

impl TokenSource {
    /// Sends the [`SpaCookie`](super::SpaCookie) (the readable `XSRF-TOKEN` cookie) with
    /// this response even if the request did not carry one: call it in the handler serving
    /// the single-page app (as Django's `ensure_csrf_cookie`). Before there is a session this
    /// makes the `_xsrf` secret (and cookie) if the request had none. Does nothing without
    /// the SPA cookie turned on.
    pub fn ensure_spa_cookie(&self) {
        if let Some(flag) = &self.spa_wanted {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// A fresh masked token (Tornado v2 format): a different string on every call, each
    /// valid until the secret rotates.
    ///
    /// # Errors
    /// Session store failures.
    pub async fn token(&self) -> Result<String, session::Error> {
        Ok(self.secret().await?.mask())
    }

    /// `<input type="hidden" name="_xsrf" value="...">` for forms.
    ///
    /// # Errors
    /// Session store failures.
    pub async fn form_field(&self) -> Result<String, session::Error> {
        Ok(format!(
            "<input type=\"hidden\" name=\"{FIELD_NAME}\" value=\"{}\">",
            self.token().await?
        ))
    }

    /// The secret tokens are made of now: the session's (made if it has none yet) when
    /// there is a session (Auto mode), else the `_xsrf` cookie's, else a new one for a new
    /// `_xsrf` cookie. After the handler ran, the secret the next request's token must match.
    ///
    /// # Errors
    /// Session store failures.
    pub async fn secret(&self) -> Result<Secret, session::Error> {
        if let Some(session) = self.live_session().await? {
            return ensure_session_secret(session).await;
        }
        if let Some(s) = &self.cookie_secret {
            return Ok(s.clone());
        }
        match &self.new_cookie {
            Some(slot) => Ok(slot.get_or_init(Secret::generate).clone()),
            // Not reached: every source without a cookie secret has a slot.
            None => Ok(Secret::generate()),
        }
    }

    /// The secret an unsafe request's token must match: the session's when there is a
    /// session (Auto mode), else the `_xsrf` cookie's.
    ///
    /// # Errors
    /// Session store failures.
    pub(crate) async fn expected_secret(&self) -> Result<Option<Secret>, session::Error> {
        if let Some(session) = self.live_session().await? {
            return session_secret(session).await;
        }
        Ok(self.cookie_secret.clone())
    }

    /// Whether the request's session came from the ticket header (it needs no token).
    pub(crate) fn header_session(&self) -> bool {
        self.session.as_ref().is_some_and(Session::from_header)
    }

    /// The session the secret lives in: in Auto mode, the request's session if it exists.
    async fn live_session(&self) -> Result<Option<&Session>, session::Error> {
        if self.mode == CsrfMode::Auto {
            if let Some(session) = &self.session {
                if session.exists().await? {
                    return Ok(Some(session));
                }
            }
        }
        Ok(None)
    }

    /// The `Set-Cookie` value of the new `_xsrf` cookie, if this request made a secret for
    /// one (a token was rendered, or the SPA cookie sent, before there was a session or a
    /// valid `_xsrf` cookie). Masked, as Tornado sets it.
    pub fn xsrf_set_cookie(&self, settings: &CsrfSettings) -> Option<String> {
        let secret = self.new_cookie.as_ref().and_then(|slot| slot.get())?;
        Some(settings.cookie.set_cookie(&secret.mask(), None))
    }

    /// Whether the response needs [`response_cookies`](Self::response_cookies) (the SPA
    /// cookie is on); otherwise [`xsrf_set_cookie`](Self::xsrf_set_cookie) is all, and it
    /// needs no session access.
    pub fn has_spa_cookie(&self) -> bool {
        self.spa_wanted.is_some()
    }

    /// The `Set-Cookie` values the answered response must carry, in order: the SPA cookie
    /// when it must be sent (eager, the request held one, or the handler asked) and no longer
    /// holds a token of the current secret, then the new `_xsrf` cookie if one was made. Call
    /// it after the handler (a login has rotated the secret by then) and before the session
    /// commits. A store failure while reading the secret costs only the SPA cookie (logged).
    pub async fn response_cookies(&self, settings: &CsrfSettings) -> Vec<String> {
        let mut out = Vec::new();
        let current = self.spa_current.as_deref();
        let spa = settings
            .spa
            .as_ref()
            .filter(|spa| spa.is_eager() || current.is_some() || self.spa_wanted());
        if let Some(spa) = spa {
            match self.secret().await {
                Ok(secret) => {
                    out.extend(spa.refresh(&settings.cookie, &secret, current));
                }
                Err(e) => tracing::warn!(error = %e, "no CSRF secret for the SPA cookie"),
            }
        }
        out.extend(self.xsrf_set_cookie(settings));
        out
    }

    fn spa_wanted(&self) -> bool {
        self.spa_wanted
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    }
}
