//! `postgres://` URLs: our own query options are taken out, the rest goes to
//! `tokio_postgres::Config`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use cloakroom_core::store::{Error, ErrorKind, Result};

/// How TLS is negotiated (libpq's `sslmode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, without checking its certificate (libpq's default).
    #[default]
    Prefer,
    /// TLS or nothing; the certificate is checked only when `sslrootcert` is given (then as
    /// `verify-ca`), as libpq does.
    Require,
    /// TLS; the certificate must chain to a trusted root, any host name.
    VerifyCa,
    /// TLS; the certificate must chain to a trusted root and name the host.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" | "allow" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(config(format!(
                    "unknown sslmode {s:?}: use disable, prefer, require, verify-ca or verify-full"
                )));
            }
        })
    }
}

/// Everything a URL says.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) schema: Option<String>,
    pub(crate) table: Option<String>,
    pub(crate) pool_size: Option<usize>,
    pub(crate) statement_timeout: Option<Duration>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) ssl_mode: SslMode,
    pub(crate) root_cert: Option<PathBuf>,
    /// `events=N`: keep an event log of the newest N events.
    pub(crate) events: Option<u64>,
}

fn config(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::Config, message)
}

/// Parses a `postgres://` or `postgresql://` URL. Error messages never quote the URL (it may
/// hold a password).
pub(crate) fn parse(url: &str) -> Result<Options> {
    let url = url.trim();
    let lower = url.get(..13).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("postgresql://") {
        &url[13..]
    } else if lower.starts_with("postgres://") {
        &url[11..]
    } else {
        return Err(config(
            "a PostgreSQL store URL starts with postgres:// or postgresql://",
        ));
    };
    let (base, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    if base.contains('#') || query.is_some_and(|q| q.contains('#')) {
        return Err(config("a PostgreSQL store URL takes no #fragment"));
    }
    let mut options = Options {
        pg: tokio_postgres::Config::new(),
        schema: None,
        table: None,
        pool_size: None,
        statement_timeout: None,
        timeout: None,
        ssl_mode: SslMode::default(),
        root_cert: None,
        events: None,
    };
    let mut passed = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = percent_decode(value)?;
        match name {
            "schema" => options.schema = Some(identifier("schema", &decoded)?),
            "table" => options.table = Some(identifier("table", &decoded)?),
            "pool_size" => {
                let n = number("pool_size", &decoded)?;
                if n == 0 || n > 1000 {
                    return Err(config("pool_size must be between 1 and 1000"));
                }
                options.pool_size = Some(n as usize);
            }
            "statement_timeout_ms" => {
                options.statement_timeout = Some(Duration::from_millis(number(
                    "statement_timeout_ms",
                    &decoded,
                )?));
            }
            "timeout_ms" => {
                let ms = number("timeout_ms", &decoded)?;
                if ms == 0 {
                    return Err(config("timeout_ms must be positive"));
                }
                options.timeout = Some(Duration::from_millis(ms));
            }
            "sslmode" => options.ssl_mode = decoded.parse()?,
            "sslrootcert" => options.root_cert = Some(PathBuf::from(decoded)),
            "events" => {
                let n = number("events", &decoded)?;
                if n == 0 {
                    return Err(config("events must be positive (how many events to keep)"));
                }
                options.events = Some(n);
            }
            _ => passed.push(pair),
        }
    }
    let mut pg_url = format!("postgresql://{base}");
    if !passed.is_empty() {
        pg_url.push('?');
        pg_url.push_str(&passed.join("&"));
    }
    options.pg = tokio_postgres::Config::from_str(&pg_url).map_err(|e| {
        // tokio-postgres' messages name the option, never its value.
        config(format!("invalid PostgreSQL store URL: {e}"))
    })?;
    if options.pg.get_hosts().is_empty() {
        return Err(config("a PostgreSQL store URL needs a host"));
    }
    Ok(options)
}

fn number(name: &str, value: &str) -> Result<u64> {
    value
        .parse()
        .map_err(|_| config(format!("{name} must be a whole number, got {value:?}")))
}

/// Longest table name: its index names (`<table>_by_expiry`) must fit PostgreSQL's 63 bytes.
const MAX_TABLE: usize = 48;

/// A schema or table name: ASCII letters, digits and `_`, not starting with a digit. They are
/// quoted in SQL anyway; the restriction keeps them readable and unambiguous.
pub(crate) fn identifier(what: &str, name: &str) -> Result<String> {
    let max = if what == "table" { MAX_TABLE } else { 63 };
    let valid = !name.is_empty()
        && name.len() <= max
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        // PostgreSQL folds unquoted names to lower case and reserves `pg_` in any case.
        && !name.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("pg_"));
    if valid {
        Ok(name.to_owned())
    } else {
        Err(config(format!(
            "invalid {what} name {name:?}: use up to {max} ASCII letters, digits and _, not \
             starting with a digit or pg_"
        )))
    }
}

fn percent_decode(s: &str) -> Result<String> {
    cloakroom_core::redact::percent_decode(s, false)
        .ok_or_else(|| config("bad percent-encoding (or not UTF-8) in a store URL option"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_options_are_taken_out_and_the_rest_is_libpq() {
        let o = parse(
            "postgres://u:secret@db.example:6543/app?schema=sess&table=web_sessions&pool_size=3\
             &statement_timeout_ms=2500&timeout_ms=700&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca.pem&application_name=shop&events=100000",
        )
        .unwrap();
        assert_eq!(o.events, Some(100_000));
        assert_eq!(o.schema.as_deref(), Some("sess"));
        assert_eq!(o.table.as_deref(), Some("web_sessions"));
        assert_eq!(o.pool_size, Some(3));
        assert_eq!(o.statement_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(o.timeout, Some(Duration::from_millis(700)));
        assert_eq!(o.ssl_mode, SslMode::VerifyFull);
        assert_eq!(o.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(o.pg.get_user(), Some("u"));
        assert_eq!(o.pg.get_dbname(), Some("app"));
        assert_eq!(o.pg.get_ports(), &[6543]);
        assert_eq!(o.pg.get_application_name(), Some("shop"));
        let o = parse("POSTGRESQL://h/db").unwrap();
        assert_eq!(o.ssl_mode, SslMode::Prefer);
        assert_eq!(o.table, None);
        assert_eq!(o.events, None);
    }

    #[test]
    fn bad_options_are_config_errors_without_the_password() {
        for url in [
            "postgres://u:hunter2@h/db?table=a;drop",
            "postgres://u:hunter2@h/db?table=1abc",
            "postgres://u:hunter2@h/db?schema=pg_catalog",
            "postgres://u:hunter2@h/db?schema=PG_catalog",
            "postgres://u:hunter2@h/db?table=Pg_sessions",
            "postgres://u:hunter2@h/db?table=",
            "postgres://u:hunter2@h/db?pool_size=0",
            "postgres://u:hunter2@h/db?events=0",
            "postgres://u:hunter2@h/db?events=many",
            "postgres://u:hunter2@h/db?timeout_ms=x",
            "postgres://u:hunter2@h/db?sslmode=sometimes",
            "postgres://u:hunter2@h/db?nonsense=1",
            "postgres://u:hunter2@h/db#frag",
            "mysql://u:hunter2@h/db",
        ] {
            let err = parse(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        let long = format!("postgres://h/db?table={}", "t".repeat(49));
        assert!(parse(&long).is_err());
    }
}
