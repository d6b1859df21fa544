//! The HTTP server loop: hyper's HTTP/1 connection builder with a header-read timeout, a cap
//! on concurrent connections, a request body cap and graceful shutdown.
//!
//! `axum::serve` has none of these limits: an idle or slow client (slowloris) keeps its
//! connection, and its file descriptor, for as long as it likes, so a few hundred of them take
//! the service down. Here:
//!
//! - **Header-read and idle timeout**: hyper's `header_read_timeout`, which starts when a
//!   connection opens and again each time a keep-alive connection goes idle after a response,
//!   and ends when a complete request head has arrived. One timer covers both waits (hyper
//!   has no separate idle timeout yet), so the shorter of [`Limits::header_timeout`] and
//!   [`Limits::idle_timeout`] applies. Served with hyper's HTTP/1 builder directly, not
//!   hyper-util's `auto` builder, whose protocol sniffing runs before that timer starts (a
//!   client that sends nothing would never be timed out).
//! - **Connection cap**: one semaphore permit per connection. When all are taken, a new
//!   connection is accepted and closed at once, with a best-effort `503` and `Retry-After`,
//!   rather than left in the kernel's accept queue: the queue keeps draining, a client learns
//!   at once that the server is busy, and the idle connections holding the permits are
//!   reclaimed by the timeouts, after which new connections get in again.
//! - **Body cap**: tower-http's `RequestBodyLimitLayer`: a `Content-Length` over the cap gets
//!   `413` before any handler runs; a chunked body is cut off at the cap.
//! - **Accept errors** (out of file descriptors, say) are logged and retried after a short
//!   pause instead of spinning or stopping the server.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;
use tower_http::limit::RequestBodyLimitLayer;

/// Largest request head (request line and headers) a client may send; a bigger one gets 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// How long a graceful shutdown waits for requests in flight before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// File descriptors kept free for everything but client connections (the store, the users
/// database, the runtime, logging), when the connection cap is derived from `ulimit -n`.
pub const RESERVED_FDS: u64 = 64;

/// Pause after an accept error (such as EMFILE) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Least time between two "connection cap reached" warnings.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(10);

/// What a full server answers before closing a connection it cannot serve.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    content-type: text/plain; charset=utf-8\r\n\
    retry-after: 1\r\n\
    connection: close\r\n\
    content-length: 12\r\n\r\nserver busy\n";

/// The limits one listener serves under.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time allowed for a complete request head, counted from the connection opening.
    pub header_timeout: Duration,
    /// Time an idle keep-alive connection is kept between requests. hyper counts it with the
    /// same timer as the header timeout, so the shorter of the two bounds both.
    pub idle_timeout: Duration,
    /// Most connections served at once; more are closed at once with a 503.
    pub max_connections: usize,
    /// Largest request body, in bytes: more gets 413.
    pub max_body: usize,
}

impl Limits {
    /// The value given to hyper's `header_read_timeout`: the shorter of the two timeouts.
    pub fn hyper_timeout(&self) -> Duration {
        self.header_timeout.min(self.idle_timeout)
    }
}

/// The soft limit on open file descriptors (`ulimit -n`), where the OS says.
pub fn fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The connection cap: `requested`, or `default` lowered to fit `fd_limit`.
///
/// `reserved` descriptors are kept for the rest of the process (and other listeners).
///
/// # Errors
/// A requested cap of 0, or one that does not fit the file descriptor limit: past it, accept
/// fails with EMFILE and the server could not even answer its health check.
pub fn connection_cap(
    requested: Option<usize>,
    default: usize,
    fd_limit: Option<u64>,
    reserved: u64,
) -> anyhow::Result<usize> {
    let room = fd_limit.map(|limit| usize::try_from(limit.saturating_sub(reserved)));
    let room = match room {
        Some(Ok(room)) => Some(room),
        Some(Err(_)) | None => None,
    };
    match (requested, room) {
        (Some(0), _) => anyhow::bail!("--max-connections must be at least 1"),
        (Some(n), Some(room)) if n > room => anyhow::bail!(
            "--max-connections {n} does not fit the open-file limit (ulimit -n {}): at most \
             {room} leaves {reserved} descriptors for the rest; raise the limit or lower the cap",
            fd_limit.unwrap_or_default()
        ),
        (Some(n), _) => Ok(n),
        (None, Some(0)) => anyhow::bail!(
            "the open-file limit (ulimit -n {}) leaves no room for connections",
            fd_limit.unwrap_or_default()
        ),
        (None, Some(room)) => Ok(default.min(room)),
        (None, None) => Ok(default),
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown` resolves, then stops accepting,
/// lets requests in flight finish (up to [`SHUTDOWN_GRACE`]) and returns.
///
/// Handlers can read the client's address with `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let app = tower::ServiceBuilder::new()
        .layer(RequestBodyLimitLayer::new(limits.max_body))
        .service(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.hyper_timeout())
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut last_full_warning: Option<Instant> = None;
    let mut refused = 0_u64;
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS...: the condition may clear; do not spin.
                    tracing::warn!(error = %e, "accept failed; retrying shortly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(stream);
            refused += 1;
            if last_full_warning.is_none_or(|at| at.elapsed() >= FULL_WARNING_EVERY) {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    refused,
                    "connection cap reached: new connections get 503 until idle ones time out"
                );
                last_full_warning = Some(Instant::now());
                refused = 0;
            }
            continue;
        };
        let service = app
            .clone()
            .map_request(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(remote));
                req
            });
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Timeouts, resets and malformed requests: the client's doing, not ours.
                tracing::debug!(error = %e, %remote, "connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; stopping anyway");
        }
    }
}

/// Answers a connection the server has no room for with a 503, without waiting: the write
/// goes into the socket buffer or not at all, then the connection is closed.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(BUSY_RESPONSE);
    drop(stream); // closes the connection
}

/// Errors about one incoming connection (it went away before we took it), not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Parses a duration such as `10s`, `500ms`, `2m`, `1h` or `30` (seconds).
///
/// # Errors
/// Anything else, or zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit, such as 10s or 500ms"))?;
    let duration = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        other => return Err(format!("{text:?}: unknown unit {other:?} (ms, s, m or h)")),
    };
    if duration.is_zero() {
        return Err(format!("{text:?}: must be more than zero"));
    }
    Ok(duration)
}

/// Parses a size such as `64KiB`, `1MiB`, `1000`, `10kB` (bytes).
///
/// # Errors
/// Anything else, or zero.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: usize = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit, such as 64KiB"))?;
    let unit = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (B, KiB, MiB, kB, MB)"
            ));
        }
    };
    match n.checked_mul(unit) {
        Some(0) => Err(format!("{text:?}: must be more than zero")),
        Some(size) => Ok(size),
        None => Err(format!("{text:?}: too large")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 days").is_err());
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("10kB"), Ok(10_000));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1TiB").is_err());
        assert!(parse_size("99999999999999999999999MiB").is_err());
    }

    #[test]
    fn the_cap_fits_the_descriptor_limit() {
        assert_eq!(connection_cap(None, 512, Some(1024), 64).unwrap(), 512);
        assert_eq!(connection_cap(None, 512, Some(256), 64).unwrap(), 192);
        assert_eq!(connection_cap(None, 512, None, 64).unwrap(), 512);
        assert_eq!(connection_cap(Some(50), 512, Some(256), 64).unwrap(), 50);
        assert!(connection_cap(Some(1000), 512, Some(1024), 64).is_err());
        assert!(connection_cap(Some(0), 512, None, 64).is_err());
        assert!(connection_cap(None, 512, Some(10), 64).is_err());
    }
}
