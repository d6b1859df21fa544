//! `cloakroom-bench`: Cloakroom under load against plain axum, tower-sessions and the
//! original Tornado + pycket system; and cloakroom-actix against plain actix-web and
//! actix-session.
//!
//! ```text
//! cargo run --release -p cloakroom-bench -- --quick      # ~5 minutes on 2 cores
//! cargo run --release -p cloakroom-bench -- --full       # ~15 minutes, what BENCHMARKS.md shows
//! cargo run -p cloakroom-bench -- --smoke                # seconds; proves it works (CI)
//! ```
//!
//! Options (after the mode): `--rounds N`, `--window-ms MS`, `--connections N`,
//! `--servers a,b,..`, `--workloads a,b,..`, `--ts-pool N` (fred pool size of the
//! tower-sessions Redis store, default 1), `--client raw|hyper` (the load generator's HTTP
//! client, default hyper), `--out DIR` (default `bench/results`).
//!
//! Internal subcommands, run by the harness itself:
//! `serve CASE [--redis URL] [--sqlite PATH] [--postgres URL]`
//! (one server under test) and `mem STORE N` (RAM per idle session). `redis-mem [N [R]]`: Redis
//! memory and CPU per idle session, Cloakroom's Redis store next to tower-sessions' (run by
//! hand; see `redis_mem.rs`). For profiling a server started by hand:
//! `load ADDR WORKLOAD SECONDS [CONNECTIONS]` drives it like the harness does and prints
//! requests/s and latencies; `chart REPORT.txt OUT.svg` redraws the chart of a saved
//! report (`bench/results/MODE.txt`).
//!
//! Exit codes: 0 success, 1 failure, 2 usage error.

mod cases;
mod counting;
mod load;
mod memory;
mod procs;
mod redis_mem;
mod redis_stats;
mod report;
mod run;
mod scale;
mod serve;
mod serve_actix;
mod targets;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::cases::{Server, Workload};

const USAGE: &str =
    "usage: cloakroom-bench [--smoke | --quick | --full] [--rounds N] [--window-ms MS] \
[--connections N] [--servers a,b] [--workloads a,b] [--ts-pool N] [--client raw|hyper] [--out DIR]
       cloakroom-bench serve CASE [--redis URL] [--sqlite PATH] [--postgres URL] [--ts-pool N]
       cloakroom-bench mem STORE SESSIONS
       cloakroom-bench redis-mem [SESSIONS [ROUNDS]]
       cloakroom-bench scale [--sizes N,M] [--purge N] [--rounds N] [--window-ms MS] [--servers a,b] [--workloads a,b]
       cloakroom-bench load ADDR WORKLOAD SECONDS [CONNECTIONS]
       cloakroom-bench chart REPORT.txt OUT.svg
servers: plain cloakroom-memory cloakroom-sqlite cloakroom-redis cloakroom-redis-cache \
cloakroom-postgres tower-sessions-memory tower-sessions-redis tower-sessions-sqlite tower-sessions-postgres tornado-pycket \
actix-plain \
cloakroom-actix-memory cloakroom-actix-redis cloakroom-actix-redis-cache actix-session-redis \
actix-session-cookie
workloads: read write blind-write new large";

/// A command line that does not parse.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n{USAGE}", self.0)
    }
}

impl std::error::Error for Usage {}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    Usage(msg.into()).into()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Usage>() => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("serve") => serve_command(&args[1..]),
        Some("mem") => mem_command(&args[1..]),
        Some("redis-mem") => redis_mem_command(&args[1..]),
        Some("scale") => scale_command(&args[1..]),
        Some("load") => load_command(&args[1..]),
        Some("chart") => chart_command(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => run::run(&parse_plan(args)?).map(drop),
    }
}

fn value<'a>(it: &mut impl Iterator<Item = &'a String>, flag: &str) -> anyhow::Result<&'a str> {
    it.next()
        .map(String::as_str)
        .ok_or_else(|| usage(format!("{flag} needs a value")))
}

fn number<T: std::str::FromStr>(text: &str, flag: &str) -> anyhow::Result<T> {
    text.parse()
        .map_err(|_| usage(format!("{flag}: {text:?} is not a number")))
}

fn parse_plan(args: &[String]) -> anyhow::Result<run::Plan> {
    let mode = match args.first().map(String::as_str) {
        Some("--smoke") => "smoke",
        Some("--quick") => "quick",
        Some("--full") => "full",
        _ => return Err(usage("choose --smoke, --quick or --full first")),
    };
    let mut plan = run::Plan::for_mode(mode).expect("known mode");
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--rounds" => plan.rounds = number(value(&mut it, flag)?, flag)?,
            "--window-ms" => {
                plan.window = Duration::from_millis(number(value(&mut it, flag)?, flag)?);
            }
            "--connections" => plan.connections = number(value(&mut it, flag)?, flag)?,
            "--ts-pool" => plan.ts_pool = number(value(&mut it, flag)?, flag)?,
            "--client" => {
                plan.client = match value(&mut it, flag)? {
                    "raw" => load::ClientKind::Raw,
                    "hyper" => load::ClientKind::Hyper,
                    other => return Err(usage(format!("unknown client {other:?}"))),
                }
            }
            "--out" => plan.out = Some(PathBuf::from(value(&mut it, flag)?)),
            "--servers" => {
                plan.servers = list(value(&mut it, flag)?, flag)?;
                // Ratios need their baselines (`plain`, `actix-plain`) in the same round.
                let baselines: Vec<Server> =
                    plan.servers.iter().filter_map(|s| s.baseline()).collect();
                for b in baselines.into_iter().rev() {
                    if !plan.servers.contains(&b) {
                        plan.servers.insert(0, b);
                    }
                }
            }
            "--workloads" => plan.workloads = list(value(&mut it, flag)?, flag)?,
            other => return Err(usage(format!("unknown option {other:?}"))),
        }
    }
    if plan.rounds == 0 || plan.connections == 0 {
        return Err(usage("--rounds and --connections must be at least 1"));
    }
    Ok(plan)
}

fn serve_command(args: &[String]) -> anyhow::Result<()> {
    let case: Server = args
        .first()
        .ok_or_else(|| usage("serve needs a CASE"))?
        .parse()
        .map_err(|e: anyhow::Error| usage(e.to_string()))?;
    let mut options = serve::ServeOptions {
        ts_pool: 1,
        ..Default::default()
    };
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--redis" => options.redis = Some(value(&mut it, flag)?.to_owned()),
            "--sqlite" => options.sqlite = Some(PathBuf::from(value(&mut it, flag)?)),
            "--postgres" => options.postgres = Some(value(&mut it, flag)?.to_owned()),
            "--ts-pool" => options.ts_pool = number(value(&mut it, flag)?, flag)?,
            "--prefill" => options.prefill = number(value(&mut it, flag)?, flag)?,
            "--prefill-expired" => options.prefill_expired = number(value(&mut it, flag)?, flag)?,
            other => return Err(usage(format!("unknown serve option {other:?}"))),
        }
    }
    if case.is_actix() {
        serve_actix::serve(case, &options)
    } else {
        serve::serve(case, options)
    }
}

fn scale_command(args: &[String]) -> anyhow::Result<()> {
    let mut plan = scale::ScalePlan::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--sizes" => plan.sizes = list(value(&mut it, flag)?, flag)?,
            "--purge" => plan.purge = number(value(&mut it, flag)?, flag)?,
            "--rounds" => plan.rounds = number(value(&mut it, flag)?, flag)?,
            "--window-ms" => {
                plan.window = Duration::from_millis(number(value(&mut it, flag)?, flag)?);
            }
            "--servers" => plan.servers = list(value(&mut it, flag)?, flag)?,
            "--workloads" => plan.workloads = list(value(&mut it, flag)?, flag)?,
            "--out" => plan.out = Some(PathBuf::from(value(&mut it, flag)?)),
            other => return Err(usage(format!("unknown scale option {other:?}"))),
        }
    }
    if plan.sizes.len() < 2 || plan.rounds == 0 {
        return Err(usage("scale needs at least two --sizes and one round"));
    }
    if let Some(s) = plan.servers.iter().find(|s| !scale::SERVERS.contains(s)) {
        return Err(usage(format!(
            "scale runs only {:?}, not {s}",
            scale::SERVERS
        )));
    }
    scale::run(&plan).map(drop)
}

/// A comma-separated list of values.
fn list<T: std::str::FromStr>(text: &str, flag: &str) -> anyhow::Result<Vec<T>> {
    text.split(',')
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| usage(format!("{flag}: {v:?} is not one of those listed")))
        })
        .collect()
}

fn mem_command(args: &[String]) -> anyhow::Result<()> {
    let [store, n] = args else {
        return Err(usage("mem needs STORE and SESSIONS"));
    };
    if !memory::STORES.contains(&store.as_str()) {
        return Err(usage(format!("mem: STORE is one of {:?}", memory::STORES)));
    }
    let n: u64 = number(n, "SESSIONS")?;
    if n == 0 {
        bail!("SESSIONS must be at least 1");
    }
    let result = memory::measure(store, n).context("measuring memory")?;
    println!("{}", result.render());
    Ok(())
}

/// `redis-mem [SESSIONS [ROUNDS]]`: Redis memory and CPU per idle session, Cloakroom's Redis store
/// next to tower-sessions' (see [`redis_mem`]).
fn redis_mem_command(args: &[String]) -> anyhow::Result<()> {
    let (n, rounds): (u64, usize) = match args {
        [] => (redis_mem::DEFAULT_SESSIONS, redis_mem::ROUNDS),
        [n] => (number(n, "SESSIONS")?, redis_mem::ROUNDS),
        [n, r] => (number(n, "SESSIONS")?, number(r, "ROUNDS")?),
        _ => return Err(usage("redis-mem takes at most SESSIONS and ROUNDS")),
    };
    if n == 0 || rounds == 0 {
        bail!("SESSIONS and ROUNDS must be at least 1");
    }
    print!("{}", redis_mem::run(n, rounds)?);
    Ok(())
}

fn load_command(args: &[String]) -> anyhow::Result<()> {
    let (addr, workload, secs, conns) = match args {
        [a, w, s] => (a, w, s, "32"),
        [a, w, s, c] => (a, w, s, c.as_str()),
        _ => return Err(usage("load needs ADDR WORKLOAD SECONDS [CONNECTIONS]")),
    };
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|_| usage(format!("{addr:?} is not HOST:PORT")))?;
    let workload = Workload::ALL
        .into_iter()
        .find(|w| w.name() == workload)
        .ok_or_else(|| usage(format!("unknown workload {workload:?}")))?;
    let secs: f64 = number(secs, "SECONDS")?;
    let conns: usize = number(conns, "CONNECTIONS")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let res = rt.block_on(async {
        let mut c = load::Clients::connect(
            addr,
            load::ClientKind::Hyper,
            conns,
            workload.keeps_cookies(),
            workload.by_header(),
        )
        .await?;
        c.warm_up(workload.warm_up()).await?;
        c.run(
            workload.path(),
            load::Stop::After(Duration::from_secs_f64(secs)),
        )
        .await
    })?;
    println!(
        "{} requests, {} errors, {:.0} req/s, p50 {} us, p99 {} us",
        res.requests,
        res.errors,
        res.rps(),
        res.latency.value_at_quantile(0.5),
        res.latency.value_at_quantile(0.99)
    );
    Ok(())
}

fn chart_command(args: &[String]) -> anyhow::Result<()> {
    let [report, out] = args else {
        return Err(usage("chart needs REPORT.txt and OUT.svg"));
    };
    let text = std::fs::read_to_string(report).with_context(|| format!("reading {report}"))?;
    let rows = report::rows_from_text(&text);
    if rows.is_empty() {
        bail!("{report} has no case= lines");
    }
    // The first line says how the report was made: `cloakroom-bench --full: 5 round(s), ...`.
    let how = text
        .lines()
        .next()
        .unwrap_or("")
        .split(':')
        .next()
        .unwrap_or("");
    let title = format!("requests/s per case ({how}, median over rounds)");
    report::chart(&rows, std::path::Path::new(out), &title)
        .map_err(|e| anyhow::anyhow!("drawing the chart: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(list: &str) -> Vec<Server> {
        let args: Vec<String> = ["--quick", "--servers", list]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        parse_plan(&args).map(|p| p.servers).unwrap_or_default()
    }

    #[test]
    fn servers_bring_their_baselines() {
        assert_eq!(
            servers("cloakroom-actix-redis,actix-session-redis"),
            [
                Server::ActixPlain,
                Server::CloakroomActixRedis,
                Server::ActixSessionRedis
            ]
        );
        assert_eq!(
            servers("cloakroom-memory,cloakroom-actix-memory"),
            [
                Server::Plain,
                Server::ActixPlain,
                Server::CloakroomMemory,
                Server::CloakroomActixMemory
            ]
        );
        assert_eq!(
            servers("actix-plain,cloakroom-actix-memory"),
            [Server::ActixPlain, Server::CloakroomActixMemory]
        );
    }
}
