//! What every response goes through in both demos, framework-free: the security headers and
//! the `Host` check against DNS rebinding.

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

fn is_loopback(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses a request whose `Host` is not one the demo answers for, with 421 Misdirected
/// Request, before any session work (DNS rebinding: a browser on the attacker's page sends
/// the attacker's name). `/healthz` is exempt, as load balancers probe it by address. A request
/// without `Host` passes: browsers always send one (scripts cannot remove it), so it is no
/// rebinding, and only non-browser clients (HTTP/1.0 tools, in-process tests) omit it.
///
/// `None`: serve the request; `Some`: answer this instead.
pub fn check_host(hosts: &AllowedHosts, path: &str, host: Option<&[u8]>) -> Option<Reply> {
    if path == "/healthz" {
        return None;
    }
    let allowed = host.map(|h| {
        std::str::from_utf8(h)
            .ok()
            .filter(|h| hosts.allows(h))
            .is_some()
    });
    (allowed == Some(false)).then(|| {
        text(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected request: this server does not answer for that Host \
             (see --origin and --allowed-host)\n",
        )
    })
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
}
