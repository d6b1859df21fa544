//! Medians over rounds, ratios against baselines measured in the same round, the terminal
//! table, the `case=` lines for scripts, the target checks and the SVG chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::cases::{Server, Workload};
use crate::memory::MemResult;

/// One measurement of one server under one workload in one round.
#[derive(Clone, Debug, Default)]
pub(crate) struct Sample {
    /// Requests per second.
    pub(crate) rps: f64,
    /// Median latency, µs.
    pub(crate) p50_us: f64,
    /// 99th percentile latency, µs.
    pub(crate) p99_us: f64,
    /// Requests in the timed window.
    pub(crate) requests: u64,
    /// Non-2xx answers in the timed window.
    pub(crate) errors: u64,
    /// Server CPU time (user + system, all threads) per request, µs.
    pub(crate) cpu_us: f64,
    /// Server CPU time / wall time of the window (1.0 = one core busy).
    pub(crate) util: f64,
    /// The load generator's CPU time / wall time (this process).
    pub(crate) load_util: f64,
    /// Cores kept busy by anything else during the window (all busy CPU time minus the
    /// server's, the load generator's, Redis's and PostgreSQL's, per second).
    pub(crate) other_load: f64,
    /// Redis CPU per request, µs.
    pub(crate) redis_cpu_us: Option<f64>,
    /// PostgreSQL CPU per request (the postmaster and all its children), µs.
    pub(crate) pg_cpu_us: Option<f64>,
    /// Bytes Redis received per request (`total_net_input_bytes`).
    pub(crate) redis_in_bytes: Option<f64>,
    /// Commands the server sent to Redis per request (counting pass).
    pub(crate) cmds: Option<f64>,
    /// Those commands by name, per request.
    pub(crate) cmd_names: String,
    /// Redis's own time per command per request (timed window, `INFO commandstats`).
    pub(crate) cmd_time: String,
    /// Store operations per request (counting pass; Rust servers).
    pub(crate) store_ops: Option<f64>,
    /// Bytes of session data handed to the store for writing per request (counting pass).
    pub(crate) data_bytes: Option<f64>,
}

/// Every sample of a run.
#[derive(Debug, Default)]
pub(crate) struct Results {
    /// (server, workload) -> one sample per round, in round order; `None` where a round
    /// skipped the case.
    pub(crate) samples: BTreeMap<(Server, Workload), Vec<Option<Sample>>>,
    /// RAM per idle session, per in-memory store (see `memory::STORES`), one result per
    /// repetition.
    pub(crate) memory: BTreeMap<String, Vec<MemResult>>,
}

/// The median of some values (mean of the middle two for an even count); `None` if empty.
pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The medians of one case, and its ratios (each taken per round, then the median).
#[derive(Clone, Debug, Default)]
pub(crate) struct Row {
    pub(crate) server: Option<Server>,
    pub(crate) workload: Option<Workload>,
    pub(crate) rounds: usize,
    pub(crate) rps: Option<f64>,
    pub(crate) rps_min: Option<f64>,
    pub(crate) rps_max: Option<f64>,
    pub(crate) p50_us: Option<f64>,
    pub(crate) p99_us: Option<f64>,
    pub(crate) errors: u64,
    /// Requests in all timed windows together.
    pub(crate) requests: u64,
    pub(crate) cpu_us: Option<f64>,
    pub(crate) util: Option<f64>,
    pub(crate) load_util: Option<f64>,
    pub(crate) other_load: Option<f64>,
    pub(crate) redis_cpu_us: Option<f64>,
    pub(crate) pg_cpu_us: Option<f64>,
    pub(crate) redis_in_bytes: Option<f64>,
    pub(crate) cmds: Option<f64>,
    pub(crate) cmd_names: String,
    pub(crate) cmd_time: String,
    pub(crate) store_ops: Option<f64>,
    pub(crate) data_bytes: Option<f64>,
    /// Requests/s over the baseline's, same round: `plain` for the axum servers,
    /// `actix-plain` for the actix ones ([`Server::baseline`]).
    pub(crate) ratio_plain: Option<f64>,
    pub(crate) ratio_peer: Option<f64>,
    pub(crate) ratio_tornado: Option<f64>,
    /// Server CPU per request minus the baseline's (same round).
    pub(crate) cpu_over_plain_us: Option<f64>,
    /// That, divided by the peer's CPU over its baseline (same round).
    pub(crate) cpu_over_plain_vs_peer: Option<f64>,
}

impl Results {
    fn round_samples(&self, s: Server, w: Workload) -> &[Option<Sample>] {
        self.samples.get(&(s, w)).map_or(&[], Vec::as_slice)
    }

    /// Per-round ratio of `f(a)` to `f(b)`, then the median.
    fn ratio(
        &self,
        a: Server,
        b: Server,
        w: Workload,
        f: impl Fn(&Sample, &Sample) -> Option<f64>,
    ) -> Option<f64> {
        let xs = self.round_samples(a, w);
        let ys = self.round_samples(b, w);
        median(
            xs.iter()
                .zip(ys)
                .filter_map(|(x, y)| f(x.as_ref()?, y.as_ref()?))
                .collect(),
        )
    }

    /// The row of one case.
    pub(crate) fn row(&self, s: Server, w: Workload) -> Row {
        let samples: Vec<&Sample> = self.round_samples(s, w).iter().flatten().collect();
        let med = |f: &dyn Fn(&Sample) -> Option<f64>| {
            median(samples.iter().filter_map(|x| f(x)).collect())
        };
        let rps: Vec<f64> = samples.iter().map(|x| x.rps).collect();
        let cpu_over = |x: &Sample, p: &Sample| Some(x.cpu_us - p.cpu_us);
        Row {
            server: Some(s),
            workload: Some(w),
            rounds: samples.len(),
            rps: median(rps.clone()),
            rps_min: rps.iter().copied().reduce(f64::min),
            rps_max: rps.iter().copied().reduce(f64::max),
            p50_us: med(&|x| Some(x.p50_us)),
            p99_us: med(&|x| Some(x.p99_us)),
            errors: samples.iter().map(|x| x.errors).sum(),
            requests: samples.iter().map(|x| x.requests).sum(),
            cpu_us: med(&|x| Some(x.cpu_us)),
            util: med(&|x| Some(x.util)),
            load_util: med(&|x| Some(x.load_util)),
            other_load: med(&|x| Some(x.other_load)),
            redis_cpu_us: med(&|x| x.redis_cpu_us),
            pg_cpu_us: med(&|x| x.pg_cpu_us),
            redis_in_bytes: med(&|x| x.redis_in_bytes),
            cmds: med(&|x| x.cmds),
            cmd_names: samples
                .last()
                .map(|x| x.cmd_names.clone())
                .unwrap_or_default(),
            cmd_time: samples
                .last()
                .map(|x| x.cmd_time.clone())
                .unwrap_or_default(),
            store_ops: med(&|x| x.store_ops),
            data_bytes: med(&|x| x.data_bytes),
            ratio_plain: s
                .baseline()
                .and_then(|b| self.ratio(s, b, w, |x, p| Some(x.rps / p.rps))),
            ratio_peer: s
                .peer()
                .and_then(|p| self.ratio(s, p, w, |x, y| Some(x.rps / y.rps))),
            ratio_tornado: (s == Server::CloakroomRedis)
                .then(|| self.ratio(s, Server::TornadoPycket, w, |x, y| Some(x.rps / y.rps)))
                .flatten(),
            cpu_over_plain_us: s.baseline().and_then(|b| self.ratio(s, b, w, cpu_over)),
            // A ratio of two differences amplifies noise when taken per round, so this one is
            // the ratio of the two medians (each difference still taken within a round).
            cpu_over_plain_vs_peer: s.peer().and_then(|peer| {
                let ours = self.ratio(s, s.baseline()?, w, cpu_over)?;
                let theirs = self.ratio(peer, peer.baseline()?, w, cpu_over)?;
                (theirs > 0.0).then(|| ours / theirs)
            }),
        }
    }

    /// Rows of every case measured, grouped by workload.
    pub(crate) fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for w in Workload::ALL {
            for s in Server::ALL {
                if self.samples.contains_key(&(s, w)) {
                    rows.push(self.row(s, w));
                }
            }
        }
        rows
    }
}

pub(crate) fn num(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) => format!("{x:.digits$}"),
        None => "n/a".into(),
    }
}

/// Every sample, one CSV line each, for analysis beyond the medians.
pub(crate) fn samples_csv(results: &Results) -> String {
    let mut out = String::from(
        "server,workload,round,rps,p50_us,p99_us,requests,errors,cpu_us,server_util,load_util,\
         other_load,redis_cpu_us,redis_in_bytes,cmds,store_ops,data_bytes,pg_cpu_us\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.3}"));
    for ((s, w), rounds) in &results.samples {
        for (i, x) in rounds.iter().enumerate() {
            let Some(x) = x else { continue };
            let _ = writeln!(
                out,
                "{s},{w},{},{:.1},{},{},{},{},{:.3},{:.3},{:.3},{:.3},{},{},{},{},{},{}",
                i + 1,
                x.rps,
                x.p50_us,
                x.p99_us,
                x.requests,
                x.errors,
                x.cpu_us,
                x.util,
                x.load_util,
                x.other_load,
                opt(x.redis_cpu_us),
                opt(x.redis_in_bytes),
                opt(x.cmds),
                opt(x.store_ops),
                opt(x.data_bytes),
                opt(x.pg_cpu_us),
            );
        }
    }
    out
}

/// The machine, for the report header: cores, CPU model, memory, kernel, load average.
pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim())
        })
        .unwrap_or("unknown CPU")
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores ({model}), {mem_gib:.1} GiB, Linux {}, load average {}",
        kernel.trim(),
        load_average()
    )
}

/// `/proc/loadavg`'s three averages.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// (max - min) / median of requests/s over the rounds, as a percentage.
fn spread(r: &Row) -> String {
    match (r.rps_min, r.rps_max, r.rps) {
        (Some(lo), Some(hi), Some(m)) if r.rounds > 1 && m > 0.0 => {
            format!("{:.0}%", (hi - lo) / m * 100.0)
        }
        _ => "-".into(),
    }
}

/// The aligned table for the terminal.
pub(crate) fn table(rows: &[Row]) -> String {
    let header = [
        "case",
        "store",
        "req/s",
        "spread",
        "x plain",
        "x peer",
        "p50 ms",
        "p99 ms",
        "cpu us/req",
        "cpu-plain",
        "util",
        "lg util",
        "other",
        "redis us/req",
        "pg us/req",
        "cmds/req",
        "ops/req",
        "data B/req",
        "redis-in B/req",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for r in rows {
        lines.push(vec![
            r.workload.map(|w| w.name()).unwrap_or("").to_owned(),
            r.server.map(|s| s.name()).unwrap_or("").to_owned(),
            num(r.rps, 0),
            spread(r),
            num(r.ratio_plain, 2),
            num(r.ratio_peer, 2),
            num(r.p50_us.map(|u| u / 1000.0), 2),
            num(r.p99_us.map(|u| u / 1000.0), 2),
            num(r.cpu_us, 1),
            num(r.cpu_over_plain_us, 1),
            num(r.util, 2),
            num(r.load_util, 2),
            num(r.other_load, 2),
            num(r.redis_cpu_us, 1),
            num(r.pg_cpu_us, 1),
            num(r.cmds, 2),
            num(r.store_ops, 2),
            num(r.data_bytes, 0),
            num(r.redis_in_bytes, 0),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let mut last_case = String::new();
    for (n, l) in lines.iter().enumerate() {
        if n > 1 && l[0] != last_case {
            out.push('\n');
        }
        last_case = l[0].clone();
        for (i, cell) in l.iter().enumerate() {
            if i < 2 {
                let _ = write!(out, "{cell:<w$}  ", w = widths[i]);
            } else {
                let _ = write!(out, "{cell:>w$}  ", w = widths[i]);
            }
        }
        let len = out.trim_end().len();
        out.truncate(len);
        out.push('\n');
    }
    out
}

/// One `case=` line per case, for scripts.
pub(crate) fn machine_lines(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        let (Some(s), Some(w)) = (r.server, r.workload) else {
            continue;
        };
        let _ = writeln!(
            out,
            "case={w} store={s} rps={} ratio_plain={} ratio_peer={} ratio_tornado={} \
             cmds_per_req={} cpu_us_per_req={} cpu_over_plain_us={} \
             cpu_over_plain_vs_peer={} redis_cpu_us_per_req={} pg_cpu_us_per_req={} p50_us={} p99_us={} server_util={} load_util={} other_load={} \
             store_ops_per_req={} data_bytes_per_req={} redis_in_bytes_per_req={} requests={} errors={} rounds={}",
            num(r.rps, 0),
            num(r.ratio_plain, 3),
            num(r.ratio_peer, 3),
            num(r.ratio_tornado, 1),
            num(r.cmds, 2),
            num(r.cpu_us, 2),
            num(r.cpu_over_plain_us, 2),
            num(r.cpu_over_plain_vs_peer, 3),
            num(r.redis_cpu_us, 2),
            num(r.pg_cpu_us, 2),
            num(r.p50_us, 0),
            num(r.p99_us, 0),
            num(r.util, 2),
            num(r.load_util, 2),
            num(r.other_load, 2),
            num(r.store_ops, 2),
            num(r.data_bytes, 0),
            num(r.redis_in_bytes, 0),
            r.requests,
            r.errors,
            r.rounds,
        );
    }
    out
}

/// Redis commands by name per request, for the Redis cases.
pub(crate) fn command_breakdown(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows {
        if let (Some(s), Some(w)) = (r.server, r.workload) {
            if s.uses_redis() && !r.cmd_names.is_empty() {
                let _ = writeln!(
                    out,
                    "  {:<12} {:<22} sent: {}\n  {:<12} {:<22} time: {}",
                    w.name(),
                    s.name(),
                    r.cmd_names,
                    "",
                    "",
                    r.cmd_time
                );
            }
        }
    }
    out
}

/// The RAM-per-idle-session lines.
pub(crate) fn memory_lines(results: &Results) -> String {
    let mut out = String::new();
    for (server, runs) in &results.memory {
        let per = median(runs.iter().map(MemResult::per_session).collect());
        let over = median(runs.iter().map(MemResult::overhead).collect());
        let load = median(runs.iter().map(|r| r.load_ns).collect());
        let n = runs.first().map_or(0, |r| r.sessions);
        let _ = writeln!(
            out,
            "mem store={server} sessions={n} repeats={} bytes_per_session={} overhead_beyond_data={} load_ns={}",
            runs.len(),
            num(per, 0),
            num(over, 0),
            num(load, 0),
        );
    }
    out
}

/// Rows rebuilt from the `case=` lines of a saved report (for redrawing its chart).
pub(crate) fn rows_from_text(text: &str) -> Vec<Row> {
    text.lines()
        .filter(|l| l.starts_with("case="))
        .filter_map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            };
            let w = Workload::ALL
                .into_iter()
                .find(|w| Some(w.name()) == field("case"))?;
            let s: Server = field("store")?.parse().ok()?;
            Some(Row {
                server: Some(s),
                workload: Some(w),
                rps: field("rps").and_then(|v| v.parse().ok()),
                ..Row::default()
            })
        })
        .collect()
}

/// Draws requests/s per case (log scale: Tornado is orders of magnitude below the rest).
pub(crate) fn chart(rows: &[Row], path: &Path, title: &str) -> anyhow::Result<()> {
    use plotters::prelude::*;

    let workloads: Vec<Workload> = Workload::ALL
        .into_iter()
        .filter(|w| rows.iter().any(|r| r.workload == Some(*w)))
        .collect();
    let servers: Vec<Server> = Server::ALL
        .into_iter()
        .filter(|s| rows.iter().any(|r| r.server == Some(*s)))
        .collect();
    let value = |s: Server, w: Workload| {
        rows.iter()
            .find(|r| r.server == Some(s) && r.workload == Some(w))
            .and_then(|r| r.rps)
    };
    let max = rows.iter().filter_map(|r| r.rps).fold(1.0, f64::max);
    let min = rows.iter().filter_map(|r| r.rps).fold(max, f64::min);
    let y_min = 10f64.powf((min.max(1.0) / 2.0).log10().floor());
    // A decade of head room above the tallest bar keeps the legend clear of the bars.
    let y_max = 10f64.powf((max * 1.5).log10().ceil() + 1.0);

    let root = SVGBackend::new(path, (1200, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = workloads.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n, (y_min..y_max).log_scale())?;
    let names: Vec<&str> = workloads.iter().map(|w| w.name()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(workloads.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 && i < names.len() {
                names[i].to_owned()
            } else {
                String::new()
            }
        })
        .y_desc("requests/s (log scale)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let palette = [
        RGBColor(120, 120, 120),
        RGBColor(31, 119, 180),
        RGBColor(23, 190, 207),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    let width = 0.8 / servers.len().max(1) as f64;
    for (i, s) in servers.iter().enumerate() {
        let color = palette[i % palette.len()];
        let bars: Vec<Rectangle<(f64, f64)>> = workloads
            .iter()
            .enumerate()
            .filter_map(|(j, w)| {
                let v = value(*s, *w)?;
                let x0 = j as f64 + 0.1 + i as f64 * width;
                Some(Rectangle::new(
                    [(x0, y_min), (x0 + width * 0.9, v)],
                    color.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(bars)?
            .label(s.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 13))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn ratios_are_per_round() {
        let mut r = Results::default();
        let s = |rps| {
            Some(Sample {
                rps,
                ..Sample::default()
            })
        };
        // Round 2 is slow for both: the per-round ratio stays 0.5.
        r.samples.insert(
            (Server::Plain, Workload::Read),
            vec![s(100.0), s(10.0), s(100.0)],
        );
        r.samples.insert(
            (Server::CloakroomMemory, Workload::Read),
            vec![s(50.0), s(5.0), s(50.0)],
        );
        assert_eq!(
            r.row(Server::CloakroomMemory, Workload::Read).ratio_plain,
            Some(0.5)
        );
    }

    #[test]
    fn actix_servers_are_measured_against_actix_plain() {
        let mut r = Results::default();
        let s = |rps, cpu_us| {
            Some(Sample {
                rps,
                cpu_us,
                ..Sample::default()
            })
        };
        let w = Workload::Read;
        r.samples.insert((Server::Plain, w), vec![s(400.0, 5.0)]);
        r.samples
            .insert((Server::ActixPlain, w), vec![s(200.0, 10.0)]);
        r.samples
            .insert((Server::CloakroomActixRedis, w), vec![s(100.0, 16.0)]);
        r.samples
            .insert((Server::ActixSessionRedis, w), vec![s(50.0, 22.0)]);
        let ours = r.row(Server::CloakroomActixRedis, w);
        assert_eq!(ours.ratio_plain, Some(0.5));
        assert_eq!(ours.ratio_peer, Some(2.0));
        assert_eq!(ours.cpu_over_plain_us, Some(6.0));
        assert_eq!(ours.cpu_over_plain_vs_peer, Some(0.5));
        assert_eq!(r.row(Server::ActixSessionRedis, w).ratio_plain, Some(0.25));
        assert_eq!(r.row(Server::ActixPlain, w).ratio_plain, None);
    }
}
