//! Server processes under test: started, their CPU time read from `/proc`, and killed when
//! dropped (also while unwinding from a panic). The servers also exit by themselves when the
//! harness goes away (they watch their parent), so nothing outlives a killed harness.

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::cases::Server;

/// How long a server may take to print its port.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server process, killed on drop.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    name: String,
}

/// What a server needs besides its case.
#[derive(Debug, Clone)]
pub(crate) struct ServerEnv {
    /// Redis URL for the Redis cases.
    pub(crate) redis_url: String,
    /// Redis port (for Tornado).
    pub(crate) redis_port: u16,
    /// A directory for the SQLite file.
    pub(crate) dir: PathBuf,
    /// PostgreSQL URL (of database `postgres`) for the PostgreSQL case.
    pub(crate) postgres_url: String,
    /// The Python of the venv with tornado + pycket + redis, if found.
    pub(crate) python: Option<PathBuf>,
    /// Connections in tower-sessions' fred pool.
    pub(crate) ts_pool: usize,
    /// The sqlx peers' binary (`bench/peer-sqlx`), if built.
    pub(crate) ts_sqlite: Option<PathBuf>,
    /// Idle and expired sessions a Cloakroom server creates before it listens (`scale`).
    pub(crate) prefill: (u64, u64),
}

impl ServerProcess {
    /// Starts the server for `case`, waiting until it prints its port.
    pub(crate) fn start(case: Server, env: &ServerEnv, round: usize) -> anyhow::Result<Self> {
        let mut cmd = if case.is_rust() {
            let exe = std::env::current_exe().context("locating the harness binary")?;
            let mut cmd = Command::new(exe);
            cmd.arg("serve").arg(case.name());
            if case.uses_redis() {
                cmd.arg("--redis").arg(&env.redis_url);
            }
            if case == Server::CloakroomSqlite {
                cmd.arg("--sqlite")
                    .arg(env.dir.join(format!("sessions-{round}.db")));
            }
            if case.uses_postgres() {
                // A new table each round, as SQLite gets a new file.
                cmd.arg("--postgres")
                    .arg(format!("{}?table=sessions_{round}", env.postgres_url));
            }
            cmd.arg("--ts-pool").arg(env.ts_pool.to_string());
            let (idle, expired) = env.prefill;
            cmd.arg("--prefill").arg(idle.to_string());
            cmd.arg("--prefill-expired").arg(expired.to_string());
            cmd
        } else if case.is_sqlx_peer() {
            let exe = env
                .ts_sqlite
                .as_ref()
                .context("no sqlx peer binary (see bench/peer-sqlx/Cargo.toml)")?;
            let mut cmd = Command::new(exe);
            if case == Server::TowerSessionsSqlite {
                cmd.arg("--sqlite")
                    .arg(env.dir.join(format!("ts-sessions-{round}.db")));
            } else {
                // A new table each round, as for cloakroom-postgres.
                cmd.arg("--postgres")
                    .arg(&env.postgres_url)
                    .arg(format!("session_{round}"));
            }
            cmd
        } else {
            let python = env
                .python
                .as_ref()
                .context("no Python with tornado + pycket (set CLOAKROOM_PYTHON)")?;
            let mut cmd = Command::new(python);
            cmd.arg(tornado_app()?)
                .arg("--redis-port")
                .arg(env.redis_port.to_string());
            cmd
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the {case} server"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        // Read the port line on a thread so a server that never prints cannot hang us.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut server = ServerProcess {
            child,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            name: case.name().to_owned(),
        };
        // A prefill of a million sessions takes minutes on a slow store.
        let prefill = env.prefill.0 + env.prefill.1;
        let line = rx
            .recv_timeout(START_TIMEOUT + Duration::from_millis(prefill / 2))
            .with_context(|| format!("the {case} server did not print its port"))?;
        let port: u16 = line
            .strip_prefix("port=")
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("the {case} server printed {line:?}, not port=N"))?;
        server.addr.set_port(port);
        Ok(server)
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) the process has used so far, all its threads together.
    pub(crate) fn cpu_time(&mut self) -> anyhow::Result<Duration> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the {} server exited: {status}", self.name);
        }
        cpu_time(self.pid())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `/proc/PID/stat` says about a process.
struct Stat {
    /// The command name (`comm`).
    name: String,
    /// The parent's pid.
    ppid: u32,
    /// utime + stime, in clock ticks.
    ticks: u64,
}

fn read_stat(pid: u32) -> anyhow::Result<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may contain spaces and parentheses.
    let (head, rest) = stat.rsplit_once(')').context("unexpected /proc/PID/stat")?;
    let name = head.split_once('(').map_or("", |(_, n)| n).to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is the state (field 3), fields[1] the ppid; utime and stime are fields 14
    // and 15.
    let ppid = fields.get(1).context("short /proc/PID/stat")?.parse()?;
    let ticks: u64 = fields
        .get(11..13)
        .context("short /proc/PID/stat")?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<u64, _>>()?;
    Ok(Stat { name, ppid, ticks })
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

/// utime + stime of `pid` from `/proc/PID/stat`.
pub(crate) fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    Ok(ticks_to_duration(read_stat(pid)?.ticks))
}

/// Every process now running, with its stat (processes that end while being read are left
/// out).
fn all_stats() -> anyhow::Result<Vec<(u32, Stat)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Ok(stat) = read_stat(pid) {
            out.push((pid, stat));
        }
    }
    Ok(out)
}

/// The pid of a child of this process named `name` (the PostgreSQL postmaster the testkit
/// started: `setpriv` execs `postgres`, so the postmaster is our child).
pub(crate) fn child_named(name: &str) -> anyhow::Result<Option<u32>> {
    let me = std::process::id();
    Ok(all_stats()?
        .into_iter()
        .find(|(_, s)| s.ppid == me && s.name == name)
        .map(|(pid, _)| pid))
}

/// CPU time of `root` and of its children together: for PostgreSQL, the postmaster and the
/// processes it forks (a backend per connection, the background workers). Children that
/// ended between two readings drop out of the sum; the store's pooled connections live as
/// long as the server under test, so a window sees the same backends at both ends.
pub(crate) fn tree_cpu_time(root: u32) -> anyhow::Result<Duration> {
    let ticks = all_stats()?
        .iter()
        .filter(|(pid, s)| *pid == root || s.ppid == root)
        .map(|(_, s)| s.ticks)
        .sum();
    Ok(ticks_to_duration(ticks))
}

/// CPU time all cores spent busy since boot (`/proc/stat`: everything but idle and iowait),
/// to tell how much of the machine other work took during a window.
pub(crate) fn system_busy() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    Ok(Duration::from_secs_f64(busy as f64 / clock_ticks() as f64))
}

/// `sysconf(_SC_CLK_TCK)`, asked of `getconf` once (100 on every Linux we know).
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// `bench/tornado_app.py`.
fn tornado_app() -> anyhow::Result<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tornado_app.py");
    if !path.exists() {
        bail!("{} is missing", path.display());
    }
    Ok(path)
}

/// The sqlx peer's binary: `$CLOAKROOM_TS_SQLITE`, else `bench/peer-sqlx`'s release build,
/// if it exists.
pub(crate) fn find_ts_sqlite() -> Option<PathBuf> {
    std::env::var_os("CLOAKROOM_TS_SQLITE")
        .map(PathBuf::from)
        .into_iter()
        .chain([Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("peer-sqlx/target/release/cloakroom-bench-peer-sqlx")])
        .find(|p| p.is_file())
}

/// The Python to run Tornado with: `$CLOAKROOM_PYTHON`, else the workspace's `.venv`, if it
/// imports tornado, pycket and redis.
pub(crate) fn find_python() -> Option<PathBuf> {
    let candidates = std::env::var_os("CLOAKROOM_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")]);
    candidates.into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import tornado, pycket, redis"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}
