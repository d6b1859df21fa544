//! [`AppError`]: what a handler can fail with, and the response each failure becomes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cloakroom::SessionError;
use cloakroom::session;

/// A handler failure. Session store failures become 503 (the client may retry); anything
/// else is a 500 with a log line. Bad input is not an error: handlers answer it themselves.
#[derive(Debug)]
pub(crate) enum AppError {
    /// A session operation failed.
    Session(session::Error),
    /// Anything else (users database, templates, a panicked blocking task).
    Internal(anyhow::Error),
}

/// Marks a response caused by a session store failure, for the metrics middleware.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StoreFailure;

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

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::Session(e) => {
                let store_failed = e.is_store_error();
                // SessionError logs and answers: 503 for the store, 413 for oversized data.
                let mut res = SessionError(e).into_response();
                if store_failed {
                    res.extensions_mut().insert(StoreFailure);
                }
                res
            }
            AppError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; it has been logged\n",
                )
                    .into_response()
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
        let res = AppError::from(down).into_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(res.extensions().get::<StoreFailure>().is_some());

        let res = AppError::from(anyhow::anyhow!("disk on fire")).into_response();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(res.extensions().get::<StoreFailure>().is_none());
    }
}
