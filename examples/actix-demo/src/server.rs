//! The HTTP server: actix-server's accept loop and actix-http's HTTP/1 dispatcher, with the
//! axum demo's limits (see `cloakroom_demo::server`): actix-web's `HttpServer` cannot give
//! them, so the demo builds what `HttpServer` builds, plus a wrapper around each connection.
//!
//! What actix-http 3 times by itself (`h1/dispatcher.rs`): a head timer for the **first**
//! request only (`client_request_timeout`, cleared when that head is parsed and never armed
//! again), a keep-alive timer (`KeepAlive::Timeout`) that runs only while no byte has
//! arrived and is cleared by the first byte of the next head, and a shutdown timer for the
//! final flush. Nothing times a later head once its first byte is in, nor a request body.
//! So, here:
//!
//! - **Head timeout on every request**: each connection is a [`Conn`], whose reads fail
//!   when a request head is not complete [`Limits::hyper_timeout`] after the connection
//!   opened or the previous response was produced (hyper's `header_read_timeout`, the same
//!   clock). The request middleware ([`guard`]) tells the connection when a head has
//!   arrived and when its response is done. actix's own first-head timer is off (the same
//!   timer for every head; like hyper, the connection is closed without a `408`).
//! - **Body (whole-request) timeout**: a request whose response is not ready
//!   [`Limits::body_timeout`] after its head gets `408`; the handler, and the body it was
//!   reading, are dropped, and actix closes a connection whose body was not read to the end.
//! - **Declared bodies over the cap**: a `Content-Length` over [`Limits::max_body`] gets
//!   `413` at once, before any body is read, and with `Expect: 100-continue` instead of the
//!   `100 Continue` (actix answers that before any application code runs, so the check is
//!   also the dispatcher's expect handler).
//! - **Head size**: a head over [`MAX_HEADER_BYTES`] gets `431` (actix's own limit is
//!   about 128 KiB).
//! - **Connection cap**: one semaphore permit per connection, over all workers; a
//!   connection past [`Limits::max_connections`] gets the axum demo's `503` and is closed at
//!   once instead of waiting in the listen backlog (actix-server's per-worker cap stops
//!   accepting instead).
//! - **Stop**: on Ctrl-C or SIGTERM idle keep-alive connections (no byte of a next head)
//!   are closed at once, and requests in flight finish (up to 30 s), as hyper's graceful
//!   shutdown does; actix-server alone waits for idle connections to time out.

use std::cell::{Cell, RefCell};
use std::future::{Future, ready};
use std::io;
use std::net::TcpListener;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use actix_http::body::{BodySize, BoxBody, MessageBody};
use actix_http::header::{self, HeaderValue};
use actix_http::{
    ConnectionType, Extensions, HttpService, KeepAlive, Request, Response, StatusCode,
};
use actix_server::Server;
use actix_service::{
    IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt as _, apply_fn_factory,
    fn_service, map_config,
};
use actix_web::HttpMessage as _;
use actix_web::dev::{AppConfig, ServiceResponse};
use actix_web::rt::net::TcpStream;
use actix_web::web::Bytes;
use cloakroom_demo_app::limits::{self, Limits, MAX_HEADER_BYTES};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// How long a graceful stop waits for requests in flight (as the axum demo).
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Connections a worker may hold beyond the cap: those being refused, for the moment it
/// takes to write the 503 (actix-server stops accepting when every worker is full).
const REFUSING_ROOM: usize = 64;

/// Least time between two "connection cap reached" warnings.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(10);

/// What `413` says, as tower-http's body limit in the axum demo.
const TOO_LARGE_BODY: &str = "length limit exceeded";

/// One listener's server: `app` (built once per worker) behind the limits, `workers`
/// threads, stopping gracefully when `stop` is cancelled.
///
/// # Errors
/// The listener cannot be made non-blocking.
pub(crate) fn serve<F, A, X, B>(
    listener: TcpListener,
    app: F,
    limits: &Limits,
    workers: usize,
    stop: &CancellationToken,
) -> io::Result<Server>
where
    F: Fn() -> A + Send + Clone + 'static,
    A: IntoServiceFactory<X, Request>,
    X: ServiceFactory<
            Request,
            Config = AppConfig,
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    let addr = listener.local_addr()?;
    let shared = Shared {
        limits: limits.clone(),
        permits: Arc::new(Semaphore::new(limits.max_connections)),
        refusals: Arc::new(Mutex::new(Refusals::default())),
        stop: stop.clone(),
    };
    let factory = move || {
        let shared = shared.clone();
        let max_body = shared.limits.max_body;
        let body_timeout = shared.limits.body_timeout;
        let app = map_config(app().into_factory(), move |()| AppConfig::default());
        let app = apply_fn_factory(app, move |req: Request, app: &X::Service| {
            guard(req, app, max_body, body_timeout)
        });
        let http = HttpService::build()
            .keep_alive(KeepAlive::Timeout(shared.limits.idle_timeout))
            // Off: `Conn` times every head, the first included.
            .client_request_timeout(Duration::ZERO)
            .client_disconnect_timeout(Duration::from_secs(1))
            .local_addr(addr)
            .expect(fn_service(move |req: Request| {
                ready(match refusal(&req, max_body) {
                    Some(refused) => Err(refused),
                    None => Ok(req),
                })
            }))
            .on_connect_ext(|conn: &Conn, data: &mut Extensions| {
                data.insert(conn.watch.clone());
            })
            .h1(app)
            .map_err(|e| tracing::debug!(error = %e, "connection ended"));
        fn_service(move |stream: TcpStream| ready(shared.admit(stream))).and_then(http)
    };
    Ok(Server::build()
        .workers(workers)
        .max_concurrent_connections(limits.max_connections + REFUSING_ROOM)
        .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
        .shutdown_signal(stop.clone().cancelled_owned())
        .listen(format!("cloakroom-actix-demo-{addr}"), listener, factory)?
        .run())
}

/// What every worker's connections share.
#[derive(Clone, Debug)]
struct Shared {
    limits: Limits,
    permits: Arc<Semaphore>,
    refusals: Arc<Mutex<Refusals>>,
    stop: CancellationToken,
}

/// Connections refused since the last warning, and when that was.
#[derive(Debug, Default)]
struct Refusals {
    last_warning: Option<std::time::Instant>,
    since: u64,
}

impl Shared {
    /// A new connection and its peer, with a permit; or, past the cap, a 503 and `Err`.
    fn admit(&self, stream: TcpStream) -> Result<(Conn, Option<std::net::SocketAddr>), ()> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            // A 503 without waiting, then the connection is closed.
            if let Ok(stream) = stream.into_std() {
                limits::refuse(&stream);
            }
            self.refused();
            return Err(());
        };
        let peer = stream.peer_addr().ok();
        let head_timeout = self.limits.hyper_timeout();
        let watch = Rc::new(Watch {
            head_timeout,
            head_deadline: Cell::new(Some(Instant::now() + head_timeout)),
            head_started: Cell::new(false),
            reader: RefCell::new(None),
        });
        let conn = Conn {
            timer: Box::pin(sleep_until(Instant::now() + head_timeout)),
            stop: Box::pin(self.stop.clone().cancelled_owned()),
            io: stream,
            watch,
            _permit: permit,
        };
        Ok((conn, peer))
    }

    /// Counts a refused connection; warns at most every [`FULL_WARNING_EVERY`].
    fn refused(&self) {
        let Ok(mut refusals) = self.refusals.lock() else {
            return;
        };
        refusals.since += 1;
        if refusals
            .last_warning
            .is_none_or(|at| at.elapsed() >= FULL_WARNING_EVERY)
        {
            tracing::warn!(
                max_connections = self.limits.max_connections,
                refused = refusals.since,
                "connection cap reached: new connections get 503 until idle ones time out"
            );
            refusals.last_warning = Some(std::time::Instant::now());
            refusals.since = 0;
        }
    }
}

/// Where a connection is between requests, shared by the connection ([`Conn`]) and its
/// requests ([`guard`]); one worker thread owns both.
#[derive(Debug)]
pub(crate) struct Watch {
    head_timeout: Duration,
    /// When the head being awaited must be complete; `None` while a request is served.
    head_deadline: Cell<Option<Instant>>,
    /// Whether a byte of the awaited head has arrived (an idle connection has none).
    head_started: Cell<bool>,
    /// The task that last read the connection: woken when a response is done, so that its
    /// next read watches the head timer and the stop.
    reader: RefCell<Option<Waker>>,
}

impl Watch {
    /// A request head has arrived: no head timer until its response is done.
    fn request_started(&self) {
        self.head_deadline.set(None);
    }

    /// The response is done: the next head is timed from now.
    fn request_finished(&self) {
        self.head_deadline
            .set(Some(Instant::now() + self.head_timeout));
        self.head_started.set(false);
        if let Some(reader) = self.reader.borrow().as_ref() {
            reader.wake_by_ref();
        }
    }

    fn remember(&self, waker: &Waker) {
        let mut reader = self.reader.borrow_mut();
        if !reader.as_ref().is_some_and(|known| known.will_wake(waker)) {
            *reader = Some(waker.clone());
        }
    }
}

/// An accepted connection: the socket, its permit, and the head timer.
pub(crate) struct Conn {
    io: TcpStream,
    watch: Rc<Watch>,
    timer: Pin<Box<Sleep>>,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("io", &self.io)
            .field("watch", &self.watch)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.watch.remember(cx.waker());
        let awaiting_head = this.watch.head_deadline.get();
        if let Some(deadline) = awaiting_head {
            if !this.watch.head_started.get() && this.stop.as_mut().poll(cx).is_ready() {
                // Stopping, and no request under way: the end of the stream closes it.
                return Poll::Ready(Ok(()));
            }
            if this.timer.deadline() != deadline {
                this.timer.as_mut().reset(deadline);
            }
            if this.timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no complete request head within the header timeout",
                )));
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if awaiting_head.is_some() && buf.filled().len() > before {
            this.watch.head_started.set(true);
        }
        read
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Every request: refused from its head (413, 431), or handed to the app under the body
/// timeout (408); the connection is told when the head arrived and when the response is
/// done.
fn guard<S, B>(
    req: Request,
    app: &S,
    max_body: usize,
    body_timeout: Duration,
) -> impl Future<Output = Result<Response<Finished>, actix_web::Error>> + use<S, B>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    let watch = req.conn_data::<Rc<Watch>>().cloned();
    if let Some(watch) = &watch {
        watch.request_started();
    }
    let call = match refusal(&req, max_body) {
        Some(refused) => Err(refused),
        None => Ok(app.call(req)),
    };
    async move {
        let res = match call {
            Err(refused) => refused,
            Ok(call) => match actix_web::rt::time::timeout(body_timeout, call).await {
                Ok(Ok(res)) => Response::from(res).map_into_boxed_body(),
                Ok(Err(e)) => Response::from(e),
                // The handler and the body it was reading are dropped; actix closes a
                // connection whose body was not read to the end.
                Err(_) => request_timeout(),
            },
        };
        Ok(res.map_body(|_, body| Finished { body, watch }))
    }
}

/// `408`, empty, as tower-http's timeout answers.
fn request_timeout() -> Response<BoxBody> {
    Response::new(StatusCode::REQUEST_TIMEOUT)
}

/// The answer to a request refused from its head alone: 413 for a declared body over
/// `max_body`, 431 for a head over [`MAX_HEADER_BYTES`]. Both close the connection.
fn refusal(req: &Request, max_body: usize) -> Option<Response<BoxBody>> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut res = if declared.is_some_and(|length| length > max_body as u64) {
        let mut res =
            Response::with_body(StatusCode::PAYLOAD_TOO_LARGE, BoxBody::new(TOO_LARGE_BODY));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        res
    } else if head_size(req) > MAX_HEADER_BYTES {
        Response::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    } else {
        return None;
    };
    res.head_mut().set_connection_type(ConnectionType::Close);
    Some(res)
}

/// The size of the request head as sent: request line, header lines, blank line.
fn head_size(req: &Request) -> usize {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    // "METHOD TARGET HTTP/1.1\r\n"
    let line = req.method().as_str().len() + 1 + target + 1 + 8 + 2;
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    line + headers + 2
}

/// A response body that tells the connection when it is done (sent or dropped).
pub(crate) struct Finished {
    body: BoxBody,
    watch: Option<Rc<Watch>>,
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finished").finish_non_exhaustive()
    }
}

impl MessageBody for Finished {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        if let Some(watch) = &self.watch {
            watch.request_finished();
        }
    }
}
