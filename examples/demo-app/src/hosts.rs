//! What every response goes through in both demos, framework-free: the security headers and
//! the `Host` check (RFC 9112's rules, and against DNS rebinding).

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};

use crate::reply::{Reply, text};

/// The security headers every response gets (unless a page set its own): no sniffing, no
/// framing, same-origin referrers, and a CSP that allows only the demo's own scripts.
pub const SECURITY_HEADERS: [(header::HeaderName, &str); 4] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "same-origin"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
];

/// Adds the [`SECURITY_HEADERS`] a response does not have yet.
pub fn set_security_headers(headers: &mut HeaderMap) {
    for (name, value) in SECURITY_HEADERS {
        headers
            .entry(name)
            .or_insert_with(|| HeaderValue::from_static(value));
    }
}

/// The `Host` header values the demo answers for: the origin's host and port, the other
/// names of loopback when the origin is on loopback, and the `--allowed-host` entries.
///
/// A page on an attacker's domain that resolves to the demo's address (DNS rebinding) is
/// sent with the attacker's name in `Host`, which is not on this list.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    /// (host, port); `None`: any port.
    hosts: Vec<(String, Option<u16>)>,
    /// The origin's default port (80 or 443), for a `Host` without a port.
    default_port: u16,
}

impl AllowedHosts {
    /// The hosts of `origin` (`scheme://host[:port]`) and of each `extra` entry (`host` for
    /// any port, `host:port` for that port only).
    ///
    /// # Errors
    /// An origin or entry that is not a host name or address with an optional port.
    pub fn new(origin: &str, extra: &[String]) -> anyhow::Result<Self> {
        let (default_port, authority) = if let Some(rest) = origin.strip_prefix("https://") {
            (443, rest)
        } else if let Some(rest) = origin.strip_prefix("http://") {
            (80, rest)
        } else {
            anyhow::bail!("origin {origin:?} must start with http:// or https://");
        };
        let authority = authority.strip_suffix('/').unwrap_or(authority);
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| anyhow::anyhow!("origin {origin:?}: bad host or port"))?;
        let port = port.unwrap_or(default_port);
        let mut hosts = Vec::new();
        if is_loopback(&host) {
            for name in ["localhost", "127.0.0.1", "[::1]"] {
                hosts.push((name.to_owned(), Some(port)));
            }
        }
        hosts.push((host, Some(port)));
        for entry in extra {
            let (host, port) = split_host_port(entry.trim()).ok_or_else(|| {
                anyhow::anyhow!("--allowed-host {entry:?}: expected host or host:port")
            })?;
            hosts.push((host, port));
        }
        Ok(AllowedHosts {
            hosts,
            default_port,
        })
    }

    /// Whether a `Host` header value is one the demo answers for.
    pub fn allows(&self, host_header: &str) -> bool {
        let Some((host, port)) = split_host_port(host_header) else {
            return false;
        };
        let port = port.unwrap_or(self.default_port);
        self.hosts
            .iter()
            .any(|(h, p)| *h == host && p.is_none_or(|p| p == port))
    }
}

/// `host[:port]` as (lower-case host without a trailing dot, port); IPv6 in brackets.
fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if text.starts_with('[') {
        let end = text.find(']')?;
        let (host, rest) = text.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let port = match port {
        Some(port) => Some(port.parse::<u16>().ok()?),
        None => None,
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let valid =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '[' | ']');
    if host.is_empty() || !host.chars().all(valid) {
        return None;
    }
    Some((host, port))
}

/// Whether `origin` (`scheme://host[:port]`) names a loopback host: `localhost`, 127.0.0.0/8
/// or `[::1]`.
pub(crate) fn origin_is_loopback(origin: &str) -> bool {
    let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    split_host_port(authority).is_some_and(|(host, _)| is_loopback(&host))
}

fn is_loopback(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// What the `Host` check reads of a request head besides its `Host` lines, whichever
/// framework parsed it.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The path of the request target.
    pub path: &'a str,
    /// Whether the request is HTTP/1.1 (an HTTP/1.0 one may omit `Host`).
    pub http_1_1: bool,
    /// The authority of an absolute-form request target (`GET http://host/path HTTP/1.1`),
    /// `None` for the usual origin form (`GET /path`).
    pub authority: Option<&'a str>,
}

/// Checks the host a request is for, before any session work.
///
/// 400 Bad Request (RFC 9112 §3.2) for an HTTP/1.1 request without `Host`, more than one
/// `Host` line, a `Host` that is no `host[:port]`, or an absolute-form target whose authority
/// is not the `Host` value (a client must send them identical; §3.2.2 has the server go by the
/// authority, which is then what the allow-list checks).
///
/// 421 Misdirected Request for a host the demo does not answer for (DNS rebinding: a browser
/// on the attacker's page sends the attacker's name). `/healthz` is exempt from this one, as
/// load balancers probe it by address. An HTTP/1.0 request without `Host` passes: browsers
/// always send one (scripts cannot remove it), so it is no rebinding.
///
/// `None`: serve the request; `Some`: answer this instead.
pub fn check_host<'a>(
    hosts: &AllowedHosts,
    head: RequestHead<'_>,
    host_lines: impl IntoIterator<Item = &'a [u8]>,
) -> Option<Reply> {
    let bad = |why: &str| {
        Some(text(
            StatusCode::BAD_REQUEST,
            format!("bad request: {why}\n"),
        ))
    };
    let mut lines = host_lines.into_iter();
    let host = lines.next();
    if lines.next().is_some() {
        return bad("more than one Host header");
    }
    let host = match host.map(std::str::from_utf8) {
        Some(Ok(host)) if split_host_port(host).is_some() => Some(host),
        Some(_) => return bad("the Host header is not host[:port]"),
        None if head.http_1_1 => return bad("an HTTP/1.1 request needs a Host header"),
        None => None,
    };
    let host = match (head.authority, host) {
        (Some(authority), Some(host)) if !authority.eq_ignore_ascii_case(host) => {
            return bad("the request target's authority is not the Host header");
        }
        (Some(authority), _) => Some(authority),
        (None, host) => host,
    };
    if head.path == "/healthz" || host.is_none_or(|host| hosts.allows(host)) {
        return None;
    }
    Some(text(
        StatusCode::MISDIRECTED_REQUEST,
        "misdirected request: this server does not answer for that Host \
         (see --origin and --allowed-host)\n",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_matched_by_name_and_port() {
        let hosts = AllowedHosts::new("http://127.0.0.1:8000", &["Demo.Example".into()]).unwrap();
        for ok in [
            "127.0.0.1:8000",
            "localhost:8000",
            "[::1]:8000",
            "demo.example",
            "DEMO.example.:9",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for bad in [
            "127.0.0.1:8001",
            "127.0.0.1",
            "evil.example:8000",
            "localhost",
            "",
            ":8000",
            "a b",
            "demo.example:x",
        ] {
            assert!(!hosts.allows(bad), "{bad}");
        }
        let https = AllowedHosts::new("https://demo.example/", &["10.0.0.5:8443".into()]).unwrap();
        assert!(https.allows("demo.example") && https.allows("demo.example:443"));
        assert!(!https.allows("demo.example:80") && !https.allows("localhost:443"));
        assert!(https.allows("10.0.0.5:8443") && !https.allows("10.0.0.5"));
        assert!(AllowedHosts::new("http://h", &["bad host".into()]).is_err());
        assert!(AllowedHosts::new("ftp://h", &[]).is_err());
    }

    #[test]
    fn host_lines_follow_rfc_9112() {
        let hosts = AllowedHosts::new("http://127.0.0.1:8000", &[]).unwrap();
        let status = |path, http_1_1, authority, lines: &[&str]| {
            let head = RequestHead {
                path,
                http_1_1,
                authority,
            };
            let lines = lines.iter().map(|l| l.as_bytes());
            check_host(&hosts, head, lines).map_or(200, |r| r.status().as_u16())
        };
        let ok = "127.0.0.1:8000";
        let evil = "evil.example";
        assert_eq!(status("/", true, None, &[ok]), 200);
        // No Host in HTTP/1.1, two Host lines, a Host that is no host[:port]: 400 on any path.
        assert_eq!(status("/", true, None, &[]), 400);
        assert_eq!(status("/healthz", true, None, &[]), 400);
        assert_eq!(status("/", true, None, &[ok, ok]), 400);
        assert_eq!(status("/healthz", true, None, &[ok, evil]), 400);
        assert_eq!(status("/", true, None, &["bad host"]), 400);
        assert_eq!(status("/", true, None, &["127.0.0.1:x"]), 400);
        // HTTP/1.0 may omit Host.
        assert_eq!(status("/", false, None, &[]), 200);
        // Another host: 421, but /healthz answers any.
        assert_eq!(status("/", true, None, &[evil]), 421);
        assert_eq!(status("/healthz", true, None, &[evil]), 200);
        // Absolute form: the authority must be the Host, and must be allowed.
        assert_eq!(status("/", true, Some(evil), &[ok]), 400);
        assert_eq!(status("/", true, Some(ok), &[evil]), 400);
        assert_eq!(status("/", true, Some("user@127.0.0.1:8000"), &[ok]), 400);
        assert_eq!(status("/", true, Some(evil), &[evil]), 421);
        assert_eq!(
            status("/", true, Some("LOCALHOST:8000"), &["localhost:8000"]),
            200
        );
        assert_eq!(status("/", false, Some(evil), &[]), 421);
        assert_eq!(status("/", false, Some(ok), &[]), 200);
        assert_eq!(status("/", true, Some(ok), &[]), 400);
    }
}
