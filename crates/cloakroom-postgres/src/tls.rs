//! TLS through rustls (ring), with libpq's `sslmode` semantics.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use cloakroom_core::store::{Error, ErrorKind, Result};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::options::SslMode;

/// The connector for `mode`, trusting `root_cert` (a PEM file) or, without one, the Mozilla
/// roots (webpki-roots).
pub(crate) fn connector(mode: SslMode, root_cert: Option<&Path>) -> Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(roots(root_cert)?);
    let check = match mode {
        SslMode::Disable | SslMode::Prefer => Check::Nothing,
        SslMode::Require if root_cert.is_none() => Check::Nothing,
        SslMode::Require | SslMode::VerifyCa => Check::Chain,
        SslMode::VerifyFull => Check::ChainAndName,
    };
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
        .build()
        .map_err(|e| {
            Error::new(ErrorKind::Config, "cannot build the TLS verifier").with_source(e)
        })?;
    let verifier = Verifier {
        check,
        webpki,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::new(ErrorKind::Config, "TLS set-up failed").with_source(e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

fn roots(root_cert: Option<&Path>) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match root_cert {
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let bad = |what: &str| {
                Error::new(
                    ErrorKind::Config,
                    format!("sslrootcert {}: {what}", path.display()),
                )
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad("cannot read it").with_source(e))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad("not a PEM file of certificates").with_source(e))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bad("holds no usable certificate"));
            }
        }
    }
    Ok(store)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    /// Encryption only, as libpq's `prefer` and `require` without a root certificate.
    Nothing,
    /// `verify-ca`: a trusted chain, any name.
    Chain,
    /// `verify-full`.
    ChainAndName,
}

struct Verifier {
    check: Check,
    webpki: Arc<WebPkiServerVerifier>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("check", &self.check)
            .finish()
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if self.check == Check::Nothing {
            return Ok(ServerCertVerified::assertion());
        }
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if self.check == Check::Chain => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connectors_build_for_every_mode() {
        for mode in [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            connector(mode, None).unwrap();
        }
        let Err(err) = connector(SslMode::VerifyFull, Some(Path::new("/nonexistent/ca.pem")))
        else {
            panic!("a missing sslrootcert was accepted");
        };
        assert_eq!(err.kind(), ErrorKind::Config);
    }
}
