//! Connection limits and the parsers of their flags, shared by both demo servers (hyper's
//! HTTP/1 builder under axum, actix-web's `HttpServer`).

use std::time::Duration;

/// Largest request head (request line and headers) a client may send; a bigger one gets 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// What a full server answers before closing a connection it cannot serve (past
/// [`Limits::max_connections`]).
pub const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
    content-type: text/plain; charset=utf-8\r\n\
    retry-after: 1\r\n\
    connection: close\r\n\
    content-length: 12\r\n\r\nserver busy\n";

/// Answers a connection the server has no room for with [`BUSY_RESPONSE`] and closes it,
/// without waiting: the socket is non-blocking, so the write goes into its buffer or not at
/// all. (A runtime's `try_write` on a just-accepted socket can refuse before the reactor has
/// seen it writable, and the 503 would be lost.) Request bytes already there are read
/// first, so that the close does not reset the connection and discard the 503 at the client.
pub fn refuse(stream: &std::net::TcpStream) {
    use std::io::{Read as _, Write as _};
    let mut scratch = [0_u8; 4096];
    let _ = stream.set_nonblocking(true);
    let mut socket = stream;
    let _ = socket.read(&mut scratch);
    let _ = socket.write(BUSY_RESPONSE);
}

/// File descriptors kept free for everything but client connections (the store, the users
/// database, the runtime, logging), when the connection cap is derived from `ulimit -n`.
pub const RESERVED_FDS: u64 = 64;

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
    /// Time from a complete request head to the response, which covers reading the body
    /// (one byte a second is never "idle", so a per-read timeout would not do): past it the
    /// request gets 408 and its connection is closed.
    pub body_timeout: Duration,
}

impl Limits {
    /// The time a request head has, counted from the connection opening or the previous
    /// response: the shorter of the two timeouts. hyper's `header_read_timeout` is given it;
    /// the actix demo enforces it on each connection itself.
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
