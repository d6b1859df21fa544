//! The options a Redis URL carries besides the address: the store's own (`prefix`,
//! `timeout_ms`, `connections`, `wait`), the TLS files (`ca`, `cert`, `key`,
//! `insecure_skip_verify`), and the few that go on to redis-rs; taken out of the URL and
//! checked before anything connects, so a bad option is an error at start-up.

use std::time::Duration;

use cloakroom_core::store::{Error, ErrorKind, Result};

use redis::{ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, RedisError, TlsCertificates};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Query parameters that go on to redis-rs (everything else is the store's or refused).
const REDIS_RS_OPTIONS: [&str; 4] = ["protocol", "db", "user", "pass"];

/// Query parameters of a Sentinel URL only (the sentinels' own credentials), checked by
/// [`Sentinel::parse`](crate::sentinel::Sentinel::parse).
const SENTINEL_OPTIONS: [&str; 2] = ["sentinel_username", "sentinel_password"];

/// The store's own query parameters.
const STORE_OPTIONS: [&str; 11] = [
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
];

/// A configuration error with `message`.
pub(crate) fn config(message: String) -> Error {
    Error::new(ErrorKind::Config, message)
}

/// TLS settings from the URL's query (`ca`, `cert`, `key`, `insecure_skip_verify`): file
/// paths, read when the store opens.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TlsOptions {
    /// PEM file of the CA certificate(s) to trust instead of the system roots.
    pub(crate) ca: Option<String>,
    /// PEM file of the client certificate chain (mutual TLS).
    pub(crate) cert: Option<String>,
    /// PEM file of the client certificate's private key.
    pub(crate) key: Option<String>,
    /// Skip all verification of the server's certificate (development only).
    pub(crate) insecure_skip_verify: bool,
}

impl TlsOptions {
    fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.insecure_skip_verify
    }

    /// The certificates these options name, read and checked now (so a bad file is an error
    /// at start-up, not at the first request); `None` when none is named.
    fn certificates(&self) -> Result<Option<TlsCertificates>> {
        let read = |what: &str, path: &str| {
            std::fs::read(path)
                .map_err(|e| config(format!("cannot read the TLS {what} file {path:?}: {e}")))
        };
        let root_cert = match &self.ca {
            Some(path) => {
                let pem = read("CA", path)?;
                let certs = CertificateDer::pem_slice_iter(&pem)
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| config(format!("bad PEM in the TLS CA file {path:?}: {e}")))?;
                if certs.is_empty() {
                    return Err(config(format!(
                        "no certificate in the TLS CA file {path:?}"
                    )));
                }
                Some(pem)
            }
            None => None,
        };
        let client_tls = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let client_cert = read("certificate", cert)?;
                let chain = CertificateDer::pem_slice_iter(&client_cert)
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| {
                        config(format!("bad PEM in the TLS certificate file {cert:?}: {e}"))
                    })?;
                if chain.is_empty() {
                    return Err(config(format!(
                        "no certificate in the TLS certificate file {cert:?}"
                    )));
                }
                let client_key = read("key", key)?;
                PrivateKeyDer::from_pem_slice(&client_key).map_err(|e| {
                    config(format!(
                        "no usable private key in the TLS key file {key:?}: {e}"
                    ))
                })?;
                Some(ClientTlsConfig {
                    client_cert,
                    client_key,
                })
            }
            (None, None) => None,
            _ => {
                return Err(config(
                    "mutual TLS needs both ?cert=PATH and ?key=PATH".to_owned(),
                ));
            }
        };
        Ok(
            (root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates {
                client_tls,
                root_cert,
            }),
        )
    }

    /// Checks the options against the URL's scheme, installs the crypto provider and warns
    /// about a disabled verification. `Some(certificates)` for a TLS URL.
    pub(crate) fn prepare(&self, tls: bool, shown: &str) -> Result<Option<TlsCertificates>> {
        if !tls {
            if self.any() {
                return Err(config(format!(
                    "ca, cert, key and insecure_skip_verify need a TLS URL (`rediss` in the \
                     scheme: rediss://, rediss+cluster://, rediss+sentinel://), not {shown}"
                )));
            }
            return Ok(None);
        }
        // rustls needs a process-wide crypto provider; ring unless the application chose one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if self.insecure_skip_verify {
            tracing::warn!(
                url = %shown,
                "insecure_skip_verify=true: the Redis server's TLS certificate is NOT verified; \
                 anyone on the network path can impersonate it. Development only."
            );
        }
        self.certificates()
    }
}

/// A client for one server: RESP2 unless the URL asks for RESP3 (`protocol=resp3`; measured
/// slower in redis-rs 1.2 for the store's replies), TLS as the scheme and the options say.
pub(crate) fn standalone_client(url: &str, tls: &TlsOptions, shown: &str) -> Result<redis::Client> {
    let bad = |e: RedisError| config(format!("bad Redis URL {shown}")).with_source(e);
    let is_tls = url
        .get(..9)
        .is_some_and(|s| s.eq_ignore_ascii_case("rediss://"));
    let certificates = tls.prepare(is_tls, shown)?;
    let mut info = url.into_connection_info().map_err(bad)?;
    if tls.insecure_skip_verify {
        if let ConnectionAddr::TcpTls { host, port, .. } = info.addr().clone() {
            info = info.set_addr(ConnectionAddr::TcpTls {
                host,
                port,
                insecure: true,
                tls_params: None,
            });
        }
    }
    match certificates {
        Some(certs) => redis::Client::build_with_tls(info, certs)
            .map_err(|e| config(format!("bad TLS certificate or key for {shown}")).with_source(e)),
        None => redis::Client::open(info).map_err(bad),
    }
}

/// The options both Redis stores take, from their builder or from the URL's query
/// (`?prefix=app:&timeout_ms=500&connections=2&ca=/etc/redis/ca.pem`, taken out before the
/// URL goes to redis-rs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct StoreOptions {
    /// The prefix of the keys the store writes.
    pub(crate) prefix: Option<String>,
    /// The bound on every command, connecting included.
    pub(crate) timeout: Option<Duration>,
    /// How many connections (what they are is the store's); `connections` or
    /// `max_connections` in the URL.
    pub(crate) connections: Option<usize>,
    /// TLS settings (URL only).
    pub(crate) tls: TlsOptions,
    /// Replicas every write must reach (`WAIT`; URL only, `wait=N`).
    pub(crate) wait: Option<u32>,
    /// Records the near-cache keeps (`cache=N`; 0: no near-cache).
    pub(crate) cache: Option<usize>,
    /// The near-cache's staleness bound (`cache_max_stale_ms`).
    pub(crate) cache_max_stale: Option<Duration>,
}

/// [`StoreOptions`] in force.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) connections: usize,
    pub(crate) tls: TlsOptions,
    pub(crate) wait: u32,
    pub(crate) cache: usize,
    pub(crate) cache_max_stale: Duration,
}

impl StoreOptions {
    /// These options, then `fallback`'s for what these leave out (the builder's over the
    /// URL's), then the defaults; a zero timeout or connection count is refused.
    pub(crate) fn resolve(self, fallback: StoreOptions, connections: usize) -> Result<Resolved> {
        let timeout = self
            .timeout
            .or(fallback.timeout)
            .unwrap_or(crate::DEFAULT_COMMAND_TIMEOUT);
        if timeout.is_zero() {
            let message = "the command timeout must not be zero";
            return Err(Error::new(ErrorKind::Config, message));
        }
        let connections = self
            .connections
            .or(fallback.connections)
            .unwrap_or(connections);
        if connections == 0 {
            let message = "at least one connection is needed";
            return Err(Error::new(ErrorKind::Config, message));
        }
        Ok(Resolved {
            prefix: self
                .prefix
                .or(fallback.prefix)
                .unwrap_or_else(|| crate::DEFAULT_PREFIX.to_owned()),
            timeout,
            connections,
            tls: if self.tls.any() {
                self.tls
            } else {
                fallback.tls
            },
            wait: self.wait.or(fallback.wait).unwrap_or(0),
            cache: self.cache.or(fallback.cache).unwrap_or(0),
            cache_max_stale: match self.cache_max_stale.or(fallback.cache_max_stale) {
                Some(d) if d.is_zero() => {
                    let message = "the near-cache's staleness bound must not be zero";
                    return Err(Error::new(ErrorKind::Config, message));
                }
                Some(d) => d,
                None => crate::DEFAULT_CACHE_MAX_STALE,
            },
        })
    }
}

/// Splits the store's own options off `url`; `protocol`, `db`, `user` and `pass` stay for
/// redis-rs, `sentinel_username` and `sentinel_password` (Sentinel URLs only) for the
/// sentinel parser, any other parameter is an [`ErrorKind::Config`] error (a misspelt `ca=`
/// must not silently fall back to the system roots).
pub(crate) fn take_options(url: &str) -> Result<(String, StoreOptions)> {
    refuse_fragment(url)?;
    let mut options = StoreOptions::default();
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), options));
    };
    let bad = |what: &str| config(format!("bad {what} in Redis URL {}", redact(url)));
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let text = || percent_decode(v).ok_or_else(|| bad(k));
        match k {
            "prefix" => options.prefix = Some(text()?),
            "timeout_ms" => {
                let ms: u64 = v.parse().map_err(|_| bad("timeout_ms"))?;
                options.timeout = Some(Duration::from_millis(ms));
            }
            "connections" | "max_connections" => {
                options.connections = Some(v.parse().map_err(|_| bad(k))?);
            }
            "cache" => {
                options.cache = Some(
                    v.parse()
                        .map_err(|_| bad("cache (records, e.g. cache=10000)"))?,
                )
            }
            "cache_max_stale_ms" => {
                let ms: u64 = v.parse().map_err(|_| bad("cache_max_stale_ms"))?;
                options.cache_max_stale = Some(Duration::from_millis(ms));
            }
            "wait" => {
                options.wait = Some(v.parse().map_err(|_| bad("wait (replicas, e.g. wait=1)"))?)
            }
            "ca" => options.tls.ca = Some(text()?),
            "cert" => options.tls.cert = Some(text()?),
            "key" => options.tls.key = Some(text()?),
            "insecure_skip_verify" => {
                options.tls.insecure_skip_verify = match v {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => return Err(bad("insecure_skip_verify (true or false)")),
                }
            }
            k if REDIS_RS_OPTIONS.contains(&k) => rest.push(pair),
            k if SENTINEL_OPTIONS.contains(&k) => {
                let sentinel = base
                    .split_once("://")
                    .is_some_and(|(s, _)| s.to_ascii_lowercase().ends_with("+sentinel"));
                if !sentinel {
                    return Err(config(format!(
                        "{k} is for Sentinel URLs (`+sentinel` in the scheme: redis+sentinel://, \
                         rediss+sentinel://), not {}",
                        redact(url)
                    )));
                }
                rest.push(pair);
            }
            _ => {
                // A name that is not a plain word is not shown: in a malformed URL
                // (`redis://u:pa?ss@host`) the "option" is the rest of a password.
                let shown = if !k.is_empty()
                    && k.len() <= 32
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    format!("{k:?}")
                } else {
                    "(name not shown: it may hold part of a password)".to_owned()
                };
                return Err(config(format!(
                    "unknown option {shown} in Redis URL {} (known: {}, {}, {})",
                    redact(url),
                    STORE_OPTIONS.join(", "),
                    REDIS_RS_OPTIONS.join(", "),
                    SENTINEL_OPTIONS.join(", ")
                )));
            }
        }
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, options))
}

/// Refuses a URL with a fragment (`#`, even empty), before anything else reads it: redis-rs
/// takes `#insecure` for "do not verify the server's TLS certificate", which only
/// `insecure_skip_verify=true` may say (it warns). Every Redis URL form passes here first
/// (the store's URL parser, [`Options::from_url`](crate::connection::Options::from_url),
/// and the parsers of stores built on [`connection`](crate::connection)).
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

/// Decodes `%XX` escapes (and `+` as a space); `None` for bad escapes or non-UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// The URL with any password replaced by `***`, for messages and Debug output (the core's
/// [`redact_url`](cloakroom_core::redact::redact_url), shared with the `cloakroom` command).
pub fn redact(url: &str) -> String {
    cloakroom_core::redact::redact_url(url)
}
