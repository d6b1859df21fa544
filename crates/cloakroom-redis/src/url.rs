//! A Redis URL, parsed once into a [`RedisUrl`]: where to connect (one server, a Cluster's
//! seed nodes, or a Sentinel service), what redis-rs is given (credentials, database,
//! protocol), TLS, and the store's own options. Every check happens here, before anything
//! connects, so a bad URL or option is an error at start-up; the certificate files are read
//! when a store opens ([`RedisUrl::certificates`], in `url/tls.rs`).

use std::fmt;
use std::mem::take;
use std::time::Duration;

use cloakroom_core::redact::percent_decode;
use cloakroom_core::store::{Error, ErrorKind, Result};
use redis::{ConnectionAddr, ProtocolVersion, RedisConnectionInfo};

mod tls;

pub(crate) use tls::{TlsOptions, client};

/// Query parameters that go on to redis-rs (`db`, `user`, `pass`: Unix sockets only).
const REDIS_RS_OPTIONS: [&str; 4] = ["protocol", "db", "user", "pass"];

/// Query parameters of a Sentinel URL only (the sentinels' own credentials).
const SENTINEL_OPTIONS: [&str; 2] = ["sentinel_username", "sentinel_password"];

/// The store's own query parameters.
const STORE_OPTIONS: [&str; 12] = [
    "prefix",
    "timeout_ms",
    "connections",
    "max_connections",
    "ca",
    "cert",
    "key",
    "insecure_skip_verify",
    "wait",
    "cache",
    "cache_max_stale_ms",
    "events",
];

/// The port of a server named without one.
const DEFAULT_PORT: u16 = 6379;

/// The port of a sentinel named without one.
const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// A configuration error with `message`.
pub(crate) fn config(message: String) -> Error {
    Error::new(ErrorKind::Config, message)
}

/// A Redis URL taken apart and checked (see the [crate docs](crate#urls) for the forms and
/// options): made by [`RedisUrl::parse`], shown (`Display`) with its secrets masked.
#[derive(Clone)]
pub struct RedisUrl {
    pub(crate) endpoint: Endpoint,
    /// What redis-rs is given for every server: credentials, database, protocol.
    pub(crate) server: RedisConnectionInfo,
    /// Whether the URL names the protocol (`protocol=`).
    pub(crate) protocol_given: bool,
    /// `rediss`: TLS to every server and sentinel.
    pub(crate) tls: bool,
    pub(crate) tls_options: TlsOptions,
    pub(crate) options: StoreOptions,
    /// The URL as given, secrets masked.
    pub(crate) shown: String,
}

/// Where a URL says to connect.
#[derive(Clone, Debug)]
pub(crate) enum Endpoint {
    /// One server (`redis://`, `rediss://`: TCP; `redis+unix://`, `unix://`: a Unix socket).
    Server(ConnectionAddr),
    /// A Redis Cluster, from its seed nodes.
    Cluster(Vec<(String, u16)>),
    /// The master of a Sentinel service; `auth` holds the sentinels' own credentials.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        service: String,
        auth: RedisConnectionInfo,
    },
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUrl")
            .field("url", &self.shown)
            .field("options", &self.options)
            .finish()
    }
}

impl RedisUrl {
    /// Parses and checks `url`.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] for a fragment, an unknown scheme or option, a bad value, TLS
    /// options on a URL without TLS, or a TLS URL in a build without the `tls` feature;
    /// secrets are never shown.
    pub fn parse(url: &str) -> Result<RedisUrl> {
        refuse_fragment(url)?;
        let shown = redact(url);
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| config(format!("not a Redis URL: {shown}")))?;
        let (tls, kind) = match scheme.to_ascii_lowercase().as_str() {
            "redis" => (false, ""),
            "rediss" => (true, ""),
            "redis+unix" | "unix" => (false, "unix"),
            "redis+cluster" => (false, "cluster"),
            "rediss+cluster" => (true, "cluster"),
            "redis+sentinel" => (false, "sentinel"),
            "rediss+sentinel" => (true, "sentinel"),
            _ => {
                return Err(config(format!(
                    "unsupported Redis URL scheme {scheme:?} (expected redis://, rediss://, \
                     redis+unix://, redis+cluster://, rediss+cluster://, redis+sentinel:// or \
                     rediss+sentinel://)"
                )));
            }
        };
        refuse_tls_unless_built(tls, cfg!(feature = "tls"), &shown)?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut parsed = RedisUrl {
            endpoint: Endpoint::Cluster(Vec::new()),
            server: RedisConnectionInfo::default(),
            protocol_given: false,
            tls,
            tls_options: TlsOptions::default(),
            options: StoreOptions::default(),
            shown: shown.clone(),
        };
        let auth = parsed.take_query(query, kind)?;
        if !tls && parsed.tls_options.any() {
            return Err(config(format!(
                "ca, cert, key and insecure_skip_verify need a TLS URL (`rediss` in the \
                 scheme: rediss://, rediss+cluster://, rediss+sentinel://), not {shown}"
            )));
        }
        parsed.take_address(rest, kind, auth)?;
        Ok(parsed)
    }

    /// Reads the query (without `?`) of a URL of `kind` (`""`, `unix`, `cluster` or
    /// `sentinel`); returns the sentinels' own credentials.
    fn take_query(&mut self, query: &str, kind: &str) -> Result<RedisConnectionInfo> {
        let shown = self.shown.clone();
        let bad = |what: &str| config(format!("bad {what} in Redis URL {shown}"));
        let mut auth = RedisConnectionInfo::default();
        let (mut sentinel_user, mut sentinel_password) = (false, false);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let text = || percent_decode(v, true).ok_or_else(|| bad(k));
            let millis = || v.parse().map(Duration::from_millis).map_err(|_| bad(k));
            let (o, t) = (&mut self.options, &mut self.tls_options);
            match k {
                "prefix" => o.prefix = Some(text()?),
                "timeout_ms" => o.timeout = Some(millis()?),
                "cache_max_stale_ms" => o.cache_max_stale = Some(millis()?),
                "connections" | "max_connections" => {
                    o.connections = Some(v.parse().map_err(|_| bad(k))?);
                }
                "cache" => o.cache = Some(v.parse().map_err(|_| bad("cache (records)"))?),
                "wait" => o.wait = Some(v.parse().map_err(|_| bad("wait (replicas)"))?),
                "events" => o.events = Some(v.parse().map_err(|_| bad("events (how many)"))?),
                "ca" => t.ca = Some(text()?),
                "cert" => t.cert = Some(text()?),
                "key" => t.key = Some(text()?),
                "insecure_skip_verify" => {
                    t.insecure_skip_verify = match v {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        _ => return Err(bad("insecure_skip_verify (true or false)")),
                    }
                }
                "protocol" => {
                    let protocol = match v {
                        "2" | "resp2" => ProtocolVersion::RESP2,
                        "3" | "resp3" => ProtocolVersion::RESP3,
                        _ => return Err(bad("protocol (resp2 or resp3)")),
                    };
                    self.server = take(&mut self.server).set_protocol(protocol);
                    self.protocol_given = true;
                }
                "db" | "user" | "pass" if kind == "unix" => {
                    self.server = match k {
                        "db" => take(&mut self.server).set_db(v.parse().map_err(|_| bad(k))?),
                        "user" => take(&mut self.server).set_username(text()?),
                        _ => take(&mut self.server).set_password(text()?),
                    };
                }
                "sentinel_username" | "sentinel_password" if kind == "sentinel" => {
                    // Not empty; the value is never shown (it may be a password).
                    let value = text().ok().filter(|t| !t.is_empty()).ok_or_else(|| {
                        bad(&format!(
                            "{k} (not empty; percent-encode reserved characters)"
                        ))
                    })?;
                    auth = if k == "sentinel_username" {
                        sentinel_user = true;
                        auth.set_username(value)
                    } else {
                        sentinel_password = true;
                        auth.set_password(value)
                    };
                }
                k if SENTINEL_OPTIONS.contains(&k) => {
                    return Err(config(format!(
                        "{k} is for Sentinel URLs (`+sentinel` in the scheme: redis+sentinel://, \
                         rediss+sentinel://), not {shown}"
                    )));
                }
                _ => {
                    // A name that is not a plain word is not shown: in a malformed URL
                    // (`redis://u:pa?ss@host`) the "option" is the rest of a password.
                    let name = if !k.is_empty()
                        && k.len() <= 32
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    {
                        format!("{k:?}")
                    } else {
                        "(name not shown: it may hold part of a password)".to_owned()
                    };
                    let known = match kind {
                        "unix" => REDIS_RS_OPTIONS.join(", "),
                        "sentinel" => format!("protocol, {}", SENTINEL_OPTIONS.join(", ")),
                        _ => "protocol".to_owned(),
                    };
                    return Err(config(format!(
                        "unknown option {name} in Redis URL {shown} (known: {}, {known})",
                        STORE_OPTIONS.join(", ")
                    )));
                }
            }
        }
        if sentinel_user && !sentinel_password {
            return Err(config(format!(
                "sentinel_username needs sentinel_password in {shown}"
            )));
        }
        Ok(auth)
    }

    /// Reads the part of a URL of `kind` between `://` and `?`.
    fn take_address(&mut self, rest: &str, kind: &str, auth: RedisConnectionInfo) -> Result<()> {
        let shown = self.shown.clone();
        let bad = |what: &str| config(format!("bad {what} in Redis URL {shown}"));
        if kind == "unix" {
            let path = percent_decode(rest, false).filter(|p| p.starts_with('/'));
            let path = path.ok_or_else(|| bad("Unix socket path"))?;
            self.endpoint = Endpoint::Server(ConnectionAddr::Unix(path.into()));
            return Ok(());
        }
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, rest),
        };
        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            let decode = |s| percent_decode(s, false).ok_or_else(|| bad("user or password"));
            if !user.is_empty() {
                self.server = take(&mut self.server).set_username(decode(user)?);
            }
            if let Some(password) = password {
                self.server = take(&mut self.server).set_password(decode(password)?);
            }
        }
        let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
        let default_port = match kind {
            "sentinel" => DEFAULT_SENTINEL_PORT,
            _ => DEFAULT_PORT,
        };
        let hosts = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| host_port(h, default_port).ok_or_else(|| bad("host")))
            .collect::<Result<Vec<_>>>()?;
        if hosts.is_empty() {
            return Err(config(match kind {
                "sentinel" => format!(
                    "no sentinel in {shown} (expected \
                     redis+sentinel://host:port,host:port/SERVICE/DB)"
                ),
                _ => format!("no host in {shown}"),
            }));
        }
        let database = |db: &str| match db {
            "" => Ok(0),
            d => d
                .parse::<u32>()
                .map(i64::from)
                .map_err(|_| config(format!("bad database {d:?} in {shown} (a number, e.g. /0)"))),
        };
        self.endpoint = match kind {
            "cluster" if matches!(path, "" | "0") => Endpoint::Cluster(hosts),
            "cluster" => {
                return Err(config(format!(
                    "Redis Cluster has only database 0; unexpected {path:?} in {shown}"
                )));
            }
            "sentinel" => {
                let mut parts = path.split('/');
                let service = parts.next().unwrap_or("");
                let db = parts.next().unwrap_or("");
                if service.is_empty() || parts.any(|p| !p.is_empty()) {
                    return Err(config(format!(
                        "a sentinel URL names the service and optionally the database: \
                         redis+sentinel://host:port,.../SERVICE/DB, not {shown}"
                    )));
                }
                if !service
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
                {
                    return Err(config(format!(
                        "bad sentinel service name {service:?} in {shown} (letters, digits, \
                         -_.: only)"
                    )));
                }
                self.server = take(&mut self.server).set_db(database(db)?);
                let service = service.to_owned();
                Endpoint::Sentinel {
                    sentinels: hosts,
                    service,
                    auth,
                }
            }
            _ if hosts.len() == 1 => {
                self.server = take(&mut self.server).set_db(database(path.trim_matches('/'))?);
                let (host, port) = hosts.into_iter().next().unwrap_or_default();
                Endpoint::Server(self.addr(host, port))
            }
            _ => return Err(bad("host (one server; a Cluster is redis+cluster://)")),
        };
        Ok(())
    }

    /// Speaks RESP3, which the near-cache's invalidation messages need; an explicit
    /// `protocol=resp2` is a configuration error.
    pub(crate) fn resp3_for_cache(&mut self) -> Result<()> {
        let resp3 = self.server.protocol().supports_resp3();
        if self.protocol_given && !resp3 {
            let message = "cache=N (the near-cache) needs RESP3: drop protocol=resp2";
            return Err(Error::new(ErrorKind::Config, message));
        }
        self.server = take(&mut self.server).set_protocol(ProtocolVersion::RESP3);
        Ok(())
    }

    /// redis-rs's address of the server at `host:port`, over TLS if the URL says so.
    pub(crate) fn addr(&self, host: String, port: u16) -> ConnectionAddr {
        match self.tls {
            true => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: self.tls_options.insecure_skip_verify,
                tls_params: None,
            },
            false => ConnectionAddr::Tcp(host, port),
        }
    }
}

/// Refuses a TLS URL (`tls`) in a build without TLS (`built` false), naming the feature.
fn refuse_tls_unless_built(tls: bool, built: bool, shown: &str) -> Result<()> {
    if tls && !built {
        return Err(config(format!(
            "{shown} asks for TLS: build cloakroom-redis with its `tls` feature \
             (the `cloakroom` crate: `redis-tls`)"
        )));
    }
    Ok(())
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_port(h: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = match h.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            let port = match after {
                "" => None,
                a => Some(a.strip_prefix(':')?),
            };
            (host, port)
        }
        None => match h.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        },
    };
    let port = port.map_or(Some(default_port), |p| p.parse().ok())?;
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// The options both Redis stores take, from their builder or from the URL's query.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct StoreOptions {
    /// The prefix of the keys the store writes.
    pub(crate) prefix: Option<String>,
    /// The bound on every command, connecting included.
    pub(crate) timeout: Option<Duration>,
    /// How many connections (what they are is the store's).
    pub(crate) connections: Option<usize>,
    /// Replicas every write must reach (`WAIT`; URL only, `wait=N`).
    pub(crate) wait: Option<u32>,
    /// Records the near-cache keeps (`cache=N`; 0: no near-cache).
    pub(crate) cache: Option<usize>,
    /// The near-cache's staleness bound (`cache_max_stale_ms`).
    pub(crate) cache_max_stale: Option<Duration>,
    /// Events the event log keeps (`events=N`; 0: no log).
    pub(crate) events: Option<usize>,
}

/// The options in force.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The prefix of the keys the store writes.
    pub prefix: String,
    /// The bound on every command, connecting included.
    pub command_timeout: Duration,
    /// How many connections the store opens.
    pub connections: usize,
    pub(crate) wait: u32,
    pub(crate) cache: usize,
    pub(crate) cache_max_stale: Duration,
    pub(crate) events: usize,
}

impl Settings {
    /// The first option given that only [`RedisStore`](crate::RedisStore) implements
    /// (`wait`, `cache`: the near-cache, `events`: the event log), by name; a store that
    /// does not must refuse it.
    pub fn native_only(&self) -> Option<&'static str> {
        match (self.wait, self.cache, self.events) {
            (1.., _, _) => Some("wait"),
            (_, 1.., _) => Some("cache"),
            (_, _, 1..) => Some("events"),
            _ => None,
        }
    }
}

impl StoreOptions {
    /// These options, then `fallback`'s for what these leave out (the builder's over the
    /// URL's), then the defaults; a zero timeout, connection count or staleness bound is
    /// refused.
    pub(crate) fn resolve(self, fallback: &StoreOptions, connections: usize) -> Result<Settings> {
        let fallback = fallback.clone();
        let settings = Settings {
            prefix: self
                .prefix
                .or(fallback.prefix)
                .unwrap_or_else(|| crate::DEFAULT_PREFIX.to_owned()),
            command_timeout: self
                .timeout
                .or(fallback.timeout)
                .unwrap_or(crate::DEFAULT_COMMAND_TIMEOUT),
            connections: self
                .connections
                .or(fallback.connections)
                .unwrap_or(connections),
            wait: self.wait.or(fallback.wait).unwrap_or(0),
            cache: self.cache.or(fallback.cache).unwrap_or(0),
            cache_max_stale: self
                .cache_max_stale
                .or(fallback.cache_max_stale)
                .unwrap_or(crate::DEFAULT_CACHE_MAX_STALE),
            events: self.events.or(fallback.events).unwrap_or(0),
        };
        let refused = if settings.command_timeout.is_zero() {
            "the command timeout must not be zero"
        } else if settings.connections == 0 {
            "at least one connection is needed"
        } else if settings.cache_max_stale.is_zero() {
            "the near-cache's staleness bound must not be zero"
        } else {
            return Ok(settings);
        };
        Err(Error::new(ErrorKind::Config, refused))
    }
}

/// Refuses a URL with a fragment (`#`, even empty), before anything else reads it: redis-rs
/// takes `#insecure` for "do not verify the server's TLS certificate", which only
/// `insecure_skip_verify=true` may say (it warns). Every Redis URL passes here first
/// ([`RedisUrl::parse`], and the parsers of stores built on
/// [`connection`](crate::connection)).
pub fn refuse_fragment(url: &str) -> Result<()> {
    if !url.contains('#') {
        return Ok(());
    }
    Err(config(format!(
        "a Redis URL takes no fragment (`#...`): {} (to skip TLS certificate checks, for \
         development only, say insecure_skip_verify=true; a `#` in a password is written %23)",
        redact(url)
    )))
}

/// The URL with any password replaced by `***`, for messages and Debug output (the core's
/// [`redact_url`](cloakroom_core::redact::redact_url), shared with the `cloakroom` command).
pub fn redact(url: &str) -> String {
    cloakroom_core::redact::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "tls")]
    fn parse(url: &str) -> RedisUrl {
        RedisUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn refused(url: &str) -> String {
        let err = RedisUrl::parse(url).expect_err(url);
        assert_eq!(err.kind(), ErrorKind::Config, "{url}");
        err.to_string()
    }

    #[cfg(feature = "tls")]
    #[test]
    fn parses_servers() {
        let u = parse("rediss://u:p%40w@h:1/3");
        let Endpoint::Server(ConnectionAddr::TcpTls {
            host,
            port: 1,
            insecure: false,
            ..
        }) = &u.endpoint
        else {
            panic!("{:?}", u.endpoint);
        };
        assert_eq!(host, "h");
        assert_eq!(u.server.db(), 3);
        assert_eq!(u.server.username(), Some("u"));
        assert_eq!(u.server.password(), Some("p@w"));
        assert_eq!(u.server.protocol(), ProtocolVersion::RESP2);
        assert_eq!(u.to_string(), "rediss://u:***@h:1/3");
        let u = parse("redis://[::1]/0?protocol=resp3");
        assert!(
            matches!(&u.endpoint, Endpoint::Server(ConnectionAddr::Tcp(h, 6379)) if h == "::1")
        );
        assert!(u.server.protocol().supports_resp3());
        let u = parse("rediss://h:1?insecure_skip_verify=true");
        assert!(matches!(
            u.endpoint,
            Endpoint::Server(ConnectionAddr::TcpTls { insecure: true, .. })
        ));
        let u = parse("redis+unix:///run/redis.sock?db=2&pass=pw");
        assert!(matches!(
            u.endpoint,
            Endpoint::Server(ConnectionAddr::Unix(_))
        ));
        assert_eq!((u.server.db(), u.server.password()), (2, Some("pw")));
        let u = parse("redis+cluster://u:p@a:1,b:2/");
        assert!(matches!(&u.endpoint, Endpoint::Cluster(nodes) if nodes.len() == 2));
        assert!(parse("rediss+cluster://a:1,b:2").tls);
    }

    #[cfg(feature = "tls")]
    #[test]
    fn takes_the_store_options() {
        let u = parse("redis://h:1/2?prefix=app%3Ax+y&timeout_ms=250&protocol=3&connections=4");
        let o = &u.options;
        assert_eq!(o.prefix.as_deref(), Some("app:x y"));
        assert_eq!(o.timeout, Some(Duration::from_millis(250)));
        assert_eq!(o.connections, Some(4));
        assert!(u.protocol_given && u.server.protocol().supports_resp3());
        let u = parse(
            "rediss://u:p@h/0?max_connections=3&ca=%2Fetc%2Fca.pem&cert=/c.pem&key=/k.pem\
             &insecure_skip_verify=true&wait=1&cache=10&cache_max_stale_ms=50",
        );
        assert_eq!(u.options.connections, Some(3));
        let t = &u.tls_options;
        assert_eq!(t.ca.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(t.cert.as_deref(), Some("/c.pem"));
        assert_eq!(t.key.as_deref(), Some("/k.pem"));
        assert!(t.insecure_skip_verify);
        let s = StoreOptions::default().resolve(&u.options, 1).unwrap();
        assert_eq!((s.wait, s.cache), (1, 10));
        assert_eq!(s.native_only(), Some("wait"));
        let s = StoreOptions::default()
            .resolve(&parse("redis://h/0?events=100000").options, 1)
            .unwrap();
        assert_eq!((s.events, s.native_only()), (100_000, Some("events")));
        assert!(RedisUrl::parse("redis://h/0?events=many").is_err());
        let s = StoreOptions::default()
            .resolve(&parse("redis://h").options, 7)
            .unwrap();
        assert_eq!(s.events, 0);
        assert_eq!(
            (s.prefix.as_str(), s.connections),
            (crate::DEFAULT_PREFIX, 7)
        );
        assert_eq!(s.native_only(), None);
        for zero in ["redis://h?timeout_ms=0", "redis://h?connections=0"] {
            let err = StoreOptions::default().resolve(&parse(zero).options, 1);
            assert_eq!(err.unwrap_err().kind(), ErrorKind::Config, "{zero}");
        }
    }

    /// A TLS URL in a build without the `tls` feature is refused, naming the feature (the
    /// password redacted); a plain URL, or any URL in a build with it, passes.
    #[test]
    fn a_tls_url_needs_the_tls_feature() {
        let err = refuse_tls_unless_built(true, false, "rediss://u:***@h").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.to_string().contains("`tls` feature"), "{err}");
        assert!(err.to_string().contains("rediss://u:***@h"), "{err}");
        assert!(refuse_tls_unless_built(false, false, "redis://h").is_ok());
        assert!(refuse_tls_unless_built(true, true, "rediss://h").is_ok());
        #[cfg(not(feature = "tls"))]
        assert!(RedisUrl::parse("rediss://h").is_err());
    }

    #[test]
    fn refuses_bad_urls() {
        for bad in [
            "http://x",
            "x",
            "redis://",
            "redis://a:1,b:2",
            "redis://h/x",
            "redis://h?protocol=4",
            "redis+cluster://",
            "redis+cluster://a:1/3",
            "redis+cluster://a:1/?bogus=1",
            "redis://h?timeout_ms=x",
            "redis://h?connections=-1",
            "redis://h?prefix=%zz",
            "redis://h?bogus=1",
            "redis://h?db=1",
            "rediss://h?cafile=/x",
            "rediss://h?insecure_skip_verify=maybe",
            "redis://h?insecure_skip_verify=true",
            "redis://h?ca=/x",
            "redis://h?sentinel_password=x",
            "redis://h/0#insecure",
        ] {
            refused(bad);
        }
        // A refused option is named, its value (maybe a password) never shown.
        let err = refused("redis+cluster://a:1/?pass=s3cret");
        assert!(!err.contains("s3cret") && err.contains("\"pass\""), "{err}");
        let err = refused("redis://u:pa?ss@host");
        assert!(err.contains("name not shown"), "{err}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn reads_the_certificates_when_asked() {
        let err = parse("rediss://h?cert=/nonexistent/c.pem").certificates();
        assert!(
            err.err()
                .unwrap()
                .to_string()
                .contains("cert=PATH and ?key=PATH")
        );
        for url in [
            "rediss://h?ca=/nonexistent/ca.pem",
            "rediss+cluster://a:1?ca=/nonexistent/ca.pem",
        ] {
            let err = parse(url).certificates().err().unwrap();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        }
        assert!(parse("rediss://h").certificates().unwrap().is_none());
    }

    #[cfg(feature = "tls")]
    #[test]
    fn parses_sentinel_urls() {
        let u = parse("redis+sentinel://u:p@a:1,b:2,[::1]:3,c/mymaster/2?protocol=resp3");
        let Endpoint::Sentinel {
            sentinels,
            service,
            auth,
        } = &u.endpoint
        else {
            panic!("{:?}", u.endpoint);
        };
        let names: Vec<String> = sentinels.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        assert_eq!(names, ["a:1", "b:2", "::1:3", "c:26379"]);
        assert_eq!(service, "mymaster");
        assert_eq!((u.server.db(), u.server.username()), (2, Some("u")));
        // The sentinels are asked without the servers' credentials.
        assert_eq!((auth.username(), auth.password()), (None, None));
        let u = parse("rediss+sentinel://a:1/svc?sentinel_username=sen&sentinel_password=p%40ss+w");
        let Endpoint::Sentinel { auth, .. } = &u.endpoint else {
            panic!("sentinel");
        };
        assert_eq!(
            (auth.username(), auth.password()),
            (Some("sen"), Some("p@ss w"))
        );
        assert_eq!(u.server.password(), None);
        assert!(u.tls);
        for bad in [
            "/svc/0",
            " , /svc",
            "a:1",
            "a:1/",
            "a:1/svc/x",
            "a:1/svc/0/extra",
            "a:1/sv c",
            "a:1/svc?bogus=1",
            "a:1/svc?sentinel_username=u",
            "a:1/svc?sentinel_password=",
            "a:1/svc?sentinel_password=%zz",
            "a:1/svc?sentinel_username=&sentinel_password=p",
        ] {
            refused(&format!("redis+sentinel://{bad}"));
        }
        let err = refused("redis+sentinel://a:1/svc?pass=hunter2");
        assert!(
            err.contains("\"pass\"") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://secret@h:1"), "redis://***@h:1");
        assert_eq!(
            redact("redis+cluster://:pw@a:1,b:2"),
            "redis+cluster://:***@a:1,b:2"
        );
        assert_eq!(
            redact("redis+sentinel://a:1/svc/0?sentinel_username=u&sentinel_password=secret"),
            "redis+sentinel://a:1/svc/0?sentinel_username=u&sentinel_password=***"
        );
    }
}
