//! What the CLI needs to know about store URLs beyond `cloakroom::store::open`: how to show
//! one without its password (the core's [`redact_url`], shared with the Redis store, masks
//! it, well-formed or not), and whether its engine expires sessions by itself.

use cloakroom_core::redact::{MASK, redact_url, url_secrets};

/// `err` rebuilt as one message with the URL's secrets masked, if its text holds any;
/// otherwise `err` unchanged (so a usage error stays a [`clap::Error`]).
pub(crate) fn scrub(err: anyhow::Error, url: &str) -> anyhow::Error {
    let secrets = url_secrets(url);
    let line = crate::error_line(&err);
    if !secrets.iter().any(|s| line.contains(s.as_str())) {
        return err;
    }
    let mut line = line.replace(url.trim(), &redact_url(url));
    for secret in &secrets {
        line = line.replace(secret.as_str(), MASK);
    }
    anyhow::Error::msg(line)
}

/// A clap usage error with the secrets of any URL-like argument masked: clap quotes
/// unexpected arguments and invalid values in its messages. Help, version and errors that
/// quote no secret are returned unchanged.
pub(crate) fn scrub_usage(err: clap::Error, args: &[std::ffi::OsString]) -> clap::Error {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return err;
    }
    let secrets: Vec<String> = args
        .iter()
        .skip(1)
        .flat_map(|arg| url_secrets(&arg.to_string_lossy()))
        .collect();
    let text = err.render().to_string();
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return err;
    }
    let mut text = text;
    for secret in &secrets {
        text = text.replace(secret.as_str(), MASK);
    }
    let text = text.strip_prefix("error: ").unwrap_or(&text).to_owned();
    clap::Error::raw(err.kind(), text)
}

/// Whether the store behind `url` expires records in its engine (Redis: `PEXPIREAT`), so
/// `purge_expired` always finds nothing.
pub(crate) fn expires_by_itself(url: &str) -> bool {
    url.trim()
        .split_once(':')
        .is_some_and(|(scheme, _)| scheme.to_ascii_lowercase().contains("redis"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbing_masks_the_passwords_of_malformed_urls() {
        for url in ["redis:/:hunter2@h:1/0", "redis//:hunter2@h", "x:hunter2@h"] {
            let err = anyhow::anyhow!("bad URL {url}: hunter2?").context("opening");
            let line = scrub(err, url).to_string();
            assert!(!line.contains("hunter2"), "{line}");
            assert!(line.starts_with("opening: bad URL "), "{line}");
        }
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
