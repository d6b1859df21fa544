//! The cross-origin check, as Go 1.25's `CrossOriginProtection` and Tornado 6.6's
//! `cross_origin_protection` do it: Fetch Metadata first, then `Origin` against `Host`.

use std::fmt;

use super::Reason;
use crate::config_error::{ConfigError, ConfigErrorKind};

/// An exact origin, `scheme://host[:port]`, lower-cased; compared as a whole string (never by
/// host alone: gorilla/csrf CVE-2025-47909).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Origin(String);

impl Origin {
    /// Parses and validates an origin: `http` or `https`, a host, an optional port, nothing
    /// else (no path, query, fragment, user info, trailing slash or wildcard).
    ///
    /// # Errors
    /// A [`ConfigError`] of kind [`Origin`](ConfigErrorKind::Origin) naming the input.
    pub(crate) fn parse(text: &str) -> Result<Self, ConfigError> {
        let err = || ConfigError::new(ConfigErrorKind::Origin, "trusted origin", text);
        let lower = text.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"))
            .ok_or_else(err)?;
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            // An IPv6 literal: [hex:...]
            let close = inner.find(']').ok_or_else(err)?;
            let addr = &inner[..close];
            if addr.is_empty()
                || !addr
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return Err(err());
            }
            let after = &inner[close + 1..];
            match after.strip_prefix(':') {
                Some(p) => (&rest[..close + 2], Some(p)),
                None if after.is_empty() => (rest, None),
                None => return Err(err()),
            }
        } else {
            let (h, p) = match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            };
            if h.is_empty()
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                || h.starts_with('.')
                || h.ends_with('.')
                || h.contains("..")
            {
                return Err(err());
            }
            (h, p)
        };
        let _ = host;
        if let Some(p) = port {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            if p.parse::<u32>().map_or(true, |n| n == 0 || n > 65_535) {
                return Err(err());
            }
        }
        Ok(Origin(lower))
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The headers the cross-origin check reads.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RequestOrigin<'a> {
    /// The request method.
    pub(crate) method: &'a str,
    /// `Sec-Fetch-Site`, if sent.
    pub(crate) sec_fetch_site: Option<&'a str>,
    /// `Origin`, if sent.
    pub(crate) origin: Option<&'a str>,
    /// `Host` (or the HTTP/2 `:authority`).
    pub(crate) host: Option<&'a str>,
}

/// Whether `method` is exempt from CSRF checks (GET, HEAD, OPTIONS; these must not change
/// state).
pub(crate) fn is_safe_method(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS")
}

/// The cross-origin decision for a request on a non-exempt route.
///
/// - `Sec-Fetch-Site: same-origin` or `none` pass; any other value (`same-site`,
///   `cross-site`, anything unknown) is rejected unless `Origin` is trusted;
/// - without `Sec-Fetch-Site` (older browsers, non-browser clients): no `Origin` passes,
///   `Origin` whose `host[:port]` equals `Host` passes, a trusted `Origin` passes, anything
///   else (including `Origin: null`) is rejected.
///
/// # Errors
/// [`Reason::CrossOrigin`].
pub(crate) fn check_cross_origin(
    req: &RequestOrigin<'_>,
    trusted: &[Origin],
) -> Result<(), Reason> {
    if is_safe_method(req.method) {
        return Ok(());
    }
    let is_trusted = || {
        req.origin
            .is_some_and(|o| trusted.iter().any(|t| t.0.eq_ignore_ascii_case(o.trim())))
    };
    match req.sec_fetch_site.map(str::trim) {
        Some(site)
            if site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none") =>
        {
            return Ok(());
        }
        Some(_) => {
            return if is_trusted() {
                Ok(())
            } else {
                Err(Reason::CrossOrigin)
            };
        }
        None => {}
    }
    let Some(origin) = req.origin.map(str::trim) else {
        return Ok(());
    };
    if let (Some(host), Some(origin_host)) = (req.host, origin_host(origin)) {
        if origin_host.eq_ignore_ascii_case(host.trim()) {
            return Ok(());
        }
    }
    if is_trusted() {
        Ok(())
    } else {
        Err(Reason::CrossOrigin)
    }
}

/// `host[:port]` of an `Origin` header value; `None` for `null` or junk.
fn origin_host(origin: &str) -> Option<&str> {
    let (scheme, rest) = origin.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    Some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(site: Option<&str>, origin: Option<&str>, trusted: &[&str]) -> Result<(), Reason> {
        let trusted: Vec<Origin> = trusted.iter().map(|t| Origin::parse(t).unwrap()).collect();
        check_cross_origin(
            &RequestOrigin {
                method: "POST",
                sec_fetch_site: site,
                origin,
                host: Some("example.com"),
            },
            &trusted,
        )
    }

    const X: Result<(), Reason> = Err(Reason::CrossOrigin);

    /// Every Sec-Fetch-Site value against present/absent/trusted origins.
    #[test]
    fn decision_table_with_fetch_metadata() {
        let trusted = ["https://partner.example"];
        let table: &[(&str, Option<&str>, Result<(), Reason>)] = &[
            ("same-origin", None, Ok(())),
            ("same-origin", Some("https://evil.example"), Ok(())),
            ("none", None, Ok(())),
            ("same-site", Some("https://sub.example.com"), X),
            ("same-site", None, X),
            ("cross-site", Some("https://evil.example"), X),
            ("cross-site", None, X),
            ("cross-site", Some("https://partner.example"), Ok(())),
            ("cross-site", Some("HTTPS://PARTNER.EXAMPLE"), Ok(())),
            ("cross-site", Some("http://partner.example"), X),
            (
                "cross-site",
                Some("https://partner.example.attacker.com"),
                X,
            ),
            ("cross-site", Some("https://partner.example:8443"), X),
            ("cross-site", Some("null"), X),
            ("same-site", Some("https://partner.example"), Ok(())),
            ("bogus-value", None, X),
            ("", None, X),
        ];
        for (site, origin, want) in table {
            assert_eq!(
                check(Some(site), *origin, &trusted),
                *want,
                "{site} {origin:?}"
            );
        }
    }

    #[test]
    fn decision_table_without_fetch_metadata() {
        let trusted = ["https://partner.example"];
        let table: &[(Option<&str>, Result<(), Reason>)] = &[
            (None, Ok(())),
            (Some("https://example.com"), Ok(())),
            (Some("http://example.com"), Ok(())), // Host has no scheme: fail open, as Go does
            (Some("https://EXAMPLE.com"), Ok(())),
            (Some("https://example.com:8443"), X),
            (Some("https://example.com.attacker.com"), X),
            (Some("https://attacker.com/example.com"), X),
            (Some("https://user@example.com"), X),
            (Some("null"), X),
            (Some(""), X),
            (Some("example.com"), X),
            (Some("ftp://example.com"), X),
            (Some("https://partner.example"), Ok(())),
            (Some("http://partner.example"), X),
        ];
        for (origin, want) in table {
            assert_eq!(check(None, *origin, &trusted), *want, "{origin:?}");
        }
    }

    #[test]
    fn safe_methods_always_pass() {
        for method in ["GET", "HEAD", "OPTIONS"] {
            let req = RequestOrigin {
                method,
                sec_fetch_site: Some("cross-site"),
                origin: Some("null"),
                host: Some("example.com"),
            };
            assert_eq!(check_cross_origin(&req, &[]), Ok(()));
        }
        for method in ["POST", "PUT", "PATCH", "DELETE", "PROPFIND"] {
            let req = RequestOrigin {
                method,
                sec_fetch_site: Some("cross-site"),
                origin: None,
                host: None,
            };
            assert_eq!(check_cross_origin(&req, &[]), X, "{method}");
        }
    }

    #[test]
    fn trusted_origins_are_validated_exactly() {
        for good in [
            "https://example.com",
            "http://localhost:8000",
            "https://a-b.example.co.uk:443",
            "http://127.0.0.1:9",
            "http://[::1]:8080",
        ] {
            assert!(Origin::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "example.com",
            "https://example.com/",
            "https://example.com/path",
            "https://*.example.com",
            "https://example.com?x",
            "https://user@example.com",
            "ftp://example.com",
            "https://",
            "https://example.com:",
            "https://example.com:99999",
            "https://example.com:0",
            "https://.example.com",
            "null",
            "https://exa mple.com",
            "http://[::1",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Origin::parse("HTTPS://Example.COM").unwrap().0,
            "https://example.com"
        );
    }
}
