//! CSRF protection: the cross-origin check and session-bound masked tokens.

/// The session field holding the CSRF secret (rotated by `Session::login`).
pub(crate) const SESSION_FIELD: &str = "__cr.csrf";
