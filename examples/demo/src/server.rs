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
//!   `413` before any handler runs (and before hyper sends `100 Continue`, which it does only
//!   once the body is read); a chunked body is cut off at the cap.
//! - **Body (whole-request) timeout**: tower-http's `TimeoutLayer`: a request whose response
//!   is not ready [`Limits::body_timeout`] after its head arrived gets `408`, and since its
//!   body was not read to the end hyper closes the connection, freeing its slot. This is what
//!   bounds a slow body: `RequestBodyTimeoutLayer` times each read on its own, so one byte a
//!   second would pass it forever.
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
use tower_http::timeout::TimeoutLayer;

pub use cloakroom_demo_app::limits::{
    Limits, MAX_HEADER_BYTES, RESERVED_FDS, connection_cap, fd_limit, parse_duration, parse_size,
};

/// How long a graceful shutdown waits for requests in flight before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Pause after an accept error (such as EMFILE) before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Least time between two "connection cap reached" warnings.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(10);

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
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            limits.body_timeout,
        ))
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

/// Answers a connection the server has no room for with a 503, without waiting (see
/// [`limits::refuse`](cloakroom_demo_app::limits::refuse)), then closes it.
fn refuse(stream: TcpStream) {
    if let Ok(stream) = stream.into_std() {
        cloakroom_demo_app::limits::refuse(&stream);
    }
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
