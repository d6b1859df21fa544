//! TLS (rustls) against real `redis-server --tls-port` processes, with a private CA and
//! server and client certificates generated here (rcgen): the conformance suite over TLS,
//! certificate verification, mutual TLS, ACL users, and URL errors at open.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cloakroom_core::store::{ErrorKind, SessionStore};
use cloakroom_redis::RedisStore;
use cloakroom_testkit::Purge;
use cloakroom_testkit::new_key;
use cloakroom_testkit::pki::Pki;
use cloakroom_testkit::redis_server::{RedisCluster, RedisServer, RedisTls, Resp};
use cloakroom_testkit::sentinel_server::SentinelTopology;
use cloakroom_testkit::store_checks::{login_round_trip, record};

struct Tls {
    pki: Pki,
    /// `--tls-auth-clients no`: server verification only.
    server: RedisServer,
}

/// One PKI and one TLS server for the whole test binary.
fn tls() -> &'static Tls {
    static TLS: OnceLock<Tls> = OnceLock::new();
    TLS.get_or_init(|| {
        let pki = Pki::generate();
        let server = pki.start(false);
        Tls { pki, server }
    })
}

/// `rediss://127.0.0.1:PORT/` plus `query`, against the shared TLS server.
fn url(query: &str) -> String {
    format!("{}{query}", tls().server.tls_url())
}

fn ca_query() -> String {
    format!("?ca={}", tls().pki.path("ca.pem"))
}

async fn tls_store() -> Arc<dyn SessionStore> {
    let store = common::open_fresh(url(&ca_query()), "conformance").await;
    Arc::new(store)
}

/// The whole conformance suite through `rediss://` with the test CA.
mod over_tls {
    use super::*;

    cloakroom_testkit::conformance_tests!(tls_store(), purge = Purge::EngineExpires);
}

/// The TLS port speaks only TLS, so a working store there proves the connection is TLS; a
/// plain `redis://` client on the same port gets nowhere.
#[tokio::test]
async fn the_tls_port_needs_tls() {
    let store = RedisStore::open(&url(&ca_query())).await.expect("TLS");
    login_round_trip(&store).await;
    let plain = format!("redis://127.0.0.1:{}/", tls().server.tls_port());
    let err = RedisStore::builder(plain)
        .command_timeout(Duration::from_millis(500))
        .build()
        .await
        .expect_err("plain text on the TLS port");
    println!("plain client on the TLS port: {:?}: {err}", err.kind());
}

#[tokio::test]
async fn a_server_signed_by_another_ca_is_refused_at_open() {
    let started = Instant::now();
    for query in [
        // A CA file that did not sign the server's certificate.
        format!("?ca={}", tls().pki.path("other-ca.pem")),
        // No CA file: the system roots, which know nothing of the test CA.
        String::new(),
    ] {
        let err = RedisStore::builder(url(&query))
            .command_timeout(Duration::from_secs(2))
            .build()
            .await
            .expect_err("untrusted server certificate");
        println!("untrusted server ({query:?}): {:?}: {err}", err.kind());
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        let text = err.to_string();
        assert!(text.contains("TLS handshake"), "{text}");
        assert!(text.contains("certificate"), "{text}");
    }
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn insecure_skip_verify_connects_without_checking() {
    // The loud development-only opt-out: no CA, the server's certificate is not checked.
    let store = RedisStore::open(&url("?insecure_skip_verify=true"))
        .await
        .expect("verification disabled");
    login_round_trip(&store).await;
}

#[tokio::test]
async fn mutual_tls_needs_the_client_certificate() {
    let pki = &tls().pki;
    let server = pki.start(true);
    let with_cert = format!(
        "{}?ca={}&cert={}&key={}",
        server.tls_url(),
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client-key.pem")
    );
    let store = RedisStore::open(&with_cert)
        .await
        .expect("mutual TLS with the client certificate");
    login_round_trip(&store).await;

    let without = format!("{}?ca={}", server.tls_url(), pki.path("ca.pem"));
    let err = RedisStore::builder(without)
        .command_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect_err("no client certificate");
    println!(
        "mutual TLS without a client certificate: {:?}: {err}",
        err.kind()
    );
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("TLS handshake"), "{err}");
}

#[tokio::test]
async fn acl_users_over_tls() {
    let t = tls();
    let user = format!("alice{}", std::process::id());
    let reply = t
        .server
        .command(&["ACL", "SETUSER", &user, "on", ">s3cr3t-pw", "~*", "+@all"])
        .expect("ACL SETUSER");
    assert!(matches!(reply, Resp::Simple(_)), "{reply:?}");
    let port = t.server.tls_port();
    let ca = t.pki.path("ca.pem");
    let good = format!("rediss://{user}:s3cr3t-pw@127.0.0.1:{port}/2?ca={ca}");
    let store = RedisStore::open(&good).await.expect("the ACL user");
    login_round_trip(&store).await;
    // The connection is the user's, not `default`'s.
    let Ok(Resp::Bulk(Some(list))) = t.server.command(&["CLIENT", "LIST"]) else {
        panic!("CLIENT LIST");
    };
    let list = String::from_utf8_lossy(&list);
    assert!(list.contains(&format!("user={user}")), "{list}");

    for bad in [
        format!("rediss://{user}:wrong-pw@127.0.0.1:{port}/2?ca={ca}"),
        format!("rediss://nobody-{user}:s3cr3t-pw@127.0.0.1:{port}/2?ca={ca}"),
    ] {
        let err = RedisStore::open(&bad).await.expect_err("wrong credentials");
        println!("wrong credentials: {:?}: {err}", err.kind());
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        let text = format!("{err} {err:?}");
        assert!(
            !text.contains("wrong-pw") && !text.contains("s3cr3t-pw"),
            "{text}"
        );
    }
}

/// Bad TLS settings are configuration errors at open, before any connection is tried
/// (nothing listens on port 1).
#[tokio::test]
async fn bad_tls_urls_are_config_errors_at_open() {
    let pki = &tls().pki;
    let missing = PathBuf::from(pki.dir.path()).join("missing.pem");
    let missing = missing.display().to_string();
    let base = "rediss://u:hunter2@127.0.0.1:1/0";
    let cases = [
        (format!("{base}?ca={missing}"), "missing.pem"),
        // A misspelt option would silently fall back to the system roots: refused.
        (format!("{base}?cafile={}", pki.path("ca.pem")), "cafile"),
        (format!("{base}?cert={}", pki.path("client.pem")), "key"),
        // A "CA file" without a certificate in it (here: a private key).
        (
            format!("{base}?ca={}", pki.path("client-key.pem")),
            "no certificate",
        ),
        (
            format!(
                "{base}?cert={}&key={}",
                pki.path("client.pem"),
                pki.path("client.pem")
            ),
            "private key",
        ),
        (
            format!("redis://127.0.0.1:1/0?ca={}", pki.path("ca.pem")),
            "TLS URL",
        ),
        (
            format!("{base}?insecure_skip_verify=perhaps"),
            "insecure_skip_verify",
        ),
        (
            format!("rediss+cluster://127.0.0.1:1,127.0.0.1:2?ca={missing}"),
            "missing.pem",
        ),
    ];
    for (url, says) in cases {
        let started = Instant::now();
        let err = RedisStore::open(&url).await.expect_err(&url);
        assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err}");
        let text = err.to_string();
        assert!(text.contains(says), "{url}: {text}");
        assert!(!format!("{text} {err:?}").contains("hunter2"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(1), "{url}");
    }
}

/// `rediss+cluster://` against three masters that talk TLS among themselves too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_over_tls() {
    let pki = &tls().pki;
    let cluster = RedisCluster::start_tls(&RedisTls {
        cert_pem: &pki.server_cert,
        key_pem: &pki.server_key,
        ca_pem: &pki.ca_cert,
        auth_clients: false,
    });
    let url = format!("{}?ca={}", cluster.tls_url(), pki.path("ca.pem"));
    let store = common::open_fresh(url, "cluster").await;
    assert!(store.is_cluster());
    // Enough sessions that every node holds some: all three TLS connections work.
    for _ in 0..3 {
        login_round_trip(&store).await;
    }
    // Users' sessions, each in its user's shard (as the engine places them).
    for i in 0..30 {
        let user = format!("carol-{i}");
        let id = cloakroom_core::store::placed(
            store.placement(),
            Some(&user),
            cloakroom_core::session::SessionId::generate,
            cloakroom_core::session::SessionId::key,
        );
        store.create(&id.key(), &record(Some(&user))).await.unwrap();
    }
    let key = new_key();
    store.create(&key, &record(None)).await.unwrap();
    assert_eq!(store.sessions_of("carol-7").await.unwrap().len(), 1);
    for node in cluster.nodes() {
        let Ok(Resp::Int(n)) = node.command(&["DBSIZE"]) else {
            panic!("DBSIZE");
        };
        assert!(n > 0, "node {} holds no session", node.port());
    }
    assert_eq!(store.delete_user("carol-7", None).await.unwrap(), 1);
    // The wrong CA is refused at open, as for one server.
    let wrong = format!("{}?ca={}", cluster.tls_url(), pki.path("other-ca.pem"));
    let err = RedisStore::builder(wrong)
        .command_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect_err("untrusted cluster");
    println!("cluster with the wrong CA: {:?}: {err}", err.kind());
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

/// Opens `url`; the error if it does not open.
async fn open_err(url: &str) -> Option<cloakroom_core::store::Error> {
    RedisStore::builder(url)
        .command_timeout(Duration::from_secs(2))
        .build()
        .await
        .err()
}

/// Asserts that every URL of `urls` is refused as a configuration error about the fragment,
/// without showing the password (`hunter2`, `hun#ter2`).
async fn fragments_refused(urls: &[String]) {
    for url in urls {
        let err = open_err(url)
            .await
            .unwrap_or_else(|| panic!("{url} opened: its fragment was not refused"));
        let text = format!("{err} {err:?}");
        println!("{url}: {err}");
        assert_eq!(err.kind(), ErrorKind::Config, "{url}: {text}");
        assert!(err.to_string().contains("fragment"), "{url}: {text}");
        assert!(!text.contains("ter2"), "{text}");
    }
}

/// redis-rs reads a `#insecure` fragment as "do not verify the server's certificate". Only
/// `insecure_skip_verify=true` (which warns) may do that: a URL with any fragment is refused
/// at open. Every URL here opens against this server if the fragment goes through (its
/// certificate is signed by neither the system roots nor `other-ca.pem`).
#[tokio::test]
async fn a_url_fragment_is_refused_at_open() {
    let t = tls();
    let port = t.server.tls_port();
    let other = t.pki.path("other-ca.pem");
    let host = format!("127.0.0.1:{port}");
    fragments_refused(&[
        format!("rediss://{host}/0#insecure"),
        format!("rediss://{host}/0?ca={other}&protocol=2#insecure"),
        format!("rediss://{host}/0?insecure_skip_verify=false&protocol=3#insecure"),
        format!("rediss://{host}/0?protocol=2#"),
        // The near-cache's RESP3 check must not hide the fragment.
        format!("rediss://{host}/0?cache=100&protocol=3#insecure"),
    ])
    .await;
}

/// The same through TLS sentinels: `rediss+sentinel://`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_fragment_is_refused_at_open_through_sentinels() {
    let pki = &tls().pki;
    let topology = SentinelTopology::start_tls(&RedisTls {
        cert_pem: &pki.server_cert,
        key_pem: &pki.server_key,
        ca_pem: &pki.ca_cert,
        auth_clients: false,
    });
    let sentinels = topology.tls_url(0);
    let other = pki.path("other-ca.pem");
    fragments_refused(&[
        format!("{sentinels}?protocol=2#insecure"),
        format!("{sentinels}?ca={other}&protocol=2#insecure"),
    ])
    .await;
    // The same URLs without the fragment and with the right CA open.
    let ca = pki.path("ca.pem");
    let store = RedisStore::open(&format!("{sentinels}?ca={ca}&protocol=2"))
        .await
        .expect("through the sentinels with the CA");
    login_round_trip(&store).await;
}

/// The plain and Cluster forms too, refused before anything connects (nothing listens on
/// ports 1 and 2); a raw `#` in a password is a fragment as well, and is not shown.
#[tokio::test]
async fn a_url_fragment_is_refused_on_every_form() {
    let started = Instant::now();
    fragments_refused(&[
        "redis://127.0.0.1:1/0#insecure".to_owned(),
        "redis://127.0.0.1:1/0#".to_owned(),
        "redis://:hun#ter2@127.0.0.1:1/0".to_owned(),
        "redis+cluster://127.0.0.1:1,127.0.0.1:2#insecure".to_owned(),
        "redis+cluster://127.0.0.1:1,127.0.0.1:2/?protocol=3#insecure".to_owned(),
        "rediss+cluster://:hunter2@127.0.0.1:1,127.0.0.1:2#insecure".to_owned(),
        "redis+sentinel://127.0.0.1:1/svc/0?protocol=2#insecure".to_owned(),
        "rediss+sentinel://127.0.0.1:1/svc/0#insecure".to_owned(),
    ])
    .await;
    assert!(started.elapsed() < Duration::from_secs(2));
}
