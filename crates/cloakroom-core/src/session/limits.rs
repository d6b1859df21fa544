//! The configured limits, applied: the store timeout around every store call, the expiry of
//! a session used now, the longest user agent kept.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use super::{Error, Result, SessionConfig, Timestamp};
use crate::store;

/// When a session created at `created_at` and used `now` expires: the idle timeout from now,
/// capped by the absolute lifetime.
pub(super) fn deadline(config: &SessionConfig, created_at: Timestamp, now: Timestamp) -> Timestamp {
    now.plus(config.idle_timeout)
        .min(created_at.plus(config.absolute_lifetime))
}

/// Runs a store operation, failing it after `limit` (a store that hangs becomes a 503, not a
/// hung request).
pub(super) async fn timed<T>(
    limit: Duration,
    fut: impl Future<Output = store::Result<T>>,
) -> Result<T> {
    let mut fut = std::pin::pin!(fut);
    // A store that answers at once (the memory store, a cache hit) needs no timer.
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    if let Poll::Ready(r) = first {
        return r.map_err(Error::from);
    }
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(Error::from),
        Err(_) => Err(store::Error::new(
            store::ErrorKind::Timeout,
            format!("no answer within {limit:?}"),
        )
        .into()),
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(super) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
