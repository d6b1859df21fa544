//! `?wait=N`: every write waits until N replicas have it (`WAIT N ms`).
//!
//! Replication in Redis is asynchronous: a master acknowledges a write before any replica
//! has it, and a failover promotes a replica that may lack the last writes. With `wait=N`
//! the store sends `WAIT N ms` right behind each write (script or transaction), in the same
//! pipeline on the same connection (so it covers that write), and reports a write that fewer than N replicas
//! confirmed as [`ErrorKind::Unavailable`](cloakroom_core::store::ErrorKind::Unavailable)
//! (the application answers 503): the write is then on the master, perhaps on some
//! replicas, but not known to survive a failover. `WAIT` is given three quarters of the
//! command timeout, so the shortfall is reported as such rather than as a timeout.
//!
//! `WAIT` holds up the connection it runs on: commands pipelined behind it on the same
//! multiplexed connection wait too. On a healthy set-up that is one replication round trip
//! per write; with a replica missing, every write waits for the `WAIT` timeout.

use std::time::Duration;

use futures_util::future::try_join_all;
use redis::{RedisError, Script, ServerErrorKind, Value};

use crate::conn::Conn;

type RedisResult<T> = std::result::Result<T, RedisError>;

/// The `WAIT` timeout for a command timeout: three quarters of it, at least 1 ms.
pub(crate) fn wait_ms(timeout: Duration) -> u64 {
    (timeout.as_millis() * 3 / 4).clamp(1, u128::from(u64::MAX)) as u64
}

/// An error when `acked` replicas are fewer than `replicas`.
pub(crate) fn check(acked: i64, replicas: u32, timeout: Duration) -> RedisResult<()> {
    if acked >= i64::from(replicas) {
        return Ok(());
    }
    // MASTERDOWN-like: the store maps it to `unavailable`, and it is neither a broken
    // connection (no reconnect) nor worth sending again at once.
    Err(RedisError::from((
        redis::ErrorKind::Server(ServerErrorKind::MasterDown),
        "write not confirmed by enough replicas",
        format!(
            "wait={replicas}: only {acked} replica(s) confirmed the write within {} ms",
            wait_ms(timeout)
        ),
    )))
}

/// Runs `script` on `keys` with `args` followed by `WAIT replicas ms`, in one pipeline on
/// `conn`; loads the script first if the server does not have it (`NOSCRIPT`).
pub(crate) async fn script_then_wait(
    mut conn: Conn,
    script: &Script,
    keys: &[&[u8]],
    args: &[Vec<u8>],
    replicas: u32,
    timeout: Duration,
) -> RedisResult<Value> {
    let mut evalsha = redis::cmd("EVALSHA");
    evalsha.arg(script.get_hash()).arg(keys.len());
    for key in keys {
        evalsha.arg(*key);
    }
    for arg in args {
        evalsha.arg(arg.as_slice());
    }
    let mut pipe = redis::pipe();
    pipe.add_command(evalsha)
        .cmd("WAIT")
        .arg(replicas)
        .arg(wait_ms(timeout));
    let (reply, acked): (Value, i64) = match pipe.query_async(&mut conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript) => {
            script.load_async(&mut conn).await?;
            pipe.query_async(&mut conn).await?
        }
        other => other?,
    };
    check(acked, replicas, timeout)?;
    Ok(reply)
}

/// `WAIT replicas ms` on every connection (after writes spread over several); a connection
/// that wrote nothing answers at once.
pub(crate) async fn wait_on_all(
    conns: &[Conn],
    replicas: u32,
    timeout: Duration,
) -> RedisResult<()> {
    let waits = conns.iter().map(|conn| {
        let mut conn = conn.clone();
        async move {
            let acked: i64 = redis::cmd("WAIT")
                .arg(replicas)
                .arg(wait_ms(timeout))
                .query_async(&mut conn)
                .await?;
            check(acked, replicas, timeout)
        }
    });
    try_join_all(waits).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortfalls_are_errors() {
        let t = Duration::from_millis(400);
        assert_eq!(wait_ms(t), 300);
        assert_eq!(wait_ms(Duration::from_micros(10)), 1);
        assert!(check(1, 1, t).is_ok());
        assert!(check(2, 1, t).is_ok());
        let err = check(0, 1, t).unwrap_err();
        assert!(err.to_string().contains("only 0 replica(s)"), "{err}");
        assert!(!err.is_connection_dropped() && !err.is_unrecoverable_error());
    }
}
