//! A store failure: its kind, its message and its cause.

use std::borrow::Cow;
use std::fmt;

/// What kind of store failure happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The backend cannot be reached (connection refused, closed, pool exhausted).
    Unavailable,
    /// The operation did not finish within the configured time.
    Timeout,
    /// Stored data could not be decoded.
    Corrupt,
    /// The backend reported an error.
    Backend,
    /// The store is misconfigured (bad URL, bad option).
    Config,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Unavailable => "session store unavailable",
            ErrorKind::Timeout => "session store timed out",
            ErrorKind::Corrupt => "session store returned undecodable data",
            ErrorKind::Backend => "session store error",
            ErrorKind::Config => "session store misconfigured",
        })
    }
}

/// A store failure, with its cause kept as `source()`.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{}: {}", self.kind, self.message)
        }?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
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

/// Result of a store operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
