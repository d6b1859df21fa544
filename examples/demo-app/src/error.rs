//! [`AppError`]: what a page can fail with, and the response each failure becomes.

use cloakroom::session;
use http::{StatusCode, header};

use crate::passwords;
use crate::reply::{Reply, text};

/// A page failure. Session store failures and a full password-hashing queue become 503
/// (the client may retry); anything else is a 500 with a log line. Bad input is not an
/// error: pages answer it themselves.
#[derive(Debug)]
pub enum AppError {
    /// A session operation failed.
    Session(session::Error),
    /// Too many password hashes are already waiting: 503 with `Retry-After`.
    HashQueueFull,
    /// Anything else (users database, templates, a panicked blocking task).
    Internal(anyhow::Error),
}

/// Marks a response caused by a session store failure (in the response's extensions), for
/// the metrics middleware.
#[derive(Clone, Copy, Debug)]
pub struct StoreFailure;

impl From<session::Error> for AppError {
    fn from(e: session::Error) -> Self {
        AppError::Session(e)
    }
}

impl From<anyhow::Error> for AppError {
    fn from(e: anyhow::Error) -> Self {
        AppError::Internal(e)
    }
}

impl From<passwords::Error> for AppError {
    fn from(e: passwords::Error) -> Self {
        match e {
            passwords::Error::QueueFull => AppError::HashQueueFull,
            passwords::Error::Failed(e) => AppError::Internal(e),
        }
    }
}

impl From<minijinja::Error> for AppError {
    fn from(e: minijinja::Error) -> Self {
        AppError::Internal(e.into())
    }
}

impl From<cloakroom::store::Error> for AppError {
    fn from(e: cloakroom::store::Error) -> Self {
        AppError::Session(e.into())
    }
}

impl AppError {
    /// The response: 503 (marked [`StoreFailure`]) for a store failure, 413 for session
    /// data over the limit, 503 with `Retry-After` for a full hashing queue, 500 otherwise.
    pub fn into_reply(self) -> Reply {
        match self {
            AppError::Session(e) => {
                // The session error logs and answers: 503 for the store, 413 for oversized
                // data.
                let mut res = cloakroom_core::response::error_response(&e);
                if e.is_store_error() {
                    res.extensions_mut().insert(StoreFailure);
                }
                res
            }
            AppError::HashQueueFull => {
                // Counted in /metrics (`cloakroom_demo_hash_queue_full_total`); a flood would
                // repeat this line per request, so it is a warning, not an error.
                tracing::warn!("password hashing queue full: answered 503");
                let mut res = text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many logins at once; please try again in a moment\n",
                );
                res.headers_mut()
                    .insert(header::RETRY_AFTER, passwords::RETRY_AFTER_SECS.into());
                res
            }
            AppError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; it has been logged\n",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloakroom::store;

    #[test]
    fn store_failures_are_503_and_marked_other_failures_500() {
        let down = store::Error::new(store::ErrorKind::Unavailable, "connection refused");
        let res = AppError::from(down).into_reply();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(res.extensions().get::<StoreFailure>().is_some());

        let res = AppError::from(anyhow::anyhow!("disk on fire")).into_reply();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(res.extensions().get::<StoreFailure>().is_none());
    }

    #[test]
    fn a_full_hashing_queue_is_503_with_retry_after_other_hashing_failures_500() {
        let res = AppError::from(passwords::Error::QueueFull).into_reply();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        assert!(res.extensions().get::<StoreFailure>().is_none());

        let failed = passwords::Error::Failed(anyhow::anyhow!("no OS randomness"));
        let res = AppError::from(failed).into_reply();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
