//! A real PostgreSQL server for tests: `initdb` in a temporary directory, `postgres` on a
//! free loopback port, no durability (`fsync=off`), killed on drop.
//!
//! Tests never skip: when Debian's `postgresql` package is missing, starting one panics with
//! a message saying how to install it. When the tests run as root, the server runs as
//! `nobody` (PostgreSQL refuses to run as root).
//!
//! A server takes a second or two to initialise, so a test binary should share one
//! ([`PostgresServer::shared`]) and give each test its own table, schema or database.
//!
//! ```no_run
//! use cloakroom_testkit::postgres_server::PostgresServer;
//!
//! let server = PostgresServer::start();
//! println!("connect to {}", server.url());
//! ```

use std::fmt;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::spawn::{await_ready, kill, retry_start, spawn_watchdog, temp_dir};

const NOT_INSTALLED: &str = "PostgreSQL server binaries (/usr/lib/postgresql/*/bin/postgres) \
     not found: run scripts/test.sh or apt-get install -y postgresql";

/// How long a server may take to accept connections after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A `postgres` process on a free loopback port, user `postgres` with trust authentication,
/// database `postgres`.
///
/// Killed (and its directory removed) when dropped. [`PostgresServer::stop`] and
/// [`PostgresServer::restart`] simulate an outage; the port and the data stay.
pub struct PostgresServer {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    tls: bool,
    procs: Mutex<Procs>,
}

#[derive(Default)]
struct Procs {
    server: Option<Child>,
    watchdog: Option<Child>,
}

impl fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresServer")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .finish()
    }
}

impl PostgresServer {
    /// Initialises a cluster in a temporary directory, starts it on a free port and waits
    /// until it accepts connections.
    ///
    /// # Panics
    /// When PostgreSQL is not installed or does not come up within 30 seconds.
    pub fn start() -> PostgresServer {
        Self::start_with(None)
    }

    /// Starts a server that also accepts TLS (`ssl=on`) with this certificate chain and key
    /// (PEM); plain connections are still accepted.
    ///
    /// # Panics
    /// As [`PostgresServer::start`], and when the files cannot be written.
    pub fn start_with_tls(cert_pem: &str, key_pem: &str) -> PostgresServer {
        Self::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> PostgresServer {
        let bin = find_bin().unwrap_or_else(|| panic!("{NOT_INSTALLED}"));
        let port = free_port();
        let server = PostgresServer {
            port,
            dir: temp_dir("pg", port),
            bin,
            tls: tls.is_some(),
            procs: Mutex::new(Procs::default()),
        };
        server.init(tls);
        if let Err(e) = server.spawn() {
            panic!("could not start postgres: {e}");
        }
        server
    }

    /// A server shared by every caller in this test binary, started on first use and killed
    /// when the test binary exits. Give each test its own table, schema or database.
    ///
    /// # Panics
    /// As [`PostgresServer::start`].
    pub fn shared() -> &'static PostgresServer {
        static SHARED: OnceLock<PostgresServer> = OnceLock::new();
        SHARED.get_or_init(PostgresServer::start)
    }

    /// The URL of the `postgres` database, `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `db` on this server.
    pub fn url_for(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the server's Unix socket (`.s.PGSQL.PORT`).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// Runs the server's own `pg_dump` on the `postgres` database with `args` (e.g.
    /// `["--data-only", "--table", "t"]`) and returns its output.
    ///
    /// # Errors
    /// When `pg_dump` cannot run or fails (its standard error in the message).
    pub fn pg_dump(&self, args: &[&str]) -> Result<Vec<u8>, String> {
        self.client_tool("pg_dump", args)
    }

    /// Runs `sql` with the server's own `psql` on the `postgres` database and returns what it
    /// printed, unaligned and without headers (`-XAtc`).
    ///
    /// # Errors
    /// When `psql` cannot run or the statement fails (its standard error in the message).
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        let out = self.client_tool("psql", &["-XAtc", sql])?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// Runs one of the server's client programs against its `postgres` database.
    fn client_tool(&self, tool: &str, args: &[&str]) -> Result<Vec<u8>, String> {
        let out = Command::new(self.bin.join(tool))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(args)
            .arg("postgres")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{tool}: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(out.stdout)
    }

    /// Stops the server (fast shutdown: sessions are ended, the port refuses connections)
    /// until [`PostgresServer::restart`]. Data is kept.
    pub fn stop(&self) {
        let mut procs = self.procs();
        if let Some(mut child) = procs.server.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        kill(&mut procs.watchdog);
    }

    /// Starts the server again on the same port (stopping it first if it runs) and waits
    /// until it accepts connections.
    ///
    /// # Panics
    /// When it does not come up within 30 seconds.
    pub fn restart(&self) {
        self.stop();
        let what = format!("postgres on port {}", self.port);
        retry_start(&what, START_TIMEOUT, || self.spawn());
    }

    fn procs(&self) -> MutexGuard<'_, Procs> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// A command that runs `program` as the server's user (`nobody` when we are root).
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if running_as_root() {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
                .arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn init(&self, tls: Option<(&str, &str)>) {
        std::fs::create_dir_all(&self.dir)
            .unwrap_or_else(|e| panic!("{}: {e}", self.dir.display()));
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt;
            let write = |name: &str, text: &str| {
                let path = self.dir.join(name);
                std::fs::write(&path, text)
                    .and_then(|()| {
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    })
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            };
            write("server.crt", cert);
            write("server.key", key);
        }
        if running_as_root() {
            let ok = Command::new("chown")
                .args(["-R", "nobody:nogroup"])
                .arg(&self.dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "could not give {} to nobody", self.dir.display());
        }
        let out = self
            .command("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ])
            .arg("-D")
            .arg(self.data())
            .env("LC_ALL", "C")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{NOT_INSTALLED} ({e})"));
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn spawn(&self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .map_err(|e| format!("{}: {e}", self.log().display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .arg("-k")
            .arg(&self.dir)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .args(if self.tls {
                vec![
                    "-c".to_owned(),
                    "ssl=on".to_owned(),
                    "-c".to_owned(),
                    format!("ssl_cert_file={}", self.dir.join("server.crt").display()),
                    "-c".to_owned(),
                    format!("ssl_key_file={}", self.dir.join("server.key").display()),
                ]
            } else {
                Vec::new()
            })
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{NOT_INSTALLED} ({e})"))?;
        let watchdog = spawn_watchdog(child.id(), &self.dir);
        let what = format!("postgres on port {}", self.port);
        let times = (START_TIMEOUT, Duration::from_millis(50));
        let watchdog = await_ready(&what, &mut child, watchdog, &self.log(), times, || {
            self.ready()
        })?;
        let mut procs = self.procs();
        procs.server = Some(child);
        procs.watchdog = watchdog;
        Ok(())
    }

    /// Whether the server accepts connections (`pg_isready`).
    fn ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "postgres", "-t", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let mut procs = self.procs();
        kill(&mut procs.server);
        kill(&mut procs.watchdog);
        drop(procs);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `bin` directory of the newest PostgreSQL under `/usr/lib/postgresql` (Debian's
/// layout), or `$CLOAKROOM_PG_BIN`.
fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CLOAKROOM_PG_BIN") {
        let dir = PathBuf::from(dir);
        return dir.join("postgres").exists().then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("postgres").exists() && bin.join("initdb").exists()).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A port that was free a moment ago (bind to port 0, read the port, close).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a loopback port")
}
