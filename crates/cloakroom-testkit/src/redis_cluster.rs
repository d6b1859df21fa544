//! A real three-master Redis Cluster for tests, on free loopback ports, built from the
//! [`RedisServer`]s of [`crate::redis_server`] (plain or TLS), killed on drop; share one per
//! test binary with [`RedisCluster::shared`].

use std::fmt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::redis_server::{
    CLUSTER_TIMEOUT, NOT_INSTALLED, RedisServer, RedisTls, Resp, port_is_free,
};

/// Three Redis Cluster masters (no replicas) on free loopback ports, all 16384 slots
/// assigned, killed on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCluster")
            .field("ports", &self.ports())
            .finish()
    }
}

impl RedisCluster {
    /// Starts three masters, joins them with `redis-cli --cluster create` and waits until
    /// every node reports `cluster_state:ok`.
    ///
    /// # Panics
    /// When `redis-server` or `redis-cli` is missing or the cluster does not form within 30
    /// seconds.
    pub fn start() -> RedisCluster {
        Self::start_nodes(None)
    }

    /// Starts a cluster whose nodes also listen for TLS (as [`RedisServer::start_tls`]) and
    /// talk TLS among themselves (`--tls-cluster yes`); [`RedisCluster::tls_url`] names the
    /// TLS ports. The cluster is formed over the plain ports.
    ///
    /// # Panics
    /// As [`RedisCluster::start`].
    pub fn start_tls(tls: &RedisTls<'_>) -> RedisCluster {
        Self::start_nodes(Some(tls))
    }

    fn start_nodes(tls: Option<&RedisTls<'_>>) -> RedisCluster {
        let mut nodes: Vec<RedisServer> = Vec::with_capacity(3);
        for _ in 0..3 {
            // The cluster bus listens on port + 10000.
            let bus_free = |p: u16| p <= 55_535 && port_is_free(p + 10_000);
            // The nodes file is relative to the node's own directory (`--dir`).
            let mut args: Vec<String> = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]
            .map(String::from)
            .to_vec();
            let node = match tls {
                None => RedisServer::start_with(&args, bus_free),
                Some(tls) => {
                    args.extend(["--tls-cluster".into(), "yes".into()]);
                    RedisServer::start_tls_with(tls, &args, bus_free)
                }
            };
            nodes.push(node);
        }
        let cluster = RedisCluster { nodes };
        cluster.create();
        cluster
    }

    /// `rediss+cluster://127.0.0.1:T1,...` (the TLS ports) of a [`RedisCluster::start_tls`]
    /// cluster.
    ///
    /// # Panics
    /// When the cluster has no TLS ports.
    pub fn tls_url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.tls_port()))
            .collect();
        format!("rediss+cluster://{}", nodes.join(","))
    }

    /// A cluster shared by every caller in this test binary, started on first use and killed
    /// when the test binary exits. Give each test its own key prefix.
    ///
    /// # Panics
    /// As [`RedisCluster::start`].
    pub fn shared() -> &'static RedisCluster {
        static SHARED: OnceLock<RedisCluster> = OnceLock::new();
        SHARED.get_or_init(RedisCluster::start)
    }

    /// The URL to connect to: `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The nodes' ports.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port()).collect()
    }

    /// The nodes (masters), e.g. to count keys per node.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    fn create(&self) {
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let mut cli = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-cli not found ({e}): {NOT_INSTALLED}"));
        // redis-cli waits for ever for nodes that cannot reach each other's bus.
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        while cli.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = cli.kill();
                let _ = cli.wait();
                panic!("redis-cli --cluster create did not finish within {CLUSTER_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = cli
            .wait_with_output()
            .unwrap_or_else(|e| panic!("redis-cli --cluster create: {e}"));
        if !out.status.success() {
            panic!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        for node in &self.nodes {
            loop {
                let info = node.command(&["CLUSTER", "INFO"]);
                if let Ok(Resp::Bulk(Some(text))) = &info {
                    if String::from_utf8_lossy(text).contains("cluster_state:ok") {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    panic!(
                        "cluster node {} not ok within {CLUSTER_TIMEOUT:?}: {info:?}",
                        node.port()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
