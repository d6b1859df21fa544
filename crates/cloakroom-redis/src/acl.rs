//! The permission check: whether the store's Redis user may run what the store runs, on
//! keys under its prefix. Run when the store opens (a user without `EVALSHA`, or whose key
//! pattern leaves the prefix out, is a configuration error at start-up rather than a 503 on
//! every login) and by [`SessionStore::ping`](cloakroom_core::store::SessionStore::ping), so
//! a health check sees permissions revoked later.
//!
//! One script call (`EVALSHA`, loaded by `SCRIPT LOAD` on `NOSCRIPT`, as every script of
//! the store) on a session key under the prefix: the call itself is the check of `EVALSHA`
//! and of that key; inside it, `redis.acl_check_cmd` (Redis 7+; the in-script `ACL DRYRUN`,
//! which needs no admin rights and no user name) checks every other command of
//! [`needs`] without running any. Redis 6.2 has no `redis.acl_check_cmd`: there only the
//! call itself is checked. The answer also tells whether the server is Redis 7 or later,
//! which patches as native transactions (see [`crate::transaction`]).

use cloakroom_core::store::{Error, ErrorKind, Result};
use redis::{RedisError, Script, Value};
use std::sync::LazyLock;

use crate::conn::bounded;
use crate::store::RedisStore;
use crate::url::config;

/// `KEYS[1]`: a session key. `ARGV`: commands, each as its word count and its words.
/// Returns the first refused command and its key (or subcommand); else the server's version
/// number (Redis 7 or later) or nil (before 7).
static CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "
if not redis.acl_check_cmd then return false end
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  if not redis.acl_check_cmd(unpack(ARGV, i + 1, i + n)) then
    return ARGV[i + 1] .. ' ' .. ARGV[i + 2]
  end
  i = i + n + 1
end
return redis.REDIS_VERSION_NUM
",
    )
});

/// What the store runs besides `EVALSHA`, on keys under `prefix`: its own commands and
/// those of its scripts (see [`crate::scripts`]); `WAIT` with `?wait=N`; the stream
/// commands, `SISMEMBER`, `SCAN` and the `SET` of the sweep's turn (the expiry sweep) with
/// an event log (`?events=N`, [`crate::events`]). `RESTORE`, `MULTI` and `EXEC` are left
/// out (refused, the scripts do their work), as are `CLUSTER` and, without a log, `SCAN`
/// (admin listings only).
fn needs(prefix: &str, wait: bool, log: bool) -> Vec<Vec<String>> {
    let s = format!("{prefix}s:acl-check");
    let u = format!("{prefix}u:acl-check");
    let events = format!("{prefix}events");
    let sweep = format!("{prefix}events:sweep");
    let mut needs: Vec<Vec<&str>> = vec![
        vec!["SCRIPT", "LOAD", "return 1"],
        vec!["HGETALL", &s],
        vec!["EXISTS", &s],
        vec!["HGET", &s, "e"],
        vec!["HMGET", &s, "e"],
        vec!["HSET", &s, "e", "0"],
        vec!["HDEL", &s, "e"],
        vec!["PEXPIREAT", &s, "0"],
        vec!["DEL", &s],
        vec!["UNLINK", &s],
        vec!["SADD", &u, "h"],
        vec!["SCARD", &u],
        vec!["SMEMBERS", &u],
        vec!["SREM", &u, "h"],
    ];
    if wait {
        needs.push(vec!["WAIT", "1", "0"]);
    }
    if log {
        needs.extend([
            vec!["XADD", &events, "MAXLEN", "~", "1", "*", "f", "v"],
            vec!["XRANGE", &events, "-", "+"],
            vec!["XINFO", "STREAM", &events],
            vec!["XREAD", "STREAMS", &events, "0-0"],
            vec!["SISMEMBER", &u, "h"],
            vec!["SCAN", "0"],
            vec!["SET", &sweep, "1", "NX", "PX", "1"],
        ]);
    }
    needs
        .into_iter()
        .map(|c| c.into_iter().map(str::to_owned).collect())
        .collect()
}

impl RedisStore {
    /// Refuses ([`ErrorKind::Config`]) when the user may not run one of the store's commands
    /// on keys under the prefix; see the [module docs](self). Otherwise answers whether the
    /// server is Redis 7 or later.
    pub(crate) async fn check_permissions(&self) -> Result<bool> {
        let inner = &self.inner;
        let key = format!("{}s:acl-check", inner.prefix);
        let needs = needs(&inner.prefix, inner.wait > 0, inner.log.is_some());
        let conn = self.conn();
        let reply = bounded(inner.timeout, "permission check", || {
            let mut conn = conn.clone();
            let mut invocation = CHECK.prepare_invoke();
            invocation.key(&key);
            for command in &needs {
                invocation.arg(command.len()).arg(command);
            }
            async move { invocation.invoke_async::<Value>(&mut conn).await }
        })
        .await;
        let commands = needs.iter().map(|c| c[0].as_str()).collect::<Vec<_>>();
        let refused = |what: String| {
            config(format!(
                "Redis at {}: the ACL of the store's user does not allow {what}; the store runs \
                 EVALSHA, {} on keys under {:?} (e.g. `~{}* +@read +@write +@scripting \
                 +@transaction +@connection`)",
                inner.shown_url,
                commands.join(", "),
                inner.prefix,
                inner.prefix
            ))
        };
        match reply {
            Ok(Value::Nil) => Ok(false),
            Ok(Value::Int(_)) => Ok(true),
            Ok(Value::BulkString(denied)) => {
                Err(refused(format!("`{}`", String::from_utf8_lossy(&denied))))
            }
            Ok(other) => Err(Error::new(
                ErrorKind::Corrupt,
                format!("unexpected reply of the permission check: {other:?}"),
            )),
            Err(e) => match noperm(&e) {
                // Redis's reply (the source) names the command or says "keys".
                Some(e) => {
                    Err(refused(format!("EVALSHA or SCRIPT LOAD on {key:?}")).with_source(e))
                }
                None => Err(e),
            },
        }
    }
}

/// Redis's `NOPERM` (an ACL refusal) behind `e`, if that is what it is.
fn noperm(e: &Error) -> Option<RedisError> {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<RedisError>())
        .filter(|r| r.code() == Some("NOPERM"))
        .cloned()
}
