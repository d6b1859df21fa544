//! [`CsrfToken`]: the request's token source, for rendering forms.

use std::fmt;

use cloakroom_core::csrf::TokenSource;

/// The request's CSRF token source, for rendering forms. Put in the request extensions by
/// [`CsrfLayer`](super::CsrfLayer); with the `axum` feature it is an extractor. It derefs to
/// the core's [`TokenSource`], where its methods are.
#[derive(Clone)]
pub struct CsrfToken(pub(super) TokenSource);

impl fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CsrfToken").field(&self.0).finish()
    }
}

impl std::ops::Deref for CsrfToken {
    type Target = TokenSource;

    /// The core's token source: [`token`](TokenSource::token),
    /// [`form_field`](TokenSource::form_field),
    /// [`ensure_spa_cookie`](TokenSource::ensure_spa_cookie).
    fn deref(&self) -> &TokenSource {
        &self.0
    }
}
