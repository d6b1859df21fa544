//! CSRF protection: the cross-origin check and session-bound masked tokens, wire-compatible
//! with Tornado's `_xsrf`.
//!
//! Two checks run on every unsafe request (anything but GET, HEAD, OPTIONS):
//! 1. the cross-origin check: Fetch Metadata (`Sec-Fetch-Site`), then `Origin` against
//!    `Host`, with exact trusted origins;
//! 2. the token: a [`Secret`] kept in the session (or, without a session, in Tornado's
//!    `_xsrf` cookie), rendered masked afresh every time, compared unmasked in constant time.
//!
//! The request-level protection every adapter runs is here too, framework-free:
//! [`CsrfSettings`] (what is checked, which cookies are set), [`TokenSource`] (a request's
//! secrets, what tokens are rendered from), [`CsrfSettings::begin_check`] and
//! [`TokenCheck::finish`] (the decision for one unsafe request), and with the `http`
//! feature the [`OnRejection`] hook and the default 403. The adapters (`CsrfLayer` for
//! tower, `CsrfMiddleware` for actix-web) only read the request and body and write the
//! response.
//!
//! ```
//! use cloakroom_core::csrf::{Reason, Secret};
//! let secret = Secret::generate();
//! let token = secret.mask();               // "2|<mask>|<masked>|<timestamp>"
//! assert!(secret.verify(&token).is_ok());
//! assert_eq!(secret.verify("2|bad"), Err(Reason::TokenMalformed));
//! ```

mod check;
mod form;
mod origin;
mod path;
mod response;
mod settings;
mod source;
mod spa;
mod token;

use std::fmt;

pub use form::FormKind;
pub(crate) use form::{form_kind, multipart_field, urlencoded_field};
pub(crate) use origin::{Origin, RequestOrigin, check_cross_origin, is_safe_method};
pub use token::{Secret, decode_token};

pub use check::{BodyError, CheckError, CsrfRequest, RequestHeaders, TokenCheck};
pub use response::ResponseFormat;
#[cfg(feature = "http")]
pub use response::{OnRejection, body_error_response, default_rejection, rejection_response};
pub use settings::{CsrfMode, CsrfSettings};
pub use source::TokenSource;
pub use spa::SpaCookie;

use crate::session::{self, Session};

/// The session field holding the CSRF secret (rotated by `Session::login`).
pub(crate) const SESSION_FIELD: &str = session::CSRF_SECRET_FIELD;

/// The form field and cookie name Tornado uses.
pub(crate) const FIELD_NAME: &str = "_xsrf";

/// Request headers a token may come in, in the order they are read: Tornado's
/// `X-XSRFToken`, Django's `X-CSRFToken`, and `X-XSRF-TOKEN`, the header Angular's
/// `HttpClient` and axios copy the `XSRF-TOKEN` cookie into. Each carries a token, never
/// a bare cookie value: what counts is that it matches the expected secret.
pub(crate) const HEADER_NAMES: [&str; 3] = ["x-xsrftoken", "x-csrftoken", "x-xsrf-token"];

/// Why a request was refused. The text forms are stable: apps and tests match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The cross-origin check failed.
    CrossOrigin,
    /// No token in the form field or headers.
    TokenMissing,
    /// A token that does not decode.
    TokenMalformed,
    /// A well-formed token for another secret.
    TokenMismatch,
}

impl Reason {
    /// All reasons, for metrics.
    pub const ALL: [Reason; 4] = [
        Reason::CrossOrigin,
        Reason::TokenMissing,
        Reason::TokenMalformed,
        Reason::TokenMismatch,
    ];

    /// The stable text: `cross-origin request`, `token missing`, `token malformed`,
    /// `token mismatch`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::CrossOrigin => "cross-origin request",
            Reason::TokenMissing => "token missing",
            Reason::TokenMalformed => "token malformed",
            Reason::TokenMismatch => "token mismatch",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request refused by CSRF protection; put in the 403 response's extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectionError {
    reason: Reason,
}

impl ProtectionError {
    /// A refusal for `reason`.
    #[cfg(feature = "http")]
    pub(crate) fn new(reason: Reason) -> Self {
        ProtectionError { reason }
    }

    /// Why.
    pub fn kind(&self) -> Reason {
        self.reason
    }
}

impl fmt::Display for ProtectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CSRF check failed: {}", self.reason)
    }
}

impl std::error::Error for ProtectionError {}

/// The session's CSRF secret, if it has one.
///
/// # Errors
/// Store failures.
pub(crate) async fn session_secret(session: &Session) -> session::Result<Option<Secret>> {
    Ok(session
        .get_raw(SESSION_FIELD)
        .await?
        .and_then(|json| serde_json::from_str::<String>(&json).ok())
        .and_then(|hex| Secret::from_hex(&hex)))
}

/// The session's CSRF secret, made and stored if missing (this creates the session if
/// there is none).
///
/// # Errors
/// Session errors.
pub(crate) async fn ensure_session_secret(session: &Session) -> session::Result<Secret> {
    if let Some(s) = session_secret(session).await? {
        return Ok(s);
    }
    let secret = Secret::generate();
    let json = serde_json::to_string(&secret.to_hex()).expect("a string serializes");
    session.set_raw(SESSION_FIELD, json).await?;
    Ok(secret)
}
