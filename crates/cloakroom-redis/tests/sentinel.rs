//! RedisStore through Redis Sentinel (`redis+sentinel://`): the conformance suite, a
//! failover (master killed with SIGKILL, replica promoted) followed without a restart,
//! `?wait=N`, sentinels
//! that require a password of their own (`?sentinel_password=`, `?sentinel_username=`, plain
//! and over TLS), and the configuration errors at open.
//!
//! Each test that kills a master starts its own topology (a master, a replica, three
//! sentinels); the others share one.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cloakroom_core::session::{SessionKey, Timestamp};
use cloakroom_core::store::{Created, ErrorKind, Patch, SessionStore};
use cloakroom_redis::RedisStore;
use cloakroom_testkit::Purge;
#[cfg(feature = "tls")]
use cloakroom_testkit::redis_server::RedisTls;
use cloakroom_testkit::redis_server::Resp;
use cloakroom_testkit::sentinel_server::{SentinelAuth, SentinelTopology};
use cloakroom_testkit::store_checks::{error_text, login_round_trip, record};
use cloakroom_testkit::{new_key, unique_prefix};

const HOUR: Duration = Duration::from_secs(3600);

fn shared() -> &'static SentinelTopology {
    static SHARED: OnceLock<SentinelTopology> = OnceLock::new();
    SHARED.get_or_init(SentinelTopology::start)
}

async fn conformance_store() -> Arc<dyn SessionStore> {
    let store = common::open_fresh(shared().url(0), "conf").await;
    Arc::new(store)
}

/// The whole conformance suite through the sentinels (it runs on the master they name).
mod through_sentinel {
    use super::*;

    cloakroom_testkit::conformance_tests!(conformance_store(), purge = Purge::EngineExpires);
}

/// The event log through the sentinels (the same scripts as on one server).
mod through_sentinel_logged {
    use super::*;

    async fn logged_store(cap: usize) -> Arc<dyn SessionStore> {
        let store = common::open_fresh_with(shared().url(0), "log", |b| b.event_log(cap)).await;
        Arc::new(store)
    }

    cloakroom_testkit::event_log_tests!(
        logged_store,
        expiry = cloakroom_testkit::ExpiryEvents::Noticed
    );
}

/// With `?wait=N` and the event log, every logged write waits for the replica too, and the
/// events are on the replica with the changes (they are written by the same script).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logged_writes_wait_for_replicas() {
    use cloakroom_core::session::{EndReason, Event, EventKind};
    use cloakroom_core::store::{Limit, LimitPolicy, Position};

    let topology = shared();
    let master = topology.master_port();
    let prefix = unique_prefix("logwait");
    let store = RedisStore::open(&format!(
        "{}?wait=1&events=1000&prefix={prefix}",
        topology.url(0)
    ))
    .await
    .unwrap();
    let log = store.event_log().expect("a log");
    let waits = || {
        let stats = topology.server(master).commandstats();
        stats.get("wait").copied().unwrap_or(0)
    };
    let event = |kind, key: &SessionKey| Event {
        kind,
        session: *key,
        user: None,
        at: Timestamp::now(),
    };
    let before = waits();
    let (a, b) = (new_key(), new_key());
    let limit = Limit {
        max: 1,
        policy: LimitPolicy::EndLeastRecentlySeen,
        replacing: None,
    };
    log.create_logged(
        &a,
        &record(Some("lw")),
        None,
        &event(EventKind::Created, &a),
    )
    .await
    .unwrap();
    let created = event(EventKind::Created, &b);
    log.create_logged(&b, &record(Some("lw")), Some(&limit), &created)
        .await
        .unwrap();
    let logout = event(EventKind::Ended(EndReason::Logout), &b);
    assert!(log.delete_logged(&b, &logout).await.unwrap());
    let revoked = log
        .delete_user_logged("lw", None, EndReason::Revoked, Timestamp::now())
        .await
        .unwrap();
    assert_eq!(revoked, 0, "the limit ended the first session already");
    let sent = waits() - before;
    assert!(sent >= 4, "{sent} WAIT commands for 4 logged writes");
    let replica = topology
        .servers()
        .iter()
        .map(|s| s.port())
        .find(|p| *p != master)
        .unwrap();
    assert!(exists(
        topology,
        replica,
        format!("{prefix}events").as_bytes()
    ));
    // created a, limit a, created b, logout b.
    let batch = log.read(&Position::start(), 100).await.unwrap();
    assert_eq!(batch.events.len(), 4, "{:?}", batch.events);
}

/// A password that needs percent-encoding in a URL, and its encoding.
const SENTINEL_PASSWORD: (&str, &str) = ("s3nt:p@ss/w", "s3nt%3Ap%40ss%2Fw");

/// Sentinels with `requirepass` (and `sentinel sentinel-pass` among themselves): both stores
/// reach them with `?sentinel_password=` (percent-encoded) and run a login through them; no
/// password or a wrong one is a configuration error at open that names the sentinel and
/// never shows the password.
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
    let redis_url = |query: &str| {
        format!(
            "{}?prefix={}&{query}",
            topology.url(0),
            unique_prefix("auth")
        )
    };
    let good = format!("sentinel_password={encoded}");
    let store = RedisStore::open(&redis_url(&good))
        .await
        .unwrap_or_else(|e| panic!("through sentinels with requirepass: {e}"));
    login_round_trip(&store).await;
    let shown = format!("{store:?}");
    // RESP3: the password goes in HELLO, to the sentinels and (none) to the servers.
    let resp3 = RedisStore::open(&redis_url(&format!("{good}&protocol=resp3")))
        .await
        .unwrap_or_else(|e| panic!("RESP3 through sentinels with requirepass: {e}"));
    login_round_trip(&resp3).await;
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
        for text in refused_by_the_sentinels(&redis_url(query), timeout, &what).await {
            assert!(text.contains(says), "{text}");
            assert!(!text.contains("not-the-password"), "{text}");
            assert!(!text.contains(password), "{text}");
        }
    }
}

/// Opening the store at `redis_url` fails with a configuration error that names the
/// sentinel; its full text (printed, with `what`).
async fn refused_by_the_sentinels(redis_url: &str, timeout: Duration, what: &str) -> Vec<String> {
    let errors = [RedisStore::builder(redis_url)
        .command_timeout(timeout)
        .build()
        .await
        .err()];
    errors
        .into_iter()
        .map(|err| {
            let err = err.unwrap_or_else(|| panic!("{what}: accepted"));
            let text = error_text(&err);
            println!("{what}: {text}");
            assert_eq!(err.kind(), ErrorKind::Config, "{text}");
            assert!(
                text.contains("sentinel 127.0.0.1:"),
                "names the sentinel: {text}"
            );
            text
        })
        .collect()
}

/// Sentinels over TLS that know only an ACL user (the default user off): both stores reach
/// them with `rediss+sentinel://...?sentinel_username=U&sentinel_password=P&ca=...`; another
/// user or no user is a configuration error at open.
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
    let redis_url = |query: &str| format!("{}?ca={ca_file}&{query}", topology.tls_url(0));
    let good = "sentinel_username=watcher&sentinel_password=acl-pw";
    let store = common::open_fresh(redis_url(good), "acl").await;
    login_round_trip(&store).await;

    let timeout = Duration::from_millis(1000);
    for query in [
        "sentinel_username=nobody&sentinel_password=acl-pw",
        // The default user is off.
        "sentinel_password=acl-pw",
        "",
    ] {
        let what = format!("TLS sentinels with an ACL user, {query:?}");
        for text in refused_by_the_sentinels(&redis_url(query), timeout, &what).await {
            assert!(!text.contains("acl-pw"), "{text}");
        }
    }
}

/// Whether the Redis server on `port` holds `key`.
fn exists(topology: &SentinelTopology, port: u16, key: &[u8]) -> bool {
    matches!(
        topology.server(port).command_bytes(&[b"EXISTS", key]),
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
    let strict = common::open_fresh_with(format!("{}?wait=2", topology.url(0)), "wait2", |b| {
        b.command_timeout(timeout)
    })
    .await;
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

/// `rediss+sentinel://`: the sentinels and the master they name are reached over TLS and
/// verified against `?ca=`; another CA is refused at open.
#[cfg(feature = "tls")]
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
    let store = common::open_fresh(url.as_str(), "tls").await;
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
    let hosts = shared_hosts();
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
    // wait=N needs one master to WAIT on: refused before connecting for a Cluster.
    let err = RedisStore::open("redis+cluster://127.0.0.1:1,127.0.0.1:2?wait=1")
        .await
        .expect_err("wait on a Cluster");
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
#[tokio::test]
async fn sentinel_credentials_fail_clearly() {
    let hosts = shared_hosts();
    for (url, says) in [
        (
            format!("redis+sentinel://{hosts}/cloakroom/0?sentinel_username=u"),
            "needs sentinel_password",
        ),
        (
            format!("redis+sentinel://{hosts}/cloakroom/0?sentinel_password="),
            "sentinel_password",
        ),
        (
            "redis://127.0.0.1:1/0?sentinel_password=hunter2".to_owned(),
            "Sentinel URLs",
        ),
        (
            "redis+cluster://127.0.0.1:1?sentinel_password=hunter2".to_owned(),
            "Sentinel URLs",
        ),
    ] {
        let err = RedisStore::open(&url).await.expect_err(&url);
        println!("{url}: {err}");
        assert_eq!(err.kind(), ErrorKind::Config, "{url}: {err}");
        assert!(err.to_string().contains(says), "{url}: {err}");
        assert!(!error_text(&err).contains("hunter2"), "{err}");
    }
}
