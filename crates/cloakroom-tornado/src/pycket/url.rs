//! The `pycket+redis://` URL (and `pycket+rediss://`, `pycket+redis+sentinel://`,
//! `pycket+rediss+sentinel://`) and the store's builder.

use super::*;
use cloakroom_redis::connection::{RedisUrl, refuse_fragment};

/// Options for [`PycketStore`]; made by [`PycketStore::builder`].
#[must_use = "call .build().await to open the store"]
#[derive(Clone)]
pub struct PycketStoreBuilder {
    pub(super) url: String,
    pub(super) options: Options,
}

impl fmt::Debug for PycketStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PycketStoreBuilder")
            .field("url", &redact(&self.url))
            .field("options", &self.options)
            .finish()
    }
}

/// A `pycket+redis://` URL taken apart.
#[derive(Debug)]
pub(super) struct PycketUrl {
    /// The sessions database: one server, or a Sentinel service's master (with the options).
    sessions: RedisUrl,
    /// The notifications database, the same way.
    notes: RedisUrl,
    sessions_db: i64,
    notifications_db: i64,
}

/// Takes a pycket URL apart: pycket's own parts (the scheme, the databases, Sentinel's
/// service) here, the rest (address, credentials, options) by `cloakroom-redis`'s parser.
pub(super) fn parse_url(url: &str) -> Result<PycketUrl> {
    refuse_fragment(url)?;
    let shown = redact(url);
    let (scheme, rest) = url
        .trim()
        .split_once("://")
        .ok_or_else(|| config(format!("not a pycket+redis:// URL: {shown}")))?;
    let (redis_scheme, sentinel) = match scheme.to_ascii_lowercase().as_str() {
        "pycket+redis" => ("redis", false),
        "pycket+rediss" => ("rediss", false),
        "pycket+redis+sentinel" => ("redis+sentinel", true),
        "pycket+rediss+sentinel" => ("rediss+sentinel", true),
        _ => {
            return Err(config(format!(
                "a pycket store URL starts with pycket+redis:// (or pycket+rediss:// for TLS, \
                 pycket+redis+sentinel:// or pycket+rediss+sentinel:// through Sentinel), not \
                 {scheme}://"
            )));
        }
    };
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() || authority.ends_with('@') {
        return Err(config(format!("no host in {shown}")));
    }
    // Through Sentinel the path names the service first: `/SERVICE[/db]`.
    let (service, path) = if sentinel {
        match path.split_once('/').unwrap_or((path, "")) {
            ("", _) => {
                return Err(config(format!(
                    "a pycket Sentinel URL names the service: \
                     pycket+redis+sentinel://host:port,host:port/SERVICE[/db], not {shown}"
                )));
            }
            (service, db) => (Some(service), db),
        }
    } else {
        (None, path)
    };
    let base = |db: i64| match service {
        Some(service) => format!("{redis_scheme}://{authority}/{service}/{db}"),
        None => format!("{redis_scheme}://{authority}/{db}"),
    };
    let db = |text: &str, what: &str| -> Result<i64> {
        text.parse::<u32>()
            .map(i64::from)
            .map_err(|_| config(format!("bad {what} in {shown}")))
    };
    let sessions_db = match path.trim_end_matches('/') {
        "" => DEFAULT_SESSIONS_DB,
        p => db(p, "database number")?,
    };
    let mut notifications_db = DEFAULT_NOTIFICATIONS_DB;
    let mut others = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("notifications_db", v)) => notifications_db = db(v, "notifications_db")?,
            _ => others.push(pair),
        }
    }
    if notifications_db == sessions_db {
        return Err(config(format!(
            "notifications_db must differ from the sessions database ({sessions_db}): pycket \
             keeps both under the same keys"
        )));
    }
    let query = if others.is_empty() {
        String::new()
    } else {
        format!("?{}", others.join("&"))
    };
    Ok(PycketUrl {
        sessions: RedisUrl::parse(&format!("{}{query}", base(sessions_db)))?,
        notes: RedisUrl::parse(&format!("{}{query}", base(notifications_db)))?,
        sessions_db,
        notifications_db,
    })
}

impl PycketStoreBuilder {
    /// The prefix of the user index keys (default `cloakroom:`; URL option `prefix`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.options = self.options.prefix(prefix);
        self
    }

    /// The bound on every operation, connecting included (default 2 s; URL option
    /// `timeout_ms`). Must not be zero.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.options = self.options.command_timeout(timeout);
        self
    }

    /// How many dedicated connections transactions may hold at once (default 8; URL option
    /// `max_connections`, pycket's setting, or `connections`). Reads share two multiplexed
    /// connections whatever this is.
    pub fn connections(mut self, n: usize) -> Self {
        self.options = self.options.connections(n);
        self
    }

    /// Connects and returns the store.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a bad URL or option, [`ErrorKind::Unavailable`] when Redis
    /// cannot be reached within the timeout.
    pub async fn build(self) -> Result<PycketStore> {
        let url = parse_url(&self.url)?;
        let settings = self.options.resolve(&url.sessions, DEFAULT_CONNECTIONS)?;
        if let Some(option) = settings.native_only() {
            let message = match option {
                "cache" => "cache=N (the near-cache) is not supported by the pycket store",
                "events" => "events=N (the event log) is not supported by the pycket store",
                _ => "wait=N is not supported by the pycket store",
            };
            return Err(Error::new(ErrorKind::Config, message));
        }
        let timeout = settings.command_timeout;
        let shown_url = redact(&self.url);
        let sessions_master = Master::new(&url.sessions, &settings, &shown_url)?;
        let notes_master = Master::new(&url.notes, &settings, &shown_url)?;
        let sessions = sessions_master.shared(timeout).await?;
        let notes = notes_master.shared(timeout).await?;
        Ok(PycketStore {
            inner: Arc::new(Inner {
                sessions,
                notes,
                pool: Pool::new(sessions_master, timeout, settings.connections),
                stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
                hasher: std::collections::hash_map::RandomState::new(),
                sessions_db: url.sessions_db,
                notifications_db: url.notifications_db,
                prefix: settings.prefix,
                timeout,
                shown_url,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("pycket+redis://127.0.0.1:6379/5?notifications_db=11").unwrap();
        assert_eq!(u.sessions.to_string(), "redis://127.0.0.1:6379/5");
        assert_eq!(u.notes.to_string(), "redis://127.0.0.1:6379/11");
        assert_eq!((u.sessions_db, u.notifications_db), (5, 11));
        let u = parse_url("PYCKET+REDIS://:pw@h:1?timeout_ms=300&prefix=a%3A&protocol=3").unwrap();
        let query = "?timeout_ms=300&prefix=a%3A&protocol=3";
        assert_eq!(u.sessions.to_string(), format!("redis://:***@h:1/0{query}"));
        assert_eq!(u.notes.to_string(), format!("redis://:***@h:1/1{query}"));
        let settings = Options::default().resolve(&u.sessions, 1).unwrap();
        assert_eq!(settings.command_timeout, Duration::from_millis(300));
        assert_eq!(settings.prefix, "a:");
        for bad in [
            "redis://h/0",
            "pycket+redis://",
            "pycket+redis://h/x",
            "pycket+redis://h/2?notifications_db=2",
            "pycket+redis://h/0?notifications_db=-1",
            "pycket+redis://h?timeout_ms=x",
        ] {
            assert_eq!(
                parse_url(bad).unwrap_err().kind(),
                ErrorKind::Config,
                "{bad}"
            );
        }
        let err = parse_url("pycket+redis://:hunter2@h/1?notifications_db=1").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn sentinel_urls() {
        let u = parse_url(
            "pycket+redis+sentinel://:pw@a:1,b:2/mymaster/5?notifications_db=11\
             &sentinel_password=spw&timeout_ms=300",
        )
        .unwrap();
        let query = "?sentinel_password=***&timeout_ms=300";
        let sessions = format!("redis+sentinel://:***@a:1,b:2/mymaster/5{query}");
        assert_eq!(u.sessions.to_string(), sessions);
        let notes = format!("redis+sentinel://:***@a:1,b:2/mymaster/11{query}");
        assert_eq!(u.notes.to_string(), notes);
        assert_eq!((u.sessions_db, u.notifications_db), (5, 11));
        let settings = Options::default().resolve(&u.sessions, 1).unwrap();
        assert_eq!(settings.command_timeout, Duration::from_millis(300));
        let u = parse_url("PYCKET+REDISS+SENTINEL://a:1/svc").unwrap();
        assert_eq!(u.sessions.to_string(), "rediss+sentinel://a:1/svc/0");
        assert_eq!(u.notes.to_string(), "rediss+sentinel://a:1/svc/1");
        let settings = Options::default().resolve(&u.sessions, 1).unwrap();
        let master = Master::new(&u.sessions, &settings, "x").unwrap();
        assert!(master.follows_master());
        for bad in [
            "pycket+redis+sentinel://a:1",
            "pycket+redis+sentinel://a:1/",
            "pycket+redis+sentinel://a:1//0",
            "pycket+redis+sentinel://a:1/svc/x",
            "pycket+redis+sentinel://a:1/svc/0/1",
            "pycket+redis+sentinel://a:1/svc/2?notifications_db=2",
            "pycket+redis+sentinel:///svc/0",
            "pycket+redis+sentinel://a:1/svc?wait=x",
            // The sentinels' credentials need a Sentinel URL.
            "pycket+redis://h/0?sentinel_password=x",
        ] {
            assert_eq!(
                parse_url(bad).unwrap_err().kind(),
                ErrorKind::Config,
                "{bad}"
            );
        }
    }
}
