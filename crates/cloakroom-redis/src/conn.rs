//! Connections: the URL's scheme and address (its options are [`crate::options`]'s),
//! connecting (one server, a Sentinel service's master, or a Cluster), bounding every command
//! by the command timeout, and mapping redis errors to store errors.
//!
//! Every connection is redis-rs's: a [`Reconnecting`] multiplexed connection to one server
//! (found directly or through the sentinels), or redis-rs's cluster connection. [`Conn`] is
//! the one enum of connection kinds the stores use.

use std::future::Future;
use std::time::Duration;

use cloakroom_core::store::{Error, ErrorKind, Result};
use redis::aio::ConnectionLike;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    AsyncConnectionConfig, Cmd, Pipeline, ProtocolVersion, RedisError, RedisFuture, TlsMode, Value,
};

use crate::options::config;
pub(crate) use crate::options::{
    Resolved, StoreOptions, TlsOptions, redact, standalone_client, take_options,
};
use crate::reconnect::{Reconnecting, Tracking};

/// Backoff between a Cluster client's connection attempts: from this...
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
/// ...doubling up to this.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

/// Where to connect, parsed from the URL, TLS settings and certificates included.
#[derive(Clone)]
pub(crate) enum Target {
    /// One server (`redis://`, `rediss://`, `redis+unix://`, `unix://`).
    Standalone(redis::Client),
    /// A Redis Cluster (`redis+cluster://`, `rediss+cluster://`) from its seed nodes.
    Cluster(ClusterClient),
    /// The master of a Sentinel service (`redis+sentinel://`, `rediss+sentinel://`).
    Sentinel(crate::sentinel::Sentinel),
}

impl Target {
    /// Parses `url` (the store's own options already taken out) with the TLS options, and
    /// reads the certificate files. Every problem is an [`ErrorKind::Config`] error.
    pub(crate) fn parse(url: &str, tls: &TlsOptions, timeout: Duration) -> Result<Target> {
        Target::parse_shown(url, tls, timeout, &redact(url))
    }

    /// [`Target::parse`], errors naming the URL as `shown`.
    pub(crate) fn parse_shown(
        url: &str,
        tls: &TlsOptions,
        timeout: Duration,
        shown: &str,
    ) -> Result<Target> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| config(format!("not a Redis URL: {shown}")))?;
        match scheme.to_ascii_lowercase().as_str() {
            "redis" | "rediss" | "redis+unix" | "unix" => {
                standalone_client(url, tls, shown).map(Target::Standalone)
            }
            s @ ("redis+cluster" | "rediss+cluster") => {
                cluster_client(rest, s == "rediss+cluster", tls, timeout, shown)
                    .map(Target::Cluster)
            }
            s @ ("redis+sentinel" | "rediss+sentinel") => {
                crate::sentinel::Sentinel::parse(rest, s == "rediss+sentinel", tls, timeout, shown)
                    .map(Target::Sentinel)
            }
            _ => Err(config(format!(
                "unsupported Redis URL scheme {scheme:?} (expected redis://, rediss://, \
                 redis+unix://, redis+cluster://, rediss+cluster://, redis+sentinel:// or \
                 rediss+sentinel://)"
            ))),
        }
    }
}

/// `[user:password@]host:port,host:port[/[0]][?protocol=...]` of a cluster URL.
fn cluster_client(
    rest: &str,
    is_tls: bool,
    tls: &TlsOptions,
    timeout: Duration,
    shown: &str,
) -> Result<ClusterClient> {
    let certificates = tls.prepare(is_tls, shown)?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (hosts, path) = hosts.split_once('/').unwrap_or((hosts, ""));
    if !matches!(path, "" | "0") {
        return Err(config(format!(
            "Redis Cluster has only database 0; unexpected {path:?} in {shown}"
        )));
    }
    let scheme = if is_tls { "rediss" } else { "redis" };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| match userinfo {
            Some(u) => format!("{scheme}://{u}@{h}"),
            None => format!("{scheme}://{h}"),
        })
        .collect();
    if nodes.is_empty() {
        return Err(config(format!("no cluster node in {shown}")));
    }
    let mut builder = ClusterClientBuilder::new(nodes)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(3)
        .min_retry_wait(RECONNECT_MIN_DELAY.as_millis() as u64)
        .max_retry_wait(RECONNECT_MAX_DELAY.as_millis() as u64);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("protocol", "3" | "resp3")) => {
                builder = builder.use_protocol(ProtocolVersion::RESP3);
            }
            Some(("protocol", "2" | "resp2")) => {
                builder = builder.use_protocol(ProtocolVersion::RESP2);
            }
            _ => {
                // Only the name: the value may be a password (`pass=...`).
                let name = pair.split_once('=').map_or(pair, |(k, _)| k);
                return Err(config(format!(
                    "unsupported option {name:?} for Redis Cluster in {shown}"
                )));
            }
        }
    }
    if is_tls {
        builder = builder.tls(if tls.insecure_skip_verify {
            TlsMode::Insecure
        } else {
            TlsMode::Secure
        });
        if let Some(certs) = certificates {
            builder = builder.certs(certs);
        }
    }
    builder
        .build()
        .map_err(|e| config(format!("bad Redis Cluster URL {shown}")).with_source(e))
}

/// A connection of one of the kinds the stores use. Clones share it.
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server, multiplexed, reconnecting by itself.
    Standalone(Reconnecting),
    /// A cluster: one multiplexed connection per node, redis-rs routes the commands.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Standalone(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Standalone(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Standalone(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Connection settings for one server: connecting bounded by `timeout`. Replies are not
/// timed by redis-rs (its default is 500 ms): every operation is already bounded by the
/// command timeout ([`bounded`]), and a second timer per command costs CPU under load.
pub(crate) fn connection_config(timeout: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(None)
}

impl Conn {
    /// Connects, failing with [`ErrorKind::Unavailable`] when the server cannot be reached
    /// within `timeout`, and with [`ErrorKind::Config`] when it refuses the credentials or
    /// its TLS certificate is not accepted (or ours is not).
    pub(crate) async fn open(target: &Target, timeout: Duration, shown: &str) -> Result<Conn> {
        Conn::open_tracked(target, timeout, shown, None).await
    }

    /// [`Conn::open`] for a connection that serves a near-cache (`track`; one server or a
    /// Sentinel service's master, over RESP3).
    pub(crate) async fn open_tracked(
        target: &Target,
        timeout: Duration,
        shown: &str,
        track: Option<Tracking>,
    ) -> Result<Conn> {
        let unavailable = |e: Option<RedisError>| {
            let err = Error::new(
                ErrorKind::Unavailable,
                format!("cannot connect to Redis at {shown} within {timeout:?}"),
            );
            match e {
                Some(e) => err.with_source(e),
                None => err,
            }
        };
        let connect = async {
            match target {
                Target::Standalone(client) => {
                    let conn =
                        Reconnecting::tracked(client.clone(), connection_config(timeout), track);
                    conn.connect().await.map(|()| Conn::Standalone(conn))
                }
                Target::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
                // The same self-healing connection, to the master the sentinels name.
                Target::Sentinel(sentinel) => {
                    let conn =
                        Reconnecting::tracked(sentinel.clone(), connection_config(timeout), track);
                    conn.connect().await.map(|()| Conn::Standalone(conn))
                }
            }
        };
        let mut conn = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(open_error(e, shown, &unavailable)),
            Err(_) => return Err(unavailable(None)),
        };
        // The handshake (HELLO/AUTH, SELECT) ran; make sure commands go through too.
        match tokio::time::timeout(timeout, redis::cmd("PING").query_async::<Value>(&mut conn))
            .await
        {
            Ok(Ok(_)) => Ok(conn),
            Ok(Err(e)) => Err(open_error(e, shown, &unavailable)),
            Err(_) => Err(unavailable(None)),
        }
    }

    /// Sends `cmd` to the cluster node at `host:port` (a standalone server ignores the address).
    pub(crate) async fn send_to_node(
        &mut self,
        cmd: Cmd,
        node: &(String, u16),
    ) -> RedisResult<Value> {
        match self {
            Conn::Standalone(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => {
                let route = SingleNodeRoutingInfo::ByAddress {
                    host: node.0.clone(),
                    port: node.1,
                };
                c.route_command(cmd, RoutingInfo::SingleNode(route)).await
            }
        }
    }
}

type RedisResult<T> = std::result::Result<T, RedisError>;

/// A failure to connect at open: a TLS certificate problem is a configuration error (with
/// what rustls said), an unreachable server is `unavailable`.
pub(crate) fn open_error(
    e: RedisError,
    shown: &str,
    unavailable: &impl Fn(Option<RedisError>) -> Error,
) -> Error {
    if is_tls_rejection(&e) {
        // The message is followed by rustls's reason (the source), e.g. `invalid peer
        // certificate: UnknownIssuer` or `received fatal alert: CertificateRequired`.
        return Error::new(
            ErrorKind::Config,
            format!(
                "TLS handshake with Redis at {shown} failed (check the CA (?ca=), the server \
                 name, and the client certificate (?cert=&key=) if the server asks for one)"
            ),
        )
        .with_source(e);
    }
    let mapped = map_error(e.clone(), "connect");
    match mapped.kind() {
        ErrorKind::Unavailable | ErrorKind::Timeout => unavailable(Some(e)),
        // Our own set-up refused (e.g. the near-cache's CLIENT TRACKING): say what it was.
        ErrorKind::Config if e.kind() == redis::ErrorKind::InvalidClientConfig => {
            Error::new(ErrorKind::Config, format!("Redis at {shown}: {e}")).with_source(e)
        }
        ErrorKind::Config => Error::new(
            ErrorKind::Config,
            format!("Redis at {shown} refused the connection (credentials, database or Sentinel service name?)"),
        )
        .with_source(e),
        _ => mapped,
    }
}

/// Whether `e` is (or was caused by) a TLS handshake that rustls or the server refused. redis-rs
/// keeps the I/O error behind an `Arc`, which hides it from `downcast_ref`, so rustls's own
/// messages (stable: `invalid peer certificate: ...`, `received fatal alert: ...`) are
/// recognised too.
fn is_tls_rejection(e: &RedisError) -> bool {
    const RUSTLS_MESSAGES: [&str; 5] = [
        "invalid peer certificate",
        "received fatal alert",
        "peer sent no certificates",
        "peer is incompatible",
        "peer misbehaved",
    ];
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        let io_inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<rustls::Error>());
        if err.is::<rustls::Error>() || io_inner {
            return true;
        }
        next = err.source();
    }
    let text = e.to_string();
    e.is_io_error() && RUSTLS_MESSAGES.iter().any(|m| text.contains(m))
}

/// Whether the request certainly or probably never ran, so sending it again is safe: the
/// connection was refused, or it broke (a Redis restart leaves the old connection dead; the
/// manager reconnects on the next command). Every store operation tolerates a repeat.
pub fn worth_retrying(e: &RedisError) -> bool {
    e.is_connection_refusal() || e.is_connection_dropped()
}

/// A redis error as a store error of the right kind, keeping it as `source()`.
pub fn map_error(e: RedisError, what: &'static str) -> Error {
    use redis::{ErrorKind as K, ServerErrorKind as S};
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        ErrorKind::Unavailable
    } else {
        match e.kind() {
            K::ClusterConnectionNotFound
            | K::Server(
                S::BusyLoading | S::ClusterDown | S::MasterDown | S::TryAgain | S::ReadOnly,
            ) => ErrorKind::Unavailable,
            K::Parse | K::UnexpectedReturnType => ErrorKind::Corrupt,
            K::InvalidClientConfig | K::AuthenticationFailed | K::Server(S::NoPerm) => {
                ErrorKind::Config
            }
            _ if matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM")) => ErrorKind::Config,
            _ => ErrorKind::Backend,
        }
    };
    Error::new(kind, format!("redis {what}")).with_source(e)
}

/// Runs `attempt` (once more if the connection was refused or broke), all within `timeout`.
pub async fn bounded<T, F, Fut>(timeout: Duration, what: &'static str, attempt: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = RedisResult<T>>,
{
    let run = async {
        match attempt().await {
            Err(e) if worth_retrying(&e) => attempt().await,
            other => other,
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(map_error(e, what)),
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!("redis {what}: no reply within {timeout:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use redis::ConnectionAddr;

    use super::*;

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn parses_urls() {
        let none = TlsOptions::default();
        assert!(matches!(
            Target::parse("redis://127.0.0.1:6379/2", &none, T),
            Ok(Target::Standalone(_))
        ));
        let Ok(Target::Standalone(client)) = Target::parse("rediss://u:p@h:1/3", &none, T) else {
            panic!("rediss");
        };
        let info = client.get_connection_info();
        assert!(matches!(
            info.addr(),
            ConnectionAddr::TcpTls {
                insecure: false,
                ..
            }
        ));
        assert_eq!(info.redis_settings().db(), 3);
        assert_eq!(info.redis_settings().username(), Some("u"));
        assert_eq!(info.redis_settings().protocol(), ProtocolVersion::RESP2);
        let Ok(Target::Standalone(client)) = Target::parse("redis://h/0?protocol=resp3", &none, T)
        else {
            panic!("resp3");
        };
        assert_eq!(
            client.get_connection_info().redis_settings().protocol(),
            ProtocolVersion::RESP3
        );
        let insecure = TlsOptions {
            insecure_skip_verify: true,
            ..TlsOptions::default()
        };
        let Ok(Target::Standalone(client)) = Target::parse("rediss://h:1", &insecure, T) else {
            panic!("insecure");
        };
        assert!(matches!(
            client.get_connection_info().addr(),
            ConnectionAddr::TcpTls { insecure: true, .. }
        ));
        assert!(matches!(
            Target::parse("redis+cluster://u:p@a:1,b:2/", &none, T),
            Ok(Target::Cluster(_))
        ));
        assert!(matches!(
            Target::parse("rediss+cluster://a:1,b:2", &none, T),
            Ok(Target::Cluster(_))
        ));
        let missing = TlsOptions {
            ca: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        for (bad, tls) in [
            ("http://x", &none),
            ("redis+cluster://", &none),
            ("redis+cluster://a:1/3", &none),
            ("redis+cluster://a:1/?bogus=1", &none),
            ("x", &none),
            // TLS options on a plain URL.
            ("redis://h", &insecure),
            // An unreadable CA file.
            ("rediss://h", &missing),
            ("rediss+cluster://a:1", &missing),
        ] {
            let err = Target::parse(bad, tls, T)
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
        }
        // A refused option is named, its value (maybe a password) never shown.
        let err = Target::parse("redis+cluster://a:1/?pass=s3cret", &none, T)
            .err()
            .unwrap();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(err.to_string().contains("\"pass\""), "{err}");
        let half = TlsOptions {
            cert: Some("/nonexistent/c.pem".into()),
            ..TlsOptions::default()
        };
        let err = Target::parse("rediss://h", &half, T).err().unwrap();
        assert!(err.to_string().contains("cert=PATH and ?key=PATH"), "{err}");
        let err = Target::parse("rediss://h", &missing, T).err().unwrap();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn takes_store_options_out_of_the_url() {
        let (url, o) =
            take_options("redis://h:1/2?prefix=app%3Ax+y&timeout_ms=250&protocol=3&connections=4")
                .unwrap();
        assert_eq!(url, "redis://h:1/2?protocol=3");
        assert_eq!(o.prefix.as_deref(), Some("app:x y"));
        assert_eq!(o.timeout, Some(Duration::from_millis(250)));
        assert_eq!(o.connections, Some(4));
        let (url, o) = take_options(
            "rediss://u:p@h/0?max_connections=3&ca=%2Fetc%2Fca.pem&cert=/c.pem&key=/k.pem\
             &insecure_skip_verify=true",
        )
        .unwrap();
        assert_eq!(url, "rediss://u:p@h/0");
        assert_eq!(o.connections, Some(3));
        assert_eq!(o.tls.ca.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(o.tls.cert.as_deref(), Some("/c.pem"));
        assert_eq!(o.tls.key.as_deref(), Some("/k.pem"));
        assert!(o.tls.insecure_skip_verify);
        let (url, o) = take_options("redis+cluster://a:1,b:2/?prefix=p:").unwrap();
        assert_eq!(url, "redis+cluster://a:1,b:2/");
        assert_eq!(o.prefix.as_deref(), Some("p:"));
        assert_eq!(
            take_options("redis://h").unwrap(),
            ("redis://h".into(), StoreOptions::default())
        );
        for bad in [
            "redis://h?timeout_ms=x",
            "redis://h?connections=-1",
            "redis://h?prefix=%zz",
            "redis://h?bogus=1",
            "rediss://h?cafile=/x",
            "rediss://h?insecure_skip_verify=maybe",
        ] {
            assert_eq!(
                take_options(bad).unwrap_err().kind(),
                ErrorKind::Config,
                "{bad}"
            );
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://secret@h:1"), "redis://***@h:1");
        assert_eq!(
            redact("redis+cluster://:pw@a:1,b:2"),
            "redis+cluster://:***@a:1,b:2"
        );
        assert_eq!(
            redact("redis://h:1/?password=x&db=1"),
            "redis://h:1/?password=***&db=1"
        );
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
    }
}
