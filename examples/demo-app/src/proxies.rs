//! The client's address behind reverse proxies (`--trusted-proxy`).
//!
//! ```
//! use cloakroom_demo_app::proxies::TrustedProxies;
//!
//! let proxies = TrustedProxies::new(&["10.0.0.0/8".into()]).unwrap();
//! let xff: &[u8] = b"198.51.100.1, 203.0.113.7, 10.0.0.2";
//! // From the proxy: the rightmost address that is no trusted proxy.
//! let client = proxies.client("10.0.0.1".parse().unwrap(), [], [xff]);
//! assert_eq!(client.to_string(), "203.0.113.7");
//! // From anyone else the header is ignored.
//! let client = proxies.client("192.0.2.9".parse().unwrap(), [], [xff]);
//! assert_eq!(client.to_string(), "192.0.2.9");
//! ```
//!
//! Behind a proxy every connection comes from the proxy, so a budget per address (the login
//! throttle) would be one budget for everyone. Each proxy appends the address it got the
//! request from to `X-Forwarded-For` (or `Forwarded: for=`, RFC 7239), so the entries right of
//! the first untrusted one were written by trusted proxies and that one is the client's
//! address as our outermost proxy saw it; whatever is left of it the client wrote itself.
//!
//! `X-Forwarded-For` is read when present, else `Forwarded`: a proxy appends to one and passes
//! the other through as the client sent it, and nearly all (nginx, HAProxy's `forwardfor`,
//! Caddy, Traefik, Envoy, cloud load balancers) keep `X-Forwarded-For`. A proxy that writes
//! only `Forwarded` must drop the clients' `X-Forwarded-For`.
//!
//! The parsing is strict and never fails the request: a header that does not parse, or whose
//! chosen entry names no address (`unknown`, an obfuscated `_name`, an element without
//! `for`), leaves the peer's address, which is then shared by every such request.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The `Forwarded` header (RFC 7239).
pub const FORWARDED: &str = "forwarded";
/// The `X-Forwarded-For` header.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The networks of the reverse proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// One hop of a forwarding header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Addr(IpAddr),
    /// `unknown`, an obfuscated name, an entry that is no address.
    Unknown,
}

impl TrustedProxies {
    /// The networks of `entries`: CIDR (`10.0.0.0/8`, `fd00::/8`) or single addresses.
    ///
    /// # Errors
    /// An entry that is neither.
    pub fn new(entries: &[String]) -> anyhow::Result<Self> {
        let mut nets = Vec::new();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let net = match entry.parse::<IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => IpNet::from(entry.parse::<IpAddr>().map_err(|_| {
                    anyhow::anyhow!(
                        "--trusted-proxy {entry:?}: expected a CIDR network or an address"
                    )
                })?),
            };
            nets.push(net);
        }
        Ok(TrustedProxies { nets })
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is a trusted proxy's address.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request from `peer` with these `Forwarded` and
    /// `X-Forwarded-For` field values (each header line one item): `peer` unless it is a
    /// trusted proxy; then the rightmost forwarded address that is no trusted proxy (the
    /// leftmost when all are), or `peer` when the header does not parse or names no address
    /// there.
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        forwarded: impl IntoIterator<Item = &'a [u8]>,
        x_forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let hops = match joined(x_forwarded_for) {
            Ok(Some(xff)) => Some(parse_x_forwarded_for(&xff)),
            Ok(None) => joined(forwarded)
                .ok()
                .flatten()
                .and_then(|f| parse_forwarded(&f)),
            Err(Malformed) => None,
        };
        hops.and_then(|hops| self.choose(&hops)).unwrap_or(peer)
    }

    /// The rightmost hop that is no trusted proxy, the leftmost if all are; `None` when that
    /// hop names no address or there are none.
    fn choose(&self, hops: &[Hop]) -> Option<IpAddr> {
        let mut leftmost = None;
        for hop in hops.iter().rev() {
            match *hop {
                Hop::Addr(ip) if self.trusts(ip) => leftmost = Some(ip),
                Hop::Addr(ip) => return Some(ip),
                Hop::Unknown => return None,
            }
        }
        leftmost
    }
}

/// A header with bytes outside visible ASCII, space and tab.
struct Malformed;

/// The lines of one header as one list (lines join with commas); `None` when there are none.
fn joined<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Result<Option<String>, Malformed> {
    let mut text: Option<String> = None;
    for line in lines {
        if !line
            .iter()
            .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return Err(Malformed);
        }
        let line = std::str::from_utf8(line).map_err(|_| Malformed)?;
        match &mut text {
            Some(text) => {
                text.push(',');
                text.push_str(line);
            }
            None => text = Some(line.to_owned()),
        }
    }
    Ok(text)
}

/// `X-Forwarded-For`: comma-separated addresses, IPv6 bare or in brackets, a port allowed;
/// empty elements skipped; an entry that is no address is an unknown hop.
fn parse_x_forwarded_for(text: &str) -> Vec<Hop> {
    text.split(',')
        .map(|entry| entry.trim_matches([' ', '\t']))
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.parse::<IpAddr>() {
            Ok(ip) => Hop::Addr(ip.to_canonical()),
            Err(_) => node(entry).unwrap_or(Hop::Unknown),
        })
        .collect()
}

/// `Forwarded` (RFC 7239 §4): elements separated by commas, each `name=value` pairs separated
/// by semicolons, values tokens or quoted strings; an element's `for` is its hop (unknown
/// without one). `None` on any syntax error, a repeated `for` or a `for` that is no node.
fn parse_forwarded(text: &str) -> Option<Vec<Hop>> {
    let mut hops = Vec::new();
    let mut rest = text;
    loop {
        let mut hop = None;
        let mut pairs = 0;
        loop {
            rest = rest.trim_start_matches([' ', '\t']);
            if !rest.is_empty() && !rest.starts_with([',', ';']) {
                let name_len = rest.find(|c| !is_tchar(c)).unwrap_or(rest.len());
                let (name, after) = rest.split_at(name_len);
                let after = after.strip_prefix('=').filter(|_| !name.is_empty())?;
                let (value, after) = value(after)?;
                if name.eq_ignore_ascii_case("for") {
                    if hop.is_some() {
                        return None;
                    }
                    hop = Some(node(&value)?);
                }
                pairs += 1;
                rest = after.trim_start_matches([' ', '\t']);
            }
            match rest.as_bytes().first() {
                Some(b';') => rest = &rest[1..],
                Some(b',') | None => break,
                Some(_) => return None,
            }
        }
        if pairs > 0 {
            hops.push(hop.unwrap_or(Hop::Unknown));
        }
        match rest.strip_prefix(',') {
            Some(after) => rest = after,
            None => return Some(hops),
        }
    }
}

/// A token or a quoted string (unescaped), and what follows it.
fn value(text: &str) -> Option<(String, &str)> {
    let Some(quoted) = text.strip_prefix('"') else {
        let len = text.find(|c| !is_tchar(c)).unwrap_or(text.len());
        return (len > 0).then(|| (text[..len].to_owned(), &text[len..]));
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &quoted[i + 1..])),
            '\\' => value.push(chars.next()?.1),
            c => value.push(c),
        }
    }
    None // no closing quote
}

/// RFC 9110 `tchar`.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// RFC 7239 `node`: `nodename [ ":" node-port ]`, the name an IPv4 address, a bracketed IPv6
/// address, `unknown` or an obfuscated `_name`.
fn node(text: &str) -> Option<Hop> {
    let (name, port) = if let Some(v6) = text.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (Hop::Addr(IpAddr::V6(addr.parse::<Ipv6Addr>().ok()?)), port)
    } else {
        let (name, port) = match text.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (text, None),
        };
        let hop = if name.eq_ignore_ascii_case("unknown") || is_obfuscated(name) {
            Hop::Unknown
        } else {
            Hop::Addr(IpAddr::V4(name.parse::<Ipv4Addr>().ok()?))
        };
        (hop, port)
    };
    let port_ok = port.is_none_or(|p| {
        is_obfuscated(p) || (!p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
    });
    port_ok.then_some(match name {
        Hop::Addr(ip) => Hop::Addr(ip.to_canonical()),
        Hop::Unknown => Hop::Unknown,
    })
}

/// RFC 7239 `obfnode` / `obfport`: `_` and at least one of ALPHA, DIGIT, `.`, `_`, `-`.
fn is_obfuscated(text: &str) -> bool {
    text.strip_prefix('_').is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(&nets.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    /// The client of a request from `peer` with these `X-Forwarded-For` lines.
    fn via_xff(p: &TrustedProxies, peer: &str, lines: &[&str]) -> IpAddr {
        p.client(ip(peer), [], lines.iter().map(|l| l.as_bytes()))
    }

    /// The client of a request from `peer` with these `Forwarded` lines.
    fn via_forwarded(p: &TrustedProxies, peer: &str, lines: &[&str]) -> IpAddr {
        p.client(ip(peer), lines.iter().map(|l| l.as_bytes()), [])
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let none = TrustedProxies::default();
        assert_eq!(
            via_xff(&none, "192.0.2.9", &["203.0.113.7"]),
            ip("192.0.2.9")
        );
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(via_xff(&p, "192.0.2.9", &["203.0.113.7"]), ip("192.0.2.9"));
        let f = via_forwarded(&p, "192.0.2.9", &["for=203.0.113.7"]);
        assert_eq!(f, ip("192.0.2.9"));
        // From the proxy without a header: the proxy itself.
        assert_eq!(via_xff(&p, "10.0.0.1", &[]), ip("10.0.0.1"));
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let p = proxies(&["10.0.0.0/8", "192.0.2.10"]);
        // The client spoofed "1.1.1.1"; the proxies appended 203.0.113.7 and 10.1.1.1.
        let lines = ["1.1.1.1, 203.0.113.7", "10.1.1.1"];
        assert_eq!(via_xff(&p, "10.0.0.1", &lines), ip("203.0.113.7"));
        assert_eq!(via_xff(&p, "192.0.2.10", &lines), ip("203.0.113.7"));
        // Every hop a proxy: the first one.
        assert_eq!(
            via_xff(&p, "10.0.0.1", &["10.2.2.2, 10.3.3.3"]),
            ip("10.2.2.2")
        );
        // Empty elements and whitespace are nothing; ports and brackets are allowed.
        let odd = [",  203.0.113.7:4711 ,,\t10.0.0.3 ,"];
        assert_eq!(via_xff(&p, "10.0.0.1", &odd), ip("203.0.113.7"));
        // X-Forwarded-For wins over Forwarded.
        let both = p.client(
            ip("10.0.0.1"),
            [&b"for=198.51.100.1"[..]],
            [&b"203.0.113.7"[..]],
        );
        assert_eq!(both, ip("203.0.113.7"));
    }

    #[test]
    fn ipv6_peers_proxies_and_clients() {
        let p = proxies(&["fd00::/8", "127.0.0.0/8"]);
        let v6 = ["2001:db8::1, [2001:db8::2]:443, fd00::5"];
        assert_eq!(via_xff(&p, "fd00::1", &v6), ip("2001:db8::2"));
        assert_eq!(via_xff(&p, "fd00::1", &["2001:db8::1"]), ip("2001:db8::1"));
        // An IPv4-mapped peer is its IPv4 address; a mapped client too.
        assert_eq!(
            via_xff(&p, "::ffff:127.0.0.1", &["::ffff:203.0.113.7"]),
            ip("203.0.113.7")
        );
        assert_eq!(
            via_xff(&p, "2001:db8::9", &["203.0.113.7"]),
            ip("2001:db8::9")
        );
    }

    #[test]
    fn forwarded_with_quotes_ports_and_several_elements() {
        let p = proxies(&["10.0.0.0/8"]);
        let cases = [
            ("for=203.0.113.7", "203.0.113.7"),
            ("For=\"203.0.113.7:4711\";proto=https", "203.0.113.7"),
            ("for=\"[2001:db8:cafe::17]:4711\"", "2001:db8:cafe::17"),
            (
                "for=\"[2001:db8::1]\";by=10.0.0.1, for=10.0.0.2",
                "2001:db8::1",
            ),
            (
                "for=192.0.2.1, for=203.0.113.7;host=\"a.example\"",
                "203.0.113.7",
            ),
            ("proto=http;for=\"\\203.0.113.7\"", "203.0.113.7"),
            ("for=\"_hidden\", for=\"203.0.113.7:_port\"", "203.0.113.7"),
        ];
        for (header, client) in cases {
            assert_eq!(
                via_forwarded(&p, "10.0.0.1", &[header]),
                ip(client),
                "{header}"
            );
        }
        // Two header lines are one list.
        let lines = ["for=192.0.2.1", "for=203.0.113.7"];
        assert_eq!(via_forwarded(&p, "10.0.0.1", &lines), ip("203.0.113.7"));
    }

    #[test]
    fn malformed_or_unknown_falls_back_to_the_peer() {
        let p = proxies(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        for header in [
            "for=[2001:db8::1]",
            "for=203.0.113.7:4711",
            "for=\"203.0.113.7",
            "for=203.0.113.7;for=192.0.2.1",
            "for=2001:db8::1",
            "for=\"[2001:db8::1\"",
            "for=\"999.0.0.1\"",
            "for=\"203.0.113.7:123456\"",
            "for=\"203.0.113.7:\"",
            "for=",
            "=203.0.113.7",
            "for 203.0.113.7",
            "for=a.example",
            "for=unknown",
            "for=_hidden",
            "proto=https",
            "for=203.0.113.7 x",
            ",,",
        ] {
            assert_eq!(via_forwarded(&p, "10.0.0.1", &[header]), peer, "{header}");
        }
        for header in [
            "unknown",
            "203.0.113.7, garbage",
            "a.example",
            " , ",
            "[::1",
        ] {
            assert_eq!(via_xff(&p, "10.0.0.1", &[header]), peer, "{header}");
        }
        // An entry the client wrote left of the chosen one does not matter.
        assert_eq!(
            via_xff(&p, "10.0.0.1", &["garbage, 203.0.113.7"]),
            ip("203.0.113.7")
        );
        // Bytes outside visible ASCII anywhere: the peer.
        let bad = p.client(peer, [], [&b"203.0.113.7, \xff"[..], &b"203.0.113.8"[..]]);
        assert_eq!(bad, peer);
        let bad = p.client(peer, [], [&b"203.0.113.7\n"[..]]);
        assert_eq!(bad, peer);
    }

    #[test]
    fn entries_are_networks_or_addresses() {
        let p = proxies(&["10.1.2.3/8", " 192.0.2.1 ", "", "::1"]);
        assert!(p.trusts(ip("10.200.0.1")) && p.trusts(ip("192.0.2.1")) && p.trusts(ip("::1")));
        assert!(!p.trusts(ip("192.0.2.2")) && !p.trusts(ip("11.0.0.1")));
        for bad in ["10.0.0.0/33", "localhost", "10.0.0"] {
            let err = TrustedProxies::new(&[bad.into()]).unwrap_err().to_string();
            assert!(err.contains("--trusted-proxy"), "{err}");
        }
    }
}
