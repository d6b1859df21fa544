//! Micro-benchmarks of the per-request work in cloakroom-core, without HTTP or a network:
//!
//! - `ticket`: sign a session id into a cookie value and verify one
//!   (`cookie::{encode_ticket, decode_ticket}`), and the id -> store key hash;
//! - `csrf`: mask the CSRF secret into a fresh v2 token and verify a token
//!   (`csrf::Secret::{mask, verify}`);
//! - `record`: encode/decode a record's fields as JSON (serde_json of `Record::data`, the
//!   representation the SQLite store keeps; the Redis codec is private, and its cost shows in
//!   `engine` with the Redis store in the load benchmark), for a 1-field and a 20-field 10 KB
//!   session;
//! - `memory_store`: load and apply on `MemoryStore`, for both session sizes;
//! - `engine`: a whole request's session work on `MemoryStore` (ticket in, read or write,
//!   commit), i.e. what `SessionLayer` adds to a request minus HTTP parsing; with the bench
//!   crate's feature `metrics`, `read_recorded` is `read` on an engine built with the
//!   Prometheus exporter's recorder (compare with `read` built without the feature);
//! - `sealing`: the same requests on `MemoryStore` with and without sealed data
//!   (`SessionSettings::with_sealed_data`), each case plain then sealed, side by side: a read
//!   of one small field (the key derivation and one open), a read then write of it (one
//!   derivation, an open and a seal), a blind write of a small value and one of a 1 KB value
//!   (derivation and one seal), and `seal::open_record` of one small sealed field alone
//!   (`seal_pairs` measures the same requests in alternating batches, for a loaded machine);
//! - `rng`: 32 bytes from the OS (`getrandom`, one system call), what every new session id
//!   and every CSRF mask costs;
//! - `sqlite`: `SqliteStore::load`/`apply` (each runs on tokio's blocking pool) next to the
//!   same SQL run inline on one connection, which prices the thread hand-off.
//!
//! ```text
//! cargo bench -p cloakroom-bench --bench micro
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use cloakroom_core::cookie::{decode_ticket, encode_ticket};
use cloakroom_core::csrf::Secret;
use cloakroom_core::session::{SessionEngine, SessionId, SessionSettings, Timestamp, seal};
use cloakroom_core::store::{Fields, MemoryStore, Patch, Record, SessionStore};
use criterion::Criterion;

mod common;
use common::{engine_with_session, ring};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn small_record() -> Record {
    let now = Timestamp::now();
    let mut r = Record::new(now, now.plus(Duration::from_secs(3600)));
    r.data.insert("counter".into(), "41".into());
    r
}

fn large_record() -> Record {
    let mut r = small_record();
    let value = format!("\"{}\"", "x".repeat(512));
    for i in 0..19 {
        r.data.insert(format!("blob{i:02}"), value.clone());
    }
    r
}

fn ticket(c: &mut Criterion) {
    let ring = ring();
    let id = SessionId::generate();
    let value = encode_ticket(&ring, "session", &id);
    let mut g = c.benchmark_group("ticket");
    g.bench_function("encode", |b| {
        b.iter(|| encode_ticket(black_box(&ring), "session", black_box(&id)))
    });
    g.bench_function("decode", |b| {
        b.iter(|| decode_ticket(black_box(&ring), "session", black_box(&value)))
    });
    g.bench_function("store_key", |b| b.iter(|| black_box(&id).key()));
    g.finish();
}

fn csrf(c: &mut Criterion) {
    let secret = Secret::generate();
    let token = secret.mask();
    let mut g = c.benchmark_group("csrf");
    g.bench_function("mask", |b| b.iter(|| black_box(&secret).mask()));
    g.bench_function("verify", |b| {
        b.iter(|| black_box(&secret).verify(black_box(&token)))
    });
    g.finish();
}

fn record(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    for (name, r) in [("small", small_record()), ("large", large_record())] {
        let json = serde_json::to_string(&r.data).expect("serializable");
        g.bench_function(format!("encode_{name}"), |b| {
            b.iter(|| serde_json::to_string(black_box(&r.data)))
        });
        g.bench_function(format!("decode_{name}"), |b| {
            b.iter(|| serde_json::from_str::<Fields>(black_box(&json)))
        });
    }
    g.finish();
}

fn memory_store(c: &mut Criterion) {
    let rt = runtime();
    let store = rt.block_on(async { MemoryStore::new() });
    let mut g = c.benchmark_group("memory_store");
    for (name, r) in [("small", small_record()), ("large", large_record())] {
        let key = SessionId::generate().key();
        rt.block_on(store.create(&key, &r)).expect("created");
        g.bench_function(format!("load_{name}"), |b| {
            b.iter(|| rt.block_on(store.load(black_box(&key))))
        });
        let now = Timestamp::now();
        let patch = Patch::new(now, now.plus(Duration::from_secs(3600))).set("counter", "42");
        g.bench_function(format!("apply_{name}"), |b| {
            b.iter(|| rt.block_on(store.apply(black_box(&key), black_box(&patch))))
        });
    }
    g.finish();
}

/// An engine on a new `MemoryStore`, and the cookie of a session with a counter in it.
fn engine_and_cookie(rt: &tokio::runtime::Runtime) -> (SessionEngine, String) {
    rt.block_on(async {
        let engine = SessionSettings::new(Arc::new(MemoryStore::new()), ring()).build();
        let s = engine.session(None);
        s.set("counter", &0u64).await.expect("set");
        let set_cookie = engine
            .commit(&s, None)
            .await
            .expect("commit")
            .set_cookie
            .expect("cookie");
        let cookie = set_cookie.split(';').next().expect("name=value").to_owned();
        (engine, cookie)
    })
}

/// One read request: the ticket in, one value read, the commit.
fn read(rt: &tokio::runtime::Runtime, engine: &SessionEngine, cookie: &str) -> Option<u64> {
    rt.block_on(async {
        let s = engine.session(Some(black_box(cookie)));
        let n: Option<u64> = s.get("counter").await.expect("get");
        engine.commit(&s, None).await.expect("commit");
        n
    })
}

fn engine(c: &mut Criterion) {
    let rt = runtime();
    let (engine, cookie) = engine_and_cookie(&rt);
    let mut g = c.benchmark_group("engine");
    g.bench_function("read", |b| b.iter(|| read(&rt, &engine, &cookie)));
    #[cfg(feature = "metrics")]
    {
        // Built under the recorder: the store histograms are registered with it.
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let (engine, cookie) = metrics::with_local_recorder(&recorder, || engine_and_cookie(&rt));
        g.bench_function("read_recorded", |b| b.iter(|| read(&rt, &engine, &cookie)));
        let text = recorder.handle().render();
        assert!(text.contains("operation=\"load\""), "{text}");
    }
    g.bench_function("write", |b| {
        b.iter(|| {
            rt.block_on(async {
                let s = engine.session(Some(black_box(&cookie)));
                let n: u64 = s.get("counter").await.expect("get").unwrap_or(0);
                s.set("counter", &(n + 1)).await.expect("set");
                engine.commit(&s, None).await.expect("commit")
            })
        })
    });
    g.bench_function("blind_write", |b| {
        b.iter(|| {
            rt.block_on(async {
                let s = engine.session(Some(black_box(&cookie)));
                s.set("last", &7u64).await.expect("set");
                engine.commit(&s, None).await.expect("commit")
            })
        })
    });
    g.bench_function("new", |b| {
        b.iter(|| {
            rt.block_on(async {
                let s = engine.session(None);
                s.set("counter", &1u64).await.expect("set");
                engine.commit(&s, None).await.expect("commit")
            })
        })
    });
    g.finish();
}

fn sealing(c: &mut Criterion) {
    let rt = runtime();
    let kb = "x".repeat(1022); // 1024 bytes of JSON text with its quotes
    let mut g = c.benchmark_group("sealing");
    let engines = [("plain", false), ("sealed", true)].map(|(name, sealed)| {
        let store = Arc::new(MemoryStore::new());
        (name, engine_with_session(&rt, store, sealed))
    });
    // Each case runs plain then sealed, back to back, so each pair sees the same load.
    for (name, (engine, pair)) in &engines {
        g.bench_function(format!("read_{name}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let s = engine.session(Some(black_box(pair)));
                    let n: Option<u64> = s.get("counter").await.expect("get");
                    engine.commit(&s, None).await.expect("commit");
                    n
                })
            })
        });
    }
    for (name, (engine, pair)) in &engines {
        g.bench_function(format!("write_{name}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let s = engine.session(Some(black_box(pair)));
                    let n: u64 = s.get("counter").await.expect("get").unwrap_or(0);
                    s.set("counter", &(n % 1000 + 1)).await.expect("set");
                    engine.commit(&s, None).await.expect("commit")
                })
            })
        });
    }
    for (name, (engine, pair)) in &engines {
        g.bench_function(format!("write_small_{name}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let s = engine.session(Some(black_box(pair)));
                    s.set("counter", black_box(&42u64)).await.expect("set");
                    engine.commit(&s, None).await.expect("commit")
                })
            })
        });
    }
    for (name, (engine, pair)) in &engines {
        g.bench_function(format!("blind_write_1k_{name}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let s = engine.session(Some(black_box(pair)));
                    s.set("blob", black_box(&kb)).await.expect("set");
                    engine.commit(&s, None).await.expect("commit")
                })
            })
        });
    }
    let store = Arc::new(MemoryStore::new());
    let (_, pair) = engine_with_session(&rt, store.clone(), true);
    let (name, value) = pair.split_once('=').expect("name=value");
    let id = decode_ticket(&ring(), name, value).expect("our ticket");
    let key = id.key();
    let record = rt
        .block_on(store.load(&key))
        .expect("load")
        .expect("stored");
    g.bench_function("clone_record_small", |b| {
        b.iter(|| black_box(&record).clone())
    });
    g.bench_function("open_record_small", |b| {
        b.iter(|| {
            let mut r = black_box(&record).clone();
            seal::open_record(&id, &key, &mut r).expect("opens");
            r
        })
    });
    g.finish();
}

fn rng(c: &mut Criterion) {
    let mut g = c.benchmark_group("rng");
    g.bench_function("getrandom_32", |b| {
        b.iter(|| {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).expect("OS randomness");
            bytes
        })
    });
    g.bench_function("session_id_generate", |b| b.iter(SessionId::generate));
    g.finish();
}

fn sqlite(c: &mut Criterion) {
    use cloakroom_sqlite::SqliteStore;
    let rt = runtime();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("micro.db");
    let store = rt.block_on(SqliteStore::open(&path)).expect("opened");
    let key = SessionId::generate().key();
    rt.block_on(store.create(&key, &small_record()))
        .expect("created");
    let conn = rusqlite::Connection::open(&path).expect("a second connection");
    conn.pragma_update(None, "synchronous", "NORMAL")
        .expect("pragma");
    let mut g = c.benchmark_group("sqlite");
    g.bench_function("load_via_store", |b| {
        b.iter(|| rt.block_on(store.load(black_box(&key))))
    });
    g.bench_function("select_inline", |b| {
        b.iter(|| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT key, user, created_at, last_seen, expires_at, user_agent, remember, \
                     data FROM sessions WHERE key = ?1 AND expires_at > ?2",
                )
                .expect("prepared");
            stmt.query_row(
                rusqlite::params![key.as_bytes().as_slice(), Timestamp::now().as_millis()],
                |row| row.get::<_, String>(7),
            )
            .map(|data| serde_json::from_str::<Fields>(&data).expect("fields"))
            .expect("a row")
        })
    });
    let now = Timestamp::now();
    let patch = Patch::new(now, now.plus(Duration::from_secs(3600))).set("counter", "42");
    g.bench_function("apply_via_store", |b| {
        b.iter(|| rt.block_on(store.apply(black_box(&key), black_box(&patch))))
    });
    g.bench_function("update_inline", |b| {
        b.iter(|| {
            let mut stmt = conn
                .prepare_cached(
                    "UPDATE sessions SET data = json_patch(data, ?1), last_seen = ?2, \
                     expires_at = ?3 WHERE key = ?4 AND expires_at > ?5",
                )
                .expect("prepared");
            let now = Timestamp::now().as_millis();
            stmt.execute(rusqlite::params![
                r#"{"counter":"42"}"#,
                now,
                now + 3_600_000,
                key.as_bytes().as_slice(),
                now
            ])
            .expect("updated")
        })
    });
    g.finish();
}

// By hand rather than `criterion_group!`, whose generated `pub fn` has no docs.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    ticket(&mut c);
    csrf(&mut c);
    record(&mut c);
    memory_store(&mut c);
    engine(&mut c);
    sealing(&mut c);
    rng(&mut c);
    sqlite(&mut c);
    c.final_summary();
}
