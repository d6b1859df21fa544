//! Slow-client and connection-flood scenarios for the demo binaries, written once and run
//! against both: the axum demo's `tests/floods.rs` runs each against `cloakroom-demo`, the
//! actix demo's `tests/floods.rs` against `cloakroom-actix-demo`. Each starts the binary with
//! small limits (`--max-connections`, `--header-timeout`, `--body-timeout`, `--max-body`) and
//! talks raw HTTP/1.1 over TCP on loopback, so a test takes a few seconds.
//!
//! Every scenario panics with what it saw when the server falls short.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::process::ServerProcess;

/// Starts `bin` with sessions in memory, accounts in `dir` and `extra` flags.
pub async fn start(bin: &Path, dir: &Path, extra: &[&str]) -> ServerProcess {
    let users = format!("sqlite://{}", dir.join("users.db").display());
    let mut args = vec!["--store", "memory://", "--users", &users];
    args.extend_from_slice(extra);
    ServerProcess::start(bin, &args, dir).await
}

/// Reads until the peer closes the connection (or resets it). The time that took and what
/// arrived, or `None` if it was still open after `limit`.
pub async fn closed_within<R: AsyncRead + Unpin>(
    stream: &mut R,
    limit: Duration,
) -> Option<(Duration, String)> {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0_u8; 4096];
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                return Some((started.elapsed(), String::from_utf8_lossy(&seen).into()));
            }
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// Reads one response head (through the blank line), waiting at most `limit`. `None` when
/// nothing complete came in time or the connection closed first.
pub async fn response_head<R: AsyncRead + Unpin>(
    stream: &mut R,
    limit: Duration,
) -> Option<String> {
    let started = Instant::now();
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let left = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Reads one whole response with a `Content-Length` (head and body): the head.
async fn response<R: AsyncRead + Unpin>(stream: &mut R, limit: Duration) -> String {
    let head = response_head(stream, limit)
        .await
        .expect("no complete response");
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or_else(|| panic!("no Content-Length: {head}"));
    let mut body = vec![0_u8; length];
    tokio::time::timeout(limit, stream.read_exact(&mut body))
        .await
        .expect("the body in time")
        .expect("the body");
    head
}

/// The status code of a response head.
fn status(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a response: {head:?}"))
}

/// Polls `GET /healthz`, each time on a new connection, until it answers 200: the time that
/// took, or the last answer if it did not within `limit`.
pub async fn healthz_within(server: &ServerProcess, limit: Duration) -> Result<Duration, String> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(1))
        .build()
        .expect("a reqwest client");
    let started = Instant::now();
    let mut last = String::from("nothing");
    while started.elapsed() < limit {
        match client
            .get(format!("{}/healthz", server.base()))
            .send()
            .await
        {
            Ok(reply) if reply.status() == reqwest::StatusCode::OK => return Ok(started.elapsed()),
            Ok(reply) => last = format!("status {}", reply.status()),
            Err(e) => last = format!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

/// Sends `bytes` one at a time, `every` apart, until they are all sent or the server has
/// closed the connection.
fn trickle(
    mut write: tokio::net::tcp::OwnedWriteHalf,
    bytes: Vec<u8>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for byte in bytes {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// A head for `POST /login` declaring a form body of `length` bytes, with `extra` header
/// lines (each ending in CRLF).
fn post_head(port: u16, length: usize, extra: &str) -> String {
    format!(
        "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {length}\r\n\
         {extra}\r\n"
    )
}

/// Slow bodies: more `POST /login` connections than `--max-connections 8` each send a
/// complete head declaring 5,100 bytes, then one body byte every 250 ms. With
/// `--body-timeout 1s` each is answered 408 (or closed) within about a second, its slot is
/// free again and `/healthz` answers 200. Without a body timeout the slow bodies keep every
/// slot for 20 minutes, and `/healthz` gets 503 (axum) or waits in the backlog (actix).
pub async fn slow_bodies_time_out_and_free_their_connections(bin: &Path) {
    let dir = tempfile_dir();
    let server = start(
        bin,
        dir.path(),
        &[
            "--max-connections",
            "8",
            "--header-timeout",
            "1s",
            "--body-timeout",
            "1s",
        ],
    )
    .await;
    let port = server.port();
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..12 {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (read, mut write) = stream.into_split();
        // The head at once (the header timeout does not apply), then the body byte by byte.
        if write
            .write_all(post_head(port, 5100, "").as_bytes())
            .await
            .is_err()
        {
            continue;
        }
        let dribble = trickle(write, vec![b'n'; 5100], Duration::from_millis(250));
        slow.push(tokio::spawn(async move {
            let mut read = read;
            let closed = closed_within(&mut read, Duration::from_secs(5)).await;
            dribble.abort();
            closed
        }));
    }
    let healthy = healthz_within(&server, Duration::from_secs(5)).await;
    let mut outcomes = Vec::new();
    for watch in slow {
        outcomes.push(watch.await.unwrap());
    }
    let after = started.elapsed();
    let healthy = healthy.unwrap_or_else(|last| {
        panic!(
            "/healthz did not answer 200 within 5 s of 12 slow bodies against \
             --max-connections 8 --body-timeout 1s (last: {last})"
        )
    });
    assert!(
        healthy < Duration::from_secs(4),
        "/healthz after {healthy:?}"
    );
    for (i, closed) in outcomes.iter().enumerate() {
        let (_, seen) = closed.as_ref().unwrap_or_else(|| {
            panic!("slow body {i} still open {after:?} after it started (--body-timeout 1s)")
        });
        // Closed at once with a 503 past the cap, or answered 408 (or closed) at the timeout.
        assert!(
            seen.is_empty() || seen.starts_with("HTTP/1.1 408") || seen.starts_with("HTTP/1.1 503"),
            "slow body {i}: {seen}"
        );
    }
    assert!(
        outcomes
            .iter()
            .flatten()
            .all(|(at, _)| *at < Duration::from_secs(4)),
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .flatten()
            .any(|(_, seen)| seen.starts_with("HTTP/1.1 408")),
        "no slow body was answered 408: {outcomes:?}"
    );
}

/// Slowloris on every request of a connection: with `--header-timeout 1s`, a first head
/// sent one byte every 100 ms is cut, and so is the second head on a keep-alive connection
/// whose first request was answered, each within a few seconds (the timeout counts from the
/// connection opening or the previous response).
pub async fn slow_heads_are_cut_on_every_request_of_a_connection(bin: &Path) {
    let dir = tempfile_dir();
    let server = start(bin, dir.path(), &["--header-timeout", "1s"]).await;
    let port = server.port();
    let slow_head = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: {}\r\n\r\n",
        "s".repeat(200)
    )
    .into_bytes();

    // The first request's head, slowly.
    let (mut first, write) = TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap()
        .into_split();
    let first_dribble = trickle(write, slow_head.clone(), Duration::from_millis(100));

    // A keep-alive connection: one normal request, then the second head slowly.
    let (mut second, mut write) = TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap()
        .into_split();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    write.write_all(request.as_bytes()).await.unwrap();
    let head = response(&mut second, Duration::from_secs(2)).await;
    assert_eq!(status(&head), 200, "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let second_dribble = trickle(write, slow_head, Duration::from_millis(100));

    let (first, second) = tokio::join!(
        closed_within(&mut first, Duration::from_secs(6)),
        closed_within(&mut second, Duration::from_secs(6)),
    );
    first_dribble.abort();
    second_dribble.abort();
    let (first, _) = first.expect("a first head trickled for 6 s was never cut");
    let (second, _) =
        second.expect("a second head on a keep-alive connection trickled for 6 s was never cut");
    assert!(
        first < Duration::from_secs(3),
        "first head cut after {first:?}"
    );
    assert!(
        second < Duration::from_secs(3),
        "second head cut after {second:?}"
    );
}

/// A declared `Content-Length` over `--max-body` is answered 413 at once, before any of the
/// body is sent, and the connection is closed; with `Expect: 100-continue` the answer is 413,
/// never `100 Continue`. A body within the limit still gets its `100 Continue`.
pub async fn oversized_declared_bodies_get_413_at_once(bin: &Path) {
    let dir = tempfile_dir();
    let server = start(bin, dir.path(), &["--max-body", "16KiB"]).await;
    let port = server.port();
    for expect in ["", "Expect: 100-continue\r\n"] {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let head = post_head(port, 1 << 20, expect);
        stream.write_all(head.as_bytes()).await.unwrap();
        let reply = response_head(&mut stream, Duration::from_secs(1))
            .await
            .unwrap_or_else(|| panic!("no answer within 1 s to a 1 MiB Content-Length {expect}"));
        assert_eq!(status(&reply), 413, "{expect}{reply}");
        let closed = closed_within(&mut stream, Duration::from_secs(2)).await;
        assert!(closed.is_some(), "{expect}: the connection stayed open");
    }
    // Within the limit, the client is told to go on, then the body is read (and refused for
    // its missing CSRF token).
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = post_head(port, 6, "Expect: 100-continue\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let reply = response_head(&mut stream, Duration::from_secs(2))
        .await
        .expect("an answer to Expect: 100-continue");
    assert_eq!(status(&reply), 100, "{reply}");
    stream.write_all(b"name=a").await.unwrap();
    let reply = response(&mut stream, Duration::from_secs(2)).await;
    assert_eq!(status(&reply), 403, "{reply}");
}

/// Past `--max-connections`, a new connection is answered 503 (`Retry-After`) and closed at
/// once, rather than left waiting in the listen backlog; once the idle connections go, the
/// next one is served.
pub async fn connections_past_the_cap_get_503_at_once(bin: &Path) {
    let dir = tempfile_dir();
    let server = start(
        bin,
        dir.path(),
        &["--max-connections", "4", "--header-timeout", "10s"],
    )
    .await;
    let port = server.port();
    // The start-up probe's connection is closed, and its slot free, by then.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, stream) in idle.iter_mut().enumerate() {
        let closed = closed_within(stream, Duration::from_millis(100)).await;
        assert!(
            closed.is_none(),
            "idle connection {i} within the cap: {closed:?}"
        );
    }
    // A client that sends nothing yet: the 503 is not lost to a reset for unread bytes.
    let mut extra = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let closed = closed_within(&mut extra, Duration::from_secs(1)).await;
    let (_, seen) = closed.expect("a connection past the cap waited more than 1 s");
    assert!(seen.starts_with("HTTP/1.1 503"), "{seen:?}");
    assert!(seen.to_ascii_lowercase().contains("retry-after"), "{seen}");
    drop(idle);
    let healthy = healthz_within(&server, Duration::from_secs(3)).await;
    healthy.unwrap_or_else(|last| panic!("/healthz after the idle connections left: {last}"));
}

/// A request head over 32 KiB gets 431; one of 20 KiB is served.
pub async fn oversized_heads_get_431(bin: &Path) {
    let dir = tempfile_dir();
    let server = start(bin, dir.path(), &[]).await;
    let port = server.port();
    for (size, expected) in [(20_000, 200), (100_000, 431)] {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let request = format!(
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Big: {}\r\n\r\n",
            "b".repeat(size)
        );
        // The server may answer and close before it has read everything.
        let _ = stream.write_all(request.as_bytes()).await;
        let reply = response_head(&mut stream, Duration::from_secs(2))
            .await
            .unwrap_or_else(|| panic!("no answer to a {size}-byte header"));
        assert_eq!(status(&reply), expected, "{size}-byte header: {reply}");
    }
}

/// A stop (SIGTERM) does not wait for an idle keep-alive connection: the demo exits at once
/// (0), not when `--header-timeout 10s` would have closed the connection.
pub async fn a_stop_does_not_wait_for_idle_keep_alive_connections(bin: &Path) {
    let dir = tempfile_dir();
    let mut server = start(bin, dir.path(), &["--header-timeout", "10s"]).await;
    let port = server.port();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = response(&mut stream, Duration::from_secs(2)).await;
    assert_eq!(status(&head), 200, "{head}");
    let started = Instant::now();
    let exited = tokio::task::spawn_blocking(move || {
        let exited = server.terminate(Duration::from_secs(5));
        (exited, server)
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert_eq!(exited.0, Some(true), "no clean exit within 5 s of SIGTERM");
    assert!(took < Duration::from_secs(2), "the stop took {took:?}");
    drop(stream);
}

fn tempfile_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}
