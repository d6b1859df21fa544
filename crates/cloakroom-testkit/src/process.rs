//! A server binary (the demo, usually) run as a child process on a free loopback port,
//! ready when its `/healthz` answers, killed on drop so a failing test leaves nothing behind.

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Environment variables the demo reads; cleared so the caller's shell cannot leak in.
const CLEARED_ENV: [&str; 14] = [
    "CLOAKROOM_ADDR",
    "CLOAKROOM_STORE",
    "CLOAKROOM_USERS",
    "CLOAKROOM_KEYS",
    "CLOAKROOM_ORIGIN",
    "CLOAKROOM_TORNADO_SECRET",
    "CLOAKROOM_ALLOWED_HOSTS",
    "CLOAKROOM_METRICS_ADDR",
    "CLOAKROOM_HEADER_TIMEOUT",
    "CLOAKROOM_IDLE_TIMEOUT",
    "CLOAKROOM_MAX_CONNECTIONS",
    "CLOAKROOM_MAX_BODY",
    "CLOAKROOM_BODY_TIMEOUT",
    "CLOAKROOM_TRUSTED_PROXY",
];

/// A running server process.
#[derive(Debug)]
pub struct ServerProcess {
    child: Option<Child>,
    bin: PathBuf,
    args: Vec<String>,
    port: u16,
    log: PathBuf,
    lines: Option<mpsc::Receiver<String>>,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl ServerProcess {
    /// Starts `bin --addr 127.0.0.1:PORT ARGS...` on a free port, logging stderr to a file in
    /// `log_dir`, and waits (up to 60 s) until `GET /healthz` answers 200.
    ///
    /// # Panics
    /// When the process exits early or never gets ready.
    pub async fn start(bin: impl AsRef<Path>, args: &[&str], log_dir: &Path) -> ServerProcess {
        let port = free_port();
        let mut server = ServerProcess {
            child: None,
            bin: bin.as_ref().to_owned(),
            args: args.iter().map(|s| s.to_string()).collect(),
            port,
            log: log_dir.join(format!("server-{port}.log")),
            lines: None,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let addr = format!("127.0.0.1:{}", self.port);
        let mut command = Command::new(&self.bin);
        for var in CLEARED_ENV {
            command.env_remove(var);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log file");
        let mut child = command
            .arg("--addr")
            .arg(&addr)
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.lines = Some(rx);
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(60)).await;
    }

    async fn wait_ready(&mut self, limit: Duration) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited early: {status}\n{}",
                    self.bin.display(),
                    self.log_text()
                );
            }
            let ready = client
                .get(format!("{}/healthz", self.base()))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready in time\n{}",
                self.bin.display(),
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The next line the process printed on stdout (waits up to `limit`).
    pub fn next_line(&self, limit: Duration) -> Option<String> {
        self.lines.as_ref()?.recv_timeout(limit).ok()
    }

    /// What the process logged on stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The OS process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process hard (SIGKILL): nothing is flushed or cleaned up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to `limit` for the exit; returns its success.
    pub fn terminate(&mut self, limit: Duration) -> Option<bool> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status.success());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the process again with the same port and arguments (after [`Self::kill`]).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Resident memory of the process in KiB (Linux `/proc`), if known.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.bin.display(), self.log_text());
        }
    }
}
