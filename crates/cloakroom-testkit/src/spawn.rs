//! What the server spawners share: scratch directories, a watchdog that outlives a killed
//! test binary, stopping a child, the tail of a log.

use std::fmt::Display;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A fresh scratch directory path for a `kind` server on `port` (not created).
pub(crate) fn temp_dir(kind: &str, port: u16) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "cloakroom-{kind}-{}-{n}-{port}",
        std::process::id()
    ))
}

/// A shell loop that, once this process is gone, kills `pid` and removes `dir`; it ends by
/// itself when `pid` ends first.
pub(crate) fn spawn_watchdog(pid: u32, dir: &Path) -> io::Result<Child> {
    let me = std::process::id();
    let dir = dir.display().to_string().replace('\'', "");
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             if ! kill -0 {me} 2>/dev/null; then kill -9 {pid} 2>/dev/null; sleep 2; \
             rm -rf '{dir}'; fi"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// Kills and reaps `child`, if there is one.
pub(crate) fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The last ten lines of the log at `path`, for failure messages.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// Waits for a freshly started server: polls `ready` every `poll` until it says yes (then
/// returns the watchdog to keep), or fails, killing the server and its watchdog, when the
/// server exits or `limit` passes first; the error names `what` and quotes the log's tail.
pub(crate) fn await_ready(
    what: &str,
    child: &mut Child,
    watchdog: io::Result<Child>,
    log: &Path,
    (limit, poll): (Duration, Duration),
    mut ready: impl FnMut() -> bool,
) -> Result<Option<Child>, String> {
    let deadline = Instant::now() + limit;
    let stop_watchdog = |watchdog: io::Result<Child>| {
        let _ = watchdog.map(|mut w| (w.kill(), w.wait()));
    };
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            stop_watchdog(watchdog);
            return Err(format!("{what} exited with {status}: {}", log_tail(log)));
        }
        if ready() {
            return Ok(watchdog.ok());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            stop_watchdog(watchdog);
            return Err(format!(
                "{what} was not ready within {limit:?}: {}",
                log_tail(log)
            ));
        }
        std::thread::sleep(poll);
    }
}

/// Calls `start` until it succeeds, every 100 ms (a restarted server's old socket may linger
/// a moment); panics with `what` and the last error once `limit` has passed.
pub(crate) fn retry_start<E: Display>(
    what: &str,
    limit: Duration,
    mut start: impl FnMut() -> Result<(), E>,
) {
    let deadline = Instant::now() + limit;
    loop {
        match start() {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("could not restart {what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
