//! What sealed session data adds to a request, measured in pairs: the `sealing` cases of
//! `micro` (a read of one small field, a read then write of it, a blind write of a small
//! value, a blind write of a 1 KB value, on `MemoryStore`), plain and sealed engines alternating batch by batch in one
//! process, so both sides of each difference see the same load. A run keeps each side's
//! fastest batch (the one least disturbed by other processes) and prints sealed minus plain
//! per request; the summary gives the median run and the spread over runs.
//!
//! ```text
//! cargo bench -p cloakroom-bench --bench seal_pairs            # 6 runs of 60 pairs
//! cargo bench -p cloakroom-bench --bench seal_pairs -- 10 40   # 10 runs of 40 pairs
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloakroom_core::session::SessionEngine;
use cloakroom_core::store::MemoryStore;

mod common;
use common::engine_with_session;

/// Requests in one timed batch.
const BATCH: u32 = 2_000;

/// The requests measured.
#[derive(Clone, Copy)]
enum Case {
    Read,
    Write,
    WriteSmall,
    BlindWrite1k,
}

impl Case {
    const ALL: [Case; 4] = [
        Case::Read,
        Case::Write,
        Case::WriteSmall,
        Case::BlindWrite1k,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::Read => "read",
            Case::Write => "write",
            Case::WriteSmall => "write_small",
            Case::BlindWrite1k => "blind_write_1k",
        }
    }
}

/// One request of `case` with the ticket `pair`.
async fn request(engine: &SessionEngine, pair: &str, case: Case, kb: &str) {
    let s = engine.session(Some(black_box(pair)));
    match case {
        Case::Read => {
            let n: Option<u64> = s.get("counter").await.expect("get");
            black_box(n);
        }
        Case::Write => {
            let n: u64 = s.get("counter").await.expect("get").unwrap_or(0);
            s.set("counter", &(n % 1000 + 1)).await.expect("set");
        }
        Case::WriteSmall => s.set("counter", black_box(&42u64)).await.expect("set"),
        Case::BlindWrite1k => s.set("blob", black_box(kb)).await.expect("set"),
    }
    black_box(engine.commit(&s, None).await.expect("commit"));
}

/// The time of one batch of `case`.
fn batch(
    rt: &tokio::runtime::Runtime,
    (engine, pair): &(SessionEngine, String),
    case: Case,
    kb: &str,
) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..BATCH {
            request(engine, pair, case, kb).await;
        }
        start.elapsed()
    })
}

/// Microseconds per request of a batch.
fn per_request(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6 / f64::from(BATCH)
}

fn main() {
    // `cargo bench` passes `--bench`; the numbers are the runs and the pairs per run.
    let numbers: Vec<usize> = (std::env::args().skip(1))
        .filter_map(|a| a.parse().ok())
        .collect();
    let runs = numbers.first().copied().unwrap_or(6);
    let pairs = numbers.get(1).copied().unwrap_or(60);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let kb = "x".repeat(1022); // 1024 bytes of JSON text with its quotes
    let plain = engine_with_session(&rt, Arc::new(MemoryStore::new()), false);
    let sealed = engine_with_session(&rt, Arc::new(MemoryStore::new()), true);
    println!("{BATCH} requests a batch, {pairs} pairs a run; us per request, fastest batch");
    for case in Case::ALL {
        for engine in [&plain, &sealed] {
            batch(&rt, engine, case, &kb); // warm-up
        }
        let mut diffs = Vec::with_capacity(runs);
        for run in 1..=runs {
            let (mut p, mut s) = (Duration::MAX, Duration::MAX);
            for _ in 0..pairs {
                p = p.min(batch(&rt, &plain, case, &kb));
                s = s.min(batch(&rt, &sealed, case, &kb));
            }
            let (p, s) = (per_request(p), per_request(s));
            println!(
                "{:<15} run {run}: plain {p:.3}  sealed {s:.3}  +{:.3} ({:.2}x)",
                case.name(),
                s - p,
                s / p
            );
            diffs.push(s - p);
        }
        diffs.sort_by(f64::total_cmp);
        println!(
            "{:<15} sealed - plain: median +{:.3} us [{:.3} - {:.3}] over {runs} runs",
            case.name(),
            diffs[diffs.len() / 2],
            diffs[0],
            diffs[diffs.len() - 1]
        );
    }
}
