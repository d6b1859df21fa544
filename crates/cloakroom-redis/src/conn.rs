//! Connections: from a parsed URL ([`crate::url`]),
//! connecting (one server, a Sentinel service's master, or a Cluster), bounding every command
//! by the command timeout, and mapping redis errors to store errors.
//!
//! Every connection is redis-rs's: a [`Reconnecting`] multiplexed connection to one server
//! (found directly or through the sentinels), or redis-rs's cluster connection. [`Conn`] is
//! the one enum of connection kinds the stores use.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cloakroom_core::store::{Error, ErrorKind, Result};
use redis::aio::ConnectionLike;
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Value,
};

use crate::connection::Master;
use crate::near::NearCache;
use crate::reconnect::{Reconnecting, Tracking};
use crate::url::{Endpoint, RedisUrl, config};

/// Backoff between a Cluster client's connection attempts: from this...
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
/// ...doubling up to this.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

/// A Cluster client for `nodes` (a Cluster URL's seeds), with the URL's credentials,
/// protocol and TLS.
fn cluster_client(
    url: &RedisUrl,
    nodes: &[(String, u16)],
    timeout: Duration,
) -> Result<ClusterClient> {
    let certificates = url.certificates()?;
    let nodes = nodes.iter().map(|(host, port)| {
        let info = url.addr(host.clone(), *port).into_connection_info();
        info.map(|info| info.set_redis_settings(url.server.clone()))
    });
    let nodes = nodes.collect::<RedisResult<Vec<_>>>();
    let bad = |e| config(format!("bad Redis Cluster URL {}", url.shown)).with_source(e);
    let builder = ClusterClientBuilder::new(nodes.map_err(bad)?)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(3)
        .min_retry_wait(RECONNECT_MIN_DELAY.as_millis() as u64)
        .max_retry_wait(RECONNECT_MAX_DELAY.as_millis() as u64);
    let builder = match certificates {
        #[cfg(feature = "tls")]
        Some(certs) => builder.certs(certs),
        #[cfg(not(feature = "tls"))]
        Some(never) => match never {},
        None => builder,
    };
    builder.build().map_err(bad)
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
    /// `n` connections to what `url` names, each serving the near-cache `near` if any (one
    /// server or a Sentinel service's master); see [`Conn::checked`] for the errors.
    pub(crate) async fn open_all(
        url: &RedisUrl,
        timeout: Duration,
        n: usize,
        near: Option<&Arc<NearCache>>,
    ) -> Result<Vec<Conn>> {
        let mut conns = Vec::with_capacity(n);
        if let Endpoint::Cluster(nodes) = &url.endpoint {
            let client = cluster_client(url, nodes, timeout)?;
            for _ in 0..n {
                let connect = async { client.get_async_connection().await.map(Conn::Cluster) };
                conns.push(Conn::checked(connect, timeout, &url.shown).await?);
            }
            return Ok(conns);
        }
        let master = Master::build(url, timeout, &url.shown)?;
        for index in 0..n {
            let track = near.map(|cache| Tracking {
                cache: cache.clone(),
                index,
            });
            conns.push(master.open(timeout, track).await?);
        }
        Ok(conns)
    }

    /// Connects by `connect` and `PING`s, failing with [`ErrorKind::Unavailable`] when the
    /// server cannot be reached within `timeout`, and with [`ErrorKind::Config`] when it
    /// refuses the credentials or its TLS certificate is not accepted (or ours is not).
    pub(crate) async fn checked(
        connect: impl Future<Output = RedisResult<Conn>>,
        timeout: Duration,
        shown: &str,
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
#[cfg(feature = "tls")]
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

/// Without the `tls` feature no connection uses TLS, so none is refused by it.
#[cfg(not(feature = "tls"))]
fn is_tls_rejection(_: &RedisError) -> bool {
    false
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
