//! Session stores: the [`SessionStore`] contract, the stores this build has, and [`open`],
//! which picks one from a URL at run time.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), cloakroom::store::Error> {
//! # #[cfg(feature = "memory")] {
//! let store = cloakroom::store::open("memory://").await?;
//! store.ping().await?;
//! # }
//! let err = cloakroom::store::open("mongodb://localhost").await.err().unwrap();
//! assert_eq!(err.kind(), cloakroom::store::ErrorKind::Config);
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

pub use cloakroom_core::store::*;

#[cfg(feature = "sqlite")]
pub use cloakroom_sqlite::{SqliteStore, SqliteStoreBuilder};

#[cfg(feature = "postgres")]
pub use cloakroom_postgres::{PostgresStore, PostgresStoreBuilder};

#[cfg(feature = "redis")]
pub use cloakroom_redis::{RedisStore, RedisStoreBuilder};

#[cfg(feature = "tornado")]
pub use cloakroom_tornado::{PycketStore, PycketStoreBuilder};

/// URL forms [`open`] understands in this build (depends on the enabled features).
pub fn supported_urls() -> Vec<&'static str> {
    let mut urls = Vec::new();
    if cfg!(feature = "memory") {
        urls.push("memory://");
    }
    if cfg!(feature = "sqlite") {
        urls.extend([
            "sqlite://relative/path.db",
            "sqlite:///absolute/path.db",
            "sqlite:///absolute/path.db?events=N",
            "sqlite::memory:",
        ]);
    }
    if cfg!(feature = "redis") {
        urls.extend([
            "redis://host:port/db",
            "rediss://user:password@host:port/db?ca=PATH&cert=PATH&key=PATH",
            "redis+unix:///path/to/socket",
            "redis+cluster://host:port,host:port",
            "rediss+cluster://host:port,host:port",
            "redis+sentinel://host:port,host:port/SERVICE/db?wait=N&sentinel_password=P",
            "rediss+sentinel://host:port,host:port/SERVICE/db",
        ]);
    }
    if cfg!(feature = "tornado") {
        urls.extend([
            "pycket+redis://host:port/db?notifications_db=N",
            "pycket+rediss://host:port/db?notifications_db=N",
            "pycket+redis+sentinel://host:port,host:port/SERVICE/db?notifications_db=N",
            "pycket+rediss+sentinel://host:port,host:port/SERVICE/db?notifications_db=N",
        ]);
    }
    if cfg!(feature = "postgres") {
        urls.extend([
            "postgres://user:password@host:port/db?schema=..&table=..&events=N",
            "postgresql://...",
        ]);
    }
    urls
}

/// Opens the session store a URL names:
///
/// - `memory://`: [`MemoryStore`], in process memory (feature `memory`);
/// - `sqlite://relative/path.db`, `sqlite:///absolute/path.db`, `sqlite::memory:`:
///   [`SqliteStore`] (feature `sqlite`). The path is taken literally (no percent-decoding).
///   One option: `?events=N` keeps a durable event log of the newest N events
///   ([`SqliteStoreBuilder::event_log`]).
///
/// - `redis://[user:password@]host:port/db`, `redis+unix://`, `redis+cluster://h:p,h:p`,
///   and over TLS `rediss://...`, `rediss+cluster://h:p,h:p`: [`RedisStore`] (feature
///   `redis`); options `?prefix=..&timeout_ms=..&connections=..` (or `max_connections`),
///   TLS options `?ca=PATH&cert=PATH&key=PATH` (and, for development only,
///   `insecure_skip_verify=true`). An unknown option or an unreadable certificate file is a
///   [`ErrorKind::Config`] error here, at start-up. Through Redis Sentinel:
///   `redis+sentinel://[user:password@]h:p,h:p/SERVICE/db` (TLS: `rediss+sentinel://`),
///   plus `?wait=N` (every write waits for N replicas); sentinels with a password of their
///   own: `?sentinel_password=P` (and `sentinel_username=U` for an ACL user).
/// - `pycket+redis://[user:password@]host:port/db?notifications_db=N` (TLS:
///   `pycket+rediss://`, same options): [`PycketStore`] (feature `tornado`), sessions in the
///   format of Tornado's pycket (db default 0, notifications default 1); pair it with
///   `cloakroom::PycketTicket`. Through Sentinel:
///   `pycket+redis+sentinel://[user:password@]h:p,h:p/SERVICE/db` (TLS:
///   `pycket+rediss+sentinel://`).
/// - `postgres://[user[:password]@]host[:port]/db` or `postgresql://...`: [`PostgresStore`]
///   (feature `postgres`); libpq options plus `?schema=..&table=..&pool_size=..
///   &statement_timeout_ms=..&timeout_ms=..&sslmode=..&sslrootcert=..&events=N` (`events`:
///   a durable event log of the newest N events).
///
/// Scheme names are case-insensitive.
///
/// # Errors
/// [`ErrorKind::Config`] for a URL this build does not support (the message lists the ones it
/// does); the store's own errors when it cannot be opened.
pub async fn open(url: &str) -> Result<Arc<dyn SessionStore>> {
    let Some((scheme, rest)) = split_scheme(url) else {
        return Err(unsupported("a URL without a scheme"));
    };
    match scheme.as_str() {
        "memory" => open_memory(rest),
        "sqlite" => open_sqlite(rest).await,
        "redis" | "rediss" | "redis+unix" | "redis+cluster" | "rediss+cluster"
        | "redis+sentinel" | "rediss+sentinel" => open_redis(url).await,
        "pycket+redis" | "pycket+rediss" | "pycket+redis+sentinel" | "pycket+rediss+sentinel" => {
            open_pycket(url).await
        }
        "postgres" | "postgresql" => open_postgres(url).await,
        _ => Err(unsupported(&format!("the scheme {scheme:?}"))),
    }
}

/// `scheme` (lower-cased) and what follows its colon, for `scheme:rest` URLs.
fn split_scheme(url: &str) -> Option<(String, &str)> {
    let (scheme, rest) = url.trim().split_once(':')?;
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then(|| (scheme.to_ascii_lowercase(), rest))
}

/// The error for a URL this build cannot open. Never repeats the URL itself: it may hold a
/// password.
fn unsupported(what: &str) -> Error {
    let urls = supported_urls();
    let supported = if urls.is_empty() {
        "none (enable the `memory` or `sqlite` feature of cloakroom)".to_owned()
    } else {
        urls.join(", ")
    };
    Error::new(
        ErrorKind::Config,
        format!("unsupported session store URL: {what}; supported: {supported}"),
    )
}

#[cfg(not(all(
    feature = "memory",
    feature = "sqlite",
    feature = "redis",
    feature = "postgres",
    feature = "tornado"
)))]
fn disabled(scheme: &str, feature: &str) -> Error {
    Error::new(
        ErrorKind::Config,
        format!(
            "{scheme}:// session stores need cloakroom's `{feature}` feature, which this build lacks"
        ),
    )
}

#[cfg(feature = "memory")]
fn open_memory(rest: &str) -> Result<Arc<dyn SessionStore>> {
    let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
    let bad = || {
        Error::new(
            ErrorKind::Config,
            "a memory store URL takes no host or path, and only the option events=N: use \
             memory:// or memory://?events=100000",
        )
    };
    if base != "//" && !base.is_empty() {
        return Err(bad());
    }
    let store = MemoryStore::new();
    Ok(match query {
        "" => Arc::new(store),
        _ => {
            let n = query.strip_prefix("events=").ok_or_else(bad)?;
            let n: usize = n.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
            Arc::new(store.with_event_log(n))
        }
    })
}

#[cfg(not(feature = "memory"))]
fn open_memory(_: &str) -> Result<Arc<dyn SessionStore>> {
    Err(disabled("memory", "memory"))
}

/// Where a `sqlite:` URL points.
#[derive(Debug, PartialEq, Eq)]
enum SqliteTarget<'a> {
    InMemory,
    File(&'a str),
}

/// A `sqlite:` URL's target and its one option, `?events=N` (keep an event log of N events).
fn sqlite_url(rest: &str) -> Result<(SqliteTarget<'_>, Option<u64>)> {
    if rest.contains('#') {
        return Err(Error::new(
            ErrorKind::Config,
            "sqlite store URLs take no #fragment",
        ));
    }
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, query),
        None => (rest, ""),
    };
    let mut events = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("events", n)) => {
                let n = n.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Config,
                        "the sqlite store URL option events takes a positive whole number",
                    )
                })?;
                events = Some(n);
            }
            _ => {
                let name = pair.split('=').next().unwrap_or(pair);
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "unknown sqlite store URL option {name:?} (the one option is events=N)"
                    ),
                ));
            }
        }
    }
    Ok((sqlite_target(path)?, events))
}

fn sqlite_target(rest: &str) -> Result<SqliteTarget<'_>> {
    if rest == ":memory:" || rest == "//:memory:" {
        return Ok(SqliteTarget::InMemory);
    }
    if rest.contains(['?', '#']) {
        return Err(Error::new(
            ErrorKind::Config,
            "sqlite store URLs take no options (nothing after '?' or '#')",
        ));
    }
    // `sqlite://a/b.db` is relative, `sqlite:///a/b.db` absolute; `sqlite:a/b.db` also works.
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path.is_empty() || path == "/" {
        return Err(Error::new(
            ErrorKind::Config,
            "a sqlite store URL needs a file path: sqlite://relative/path.db or sqlite:///absolute/path.db",
        ));
    }
    Ok(SqliteTarget::File(path))
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(rest: &str) -> Result<Arc<dyn SessionStore>> {
    let (target, events) = sqlite_url(rest)?;
    let mut builder = SqliteStore::builder();
    if let Some(n) = events {
        builder = builder.event_log(n);
    }
    let store = match target {
        SqliteTarget::InMemory => builder.open_in_memory().await?,
        SqliteTarget::File(path) => builder.open(path).await?,
    };
    Ok(Arc::new(store))
}

#[cfg(not(feature = "sqlite"))]
async fn open_sqlite(rest: &str) -> Result<Arc<dyn SessionStore>> {
    sqlite_url(rest)?;
    Err(disabled("sqlite", "sqlite"))
}

#[cfg(feature = "redis")]
async fn open_redis(url: &str) -> Result<Arc<dyn SessionStore>> {
    Ok(Arc::new(RedisStore::open(url.trim()).await?))
}

#[cfg(not(feature = "redis"))]
async fn open_redis(url: &str) -> Result<Arc<dyn SessionStore>> {
    let scheme = url.split(':').next().unwrap_or("redis");
    Err(disabled(scheme, "redis"))
}

#[cfg(feature = "tornado")]
async fn open_pycket(url: &str) -> Result<Arc<dyn SessionStore>> {
    Ok(Arc::new(PycketStore::open(url.trim()).await?))
}

#[cfg(not(feature = "tornado"))]
async fn open_pycket(_: &str) -> Result<Arc<dyn SessionStore>> {
    Err(disabled("pycket+redis", "tornado"))
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<Arc<dyn SessionStore>> {
    Ok(Arc::new(PostgresStore::open(url.trim()).await?))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(url: &str) -> Result<Arc<dyn SessionStore>> {
    let scheme = url.trim().split(':').next().unwrap_or("postgres");
    Err(disabled(scheme, "postgres"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_map_to_paths() {
        fn target(url: &str) -> std::result::Result<SqliteTarget<'_>, ErrorKind> {
            let (scheme, rest) = split_scheme(url).unwrap();
            assert_eq!(scheme, "sqlite");
            sqlite_target(rest).map_err(|e| e.kind())
        }
        assert_eq!(
            target("sqlite://data/s.db"),
            Ok(SqliteTarget::File("data/s.db"))
        );
        assert_eq!(
            target("sqlite:///var/lib/s.db"),
            Ok(SqliteTarget::File("/var/lib/s.db"))
        );
        assert_eq!(target("SQLite://s.db"), Ok(SqliteTarget::File("s.db")));
        assert_eq!(target("sqlite:s.db"), Ok(SqliteTarget::File("s.db")));
        assert_eq!(target("sqlite::memory:"), Ok(SqliteTarget::InMemory));
        assert_eq!(target("sqlite://"), Err(ErrorKind::Config));
        assert_eq!(target("sqlite:///"), Err(ErrorKind::Config));
        assert_eq!(target("sqlite://s.db?mode=ro"), Err(ErrorKind::Config));
    }

    #[test]
    fn sqlite_urls_take_the_event_log_option_only() {
        fn url(url: &str) -> std::result::Result<(SqliteTarget<'_>, Option<u64>), ErrorKind> {
            let (_, rest) = split_scheme(url).unwrap();
            sqlite_url(rest).map_err(|e| e.kind())
        }
        assert_eq!(
            url("sqlite:///var/s.db?events=100000"),
            Ok((SqliteTarget::File("/var/s.db"), Some(100_000)))
        );
        assert_eq!(
            url("sqlite::memory:?events=5"),
            Ok((SqliteTarget::InMemory, Some(5)))
        );
        assert_eq!(url("sqlite://s.db"), Ok((SqliteTarget::File("s.db"), None)));
        for bad in [
            "sqlite://s.db?events=0",
            "sqlite://s.db?events=x",
            "sqlite://s.db?events",
            "sqlite://s.db?mode=ro",
            "sqlite://s.db?events=5#x",
            "sqlite://?events=5",
        ] {
            assert_eq!(url(bad), Err(ErrorKind::Config), "{bad}");
        }
    }

    #[test]
    fn schemes_are_case_insensitive_and_validated() {
        assert_eq!(split_scheme("Memory://"), Some(("memory".into(), "//")));
        assert_eq!(
            split_scheme("redis+cluster://h:1"),
            Some(("redis+cluster".into(), "//h:1"))
        );
        assert_eq!(split_scheme("no scheme here"), None);
        assert_eq!(split_scheme("/abs/path.db"), None);
        assert_eq!(split_scheme("1x://"), None);
    }

    #[tokio::test]
    async fn unknown_scheme_is_a_config_error_listing_what_works() {
        for url in [
            "mongodb://127.0.0.1:27017/0",
            "mysql://u:hunter2@h/db",
            "",
            "s.db",
        ] {
            let err = open(url).await.err().expect(url);
            assert_eq!(err.kind(), ErrorKind::Config, "{url}");
            let text = err.to_string();
            assert!(text.contains("supported:"), "{text}");
            assert!(
                !text.contains("hunter2"),
                "the URL's password leaked: {text}"
            );
            #[cfg(feature = "memory")]
            assert!(text.contains("memory://"), "{text}");
            #[cfg(feature = "sqlite")]
            assert!(text.contains("sqlite://"), "{text}");
            #[cfg(feature = "redis")]
            assert!(text.contains("redis://"), "{text}");
        }
    }

    #[cfg(feature = "postgres")]
    #[tokio::test]
    async fn postgres_urls_open_the_postgres_store() {
        // Port 1 on loopback: nothing listens there, so the URL got as far as connecting.
        for url in [
            "postgres://u:hunter2@127.0.0.1:1/db?timeout_ms=2000",
            "PostgreSQL://u:hunter2@127.0.0.1:1/db?table=t&timeout_ms=2000",
        ] {
            let err = open(url).await.err().unwrap();
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        let err = open("postgres://u:hunter2@127.0.0.1:1/db?table=x;y")
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(
            supported_urls()
                .iter()
                .any(|u| u.starts_with("postgres://"))
        );
    }

    #[cfg(not(feature = "postgres"))]
    #[tokio::test]
    async fn postgres_urls_need_the_feature() {
        let err = open("postgres://u:hunter2@h/db").await.err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains("`postgres` feature"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[cfg(feature = "tornado")]
    #[tokio::test]
    async fn pycket_urls_open_the_pycket_store() {
        // Port 1 on loopback: nothing listens there, so the URL got as far as connecting.
        let err = open("pycket+redis://:hunter2@127.0.0.1:1/5?notifications_db=11&timeout_ms=500")
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = open("PYCKET+REDIS://127.0.0.1:1/5?notifications_db=5")
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(
            supported_urls()
                .iter()
                .any(|u| u.starts_with("pycket+redis://"))
        );
    }

    #[cfg(feature = "tornado")]
    #[tokio::test]
    async fn pycket_sentinel_urls_open_the_pycket_store() {
        // No sentinel on port 1: the URL got as far as asking one.
        let url = "pycket+redis+sentinel://:hunter2@127.0.0.1:1/cloakroom/5?timeout_ms=500\
                   &sentinel_password=hunter3";
        let err = open(url).await.err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(!err.to_string().contains("hunter"), "{err}");
        // pycket's own check: the URL reached the pycket store.
        let err = open("PYCKET+REDISS+SENTINEL://127.0.0.1:1/cloakroom/5?notifications_db=5")
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.to_string().contains("notifications_db"), "{err}");
        let urls = supported_urls();
        for scheme in ["pycket+redis+sentinel://", "pycket+rediss+sentinel://"] {
            assert!(urls.iter().any(|u| u.starts_with(scheme)), "{scheme}");
        }
    }

    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn tls_redis_urls_are_checked_at_open() {
        // Every TLS form is routed to a Redis store, whose URL errors come before connecting.
        let mut urls = vec![
            "rediss://u:hunter2@127.0.0.1:1/0?ca=/nonexistent/ca.pem",
            "rediss+cluster://127.0.0.1:1,127.0.0.1:2?ca=/nonexistent/ca.pem",
            "redis://127.0.0.1:1/0?unknown_option=1",
        ];
        let mut schemes = vec!["rediss://", "rediss+cluster://"];
        if cfg!(feature = "tornado") {
            urls.extend([
                "pycket+rediss://:hunter2@127.0.0.1:1/5?ca=/nonexistent/ca.pem",
                "pycket+redis://127.0.0.1:1/5?cafile=/x",
            ]);
            schemes.push("pycket+rediss://");
        }
        for url in urls {
            let err = open(url).await.err().unwrap();
            assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        let urls = supported_urls();
        for scheme in schemes {
            assert!(urls.iter().any(|u| u.starts_with(scheme)), "{scheme}");
        }
    }

    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn unreachable_redis_is_unavailable_without_the_password() {
        // Port 1 on loopback: nothing listens there.
        let err = open("redis://:hunter2@127.0.0.1:1/0?timeout_ms=500")
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn memory_url_takes_an_event_log() {
        let store = open("memory://?events=10").await.unwrap();
        assert!(store.event_log().is_some());
        assert!(open("memory://").await.unwrap().event_log().is_none());
        for bad in [
            "memory://?events=0",
            "memory://?events=x",
            "memory://?other=1",
        ] {
            let err = open(bad).await.err().expect(bad);
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
        }
    }

    #[tokio::test]
    async fn memory_url_opens_a_working_store() {
        use cloakroom_core::session::{SessionId, Timestamp};
        let store = open("memory://").await.unwrap();
        store.ping().await.unwrap();
        let key = SessionId::generate().key();
        let now = Timestamp::now();
        let record = Record::new(now, now.plus(std::time::Duration::from_secs(60)));
        assert_eq!(store.create(&key, &record).await.unwrap(), Created::Done);
        assert!(store.load(&key).await.unwrap().is_some());
        assert_eq!(
            open("memory://somewhere").await.err().unwrap().kind(),
            ErrorKind::Config
        );
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sqlite_url_opens_a_store_that_persists() {
        use cloakroom_core::session::{SessionId, Timestamp};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let key = SessionId::generate().key();
        {
            let store = open(&url).await.unwrap();
            let now = Timestamp::now();
            let mut record = Record::new(now, now.plus(std::time::Duration::from_secs(60)));
            record.data.insert("n".into(), "1".into());
            assert_eq!(store.create(&key, &record).await.unwrap(), Created::Done);
        }
        let reopened = open(&url).await.unwrap();
        let record = reopened.load(&key).await.unwrap().expect("persisted");
        assert_eq!(record.data.get("n").map(String::as_str), Some("1"));
        open("sqlite::memory:").await.unwrap().ping().await.unwrap();
        assert!(reopened.event_log().is_none(), "no log unless asked for");
        let logged = open(&format!("{url}?events=10")).await.unwrap();
        assert!(logged.event_log().is_some(), "?events=N keeps a log");
    }
}
