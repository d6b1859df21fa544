//! Connections: URL parsing, connecting (standalone or Cluster), bounding every command by
//! the command timeout, and mapping redis errors to store errors.

use std::future::Future;
use std::time::Duration;

use cloakroom_core::store::{Error, ErrorKind, Result};
use redis::aio::ConnectionLike;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Value};

use crate::pipe::Pipe;

/// Backoff between a Cluster client's connection attempts: from this...
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
/// ...doubling up to this.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

/// Where to connect, parsed from the URL.
#[derive(Clone)]
pub(crate) enum Target {
    /// One server (`redis://`, `redis+unix://`, `unix://`): the URL as redis-rs takes it.
    Standalone(String),
    /// Cluster seed nodes, each as a `redis://` URL.
    Cluster(Vec<String>),
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target> {
        let config = |m: String| Error::new(ErrorKind::Config, m);
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| config(format!("not a Redis URL: {}", redact(url))))?;
        match scheme.to_ascii_lowercase().as_str() {
            "redis" | "redis+unix" | "unix" => Ok(Target::Standalone(url.to_owned())),
            "rediss" | "rediss+cluster" => Err(config(
                "rediss:// (TLS) is not supported by cloakroom-redis: connect over a TLS \
                 tunnel or a private network"
                    .into(),
            )),
            "redis+cluster" => {
                // redis+cluster://[user:password@]host:port,host:port[/]
                let (userinfo, hosts) = match rest.rsplit_once('@') {
                    Some((u, h)) => (Some(u), h),
                    None => (None, rest),
                };
                let (hosts, path) = match hosts.split_once(['/', '?']) {
                    Some((h, p)) => (h, p),
                    None => (hosts, ""),
                };
                if !matches!(path, "" | "0") {
                    return Err(config(format!(
                        "Redis Cluster has only database 0; unexpected {:?} in {}",
                        path,
                        redact(url)
                    )));
                }
                let nodes: Vec<String> = hosts
                    .split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(|h| match userinfo {
                        Some(u) => format!("redis://{u}@{h}"),
                        None => format!("redis://{h}"),
                    })
                    .collect();
                if nodes.is_empty() {
                    return Err(config(format!("no cluster node in {}", redact(url))));
                }
                Ok(Target::Cluster(nodes))
            }
            _ => Err(config(format!(
                "unsupported Redis URL scheme {scheme:?} (expected redis://, redis+unix:// or \
                 redis+cluster://)"
            ))),
        }
    }
}

/// The options both Redis stores take, from their builder or from the URL's query
/// (`?prefix=app:&timeout_ms=500&connections=2`, taken out before the URL goes to redis-rs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct StoreOptions {
    /// The prefix of the keys the store writes.
    pub(crate) prefix: Option<String>,
    /// The bound on every command, connecting included.
    pub(crate) timeout: Option<Duration>,
    /// How many connections (what they are is the store's).
    pub(crate) connections: Option<usize>,
}

/// [`StoreOptions`] in force.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) connections: usize,
}

impl StoreOptions {
    /// These options, then `fallback`'s for what these leave out (the builder's over the
    /// URL's), then the defaults; a zero timeout or connection count is refused.
    pub(crate) fn resolve(self, fallback: StoreOptions, connections: usize) -> Result<Resolved> {
        let timeout = self
            .timeout
            .or(fallback.timeout)
            .unwrap_or(crate::DEFAULT_COMMAND_TIMEOUT);
        if timeout.is_zero() {
            let message = "the command timeout must not be zero";
            return Err(Error::new(ErrorKind::Config, message));
        }
        let connections = self
            .connections
            .or(fallback.connections)
            .unwrap_or(connections);
        if connections == 0 {
            let message = "at least one connection is needed";
            return Err(Error::new(ErrorKind::Config, message));
        }
        Ok(Resolved {
            prefix: self
                .prefix
                .or(fallback.prefix)
                .unwrap_or_else(|| crate::DEFAULT_PREFIX.to_owned()),
            timeout,
            connections,
        })
    }
}

/// Splits the store's own options off `url`; other query parameters stay for redis-rs.
pub(crate) fn take_options(url: &str) -> Result<(String, StoreOptions)> {
    let mut options = StoreOptions::default();
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), options));
    };
    let bad = |what: &str| {
        Error::new(
            ErrorKind::Config,
            format!("bad {what} in Redis URL {}", redact(url)),
        )
    };
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "prefix" => options.prefix = Some(percent_decode(v).ok_or_else(|| bad("prefix"))?),
            "timeout_ms" => {
                let ms: u64 = v.parse().map_err(|_| bad("timeout_ms"))?;
                options.timeout = Some(Duration::from_millis(ms));
            }
            "connections" => {
                options.connections = Some(v.parse().map_err(|_| bad("connections"))?);
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, options))
}

/// Decodes `%XX` escapes (and `+` as a space); `None` for bad escapes or non-UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// The URL with any password replaced by `***`, for messages and Debug output (the core's
/// [`redact_url`](cloakroom_core::redact::redact_url), shared with the `cloakroom` command).
pub(crate) fn redact(url: &str) -> String {
    cloakroom_core::redact::redact_url(url)
}

/// One multiplexed connection: to a server (reconnecting by itself) or to a cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Standalone(Pipe),
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

impl Conn {
    /// Connects, failing with [`ErrorKind::Unavailable`] when the server cannot be reached
    /// within `timeout` (and [`ErrorKind::Config`] for a bad URL).
    pub(crate) async fn open(target: &Target, timeout: Duration, shown: &str) -> Result<Conn> {
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
        let config = |e: RedisError| {
            Error::new(ErrorKind::Config, format!("bad Redis URL {shown}")).with_source(e)
        };
        let connect = async {
            match target {
                Target::Standalone(url) => {
                    let info = url.as_str().into_connection_info().map_err(config)?;
                    Ok(Conn::Standalone(Pipe::new(info, timeout)))
                }
                Target::Cluster(nodes) => {
                    let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                        .connection_timeout(timeout)
                        .response_timeout(timeout)
                        .retries(3)
                        .min_retry_wait(RECONNECT_MIN_DELAY.as_millis() as u64)
                        .max_retry_wait(RECONNECT_MAX_DELAY.as_millis() as u64)
                        .build()
                        .map_err(config)?;
                    client
                        .get_async_connection()
                        .await
                        .map(Conn::Cluster)
                        .map_err(|e| open_error(e, &unavailable))
                }
            }
        };
        let mut conn = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| unavailable(None))??;
        // The handshake (AUTH, SELECT) ran; make sure commands go through too.
        match tokio::time::timeout(timeout, redis::cmd("PING").query_async::<Value>(&mut conn))
            .await
        {
            Ok(Ok(_)) => Ok(conn),
            Ok(Err(e)) => Err(open_error(e, &unavailable)),
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

fn open_error(e: RedisError, unavailable: &impl Fn(Option<RedisError>) -> Error) -> Error {
    let mapped = map_error(e.clone(), "connect");
    match mapped.kind() {
        ErrorKind::Unavailable | ErrorKind::Timeout => unavailable(Some(e)),
        _ => mapped,
    }
}

/// Whether the request certainly or probably never ran, so sending it again is safe: the
/// connection was refused, or it broke (a Redis restart leaves the old connection dead; the
/// manager reconnects on the next command). Every store operation tolerates a repeat.
pub(crate) fn worth_retrying(e: &RedisError) -> bool {
    e.is_connection_refusal() || e.is_connection_dropped()
}

/// A redis error as a store error of the right kind, keeping it as `source()`.
pub(crate) fn map_error(e: RedisError, what: &'static str) -> Error {
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
            _ => ErrorKind::Backend,
        }
    };
    Error::new(kind, format!("redis {what}")).with_source(e)
}

/// Runs `attempt` (once more if the connection was refused or broke), all within `timeout`.
pub(crate) async fn bounded<T, F, Fut>(
    timeout: Duration,
    what: &'static str,
    attempt: F,
) -> Result<T>
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
    use super::*;

    #[test]
    fn parses_urls() {
        assert!(matches!(
            Target::parse("redis://127.0.0.1:6379/2"),
            Ok(Target::Standalone(_))
        ));
        match Target::parse("redis+cluster://u:p@a:1,b:2/").unwrap() {
            Target::Cluster(nodes) => assert_eq!(nodes, ["redis://u:p@a:1", "redis://u:p@b:2"]),
            Target::Standalone(_) => panic!("not a cluster"),
        }
        for bad in [
            "http://x",
            "redis+cluster://",
            "redis+cluster://a:1/3",
            "rediss://h",
            "x",
        ] {
            let err = Target::parse(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
        }
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
