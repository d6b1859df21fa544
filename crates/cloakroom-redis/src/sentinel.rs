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
//! [`ErrorKind::Config`] error naming that sentinel, not "unavailable". The password is
//! masked (`***`) wherever the URL is shown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cloakroom_core::store::{Error, ErrorKind, Result};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, RedisError, Value};

use crate::options::percent_decode;
use crate::options::{TlsOptions, standalone_client};

/// The port of a sentinel named without one.
const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// The least time one sentinel is given to answer before the next one is asked.
const MIN_PER_SENTINEL: Duration = Duration::from_millis(200);

type RedisResult<T> = std::result::Result<T, RedisError>;

fn config(message: String) -> Error {
    Error::new(ErrorKind::Config, message)
}

/// The master of a service, as the sentinels name it now; clones share the sentinels' order.
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
    /// How to reach a server (credentials, database, protocol, TLS); its address is replaced
    /// by the master's.
    template: redis::Client,
    /// The bound on asking one sentinel.
    per_sentinel: Duration,
}

impl Sentinel {
    /// Parses the part of a `redis+sentinel://` (`is_tls`: `rediss+sentinel://`) URL after
    /// the scheme, the store's own options already taken out. Every problem is an
    /// [`ErrorKind::Config`] error.
    pub(crate) fn parse(
        rest: &str,
        is_tls: bool,
        tls: &TlsOptions,
        timeout: Duration,
        shown: &str,
    ) -> Result<Sentinel> {
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let hosts: Vec<&str> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        if hosts.is_empty() {
            return Err(config(format!(
                "no sentinel in {shown} (expected redis+sentinel://host:port,host:port/SERVICE/DB)"
            )));
        }
        let mut parts = path.split('/');
        let service = parts.next().unwrap_or("");
        let db = parts.next().unwrap_or("");
        if service.is_empty() || parts.any(|p| !p.is_empty()) {
            return Err(config(format!(
                "a sentinel URL names the service and optionally the database: \
                 redis+sentinel://host:port,.../SERVICE/DB, not {shown}"
            )));
        }
        if !service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(config(format!(
                "bad sentinel service name {service:?} in {shown} (letters, digits, -_.: only)"
            )));
        }
        let db = match db {
            "" => 0,
            d => d.parse::<u32>().map_err(|_| {
                config(format!(
                    "bad database {d:?} in {shown} (a number, e.g. /SERVICE/0)"
                ))
            })?,
        };
        let Query {
            passed_on: query,
            username,
            password,
        } = Query::parse(query, shown)?;
        if is_tls && tls.ca.is_none() && !tls.insecure_skip_verify {
            // The master's password goes to whatever address a sentinel names; with the
            // system roots, any publicly trusted certificate for that name passes.
            tracing::warn!(
                url = %shown,
                "rediss+sentinel:// without ca=: the servers the sentinels name are checked \
                 against the system roots only; give the CA of your Redis servers as ca=PATH"
            );
        }
        let scheme = if is_tls { "rediss" } else { "redis" };
        let with_port = |h: &str| {
            // `host:port`, `[v6]:port`; a bare host or `[v6]` gets the sentinel port.
            let has_port = match h.rsplit_once(']') {
                Some((_, after)) => after.starts_with(':'),
                None => h.contains(':'),
            };
            if has_port {
                h.to_owned()
            } else {
                format!("{h}:{DEFAULT_SENTINEL_PORT}")
            }
        };
        let sentinels = hosts
            .iter()
            .map(|h| {
                let url = format!("{scheme}://{}/0{query}", with_port(h));
                let client = standalone_client(&url, tls, shown)?;
                with_credentials(client, username.as_deref(), password.as_deref())
                    .map_err(|e| config(format!("bad sentinel in {shown}")).with_source(e))
            })
            .collect::<Result<Vec<_>>>()?;
        let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        // The address is a placeholder: each connection goes to the master named then.
        let template = standalone_client(
            &format!("{scheme}://{userinfo}{}/{db}{query}", with_port(hosts[0])),
            tls,
            shown,
        )?;
        let count = u32::try_from(sentinels.len()).unwrap_or(u32::MAX);
        Ok(Sentinel {
            inner: Arc::new(Inner {
                sentinels,
                first: AtomicUsize::new(0),
                service: service.to_owned(),
                template,
                per_sentinel: (timeout / count).max(MIN_PER_SENTINEL),
            }),
        })
    }

    /// The database the connections select.
    pub(crate) fn db(&self) -> i64 {
        self.inner
            .template
            .get_connection_info()
            .redis_settings()
            .db()
    }

    /// Whether the connections speak RESP3.
    pub(crate) fn resp3(&self) -> bool {
        self.inner
            .template
            .get_connection_info()
            .redis_settings()
            .protocol()
            .supports_resp3()
    }

    /// Asks the sentinels for the master, connects to it with `config` and checks that it is
    /// one. A sentinel that cannot be reached, a master that cannot be reached or is not (yet)
    /// a master are I/O errors (the store says `unavailable`); sentinels that all answer but
    /// do not know the service are a configuration error.
    pub(crate) async fn connect(
        &self,
        config: &AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        let (host, port) = self.master_address().await?;
        let client = self.client_for(host.clone(), port)?;
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

    /// A client for the server at `host:port` with the URL's credentials, database,
    /// protocol and TLS settings.
    fn client_for(&self, host: String, port: u16) -> RedisResult<redis::Client> {
        let info = self.inner.template.get_connection_info().clone();
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

/// The query of a sentinel URL, the store's own options already taken out.
struct Query {
    /// What goes on to every connection (`?protocol=...`), or nothing.
    passed_on: String,
    /// The sentinels' ACL user (`sentinel_username`).
    username: Option<String>,
    /// The sentinels' password (`sentinel_password`).
    password: Option<String>,
}

impl Query {
    /// Parses `query` (without the `?`) of the URL shown as `shown`.
    fn parse(query: &str, shown: &str) -> Result<Query> {
        let mut passed_on = Vec::new();
        let mut username = None;
        let mut password = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            // Decoded, not empty; the value is never quoted (it may be a password).
            let text = || {
                let bad = || {
                    let hint = "not empty; percent-encode reserved characters";
                    config(format!("bad {name} in {shown} ({hint})"))
                };
                percent_decode(value)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(bad)
            };
            match name {
                "protocol" => passed_on.push(pair),
                "sentinel_username" => username = Some(text()?),
                "sentinel_password" => password = Some(text()?),
                _ => {
                    // Only the name: `pass=...` reaches here and its value is a secret.
                    let name = if name.len() <= 32
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    {
                        format!("{name:?}")
                    } else {
                        "(name not shown)".to_owned()
                    };
                    return Err(config(format!(
                        "unsupported option {name} for a sentinel URL in {shown} (a sentinel \
                         URL takes protocol, sentinel_username and sentinel_password besides \
                         the store's options)"
                    )));
                }
            }
        }
        if username.is_some() && password.is_none() {
            return Err(config(format!(
                "sentinel_username needs sentinel_password in {shown}"
            )));
        }
        Ok(Query {
            passed_on: if passed_on.is_empty() {
                String::new()
            } else {
                format!("?{}", passed_on.join("&"))
            },
            username,
            password,
        })
    }
}

/// `client` with the sentinels' own credentials, if the URL gives them.
fn with_credentials(
    client: redis::Client,
    username: Option<&str>,
    password: Option<&str>,
) -> RedisResult<redis::Client> {
    let Some(password) = password else {
        return Ok(client);
    };
    let info = client.get_connection_info().clone();
    let mut settings = info.redis_settings().clone().set_password(password);
    if let Some(username) = username {
        settings = settings.set_username(username);
    }
    // The address keeps its TLS parameters (CA, client certificate).
    redis::Client::open(info.set_redis_settings(settings))
}

/// Whether `e` says a server refused our credentials (wrong or missing password, a user
/// without the permission).
fn refuses_credentials(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
}

/// Where a [`Reconnecting`](crate::reconnect::Reconnecting) connection goes: one fixed
/// server, or whichever server the sentinels name as master at each connection attempt.
#[derive(Clone)]
pub(crate) enum Source {
    /// One server (boxed: a client is large, a `Sentinel` one pointer).
    Server(Box<redis::Client>),
    /// The master of a Sentinel service.
    Sentinel(Sentinel),
}

impl From<redis::Client> for Source {
    fn from(client: redis::Client) -> Source {
        Source::Server(Box::new(client))
    }
}

impl From<Sentinel> for Source {
    fn from(sentinel: Sentinel) -> Source {
        Source::Sentinel(sentinel)
    }
}

impl Source {
    /// The database the connections select.
    pub(crate) fn db(&self) -> i64 {
        match self {
            Source::Server(c) => c.get_connection_info().redis_settings().db(),
            Source::Sentinel(s) => s.db(),
        }
    }

    /// Whether the connections speak RESP3.
    pub(crate) fn resp3(&self) -> bool {
        match self {
            Source::Server(c) => c
                .get_connection_info()
                .redis_settings()
                .protocol()
                .supports_resp3(),
            Source::Sentinel(s) => s.resp3(),
        }
    }

    /// Whether a connection must be replaced when its server turns out to be a replica.
    pub(crate) fn follows_master(&self) -> bool {
        matches!(self, Source::Sentinel(_))
    }

    /// One connection made with `config`.
    pub(crate) async fn connect(
        &self,
        config: &AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        match self {
            Source::Server(c) => c.get_multiplexed_async_connection_with_config(config).await,
            Source::Sentinel(s) => s.connect(config).await,
        }
    }
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

    fn parse(rest: &str) -> Result<Sentinel> {
        Sentinel::parse(rest, false, &TlsOptions::default(), T, rest)
    }

    #[test]
    fn parses_sentinel_urls() {
        let s = parse("a:1,b:2,[::1]:3,c/mymaster/2").unwrap();
        assert_eq!(s.inner.sentinels.len(), 4);
        assert_eq!(s.inner.service, "mymaster");
        assert_eq!(s.db(), 2);
        assert!(!s.resp3(), "RESP2 by default, as for redis://");
        let addrs: Vec<String> = s
            .inner
            .sentinels
            .iter()
            .map(|c| c.get_connection_info().addr().to_string())
            .collect();
        assert_eq!(addrs, ["a:1", "b:2", "::1:3", "c:26379"]);
        let s = parse("u:p@a:1/svc?protocol=resp3").unwrap();
        assert_eq!(s.db(), 0);
        assert!(s.resp3());
        let info = s.inner.template.get_connection_info().redis_settings();
        assert_eq!(info.username(), Some("u"));
        // The sentinels are asked without the servers' credentials.
        let sentinel = s.inner.sentinels[0]
            .get_connection_info()
            .redis_settings()
            .clone();
        assert_eq!(sentinel.username(), None);
        let master = s.client_for("10.0.0.9".into(), 7000).unwrap();
        assert_eq!(
            master.get_connection_info().addr().to_string(),
            "10.0.0.9:7000"
        );
        assert_eq!(
            master.get_connection_info().redis_settings().username(),
            Some("u")
        );
        for bad in [
            "/svc/0",
            " , /svc",
            "a:1",
            "a:1/",
            "a:1/svc/x",
            "a:1/svc/0/extra",
            "a:1/sv c",
            "a:1/svc?bogus=1",
        ] {
            let err = parse(bad).err().unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
        }
    }

    #[test]
    fn sentinels_get_their_own_credentials() {
        let s = parse("u:p@a:1,b:2/svc?sentinel_username=sen&sentinel_password=p%40ss+w").unwrap();
        for sentinel in &s.inner.sentinels {
            let settings = sentinel.get_connection_info().redis_settings();
            assert_eq!(settings.username(), Some("sen"));
            assert_eq!(settings.password(), Some("p@ss w"));
        }
        // The servers keep theirs.
        let server = s.inner.template.get_connection_info().redis_settings();
        assert_eq!(
            (server.username(), server.password()),
            (Some("u"), Some("p"))
        );
        // A password alone: `requirepass` (the default user).
        let s = parse("a:1/svc?sentinel_password=pw&protocol=resp3").unwrap();
        let sentinel = s.inner.sentinels[0].get_connection_info().redis_settings();
        assert_eq!(
            (sentinel.username(), sentinel.password()),
            (None, Some("pw"))
        );
        assert!(sentinel.protocol().supports_resp3());
        let server = s.inner.template.get_connection_info().redis_settings();
        assert_eq!(server.password(), None);
        // Over TLS the sentinels keep TLS.
        let s = Sentinel::parse(
            "a:1/svc?sentinel_password=pw",
            true,
            &TlsOptions::default(),
            T,
            "x",
        )
        .unwrap();
        let info = s.inner.sentinels[0].get_connection_info();
        assert!(matches!(info.addr(), ConnectionAddr::TcpTls { .. }));
        assert_eq!(info.redis_settings().password(), Some("pw"));
        for bad in [
            "a:1/svc?sentinel_username=u",
            "a:1/svc?sentinel_password=",
            "a:1/svc?sentinel_password=%zz",
            "a:1/svc?sentinel_username=&sentinel_password=p",
        ] {
            let err = parse(bad).err().unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
        }
        // An option the sentinel URL refuses is named, its value (a password?) is not shown.
        let tls = TlsOptions::default();
        let err = Sentinel::parse("a:1/svc?pass=hunter2", false, &tls, T, "URL")
            .err()
            .unwrap();
        assert!(err.to_string().contains("\"pass\""), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
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
        let s = parse("a:1/svc?sentinel_password=pw").unwrap();
        let err = s.refusal("127.0.0.1:26379", &wrong).to_string();
        assert!(err.contains("sentinel 127.0.0.1:26379"), "{err}");
        assert!(err.contains("sentinel_password was given"), "{err}");
        assert!(!err.contains("pw"), "{err}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            crate::conn::redact(
                "redis+sentinel://a:1/svc/0?sentinel_username=u&sentinel_password=secret"
            ),
            "redis+sentinel://a:1/svc/0?sentinel_username=u&sentinel_password=***"
        );
        assert_eq!(
            crate::conn::redact("redis+sentinel://u:secret@a:1,b:2/svc/0"),
            "redis+sentinel://u:***@a:1,b:2/svc/0"
        );
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
        // What Reconnecting asks of a Sentinel source.
        let s = Source::from(parse("a:1/svc").unwrap());
        assert!(s.follows_master());
        let fixed = Source::from(redis::Client::open("redis://h:1/3").unwrap());
        assert!(!fixed.follows_master());
        assert_eq!(fixed.db(), 3);
    }
}
