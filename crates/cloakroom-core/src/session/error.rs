//! [`Error`]: what a session operation can fail with, and its [`ErrorKind`].

use std::fmt;

use crate::store;

/// What went wrong with a session operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The store failed (see [`store::ErrorKind`]): answer 503.
    Store(store::ErrorKind),
    /// The response was already committed: the change could not be saved.
    Committed,
    /// A value could not be serialized.
    Serialize,
    /// A stored value did not deserialize as the requested type.
    Deserialize,
    /// The session data would exceed [`SessionSettings::with_max_data_bytes`](super::SessionSettings::with_max_data_bytes).
    TooLarge,
    /// The field name is reserved for the library (starts with `__cr.`) or empty.
    ReservedKey,
    /// The user id given to `login` is not acceptable (empty).
    InvalidUser,
    /// The session needs a login for this operation.
    NotLoggedIn,
    /// An [`AuthMethod::Other`](super::AuthMethod::Other) name that is empty, too long or
    /// not printable ASCII.
    InvalidAuthMethod,
    /// The request's cookie and ticket header name different sessions: refused (400), never
    /// merged, and neither is used.
    TicketConflict,
    /// The user already holds the most sessions allowed
    /// ([`SessionSettings::with_max_sessions_per_user`](super::SessionSettings::with_max_sessions_per_user))
    /// and the policy refuses new ones: the login did not happen (answer 409 and ask the
    /// user to log out elsewhere first).
    SessionLimit,
}

/// A session operation failed.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(super) fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the store failed (the right answer is a 503).
    pub fn is_store_error(&self) -> bool {
        matches!(self.kind, ErrorKind::Store(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        Error {
            kind: ErrorKind::Store(e.kind()),
            message: "session store operation failed".into(),
            source: Some(Box::new(e)),
        }
    }
}

/// Result of a session operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error for a change made after the response was committed.
pub(super) fn committed_error() -> Error {
    Error::new(
        ErrorKind::Committed,
        "session changed after the response was committed; the change was not saved",
    )
}
