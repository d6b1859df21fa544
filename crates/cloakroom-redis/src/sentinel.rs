//! Redis Sentinel: `redis+sentinel://[user:password@]host:port,host:port/SERVICE[/DB]` (and
//! `rediss+sentinel://` for TLS to the sentinels and the servers alike).
//!
//! Every (re)connection asks the sentinels, in order, which server is the master of
//! `SERVICE` (`SENTINEL get-master-addr-by-name`; the sentinel that answered is asked first
//! next time), connects to it and checks that it says it is a master (`ROLE`) before any
//! command goes through it. The connection itself is the store's ordinary self-healing
//! multiplexed one ([`Reconnecting`](crate::reconnect::Reconnecting)): when the master dies
//! the connection breaks, commands fail as `unavailable` within the command timeout, and the
//! next command asks the sentinels again, so once they have promoted a replica the store
//! follows without a restart. A connection to a server that was demoted while we kept it
//! (`READONLY` replies) is dropped the same way.
//!
//! Why not redis-rs's `SentinelClient`: it chooses the master from `SENTINEL MASTERS` flags,
//! which cannot tell "no such service" (a configuration error, reported at start-up) from
//! "master down, failover under way" (unavailable, try again), it checks the role on a
//! throw-away connection rather than on the one we use, and its lookups need `&mut` (one
//! lock around every reconnection). What we need is one command per sentinel and one per
//! master, on redis-rs connections.
//!
//! The credentials before the `@` are the servers' (the master's and, after a failover, the
//! promoted replica's). Sentinels that require a password of their own (`requirepass` or an
//! ACL user in `sentinel.conf`) are given theirs in the query:
//! `?sentinel_password=P`, or `?sentinel_username=U&sentinel_password=P` for an ACL user
//! (the names go-redis, ioredis and Jedis use; percent-encode reserved characters). Every
//! sentinel gets the same ones; without them the sentinels are asked without credentials.
//! Both are checked when the store opens: a sentinel that refuses them is an
//! configuration error naming that sentinel, not "unavailable". The password is
//! masked (`***`) wherever the URL is shown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, RedisError, Value};

/// The least time one sentinel is given to answer before the next one is asked.
const MIN_PER_SENTINEL: Duration = Duration::from_millis(200);

type RedisResult<T> = std::result::Result<T, RedisError>;

/// The sentinels of a service, asked for its master; clones share the sentinels' order.
#[derive(Clone)]
pub(crate) struct Sentinel {
    inner: Arc<Inner>,
}

struct Inner {
    /// One client per sentinel, in the URL's order.
    sentinels: Vec<redis::Client>,
    /// The sentinel to ask first (the last one that answered).
    first: AtomicUsize,
    service: String,
    /// The bound on asking one sentinel.
    per_sentinel: Duration,
}

impl Sentinel {
    /// The `sentinels` (clients with the sentinels' own credentials) of `service`, all asked
    /// within `timeout`.
    pub(crate) fn new(sentinels: Vec<redis::Client>, service: String, timeout: Duration) -> Self {
        let count = u32::try_from(sentinels.len()).unwrap_or(u32::MAX).max(1);
        Sentinel {
            inner: Arc::new(Inner {
                sentinels,
                first: AtomicUsize::new(0),
                service,
                per_sentinel: (timeout / count).max(MIN_PER_SENTINEL),
            }),
        }
    }

    /// Asks the sentinels for the master, connects to it with `config` and checks that it is
    /// one. A sentinel that cannot be reached, a master that cannot be reached or is not (yet)
    /// a master are I/O errors (the store says `unavailable`); sentinels that all answer but
    /// do not know the service are a configuration error.
    pub(crate) async fn connect(
        &self,
        server: &redis::Client,
        config: &AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        let (host, port) = self.master_address().await?;
        let client = client_for(server, host.clone(), port)?;
        let mut conn = client
            .get_multiplexed_async_connection_with_config(config)
            .await?;
        let role: Value = redis::cmd("ROLE").query_async(&mut conn).await?;
        match role_name(&role).as_deref() {
            Some("master") => {
                tracing::debug!(service = %self.inner.service, %host, port, "connected to the Sentinel master");
                Ok(conn)
            }
            other => Err(RedisError::from((
                redis::ErrorKind::Io,
                "the server the sentinels name as master is not (yet) one",
                format!(
                    "{host}:{port} says its role is {:?} (failover under way?)",
                    other.unwrap_or("unknown")
                ),
            ))),
        }
    }
}

/// A client for the server at `host:port` with `server`'s credentials, database, protocol
/// and TLS settings.
fn client_for(server: &redis::Client, host: String, port: u16) -> RedisResult<redis::Client> {
    let info = server.get_connection_info().clone();
    let addr = match info.addr().clone() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            tls_params,
        },
        _ => ConnectionAddr::Tcp(host, port),
    };
    redis::Client::open(info.set_addr(addr))
}

impl Sentinel {
    /// The master's address from the first sentinel that answers, starting with the one that
    /// answered last.
    async fn master_address(&self) -> RedisResult<(String, u16)> {
        let inner = &self.inner;
        let n = inner.sentinels.len();
        let first = inner.first.load(Ordering::Relaxed) % n;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(inner.per_sentinel))
            .set_response_timeout(Some(inner.per_sentinel));
        let mut unknown = 0;
        let mut last_error = None;
        let mut refused = None;
        for i in (0..n).map(|k| (first + k) % n) {
            let ask = async {
                let mut conn = inner.sentinels[i]
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&inner.service)
                    .query_async::<Option<(String, u16)>>(&mut conn)
                    .await
            };
            match tokio::time::timeout(inner.per_sentinel, ask).await {
                Ok(Ok(Some(address))) => {
                    inner.first.store(i, Ordering::Relaxed);
                    return Ok(address);
                }
                Ok(Ok(None)) => unknown += 1,
                Ok(Err(e)) if refuses_credentials(&e) => {
                    let sentinel = inner.sentinels[i].get_connection_info().addr().to_string();
                    tracing::warn!(%sentinel, error = %e, "a sentinel refused the credentials");
                    refused = Some(self.refusal(&sentinel, &e));
                }
                Ok(Err(e)) => {
                    tracing::debug!(sentinel = i, error = %e, "a sentinel did not answer");
                    last_error = Some(e);
                }
                Err(_) => tracing::debug!(sentinel = i, "a sentinel did not answer in time"),
            }
        }
        // A sentinel that refused the credentials is a configuration error, whatever the
        // others did: it is what needs fixing.
        if let Some(refused) = refused {
            return Err(refused);
        }
        if unknown == n {
            return Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "no sentinel knows the service",
                format!(
                    "service {:?} (check the name after the hosts)",
                    inner.service
                ),
            )));
        }
        // The last sentinel's own error, as it is: a refused connection (unavailable) or a
        // rejected certificate (a configuration error) keeps its kind and its cause.
        Err(last_error.unwrap_or_else(|| {
            RedisError::from((
                redis::ErrorKind::Io,
                "no sentinel named a master",
                format!(
                    "{n} sentinel(s) asked for {:?}: {unknown} did not know it, the others did \
                     not answer within {:?}",
                    inner.service, inner.per_sentinel
                ),
            ))
        }))
    }

    /// The error for a sentinel (at `addr`) that refused the credentials (`e`).
    fn refusal(&self, addr: &str, e: &RedisError) -> RedisError {
        let given = match self.inner.sentinels.first().map(|c| {
            let settings = c.get_connection_info().redis_settings();
            (settings.username().is_some(), settings.password().is_some())
        }) {
            Some((true, true)) => "sentinel_username and sentinel_password were given",
            Some((false, true)) => "sentinel_password was given, no sentinel_username",
            _ => "no sentinel_password was given",
        };
        RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "a sentinel refused the credentials",
            format!(
                "sentinel {addr} ({given}; the sentinels' own credentials go in \
                 ?sentinel_username=U&sentinel_password=P): {e}"
            ),
        ))
    }
}

/// Whether `e` says a server refused our credentials (wrong or missing password, a user
/// without the permission).
fn refuses_credentials(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
}

/// The first element of a `ROLE` reply: `master`, `slave` or `sentinel`.
pub(crate) fn role_name(role: &Value) -> Option<String> {
    match role {
        Value::Array(items) => match items.first()? {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Whether `e` says the server we talk to is no longer the master (a write on a replica,
/// alone or inside a `MULTI` that `EXEC` then aborted).
pub fn demoted(e: &RedisError) -> bool {
    let read_only = redis::ServerErrorKind::ReadOnly;
    e.kind() == redis::ErrorKind::Server(read_only)
        || (e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ExecAbort)
            && e.clone()
                .into_server_errors()
                .is_some_and(|errors| errors.iter().any(|(_, err)| err.kind() == Some(read_only))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn the_master_keeps_the_servers_settings() {
        let url = crate::url::RedisUrl::parse(
            "rediss+sentinel://u:p@a:1/svc/4?sentinel_password=pw&protocol=resp3",
        )
        .unwrap();
        let master = crate::connection::Master::build(&url, T, "x").unwrap();
        assert!(master.follows_master());
        let settings = master.settings();
        assert_eq!((settings.db(), settings.username()), (4, Some("u")));
        let server = redis::Client::open("rediss://u:p@placeholder:1/4").unwrap();
        let client = client_for(&server, "10.0.0.9".into(), 7000).unwrap();
        let info = client.get_connection_info();
        assert_eq!(info.addr().to_string(), "10.0.0.9:7000");
        assert!(matches!(info.addr(), ConnectionAddr::TcpTls { .. }));
        assert_eq!(info.redis_settings().username(), Some("u"));
    }

    #[test]
    fn refused_credentials_are_recognised() {
        let wrong = RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        assert!(refuses_credentials(&wrong));
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(!refuses_credentials(&io));
        let sentinel = redis::Client::open("redis://:pw@127.0.0.1:26379").unwrap();
        let s = Sentinel::new(vec![sentinel], "svc".to_owned(), T);
        let err = s.refusal("127.0.0.1:26379", &wrong).to_string();
        assert!(err.contains("sentinel 127.0.0.1:26379"), "{err}");
        assert!(err.contains("sentinel_password was given"), "{err}");
        assert!(!err.contains("pw"), "{err}");
    }

    /// A write inside `MULTI` on a replica: Redis queues the `READONLY` error and `EXEC`
    /// aborts; redis-rs reports `ExecAbort`. It must count as demoted (a store's
    /// transactions then ask the sentinels again instead of failing with a backend error).
    #[tokio::test]
    async fn a_transaction_on_a_replica_means_demoted() {
        let server = cloakroom_testkit::redis_server::RedisServer::start();
        // A replica of nobody is still a read-only replica.
        server
            .command(&["REPLICAOF", "127.0.0.1", "1"])
            .expect("REPLICAOF");
        let client = redis::Client::open(server.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let err = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg("k")
            .arg("v")
            .query_async::<Value>(&mut conn)
            .await
            .expect_err("a write on a replica");
        assert_eq!(
            err.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::ExecAbort),
            "{err:?}"
        );
        assert!(demoted(&err), "{err:?}");
        let err = redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query_async::<Value>(&mut conn)
            .await
            .expect_err("a write on a replica");
        assert!(demoted(&err), "{err:?}");
    }

    #[test]
    fn reads_roles() {
        let master = Value::Array(vec![Value::BulkString(b"master".to_vec()), Value::Int(0)]);
        assert_eq!(role_name(&master).as_deref(), Some("master"));
        assert_eq!(role_name(&Value::Nil), None);
    }

    #[test]
    fn a_write_on_a_replica_means_demoted() {
        let readonly = RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            "You can't write against a read only replica.",
        ));
        assert!(demoted(&readonly));
        let other = RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "ERR",
        ));
        assert!(!demoted(&other));
        // A queued write that a replica refused, then EXEC aborted: see the test below.
        let aborted = RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ExecAbort),
            "Transaction discarded because of previous errors.",
        ));
        assert!(!demoted(&aborted), "no READONLY among its errors");
    }
}
