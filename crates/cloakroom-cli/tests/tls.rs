//! The `cloakroom` binary against a real TLS Redis (`redis-server --tls-port`, a certificate
//! from a private CA generated here): the warning `insecure_skip_verify=true` logs at every
//! open reaches stderr, and the output on stdout stays clean JSON; so does the warning of a
//! `rediss+sentinel://` URL without `ca=`.

mod common;

use cloakroom_testkit::redis_server::{RedisServer, RedisTls};
use common::{cloakroom, fails, ok, stderr, stdout};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// A server whose certificate (for 127.0.0.1) is signed by a fresh CA; the CA's PEM file in
/// the returned directory as `ca.pem`.
fn tls_server() -> (RedisServer, tempfile::TempDir) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cloakroom CLI test CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let ca_pem = ca.as_ref().pem();
    let server = RedisServer::start_tls(&RedisTls {
        cert_pem: &cert.pem(),
        key_pem: &key.serialize_pem(),
        ca_pem: &ca_pem,
        auth_clients: false,
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
    (server, dir)
}

#[test]
fn insecure_skip_verify_warns_on_stderr_and_keeps_stdout_clean() {
    let (server, dir) = tls_server();
    let insecure = format!(
        "{}3?insecure_skip_verify=true&prefix=cli-tls:",
        server.tls_url()
    );
    for args in [&["stats", "--json"][..], &["sessions", "list", "--json"]] {
        let output = cloakroom(Some(&insecure), args);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        let err = stderr(&output);
        println!("{args:?}: {err}");
        assert!(err.contains("WARN"), "{args:?}: {err:?}");
        assert!(err.contains("insecure_skip_verify=true"), "{err:?}");
        assert!(err.contains("NOT verified"), "{err:?}");
        // No colour codes when stderr is not a terminal.
        assert!(!err.contains('\x1b'), "{err:?}");
        let json: serde_json::Value = serde_json::from_str(&stdout(&output))
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}): {output:?}"));
        assert!(json.is_object() || json.is_array(), "{json}");
    }
    // With the CA instead: verified, nothing on stderr.
    let verified = format!(
        "{}3?ca={}&prefix=cli-tls:",
        server.tls_url(),
        dir.path().join("ca.pem").display()
    );
    let json = ok(&cloakroom(Some(&verified), &["stats", "--json"]));
    serde_json::from_str::<serde_json::Value>(&json).expect("JSON");
}

/// `rediss+sentinel://` without `ca=` warns when the store opens (the master's password goes
/// to whatever server a sentinel names, checked against the system roots only); with `ca=`
/// it does not. Nothing listens on port 1: the open fails after the warning.
#[test]
fn rediss_sentinel_without_a_ca_warns() {
    let url = "rediss+sentinel://127.0.0.1:1/cloakroom/0?timeout_ms=300";
    let output = cloakroom(Some(url), &["stats", "--json"]);
    let err = stderr(&output);
    println!("{err}");
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("WARN") && err.contains("without ca="), "{err}");
    assert_eq!(stdout(&output), "");

    let (_server, dir) = tls_server();
    let ca = dir.path().join("ca.pem");
    let with_ca = format!("{url}&ca={}", ca.display());
    let err = fails(&cloakroom(Some(&with_ca), &["stats", "--json"]));
    assert!(!err.contains("without ca="), "{err}");
}
