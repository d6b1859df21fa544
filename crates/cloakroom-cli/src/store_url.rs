//! What the CLI needs to know about store URLs beyond `cloakroom::store::open`: how to show
//! one without its password, and whether its engine expires sessions by itself.

/// Query parameters whose values are masked like a password.
const SECRET_PARAMS: [&str; 3] = ["pass", "secret", "token"];

/// The mask that replaces secrets.
const MASK: &str = "***";

/// `url` with the password of its userinfo (`scheme://user:PASSWORD@host`) and the values of
/// password-like query parameters masked.
pub(crate) fn redact(url: &str) -> String {
    let mut shown = url.trim().to_owned();
    for secret in secrets(url) {
        shown = shown.replace(&secret, MASK);
    }
    shown
}

/// The secrets in `url`: as written and percent-decoded (drivers report either).
fn secrets(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Some((_, rest)) = url.split_once("://") else {
        return found;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let userinfo = authority.rsplit_once('@').map(|(userinfo, _)| userinfo);
    if let Some((_, password)) = userinfo.and_then(|u| u.split_once(':')) {
        found.push(password.to_owned());
    }
    if let Some((_, query)) = rest.split_once('?') {
        let query = query.split('#').next().unwrap_or_default();
        for pair in query.split('&') {
            if let Some((name, value)) = pair.split_once('=') {
                let name = name.to_ascii_lowercase();
                if SECRET_PARAMS.iter().any(|s| name.contains(s)) {
                    found.push(value.to_owned());
                }
            }
        }
    }
    let decoded: Vec<String> = found.iter().map(|s| percent_decode(s)).collect();
    found.extend(decoded);
    found.retain(|s| !s.is_empty());
    // Longest first, so a secret that contains another is masked whole.
    found.sort_by_key(|s| std::cmp::Reverse(s.len()));
    found.dedup();
    found
}

/// `err` rebuilt as one message with the URL's secrets masked, if its text holds any;
/// otherwise `err` unchanged (so a usage error stays a [`clap::Error`]).
pub(crate) fn scrub(err: anyhow::Error, url: &str) -> anyhow::Error {
    let secrets = secrets(url);
    let line = crate::error_line(&err);
    if !secrets.iter().any(|s| line.contains(s.as_str())) {
        return err;
    }
    let mut line = line.replace(url.trim(), &redact(url));
    for secret in &secrets {
        line = line.replace(secret.as_str(), MASK);
    }
    anyhow::Error::msg(line)
}

/// Whether the store behind `url` expires records in its engine (Redis: `PEXPIREAT`), so
/// `purge_expired` always finds nothing.
pub(crate) fn expires_by_itself(url: &str) -> bool {
    url.trim()
        .split_once(':')
        .is_some_and(|(scheme, _)| scheme.to_ascii_lowercase().contains("redis"))
}

/// `%XX` escapes decoded; anything malformed kept as is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| bytes.get(at).and_then(|&b| char::from(b).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            redact("redis://:hunter2@127.0.0.1:6379/0"),
            "redis://:***@127.0.0.1:6379/0"
        );
        assert_eq!(
            redact("redis+cluster://admin:p%40ss@h1:7000,h2:7001"),
            "redis+cluster://admin:***@h1:7000,h2:7001"
        );
        assert_eq!(
            redact("pycket+redis://h:6379/0?notifications_db=1&password=x1y2"),
            "pycket+redis://h:6379/0?notifications_db=1&password=***"
        );
        assert_eq!(redact("sqlite:///var/lib/s.db"), "sqlite:///var/lib/s.db");
        assert_eq!(redact("redis://user@h/0"), "redis://user@h/0");
    }

    #[test]
    fn scrubbing_masks_decoded_passwords_and_keeps_other_errors() {
        let url = "redis://u:p%40ss@h/0";
        let err = anyhow::anyhow!("auth failed for u with p@ss").context("opening");
        assert_eq!(
            scrub(err, url).to_string(),
            "opening: auth failed for u with ***"
        );
        let usage = anyhow::Error::new(std::fmt::Error);
        assert!(
            scrub(usage, url)
                .downcast_ref::<std::fmt::Error>()
                .is_some()
        );
    }

    #[test]
    fn redis_stores_expire_by_themselves() {
        for url in [
            "redis://h/0",
            "REDIS+cluster://h:1",
            "pycket+redis://h/0",
            "rediss://h",
        ] {
            assert!(expires_by_itself(url), "{url}");
        }
        for url in ["sqlite://s.db", "memory://", "nope"] {
            assert!(!expires_by_itself(url), "{url}");
        }
    }
}
