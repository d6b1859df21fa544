//! The load generator: N keep-alive HTTP/1.1 connections, each a client with its own cookie
//! jar, sending requests back to back for a fixed time or a fixed count, with every
//! latency recorded in an HDR histogram.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{HOST, SET_COOKIE};
use http::{Method, Request};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// When a run stops.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stop {
    /// After this long (requests in flight at the deadline complete and count).
    After(Duration),
    /// After this many requests per client.
    Count(u64),
}

/// What a run measured.
#[derive(Debug)]
pub(crate) struct RunResult {
    /// Requests completed (any status).
    pub(crate) requests: u64,
    /// Requests answered with a status other than 2xx.
    pub(crate) errors: u64,
    /// From the first request sent to the last answer received.
    pub(crate) elapsed: Duration,
    /// Latencies in microseconds.
    pub(crate) latency: Histogram<u64>,
}

impl RunResult {
    /// Requests per second.
    pub(crate) fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Which HTTP client the load generator uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientKind {
    /// hyper's `client::conn::http1` (default).
    Hyper,
    /// A minimal HTTP/1.1 client on a tokio `TcpStream`: one write and usually one read per
    /// request, parsed with `httparse`, no connection task. Measured here: about 15% less user
    /// CPU than hyper, the same in all, because loopback TCP in the kernel (charged to the
    /// sender) is most of a client's cost. Kept to check that the client is not the limit.
    Raw,
}

/// A keep-alive connection.
enum Conn {
    Raw(RawConn),
    Hyper(SendRequest<Empty<Bytes>>),
}

/// One simulated browser: a connection and a cookie jar.
struct Client {
    addr: SocketAddr,
    kind: ClientKind,
    conn: Conn,
    /// `name=value` pairs, sent back as one `Cookie` header.
    jar: Vec<(String, String)>,
    keep_cookies: bool,
    /// Send the jar's (one) ticket as `Authorization: Bearer` instead of a `Cookie` header.
    by_header: bool,
}

fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

async fn tcp(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn connect(addr: SocketAddr, kind: ClientKind) -> anyhow::Result<Conn> {
    let stream = tcp(addr).await?;
    Ok(match kind {
        ClientKind::Raw => Conn::Raw(RawConn {
            stream,
            buf: Vec::with_capacity(4096),
            req: Vec::with_capacity(512),
        }),
        ClientKind::Hyper => {
            let (sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Conn::Hyper(sender)
        }
    })
}

/// The raw client's connection: the stream, unread bytes, and a request buffer.
struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    req: Vec<u8>,
}

/// An answer: status and the `name=value` part of each `Set-Cookie`.
struct Answer {
    status: u16,
    set_cookies: Vec<String>,
}

impl RawConn {
    /// Sends a GET and reads the answer (`Content-Length` bodies only, which every server here
    /// sends); `Ok(None)` when the server had closed the connection.
    async fn get(&mut self, path: &str, sent: Option<&Sent>) -> anyhow::Result<Option<Answer>> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        self.req.clear();
        self.req.extend_from_slice(b"GET ");
        self.req.extend_from_slice(path.as_bytes());
        self.req
            .extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        if let Some(sent) = sent {
            self.req.extend_from_slice(sent.name().as_bytes());
            self.req.extend_from_slice(b": ");
            self.req.extend_from_slice(sent.value().as_bytes());
            self.req.extend_from_slice(b"\r\n");
        }
        self.req.extend_from_slice(b"\r\n");
        if self.stream.write_all(&self.req).await.is_err() {
            return Ok(None);
        }
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut res = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(head_len) = res.parse(&self.buf)? {
                let mut len = None;
                let mut set_cookies = Vec::new();
                for h in res.headers.iter() {
                    if h.name.eq_ignore_ascii_case("content-length") {
                        len = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse::<usize>().ok());
                    } else if h.name.eq_ignore_ascii_case("set-cookie") {
                        if let Some(pair) = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.split(';').next())
                        {
                            set_cookies.push(pair.to_owned());
                        }
                    }
                }
                let status = res.code.unwrap_or(0);
                let len = len.context("an answer without Content-Length")?;
                if self.buf.len() >= head_len + len {
                    self.buf.drain(..head_len + len);
                    return Ok(Some(Answer {
                        status,
                        set_cookies,
                    }));
                }
            }
            let start = self.buf.len();
            self.buf.resize(start + 16 * 1024, 0);
            // A read error ends the connection like an orderly close.
            let n: usize = self
                .stream
                .read(&mut self.buf[start..])
                .await
                .unwrap_or_default();
            self.buf.truncate(start + n);
            if n == 0 {
                if start == 0 {
                    return Ok(None);
                }
                bail!("the server closed the connection in the middle of an answer");
            }
        }
    }
}

impl Client {
    async fn new(
        addr: SocketAddr,
        kind: ClientKind,
        keep_cookies: bool,
        by_header: bool,
    ) -> anyhow::Result<Client> {
        Ok(Client {
            addr,
            kind,
            conn: connect(addr, kind).await?,
            jar: Vec::new(),
            keep_cookies,
            by_header,
        })
    }

    /// Sends one GET and reads the whole answer; returns whether it was a 2xx.
    async fn get(&mut self, path: &str) -> anyhow::Result<bool> {
        let sent = match (self.jar.first(), self.by_header) {
            (None, _) => None,
            (Some((_, ticket)), true) => Some(Sent::Bearer(format!("Bearer {ticket}"))),
            (Some(_), false) => Some(Sent::Cookie(
                self.jar
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        };
        let answer = match self.send(path, sent.as_ref()).await? {
            Some(a) => a,
            None => {
                // The server closed the keep-alive connection: open another, once.
                self.conn = connect(self.addr, self.kind).await?;
                self.send(path, sent.as_ref())
                    .await?
                    .context("the server closed a fresh connection")?
            }
        };
        if self.keep_cookies {
            for pair in answer.set_cookies {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                let (name, value) = (name.trim(), value.trim());
                self.jar.retain(|(k, _)| k != name);
                if !value.is_empty() {
                    self.jar.push((name.to_owned(), value.to_owned()));
                }
            }
        }
        Ok((200..300).contains(&answer.status))
    }

    async fn send(&mut self, path: &str, sent: Option<&Sent>) -> anyhow::Result<Option<Answer>> {
        match &mut self.conn {
            Conn::Raw(c) => c.get(path, sent).await,
            Conn::Hyper(sender) => {
                if sender.ready().await.is_err() {
                    return Ok(None);
                }
                let mut req = Request::builder()
                    .method(Method::GET)
                    .uri(path)
                    .header(HOST, "127.0.0.1");
                if let Some(sent) = sent {
                    req = req.header(sent.name(), sent.value());
                }
                let res = sender.send_request(req.body(Empty::new())?).await?;
                let status = res.status().as_u16();
                let set_cookies = res
                    .headers()
                    .get_all(SET_COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
                    .collect();
                res.into_body().collect().await?;
                Ok(Some(Answer {
                    status,
                    set_cookies,
                }))
            }
        }
    }
}

/// What a client sends to name its session: its cookies, or its ticket as a bearer token.
enum Sent {
    /// The `Cookie` header's value.
    Cookie(String),
    /// The `Authorization` header's value (`Bearer <ticket>`).
    Bearer(String),
}

impl Sent {
    fn name(&self) -> &'static str {
        match self {
            Sent::Cookie(_) => "Cookie",
            Sent::Bearer(_) => "Authorization",
        }
    }

    fn value(&self) -> &str {
        match self {
            Sent::Cookie(v) | Sent::Bearer(v) => v,
        }
    }
}

/// N clients of one server.
pub(crate) struct Clients {
    clients: Vec<Client>,
}

impl Clients {
    /// Opens `n` connections to `addr`; clients keep the cookies they are sent when
    /// `keep_cookies`, and send the ticket as a bearer token when `by_header`.
    pub(crate) async fn connect(
        addr: SocketAddr,
        kind: ClientKind,
        n: usize,
        keep_cookies: bool,
        by_header: bool,
    ) -> anyhow::Result<Clients> {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            clients.push(Client::new(addr, kind, keep_cookies, by_header).await?);
        }
        Ok(Clients { clients })
    }

    /// Each client requests `paths` in order, once (all clients at once); every answer must
    /// be a 2xx.
    pub(crate) async fn warm_up(&mut self, paths: &'static [&'static str]) -> anyhow::Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let clients = std::mem::take(&mut self.clients);
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut c| {
                tokio::spawn(async move {
                    for path in paths {
                        if !c.get(path).await? {
                            bail!("warm-up request {path} failed");
                        }
                    }
                    anyhow::Ok(c)
                })
            })
            .collect();
        for task in tasks {
            self.clients.push(task.await??);
        }
        Ok(())
    }

    /// Every client sends GET `path` back to back until `stop`.
    pub(crate) async fn run(
        &mut self,
        path: &'static str,
        stop: Stop,
    ) -> anyhow::Result<RunResult> {
        let clients = std::mem::take(&mut self.clients);
        let start = Instant::now();
        let deadline = match stop {
            Stop::After(d) => Some(start + d),
            Stop::Count(_) => None,
        };
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut c| {
                tokio::spawn(async move {
                    let mut hist = latency_histogram();
                    let (mut requests, mut errors) = (0u64, 0u64);
                    let mut last = Instant::now();
                    loop {
                        match (stop, deadline) {
                            (Stop::Count(n), _) if requests >= n => break,
                            (_, Some(d)) if last >= d => break,
                            _ => {}
                        }
                        let sent = Instant::now();
                        let ok = c.get(path).await?;
                        last = Instant::now();
                        let us = (last - sent).as_micros().max(1) as u64;
                        hist.saturating_record(us);
                        requests += 1;
                        errors += u64::from(!ok);
                    }
                    anyhow::Ok((c, hist, requests, errors, last))
                })
            })
            .collect();
        let mut latency = latency_histogram();
        let (mut requests, mut errors) = (0, 0);
        let mut end = start;
        for task in tasks {
            let (c, hist, r, e, last) = task.await??;
            self.clients.push(c);
            latency.add(&hist)?;
            requests += r;
            errors += e;
            end = end.max(last);
        }
        Ok(RunResult {
            requests,
            errors,
            elapsed: end - start,
            latency,
        })
    }
}

/// A one-off `GET` with `Connection: close` (for `/__bench/stats`), blocking.
pub(crate) fn get_text(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    get_text_within(addr, path, Duration::from_secs(10))
}

/// [`get_text`], waiting at most `timeout` for the answer.
pub(crate) fn get_text_within(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no end of headers in the answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}
