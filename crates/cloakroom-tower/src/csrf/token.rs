//! [`CsrfToken`]: the request's token source, for rendering forms.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use cloakroom_core::csrf::{self, FIELD_NAME, Secret};
use cloakroom_core::session::{self, Session};

use super::CsrfMode;

/// The request's CSRF token source, for rendering forms. Put in the request extensions by
/// [`CsrfLayer`](super::CsrfLayer); with the `axum` feature it is an extractor.
#[derive(Clone)]
pub struct CsrfToken {
    pub(super) session: Option<Session>,
    pub(super) mode: CsrfMode,
    /// The valid secret of the request's `_xsrf` cookie, if any.
    pub(super) cookie_secret: Option<Secret>,
    /// Without such a cookie: the slot for a secret made for this response, which the
    /// `_xsrf` cookie must then carry (allocated only for requests without a valid cookie).
    pub(super) new_cookie: Option<Arc<OnceLock<Secret>>>,
    /// With the SPA cookie on: set when the handler asks for the cookie to be sent.
    pub(super) spa_wanted: Option<Arc<AtomicBool>>,
}

impl fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrfToken")
            .field("mode", &self.mode)
            .field("secret", &"REDACTED")
            .finish()
    }
}

impl CsrfToken {
    /// Sends the [`SpaCookie`](super::SpaCookie) (the readable `XSRF-TOKEN` cookie) with
    /// this response even if the request did not carry one: call it in the handler serving
    /// the single-page app (as Django's `ensure_csrf_cookie`). Before there is a session this
    /// makes the `_xsrf` secret (and cookie) if the request had none. Does nothing without
    /// [`CsrfLayer::with_spa_cookie`](super::CsrfLayer::with_spa_cookie).
    pub fn ensure_spa_cookie(&self) {
        if let Some(flag) = &self.spa_wanted {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the handler called [`ensure_spa_cookie`](Self::ensure_spa_cookie).
    pub(super) fn spa_wanted(&self) -> bool {
        self.spa_wanted
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
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
    pub(super) async fn secret(&self) -> Result<Secret, session::Error> {
        if self.mode == CsrfMode::Auto {
            if let Some(session) = &self.session {
                if session.exists().await? {
                    return csrf::ensure_session_secret(session).await;
                }
            }
        }
        if let Some(s) = &self.cookie_secret {
            return Ok(s.clone());
        }
        match &self.new_cookie {
            Some(slot) => Ok(slot.get_or_init(Secret::generate).clone()),
            // Not reached: the service gives every request without a cookie secret a slot.
            None => Ok(Secret::generate()),
        }
    }

    /// The secret a new `_xsrf` cookie must carry, if this request made one.
    pub(super) fn new_cookie_secret(&self) -> Option<&Secret> {
        self.new_cookie.as_ref().and_then(|slot| slot.get())
    }

    /// The secret an unsafe request's token must match: the session's when there is a
    /// session (Auto mode), else the `_xsrf` cookie's.
    pub(super) async fn expected_secret(&self) -> Result<Option<Secret>, session::Error> {
        if self.mode == CsrfMode::Auto {
            if let Some(session) = &self.session {
                if session.exists().await? {
                    return csrf::session_secret(session).await;
                }
            }
        }
        Ok(self.cookie_secret.clone())
    }
}
