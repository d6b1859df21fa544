//! RedisStore through Redis Sentinel (`redis+sentinel://`): the conformance suite, a
//! failover (master killed with SIGKILL, replica promoted) followed without a restart,
//! `?wait=N`, and the configuration errors at open.
//!
//! Each test that kills a master starts its own topology (a master, a replica, three
//! sentinels); the others share one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cloakroom_core::session::{SessionId, SessionKey, Timestamp};
use cloakroom_core::store::{Created, ErrorKind, Patch, Record, SessionStore};
use cloakroom_redis::{PycketStore, RedisStore};
use cloakroom_testkit::Purge;
use cloakroom_testkit::redis_server::{RedisTls, Resp};
use cloakroom_testkit::sentinel_server::SentinelTopology;

const HOUR: Duration = Duration::from_secs(3600);

fn shared() -> &'static SentinelTopology {
    static SHARED: OnceLock<SentinelTopology> = OnceLock::new();
    SHARED.get_or_init(SentinelTopology::start)
}

fn unique_prefix(kind: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "sent-{kind}-{}-{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn new_key() -> SessionKey {
    SessionId::generate().key()
}

fn record(user: Option<&str>) -> Record {
    let now = Timestamp::now();
    let mut r = Record::new(now, now.plus(HOUR));
    r.data.insert("name".into(), "\"Ada\"".into());
    r.meta.user = user.map(str::to_owned);
    r
}

async fn conformance_store() -> Arc<dyn SessionStore> {
    let store = RedisStore::builder(shared().url(0))
        .prefix(unique_prefix("conf"))
        .build()
        .await
        .unwrap_or_else(|e| panic!("opening the sentinel store: {e}"));
    Arc::new(store)
}

/// The whole conformance suite through the sentinels (it runs on the master they name).
mod through_sentinel {
    use super::*;

    cloakroom_testkit::conformance_tests!(conformance_store(), purge = Purge::EngineExpires);
}

/// Whether the Redis server on `port` holds `key`.
fn exists(topology: &SentinelTopology, port: u16, key: &str) -> bool {
    matches!(
        topology.server(port).command(&["EXISTS", key]),
        Ok(Resp::Int(1))
    )
}

/// The master dies (SIGKILL). While the sentinels agree on a new one, every operation fails
/// as unavailable (or timeout) within the command timeout, and no write is acknowledged and
/// then lost; once the replica is promoted, the same store (not reopened) serves the
/// session written before the kill and creates new sessions on the new master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_failover_without_a_restart() {
    let topology = SentinelTopology::start();
    let timeout = Duration::from_millis(500);
    let prefix = unique_prefix("failover");
    let open = |options: &str| {
        RedisStore::builder(format!("{}{options}", topology.url(0)))
            .prefix(prefix.clone())
            .command_timeout(timeout)
            .build()
    };
    let store = open("").await.expect("open through the sentinels");
    // wait=1: the session is on the replica before create returns, so it survives the kill.
    let durable = open("?wait=1").await.expect("open with wait=1");
    let key = new_key();
    assert_eq!(
        durable.create(&key, &record(Some("ada"))).await.unwrap(),
        Created::Done
    );
    let old = topology.master_port();
    let replica = topology
        .servers()
        .iter()
        .map(|s| s.port())
        .find(|p| *p != old)
        .unwrap();
    assert!(
        exists(&topology, replica, &store.session_key(&key)),
        "wait=1: the session is on the replica when create returns"
    );

    assert_eq!(topology.kill_master(), old);
    let Switch {
        took: switched,
        failures,
        acknowledged,
    } = ride_out(&store, &key, timeout).await;
    let new = topology.wait_for_new_master(old, Duration::from_secs(30));
    assert_eq!(new, replica, "the replica was promoted");
    println!(
        "failover: the same session served again {switched:?} after SIGKILL \
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

    // With its replica dead the new master has none: wait=1 writes are refused, not
    // acknowledged unreplicated.
    let err = durable
        .create(&new_key(), &record(None))
        .await
        .expect_err("wait=1 without a replica");
    assert!(
        matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{err}"
    );

    // New sessions go to the new master, through the same store.
    let fresh = new_key();
    assert_eq!(
        store.create(&fresh, &record(Some("ada"))).await.unwrap(),
        Created::Done
    );
    assert!(exists(&topology, new, &store.session_key(&fresh)));
    let now = Timestamp::now();
    store
        .apply(&key, &Patch::new(now, now.plus(HOUR)))
        .await
        .unwrap();
    assert_eq!(store.sessions_of("ada").await.unwrap().len(), 2);
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
async fn ride_out(store: &RedisStore, key: &SessionKey, timeout: Duration) -> Switch {
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

/// `?wait=N`: every write is followed by `WAIT N timeout` on the same connection; a write
/// that reaches fewer than N replicas within the command timeout fails as unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_replicas_after_writes() {
    let topology = shared();
    let master = topology.master_port();
    let store = RedisStore::open(&format!(
        "{}?wait=1&prefix={}",
        topology.url(0),
        unique_prefix("wait")
    ))
    .await
    .unwrap();
    // Server-wide counts (other tests share the server), so only "at least".
    let waits = || {
        let stats = topology.server(master).commandstats();
        stats.get("wait").copied().unwrap_or(0)
    };
    let before = waits();
    let key = new_key();
    assert_eq!(
        store.create(&key, &record(Some("bo"))).await.unwrap(),
        Created::Done
    );
    let replica = topology
        .servers()
        .iter()
        .map(|s| s.port())
        .find(|p| *p != master)
        .unwrap();
    assert!(exists(topology, replica, &store.session_key(&key)));
    let now = Timestamp::now();
    store
        .apply(&key, &Patch::new(now, now.plus(HOUR)))
        .await
        .unwrap();
    store.touch(&key, now, now.plus(HOUR)).await.unwrap();
    assert!(store.delete(&key).await.unwrap());
    store.create(&new_key(), &record(Some("bo"))).await.unwrap();
    assert_eq!(store.delete_user("bo", None).await.unwrap(), 1);
    // create: session + user index; apply; touch; delete; create x2; delete_user.
    let sent = waits() - before;
    assert!(sent >= 8, "{sent} WAIT commands for 8 writes");

    // Only one replica: wait=2 cannot be met. WAIT gets three quarters of the timeout: a
    // loaded machine may run out of the rest first, which is a Timeout (also a 503).
    let timeout = Duration::from_millis(1000);
    let strict = RedisStore::builder(format!("{}?wait=2", topology.url(0)))
        .prefix(unique_prefix("wait2"))
        .command_timeout(timeout)
        .build()
        .await
        .unwrap();
    let key = new_key();
    let started = Instant::now();
    let err = strict
        .create(&key, &record(None))
        .await
        .expect_err("wait=2 with one replica");
    let took = started.elapsed();
    match err.kind() {
        ErrorKind::Unavailable => assert!(err.to_string().contains("replica"), "{err}"),
        ErrorKind::Timeout => {}
        other => panic!("wait=2 with one replica: {other:?}: {err}"),
    }
    assert!(took < Duration::from_secs(5), "took {took:?}");
    println!("wait=2 with one replica: {err} after {took:?}");
    // Reads do not wait.
    assert_eq!(strict.load(&new_key()).await.unwrap(), None);
}

/// A private CA and a certificate for `127.0.0.1` it signed: (CA PEM, certificate PEM, key PEM).
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

/// `rediss+sentinel://`: the sentinels and the master they name are reached over TLS and
/// verified against `?ca=`; another CA is refused at open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls() {
    let (ca, cert, key) = private_ca();
    let topology = SentinelTopology::start_tls(&RedisTls {
        cert_pem: &cert,
        key_pem: &key,
        ca_pem: &ca,
        auth_clients: false,
    });
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let url = format!("{}?ca={}", topology.tls_url(0), ca_file.display());
    let store = RedisStore::builder(url.as_str())
        .prefix(unique_prefix("tls"))
        .build()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let key = new_key();
    assert_eq!(
        store.create(&key, &record(None)).await.unwrap(),
        Created::Done
    );
    assert!(store.load(&key).await.unwrap().is_some());
    // Only TLS ports were named (sentinels' and, by them, the master's): it went over TLS.
    let master = topology.master_port();
    assert_eq!(topology.server(master).tls_port(), master);
    assert!(exists(&topology, master, &store.session_key(&key)));

    let (other_ca, _, _) = private_ca();
    let other_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_file, other_ca).unwrap();
    let url = format!("{}?ca={}", topology.tls_url(0), other_file.display());
    let err = RedisStore::open(&url).await.expect_err("an unknown CA");
    println!("rediss+sentinel with another CA: {err}");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");
}

/// Bad sentinel URLs are one clear error when the store opens.
#[tokio::test]
async fn open_fails_clearly() {
    let topology = shared();
    let hosts = topology
        .sentinel_ports()
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    for (url, kind, says) in [
        (
            "redis+sentinel:///cloakroom/0".to_owned(),
            ErrorKind::Config,
            "no sentinel",
        ),
        (
            format!("redis+sentinel://{hosts}"),
            ErrorKind::Config,
            "service",
        ),
        (
            format!("redis+sentinel://{hosts}/"),
            ErrorKind::Config,
            "service",
        ),
        (
            format!("redis+sentinel://{hosts}/nosuchservice/0"),
            ErrorKind::Config,
            "nosuchservice",
        ),
        (
            format!("redis+sentinel://{hosts}/cloakroom/x"),
            ErrorKind::Config,
            "database",
        ),
        (
            format!("redis+sentinel://{hosts}/cloakroom/0?wait=x"),
            ErrorKind::Config,
            "wait",
        ),
        (
            format!("redis+sentinel://{hosts}/cloakroom/0?bogus=1"),
            ErrorKind::Config,
            "bogus",
        ),
        // Nobody listens on port 1.
        (
            "redis+sentinel://127.0.0.1:1/cloakroom/0".to_owned(),
            ErrorKind::Unavailable,
            "127.0.0.1:1",
        ),
    ] {
        let started = Instant::now();
        let err = RedisStore::builder(url.as_str())
            .command_timeout(Duration::from_millis(500))
            .build()
            .await
            .expect_err(&url);
        println!("{url}: {err}");
        assert_eq!(err.kind(), kind, "{url}: {err}");
        let text = format!("{err} {:?}", std::error::Error::source(&err));
        assert!(text.contains(says), "{url}: {text}");
        assert!(started.elapsed() < Duration::from_secs(5), "{url}");
    }
    // wait=N needs one master to WAIT on: refused before connecting for a Cluster and for
    // the pycket store.
    let err = RedisStore::open("redis+cluster://127.0.0.1:1,127.0.0.1:2?wait=1")
        .await
        .expect_err("wait on a Cluster");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("wait"), "{err}");
    let err = PycketStore::open("pycket+redis://127.0.0.1:1/0?wait=1")
        .await
        .expect_err("wait on pycket");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("wait"), "{err}");
}
