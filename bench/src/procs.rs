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
    /// The Python of the venv with tornado + pycket + redis, if found.
    pub(crate) python: Option<PathBuf>,
    /// Connections in tower-sessions' fred pool.
    pub(crate) ts_pool: usize,
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
            cmd.arg("--ts-pool").arg(env.ts_pool.to_string());
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
        let line = rx
            .recv_timeout(START_TIMEOUT)
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

/// utime + stime of `pid` from `/proc/PID/stat`.
pub(crate) fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .context("unexpected /proc/PID/stat")?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    let ticks: u64 = fields
        .get(11..13)
        .context("short /proc/PID/stat")?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<u64, _>>()?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
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
