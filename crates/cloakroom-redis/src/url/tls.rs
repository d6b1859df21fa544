//! The TLS part of a Redis URL: the certificate options of its query (`ca`, `cert`, `key`,
//! `insecure_skip_verify`) and the files they name, read and checked when a store opens.
//! The options are parsed in every build; reading them and connecting over TLS need the
//! `tls` feature (without it a TLS URL is refused when it is parsed).

use redis::{Client, ConnectionInfo, RedisResult};
#[cfg(feature = "tls")]
use redis::{ClientTlsConfig, TlsCertificates};
#[cfg(feature = "tls")]
use rustls::pki_types::pem::PemObject;
#[cfg(feature = "tls")]
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::RedisUrl;
#[cfg(feature = "tls")]
use super::{Endpoint, config};
use cloakroom_core::store::Result;

/// The certificates a TLS URL names (redis-rs's type); in a build without TLS, a type with no
/// value.
#[cfg(feature = "tls")]
pub(crate) type Certificates = TlsCertificates;
/// The certificates a TLS URL names (redis-rs's type); in a build without TLS, a type with no
/// value.
#[cfg(not(feature = "tls"))]
pub(crate) type Certificates = std::convert::Infallible;

/// A redis-rs client for `info`, with `certificates` if the URL named any.
pub(crate) fn client(
    info: ConnectionInfo,
    certificates: Option<&Certificates>,
) -> RedisResult<Client> {
    match certificates {
        #[cfg(feature = "tls")]
        Some(certs) => Client::build_with_tls(info, certs.clone()),
        #[cfg(not(feature = "tls"))]
        Some(never) => match *never {},
        None => Client::open(info),
    }
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
    pub(super) fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.insecure_skip_verify
    }

    /// The certificates these options name, read and checked now (so a bad file is an error
    /// at start-up, not at the first request); `None` when none is named.
    #[cfg(feature = "tls")]
    fn certificates(&self) -> Result<Option<TlsCertificates>> {
        let read = |what: &str, path: &str| {
            std::fs::read(path)
                .map_err(|e| config(format!("cannot read the TLS {what} file {path:?}: {e}")))
        };
        let certificates = |what: &str, path: &str| {
            let pem = read(what, path)?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| config(format!("bad PEM in the TLS {what} file {path:?}: {e}")))?;
            if certs.is_empty() {
                return Err(config(format!(
                    "no certificate in the TLS {what} file {path:?}"
                )));
            }
            Ok(pem)
        };
        let root_cert = self
            .ca
            .as_deref()
            .map(|p| certificates("CA", p))
            .transpose()?;
        let client_tls = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let client_cert = certificates("certificate", cert)?;
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
}

impl RedisUrl {
    /// For a TLS URL: installs the crypto provider, warns about a disabled verification or
    /// Sentinel without `ca=`, and reads the certificate files.
    #[cfg(not(feature = "tls"))]
    pub(crate) fn certificates(&self) -> Result<Option<Certificates>> {
        // `parse` refuses a TLS URL in this build.
        Ok(None)
    }

    /// For a TLS URL: installs the crypto provider, warns about a disabled verification or
    /// Sentinel without `ca=`, and reads the certificate files.
    #[cfg(feature = "tls")]
    pub(crate) fn certificates(&self) -> Result<Option<Certificates>> {
        if !self.tls {
            return Ok(None);
        }
        // rustls needs a process-wide crypto provider; ring unless the application chose one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let t = &self.tls_options;
        if t.insecure_skip_verify {
            tracing::warn!(
                url = %self.shown,
                "insecure_skip_verify=true: the Redis server's TLS certificate is NOT verified; \
                 anyone on the network path can impersonate it. Development only."
            );
        } else if t.ca.is_none() && matches!(self.endpoint, Endpoint::Sentinel { .. }) {
            // The master's password goes to whatever address a sentinel names; with the
            // system roots, any publicly trusted certificate for that name passes.
            tracing::warn!(
                url = %self.shown,
                "rediss+sentinel:// without ca=: the servers the sentinels name are checked \
                 against the system roots only; give the CA of your Redis servers as ca=PATH"
            );
        }
        t.certificates()
    }
}
