//! A Redis Sentinel topology for failover tests: a master, one replica and three sentinels
//! (`redis-server --sentinel`), all on free loopback ports, without persistence, killed on
//! drop.
//!
//! The sentinels declare the master down after 1 s without a reply (quorum 2 of 3) and
//! promote the replica; a failover typically completes 2 to 5 seconds after the master dies.
//!
//! [`SentinelTopology::start_tls`] makes the same topology speak TLS: the servers replicate
//! and the sentinels monitor them over their TLS ports, and the sentinels take TLS clients
//! on a TLS port of their own ([`SentinelTopology::tls_url`]). The plain ports stay open for
//! the test's own commands.
//!
//! [`SentinelTopology::start_with_auth`] makes the sentinels require a password of their
//! own ([`SentinelAuth`]: `requirepass`, or an ACL user with the default user off), of
//! their clients and of each other; the data servers stay open.
//!
//! ```no_run
//! use std::time::Duration;
//! use cloakroom_testkit::sentinel_server::SentinelTopology;
//!
//! let topology = SentinelTopology::start();
//! println!("connect to {}", topology.url(0));
//! let old = topology.kill_master();
//! let new = topology.wait_for_new_master(old, Duration::from_secs(30));
//! assert_ne!(old, new);
//! ```

use std::fmt;
use std::io::{self, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::redis_server::{RedisServer, RedisTls, Resp, command, free_port, read_reply};
use crate::spawn::{await_ready, kill, spawn_watchdog, temp_dir};

/// The service (master) name the sentinels monitor.
pub const SERVICE: &str = "cloakroom";

/// How long the topology may take to form: every sentinel sees the replica and the two
/// other sentinels (they announce themselves every 2 s).
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one sentinel may take to answer `PING` after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A master, a replica and three sentinels; see the [module docs](self).
pub struct SentinelTopology {
    servers: [RedisServer; 2],
    /// The ports the sentinels know the servers by (their TLS ports on a TLS topology).
    announced: [u16; 2],
    sentinels: Vec<SentinelProcess>,
}

/// What sentinels started by [`SentinelTopology::start_with_auth`] require.
#[derive(Clone, Copy)]
pub struct SentinelAuth<'a> {
    /// `Some(user)`: an ACL user `user on >password ~* &* +@all`, the default user off;
    /// `None`: `requirepass password` (the default user's password).
    pub username: Option<&'a str>,
    /// The password.
    pub password: &'a str,
}

impl fmt::Debug for SentinelAuth<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelAuth")
            .field("username", &self.username)
            .field("password", &"REDACTED")
            .finish()
    }
}

/// [`SentinelAuth`], owned by each sentinel for its own probes.
#[derive(Clone)]
struct Credentials {
    username: Option<String>,
    password: String,
}

struct SentinelProcess {
    port: u16,
    /// What the sentinel requires of its clients, if anything.
    auth: Option<Credentials>,
    /// The port for TLS clients, on a TLS topology.
    tls_port: Option<u16>,
    dir: PathBuf,
    procs: Mutex<(Option<Child>, Option<Child>)>,
}

impl fmt::Debug for SentinelTopology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelTopology")
            .field("servers", &self.servers)
            .field("sentinels", &self.sentinel_ports())
            .finish()
    }
}

impl SentinelTopology {
    /// Starts the master, the replica (replicating, in sync) and three sentinels monitoring
    /// [`SERVICE`], and waits until every sentinel knows the replica and the other two
    /// sentinels (so a failover can be agreed on).
    ///
    /// # Panics
    /// When `redis-server` is missing or the topology does not form within 30 seconds.
    pub fn start() -> SentinelTopology {
        let servers = [RedisServer::start(), RedisServer::start()];
        let announced = servers.each_ref().map(RedisServer::port);
        Self::assemble(servers, announced, None, None)
    }

    /// [`SentinelTopology::start`] (or, with `tls`, [`SentinelTopology::start_tls`]) with
    /// sentinels that require `auth` of every client and of each other (`sentinel
    /// sentinel-user`/`sentinel-pass`). The data servers require nothing. A store reaches
    /// them with `?sentinel_password=P` (and `sentinel_username=U` for an ACL user).
    ///
    /// # Panics
    /// As [`SentinelTopology::start`].
    pub fn start_with_auth(
        tls: Option<&RedisTls<'_>>,
        auth: &SentinelAuth<'_>,
    ) -> SentinelTopology {
        let auth = Credentials {
            username: auth.username.map(str::to_owned),
            password: auth.password.to_owned(),
        };
        match tls {
            Some(tls) => {
                let (servers, announced, tls) = tls_servers(tls);
                Self::assemble(servers, announced, Some(&tls), Some(&auth))
            }
            None => {
                let servers = [RedisServer::start(), RedisServer::start()];
                let announced = servers.each_ref().map(RedisServer::port);
                Self::assemble(servers, announced, None, Some(&auth))
            }
        }
    }

    /// [`SentinelTopology::start`] over TLS with the certificate, key and CA of `tls` (the
    /// certificate must name `127.0.0.1`: the sentinels name servers by address); client
    /// certificates are not asked for.
    ///
    /// # Panics
    /// As [`SentinelTopology::start`].
    pub fn start_tls(tls: &RedisTls<'_>) -> SentinelTopology {
        let (servers, announced, tls) = tls_servers(tls);
        Self::assemble(servers, announced, Some(&tls), None)
    }

    /// Makes the second server a replica of the first, starts the sentinels, waits until
    /// the topology has formed.
    fn assemble(
        servers: [RedisServer; 2],
        announced: [u16; 2],
        tls: Option<&RedisTls<'_>>,
        auth: Option<&Credentials>,
    ) -> SentinelTopology {
        let master = announced[0].to_string();
        match servers[1].command(&["REPLICAOF", "127.0.0.1", &master]) {
            Ok(Resp::Simple(ok)) if ok == "OK" => {}
            other => panic!("REPLICAOF failed: {other:?}"),
        }
        let sentinels = (0..3)
            .map(|_| SentinelProcess::start(announced[0], tls, auth))
            .collect();
        let topology = SentinelTopology {
            servers,
            announced,
            sentinels,
        };
        topology.await_formed();
        topology
    }

    /// The store URL through the sentinels:
    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/cloakroom/DB`.
    pub fn url(&self, db: u32) -> String {
        let hosts: Vec<String> = self
            .sentinel_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{SERVICE}/{db}", hosts.join(","))
    }

    /// On a TLS topology, the store URL through the sentinels' TLS ports:
    /// `rediss+sentinel://127.0.0.1:T1,127.0.0.1:T2,127.0.0.1:T3/cloakroom/DB`.
    ///
    /// # Panics
    /// When the topology was not started with [`SentinelTopology::start_tls`].
    pub fn tls_url(&self, db: u32) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| {
                let port = s.tls_port.expect("not a TLS topology: use start_tls");
                format!("127.0.0.1:{port}")
            })
            .collect();
        format!("rediss+sentinel://{}/{SERVICE}/{db}", hosts.join(","))
    }

    /// The sentinels' ports.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// The two data servers (the first started as master, the second as its replica; after a
    /// failover the roles are swapped).
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    /// The port of the master as the first sentinel that answers reports it (a TLS port on
    /// a TLS topology).
    ///
    /// # Panics
    /// When no sentinel answers with an address.
    pub fn master_port(&self) -> u16 {
        self.sentinels
            .iter()
            .find_map(|s| s.master_port())
            .expect("no sentinel reports a master")
    }

    /// The data server on `port` (its plain port, or the port the sentinels know it by).
    ///
    /// # Panics
    /// When neither server listens on `port`.
    pub fn server(&self, port: u16) -> &RedisServer {
        self.servers
            .iter()
            .zip(self.announced)
            .find(|(s, announced)| s.port() == port || *announced == port)
            .map(|(s, _)| s)
            .unwrap_or_else(|| panic!("no data server on port {port}"))
    }

    /// Kills the current master with SIGKILL (no goodbye to anyone) and returns its port.
    ///
    /// # Panics
    /// As [`SentinelTopology::master_port`].
    pub fn kill_master(&self) -> u16 {
        let port = self.master_port();
        self.server(port).stop();
        port
    }

    /// Waits until every sentinel reports a master other than `old` and that server says
    /// it is a master (`ROLE`); returns its port.
    ///
    /// # Panics
    /// When that does not happen within `limit`; the message quotes the sentinels' logs.
    pub fn wait_for_new_master(&self, old: u16, limit: Duration) -> u16 {
        let deadline = Instant::now() + limit;
        loop {
            let reported: Vec<Option<u16>> = self
                .sentinels
                .iter()
                .map(SentinelProcess::master_port)
                .collect();
            if let Some(Some(new)) = reported.first() {
                let agreed = reported.iter().all(|p| *p == Some(*new));
                let plain = self.server(*new).port();
                if agreed && *new != old && role(plain).as_deref() == Some("master") {
                    return *new;
                }
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .sentinels
                    .iter()
                    .map(|s| crate::spawn::log_tail(&s.log()))
                    .collect();
                panic!(
                    "no new master within {limit:?} (sentinels report {reported:?}):\n{}",
                    logs.join("\n---\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every replica of the current master has everything the master has written
    /// so far (replication offsets), e.g. before killing the master in a test that must not
    /// lose a write made without `?wait=N`.
    ///
    /// # Panics
    /// When that does not happen within `limit`.
    pub fn await_replicated(&self, limit: Duration) {
        let master = self.server(self.master_port()).port();
        let offset = |port: u16, field: &str| -> Option<u64> {
            let Ok(Resp::Bulk(Some(text))) = command(port, &["INFO", "replication"]) else {
                return None;
            };
            String::from_utf8_lossy(&text).lines().find_map(|line| {
                line.strip_prefix(field)?
                    .strip_prefix(':')?
                    .trim()
                    .parse()
                    .ok()
            })
        };
        let target = offset(master, "master_repl_offset").expect("master replication offset");
        let deadline = Instant::now() + limit;
        for replica in self.servers.iter().filter(|s| s.port() != master) {
            loop {
                let at = offset(replica.port(), "slave_repl_offset");
                if at.is_some_and(|at| at >= target) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "replica {} at offset {at:?}, master at {target}, after {limit:?}",
                    replica.port()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn await_formed(&self) {
        let deadline = Instant::now() + FORM_TIMEOUT;
        let replica = self.servers[1].port();
        loop {
            let in_sync = matches!(
                self.servers[1].command(&["INFO", "replication"]),
                Ok(Resp::Bulk(Some(text))) if String::from_utf8_lossy(&text).contains("master_link_status:up")
            );
            let states: Vec<Option<(u64, u64)>> =
                self.sentinels.iter().map(SentinelProcess::peers).collect();
            let formed = states
                .iter()
                .all(|s| matches!(s, Some((r, o)) if *r >= 1 && *o >= 2));
            if in_sync && formed {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "sentinel topology not formed within {FORM_TIMEOUT:?} (replica {replica} in \
                     sync: {in_sync}; (replicas, other sentinels) per sentinel: {states:?}): {}",
                    crate::spawn::log_tail(&self.sentinels[0].log())
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Two TLS servers (client certificates not asked for) that replicate over TLS, the ports
/// they announce (their TLS ports), and the TLS settings the sentinels use.
fn tls_servers<'a>(tls: &RedisTls<'a>) -> ([RedisServer; 2], [u16; 2], RedisTls<'a>) {
    let tls = RedisTls {
        auth_clients: false,
        ..*tls
    };
    let servers = [RedisServer::start_tls(&tls), RedisServer::start_tls(&tls)];
    for server in &servers {
        // Replicate (and announce the replica's port) over TLS.
        match server.command(&["CONFIG", "SET", "tls-replication", "yes"]) {
            Ok(Resp::Simple(ok)) if ok == "OK" => {}
            other => panic!("CONFIG SET tls-replication failed: {other:?}"),
        }
    }
    let announced = servers.each_ref().map(RedisServer::tls_port);
    (servers, announced, tls)
}

/// What the server on `port` says its role is (`master`, `slave`, ...).
fn role(port: u16) -> Option<String> {
    match command(port, &["ROLE"]) {
        Ok(Resp::Array(Some(fields))) => fields.first()?.as_str().map(str::to_owned),
        _ => None,
    }
}

impl SentinelProcess {
    fn start(
        master_port: u16,
        tls: Option<&RedisTls<'_>>,
        auth: Option<&Credentials>,
    ) -> SentinelProcess {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port(|_| true);
            let sentinel = SentinelProcess {
                port,
                auth: auth.cloned(),
                tls_port: tls.map(|_| free_port(|p| p != port)),
                dir: temp_dir("sentinel", port),
                procs: Mutex::new((None, None)),
            };
            match sentinel.spawn(master_port, tls) {
                Ok(()) => return sentinel,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start a sentinel: {last_error}");
    }

    fn log(&self) -> PathBuf {
        self.dir.join(format!("sentinel-{}.log", self.port))
    }

    fn procs(&self) -> MutexGuard<'_, (Option<Child>, Option<Child>)> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the configuration (the sentinel rewrites it as it learns the topology),
    /// spawns the sentinel and its watchdog, waits for `PING`.
    fn spawn(&self, master_port: u16, tls: Option<&RedisTls<'_>>) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let conf = self.dir.join("sentinel.conf");
        let log = self.log();
        let mut text = format!(
            "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {log}\n\
             sentinel resolve-hostnames no\n\
             sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {SERVICE} 1000\n\
             sentinel failover-timeout {SERVICE} 5000\n\
             sentinel parallel-syncs {SERVICE} 1\n",
            port = self.port,
            dir = self.dir.display(),
            log = log.display(),
        );
        match &self.auth {
            // The sentinels talk to each other with the same credentials.
            Some(Credentials {
                username: Some(user),
                password,
            }) => text.push_str(&format!(
                "user default off\nuser {user} on >{password} ~* &* +@all\n\
                 sentinel sentinel-user {user}\nsentinel sentinel-pass {password}\n"
            )),
            Some(Credentials {
                username: None,
                password,
            }) => text.push_str(&format!(
                "requirepass {password}\nsentinel sentinel-pass {password}\n"
            )),
            None => {}
        }
        if let (Some(tls), Some(tls_port)) = (tls, self.tls_port) {
            // TLS to the servers and the other sentinels, and for clients on `tls_port`.
            text.push_str(&format!(
                "tls-port {tls_port}\ntls-replication yes\ntls-auth-clients no\n"
            ));
            for (option, name, pem) in [
                ("tls-cert-file", "server.pem", tls.cert_pem),
                ("tls-key-file", "server-key.pem", tls.key_pem),
                ("tls-ca-cert-file", "ca.pem", tls.ca_pem),
            ] {
                let path = self.dir.join(name);
                std::fs::write(&path, pem).map_err(|e| format!("{}: {e}", path.display()))?;
                text.push_str(&format!("{option} {}\n", path.display()));
            }
        }
        std::fs::write(&conf, text).map_err(|e| format!("{}: {e}", conf.display()))?;
        let mut child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("redis-server not found ({e}): run scripts/test.sh or apt-get install -y redis-server")
            })?;
        let watchdog = spawn_watchdog(child.id(), &self.dir);
        let what = format!("redis sentinel on port {}", self.port);
        let times = (START_TIMEOUT, Duration::from_millis(20));
        let watchdog = await_ready(
            &what,
            &mut child,
            watchdog,
            &log,
            times,
            || matches!(self.command(&["PING"]), Ok(Resp::Simple(s)) if s == "PONG"),
        )?;
        *self.procs() = (Some(child), watchdog);
        Ok(())
    }

    /// Sends one command to this sentinel on a fresh connection, after `AUTH` if it requires
    /// credentials.
    fn command(&self, args: &[&str]) -> io::Result<Resp> {
        let Some(auth) = &self.auth else {
            return command(self.port, args);
        };
        let mut login = vec!["AUTH"];
        login.extend(auth.username.as_deref());
        login.push(&auth.password);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut request = Vec::new();
        for command in [&login[..], args] {
            request.extend_from_slice(format!("*{}\r\n", command.len()).as_bytes());
            for arg in command {
                request.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
            }
        }
        stream.write_all(&request)?;
        let mut replies = BufReader::new(stream);
        match read_reply(&mut replies)? {
            Resp::Simple(ok) if ok == "OK" => read_reply(&mut replies),
            refused => Err(io::Error::other(format!("AUTH refused: {refused:?}"))),
        }
    }

    /// The master's port as this sentinel reports it.
    fn master_port(&self) -> Option<u16> {
        match self.command(&["SENTINEL", "get-master-addr-by-name", SERVICE]) {
            Ok(Resp::Array(Some(addr))) => addr.get(1)?.as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// (replicas, other sentinels) this sentinel knows for the service.
    fn peers(&self) -> Option<(u64, u64)> {
        let Ok(Resp::Array(Some(fields))) = self.command(&["SENTINEL", "master", SERVICE]) else {
            return None;
        };
        let value = |name: &str| -> Option<u64> {
            let at = fields.iter().position(|f| f.as_str() == Some(name))?;
            fields.get(at + 1)?.as_str()?.parse().ok()
        };
        Some((value("num-slaves")?, value("num-other-sentinels")?))
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        let mut procs = self.procs();
        kill(&mut procs.0);
        kill(&mut procs.1);
        drop(procs);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
