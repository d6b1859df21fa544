//! rusqlite errors as store errors, kind chosen by what the caller can do about them.

use cloakroom_core::store::{Error, ErrorKind};
use rusqlite::ErrorCode;

/// Maps a rusqlite error to a store error saying what was being done; the rusqlite error is
/// kept as the source.
pub(crate) fn sql_error(e: rusqlite::Error, doing: &'static str) -> Error {
    let (kind, note) = match &e {
        rusqlite::Error::SqliteFailure(f, msg) => match f.code {
            // Another writer (another process: the admin CLI, a second app instance) held
            // the database past the busy timeout.
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => (ErrorKind::Unavailable, ""),
            ErrorCode::CannotOpen => (ErrorKind::Unavailable, ""),
            ErrorCode::NotADatabase => (
                ErrorKind::Corrupt,
                " (the file is not a SQLite database, or is encrypted)",
            ),
            ErrorCode::DatabaseCorrupt => (ErrorKind::Corrupt, " (the database file is damaged)"),
            _ if msg.as_deref().is_some_and(|m| m.contains("malformed JSON")) => (
                ErrorKind::Corrupt,
                " (a session's data column is not a JSON object)",
            ),
            _ => (ErrorKind::Backend, ""),
        },
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..) => {
            (ErrorKind::Corrupt, " (a stored value has the wrong type)")
        }
        _ => (ErrorKind::Backend, ""),
    };
    let message = if note.is_empty() {
        std::borrow::Cow::Borrowed(doing)
    } else {
        std::borrow::Cow::Owned(format!("{doing}{note}"))
    };
    Error::new(kind, message).with_source(e)
}

/// `.ctx("what")` on rusqlite results.
pub(crate) trait SqlContext<T> {
    /// The error mapped by [`sql_error`].
    fn ctx(self, doing: &'static str) -> Result<T, Error>;
}

impl<T> SqlContext<T> for rusqlite::Result<T> {
    fn ctx(self, doing: &'static str) -> Result<T, Error> {
        self.map_err(|e| sql_error(e, doing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32, msg: Option<&str>) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), msg.map(str::to_owned))
    }

    #[test]
    fn kinds_follow_what_the_caller_can_do() {
        use rusqlite::ffi;
        let kind = |e| sql_error(e, "testing").kind();
        assert_eq!(
            kind(failure(ffi::SQLITE_BUSY, None)),
            ErrorKind::Unavailable
        );
        assert_eq!(
            kind(failure(ffi::SQLITE_LOCKED, None)),
            ErrorKind::Unavailable
        );
        assert_eq!(kind(failure(ffi::SQLITE_CORRUPT, None)), ErrorKind::Corrupt);
        assert_eq!(kind(failure(ffi::SQLITE_NOTADB, None)), ErrorKind::Corrupt);
        assert_eq!(
            kind(failure(ffi::SQLITE_ERROR, Some("malformed JSON"))),
            ErrorKind::Corrupt
        );
        assert_eq!(kind(failure(ffi::SQLITE_FULL, None)), ErrorKind::Backend);
        assert_eq!(kind(rusqlite::Error::InvalidQuery), ErrorKind::Backend);
    }

    #[test]
    fn the_source_is_kept() {
        let e = sql_error(
            failure(rusqlite::ffi::SQLITE_BUSY, Some("database is locked")),
            "loading",
        );
        assert!(std::error::Error::source(&e).is_some());
        assert!(e.to_string().contains("loading"), "{e}");
        assert!(e.to_string().contains("database is locked"), "{e}");
    }
}
