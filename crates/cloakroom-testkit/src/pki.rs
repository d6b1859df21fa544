//! A private PKI for TLS tests (rcgen): a CA, a second CA nobody uses, a server certificate
//! for `127.0.0.1`/`localhost` and a client certificate, written as PEM files to a temporary
//! directory, and a TLS `redis-server` presenting the server certificate.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

use crate::redis_server::{RedisServer, RedisTls};

/// A CA, a second CA nobody uses, a server certificate for `127.0.0.1`/`localhost` and a
/// client certificate, all signed by the first CA; the PEM files live in `dir`.
#[derive(Debug)]
pub struct Pki {
    /// Holds `ca.pem`, `other-ca.pem`, `client.pem` and `client-key.pem`.
    pub dir: tempfile::TempDir,
    /// The server certificate (PEM), also usable as a client certificate (Cluster buses).
    pub server_cert: String,
    /// The server certificate's private key (PEM).
    pub server_key: String,
    /// The CA certificate (PEM).
    pub ca_cert: String,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

impl Pki {
    /// A new PKI, its files written to a new temporary directory.
    ///
    /// # Panics
    /// When a certificate cannot be made or a file written.
    pub fn generate() -> Pki {
        let ca = new_ca("cloakroom test CA");
        let other = new_ca("some other CA");
        let leaf = |names: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.extended_key_usages = usages;
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        // Cluster nodes present their server certificate as clients of each other's bus
        // (always mutual TLS), so it serves both purposes.
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let (client_cert, client_key) = leaf(
            vec!["cloakroom-client".into()],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
        );
        let dir = tempfile::tempdir().unwrap();
        let ca_cert = ca.as_ref().pem();
        for (name, pem) in [
            ("ca.pem", ca_cert.as_str()),
            ("other-ca.pem", other.as_ref().pem().as_str()),
            ("client.pem", client_cert.as_str()),
            ("client-key.pem", client_key.as_str()),
        ] {
            std::fs::write(dir.path().join(name), pem).unwrap();
        }
        Pki {
            dir,
            server_cert,
            server_key,
            ca_cert,
        }
    }

    /// The path of one of the PEM files in [`Pki::dir`].
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A TLS `redis-server` with the server certificate; `auth_clients`: mutual TLS.
    pub fn start(&self, auth_clients: bool) -> RedisServer {
        RedisServer::start_tls(&RedisTls {
            cert_pem: &self.server_cert,
            key_pem: &self.server_key,
            ca_pem: &self.ca_cert,
            auth_clients,
        })
    }
}
