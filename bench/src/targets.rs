//! The targets the benchmark issues set, checked against a run.

use std::fmt::Write as _;

use crate::cases::{Server, Workload};
use crate::memory::MemResult;
use crate::report::{Results, Row, median, num};

/// One target and whether the run met it.
#[derive(Debug)]
pub(crate) struct Check {
    pub(crate) what: String,
    pub(crate) measured: String,
    /// `None` when the run lacks the cases to decide.
    pub(crate) met: Option<bool>,
}

/// The targets of the benchmark issue, checked against this run.
pub(crate) fn checks(results: &Results) -> Vec<Check> {
    let mut out = Vec::new();
    let row = |s, w| results.row(s, w);
    let mut at_least = |what: String, v: Option<f64>, min: f64, unit: &str| {
        out.push(Check {
            what,
            measured: v.map_or("n/a".into(), |x| format!("{x:.2}{unit}")),
            met: v.map(|x| x >= min),
        });
    };
    use Server::{CloakroomMemory, CloakroomRedis, CloakroomSqlite};
    use Workload::{BlindWrite, Large, New, Read, Write};
    // The redesign's targets (issue 13): the memory store against tower-sessions' and plain.
    for w in [Read, Write, New] {
        at_least(
            format!("memory {w} >= 1.15x tower-sessions"),
            row(CloakroomMemory, w).ratio_peer,
            1.15,
            "x",
        );
    }
    at_least(
        "memory read >= 0.85x plain".into(),
        row(CloakroomMemory, Read).ratio_plain,
        0.85,
        "x",
    );
    at_least(
        "memory read >= 0.95x plain".into(),
        row(CloakroomMemory, Read).ratio_plain,
        0.95,
        "x",
    );
    at_least(
        "memory write >= 0.90x plain".into(),
        row(CloakroomMemory, Write).ratio_plain,
        0.90,
        "x",
    );
    for (w, min) in [(Read, 0.75), (Write, 0.50), (New, 0.70)] {
        at_least(
            format!("redis {w} >= {min:.2}x plain"),
            row(CloakroomRedis, w).ratio_plain,
            min,
            "x",
        );
    }
    for w in [Read, Write, New] {
        at_least(
            format!("redis {w} >= 1.5x tower-sessions"),
            row(CloakroomRedis, w).ratio_peer,
            1.5,
            "x",
        );
    }
    for w in Workload::ALL {
        at_least(
            format!("{w}: >= 100x Tornado+pycket (redis)"),
            row(CloakroomRedis, w).ratio_tornado,
            100.0,
            "x",
        );
    }
    for (w, want) in [(Read, 1.0), (BlindWrite, 1.0), (Write, 2.0), (New, 1.0)] {
        let v = row(CloakroomRedis, w).cmds;
        out.push(Check {
            what: format!("redis commands per request, {w} = {want}"),
            measured: num(v, 2),
            met: v.map(|x| (x - want).abs() < 0.05),
        });
    }
    // Large: bytes written per request must not grow with the session (10 KB vs 8 bytes).
    for (s, what, f) in [
        (
            CloakroomMemory,
            "data bytes",
            (|r: &Row| r.data_bytes) as fn(&Row) -> Option<f64>,
        ),
        (CloakroomSqlite, "data bytes", |r: &Row| r.data_bytes),
        (CloakroomRedis, "Redis input bytes", |r: &Row| {
            r.redis_in_bytes
        }),
    ] {
        let large = f(&row(s, Large));
        let small = f(&row(s, Write));
        out.push(Check {
            what: format!("{s}: large writes per request <= 1.5x write's ({what})"),
            measured: format!("{} vs {}", num(large, 0), num(small, 0)),
            met: large.zip(small).map(|(l, w)| l <= 1.5 * w.max(1.0)),
        });
    }
    out.extend(cost_checks(results));
    out.extend(near_cache_checks(results));
    out.extend(actix_checks(results));
    out
}

/// The Redis targets of issue 14: the near-cache's reads against the memory store's and
/// tower-sessions', one command per read-then-write, and the new session.
fn near_cache_checks(results: &Results) -> Vec<Check> {
    use Server::{CloakroomMemory, CloakroomRedis, CloakroomRedisCache};
    use Workload::{New, Read, Write};
    let row = |s, w| results.row(s, w);
    let rps = |s, w| row(s, w).rps;
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let mut out = Vec::new();
    let mut at_least = |what: &str, v: Option<f64>, min: f64| {
        out.push(Check {
            what: what.into(),
            measured: num(v, 2) + "x",
            met: v.map(|x| x >= min),
        });
    };
    at_least(
        "redis+cache read >= 0.9x memory read",
        ratio(rps(CloakroomRedisCache, Read), rps(CloakroomMemory, Read)),
        0.9,
    );
    at_least(
        "redis+cache read >= 1.5x tower-sessions-redis",
        row(CloakroomRedisCache, Read).ratio_peer,
        1.5,
    );
    at_least(
        "redis new >= 1.2x tower-sessions-redis",
        row(CloakroomRedis, New).ratio_peer,
        1.2,
    );
    let cmds = row(CloakroomRedisCache, Write).cmds;
    out.push(Check {
        what: "redis+cache commands per request, write = 1".into(),
        measured: num(cmds, 2),
        met: cmds.map(|x| (x - 1.0).abs() < 0.05),
    });
    out
}

/// The actix-web targets (issue 16): cloakroom-actix on Redis against actix-session on the
/// same Redis, and the CPU each adds over plain actix-web, side by side.
fn actix_checks(results: &Results) -> Vec<Check> {
    use Server::{ActixSessionRedis, CloakroomActixRedis, CloakroomActixRedisCache};
    use Workload::{New, Read, Write};
    let row = |s, w| results.row(s, w);
    let mut out = Vec::new();
    for (server, name) in [
        (CloakroomActixRedis, "actix redis"),
        (CloakroomActixRedisCache, "actix redis+cache"),
    ] {
        for w in [Read, Write] {
            let v = row(server, w).ratio_peer;
            out.push(Check {
                what: format!("{name} {w} >= 1.2x actix-session"),
                measured: num(v, 2) + "x",
                met: v.map(|x| x >= 1.2),
            });
        }
    }
    for w in [Read, Write, New] {
        let ours = row(CloakroomActixRedis, w).cpu_over_plain_us;
        let theirs = row(ActixSessionRedis, w).cpu_over_plain_us;
        out.push(Check {
            what: format!("actix redis {w}: CPU over actix-plain (us/req) <= actix-session's"),
            measured: format!("{} vs {}", num(ours, 1), num(theirs, 1)),
            met: ours.zip(theirs).map(|(a, b)| a <= b),
        });
    }
    out
}

/// The cost targets: memory per idle session, CPU added over plain next to tower-sessions'.
fn cost_checks(results: &Results) -> Vec<Check> {
    use Server::{CloakroomMemory, CloakroomRedis};
    use Workload::{New, Read, Write};
    let row = |s, w| results.row(s, w);
    let mut out = Vec::new();
    let over = results
        .memory
        .get("cloakroom-memory")
        .and_then(|runs| median(runs.iter().map(MemResult::overhead).collect()));
    out.push(Check {
        what: "memory store overhead < 200 B per idle session beyond its data".into(),
        measured: num(over, 0) + " B",
        met: over.map(|x| x < 200.0),
    });
    for w in [Read, Write, New] {
        let v = row(CloakroomMemory, w).cpu_over_plain_vs_peer;
        out.push(Check {
            what: format!("memory {w}: CPU over plain <= 0.7x tower-sessions' (issue 13)"),
            measured: num(v, 2) + "x",
            met: v.map(|x| x <= 0.7),
        });
    }
    for s in [CloakroomMemory, CloakroomRedis] {
        for w in Workload::ALL {
            let v = row(s, w).cpu_over_plain_vs_peer;
            out.push(Check {
                what: format!("{s} {w}: CPU over plain <= 0.5x tower-sessions'"),
                measured: num(v, 2) + "x",
                met: v.map(|x| x <= 0.5),
            });
        }
    }
    out
}

/// The target checks as text.
pub(crate) fn checks_text(checks: &[Check]) -> String {
    let w = checks.iter().map(|c| c.what.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let verdict = match c.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "n/a",
        };
        let _ = writeln!(out, "  {:<w$}  {:>14}  {verdict}", c.what, c.measured);
    }
    out
}
