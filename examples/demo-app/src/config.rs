//! What the demo is told: [`DemoConfig`] (where things live, how it presents itself) and
//! [`Flags`], the command line both demo binaries share (each flag also an environment
//! variable).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::hosts;
use crate::limits::{self, Limits};

/// Where the demo keeps things and how it presents itself; see `cloakroom-demo --help`.
#[derive(Clone)]
pub struct DemoConfig {
    /// Session store URL, as [`cloakroom::store::open`] takes it (`memory://`,
    /// `sqlite://path.db`, ...).
    pub store: String,
    /// The accounts database: `sqlite://relative.db`, `sqlite:///absolute.db` or
    /// `sqlite::memory:` (a `users` table; may be the session store's file).
    pub users: String,
    /// Signing keys, comma-separated standard base64 of at least 32 bytes each, the first
    /// signs. `None`: a key generated once and kept in a file beside the users database
    /// (`<database>.keys`, mode 0600), so a restart keeps everyone logged in.
    pub keys: Option<String>,
    /// The public origin (`scheme://host[:port]`). Session cookies are `Secure` unless it is
    /// `http://`.
    pub origin: String,
    /// Tornado's `cookie_secret`: required with a `pycket+redis://` store (it signs the
    /// `PYCKET_ID` cookie), unused otherwise.
    pub tornado_secret: Option<String>,
    /// More `Host` header values to answer for besides the origin's (`host` for any port,
    /// `host:port`); any other `Host` gets 421 (DNS rebinding). See `--allowed-host`.
    pub allowed_hosts: Vec<String>,
    /// Whether the app serves `/metrics` itself. The binary turns it off unless it listens
    /// on loopback for a loopback origin, not behind a trusted proxy, and without a separate
    /// metrics listener (`--metrics-addr`); see [`Flags::metrics_on_main`].
    pub metrics_on_main: bool,
    /// Reverse proxies (CIDR networks or addresses) whose `X-Forwarded-For` / `Forwarded`
    /// headers name the client; see `--trusted-proxy`. Empty: the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
    /// Session data sealed at rest ([`SessionSettings::with_sealed_data`](cloakroom::SessionSettings::with_sealed_data));
    /// see `--seal-session-data`.
    pub seal_session_data: bool,
    /// How recent a login must be before "log out all other devices", changing the password
    /// or deleting the account; older ones are asked for the password again. Default 5
    /// minutes; see `--recent-login-window`.
    pub recent_login_window: Duration,
    /// Device-bound sessions (DBSC); see `--dbsc`.
    pub dbsc: DbscMode,
    /// How long a DBSC bound cookie lives; see `--dbsc-bound-lifetime`.
    pub dbsc_bound_lifetime: Duration,
    /// Most sessions one account may hold at once; `None`: no limit. See
    /// `--max-sessions-per-user`.
    pub max_sessions_per_user: Option<usize>,
    /// What a login past that limit does; see `--session-limit-policy`.
    pub session_limit_policy: SessionLimitPolicy,
}

/// What a login past `--max-sessions-per-user` does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SessionLimitPolicy {
    /// End the account's least recently seen session; its browser is told why.
    #[default]
    EndOldest,
    /// Refuse the new login with a message on the login page.
    Refuse,
}

impl SessionLimitPolicy {
    /// The library's policy.
    pub fn policy(self) -> cloakroom::store::LimitPolicy {
        match self {
            SessionLimitPolicy::EndOldest => cloakroom::store::LimitPolicy::EndLeastRecentlySeen,
            SessionLimitPolicy::Refuse => cloakroom::store::LimitPolicy::RefuseNew,
        }
    }
}

/// `--dbsc`: whether logins offer device binding and what the bound routes need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DbscMode {
    /// No DBSC (the default).
    #[default]
    Off,
    /// Logins offer registration; a session that registered needs its fresh bound cookie on
    /// the bound routes, others pass.
    Optional,
    /// As `optional`, and a logged-in session that never registered is refused on the bound
    /// routes once the 30-second grace after login is over.
    Required,
}

/// The default of [`DemoConfig::recent_login_window`].
pub const DEFAULT_RECENT_LOGIN_WINDOW: Duration = Duration::from_secs(5 * 60);

impl DemoConfig {
    /// A configuration with sessions in `store` and accounts in `users`, the origin
    /// `http://127.0.0.1:8000` and keys from the key file.
    pub fn new(store: impl Into<String>, users: impl Into<String>) -> Self {
        DemoConfig {
            store: store.into(),
            users: users.into(),
            keys: None,
            origin: "http://127.0.0.1:8000".into(),
            tornado_secret: None,
            allowed_hosts: Vec::new(),
            metrics_on_main: true,
            trusted_proxies: Vec::new(),
            seal_session_data: false,
            recent_login_window: DEFAULT_RECENT_LOGIN_WINDOW,
            dbsc: DbscMode::Off,
            dbsc_bound_lifetime: Duration::from_secs(600),
            max_sessions_per_user: None,
            session_limit_policy: SessionLimitPolicy::EndOldest,
        }
    }
}

impl fmt::Debug for DemoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "REDACTED");
        // Store URLs may carry passwords (redis://:secret@host): print the scheme only.
        let scheme = |url: &str| url.split(':').next().unwrap_or_default().to_owned();
        f.debug_struct("DemoConfig")
            .field("store", &format_args!("{}:…", scheme(&self.store)))
            .field("users", &self.users)
            .field("keys", &redacted(&self.keys))
            .field("origin", &self.origin)
            .field("tornado_secret", &redacted(&self.tornado_secret))
            .field("allowed_hosts", &self.allowed_hosts)
            .field("metrics_on_main", &self.metrics_on_main)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("seal_session_data", &self.seal_session_data)
            .field("recent_login_window", &self.recent_login_window)
            .field("dbsc", &self.dbsc)
            .field("dbsc_bound_lifetime", &self.dbsc_bound_lifetime)
            .field("max_sessions_per_user", &self.max_sessions_per_user)
            .field("session_limit_policy", &self.session_limit_policy)
            .finish()
    }
}

/// Whether `origin` is a valid `http(s)://host[:port]` origin, and whether it is HTTPS.
pub(crate) fn origin_is_https(origin: &str) -> anyhow::Result<bool> {
    let origin = origin.strip_suffix('/').unwrap_or(origin);
    let (https, host) = if let Some(host) = origin.strip_prefix("https://") {
        (true, host)
    } else if let Some(host) = origin.strip_prefix("http://") {
        (false, host)
    } else {
        anyhow::bail!("origin {origin:?} must start with http:// or https://");
    };
    if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
        anyhow::bail!("origin {origin:?} must be scheme://host[:port], without a path");
    }
    Ok(https)
}

/// Whether the store is pycket's; if so, the Tornado secret it needs.
pub(crate) fn pycket_secret(config: &DemoConfig) -> anyhow::Result<Option<String>> {
    let scheme = config
        .store
        .trim()
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase());
    // pycket+redis://, pycket+rediss://, pycket+redis+sentinel://, pycket+rediss+sentinel://
    if !scheme.as_deref().is_some_and(|s| s.starts_with("pycket+")) {
        if config.tornado_secret.is_some() {
            tracing::warn!("--tornado-secret is only used with a pycket+redis:// store; ignored");
        }
        return Ok(None);
    }
    match config.tornado_secret.as_deref() {
        Some(secret) if !secret.is_empty() => Ok(Some(secret.to_owned())),
        _ => anyhow::bail!(
            "--store pycket+redis://... needs --tornado-secret (or CLOAKROOM_TORNADO_SECRET): \
             the Tornado app's cookie_secret, which signs pycket's PYCKET_ID cookie"
        ),
    }
}

/// Default cap on concurrent connections (lowered to fit `ulimit -n` when that is smaller).
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Connections the metrics listener serves at once.
pub const METRICS_MAX_CONNECTIONS: usize = 16;

/// The demo's command line, shared by both binaries (`#[command(flatten)]` it into the
/// binary's own `Parser`, which names the program).
#[derive(clap::Args)]
pub struct Flags {
    /// Address to listen on.
    #[arg(long, env = "CLOAKROOM_ADDR", default_value = "127.0.0.1:8000")]
    pub addr: SocketAddr,
    /// Session store URL: memory://, sqlite://relative.db, sqlite:///absolute.db,
    /// redis://host:port/db, redis+cluster://host:port,host:port,
    /// redis+sentinel://host:port,host:port/SERVICE/db (rediss://... over TLS), or
    /// pycket+redis://host:port/db?notifications_db=N (also pycket+rediss://,
    /// pycket+redis+sentinel://host:port,host:port/SERVICE/db) to share sessions with a
    /// Tornado + pycket app (needs --tornado-secret).
    #[arg(
        long,
        env = "CLOAKROOM_STORE",
        hide_env_values = true,
        default_value = "sqlite://cloakroom-demo.db"
    )]
    pub store: String,
    /// Where accounts live: a `users` table in this SQLite database, whatever the store.
    #[arg(
        long,
        env = "CLOAKROOM_USERS",
        hide_env_values = true,
        default_value = "sqlite://cloakroom-demo.db"
    )]
    pub users: String,
    /// Signing keys: comma-separated standard base64, at least 32 bytes each, the first
    /// signs. Default: one generated once and kept in `<users database>.keys`.
    #[arg(long, env = "CLOAKROOM_KEYS", hide_env_values = true)]
    pub keys: Option<String>,
    /// The public origin, `scheme://host[:port]`. Default: http:// and the listening address.
    /// Session cookies are Secure unless it is http://. Over https:// the session cookie is
    /// __Host-session (no subdomain or other path can plant one); over plain http://, as on
    /// loopback, browsers refuse __Host- cookies (they must be Secure), so it is `session`.
    #[arg(long, env = "CLOAKROOM_ORIGIN")]
    pub origin: Option<String>,
    /// Tornado's cookie_secret, which signs pycket's PYCKET_ID cookie: required with a
    /// pycket+redis:// store.
    #[arg(long, env = "CLOAKROOM_TORNADO_SECRET", hide_env_values = true)]
    pub tornado_secret: Option<String>,
    /// More Host header values to answer for besides --origin's `host[:port]` (and, for a
    /// loopback origin, localhost): `host` (any port) or `host:port`; repeatable or
    /// comma-separated. Any other Host gets 421 (DNS rebinding); /healthz answers any Host.
    #[arg(
        long = "allowed-host",
        env = "CLOAKROOM_ALLOWED_HOSTS",
        value_name = "HOST[:PORT]",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Serve /metrics on this address only (a second listener). Without it, /metrics is
    /// served on --addr when that is a loopback address, --origin a loopback origin and no
    /// --trusted-proxy is given (a loopback listener behind a reverse proxy serves whoever
    /// reaches the proxy), and not at all otherwise.
    #[arg(long, env = "CLOAKROOM_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// A reverse proxy in front of the demo: a CIDR network (10.0.0.0/8, fd00::/8) or an
    /// address; repeatable or comma-separated. A request whose TCP peer is one of them is
    /// from the rightmost X-Forwarded-For address (or, without that header, Forwarded: for=)
    /// that is not itself a trusted proxy; the login throttle counts failures per that
    /// address. From any other peer these headers are ignored. The proxy must append to
    /// the header it uses and drop the other one if clients could send it.
    #[arg(
        long = "trusted-proxy",
        env = "CLOAKROOM_TRUSTED_PROXY",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,
    /// Time a client has to send a complete request head (slowloris), counted from the
    /// connection opening and, on a keep-alive connection, from the previous response.
    #[arg(long, env = "CLOAKROOM_HEADER_TIMEOUT", default_value = "10s", value_parser = limits::parse_duration)]
    pub header_timeout: Duration,
    /// Time an idle keep-alive connection is kept. Default: --header-timeout. (The axum demo:
    /// hyper times this and the header read with one timer, so the shorter of the two
    /// timeouts bounds both.)
    #[arg(long, env = "CLOAKROOM_IDLE_TIMEOUT", value_parser = limits::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Most connections served at once; more get 503 until idle ones time out. Default: 512,
    /// or less to fit the open-file limit (ulimit -n) with room to spare.
    #[arg(long, env = "CLOAKROOM_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Largest request body (B, KiB, MiB): more gets 413.
    #[arg(long, env = "CLOAKROOM_MAX_BODY", default_value = "64KiB", value_parser = limits::parse_size)]
    pub max_body: usize,
    /// Time a request has from its complete head to its response, reading the body included
    /// (slow bodies): past it, 408 and the connection is closed.
    #[arg(long, env = "CLOAKROOM_BODY_TIMEOUT", default_value = "30s", value_parser = limits::parse_duration)]
    pub body_timeout: Duration,
    /// Seal session data at rest: each value encrypted under a key derived from the session
    /// id, which the store never sees, so a copy of the store does not reveal the notes.
    /// Users, times and devices stay readable. Not with a pycket+redis:// store (Tornado
    /// reads those values).
    #[arg(long, env = "CLOAKROOM_SEAL_SESSION_DATA")]
    pub seal_session_data: bool,
    /// An OpenTelemetry collector's OTLP/HTTP base URL on loopback (http://127.0.0.1:4318):
    /// the metrics of /metrics are also pushed, as OTLP protobuf, to URL/v1/metrics every
    /// --otlp-interval and once more at a stop. Off by default.
    #[arg(long, env = "CLOAKROOM_OTLP_ENDPOINT", value_name = "URL", value_parser = otlp_metrics_url)]
    pub otlp_endpoint: Option<String>,
    /// How often the metrics are pushed to --otlp-endpoint (more than 0).
    #[arg(long, env = "CLOAKROOM_OTLP_INTERVAL", default_value = "10s", value_parser = otlp_interval)]
    pub otlp_interval: Duration,
    /// How recent a login must be before "log out all other devices", changing the password
    /// or deleting the account (older: the password is asked again), such as 5m or 30s.
    #[arg(long, env = "CLOAKROOM_RECENT_LOGIN_WINDOW", default_value = "5m", value_parser = limits::parse_duration)]
    pub recent_login_window: Duration,
    /// Device Bound Session Credentials (a W3C draft; Chromium): off, optional (browsers
    /// that can bind the session to a device key do, and then a copied session cookie alone
    /// no longer opens the pages) or required (logged-in pages need a device-bound session).
    /// Needs https:// or a localhost origin in the browser.
    #[arg(long, env = "CLOAKROOM_DBSC", value_enum, default_value = "off")]
    pub dbsc: DbscMode,
    /// How long a DBSC bound cookie lives before the browser must sign a refresh (e.g. 10m,
    /// 30s): how long a stolen bound cookie would work.
    #[arg(long, env = "CLOAKROOM_DBSC_BOUND_LIFETIME", default_value = "10m", value_parser = limits::parse_duration)]
    pub dbsc_bound_lifetime: Duration,
    /// Most sessions (devices) one account may be logged in on at once; at least 1. Default:
    /// no limit. The store enforces it atomically, also against logins racing each other.
    /// Not with a pycket+redis:// store.
    #[arg(long, env = "CLOAKROOM_MAX_SESSIONS_PER_USER", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sessions_per_user: Option<u32>,
    /// What a login past --max-sessions-per-user does: end-oldest ends the account's least
    /// recently seen session (that browser is told why on its next page), refuse shows a
    /// message on the login page instead.
    #[arg(
        long,
        env = "CLOAKROOM_SESSION_LIMIT_POLICY",
        value_enum,
        default_value = "end-oldest"
    )]
    pub session_limit_policy: SessionLimitPolicy,
}

/// An export interval: a duration above 0 (the SDK would take 0 for its own default).
fn otlp_interval(text: &str) -> Result<Duration, String> {
    let interval = limits::parse_duration(text)?;
    if interval.is_zero() {
        return Err("the interval must be more than 0".into());
    }
    Ok(interval)
}

/// The metrics URL (`URL/v1/metrics`) of an OTLP/HTTP base URL: `http://`, a loopback host
/// (`localhost`, 127.0.0.0/8, `[::1]`), an optional port and path, no query.
fn otlp_metrics_url(url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("an http:// URL is needed (OTLP/HTTP on loopback)".into());
    }
    let host = uri.host().ok_or("the URL has no host")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(format!("{host} is not a loopback host"));
    }
    if uri.query().is_some() {
        return Err("the URL must have no query".into());
    }
    Ok(format!("{}/v1/metrics", url.trim_end_matches('/')))
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The store URL, keys and Tornado secret may be secret: shown through `DemoConfig`.
        f.debug_struct("Flags")
            .field("addr", &self.addr)
            .field("config", &self.config(self.addr, false))
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl Flags {
    /// The connection limits these flags ask for, the cap fitted to the open-file limit.
    ///
    /// # Errors
    /// A connection cap of 0 or one that does not fit `ulimit -n`.
    pub fn limits(&self) -> anyhow::Result<Limits> {
        let reserved = limits::RESERVED_FDS + METRICS_MAX_CONNECTIONS as u64;
        let max_connections = limits::connection_cap(
            self.max_connections,
            DEFAULT_MAX_CONNECTIONS,
            limits::fd_limit(),
            reserved,
        )?;
        Ok(Limits {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout.unwrap_or(self.header_timeout),
            max_connections,
            max_body: self.max_body,
            body_timeout: self.body_timeout,
        })
    }

    /// Whether the main listener, bound to `addr`, serves `/metrics`: without
    /// `--metrics-addr`, only when it listens on loopback for a loopback origin and no
    /// `--trusted-proxy` is given. A public origin or a trusted proxy means a reverse proxy
    /// forwards the world to this loopback listener. Logs why when `/metrics` is not served
    /// at all.
    pub fn metrics_on_main(&self, addr: SocketAddr) -> bool {
        if self.metrics_addr.is_some() {
            return false;
        }
        let why_not = if !addr.ip().is_loopback() {
            Some("listening beyond loopback")
        } else if !hosts::origin_is_loopback(&self.origin(addr)) {
            Some("the origin is not a loopback origin")
        } else if !self.trusted_proxies.is_empty() {
            Some("behind a trusted proxy")
        } else {
            None
        };
        if let Some(why) = why_not {
            tracing::info!("/metrics is not served: {why}; see --metrics-addr");
        }
        why_not.is_none()
    }

    /// `--origin`, or http:// and the listening address.
    fn origin(&self, addr: SocketAddr) -> String {
        self.origin
            .clone()
            .unwrap_or_else(|| format!("http://{addr}"))
    }

    /// The app's configuration, for a server listening on `addr` (the default origin) that
    /// serves `/metrics` itself or not.
    pub fn config(&self, addr: SocketAddr, metrics_on_main: bool) -> DemoConfig {
        DemoConfig {
            store: self.store.clone(),
            users: self.users.clone(),
            keys: self.keys.clone(),
            origin: self.origin(addr),
            tornado_secret: self.tornado_secret.clone(),
            allowed_hosts: self.allowed_hosts.clone(),
            metrics_on_main,
            trusted_proxies: self.trusted_proxies.clone(),
            seal_session_data: self.seal_session_data,
            recent_login_window: self.recent_login_window,
            dbsc: self.dbsc,
            dbsc_bound_lifetime: self.dbsc_bound_lifetime,
            max_sessions_per_user: self.max_sessions_per_user.map(|n| n as usize),
            session_limit_policy: self.session_limit_policy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        assert!(!origin_is_https("http://127.0.0.1:8000").unwrap());
        assert!(origin_is_https("https://example.com/").unwrap());
        assert!(origin_is_https("ftp://example.com").is_err());
        assert!(origin_is_https("https://example.com/app").is_err());
        assert!(origin_is_https("https://").is_err());
    }

    #[test]
    fn pycket_stores_need_the_tornado_secret() {
        let mut c = DemoConfig::new("pycket+redis://127.0.0.1:6379/5", "sqlite::memory:");
        let err = pycket_secret(&c).unwrap_err().to_string();
        assert!(err.contains("--tornado-secret"), "{err}");
        c.tornado_secret = Some(String::new());
        assert!(pycket_secret(&c).is_err());
        c.tornado_secret = Some("s3cret".into());
        assert_eq!(pycket_secret(&c).unwrap().as_deref(), Some("s3cret"));
        c.store = "PYCKET+REDIS://h/0".into();
        assert!(pycket_secret(&c).unwrap().is_some());
        // Every pycket form (TLS, Sentinel) pairs with Tornado's signed cookie.
        for store in [
            "pycket+rediss://h/0",
            "pycket+redis+sentinel://a:1,b:2/svc/5",
            "pycket+rediss+sentinel://a:1/svc",
        ] {
            c.store = store.into();
            c.tornado_secret = None;
            assert!(pycket_secret(&c).is_err(), "{store}");
            c.tornado_secret = Some("s3cret".into());
            assert!(pycket_secret(&c).unwrap().is_some(), "{store}");
        }
        c.store = "memory://".into();
        assert_eq!(pycket_secret(&c).unwrap(), None);
    }

    #[test]
    fn otlp_endpoints_are_loopback_http_urls() {
        assert_eq!(
            otlp_metrics_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/metrics"
        );
        assert_eq!(
            otlp_metrics_url("http://[::1]:4318/otlp/").unwrap(),
            "http://[::1]:4318/otlp/v1/metrics"
        );
        assert!(otlp_metrics_url("http://localhost:4318").is_ok());
        for bad in [
            "127.0.0.1:4318",
            "https://127.0.0.1:4318",
            "http://192.0.2.1:4318",
            "http://collector:4318",
            "http://127.0.0.1:4318/?x=1",
            "not a url",
        ] {
            assert!(otlp_metrics_url(bad).is_err(), "{bad}");
        }
        let f = flags(&["--otlp-endpoint", "http://127.0.0.1:4318"]);
        assert_eq!(
            f.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4318/v1/metrics")
        );
        assert_eq!(f.otlp_interval, Duration::from_secs(10));
        assert_eq!(flags(&[]).otlp_endpoint, None);
        assert_eq!(otlp_interval("200ms"), Ok(Duration::from_millis(200)));
        assert!(otlp_interval("0s").is_err());
    }

    /// The flags of `cloakroom-demo ARGS`.
    fn flags(args: &[&str]) -> Flags {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            flags: Flags,
        }
        let args = std::iter::once("cloakroom-demo").chain(args.iter().copied());
        <Cli as clap::Parser>::try_parse_from(args).unwrap().flags
    }

    #[test]
    fn metrics_are_on_the_main_listener_only_for_a_loopback_origin() {
        let local: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        assert!(flags(&[]).metrics_on_main(local));
        for origin in [
            "http://localhost:8000",
            "http://127.0.0.1:8000",
            "http://[::1]:8000/",
        ] {
            assert!(
                flags(&["--origin", origin]).metrics_on_main(local),
                "{origin}"
            );
        }
        // Behind a reverse proxy: a public origin, or a trusted proxy.
        for args in [
            &["--origin", "https://demo.example"][..],
            &["--origin", "http://10.0.0.5:8000"],
            &["--trusted-proxy", "127.0.0.1"],
            &["--metrics-addr", "127.0.0.1:9000"],
        ] {
            assert!(!flags(args).metrics_on_main(local), "{args:?}");
        }
        assert!(!flags(&[]).metrics_on_main("0.0.0.0:8000".parse().unwrap()));
        let proxies = flags(&[
            "--trusted-proxy",
            "10.0.0.0/8,fd00::/8",
            "--trusted-proxy",
            "::1",
        ]);
        assert_eq!(proxies.trusted_proxies, ["10.0.0.0/8", "fd00::/8", "::1"]);
    }

    #[test]
    fn debug_hides_secrets() {
        let mut c = DemoConfig::new("redis://:hunter2@h/0", "sqlite://u.db");
        c.keys = Some("c2VjcmV0".into());
        c.tornado_secret = Some("tornado-secret".into());
        let text = format!("{c:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("c2VjcmV0"),
            "{text}"
        );
        assert!(!text.contains("tornado-secret"), "{text}");
    }
}
