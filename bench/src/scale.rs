//! `cloakroom-bench scale`: what a request costs as the store fills up, and what a purge of
//! many expired sessions does to the requests running beside it.
//!
//! 1. **Throughput against stored sessions.** For each store and each size (`--sizes`,
//!    default 1,000 and 1,000,000) one server process fills its store with that many idle
//!    one-field sessions before it listens (`serve --prefill N`; Redis gets one
//!    `redis-server` per size, SQLite a file and PostgreSQL a table per size). Then
//!    `--rounds` rounds measure every workload on every size, the sizes' order alternating
//!    from round to round, the stores' order rotating. Reported per store and workload:
//!    requests/s and p99 per size, and the per-round ratio of each size to the smallest.
//! 2. **Bytes per stored session**: the growth from the smallest size to the largest,
//!    divided by the difference in sessions: the server's resident set (memory), the
//!    database file and its WAL (SQLite), `used_memory` (Redis), `pg_total_relation_size`
//!    (PostgreSQL).
//! 3. **The purge** (`--purge N`, default 1,000,000; 0 skips it; memory, SQLite and
//!    PostgreSQL: Redis expires keys itself): per round a server holds the smallest size of
//!    idle sessions plus N expired ones; a `write` window without the purge, then one during
//!    which `/__bench/purge` runs the store's purge. Reported: the purge's time and the p99
//!    with it over the p99 without, per round.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cloakroom_testkit::redis_server::RedisServer;

use crate::cases::{Server, Workload};
use crate::load::get_text_within;
use crate::procs::{ServerEnv, ServerProcess};
use crate::report::{self, Sample};
use crate::run::{self, Backends, Plan, Postgres, measure_retrying};

/// The stores `scale` measures.
pub(crate) const SERVERS: [Server; 4] = [
    Server::CloakroomMemory,
    Server::CloakroomSqlite,
    Server::CloakroomRedis,
    Server::CloakroomPostgres,
];

/// How long the purge may take before the harness gives up on it.
const PURGE_TIMEOUT: Duration = Duration::from_secs(600);

/// What `scale` measures, and how long.
#[derive(Clone, Debug)]
pub(crate) struct ScalePlan {
    /// Stored sessions per case, smallest first after parsing.
    pub(crate) sizes: Vec<u64>,
    /// Expired sessions the purge case deletes (0: no purge case).
    pub(crate) purge: u64,
    pub(crate) rounds: usize,
    pub(crate) window: Duration,
    pub(crate) servers: Vec<Server>,
    pub(crate) workloads: Vec<Workload>,
    /// Where the report goes (`scale.txt`).
    pub(crate) out: Option<PathBuf>,
}

impl Default for ScalePlan {
    fn default() -> Self {
        ScalePlan {
            sizes: vec![1_000, 1_000_000],
            purge: 1_000_000,
            rounds: 5,
            window: Duration::from_secs(3),
            servers: SERVERS.to_vec(),
            workloads: vec![Workload::Read, Workload::Write],
            out: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results")),
        }
    }
}

/// Samples of one (store, size index, workload) over the rounds.
type Samples = BTreeMap<(Server, usize, Workload), Vec<Sample>>;

/// Runs the plan; returns the report (also written to `OUT/scale.txt`).
pub(crate) fn run(plan: &ScalePlan) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut plan = plan.clone();
    plan.sizes.sort_unstable();
    plan.sizes.dedup();
    let machine = report::machine();
    eprintln!("machine: {machine}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tmp = tempfile::Builder::new()
        .prefix("cloakroom-scale-")
        .tempdir()
        .context("creating a temporary directory")?;
    let postgres = if plan.servers.contains(&Server::CloakroomPostgres) {
        Postgres::start()?
    } else {
        None
    };
    // One Redis per size: the size of Redis's own key space is part of what is measured.
    let redis: Vec<RedisServer> = if plan.servers.contains(&Server::CloakroomRedis) {
        plan.sizes.iter().map(|_| RedisServer::start()).collect()
    } else {
        Vec::new()
    };
    let servers: Vec<Server> = plan
        .servers
        .iter()
        .copied()
        .filter(|s| *s != Server::CloakroomPostgres || postgres.is_some())
        .collect();
    let load = Plan {
        rounds: plan.rounds,
        window: plan.window,
        ..Plan::for_mode("quick").expect("a mode")
    };
    let env = |size: usize, prefill: (u64, u64)| ServerEnv {
        redis_url: redis.get(size).map(RedisServer::url).unwrap_or_default(),
        redis_port: redis.get(size).map_or(0, RedisServer::port),
        dir: tmp.path().to_owned(),
        postgres_url: postgres
            .as_ref()
            .map(|p| p.server.url())
            .unwrap_or_default(),
        python: None,
        ts_pool: 1,
        ts_sqlite: None,
        prefill,
    };
    let backends = |size: usize| Backends {
        redis: redis.get(size),
        postgres: postgres.as_ref(),
    };

    // Every (store, size) server, each filling its store before it listens.
    let mut procs = BTreeMap::new();
    for s in &servers {
        for (i, n) in plan.sizes.iter().enumerate() {
            eprintln!("== starting {s} with {n} stored sessions");
            let proc = ServerProcess::start(*s, &env(i, (*n, 0)), tag(i))?;
            procs.insert((*s, i), proc);
        }
    }
    let mut bytes = BTreeMap::new();
    for ((s, i), proc) in &procs {
        let b = stored_bytes(
            *s,
            proc,
            tmp.path(),
            tag(*i),
            redis.get(*i),
            postgres.as_ref(),
        )
        .with_context(|| format!("measuring the size of {s}"))?;
        bytes.insert((*s, *i), b);
    }

    let samples = measure_sizes(&rt, &plan, &load, &mut procs, &backends)?;
    drop(procs);

    let mut purges = BTreeMap::new();
    if plan.purge > 0 {
        for s in servers.iter().filter(|s| **s != Server::CloakroomRedis) {
            for round in 0..plan.rounds {
                eprintln!(
                    "== purge of {} expired sessions, {s}, round {}/{}",
                    plan.purge,
                    round + 1,
                    plan.rounds
                );
                let prefill = (plan.sizes[0], plan.purge);
                let mut proc = ServerProcess::start(*s, &env(0, prefill), 1000 + round)?;
                let purge = measure_purge(&rt, &load, &mut proc, *s, backends(0))?;
                purges.entry(*s).or_insert_with(Vec::new).push(purge);
            }
        }
    }

    let text = report_text(&plan, &machine, started, &samples, &bytes, &purges);
    print!("{text}");
    if let Some(dir) = &plan.out {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("scale.txt"), &text)?;
    }
    Ok(text)
}

/// The rounds of part 1: every workload on every (store, size) server, sizes alternating.
fn measure_sizes<'b>(
    rt: &tokio::runtime::Runtime,
    plan: &ScalePlan,
    load: &Plan,
    procs: &mut BTreeMap<(Server, usize), ServerProcess>,
    backends: &dyn Fn(usize) -> Backends<'b>,
) -> anyhow::Result<Samples> {
    let mut servers: Vec<Server> = procs.keys().map(|(s, _)| *s).collect();
    servers.dedup();
    let mut samples = Samples::new();
    for round in 0..plan.rounds {
        eprintln!("== round {}/{}", round + 1, plan.rounds);
        let mut order: Vec<Server> = servers.clone();
        let shift = round % order.len().max(1);
        order.rotate_left(shift);
        let mut sizes: Vec<usize> = (0..plan.sizes.len()).collect();
        if round % 2 == 1 {
            sizes.reverse();
        }
        for s in &order {
            for i in &sizes {
                for w in &plan.workloads {
                    let proc = procs.get_mut(&(*s, *i)).expect("started above");
                    let sample = measure_retrying(rt, load, proc, *s, *w, backends(*i))
                        .with_context(|| format!("measuring {s} {w} at {}", plan.sizes[*i]))?;
                    eprintln!(
                        "   {:<22} {:>9} {:<6} {:>8.0} req/s  p99 {:>6.2} ms",
                        s.name(),
                        plan.sizes[*i],
                        w.name(),
                        sample.rps,
                        sample.p99_us / 1000.0
                    );
                    samples.entry((*s, *i, *w)).or_default().push(sample);
                }
            }
        }
    }
    Ok(samples)
}

/// The name tag of a size's database file or table (`sessions-TAG.db`, `sessions_TAG`).
fn tag(size: usize) -> usize {
    100 + size
}

/// What a store holds now, in bytes (see the module docs for what is counted).
fn stored_bytes(
    server: Server,
    proc: &ServerProcess,
    dir: &Path,
    tag: usize,
    redis: Option<&RedisServer>,
    postgres: Option<&Postgres>,
) -> anyhow::Result<u64> {
    Ok(match server {
        Server::CloakroomMemory => crate::memory::rss_bytes(&proc.pid().to_string())?,
        Server::CloakroomSqlite => {
            let db = dir.join(format!("sessions-{tag}.db"));
            let wal = dir.join(format!("sessions-{tag}.db-wal"));
            std::fs::metadata(&db)?.len() + std::fs::metadata(&wal).map_or(0, |m| m.len())
        }
        Server::CloakroomRedis => {
            let redis = redis.context("no Redis")?;
            let info = match redis.command(&["INFO", "memory"])? {
                cloakroom_testkit::redis_server::Resp::Bulk(Some(b)) => b,
                other => anyhow::bail!("unexpected INFO reply: {other:?}"),
            };
            String::from_utf8_lossy(&info)
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .context("no used_memory")?
                .trim()
                .parse()?
        }
        Server::CloakroomPostgres => {
            let pg = postgres.context("no PostgreSQL")?;
            pg.server
                .psql(&format!("SELECT pg_total_relation_size('sessions_{tag}')"))
                .map_err(anyhow::Error::msg)?
                .parse()?
        }
        other => anyhow::bail!("{other} is not a scale store"),
    })
}

/// One purge round: a `write` window, then one with the purge running.
#[derive(Debug)]
struct Purge {
    quiet: Sample,
    purging: Sample,
    /// The purge's answer: `purged=N ms=T`.
    answer: String,
}

fn measure_purge(
    rt: &tokio::runtime::Runtime,
    load: &Plan,
    proc: &mut ServerProcess,
    server: Server,
    backends: Backends<'_>,
) -> anyhow::Result<Purge> {
    let quiet = measure_retrying(rt, load, proc, server, Workload::Write, backends)?;
    // The purge starts once the clients of the next window are connected and warm (about a
    // second), and the window is long enough to hold it when it takes a few seconds.
    let addr = proc.addr;
    let purger = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1_000));
        get_text_within(addr, "/__bench/purge", PURGE_TIMEOUT)
    });
    let long = Plan {
        window: load.window.max(Duration::from_secs(5)),
        retries: 0,
        ..load.clone()
    };
    let purging = run::measure(rt, &long, proc, server, Workload::Write, backends)?;
    let answer = purger
        .join()
        .map_err(|_| anyhow::anyhow!("the purge thread panicked"))?
        .context("running the purge")?;
    eprintln!(
        "   {server} purge: {answer}; p99 {:.2} ms without, {:.2} ms with",
        quiet.p99_us / 1000.0,
        purging.p99_us / 1000.0
    );
    Ok(Purge {
        quiet,
        purging,
        answer,
    })
}

/// Median and range of `values`.
fn spread(values: &[f64]) -> String {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return "n/a".into();
    }
    v.sort_by(f64::total_cmp);
    let mid = v[v.len() / 2];
    format!("{mid:.2} [{:.2}-{:.2}]", v[0], v[v.len() - 1])
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn report_text(
    plan: &ScalePlan,
    machine: &str,
    started: Instant,
    samples: &Samples,
    bytes: &BTreeMap<(Server, usize), u64>,
    purges: &BTreeMap<Server, Vec<Purge>>,
) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "cloakroom-bench scale: sizes {:?}, {} round(s), {:?} windows, {:.0} s in all\n\
         machine at start: {machine}; load average at end: {}\n",
        plan.sizes,
        plan.rounds,
        plan.window,
        started.elapsed().as_secs_f64(),
        report::load_average()
    );
    let _ = writeln!(
        t,
        "store                  workload  stored     req/s  p99 ms  req/s vs smallest  p99 vs smallest"
    );
    let chart_max = samples
        .values()
        .map(|v| median(v.iter().map(|s| s.rps)))
        .fold(1.0, f64::max);
    let mut chart = String::new();
    for ((s, i, w), v) in samples {
        let base = &samples[&(*s, 0, *w)];
        let per_round = |f: fn(&Sample) -> f64| -> Vec<f64> {
            v.iter().zip(base).map(|(a, b)| f(a) / f(b)).collect()
        };
        let rps = median(v.iter().map(|x| x.rps));
        let _ = writeln!(
            t,
            "{:<22} {:<9} {:>7} {:>9.0} {:>7.2}  {:<18} {}",
            s.name(),
            w.name(),
            plan.sizes[*i],
            rps,
            median(v.iter().map(|x| x.p99_us)) / 1000.0,
            if *i == 0 {
                String::new()
            } else {
                spread(&per_round(|x| x.rps))
            },
            if *i == 0 {
                String::new()
            } else {
                spread(&per_round(|x| x.p99_us))
            },
        );
        let bar = "#".repeat((rps / chart_max * 50.0).round() as usize);
        let _ = writeln!(
            chart,
            "{:<22} {:<6} {:>9} | {bar} {rps:.0}",
            s.name(),
            w.name(),
            plan.sizes[*i]
        );
    }
    let _ = writeln!(
        t,
        "\nrequests/s against stored sessions (medians):\n{chart}"
    );
    let (small, big) = (plan.sizes[0], plan.sizes[plan.sizes.len() - 1]);
    let _ = writeln!(
        t,
        "bytes per stored session (growth from {small} to {big} sessions):"
    );
    for s in SERVERS {
        if let (Some(a), Some(b)) = (bytes.get(&(s, 0)), bytes.get(&(s, plan.sizes.len() - 1))) {
            let per = (*b as f64 - *a as f64) / (big - small) as f64;
            let what = match s {
                Server::CloakroomMemory => "server resident set",
                Server::CloakroomSqlite => "database file + WAL",
                Server::CloakroomRedis => "Redis used_memory",
                _ => "pg_total_relation_size",
            };
            let _ = writeln!(t, "  {:<22} {per:>7.0} B  ({what})", s.name());
        }
    }
    if !purges.is_empty() {
        let _ = writeln!(
            t,
            "\npurge of {} expired sessions beside a write load on {} live ones:",
            plan.purge, small
        );
        for (s, v) in purges {
            let ratio: Vec<f64> = v
                .iter()
                .map(|p| p.purging.p99_us / p.quiet.p99_us)
                .collect();
            let answers: Vec<&str> = v.iter().map(|p| p.answer.as_str()).collect();
            let _ = writeln!(
                t,
                "  {:<22} p99 with / without {}; p99 ms without {:.2}, with {:.2}; {}",
                s.name(),
                spread(&ratio),
                median(v.iter().map(|p| p.quiet.p99_us)) / 1000.0,
                median(v.iter().map(|p| p.purging.p99_us)) / 1000.0,
                answers.join(", ")
            );
        }
    }
    t
}
