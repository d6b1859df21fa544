//! `cloakroom-bench mem STORE N`: RAM per idle session of an in-memory store, in a fresh
//! process: resident set size (`VmRSS`) before and after creating N sessions of one small
//! field (`counter` = `1`, 8 bytes of data) directly in the store, divided by N. Then the
//! average time to load one of them (a read request's store work).
//!
//! RSS is what the operating system charges; it includes the allocator's per-chunk overhead
//! and the hash tables' spare capacity, which is the honest cost of keeping sessions. The same
//! method is applied to Cloakroom's `MemoryStore` and to tower-sessions' `MemoryStore`.

use std::time::Instant;

use anyhow::{Context as _, bail};

/// Bytes of session data per session in the measurement: `counter` (7) + `1` (1).
pub(crate) const DATA_BYTES: u64 = 8;

/// What one measurement found.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MemResult {
    /// Sessions created.
    pub(crate) sessions: u64,
    /// RSS growth, bytes.
    pub(crate) rss_delta: u64,
    /// Average time of one `load` of an existing session afterwards, ns.
    pub(crate) load_ns: f64,
}

impl MemResult {
    /// RSS growth per session.
    pub(crate) fn per_session(&self) -> f64 {
        self.rss_delta as f64 / self.sessions as f64
    }

    /// Per session, beyond the session's own data.
    pub(crate) fn overhead(&self) -> f64 {
        self.per_session() - DATA_BYTES as f64
    }

    /// The line `mem` prints.
    pub(crate) fn render(&self) -> String {
        format!(
            "sessions={} rss_delta={} load_ns={:.0}",
            self.sessions, self.rss_delta, self.load_ns
        )
    }

    /// Parses [`MemResult::render`].
    pub(crate) fn parse(line: &str) -> Option<MemResult> {
        let mut sessions = None;
        let mut rss_delta = None;
        let mut load_ns = None;
        for pair in line.split_whitespace() {
            match pair.split_once('=')? {
                ("sessions", v) => sessions = v.parse().ok(),
                ("rss_delta", v) => rss_delta = v.parse().ok(),
                ("load_ns", v) => load_ns = v.parse().ok(),
                _ => {}
            }
        }
        Some(MemResult {
            sessions: sessions?,
            rss_delta: rss_delta?,
            load_ns: load_ns?,
        })
    }
}

/// The resident set of process `pid` (`self` for this one), from `/proc/PID/status`.
pub(crate) fn rss_bytes(pid: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS in /proc/PID/status")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}

/// The stores `mem` knows: the two in-memory stores.
pub(crate) const STORES: [&str; 2] = ["cloakroom-memory", "tower-sessions-memory"];

/// The record `mem` puts in every store: `counter` = `1`.
pub(crate) fn idle_record() -> cloakroom_core::store::Record {
    use cloakroom_core::session::Timestamp;
    let now = Timestamp::now();
    let mut record =
        cloakroom_core::store::Record::new(now, now.plus(std::time::Duration::from_secs(86_400)));
    record.data.insert("counter".into(), "1".into());
    record
}

/// Creates `n` idle sessions in `store` and reports the RSS growth, then times `n` loads.
pub(crate) fn measure(store: &str, n: u64) -> anyhow::Result<MemResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Keys are made before the baseline, so they are not counted.
        let keys: Vec<cloakroom_core::session::SessionKey> = (0..n)
            .map(|_| cloakroom_core::session::SessionId::generate().key())
            .collect();
        let (rss_delta, load_ns) = match store {
            "cloakroom-memory" => {
                use cloakroom_core::store::{MemoryStore, SessionStore};
                let s = MemoryStore::new();
                let before = rss_bytes("self")?;
                for key in &keys {
                    s.create(key, &idle_record()).await?;
                }
                let after = rss_bytes("self")?;
                anyhow::ensure!(s.len() as u64 == n, "the store lost sessions");
                let start = Instant::now();
                for key in &keys {
                    std::hint::black_box(s.load(key).await?);
                }
                (after.saturating_sub(before), per(start, n))
            }
            "tower-sessions-memory" => {
                use tower_sessions::SessionStore as _;
                use tower_sessions::session::{Id, Record};
                let s = tower_sessions::MemoryStore::default();
                let before = rss_bytes("self")?;
                let mut ids = Vec::with_capacity(keys.len());
                for _ in &keys {
                    let mut record = Record {
                        id: Id::default(),
                        data: [("counter".to_owned(), serde_json::Value::from(1))]
                            .into_iter()
                            .collect(),
                        expiry_date: tower_sessions::cookie::time::OffsetDateTime::now_utc()
                            + tower_sessions::cookie::time::Duration::days(1),
                    };
                    s.create(&mut record)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    ids.push(record.id);
                }
                let after = rss_bytes("self")?;
                let start = Instant::now();
                for id in &ids {
                    std::hint::black_box(s.load(id).await.map_err(|e| anyhow::anyhow!("{e}"))?);
                }
                // The ids vector (16 bytes a session) was counted: take it off.
                let ids_bytes = (ids.capacity() * std::mem::size_of::<Id>()) as u64;
                (
                    after.saturating_sub(before).saturating_sub(ids_bytes),
                    per(start, n),
                )
            }
            other => bail!("{other} is not one of {STORES:?}"),
        };
        Ok(MemResult {
            sessions: n,
            rss_delta,
            load_ns,
        })
    })
}

fn per(start: Instant, n: u64) -> f64 {
    start.elapsed().as_nanos() as f64 / n.max(1) as f64
}
