//! What Redis reports about itself: CPU time and bytes received (`INFO`), and the commands
//! clients sent (the slow log, set to record everything during a counting pass only).

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use cloakroom_testkit::redis_server::{RedisServer, Resp};

/// The default `slowlog-log-slower-than` (µs), restored after a counting pass so the timed
/// windows do not pay for logging every command.
const SLOWLOG_DEFAULT: &str = "10000";

/// A snapshot of Redis's counters.
#[derive(Clone, Debug, Default)]
pub(crate) struct RedisInfo {
    /// `used_cpu_sys + used_cpu_user`, seconds.
    pub(crate) cpu_secs: f64,
    /// `total_net_input_bytes`: every byte clients sent.
    pub(crate) input_bytes: u64,
    /// `INFO commandstats`: command -> (calls, µs), commands run by scripts included.
    pub(crate) commands: BTreeMap<String, (u64, u64)>,
}

fn info_text(server: &RedisServer, section: &str) -> anyhow::Result<String> {
    match server.command(&["INFO", section])? {
        Resp::Bulk(Some(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
        other => bail!("unexpected INFO reply: {other:?}"),
    }
}

fn fields(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .filter_map(|l| l.trim_end().split_once(':'))
        .collect()
}

impl RedisInfo {
    /// Reads the counters now.
    pub(crate) fn read(server: &RedisServer) -> anyhow::Result<RedisInfo> {
        let cpu = info_text(server, "cpu")?;
        let stats = info_text(server, "stats")?;
        let commandstats = info_text(server, "commandstats")?;
        let commands = commandstats
            .lines()
            .filter_map(|line| {
                let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let field = |key: &str| -> Option<u64> {
                    rest.split(',')
                        .find_map(|kv| kv.strip_prefix(key))?
                        .parse()
                        .ok()
                };
                Some((name.to_owned(), (field("calls=")?, field("usec=")?)))
            })
            .collect();
        let cpu = fields(&cpu);
        let stats = fields(&stats);
        let num = |m: &BTreeMap<&str, &str>, k: &str| -> anyhow::Result<f64> {
            m.get(k)
                .with_context(|| format!("INFO has no {k}"))?
                .parse::<f64>()
                .with_context(|| format!("INFO {k} is not a number"))
        };
        Ok(RedisInfo {
            cpu_secs: num(&cpu, "used_cpu_sys")? + num(&cpu, "used_cpu_user")?,
            input_bytes: num(&stats, "total_net_input_bytes")? as u64,
            commands,
        })
    }
}

/// Where Redis spent its command time between two snapshots, per request: `name=µs(calls)`
/// for each command that ran (script-internal commands too; `INFO`, `CONFIG` and `SLOWLOG`
/// left out), biggest first.
pub(crate) fn command_time(before: &RedisInfo, after: &RedisInfo, requests: f64) -> String {
    let mut rows: Vec<(f64, String)> = after
        .commands
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "info" | "config" | "slowlog"))
        .filter_map(|(name, (calls, usec))| {
            let (c0, u0) = before.commands.get(name).copied().unwrap_or((0, 0));
            let calls = calls.checked_sub(c0)? as f64 / requests;
            let usec = usec.checked_sub(u0)? as f64 / requests;
            (calls > 0.0).then(|| (usec, format!("{name}={usec:.1}us({calls:.2})")))
        })
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    rows.into_iter()
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts a counting pass: the slow log records every command from now on.
pub(crate) fn start_counting(server: &RedisServer) {
    server.reset_stats();
}

/// Ends a counting pass: the commands clients sent since [`start_counting`] (a script call is
/// one command, whatever it runs), by name; the slow log goes back to its default threshold.
pub(crate) fn stop_counting(server: &RedisServer) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for name in server.commands_sent() {
        *counts.entry(name).or_insert(0) += 1;
    }
    restore_slowlog(server)?;
    Ok(counts)
}

/// Puts the slow log back to its default threshold.
pub(crate) fn restore_slowlog(server: &RedisServer) -> anyhow::Result<()> {
    match server.command(&["CONFIG", "SET", "slowlog-log-slower-than", SLOWLOG_DEFAULT])? {
        Resp::Error(e) => bail!("CONFIG SET failed: {e}"),
        _ => Ok(()),
    }
}

/// Deletes everything (between rounds, so rounds start alike).
pub(crate) fn flush(server: &RedisServer) -> anyhow::Result<()> {
    match server.command(&["FLUSHALL"])? {
        Resp::Error(e) => bail!("FLUSHALL failed: {e}"),
        _ => Ok(()),
    }
}
