//! [`CsrfToken`]: the request's token source, for rendering forms.

use std::fmt;

use cloakroom_core::csrf::TokenSource;
use cloakroom_core::session;

/// The request's CSRF token source, for rendering forms. Put in the request extensions by
/// [`CsrfLayer`](super::CsrfLayer); with the `axum` feature it is an extractor. A wrapper of
/// the core's [`TokenSource`], which the actix adapter's `CsrfToken` wraps too.
#[derive(Clone)]
pub struct CsrfToken(pub(super) TokenSource);

impl fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CsrfToken").field(&self.0).finish()
    }
}

impl CsrfToken {
    /// Sends the [`SpaCookie`](super::SpaCookie) (the readable `XSRF-TOKEN` cookie) with
    /// this response even if the request did not carry one: call it in the handler serving
    /// the single-page app (as Django's `ensure_csrf_cookie`). Before there is a session this
    /// makes the `_xsrf` secret (and cookie) if the request had none. Does nothing without
    /// [`CsrfSettings::with_spa_cookie`](cloakroom_core::csrf::CsrfSettings::with_spa_cookie).
    pub fn ensure_spa_cookie(&self) {
        self.0.ensure_spa_cookie();
    }

    /// A fresh masked token (Tornado v2 format): a different string on every call, each
    /// valid until the secret rotates.
    ///
    /// # Errors
    /// Session store failures.
    pub async fn token(&self) -> Result<String, session::Error> {
        self.0.token().await
    }

    /// `<input type="hidden" name="_xsrf" value="...">` for forms.
    ///
    /// # Errors
    /// Session store failures.
    pub async fn form_field(&self) -> Result<String, session::Error> {
        self.0.form_field().await
    }

    /// The core token source.
    pub fn source(&self) -> &TokenSource {
        &self.0
    }
}
