//! The pycket store over TLS (rustls) against real `redis-server --tls-port` processes, with
//! a private CA and server and client certificates generated here (rcgen): verification,
//! mutual TLS, and URL errors at open (`cloakroom-redis`'s `tests/tls.rs` covers the same
//! for the Redis store).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cloakroom_core::session::Timestamp;
use cloakroom_core::store::{Applied, ErrorKind, SessionStore};
use cloakroom_testkit::new_key;
use cloakroom_testkit::pki::Pki;
use cloakroom_testkit::redis_server::{RedisServer, RedisTls};
use cloakroom_testkit::sentinel_server::SentinelTopology;
use cloakroom_testkit::store_checks::{login_round_trip, record};
use cloakroom_tornado::PycketStore;

const HOUR: Duration = Duration::from_secs(3600);

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

/// The pycket store with the client certificate (mutual TLS).
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
    let pycket = PycketStore::open(&format!(
        "{}&notifications_db=5",
        with_cert.replacen("rediss://", "pycket+rediss://", 1)
    ))
    .await
    .expect("pycket over mutual TLS");
    login_round_trip(&pycket).await;
}

#[tokio::test]
async fn pycket_store_over_tls() {
    let t = tls();
    let url = format!(
        "pycket+rediss://127.0.0.1:{}/6?notifications_db=7&ca={}&max_connections=2",
        t.server.tls_port(),
        t.pki.path("ca.pem")
    );
    let store = PycketStore::open(&url).await.expect("pycket over TLS");
    login_round_trip(&store).await;
    let key = new_key();
    store.create(&key, &record(Some("bob"))).await.unwrap();
    assert_eq!(store.sessions_of("bob").await.unwrap().len(), 1);
    let now = Timestamp::now();
    assert_eq!(
        store.touch(&key, now, now.plus(HOUR)).await.unwrap(),
        Applied::Done
    );
    assert_eq!(store.delete_user("bob", None).await.unwrap(), 1);
}

/// Bad TLS settings are configuration errors at open, before any connection is tried
/// (nothing listens on port 1).
#[tokio::test]
async fn bad_tls_urls_are_config_errors_at_open() {
    let pki = &tls().pki;
    let missing = PathBuf::from(pki.dir.path()).join("missing.pem");
    let missing = missing.display().to_string();
    let url = format!("pycket+rediss://:hunter2@127.0.0.1:1/3?ca={missing}");
    let started = Instant::now();
    let err = PycketStore::open(&url).await.expect_err(&url);
    assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err}");
    let text = err.to_string();
    assert!(text.contains("missing.pem"), "{url}: {text}");
    assert!(!format!("{text} {err:?}").contains("hunter2"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(1), "{url}");
}

/// Opens `url`; the error if it does not open.
async fn open_err(url: &str) -> Option<cloakroom_core::store::Error> {
    PycketStore::builder(url)
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
/// `insecure_skip_verify=true` (which warns) may do that: a pycket URL with any fragment is
/// refused at open. Every URL here opens against this server if the fragment goes through
/// (its certificate is signed by neither the system roots nor `other-ca.pem`).
#[tokio::test]
async fn a_url_fragment_is_refused_at_open() {
    let t = tls();
    let port = t.server.tls_port();
    let other = t.pki.path("other-ca.pem");
    let host = format!("127.0.0.1:{port}");
    fragments_refused(&[
        format!("pycket+rediss://{host}/4?protocol=2#insecure"),
        format!("pycket+rediss://{host}/4?notifications_db=5&ca={other}&protocol=2#insecure"),
    ])
    .await;
}

/// The same through TLS sentinels: `pycket+rediss+sentinel://`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_fragment_is_refused_at_open_through_sentinels() {
    let pki = &tls().pki;
    let topology = SentinelTopology::start_tls(&RedisTls {
        cert_pem: &pki.server_cert,
        key_pem: &pki.server_key,
        ca_pem: &pki.ca_cert,
        auth_clients: false,
    });
    fragments_refused(&[format!(
        "pycket+{}?protocol=2#insecure",
        topology.tls_url(4)
    )])
    .await;
}

/// Every pycket form, refused before anything connects (nothing listens on port 1).
#[tokio::test]
async fn a_url_fragment_is_refused_on_every_form() {
    let started = Instant::now();
    fragments_refused(&[
        "pycket+redis://127.0.0.1:1/0#insecure".to_owned(),
        "pycket+redis://127.0.0.1:1/0?notifications_db=3#".to_owned(),
        "pycket+redis+sentinel://127.0.0.1:1/svc/0?protocol=2#insecure".to_owned(),
        "pycket+rediss+sentinel://:hunter2@127.0.0.1:1/svc#insecure".to_owned(),
    ])
    .await;
    assert!(started.elapsed() < Duration::from_secs(2));
}
