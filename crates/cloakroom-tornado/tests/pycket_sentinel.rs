//! PycketStore through Redis Sentinel (`pycket+redis+sentinel://`,
//! `pycket+rediss+sentinel://`): the conformance suite, a failover (master killed with
//! SIGKILL, replica promoted) followed without a restart, sentinels that require a password
//! of their own (`?sentinel_password=`, `?sentinel_username=`, plain and over TLS), and the
//! configuration errors at open (`cloakroom-redis`'s `tests/sentinel.rs` covers the same
//! for the Redis store).
//!
//! Each test that kills a master starts its own topology (a master, a replica, three
//! sentinels); the others share one.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cloakroom_core::session::{SessionKey, Timestamp};
use cloakroom_core::store::{Applied, Created, ErrorKind, Patch, SessionStore};
use cloakroom_testkit::Purge;
use cloakroom_testkit::new_key;
#[cfg(feature = "tls")]
use cloakroom_testkit::redis_server::RedisTls;
use cloakroom_testkit::redis_server::Resp;
use cloakroom_testkit::sentinel_server::{SentinelAuth, SentinelTopology};
use cloakroom_testkit::store_checks::{error_text, login_round_trip, record};
use cloakroom_tornado::PycketStore;

const HOUR: Duration = Duration::from_secs(3600);

fn shared() -> &'static SentinelTopology {
    static SHARED: OnceLock<SentinelTopology> = OnceLock::new();
    SHARED.get_or_init(SentinelTopology::start)
}

/// `url` (a `redis+sentinel://` or `rediss+sentinel://` URL) for the pycket store.
fn pycket_url(url: &str) -> String {
    format!("pycket+{url}")
}

async fn pycket_conformance_store() -> Arc<dyn SessionStore> {
    // Databases 3 and 4 of the shared topology are this suite's alone.
    let url = format!("{}?notifications_db=4", pycket_url(&shared().url(3)));
    let store = PycketStore::open(&url)
        .await
        .unwrap_or_else(|e| panic!("opening the pycket store through the sentinels: {e}"));
    Arc::new(store)
}

/// The whole conformance suite on the pycket store through the sentinels
/// (`pycket+redis+sentinel://`): its reads and its transactions run on the master they name.
mod pycket_through_sentinel {
    use super::*;

    // The pycket format cannot hold DBSC challenges, nor enforce the concurrent-session
    // limit: the store refuses both as config errors.
    cloakroom_testkit::conformance_tests!(
        pycket_conformance_store(),
        purge = Purge::EngineExpires,
        challenges = cloakroom_testkit::Challenges::Refused,
        limit = cloakroom_testkit::SessionLimit::Refused
    );
}

/// A password that needs percent-encoding in a URL, and its encoding.
const SENTINEL_PASSWORD: (&str, &str) = ("s3nt:p@ss/w", "s3nt%3Ap%40ss%2Fw");

/// Sentinels with `requirepass` (and `sentinel sentinel-pass` among themselves): the pycket
/// store reaches them with `?sentinel_password=` (percent-encoded) and runs a login through
/// them; no password or a wrong one is a configuration error at open that names the
/// sentinel and never shows the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_with_requirepass() {
    let (password, encoded) = SENTINEL_PASSWORD;
    let topology = SentinelTopology::start_with_auth(
        None,
        &SentinelAuth {
            username: None,
            password,
        },
    );
    let pycket = |query: &str| {
        format!(
            "{}?notifications_db=6&{query}",
            pycket_url(&topology.url(5))
        )
    };
    let good = format!("sentinel_password={encoded}");
    let store = PycketStore::open(&pycket(&good))
        .await
        .unwrap_or_else(|e| panic!("pycket through sentinels with requirepass: {e}"));
    login_round_trip(&store).await;
    let shown = format!("{store:?}");
    assert!(shown.contains("sentinel_password=***"), "{shown}");
    assert!(
        !shown.contains(encoded) && !shown.contains(password),
        "{shown}"
    );

    let timeout = Duration::from_millis(500);
    for (query, says) in [
        ("", "no sentinel_password was given"),
        (
            "sentinel_password=not-the-password",
            "sentinel_password was given",
        ),
        (
            "sentinel_username=default&sentinel_password=not-the-password",
            "sentinel_username and sentinel_password were given",
        ),
    ] {
        let what = format!("sentinels with requirepass, {query:?}");
        let text = refused_by_the_sentinels(&pycket(query), timeout, &what).await;
        assert!(text.contains(says), "{text}");
        assert!(!text.contains("not-the-password"), "{text}");
        assert!(!text.contains(password), "{text}");
    }
}

/// Opening the pycket store at `pycket_url` fails with a configuration error that names the
/// sentinel; its full text (printed, with `what`).
async fn refused_by_the_sentinels(pycket_url: &str, timeout: Duration, what: &str) -> String {
    let err = PycketStore::builder(pycket_url)
        .command_timeout(timeout)
        .build()
        .await
        .err()
        .unwrap_or_else(|| panic!("{what}: accepted"));
    let text = error_text(&err);
    println!("{what}: {text}");
    assert_eq!(err.kind(), ErrorKind::Config, "{text}");
    assert!(
        text.contains("sentinel 127.0.0.1:"),
        "names the sentinel: {text}"
    );
    text
}

/// Sentinels over TLS that know only an ACL user (the default user off): the pycket store
/// reaches them with `pycket+rediss+sentinel://...?sentinel_username=U&sentinel_password=P&ca=...`;
/// another user or no user is a configuration error at open.
#[cfg(feature = "tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_with_an_acl_user_over_tls() {
    let (ca, cert, key) = private_ca();
    let topology = SentinelTopology::start_with_auth(
        Some(&RedisTls {
            cert_pem: &cert,
            key_pem: &key,
            ca_pem: &ca,
            auth_clients: false,
        }),
        &SentinelAuth {
            username: Some("watcher"),
            password: "acl-pw",
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let ca_file = ca_file.display();
    let pycket = |query: &str| {
        format!(
            "{}?notifications_db=6&ca={ca_file}&{query}",
            pycket_url(&topology.tls_url(5))
        )
    };
    let good = "sentinel_username=watcher&sentinel_password=acl-pw";
    let store = PycketStore::open(&pycket(good))
        .await
        .unwrap_or_else(|e| panic!("pycket+rediss+sentinel with an ACL user: {e}"));
    login_round_trip(&store).await;

    let timeout = Duration::from_millis(1000);
    for query in [
        "sentinel_username=nobody&sentinel_password=acl-pw",
        // The default user is off.
        "sentinel_password=acl-pw",
        "",
    ] {
        let what = format!("TLS sentinels with an ACL user, {query:?}");
        let text = refused_by_the_sentinels(&pycket(query), timeout, &what).await;
        assert!(!text.contains("acl-pw"), "{text}");
    }
}

/// The pycket store through the sentinels rides out a failover like the native one: the
/// master dies (SIGKILL); meanwhile every operation fails as unavailable (or timeout) within
/// the command timeout and no acknowledged write is lost; once the replica is promoted, the
/// same store (not reopened) serves the session written before the kill, and its
/// transactions (a dedicated connection pool) write on the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pycket_follows_a_failover_without_a_restart() {
    let topology = SentinelTopology::start();
    let timeout = Duration::from_millis(500);
    let url = format!("{}?notifications_db=6", pycket_url(&topology.url(5)));
    let store = PycketStore::builder(url)
        .command_timeout(timeout)
        .connections(2)
        .build()
        .await
        .expect("open the pycket store through the sentinels");
    let key = new_key();
    assert_eq!(
        store.create(&key, &record(Some("ada"))).await.unwrap(),
        Created::Done
    );
    // Transactions have pooled connections to the master now.
    let now = Timestamp::now();
    assert_eq!(
        store
            .apply(&key, &Patch::new(now, now.plus(HOUR)))
            .await
            .unwrap(),
        Applied::Done
    );
    // pycket has no wait=N: make sure the replica has the session before the kill.
    topology.await_replicated(Duration::from_secs(10));
    let old = topology.master_port();
    let replica = topology
        .servers()
        .iter()
        .map(|s| s.port())
        .find(|p| *p != old)
        .unwrap();

    assert_eq!(topology.kill_master(), old);
    let Switch {
        took: switched,
        failures,
        acknowledged,
    } = ride_out(&store, &key, timeout).await;
    let new = topology.wait_for_new_master(old, Duration::from_secs(30));
    assert_eq!(new, replica, "the replica was promoted");
    println!(
        "pycket failover: the same session served again {switched:?} after SIGKILL \
         ({failures} failed loads in between, {} creates acknowledged during the switch)",
        acknowledged.len()
    );
    assert!(
        failures > 0,
        "the sentinels take >= 1 s to notice; loads must have failed meanwhile"
    );
    for k in &acknowledged {
        assert!(
            store.load(k).await.unwrap().is_some(),
            "a create acknowledged during the failover was lost"
        );
    }

    // Transactions go to the new master (the only server left), through the same store.
    let now = Timestamp::now();
    let mut patch = Patch::new(now, now.plus(HOUR));
    patch.set.push(("after".into(), "true".into()));
    assert_eq!(store.apply(&key, &patch).await.unwrap(), Applied::Done);
    let loaded = store.load(&key).await.unwrap().expect("the session");
    assert_eq!(loaded.data.get("after").map(String::as_str), Some("true"));
    let fresh = new_key();
    assert_eq!(
        store.create(&fresh, &record(Some("ada"))).await.unwrap(),
        Created::Done
    );
    assert_eq!(store.sessions_of("ada").await.unwrap().len(), 2);
    let keys = match topology.server(new).command(&["INFO", "keyspace"]) {
        Ok(Resp::Bulk(Some(text))) => String::from_utf8_lossy(&text).into_owned(),
        other => panic!("INFO keyspace: {other:?}"),
    };
    assert!(
        keys.contains("db5:keys="),
        "sessions on the new master: {keys}"
    );
}

/// What [`ride_out`] saw.
struct Switch {
    /// From the kill to the first successful load.
    took: Duration,
    /// Loads that failed meanwhile.
    failures: usize,
    /// Sessions created meanwhile whose create was acknowledged.
    acknowledged: Vec<SessionKey>,
}

/// Right after the master was killed: loads `key` and creates a session every 50 ms until the
/// load succeeds. Each operation must answer within the command timeout (plus slack) and
/// fail, if it fails, as unavailable or timeout.
async fn ride_out(store: &dyn SessionStore, key: &SessionKey, timeout: Duration) -> Switch {
    let bound = timeout * 3 + Duration::from_secs(1);
    let killed = Instant::now();
    let mut failures = 0;
    let mut acknowledged = Vec::new();
    loop {
        let started = Instant::now();
        let loaded = store.load(key).await;
        let took = started.elapsed();
        assert!(took < bound, "load took {took:?} during the failover");
        match loaded {
            Ok(Some(r)) => {
                assert_eq!(r.data.get("name").map(String::as_str), Some("\"Ada\""));
                return Switch {
                    took: killed.elapsed(),
                    failures,
                    acknowledged,
                };
            }
            Ok(None) => panic!("the session written with wait=1 was lost in the failover"),
            Err(e) => {
                assert!(
                    matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
                    "load during the failover: {e}"
                );
                if failures == 0 {
                    println!("during the failover: {:?}: {e}", e.kind());
                }
                failures += 1;
            }
        }
        // A write during the switch either fails or is really there afterwards.
        let started = Instant::now();
        let fresh = new_key();
        match store.create(&fresh, &record(None)).await {
            Ok(Created::Done) => acknowledged.push(fresh),
            Ok(Created::Collision) => panic!("collision on a fresh key"),
            Err(e) => assert!(
                matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
                "create during the failover: {e}"
            ),
        }
        let took = started.elapsed();
        assert!(took < bound, "create took {took:?} during the failover");
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the store did not follow the failover within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A private CA and a certificate for `127.0.0.1` it signed: (CA PEM, certificate PEM, key PEM).
#[cfg(feature = "tls")]
fn private_ca() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // OpenSSL (Redis's side) matches issuers by name: the CA needs one.
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cloakroom sentinel test CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.as_ref().pem(), cert.pem(), key.serialize_pem())
}

/// wait=N needs one master to WAIT on and pycket has no such write: refused before
/// connecting.
#[tokio::test]
async fn open_fails_clearly() {
    let err = PycketStore::open("pycket+redis://127.0.0.1:1/0?wait=1")
        .await
        .expect_err("wait on pycket");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("wait"), "{err}");
}

/// `host:port,host:port,host:port` of the shared topology's sentinels.
fn shared_hosts() -> String {
    shared()
        .sentinel_ports()
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The sentinels' credentials are options of Sentinel URLs only, and a user needs a
/// password: clear errors at open, the password never shown.
/// Bad `pycket+redis+sentinel://` URLs are one clear error when the store opens: the
/// Sentinel checks, and pycket's own.
#[tokio::test]
async fn pycket_sentinel_urls_fail_clearly() {
    let hosts = shared_hosts();
    for (url, kind, says) in [
        (
            format!("pycket+redis+sentinel://{hosts}"),
            ErrorKind::Config,
            "service",
        ),
        (
            format!("pycket+redis+sentinel://{hosts}/"),
            ErrorKind::Config,
            "service",
        ),
        (
            format!("pycket+redis+sentinel://{hosts}/nosuchservice/5"),
            ErrorKind::Config,
            "nosuchservice",
        ),
        (
            format!("pycket+redis+sentinel://{hosts}/cloakroom/x"),
            ErrorKind::Config,
            "database",
        ),
        (
            format!("pycket+redis+sentinel://{hosts}/cloakroom/5?notifications_db=5"),
            ErrorKind::Config,
            "notifications_db",
        ),
        (
            format!("pycket+redis+sentinel://{hosts}/cloakroom/5?bogus=1"),
            ErrorKind::Config,
            "bogus",
        ),
        (
            format!("pycket+redis+sentinel://{hosts}/cloakroom/5?sentinel_username=u"),
            ErrorKind::Config,
            "needs sentinel_password",
        ),
        (
            "pycket+redis://127.0.0.1:1/5?sentinel_password=hunter2".to_owned(),
            ErrorKind::Config,
            "Sentinel URLs",
        ),
        (
            "pycket+redis+sentinel://127.0.0.1:1/cloakroom/5".to_owned(),
            ErrorKind::Unavailable,
            "127.0.0.1:1",
        ),
    ] {
        let started = Instant::now();
        let err = PycketStore::builder(url.as_str())
            .command_timeout(Duration::from_millis(500))
            .build()
            .await
            .expect_err(&url);
        let text = error_text(&err);
        println!("{url}: {text}");
        assert_eq!(err.kind(), kind, "{url}: {text}");
        assert!(text.contains(says), "{url}: {text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(5), "{url}");
    }
}
