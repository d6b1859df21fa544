//! A lean multiplexed connection to one Redis server, used in place of redis-rs's
//! `ConnectionManager` for standalone servers (redis-rs still encodes the commands and its
//! cluster client serves Redis Cluster).
//!
//! Why our own: under load the session layer sends many small commands at once (one per
//! request), and what they cost is mostly system calls and the wake-ups they cause on the
//! other side of the socket. Here every task appends its encoded command to one shared
//! buffer and the writer sends the whole buffer with one `write` after letting the other
//! ready tasks add theirs (it yields once before taking the buffer); the reader parses all
//! complete replies of one `read` and hands them out in order under one lock. Commands are
//! written straight into the shared buffer (no per-command allocation besides the reply) and
//! replies are parsed by a small RESP2 parser.
//!
//! A connection ("link") lives until an I/O error, end of stream or a protocol error: then
//! every command in flight fails as a dropped connection (which the store may send once more)
//! and the next command connects anew. Only one connection attempt is in flight at a time;
//! commands issued meanwhile wait for it. Timeouts are the caller's: a command given up on
//! stays in the queue and its reply is discarded when it arrives, so replies stay in order.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, Pipeline, RedisError, RedisFuture, Value,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, oneshot};

/// Replies of one request (one per command it holds).
type Reply = Result<Vec<Value>, RedisError>;

/// Deepest nesting of arrays accepted in a reply.
const MAX_DEPTH: usize = 32;
/// Largest bulk string accepted (Redis's own limit).
const MAX_BULK: usize = 512 * 1024 * 1024;
/// Read buffer: grown when a reply is larger, shrunk back when it is empty again.
const READ_CHUNK: usize = 64 * 1024;
/// Write buffers larger than this are not kept for reuse.
const KEEP_WRITE: usize = 1024 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn dropped(kind: io::ErrorKind, what: &str) -> RedisError {
    RedisError::from(io::Error::new(kind, format!("redis connection: {what}")))
}

/// A request waiting for its replies.
struct Waiter {
    tx: oneshot::Sender<Reply>,
    want: usize,
    got: Vec<Value>,
}

/// What the writer sends and whom the reader answers, in the same order.
#[derive(Default)]
struct Queue {
    /// Encoded commands not yet handed to the socket.
    out: Vec<u8>,
    /// Requests whose commands are in `out` or on the wire, oldest first.
    waiting: VecDeque<Waiter>,
    /// Set once the link is dead: no request is queued any more.
    closed: Option<io::ErrorKind>,
}

/// One connection's shared state.
#[derive(Default)]
struct Link {
    queue: Mutex<Queue>,
    /// Wakes the writer: something was added to an empty `out`, or the link is closing.
    wake: Notify,
}

impl Link {
    /// Marks the link dead and fails everything in flight as a dropped connection (or a
    /// refused one if it never connected).
    fn close(&self, kind: io::ErrorKind, why: &str) {
        self.close_with(kind, || dropped(kind, why));
    }

    /// Marks the link dead (`kind` is what later requests on it are told) and fails
    /// everything in flight with `error()`.
    fn close_with(&self, kind: io::ErrorKind, error: impl Fn() -> RedisError) {
        let waiting = {
            let mut q = lock(&self.queue);
            if q.closed.is_none() {
                q.closed = Some(kind);
            }
            q.out = Vec::new();
            std::mem::take(&mut q.waiting)
        };
        for w in waiting {
            let _ = w.tx.send(Err(error()));
        }
        self.wake.notify_one();
    }

    fn is_closed(&self) -> bool {
        lock(&self.queue).closed.is_some()
    }

    /// Hands parsed replies to the waiting requests, in order.
    fn deliver(&self, values: &mut Vec<Value>) -> io::Result<()> {
        let mut done = Vec::new();
        {
            let mut q = lock(&self.queue);
            for value in values.drain(..) {
                let Some(front) = q.waiting.front_mut() else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a reply nobody asked for",
                    ));
                };
                front.got.push(value);
                if front.got.len() == front.want {
                    done.extend(q.waiting.pop_front());
                }
            }
        }
        for w in done {
            // The requester may have given up (timeout): its reply is dropped.
            let _ = w.tx.send(Ok(w.got));
        }
        Ok(())
    }
}

/// Where and how to connect.
struct Shared {
    info: ConnectionInfo,
    connect_timeout: Duration,
    current: Mutex<Option<Arc<Link>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone: stop the connection task.
        if let Some(link) = lock(&self.current).take() {
            link.close(io::ErrorKind::NotConnected, "store dropped");
        }
    }
}

/// A multiplexed, self-reconnecting connection to one Redis server (see the module docs).
#[derive(Clone)]
pub(crate) struct Pipe {
    shared: Arc<Shared>,
}

impl Pipe {
    /// A pipe to the server `info` names; connects on first use.
    pub(crate) fn new(info: ConnectionInfo, connect_timeout: Duration) -> Pipe {
        Pipe {
            shared: Arc::new(Shared {
                info,
                connect_timeout,
                current: Mutex::new(None),
            }),
        }
    }

    /// The live link, or a new one whose connection task is started.
    fn link(&self) -> Arc<Link> {
        let mut current = lock(&self.shared.current);
        if let Some(link) = current.as_ref() {
            if !link.is_closed() {
                return link.clone();
            }
        }
        let link = Arc::new(Link::default());
        *current = Some(link.clone());
        tokio::spawn(drive(
            link.clone(),
            self.shared.info.clone(),
            self.shared.connect_timeout,
        ));
        link
    }

    /// Sends what `encode` writes (holding `want` commands) and waits for their replies.
    async fn request(&self, want: usize, encode: impl FnOnce(&mut Vec<u8>)) -> Reply {
        let link = self.link();
        let (tx, rx) = oneshot::channel();
        let wake = {
            let mut q = lock(&link.queue);
            if let Some(kind) = q.closed {
                return Err(dropped(kind, "closed"));
            }
            let was_empty = q.out.is_empty();
            encode(&mut q.out);
            q.waiting.push_back(Waiter {
                tx,
                want,
                got: Vec::with_capacity(want),
            });
            was_empty
        };
        if wake {
            link.wake.notify_one();
        }
        match rx.await {
            Ok(reply) => reply,
            Err(_) => Err(dropped(io::ErrorKind::ConnectionAborted, "closed")),
        }
    }
}

impl redis::aio::ConnectionLike for Pipe {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut replies = self.request(1, |out| cmd.write_packed_command(out)).await?;
            replies
                .pop()
                .ok_or_else(|| RedisError::from((ErrorKind::Parse, "no reply")))
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let packed = cmd.get_packed_pipeline();
            let mut replies = self
                .request(offset + count, |out| out.extend_from_slice(&packed))
                .await?;
            Ok(replies.split_off(offset.min(replies.len())))
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.info.redis_settings().db()
    }
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Why a connection attempt failed.
enum ConnectError {
    /// Could not reach the server, or the connection broke during the handshake.
    Io(io::Error),
    /// The server or the configuration refused it (bad password, bad database, TLS).
    Refused(RedisError),
}

impl From<io::Error> for ConnectError {
    fn from(e: io::Error) -> Self {
        ConnectError::Io(e)
    }
}

impl From<RedisError> for ConnectError {
    fn from(e: RedisError) -> Self {
        ConnectError::Refused(e)
    }
}

/// Connects (TCP or Unix socket) and runs `AUTH` and `SELECT` as the URL asks.
async fn connect(info: &ConnectionInfo) -> Result<(Reader, Writer), ConnectError> {
    let (mut reader, mut writer): (Reader, Writer) = match info.addr() {
        ConnectionAddr::Tcp(host, port) => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            stream.set_nodelay(true)?;
            let (r, w) = stream.into_split();
            (Box::new(r), Box::new(w))
        }
        #[cfg(unix)]
        ConnectionAddr::Unix(path) => {
            let (r, w) = tokio::net::UnixStream::connect(path).await?.into_split();
            (Box::new(r), Box::new(w))
        }
        _ => {
            return Err(ConnectError::Refused(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "unsupported connection address (TLS is not supported)",
            ))));
        }
    };
    let settings = info.redis_settings();
    let mut handshake = Vec::new();
    if let Some(password) = settings.password() {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = settings.username() {
            auth.arg(user);
        }
        auth.arg(password);
        handshake.push(auth);
    }
    if settings.db() != 0 {
        let mut select = redis::cmd("SELECT");
        select.arg(settings.db());
        handshake.push(select);
    }
    if handshake.is_empty() {
        return Ok((reader, writer));
    }
    let mut out = Vec::new();
    for cmd in &handshake {
        cmd.write_packed_command(&mut out);
    }
    writer.write_all(&out).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut start = 0;
    for _ in &handshake {
        let value = loop {
            if let Some((value, used)) = parse(&buf[start..])? {
                start += used;
                break value;
            }
            if reader.read_buf(&mut buf).await? == 0 {
                return Err(ConnectError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "Redis closed the connection during the handshake",
                )));
            }
        };
        if let Value::ServerError(e) = value {
            let kind = match e.code() {
                "WRONGPASS" | "NOAUTH" | "NOPERM" => ErrorKind::AuthenticationFailed,
                _ => ErrorKind::InvalidClientConfig,
            };
            return Err(ConnectError::Refused(RedisError::from((
                kind,
                "Redis refused the connection's AUTH or SELECT",
                e.to_string(),
            ))));
        }
    }
    Ok((reader, writer))
}

/// The connection task of one link: connect, then write and read until something breaks.
async fn drive(link: Arc<Link>, info: ConnectionInfo, connect_timeout: Duration) {
    let (reader, writer) = match tokio::time::timeout(connect_timeout, connect(&info)).await {
        Ok(Ok(halves)) => halves,
        Ok(Err(ConnectError::Io(e))) => {
            tracing::debug!(error = %e, "cannot connect to Redis");
            link.close(e.kind(), "connect failed");
            return;
        }
        Ok(Err(ConnectError::Refused(e))) => {
            // AUTH/SELECT refused: a configuration error, reported as such to everyone
            // waiting, not an outage.
            tracing::warn!(error = %e, "Redis refused the connection");
            link.close_with(io::ErrorKind::PermissionDenied, || e.clone());
            return;
        }
        Err(_) => {
            link.close(io::ErrorKind::TimedOut, "connect timed out");
            return;
        }
    };
    let outcome = tokio::select! {
        r = write_loop(&link, writer) => r,
        r = read_loop(&link, reader) => r,
    };
    if let Err(e) = outcome {
        tracing::debug!(error = %e, "Redis connection closed");
        link.close(e.kind(), "connection broken");
    }
}

async fn write_loop(link: &Link, mut writer: Writer) -> io::Result<()> {
    let mut batch = Vec::new();
    loop {
        link.wake.notified().await;
        // Let the other ready tasks add their commands, then send them all at once.
        tokio::task::yield_now().await;
        {
            let mut q = lock(&link.queue);
            if q.closed.is_some() {
                return Ok(());
            }
            std::mem::swap(&mut q.out, &mut batch);
        }
        if batch.is_empty() {
            continue;
        }
        writer.write_all(&batch).await?;
        if batch.capacity() > KEEP_WRITE {
            batch = Vec::new();
        } else {
            batch.clear();
        }
    }
}

async fn read_loop(link: &Link, mut reader: Reader) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut start = 0;
    let mut values = Vec::new();
    loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            if start > 0 {
                buf.drain(..start);
                start = 0;
            }
            buf.reserve(READ_CHUNK);
        }
        if reader.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "Redis closed the connection",
            ));
        }
        while let Some((value, used)) = parse(&buf[start..])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
        {
            start += used;
            values.push(value);
        }
        if start == buf.len() {
            start = 0;
            buf.clear();
            if buf.capacity() > 4 * READ_CHUNK {
                buf = Vec::with_capacity(READ_CHUNK);
            }
        }
        if !values.is_empty() {
            link.deliver(&mut values)?;
        }
    }
}

fn protocol(what: &'static str) -> RedisError {
    RedisError::from((ErrorKind::Parse, what))
}

/// Parses one RESP2 reply at the start of `buf`: the value and the bytes it took, or `None`
/// when `buf` does not hold all of it yet.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, RedisError> {
    parse_at(buf, 0, 0)
}

/// The line starting at `from` (without its CRLF) and where the next one starts.
fn line(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, RedisError> {
    let Some(rest) = buf.get(from..) else {
        return Ok(None);
    };
    match rest.iter().position(|&b| b == b'\r') {
        Some(i) => match rest.get(i + 1) {
            Some(b'\n') => Ok(Some((&rest[..i], from + i + 2))),
            Some(_) => Err(protocol("CR without LF in a reply")),
            None => Ok(None),
        },
        None => Ok(None),
    }
}

fn number(text: &[u8]) -> Result<i64, RedisError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol("not a number in a reply"))
}

fn parse_at(buf: &[u8], pos: usize, depth: usize) -> Result<Option<(Value, usize)>, RedisError> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((head, next)) = line(buf, pos + 1)? else {
        return Ok(None);
    };
    let value = match kind {
        b'+' if head == b"OK" => Value::Okay,
        b'+' => Value::SimpleString(
            String::from_utf8(head.to_vec()).map_err(|_| protocol("status is not UTF-8"))?,
        ),
        b'-' => match redis::parse_redis_value(&buf[pos..next]) {
            Ok(v @ Value::ServerError(_)) => v,
            Ok(_) => return Err(protocol("malformed error reply")),
            Err(e) => return Err(e),
        },
        b':' => Value::Int(number(head)?),
        b'_' => Value::Nil,
        b'$' => {
            let len = number(head)?;
            if len < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            let len = usize::try_from(len).map_err(|_| protocol("bad length"))?;
            if len > MAX_BULK {
                return Err(protocol("bulk string too large"));
            }
            let end = next + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(protocol("bulk string without CRLF"));
            }
            return Ok(Some((Value::BulkString(buf[next..end].to_vec()), end + 2)));
        }
        b'*' => {
            let n = number(head)?;
            if n < 0 {
                return Ok(Some((Value::Nil, next)));
            }
            if depth >= MAX_DEPTH {
                return Err(protocol("reply nested too deeply"));
            }
            let n = usize::try_from(n).map_err(|_| protocol("bad length"))?;
            // Each element takes at least 3 bytes: do not trust `n` for the allocation.
            let mut items = Vec::with_capacity(n.min((buf.len() - next) / 3 + 1));
            let mut at = next;
            for _ in 0..n {
                let Some((item, after)) = parse_at(buf, at, depth + 1)? else {
                    return Ok(None);
                };
                items.push(item);
                at = after;
            }
            return Ok(Some((Value::Array(items), at)));
        }
        _ => return Err(protocol("unknown reply type")),
    };
    Ok(Some((value, next)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Value {
        let (value, used) = parse(bytes).unwrap().expect("complete");
        assert_eq!(used, bytes.len(), "took all of {bytes:?}");
        // Every strict prefix is incomplete, never an error or a different value.
        for cut in 0..bytes.len() {
            assert!(
                parse(&bytes[..cut]).unwrap().is_none(),
                "{:?}",
                &bytes[..cut]
            );
        }
        value
    }

    #[test]
    fn parses_resp2_replies() {
        assert_eq!(whole(b"+OK\r\n"), Value::Okay);
        assert_eq!(whole(b"+PONG\r\n"), Value::SimpleString("PONG".into()));
        assert_eq!(whole(b":-42\r\n"), Value::Int(-42));
        assert_eq!(whole(b"$-1\r\n"), Value::Nil);
        assert_eq!(whole(b"*-1\r\n"), Value::Nil);
        assert_eq!(whole(b"$0\r\n\r\n"), Value::BulkString(vec![]));
        assert_eq!(
            whole(b"$4\r\na\r\nb\r\n"),
            Value::BulkString(b"a\r\nb".to_vec())
        );
        assert_eq!(
            whole(b"*3\r\n$1\r\nx\r\n*1\r\n:1\r\n$-1\r\n"),
            Value::Array(vec![
                Value::BulkString(b"x".to_vec()),
                Value::Array(vec![Value::Int(1)]),
                Value::Nil
            ])
        );
        assert_eq!(whole(b"*0\r\n"), Value::Array(vec![]));
    }

    #[test]
    fn server_errors_keep_their_kind() {
        let Value::ServerError(e) = whole(b"-NOSCRIPT No matching script.\r\n") else {
            panic!("not an error value");
        };
        let e = RedisError::from(e);
        assert_eq!(
            e.kind(),
            ErrorKind::Server(redis::ServerErrorKind::NoScript)
        );
        assert!(matches!(
            whole(b"-WRONGPASS invalid username-password pair\r\n"),
            Value::ServerError(_)
        ));
    }

    #[test]
    fn two_replies_back_to_back() {
        let buf = b":1\r\n$2\r\nab\r\n";
        let (a, used) = parse(buf).unwrap().unwrap();
        assert_eq!((a, used), (Value::Int(1), 4));
        let (b, used2) = parse(&buf[used..]).unwrap().unwrap();
        assert_eq!(b, Value::BulkString(b"ab".to_vec()));
        assert_eq!(used + used2, buf.len());
    }

    #[test]
    fn garbage_is_a_protocol_error_not_a_panic() {
        for bad in [
            &b"?x\r\n"[..],
            b":x\r\n",
            b"$2\r\nabcd\r\n",
            b"$-5x\r\n",
            b"+a\rb\r\n",
            b"$99999999999999999999\r\n",
            b"$600000000\r\n",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        assert!(parse(deep.as_bytes()).is_err());
        // A huge announced array with little data is just incomplete, and allocates little.
        assert!(parse(b"*2000000000\r\n:1\r\n").unwrap().is_none());
    }
}
