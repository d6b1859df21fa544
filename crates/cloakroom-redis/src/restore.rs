//! Creating a session with one native command instead of the create script.
//!
//! `RESTORE key expires-at payload ABSTTL` creates the whole hash and its expiry at once,
//! and only when the key does not exist (`BUSYKEY` otherwise): what the create script does
//! for a new key with three `redis.call`s, for about half of Redis's CPU time (Redis
//! 7.0.15, 2026-12-06, 32 creates in flight on one connection: ~4.1 us against ~8.1 us of
//! Redis CPU per create, ~12 us against ~16 us between creates at the client). The payload
//! is the RDB encoding of the hash (see [`codec::restore_payload`]).
//!
//! The script stays the way for everything else: a key that exists (`BUSYKEY`: a live
//! record, which is a collision, or one expired by the application's clock, which the script
//! replaces), `?wait=N` (the script runs in a pipeline with `WAIT`), and servers that will
//! not take the command (an ACL user without `RESTORE`, which is in `@dangerous`; a proxy
//! that does not know it; a payload a fork of Redis does not read). The first such refusal
//! turns `RESTORE` off for that store (and its clones), logged once; other stores in the
//! process, on other servers or as other users, keep their own.

use std::sync::atomic::Ordering;

use cloakroom_core::store::{Record, Result};
use redis::{RedisError, Value};

use crate::codec;
use crate::conn::bounded;
use crate::store::RedisStore;

/// What `RESTORE` did.
enum Outcome {
    Created,
    /// The key exists: the script decides.
    Busy,
    /// The server will not run it (permissions, unknown command, unreadable payload).
    Refused(String),
}

/// How a server error answers `RESTORE`: `None` for errors the script would meet too
/// (read-only replica, loading, out of memory...), which are reported as they are.
fn outcome_of(code: &str, message: String) -> Option<Outcome> {
    match code {
        "BUSYKEY" => Some(Outcome::Busy),
        "ERR" | "NOPERM" => Some(Outcome::Refused(message)),
        _ => None,
    }
}

fn from_error(e: RedisError) -> std::result::Result<Outcome, RedisError> {
    match e.code().and_then(|code| outcome_of(code, e.to_string())) {
        Some(outcome) => Ok(outcome),
        None => Err(e),
    }
}

impl RedisStore {
    /// Creates `record` at `rkey` by `RESTORE`: `Ok(true)` when it did, `Ok(false)` when the
    /// create script must do it (the key exists, or `RESTORE` is off or was refused).
    pub(crate) async fn create_by_restore(&self, rkey: &[u8], record: &Record) -> Result<bool> {
        let expires = record.meta.expires_at.as_millis();
        // `RESTORE` reads a TTL of 0 as "no expiry".
        let refused = &self.inner.restore_refused;
        if self.inner.wait > 0 || expires <= 0 || refused.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let payload = codec::restore_payload(record);
        let conn = self.conn_for(rkey);
        let outcome = bounded(self.inner.timeout, "create", || {
            let mut conn = conn.clone();
            let mut cmd = redis::cmd("RESTORE");
            cmd.arg(rkey).arg(expires).arg(&payload).arg("ABSTTL");
            async move {
                match cmd.query_async::<Value>(&mut conn).await {
                    Ok(Value::ServerError(e)) => {
                        let message = format!("{e:?}");
                        outcome_of(e.code(), message).ok_or_else(|| e.into())
                    }
                    Ok(_) => Ok(Outcome::Created),
                    Err(e) => from_error(e),
                }
            }
        })
        .await?;
        Ok(match outcome {
            Outcome::Created => true,
            Outcome::Busy => false,
            Outcome::Refused(why) => {
                if !refused.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        reason = %why,
                        url = %self.inner.shown_url,
                        "redis refused RESTORE; this store creates sessions by script from now on"
                    );
                }
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted() {
        assert!(matches!(
            outcome_of("BUSYKEY", String::new()),
            Some(Outcome::Busy)
        ));
        assert!(matches!(
            outcome_of("NOPERM", String::new()),
            Some(Outcome::Refused(_))
        ));
        assert!(matches!(
            outcome_of("ERR", String::new()),
            Some(Outcome::Refused(_))
        ));
        for transient in ["READONLY", "LOADING", "OOM", "MASTERDOWN", "TRYAGAIN"] {
            assert!(
                outcome_of(transient, String::new()).is_none(),
                "{transient}"
            );
        }
    }
}
