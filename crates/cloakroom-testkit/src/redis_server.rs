//! Real Redis servers for tests: a standalone [`RedisServer`] (and, in
//! [`crate::redis_cluster`], a three-master [`RedisCluster`] made of them), each on free
//! loopback ports, without persistence, killed on drop.
//!
//! Tests never skip: when `redis-server` is not installed, starting one panics with a message
//! saying how to install it.
//!
//! Servers are cheap but not free (a cluster takes a second or two to form), so a test binary
//! should share one: [`RedisServer::shared`] and [`RedisCluster::shared`] start one lazily and
//! keep it for the life of the test binary (give each test its own key prefix). A shared server
//! lives in a `static` and is never dropped; a watchdog shell process beside each server kills
//! it within a second of the test binary exiting, however it exits.
//!
//! Command counting ([`RedisServer::reset_stats`], [`RedisServer::command_count`]) is
//! server-wide: use a server of your own ([`RedisServer::start`]) for it, not a shared one.
//!
//! ```no_run
//! use cloakroom_testkit::redis_server::RedisServer;
//!
//! let server = RedisServer::start();
//! println!("connect to {}", server.url());
//! server.reset_stats();
//! // ... one store operation ...
//! assert!(server.command_count() <= 1);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

pub use crate::redis_cluster::RedisCluster;
use crate::spawn::{await_ready, kill, retry_start, spawn_watchdog, temp_dir};

pub(crate) const NOT_INSTALLED: &str =
    "redis-server not found: run scripts/test.sh or apt-get install -y redis-server";

/// How long a server may take to answer `PING` after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a cluster may take to reach `cluster_state:ok` on every node.
pub(crate) const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

/// Commands that the statistics helpers send themselves, left out of [`RedisServer::command_count`].
const OWN_COMMANDS: &[&str] = &["info", "config", "slowlog"];

/// The TLS set-up of a [`RedisServer::start_tls`] server, as PEM text.
#[derive(Debug, Clone, Copy)]
pub struct RedisTls<'a> {
    /// The server's certificate (chain), `--tls-cert-file`.
    pub cert_pem: &'a str,
    /// Its private key, `--tls-key-file`.
    pub key_pem: &'a str,
    /// The CA that client certificates must chain to, `--tls-ca-cert-file`.
    pub ca_pem: &'a str,
    /// Whether clients must present a certificate (`--tls-auth-clients yes`, mutual TLS).
    pub auth_clients: bool,
}

/// A `redis-server` process on a free loopback port, with no persistence.
///
/// Killed (and its temporary directory removed) when dropped. [`RedisServer::stop`] and
/// [`RedisServer::restart`] simulate an outage; the port stays the same.
pub struct RedisServer {
    port: u16,
    /// The TLS port, for a server started with [`RedisServer::start_tls`].
    tls_port: Option<u16>,
    dir: PathBuf,
    extra_args: Vec<String>,
    procs: Mutex<Procs>,
}

#[derive(Default)]
struct Procs {
    server: Option<Child>,
    watchdog: Option<Child>,
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("running", &self.procs().server.is_some())
            .finish()
    }
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not come up within 10 seconds.
    pub fn start() -> RedisServer {
        Self::start_with(&[], |_| true)
    }

    /// Starts a server that keeps every acknowledged write across [`RedisServer::restart`]
    /// (append-only file, fsync on every write), for fault tests that check nothing is lost.
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    pub fn start_persistent() -> RedisServer {
        let args = ["--appendonly", "yes", "--appendfsync", "always"].map(String::from);
        Self::start_with(&args, |_| true)
    }

    /// A server shared by every caller in this test binary, started on first use and killed
    /// when the test binary exits. Give each test its own key prefix.
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    pub fn shared() -> &'static RedisServer {
        static SHARED: OnceLock<RedisServer> = OnceLock::new();
        SHARED.get_or_init(RedisServer::start)
    }

    /// Starts a server that also listens for TLS on a second free port ([`RedisServer::tls_url`],
    /// `--tls-port`), with the certificate, key and CA of `tls` (written to files in its
    /// directory). The plain port stays open for the test's own commands
    /// ([`RedisServer::command`], statistics); point the code under test at the TLS port.
    ///
    /// # Panics
    /// As [`RedisServer::start`].
    pub fn start_tls(tls: &RedisTls<'_>) -> RedisServer {
        Self::start_tls_with(tls, &[], |_| true)
    }

    /// [`RedisServer::start_tls`] with extra arguments, on a plain port accepted by `port_ok`.
    pub(crate) fn start_tls_with(
        tls: &RedisTls<'_>,
        more: &[String],
        port_ok: impl Fn(u16) -> bool,
    ) -> RedisServer {
        check_installed();
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port(&port_ok);
            let tls_port = free_port(|p| p != port);
            let dir = temp_dir("redis", port);
            let files = [
                ("--tls-cert-file", "server.pem", tls.cert_pem),
                ("--tls-key-file", "server-key.pem", tls.key_pem),
                ("--tls-ca-cert-file", "ca.pem", tls.ca_pem),
            ];
            let mut extra = vec!["--tls-port".to_owned(), tls_port.to_string()];
            for (flag, name, pem) in files {
                let path = dir.join(name);
                std::fs::create_dir_all(&dir)
                    .and_then(|()| std::fs::write(&path, pem))
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
                extra.extend([flag.to_owned(), path.display().to_string()]);
            }
            let auth = if tls.auth_clients { "yes" } else { "no" };
            extra.extend(["--tls-auth-clients".to_owned(), auth.to_owned()]);
            extra.extend(more.iter().cloned());
            let server = RedisServer {
                port,
                tls_port: Some(tls_port),
                dir,
                extra_args: extra,
                procs: Mutex::new(Procs::default()),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start redis-server with TLS: {last_error}");
    }

    /// `rediss://127.0.0.1:TLS_PORT/` for a server started with [`RedisServer::start_tls`].
    ///
    /// # Panics
    /// When the server has no TLS port.
    pub fn tls_url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.tls_port())
    }

    /// The TLS port of a server started with [`RedisServer::start_tls`].
    ///
    /// # Panics
    /// When the server has no TLS port.
    pub fn tls_port(&self) -> u16 {
        self.tls_port
            .expect("not a TLS server: start it with RedisServer::start_tls")
    }

    /// Starts a server with extra `redis-server` arguments on a port accepted by `port_ok`.
    pub(crate) fn start_with(extra: &[String], port_ok: impl Fn(u16) -> bool) -> RedisServer {
        check_installed();
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port(&port_ok);
            let server = RedisServer {
                port,
                tls_port: None,
                dir: temp_dir("redis", port),
                extra_args: extra.to_vec(),
                procs: Mutex::new(Procs::default()),
            };
            match server.spawn() {
                Ok(()) => return server,
                // Most likely somebody else took the port between our probe and the bind.
                Err(e) => last_error = e,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    /// The URL to connect to, `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server at once (SIGKILL, like a crash). Connections to it break; the port
    /// refuses connections until [`RedisServer::restart`]. Data is lost (no persistence).
    pub fn stop(&self) {
        let mut procs = self.procs();
        kill(&mut procs.server);
        kill(&mut procs.watchdog);
    }

    /// Starts the server again on the same port (stopping it first if it runs) and waits until
    /// it answers `PING`. It comes back empty.
    ///
    /// # Panics
    /// When it does not come up within 10 seconds.
    pub fn restart(&self) {
        self.stop();
        let what = format!("redis-server on port {}", self.port);
        retry_start(&what, START_TIMEOUT, || self.spawn());
    }

    /// Whether the process runs (it was not stopped, and did not die).
    pub fn is_running(&self) -> bool {
        let mut procs = self.procs();
        match procs.server.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                kill(&mut procs.server);
                false
            }
            None => false,
        }
    }

    /// Sends one command and returns the reply (for test set-up and assertions).
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub fn command(&self, args: &[&str]) -> io::Result<Resp> {
        command(self.port, args)
    }

    /// [`RedisServer::command`] with arguments that need not be UTF-8 (e.g. binary keys).
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub fn command_bytes(&self, args: &[&[u8]]) -> io::Result<Resp> {
        command(self.port, args)
    }

    /// Starts counting commands: clears the command statistics and the slow log, and makes the
    /// slow log record every command. Call it again after [`RedisServer::restart`].
    ///
    /// # Panics
    /// When the server cannot be reached.
    pub fn reset_stats(&self) {
        for args in [
            &["CONFIG", "SET", "slowlog-log-slower-than", "0"][..],
            &["CONFIG", "SET", "slowlog-max-len", "100000"],
            &["SLOWLOG", "RESET"],
            &["CONFIG", "RESETSTAT"],
        ] {
            match self.command(args) {
                Ok(Resp::Error(e)) => panic!("{args:?} failed: {e}"),
                Ok(_) => {}
                Err(e) => panic!("cannot reach redis-server on port {}: {e}", self.port),
            }
        }
    }

    /// Commands clients sent since [`RedisServer::reset_stats`] (a script call counts as
    /// one, whatever the script does), leaving out the `INFO`, `CONFIG` and `SLOWLOG`
    /// commands these helpers send.
    ///
    /// Counted from the slow log, which [`RedisServer::reset_stats`] sets to record every
    /// command: `INFO commandstats` would also count each command a Lua script runs.
    ///
    /// # Panics
    /// When the server cannot be reached or [`RedisServer::reset_stats`] was not called.
    pub fn command_count(&self) -> u64 {
        self.commands_sent().len() as u64
    }

    /// The names (lowercase) of the commands counted by [`RedisServer::command_count`],
    /// oldest first: handy in assertion messages.
    ///
    /// # Panics
    /// As [`RedisServer::command_count`].
    pub fn commands_sent(&self) -> Vec<String> {
        let threshold = self.command(&["CONFIG", "GET", "slowlog-log-slower-than"]);
        match threshold {
            Ok(Resp::Array(Some(v))) if v.get(1).and_then(Resp::as_str) == Some("0") => {}
            Ok(other) => panic!("call reset_stats() before command_count() (got {other:?})"),
            Err(e) => panic!("cannot reach redis-server on port {}: {e}", self.port),
        }
        let log = match self.command(&["SLOWLOG", "GET", "1000000"]) {
            Ok(Resp::Array(Some(entries))) => entries,
            Ok(other) => panic!("unexpected SLOWLOG reply: {other:?}"),
            Err(e) => panic!("cannot reach redis-server on port {}: {e}", self.port),
        };
        log.iter()
            .rev()
            .filter_map(|entry| {
                let Resp::Array(Some(fields)) = entry else {
                    return None;
                };
                // [id, time, duration, [args...], "client addr", "client name"]
                let name = match fields.get(3) {
                    Some(Resp::Array(Some(args))) => args.first()?.as_str()?.to_ascii_lowercase(),
                    _ => return None,
                };
                // Commands run by a script have no client address ("?:0").
                let addr = fields.get(4).and_then(Resp::as_str).unwrap_or("");
                let from_client = !addr.is_empty() && !addr.starts_with('?');
                (from_client && !OWN_COMMANDS.contains(&name.as_str())).then_some(name)
            })
            .collect()
    }

    /// `INFO commandstats` as command name -> calls, since the last
    /// [`RedisServer::reset_stats`]. Unlike [`RedisServer::command_count`] this counts the
    /// commands scripts run, and the statistics commands themselves.
    ///
    /// # Panics
    /// When the server cannot be reached.
    pub fn commandstats(&self) -> BTreeMap<String, u64> {
        let text = match self.command(&["INFO", "commandstats"]) {
            Ok(Resp::Bulk(Some(b))) => String::from_utf8_lossy(&b).into_owned(),
            Ok(other) => panic!("unexpected INFO reply: {other:?}"),
            Err(e) => panic!("cannot reach redis-server on port {}: {e}", self.port),
        };
        text.lines()
            .filter_map(|line| {
                let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                Some((name.to_owned(), calls.parse().ok()?))
            })
            .collect()
    }

    fn procs(&self) -> MutexGuard<'_, Procs> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns redis-server and its watchdog, waits for `PING`.
    fn spawn(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let log = self.dir.join(format!("redis-{}.log", self.port));
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{NOT_INSTALLED} ({e})"))?;
        let watchdog = spawn_watchdog(child.id(), &self.dir);
        let what = format!("redis-server on port {}", self.port);
        let times = (START_TIMEOUT, Duration::from_millis(20));
        let watchdog = await_ready(
            &what,
            &mut child,
            watchdog,
            &log,
            times,
            || matches!(command(self.port, &["PING"]), Ok(Resp::Simple(s)) if s == "PONG"),
        )?;
        let mut procs = self.procs();
        procs.server = Some(child);
        procs.watchdog = watchdog;
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resp {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:42`
    Int(i64),
    /// `$3\r\nfoo` (`None` for `$-1`).
    Bulk(Option<Vec<u8>>),
    /// `*2 ...` (`None` for `*-1`).
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// The text of a simple or bulk string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Resp::Simple(s) => Some(s),
            Resp::Bulk(Some(b)) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// Sends one command to 127.0.0.1:`port` on a fresh connection and reads the reply.
pub(crate) fn command<A: AsRef<[u8]>>(port: u16, args: &[A]) -> io::Result<Resp> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args.iter().map(AsRef::as_ref) {
        req.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        req.extend_from_slice(arg);
        req.extend_from_slice(b"\r\n");
    }
    stream.write_all(&req)?;
    read_reply(&mut BufReader::new(stream))
}

pub(crate) fn read_reply(r: &mut impl BufRead) -> io::Result<Resp> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at_checked(1).ok_or_else(|| bad("empty reply"))?;
    let int = || rest.parse::<i64>().map_err(|_| bad("bad length"));
    Ok(match kind {
        "+" => Resp::Simple(rest.to_owned()),
        "-" => Resp::Error(rest.to_owned()),
        ":" => Resp::Int(int()?),
        "$" => match usize::try_from(int()?) {
            Ok(len) => {
                let mut buf = vec![0; len + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(len);
                Resp::Bulk(Some(buf))
            }
            Err(_) => Resp::Bulk(None),
        },
        "*" => match usize::try_from(int()?) {
            Ok(n) => Resp::Array(Some(
                (0..n).map(|_| read_reply(r)).collect::<io::Result<_>>()?,
            )),
            Err(_) => Resp::Array(None),
        },
        _ => return Err(bad("unknown reply type")),
    })
}

fn check_installed() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let ok = Command::new("redis-server")
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{NOT_INSTALLED}");
    });
}

/// A port that was free a moment ago (bind to port 0, read the port, close).
pub(crate) fn free_port(ok: impl Fn(u16) -> bool) -> u16 {
    for _ in 0..1000 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("cannot bind a loopback port");
        if ok(port) {
            return port;
        }
    }
    panic!("found no free loopback port");
}

pub(crate) fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}
