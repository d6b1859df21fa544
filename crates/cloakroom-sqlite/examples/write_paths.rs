//! Measures the SQLite write path's variants on this machine, outside the store: CPU per
//! `apply` (the store's statement) in autocommit and in batches of one transaction, with the
//! `expires_at` index (schema v1), without it (v2), and with an index on a coarse expiry
//! bucket instead; plus what a purge costs without the index.
//!
//! ```sh
//! cargo run --release --example write_paths -p cloakroom-sqlite -- [writes] [rounds]
//! ```
//!
//! CPU is the thread's time on a CPU (`schedstat`), so other tenants' load shows up
//! only as spread between rounds; variants take turns within each round.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};

const SESSIONS: usize = 20_000;

const TABLE: &str = "
CREATE TABLE sessions (key BLOB NOT NULL PRIMARY KEY, user TEXT, created_at INTEGER NOT NULL,
 last_seen INTEGER NOT NULL, expires_at INTEGER NOT NULL, user_agent TEXT,
 remember INTEGER NOT NULL DEFAULT 0, data TEXT NOT NULL DEFAULT '{}');
CREATE INDEX sessions_by_user ON sessions (user) WHERE user IS NOT NULL;";

const APPLY: &str = "UPDATE sessions SET
   data = CASE WHEN ?1 IS NULL THEN data ELSE json_patch(data, ?1) END,
   last_seen = ?2,
   expires_at = CASE WHEN ?7 IS NULL THEN ?3 ELSE min(?3, created_at + ?7) END,
   remember = coalesce(?4, remember)
 WHERE key = ?5 AND expires_at > ?6";

#[derive(Clone, Copy, Debug)]
enum Index {
    /// v1: `CREATE INDEX ... (expires_at)`.
    Expiry,
    /// No index on the expiry (v2).
    None,
    /// An index on the expression `expires_at / 3600000` (hour buckets).
    Bucket,
}

/// This thread's CPU time (`/proc/thread-self/schedstat`, nanoseconds): the example is
/// single-threaded, and SQLite runs on the calling thread.
fn cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    let ns: u64 = text.split_whitespace().next().unwrap().parse().unwrap();
    Duration::from_nanos(ns)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn setup(dir: &std::path::Path, name: &str, index: Index) -> (Connection, Vec<[u8; 32]>) {
    let path = dir.join(format!("{name}.db"));
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.execute_batch(TABLE).unwrap();
    match index {
        Index::Expiry => conn
            .execute_batch("CREATE INDEX sessions_by_expiry ON sessions (expires_at);")
            .unwrap(),
        Index::Bucket => conn
            .execute_batch("CREATE INDEX sessions_by_bucket ON sessions (expires_at / 3600000);")
            .unwrap(),
        Index::None => {}
    }
    let now = now_ms();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let keys: Vec<[u8; 32]> = (0..SESSIONS)
        .map(|_| {
            let mut k = [0u8; 32];
            for chunk in k.chunks_mut(8) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                chunk.copy_from_slice(&seed.to_le_bytes());
            }
            k
        })
        .collect();
    conn.execute_batch("BEGIN").unwrap();
    for k in &keys {
        conn.execute(
            "INSERT INTO sessions (key, created_at, last_seen, expires_at, data) VALUES (?1, ?2, ?2, ?3, ?4)",
            params![&k[..], now, now + 3_600_000, r#"{"counter":"1"}"#],
        )
        .unwrap();
    }
    conn.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    (conn, keys)
}

/// CPU and wall time per write.
fn writes(conn: &Connection, keys: &[[u8; 32]], n: usize, batch: usize) -> (f64, f64) {
    let mut stmt = conn.prepare_cached(APPLY).unwrap();
    let now = now_ms();
    let mut r = 12345_u64;
    let (c0, w0) = (cpu(), Instant::now());
    let mut i = 0;
    while i < n {
        let m = batch.min(n - i);
        if batch > 1 {
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        }
        for j in 0..m {
            r = r
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = &keys[(r >> 33) as usize % keys.len()];
            let seq = (i + j) as i64;
            stmt.execute(params![
                format!(r#"{{"counter":"{seq}"}}"#),
                now + seq,
                now + 3_600_000 + seq,
                None::<bool>,
                &k[..],
                now,
                None::<i64>,
            ])
            .unwrap();
        }
        if batch > 1 {
            conn.execute_batch("COMMIT").unwrap();
        }
        i += m;
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    (per(cpu() - c0), per(w0.elapsed()))
}

/// A purge without an expiry index: every row visited once, in rowid chunks of `chunk`,
/// one transaction per chunk. Returns (CPU ms for the whole table, rows deleted).
fn purge_scan(conn: &Connection, chunk: i64) -> (f64, usize) {
    let max: i64 = conn
        .query_row("SELECT coalesce(max(rowid), 0) FROM sessions", [], |r| {
            r.get(0)
        })
        .unwrap();
    let now = now_ms();
    let c0 = cpu();
    let mut deleted = 0;
    let mut from = 0;
    while from <= max {
        deleted += conn
            .execute(
                "DELETE FROM sessions WHERE rowid > ?1 AND rowid <= ?2 AND expires_at <= ?3",
                params![from, from + chunk, now],
            )
            .unwrap();
        from += chunk;
    }
    ((cpu() - c0).as_secs_f64() * 1e3, deleted)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(20_000, |a| a.parse().unwrap());
    let rounds: usize = args.next().map_or(5, |a| a.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let variants = [
        ("autocommit, expires_at index (v1)", Index::Expiry, 1),
        ("batch 32, expires_at index", Index::Expiry, 32),
        ("autocommit, no expiry index", Index::None, 1),
        ("batch 32, no expiry index (v2)", Index::None, 32),
        ("batch 8, no expiry index", Index::None, 8),
        ("autocommit, hour-bucket index", Index::Bucket, 1),
        ("batch 32, hour-bucket index", Index::Bucket, 32),
    ];
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        for (i, (name, index, batch)) in variants.iter().enumerate() {
            let (conn, keys) = setup(dir.path(), &format!("{round}-{i}"), *index);
            results[i].push(writes(&conn, &keys, n, *batch));
            drop(conn);
            let _ = name;
        }
    }
    println!(
        "{n} writes x {rounds} rounds, {SESSIONS} sessions; us per write: CPU median [min-max], wall median"
    );
    for (i, (name, ..)) in variants.iter().enumerate() {
        let mut c: Vec<f64> = results[i].iter().map(|r| r.0).collect();
        let mut w: Vec<f64> = results[i].iter().map(|r| r.1).collect();
        let (lo, hi) = (
            c.iter().copied().fold(f64::MAX, f64::min),
            c.iter().copied().fold(0.0, f64::max),
        );
        println!(
            "{name:38} cpu {:6.1} [{lo:5.1}-{hi:5.1}]  wall {:6.1}",
            median(&mut c),
            median(&mut w)
        );
    }
    // Purge cost without an index: 100k sessions, a tenth of them expired.
    let (conn, _) = setup(dir.path(), "purge", Index::None);
    conn.execute_batch("BEGIN").unwrap();
    for i in 0..80_000_i64 {
        conn.execute(
            "INSERT INTO sessions (key, created_at, last_seen, expires_at, data) VALUES (randomblob(32), 0, 0, ?1, '{\"counter\":\"1\"}')",
            params![if i % 10 == 0 { 1 } else { now_ms() + 3_600_000 }],
        )
        .unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();
    let (ms, deleted) = purge_scan(&conn, 1000);
    println!(
        "purge by rowid chunks of 1000, no index, 100k rows: {ms:.1} ms CPU, {deleted} deleted"
    );
    let (ms, deleted) = purge_scan(&conn, 1000);
    println!("the same again (nothing to delete): {ms:.1} ms CPU, {deleted} deleted");
}
