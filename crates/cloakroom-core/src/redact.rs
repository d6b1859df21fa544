//! Store URLs made safe to print: [`redact_url`] masks anything in a URL that looks like a
//! password, whether the URL is well-formed or not. Beside it, [`percent_decode`], the one
//! decoder the store crates' URL parsers use.
//!
//! Every crate that shows a store URL (the Redis store's errors and `Debug`, the `cloakroom`
//! command's messages) calls this one function, so a URL is masked the same way everywhere.
//! It uses nothing else of the core and does not parse URLs the way a driver does: it looks
//! for secrets where people put them, and in doubt masks too much rather than too little.
//!
//! ```
//! use cloakroom_core::redact::redact_url;
//!
//! assert_eq!(redact_url("redis://user:hunter2@h:6379/0"), "redis://user:***@h:6379/0");
//! // Malformed (one slash): still masked.
//! assert_eq!(redact_url("redis:/:hunter2@h:6379/0"), "redis:/:***@h:6379/0");
//! assert_eq!(redact_url("redis://h/0?password=hunter2"), "redis://h/0?password=***");
//! assert_eq!(redact_url("sqlite:///var/lib/sessions.db"), "sqlite:///var/lib/sessions.db");
//! ```

use std::ops::Range;

pub use crate::percent::percent_decode;

/// What replaces a secret.
pub const MASK: &str = "***";

/// Parameter names (lower-cased) containing any of these are secrets: `password=`, `pass=`,
/// `pwd=`, `token=`, `access_token=`, `secret=`, `auth=`, `api_key=`, `credentials=`.
const SECRET_NAMES: [&str; 6] = ["pass", "pwd", "secret", "token", "auth", "key"];

/// `url` (trimmed) with every secret replaced by [`MASK`]:
///
/// - the password of the userinfo, `scheme://user:PASSWORD@host`, kept `user:` (a lone
///   `scheme://TOKEN@host` is masked whole: it is often a password);
/// - the same without a well-formed scheme: `redis:/:PW@h`, `redis//:PW@h`, `:PW@h`,
///   `user:PW@h`, and a password holding a raw `/`, `?`, `#` or `@`;
/// - the values of password-like parameters (`password=`, `pass=`, `token=`, `secret=`,
///   `auth=`, `...key=`) after `?`, `&`, `;`, `#` or `/`.
///
/// An `@` after a plain `host[:port]/` is taken as part of the path and kept.
pub fn redact_url(url: &str) -> String {
    let url = url.trim();
    let mut shown = String::with_capacity(url.len());
    let mut at = 0;
    for range in secret_ranges(url) {
        shown.push_str(&url[at..range.start]);
        shown.push_str(MASK);
        at = range.end;
    }
    shown.push_str(&url[at..]);
    shown
}

/// The secrets [`redact_url`] masks in `url`, as written and percent-decoded (drivers echo
/// either), longest first: for scrubbing them out of error messages that quote parts of
/// the URL.
pub fn url_secrets(url: &str) -> Vec<String> {
    let url = url.trim();
    let mut found: Vec<String> = secret_ranges(url)
        .into_iter()
        .map(|r| url[r].to_owned())
        .collect();
    let decoded: Vec<String> = found.iter().map(|s| decode_leniently(s)).collect();
    found.extend(decoded);
    found.retain(|s| !s.is_empty());
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    found.dedup();
    found
}

/// The byte ranges of `url` to mask, in order, not overlapping, none empty.
fn secret_ranges(url: &str) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let start = authority_start(url);
    let rest = &url[start..];
    let head_end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    let head = &rest[..head_end];
    let userinfo_end = match head.rfind('@') {
        Some(at) => Some(at),
        // `redis://:pa/ss@h`: an `@` further on, after something that is no host.
        None if rest[head_end..].contains('@') && !looks_like_hosts(head) => rest.rfind('@'),
        None => None,
    };
    let tail_start = match userinfo_end {
        Some(end) => {
            let userinfo = &rest[..end];
            let from = userinfo.find(':').map_or(0, |colon| colon + 1);
            if from < end {
                ranges.push(start + from..start + end);
            }
            start + end + 1
        }
        None => start + head_end,
    };
    parameter_ranges(url, tail_start, &mut ranges);
    ranges
}

/// Where the authority (`user:pass@host`) begins: after a scheme and its colon (or a scheme
/// missing its colon before `//`), and any slashes.
fn authority_start(url: &str) -> usize {
    let bytes = url.as_bytes();
    let mut i = 0;
    if bytes.first().is_some_and(u8::is_ascii_alphabetic) {
        let end = bytes
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
            .unwrap_or(bytes.len());
        match bytes.get(end) {
            Some(b':') => i = end + 1,
            Some(b'/' | b'\\') if matches!(bytes.get(end + 1), Some(b'/' | b'\\')) => i = end,
            _ => {}
        }
    }
    while matches!(bytes.get(i), Some(b'/' | b'\\')) {
        i += 1;
    }
    i
}

/// Whether `text` is a plain `host[:port]` list (`h`, `h:6379`, `[::1]:1`, `a:1,b:2`).
fn looks_like_hosts(text: &str) -> bool {
    !text.is_empty() && text.split(',').all(looks_like_host)
}

fn looks_like_host(text: &str) -> bool {
    let (host_ok, port) = match text.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((ip6, after)) => (
                !ip6.is_empty() && ip6.chars().all(|c| c.is_ascii_hexdigit() || c == ':'),
                after,
            ),
            None => return false,
        },
        None => {
            let (host, port) = text.find(':').map_or((text, ""), |c| text.split_at(c));
            let ok = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            (ok, port)
        }
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()));
    host_ok && port_ok
}

/// Adds the value ranges of secret-named `name=value` parameters found in `url[from..]`: a
/// name starts after `?`, `&`, `;`, `#`, `/` or at `from`; a value runs to the next `&` or
/// the end.
fn parameter_ranges(url: &str, from: usize, ranges: &mut Vec<Range<usize>>) {
    let bytes = url.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        let Some(eq) = url[i..].find('=').map(|e| i + e) else {
            break;
        };
        let name_start = url[from..eq]
            .rfind(['?', '&', ';', '#', '/'])
            .map_or(from, |s| from + s + 1);
        let value_end = url[eq + 1..].find('&').map_or(url.len(), |e| eq + 1 + e);
        let name = url[name_start..eq].to_ascii_lowercase();
        if SECRET_NAMES.iter().any(|s| name.contains(s)) && eq + 1 < value_end {
            ranges.push(eq + 1..value_end);
            i = value_end;
        } else {
            i = eq + 1;
        }
    }
}

/// `%XX` escapes decoded (and `+` as a space); anything malformed kept as is.
fn decode_leniently(text: &str) -> String {
    let decoded = crate::percent::decode(text.as_bytes(), true, false).unwrap_or_default();
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each URL, what it must show, and the secrets that must not appear.
    const TABLE: &[(&str, &str, &[&str])] = &[
        // Well-formed.
        ("redis://:pw@h", "redis://:***@h", &["pw"]),
        ("redis://user:pw@h:1/0", "redis://user:***@h:1/0", &["pw"]),
        (
            "rediss://u:p%40ss@h",
            "rediss://u:***@h",
            &["p%40ss", "p@ss"],
        ),
        (
            "pycket+redis://:pw@h/0?notifications_db=1",
            "pycket+redis://:***@h/0?notifications_db=1",
            &["pw"],
        ),
        (
            "redis+cluster://admin:s3cr3t@h1:7000,h2:7001",
            "redis+cluster://admin:***@h1:7000,h2:7001",
            &["s3cr3t"],
        ),
        ("redis://tok3n@h:1", "redis://***@h:1", &["tok3n"]),
        ("redis://h?password=pw", "redis://h?password=***", &["pw"]),
        (
            "redis://h:1/?db=1&PASSWORD=pw&x=1",
            "redis://h:1/?db=1&PASSWORD=***&x=1",
            &["pw"],
        ),
        (
            "redis+unix:///run/r.sock?pass=pw;token=tk",
            "redis+unix:///run/r.sock?pass=***",
            &["pw", "tk"],
        ),
        (
            "https://h/x?access_token=abc&api_key=def&secret=ghi",
            "https://h/x?access_token=***&api_key=***&secret=***",
            &["abc", "def", "ghi"],
        ),
        ("  redis://:pw@h  ", "redis://:***@h", &["pw"]),
        // Nothing secret: unchanged.
        ("sqlite://x.db", "sqlite://x.db", &[]),
        ("sqlite:///var/lib/s.db", "sqlite:///var/lib/s.db", &[]),
        ("memory://", "memory://", &[]),
        ("redis://h:6379/0", "redis://h:6379/0", &[]),
        ("redis://[::1]:6379/0", "redis://[::1]:6379/0", &[]),
        // An `@` in the path or the query of a plain host is not a password.
        ("sqlite:///srv/a@b/s.db", "sqlite:///srv/a@b/s.db", &[]),
        ("redis://h:1/0?prefix=a@b", "redis://h:1/0?prefix=a@b", &[]),
        (
            "redis://:pw@h/0?prefix=a@b",
            "redis://:***@h/0?prefix=a@b",
            &["pw"],
        ),
        // Malformed.
        ("redis:/:pw@h:1/0", "redis:/:***@h:1/0", &["pw"]),
        ("redis//:pw@h", "redis//:***@h", &["pw"]),
        ("redis:///:pw@h", "redis:///:***@h", &["pw"]),
        ("redis:\\\\:pw@h", "redis:\\\\:***@h", &["pw"]),
        ("redis::pw@h", "redis::***@h", &["pw"]),
        (":pw@h:1", ":***@h:1", &["pw"]),
        ("user:pw@h", "user:***@h", &["pw"]),
        ("redis://:p@ss@h", "redis://:***@h", &["p@ss", "ss@"]),
        ("redis://:pa/ss@h/0", "redis://:***@h/0", &["pa/ss"]),
        ("redis://u:pa?ss@h", "redis://u:***@h", &["pa?ss"]),
        ("redis://u:pa#ss@h", "redis://u:***@h", &["pa#ss"]),
        ("\"redis://:pw@h\"", "\"redis:***@h\"", &["pw"]),
        (
            "redis://h/0&password=pw",
            "redis://h/0&password=***",
            &["pw"],
        ),
        ("redis:pw@h", "redis:***@h", &["pw"]),
    ];

    #[test]
    fn passwords_never_appear() {
        for &(url, shown, secrets) in TABLE {
            let redacted = redact_url(url);
            assert_eq!(redacted, shown, "{url}");
            for secret in secrets {
                assert!(!redacted.contains(secret), "{secret} in {redacted} ({url})");
            }
        }
    }

    #[test]
    fn secrets_are_listed_as_written_and_decoded() {
        assert_eq!(url_secrets("rediss://u:p%40ss@h"), ["p%40ss", "p@ss"]);
        assert_eq!(
            url_secrets("redis:/:pw@h?token=t%20k"),
            ["t%20k", "t k", "pw"]
        );
        assert!(url_secrets("sqlite:///srv/a@b.db").is_empty());
    }

    #[test]
    fn odd_input_does_not_panic() {
        for url in [
            "",
            "@",
            ":",
            "=",
            "?=",
            "a=",
            "://",
            "x://@",
            "x://:@",
            "é://ü:ö@ä?p=ß",
        ] {
            let _ = redact_url(url);
            let _ = url_secrets(url);
        }
        assert_eq!(redact_url("é://ü:ö@ä?pass=ß"), "é:***@ä?pass=***");
    }
}
