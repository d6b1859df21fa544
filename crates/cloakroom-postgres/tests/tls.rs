//! TLS through rustls against a real PostgreSQL with `ssl=on`: a private CA, a server
//! certificate for `localhost` only, and libpq's `sslmode` semantics.

use std::path::Path;
use std::sync::OnceLock;

use cloakroom_core::store::SessionStore;
use cloakroom_postgres::PostgresStore;
use cloakroom_testkit::postgres_server::PostgresServer;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

struct Tls {
    server: PostgresServer,
    dir: tempfile::TempDir,
}

/// One TLS server per test binary, with its CA certificate in `dir/ca.pem`.
fn tls() -> &'static Tls {
    static TLS: OnceLock<Tls> = OnceLock::new();
    TLS.get_or_init(|| {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.as_ref().pem()).unwrap();
        let chain = format!("{}{}", leaf.pem(), ca.as_ref().pem());
        let server = PostgresServer::start_with_tls(&chain, &key.serialize_pem());
        Tls { server, dir }
    })
}

fn url(host: &str, options: &str) -> String {
    let t = tls();
    format!(
        "postgres://postgres@{host}:{}/postgres?{options}",
        t.server.port()
    )
}

fn ca(dir: &Path) -> String {
    dir.join("ca.pem").display().to_string()
}

/// Whether the server sees a TLS connection from `application_name`.
async fn uses_tls(app: &str) -> bool {
    let (client, conn) = tokio_postgres::connect(&url("127.0.0.1", ""), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query_one(
            "SELECT coalesce(bool_and(s.ssl), false) FROM pg_stat_ssl s
             JOIN pg_stat_activity a USING (pid) WHERE a.application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_accepts_the_right_host_and_encrypts() {
    let t = tls();
    let store = PostgresStore::open(&url(
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}&application_name=tls_full",
            ca(t.dir.path())
        ),
    ))
    .await
    .expect("verify-full against localhost with the CA");
    store.ping().await.unwrap();
    assert!(uses_tls("tls_full").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_certificate_for_another_name_or_from_an_unknown_ca() {
    let t = tls();
    // The certificate names localhost, not 127.0.0.1.
    let err = PostgresStore::open(&url(
        "127.0.0.1",
        &format!(
            "sslmode=verify-full&sslrootcert={}&timeout_ms=3000",
            ca(t.dir.path())
        ),
    ))
    .await
    .unwrap_err();
    assert!(format!("{err:?}").contains("NotValidForName"), "{err:?}");
    // The private CA is not among the Mozilla roots.
    let err = PostgresStore::open(&url("localhost", "sslmode=verify-full&timeout_ms=3000"))
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_checks_the_chain_but_not_the_name() {
    let t = tls();
    let store = PostgresStore::open(&url(
        "127.0.0.1",
        &format!(
            "sslmode=verify-ca&sslrootcert={}&application_name=tls_ca",
            ca(t.dir.path())
        ),
    ))
    .await
    .expect("verify-ca accepts the CA's certificate under another name");
    store.ping().await.unwrap();
    assert!(uses_tls("tls_ca").await);
    let err = PostgresStore::open(&url("127.0.0.1", "sslmode=verify-ca&timeout_ms=3000"))
        .await
        .unwrap_err();
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_and_prefer_encrypt_without_verifying_and_disable_does_not() {
    for (mode, app, encrypted) in [
        ("require", "tls_require", true),
        ("prefer", "tls_prefer", true),
        ("disable", "tls_disable", false),
    ] {
        let store = PostgresStore::open(&url(
            "127.0.0.1",
            &format!("sslmode={mode}&application_name={app}"),
        ))
        .await
        .unwrap_or_else(|e| panic!("sslmode={mode}: {e}"));
        store.ping().await.unwrap();
        assert_eq!(uses_tls(app).await, encrypted, "sslmode={mode}");
    }
}
