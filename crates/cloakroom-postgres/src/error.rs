//! tokio-postgres and pool errors -> store errors.

use cloakroom_core::store::{Error, ErrorKind};
use deadpool_postgres::PoolError;

/// Whether a driver error means the connection cannot be trusted any more.
pub(crate) fn breaks_connection(e: &tokio_postgres::Error) -> bool {
    kind_of(e) != ErrorKind::Backend
}

/// The kind of a driver error: the server gone or refusing connections is `Unavailable`, a
/// cancelled statement (`statement_timeout`) is `Timeout`, anything else `Backend`.
pub(crate) fn kind_of(e: &tokio_postgres::Error) -> ErrorKind {
    if e.is_closed() {
        return ErrorKind::Unavailable;
    }
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        return match code {
            "57014" => ErrorKind::Timeout,
            // connection_exception, admin/crash shutdown, cannot_connect_now,
            // too_many_connections, read_only_sql_transaction (a replica, mid-failover).
            c if c.starts_with("08") => ErrorKind::Unavailable,
            "57P01" | "57P02" | "57P03" | "53300" | "25006" => ErrorKind::Unavailable,
            _ => ErrorKind::Backend,
        };
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return ErrorKind::Unavailable;
        }
        source = s.source();
    }
    ErrorKind::Backend
}

/// A store error for a failed `what` ("loading a session").
pub(crate) fn driver(what: &str, e: tokio_postgres::Error) -> Error {
    Error::new(kind_of(&e), format!("{what} failed")).with_source(e)
}

/// A store error for a connection the pool could not hand out.
pub(crate) fn pool(what: &str, e: PoolError) -> Error {
    match e {
        PoolError::Backend(e) => driver(what, e),
        PoolError::Timeout(t) => Error::new(
            ErrorKind::Unavailable,
            format!("{what} failed: no database connection within the timeout ({t:?})"),
        ),
        other => Error::new(ErrorKind::Unavailable, format!("{what} failed")).with_source(other),
    }
}
