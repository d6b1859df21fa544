//! The harness: starts Redis, PostgreSQL and the servers, drives the load round-robin over
//! every case, and reports medians.
//!
//! Each round starts every server afresh (a new process each, SQLite in a new file,
//! PostgreSQL in a new table, Redis flushed) and measures each (workload, server) pair once;
//! the order of the servers rotates from round to round so no case always runs first or right
//! after another. Per case:
//! 1. the clients connect and each creates its session (the workload's warm-up requests);
//! 2. a short unmeasured burst warms caches (and Python);
//! 3. the timed window: requests/s, latencies, server CPU (`/proc/PID/stat`), Redis CPU and
//!    input bytes (`INFO`), PostgreSQL's CPU (its processes' `/proc/PID/stat`);
//! 4. a counting pass of a fixed number of requests with the Redis slow log recording every
//!    command and the server counting store operations and bytes (kept out of the timed
//!    window because both cost time).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cloakroom_testkit::postgres_server::PostgresServer;
use cloakroom_testkit::redis_server::RedisServer;

use crate::cases::{Server, Workload};
use crate::counting::parse_stats;
use crate::load::{ClientKind, Clients, Stop, get_text};
use crate::memory::MemResult;
use crate::procs::{
    ServerEnv, ServerProcess, child_named, cpu_time, find_python, system_busy, tree_cpu_time,
};
use crate::redis_stats::{self, RedisInfo};
use crate::report::{self, Results, Sample};
use crate::targets;

/// How long and how hard to measure.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    /// `smoke`, `quick` or `full`.
    pub(crate) mode: &'static str,
    pub(crate) rounds: usize,
    pub(crate) window: Duration,
    pub(crate) warm: Duration,
    pub(crate) connections: usize,
    /// A sample taken while other work kept more than this many cores busy is measured
    /// again, at most `retries` times (the last attempt is kept).
    pub(crate) max_other_load: f64,
    pub(crate) retries: usize,
    /// Requests per client in the counting pass.
    pub(crate) count_per_client: u64,
    /// Sessions created for the RAM measurement, and how many times it is repeated.
    pub(crate) mem_sessions: u64,
    pub(crate) mem_repeats: usize,
    pub(crate) servers: Vec<Server>,
    pub(crate) workloads: Vec<Workload>,
    /// Connections in tower-sessions' fred pool.
    pub(crate) ts_pool: usize,
    /// The load generator's HTTP client.
    pub(crate) client: ClientKind,
    /// Where the chart and the report go.
    pub(crate) out: Option<PathBuf>,
}

impl Plan {
    /// The plan of a mode.
    pub(crate) fn for_mode(mode: &str) -> Option<Plan> {
        let base = Plan {
            mode: "quick",
            rounds: 3,
            window: Duration::from_secs(2),
            warm: Duration::from_millis(500),
            connections: 32,
            max_other_load: 0.3,
            retries: 2,
            count_per_client: 10,
            mem_sessions: 100_000,
            mem_repeats: 3,
            servers: Server::ALL.to_vec(),
            workloads: Workload::ALL.to_vec(),
            ts_pool: 1,
            client: ClientKind::Hyper,
            out: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results")),
        };
        Some(match mode {
            "smoke" => Plan {
                mode: "smoke",
                rounds: 1,
                window: Duration::from_millis(400),
                warm: Duration::from_millis(100),
                connections: 4,
                retries: 0,
                count_per_client: 5,
                mem_sessions: 10_000,
                mem_repeats: 1,
                out: None,
                ..base
            },
            "quick" => base,
            "full" => Plan {
                mode: "full",
                rounds: 5,
                window: Duration::from_secs(5),
                warm: Duration::from_secs(1),
                retries: 3,
                count_per_client: 20,
                mem_repeats: 5,
                ..base
            },
            _ => return None,
        })
    }
}

/// The PostgreSQL the `cloakroom-postgres` case keeps its sessions in.
#[derive(Debug)]
pub(crate) struct Postgres {
    pub(crate) server: PostgresServer,
    /// The postmaster's pid; its children are the backends and background workers.
    postmaster: u32,
}

impl Postgres {
    /// Starts one, or says why not (PostgreSQL missing) and returns `None`.
    pub(crate) fn start() -> anyhow::Result<Option<Postgres>> {
        let Ok(server) = std::panic::catch_unwind(PostgresServer::start) else {
            eprintln!("warning: PostgreSQL did not start (see above); skipping cloakroom-postgres");
            return Ok(None);
        };
        let postmaster = child_named("postgres")?.context("no postgres process among ours")?;
        Ok(Some(Postgres { server, postmaster }))
    }

    /// CPU time the postmaster and its children have used so far.
    fn cpu_time(&self) -> anyhow::Result<Duration> {
        tree_cpu_time(self.postmaster)
    }
}

/// The databases the harness runs for the servers, when some case needs them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backends<'a> {
    pub(crate) redis: Option<&'a RedisServer>,
    pub(crate) postgres: Option<&'a Postgres>,
}

/// Runs the plan; returns the report text (also printed as it is made).
pub(crate) fn run(plan: &Plan) -> anyhow::Result<String> {
    let started = Instant::now();
    let machine = report::machine();
    eprintln!("machine: {machine}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let redis = plan
        .servers
        .iter()
        .any(|s| s.uses_redis())
        .then(RedisServer::start);
    if let Some(r) = &redis {
        redis_stats::restore_slowlog(r)?;
    }
    let postgres = if plan.servers.iter().any(|s| s.uses_postgres()) {
        Postgres::start()?
    } else {
        None
    };
    let tmp = tempfile::Builder::new()
        .prefix("cloakroom-bench-")
        .tempdir()
        .context("creating a temporary directory")?;
    let python = if plan.servers.contains(&Server::TornadoPycket) {
        let p = find_python();
        if p.is_none() {
            eprintln!("warning: no Python with tornado + pycket + redis; skipping tornado-pycket");
        }
        p
    } else {
        None
    };
    let ts_sqlite = if plan.servers.iter().any(|s| s.is_sqlx_peer()) {
        let p = crate::procs::find_ts_sqlite();
        if p.is_none() {
            eprintln!(
                "warning: bench/peer-sqlx is not built (see its Cargo.toml); skipping the sqlx peers"
            );
        }
        p
    } else {
        None
    };
    let env = ServerEnv {
        redis_url: redis.as_ref().map(|r| r.url()).unwrap_or_default(),
        redis_port: redis.as_ref().map_or(0, |r| r.port()),
        dir: tmp.path().to_owned(),
        postgres_url: postgres
            .as_ref()
            .map(|p| p.server.url())
            .unwrap_or_default(),
        python,
        ts_pool: plan.ts_pool,
        ts_sqlite,
        prefill: (0, 0),
    };
    let servers: Vec<Server> = plan
        .servers
        .iter()
        .copied()
        .filter(|s| *s != Server::TornadoPycket || env.python.is_some())
        .filter(|s| !s.is_sqlx_peer() || env.ts_sqlite.is_some())
        .filter(|s| !s.uses_postgres() || postgres.is_some())
        .collect();
    let backends = Backends {
        redis: redis.as_ref(),
        postgres: postgres.as_ref(),
    };

    let mut results = Results::default();
    for s in &plan.servers {
        for w in &plan.workloads {
            results.samples.insert((*s, *w), Vec::new());
        }
    }
    measure_rounds(&rt, plan, &servers, &env, backends, &mut results)?;
    for (s, w) in results.samples.keys().copied().collect::<Vec<_>>() {
        let v = results.samples.get_mut(&(s, w)).expect("listed");
        v.resize(plan.rounds, None);
    }

    let mut stores = Vec::new();
    if plan.servers.contains(&Server::CloakroomMemory) {
        stores.push("cloakroom-memory");
    }
    if plan.servers.contains(&Server::TowerSessionsMemory) {
        stores.push("tower-sessions-memory");
    }
    for _ in 0..plan.mem_repeats {
        // Interleaved, like the load rounds.
        for s in &stores {
            let r = measure_memory(s, plan.mem_sessions)?;
            results.memory.entry((*s).to_owned()).or_default().push(r);
        }
    }

    let rows = results.rows();
    let text = report_text(plan, started, &machine, &results, &rows);
    print!("{text}");

    write_outputs(plan, tmp.path(), &results, &rows, &text)?;
    Ok(text)
}

/// The chart (in `--out`, or a temporary directory for smoke runs), and with `--out` the
/// report and every sample.
fn write_outputs(
    plan: &Plan,
    tmp: &std::path::Path,
    results: &Results,
    rows: &[report::Row],
    text: &str,
) -> anyhow::Result<()> {
    let out_dir = match &plan.out {
        Some(d) => d.clone(),
        None => tmp.to_owned(),
    };
    std::fs::create_dir_all(&out_dir)?;
    let svg = out_dir.join("throughput.svg");
    report::chart(
        rows,
        &svg,
        &format!(
            "requests/s per case (cloakroom-bench --{}, median of {} rounds)",
            plan.mode, plan.rounds
        ),
    )
    .map_err(|e| anyhow::anyhow!("drawing the chart: {e}"))?;
    if plan.out.is_some() {
        std::fs::write(out_dir.join(format!("{}.txt", plan.mode)), text)?;
        std::fs::write(
            out_dir.join(format!("{}-samples.csv", plan.mode)),
            report::samples_csv(results),
        )?;
        println!("\nchart: {}", svg.display());
    }
    Ok(())
}

/// The load rounds: every server started afresh each round, every workload measured on each
/// in an order rotated per round; samples taken on a busy machine are measured again.
fn measure_rounds(
    rt: &tokio::runtime::Runtime,
    plan: &Plan,
    servers: &[Server],
    env: &ServerEnv,
    backends: Backends<'_>,
    results: &mut Results,
) -> anyhow::Result<()> {
    for round in 0..plan.rounds {
        eprintln!("== round {}/{}", round + 1, plan.rounds);
        if let Some(r) = backends.redis {
            redis_stats::flush(r)?;
        }
        let mut procs: BTreeMap<Server, ServerProcess> = BTreeMap::new();
        for s in servers {
            procs.insert(*s, ServerProcess::start(*s, env, round)?);
        }
        let mut order = servers.to_vec();
        let shift = round % order.len().max(1);
        order.rotate_left(shift);
        for w in &plan.workloads {
            for s in order.iter().filter(|s| s.supports(*w)) {
                let proc = procs.get_mut(s).expect("started above");
                let sample = measure_retrying(rt, plan, proc, *s, *w, backends)
                    .with_context(|| format!("measuring {s} {w} (round {})", round + 1))?;
                eprintln!(
                    "   {:<12} {:<22} {:>8.0} req/s  p50 {:>7.2} ms  cpu {:>6.1} us/req  other {:.2}{}{}",
                    w.name(),
                    s.name(),
                    sample.rps,
                    sample.p50_us / 1000.0,
                    sample.cpu_us,
                    sample.other_load,
                    sample
                        .cmds
                        .map(|c| format!("  {c:.2} cmds/req"))
                        .unwrap_or_default(),
                    sample
                        .pg_cpu_us
                        .map(|c| format!("  pg {c:.1} us/req"))
                        .unwrap_or_default(),
                );
                results
                    .samples
                    .get_mut(&(*s, *w))
                    .expect("inserted above")
                    .push(Some(sample));
            }
        }
        // Servers are killed here, before the next round starts new ones.
        drop(procs);
    }
    Ok(())
}

/// The report: the table, Redis's command breakdown, the machine, memory, the targets.
fn report_text(
    plan: &Plan,
    started: Instant,
    machine: &str,
    results: &Results,
    rows: &[report::Row],
) -> String {
    let mut text = String::new();
    text += &format!(
        "cloakroom-bench --{}: {} round(s), {:?} windows, {} connections ({:?} client), {:.0} s in all\n\n",
        plan.mode,
        plan.rounds,
        plan.window,
        plan.connections,
        plan.client,
        started.elapsed().as_secs_f64()
    );
    text += &format!(
        "machine at start: {machine}; load average at end: {}\n\n",
        report::load_average()
    );
    text += &report::table(rows);
    text += "\nRedis commands per request: sent by the server (counting pass), and Redis's time \
             per command per request, script-internal commands included (last round):\n";
    text += &report::command_breakdown(rows);
    text += "\n";
    text += &report::machine_lines(rows);
    text += &report::memory_lines(results);
    text += "\ntargets:\n";
    text += &targets::checks_text(&targets::checks(results));
    text
}

/// [`measure`], again (after 5 s, at most `plan.retries` times) while other work kept more
/// than `plan.max_other_load` cores busy; the last attempt is kept.
pub(crate) fn measure_retrying(
    rt: &tokio::runtime::Runtime,
    plan: &Plan,
    proc: &mut ServerProcess,
    server: Server,
    workload: Workload,
    backends: Backends<'_>,
) -> anyhow::Result<Sample> {
    let mut retries = 0;
    loop {
        let sample = measure(rt, plan, proc, server, workload, backends)?;
        if sample.other_load <= plan.max_other_load || retries == plan.retries {
            return Ok(sample);
        }
        retries += 1;
        eprintln!(
            "   ({workload} {server}: other work kept {:.2} cores busy; measuring again in 5 s)",
            sample.other_load
        );
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// One case, one round.
pub(crate) fn measure(
    rt: &tokio::runtime::Runtime,
    plan: &Plan,
    proc: &mut ServerProcess,
    server: Server,
    workload: Workload,
    backends: Backends<'_>,
) -> anyhow::Result<Sample> {
    let addr = proc.addr;
    let path = workload.path();
    let redis = backends.redis.filter(|_| server.uses_redis());
    let postgres = backends.postgres.filter(|_| server.uses_postgres());
    let mut clients = rt.block_on(async {
        let mut c = Clients::connect(
            addr,
            plan.client,
            plan.connections,
            workload.keeps_cookies(),
            workload.by_header(),
        )
        .await?;
        c.warm_up(workload.warm_up()).await?;
        c.run(path, Stop::After(plan.warm)).await?;
        anyhow::Ok(c)
    })?;

    // The timed window.
    let busy0 = system_busy()?;
    let cpu0 = proc.cpu_time()?;
    let own0 = cpu_time(std::process::id())?;
    let info0 = redis.map(RedisInfo::read).transpose()?;
    let pg0 = postgres.map(Postgres::cpu_time).transpose()?;
    let res = rt.block_on(clients.run(path, Stop::After(plan.window)))?;
    let cpu1 = proc.cpu_time()?;
    let own1 = cpu_time(std::process::id())?;
    let info1 = redis.map(RedisInfo::read).transpose()?;
    let pg1 = postgres.map(Postgres::cpu_time).transpose()?;
    let busy1 = system_busy()?;
    let n = res.requests.max(1) as f64;
    let cpu = (cpu1 - cpu0).as_secs_f64();
    let mut sample = Sample {
        rps: res.rps(),
        p50_us: res.latency.value_at_quantile(0.50) as f64,
        p99_us: res.latency.value_at_quantile(0.99) as f64,
        requests: res.requests,
        errors: res.errors,
        cpu_us: cpu * 1e6 / n,
        util: cpu / res.elapsed.as_secs_f64(),
        load_util: (own1 - own0).as_secs_f64() / res.elapsed.as_secs_f64(),
        ..Sample::default()
    };
    let mut ours = cpu + (own1 - own0).as_secs_f64();
    if let (Some(a), Some(b)) = (&info0, &info1) {
        ours += b.cpu_secs - a.cpu_secs;
    }
    if let (Some(a), Some(b)) = (pg0, pg1) {
        let pg = b.saturating_sub(a).as_secs_f64();
        ours += pg;
        sample.pg_cpu_us = Some(pg * 1e6 / n);
    }
    sample.other_load =
        (((busy1 - busy0).as_secs_f64() - ours) / res.elapsed.as_secs_f64()).max(0.0);
    if let (Some(a), Some(b)) = (info0, info1) {
        sample.cmd_time = redis_stats::command_time(&a, &b, n);
        sample.redis_cpu_us = Some((b.cpu_secs - a.cpu_secs) * 1e6 / n);
        sample.redis_in_bytes = Some(b.input_bytes.saturating_sub(a.input_bytes) as f64 / n);
    }
    if res.errors > 0 {
        eprintln!(
            "warning: {server} {workload}: {} non-2xx answers",
            res.errors
        );
    }

    count(
        rt,
        plan,
        &mut clients,
        addr,
        (server, workload),
        redis,
        &mut sample,
    )?;
    drop(clients);
    Ok(sample)
}

/// The counting pass after a timed window: a fixed number of requests, with the Redis slow
/// log recording every command and the server counting store operations and bytes.
fn count(
    rt: &tokio::runtime::Runtime,
    plan: &Plan,
    clients: &mut Clients,
    addr: std::net::SocketAddr,
    (server, workload): (Server, Workload),
    redis: Option<&RedisServer>,
    sample: &mut Sample,
) -> anyhow::Result<()> {
    let path = workload.path();
    if server.is_rust() {
        get_text(addr, "/__bench/detail/on")?;
    }
    let stats0 = server
        .is_rust()
        .then(|| get_text(addr, "/__bench/stats"))
        .transpose()?;
    if let Some(r) = redis {
        redis_stats::start_counting(r);
    }
    let counted = rt.block_on(clients.run(path, Stop::Count(plan.count_per_client)))?;
    let m = counted.requests.max(1) as f64;
    if let Some(r) = redis {
        let names = redis_stats::stop_counting(r)?;
        let total: u64 = names.values().sum();
        sample.cmds = Some(total as f64 / m);
        sample.cmd_names = names
            .iter()
            .map(|(k, v)| format!("{k}={:.2}", *v as f64 / m))
            .collect::<Vec<_>>()
            .join(" ");
    }
    if let Some(before) = stats0 {
        let after = get_text(addr, "/__bench/stats")?;
        get_text(addr, "/__bench/detail/off")?;
        if let (Some((o0, b0)), Some((o1, b1))) = (parse_stats(&before), parse_stats(&after)) {
            sample.store_ops = Some((o1 - o0) as f64 / m);
            sample.data_bytes = Some((b1 - b0) as f64 / m);
        }
    }
    Ok(())
}

/// Runs `mem STORE N` in a fresh process and reads its answer.
fn measure_memory(store: &str, n: u64) -> anyhow::Result<MemResult> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .args(["mem", store, &n.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "mem {store} failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    MemResult::parse(text.trim()).with_context(|| format!("mem {store} printed {text:?}"))
}
