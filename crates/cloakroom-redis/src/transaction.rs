//! Patches and touches as one native transaction instead of a script (Redis 7+).
//!
//! ```text
//! MULTI
//! HDEL k d:x ...                      only when the patch removes fields
//! HSET k s <seen> e <exp> [r <flag>] d:a <json> ...
//! PEXPIREAT k <exp> XX                the key has a TTL, so it existed: the new expiry
//! PEXPIREAT k 0 NX                    the key has no TTL, so HSET just made it: deleted again
//! EXISTS k                            near-cache only: Redis tracks the key for us again
//! EXEC
//! ```
//!
//! Every session key has a TTL (`RESTORE ... ABSTTL` or the create script's `PEXPIREAT`). On
//! a live key `XX` moves it and `NX` does nothing: the patch landed (`XX` answers 1). On a
//! missing key (deleted, logged out, expired by Redis) `HSET` makes a hash without a TTL,
//! `XX` does nothing and `NX`, with a time in the past, deletes it, all inside one `EXEC`: no
//! client and no replica ever sees it (the AOF and replicas get `MULTI, HSET, DEL, EXEC`), so
//! a patch never brings a session back and reports [`Applied::Missing`]. A connection torn
//! before `EXEC` runs nothing. It costs Redis about two thirds of the apply script's CPU
//! (design note `perf/README.md` R1; BENCHMARKS.md).
//!
//! **Expiry is judged by Redis's clock**, where the script judged by the application's (the
//! record's `e` against the caller's "now"). Both are the same time, since `PEXPIREAT` is
//! always set to `e`, so they differ only by the clock skew between the two hosts: a request
//! that loaded a live session and commits a moment after its expiry by the application's
//! clock, while Redis still has it, extends it, as in any store with sliding expiry. A load
//! still refuses a record past `e` by the application's clock, and the absolute lifetime is
//! already capped in the patch. A key an operator made persistent (`PERSIST`) is deleted by
//! the next patch.
//!
//! The apply script stays for what a transaction cannot do or where it cannot run: blind
//! writes (their expiry is capped by the record's creation time and refused past the idle
//! or absolute limit, which needs a read and a decision inside Redis), Redis older than 7
//! (no `XX`/`NX` flags: found by the permission check at open, see [`crate::acl`]), and a
//! server that refuses the transaction (`MULTI` not allowed to the user, a proxy that does
//! not know it): the first such refusal turns transactions off for that store, logged once,
//! and the patch is made by the script. (When `MULTI` itself is refused, the other commands
//! run one by one; in this order that is harmless, and the script then applies the patch
//! once more.) With `?wait=N`, `WAIT` follows `EXEC` in the same pipeline.

use std::sync::atomic::Ordering;

use cloakroom_core::session::Timestamp;
use cloakroom_core::store::{Applied, Patch, Result};
use redis::{Pipeline, RedisError, ServerError, Value};

use crate::codec;
use crate::conn::bounded;
use crate::scripts;
use crate::store::{RedisStore, applied};

/// What a transaction did.
enum Outcome {
    Done(Applied),
    /// The server would not run it (an `ERR` or `NOPERM` while queuing): use the script.
    Refused(String),
}

/// The transaction for `patch` on the Redis key `rkey` (see the [module docs](self)),
/// followed by `WAIT` when given (replicas, ms); with the position of `EXEC`'s reply among
/// the pipeline's, and of the `XX` reply among `EXEC`'s. `MULTI` and `EXEC` are sent as
/// plain commands in one pipeline (one write, one node of a Cluster: every command names
/// `rkey`), so that every reply, `WAIT`'s too, comes back as it is.
fn transaction(
    rkey: &[u8],
    patch: &Patch,
    tracked: bool,
    wait: Option<(u32, u64)>,
) -> (Pipeline, usize, usize) {
    let mut pipe = redis::pipe();
    pipe.ignore_errors().cmd("MULTI");
    if !patch.remove.is_empty() {
        let hdel = pipe.cmd("HDEL").arg(rkey);
        for name in &patch.remove {
            hdel.arg(codec::data_field(name));
        }
    }
    let expires = patch.expires_at.as_millis();
    let hset = pipe
        .cmd("HSET")
        .arg(rkey)
        .arg("s")
        .arg(patch.last_seen.as_millis())
        .arg("e")
        .arg(expires);
    if let Some(flag) = patch.remember {
        hset.arg("r").arg(codec::remember(flag));
    }
    for (name, value) in &patch.set {
        hset.arg(codec::data_field(name)).arg(value.as_bytes());
    }
    pipe.cmd("PEXPIREAT").arg(rkey).arg(expires).arg("XX");
    pipe.cmd("PEXPIREAT").arg(rkey).arg(0).arg("NX");
    if tracked {
        pipe.cmd("EXISTS").arg(rkey);
    }
    let exec = pipe.cmd_iter().count();
    pipe.cmd("EXEC");
    if let Some((replicas, ms)) = wait {
        pipe.cmd("WAIT").arg(replicas).arg(ms);
    }
    (pipe, exec, usize::from(!patch.remove.is_empty()) + 1)
}

/// The outcome of the transaction from its pipeline's `replies` (see [`transaction`]).
fn outcome(
    replies: Vec<Value>,
    exec: usize,
    xx: usize,
) -> std::result::Result<(Outcome, Option<i64>), RedisError> {
    let mut replies = replies.into_iter();
    let mut refused: Option<ServerError> = None;
    for queued in replies.by_ref().take(exec) {
        if let Value::ServerError(e) = queued {
            // A command Redis does not know, or not in this form (`PEXPIREAT`'s flags
            // before 7), or not allowed to the user: the script can do it. Anything else
            // (out of memory, read-only replica, loading) is reported as it is.
            if !matches!(e.code(), "ERR" | "NOPERM") {
                return Err(e.into());
            }
            refused.get_or_insert(e);
        }
    }
    let done = match (replies.next(), refused) {
        (_, Some(e)) => Outcome::Refused(format!("{e:?}")),
        (Some(Value::Array(results)), None) => match results.into_iter().nth(xx) {
            Some(Value::Int(1)) => Outcome::Done(Applied::Done),
            Some(Value::Int(_)) => Outcome::Done(Applied::Missing),
            // e.g. `WRONGTYPE`: the key holds something else.
            Some(Value::ServerError(e)) => return Err(e.into()),
            other => return Err(unexpected(other.as_ref())),
        },
        (Some(Value::ServerError(e)), None) => return Err(e.into()),
        (other, None) => return Err(unexpected(other.as_ref())),
    };
    let acked = match replies.next() {
        Some(Value::Int(n)) => Some(n),
        Some(Value::ServerError(e)) => return Err(e.into()),
        _ => None,
    };
    Ok((done, acked))
}

fn unexpected(reply: Option<&Value>) -> RedisError {
    RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        "unexpected reply to a patch transaction",
        format!("{reply:?}"),
    ))
}

impl RedisStore {
    /// Applies `patch` to the session at the Redis key `rkey`: by transaction when it can,
    /// else by the apply script (see the [module docs](self)).
    pub(crate) async fn patch(
        &self,
        what: &'static str,
        rkey: &[u8],
        patch: &Patch,
    ) -> Result<Applied> {
        let blind = patch.max_lifetime.is_some() || patch.max_idle.is_some();
        let on = &self.inner.transactions;
        if !blind && on.load(Ordering::Relaxed) {
            let (replicas, timeout) = (self.inner.wait, self.inner.timeout);
            let wait = (replicas > 0).then(|| (replicas, crate::wait::wait_ms(timeout)));
            let (pipe, exec, xx) = transaction(rkey, patch, self.inner.near.is_some(), wait);
            let conn = self.conn_for(rkey);
            let outcome = bounded(timeout, what, || {
                let mut conn = conn.clone();
                let pipe = &pipe;
                async move {
                    let replies = pipe.query_async::<Vec<Value>>(&mut conn).await?;
                    let (outcome, acked) = outcome(replies, exec, xx)?;
                    if let (Outcome::Done(_), Some(acked)) = (&outcome, acked) {
                        crate::wait::check(acked, replicas, timeout)?;
                    }
                    Ok(outcome)
                }
            })
            .await?;
            match outcome {
                Outcome::Done(applied) => return Ok(applied),
                Outcome::Refused(why) => {
                    if on.swap(false, Ordering::Relaxed) {
                        tracing::info!(
                            reason = %why,
                            url = %self.inner.shown_url,
                            "redis refused a MULTI transaction; this store patches sessions by script from now on"
                        );
                    }
                }
            }
        }
        let args = codec::apply_args(patch, Timestamp::now());
        let script = self.tracking(&scripts::APPLY, &scripts::APPLY_TRACKED);
        applied(self.script(what, script, rkey, &args).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(pipe: &Pipeline) -> String {
        String::from_utf8_lossy(&pipe.get_packed_pipeline()).into_owned()
    }

    #[test]
    fn transaction_layout() {
        let mut p = Patch::new(Timestamp::from_millis(7), Timestamp::from_millis(9)).set("a", "1");
        let (pipe, exec, xx) = transaction(b"k", &p, false, None);
        assert_eq!((exec, xx), (4, 1));
        let text = packed(&pipe);
        let words: Vec<&str> = text
            .split("\r\n")
            .filter(|w| !w.starts_with(['*', '$']) && !w.is_empty())
            .collect();
        assert_eq!(
            words,
            [
                "MULTI",
                "HSET",
                "k",
                "s",
                "7",
                "e",
                "9",
                "d:a",
                "1",
                "PEXPIREAT",
                "k",
                "9",
                "XX",
                "PEXPIREAT",
                "k",
                "0",
                "NX",
                "EXEC"
            ]
        );
        p = p.remove("b");
        p.remember = Some(false);
        let (pipe, exec, xx) = transaction(b"k", &p, true, Some((1, 300)));
        assert_eq!((exec, xx), (6, 2));
        let text = packed(&pipe);
        assert!(text.contains("HDEL\r\n$1\r\nk\r\n$3\r\nd:b\r\n"), "{text}");
        assert!(text.contains("$1\r\nr\r\n$1\r\n0\r\n"), "{text}");
        assert!(
            text.ends_with("EXISTS\r\n$1\r\nk\r\n*1\r\n$4\r\nEXEC\r\n*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$3\r\n300\r\n"),
            "{text}"
        );
    }

    fn parsed(resp: &str) -> Value {
        redis::parse_redis_value(resp.as_bytes()).unwrap()
    }

    fn exec_of(results: &str) -> Vec<Value> {
        let mut replies = vec![parsed("+OK\r\n")];
        replies.extend((0..3).map(|_| parsed("+QUEUED\r\n")));
        replies.push(parsed(results));
        replies
    }

    /// `EXEC`'s `XX` reply says whether the patch landed; Redis 6.2's refusal of the flags
    /// (an `ERR` while queuing, then `EXECABORT`) sends the patch to the script; other
    /// errors are errors.
    #[test]
    fn replies_are_read() {
        let outcome = |replies, wait| outcome(replies, 4, 1).map(|(o, a)| (o, a == wait));
        let live = exec_of("*3\r\n:0\r\n:1\r\n:0\r\n");
        assert!(matches!(
            outcome(live.clone(), None),
            Ok((Outcome::Done(Applied::Done), true))
        ));
        let gone = exec_of("*3\r\n:1\r\n:0\r\n:1\r\n");
        assert!(matches!(
            outcome(gone, None),
            Ok((Outcome::Done(Applied::Missing), true))
        ));
        let mut waited = live;
        waited.push(Value::Int(2));
        assert!(matches!(
            outcome(waited, Some(2)),
            Ok((Outcome::Done(Applied::Done), true))
        ));

        let mut redis62 = exec_of("-EXECABORT Transaction discarded\r\n");
        redis62[2] = parsed("-ERR wrong number of arguments for 'pexpireat' command\r\n");
        redis62[3] = redis62[2].clone();
        assert!(matches!(
            outcome(redis62, None),
            Ok((Outcome::Refused(_), _))
        ));
        let mut no_multi = exec_of("-ERR EXEC without MULTI\r\n");
        no_multi[0] = parsed("-NOPERM no permission\r\n");
        assert!(matches!(
            outcome(no_multi, None),
            Ok((Outcome::Refused(_), _))
        ));

        let mut readonly = exec_of("-EXECABORT Transaction discarded\r\n");
        readonly[1] = parsed("-READONLY You can't write against a read only replica.\r\n");
        let err = outcome(readonly, None).err().unwrap();
        assert_eq!(err.code(), Some("READONLY"));
        let wrongtype = exec_of("*3\r\n:0\r\n-WRONGTYPE wrong kind of value\r\n:0\r\n");
        let err = outcome(wrongtype, None).err().unwrap();
        assert_eq!(err.code(), Some("WRONGTYPE"));
    }
}
