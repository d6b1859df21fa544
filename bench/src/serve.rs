//! `cloakroom-bench serve CASE`: one server under test, in a process of its own, on ONE tokio
//! thread (a current-thread runtime), so the load generator has the other core and the
//! server's CPU time can be read from `/proc/PID/stat`. The actix-web servers are in
//! [`serve_actix`](crate::serve_actix) (one `HttpServer` worker).
//!
//! Every server answers the same routes (see [`Workload`](crate::cases::Workload)):
//! `/init`, `/init-large`, `/read`, `/write`, `/blind-write`, `/new`, `/large`, plus
//! `/__bench/stats` and `/__bench/detail/{on,off}` outside the session layer. It binds
//! 127.0.0.1:0 and prints `port=N` on stdout once it accepts connections. It exits by itself
//! when the process that started it goes away.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use cloakroom_core::session::Transport;
use cloakroom_core::{Key, KeyRing, MemoryStore, SessionSettings, SessionStore};
use cloakroom_redis::RedisStore;
use cloakroom_sqlite::SqliteStore;
use cloakroom_tower::{SessionError, SessionLayer};

use crate::cases::{LARGE_KEYS, LARGE_VALUE_LEN, Server};
use crate::counting::{Counters, CountingStore, CountingTsStore};

/// Options of `serve`.
#[derive(Debug, Default)]
pub(crate) struct ServeOptions {
    /// `redis://127.0.0.1:PORT/` for the Redis cases.
    pub(crate) redis: Option<String>,
    /// The database file for `cloakroom-sqlite`.
    pub(crate) sqlite: Option<PathBuf>,
    /// `postgres://...` for `cloakroom-postgres`.
    pub(crate) postgres: Option<String>,
    /// Connections in tower-sessions' fred pool (default 1, like Cloakroom's one multiplexed
    /// connection).
    pub(crate) ts_pool: usize,
    /// Idle sessions a Cloakroom server puts in its store before it listens (`scale`).
    pub(crate) prefill: u64,
    /// Sessions already expired that it puts there too (the purge's work in `scale`).
    pub(crate) prefill_expired: u64,
}

/// Runs an axum server until the parent process exits (the actix ones are
/// [`serve_actix`](crate::serve_actix)'s).
pub(crate) fn serve(case: Server, options: ServeOptions) -> anyhow::Result<()> {
    if !case.is_rust() || case.is_actix() {
        bail!("{case} is not served by this binary's axum servers");
    }
    watch_parent();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let counters = Arc::new(Counters::default());
        let app = app(case, &options, counters.clone()).await?;
        let app = app.merge(stats_routes(counters));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let mut out = std::io::stdout().lock();
        writeln!(out, "port={port}")?;
        out.flush()?;
        drop(out);
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// Exits when the parent (the harness) is gone, however it ended.
#[expect(
    clippy::exit,
    reason = "a server orphaned by a killed harness must not outlive it"
)]
pub(crate) fn watch_parent() {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(500));
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(0);
            }
        }
    });
}

fn stats_routes(counters: Arc<Counters>) -> Router {
    Router::new()
        .route(
            "/__bench/stats",
            get(|State(c): State<Arc<Counters>>| async move { c.render() }),
        )
        .route(
            "/__bench/detail/on",
            get(|State(c): State<Arc<Counters>>| async move {
                c.set_detail(true);
                "on"
            }),
        )
        .route(
            "/__bench/detail/off",
            get(|State(c): State<Arc<Counters>>| async move {
                c.set_detail(false);
                "off"
            }),
        )
        .with_state(counters)
}

/// The Redis URL with the near-cache on, large enough for every session of a run.
pub(crate) fn with_near_cache(url: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}cache=100000")
}

async fn app(
    case: Server,
    options: &ServeOptions,
    counters: Arc<Counters>,
) -> anyhow::Result<Router> {
    let redis_url = || options.redis.clone().context("--redis URL is needed");
    Ok(match case {
        Server::Plain => plain::app(),
        Server::CloakroomMemory => {
            cloakroom_app(Arc::new(MemoryStore::new()), options, counters).await?
        }
        Server::CloakroomSqlite => {
            let path = options.sqlite.clone().context("--sqlite PATH is needed")?;
            let store = SqliteStore::open(&path).await?;
            cloakroom_app(Arc::new(store), options, counters).await?
        }
        Server::CloakroomRedis => {
            let store = RedisStore::open(&redis_url()?).await?;
            cloakroom_app(Arc::new(store), options, counters).await?
        }
        Server::CloakroomRedisCache => {
            let store = RedisStore::open(&with_near_cache(&redis_url()?)).await?;
            cloakroom_app(Arc::new(store), options, counters).await?
        }
        Server::CloakroomRedisLog => {
            let url = redis_url()?;
            let separator = if url.contains('?') { '&' } else { '?' };
            let store = RedisStore::open(&format!("{url}{separator}events=100000")).await?;
            cloakroom_app(Arc::new(store), options, counters).await?
        }
        Server::CloakroomPostgres => {
            let url = options
                .postgres
                .as_deref()
                .context("--postgres URL is needed")?;
            // The facade's `store::open`, as an application would open it from a URL.
            cloakroom_app(::cloakroom::store::open(url).await?, options, counters).await?
        }
        Server::TowerSessionsMemory => {
            tower_sessions_app::app(tower_sessions::MemoryStore::default(), counters)
        }
        Server::TowerSessionsRedis => {
            use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
            let config = Config::from_url(&redis_url()?)?;
            let pool = Pool::new(config, None, None, None, options.ts_pool.max(1))?;
            // The connection tasks run for as long as the process.
            let _connections = pool.connect();
            pool.wait_for_connect().await?;
            tower_sessions_app::app(tower_sessions_redis_store::RedisStore::new(pool), counters)
        }
        Server::TornadoPycket
        | Server::TowerSessionsSqlite
        | Server::TowerSessionsPostgres
        | Server::ActixPlain
        | Server::CloakroomActixMemory
        | Server::CloakroomActixRedis
        | Server::CloakroomActixRedisCache
        | Server::ActixSessionRedis
        | Server::ActixSessionCookie => unreachable!("checked above"),
    })
}

/// A Cloakroom server on `store`, after the prefill `options` ask for, with
/// `/__bench/purge` (outside the session layer: runs the store's purge now and answers
/// `purged=N ms=T`).
async fn cloakroom_app(
    store: Arc<dyn SessionStore>,
    options: &ServeOptions,
    counters: Arc<Counters>,
) -> anyhow::Result<Router> {
    prefill(&store, options.prefill, false).await?;
    prefill(&store, options.prefill_expired, true).await?;
    let purge = get(|State(store): State<Arc<dyn SessionStore>>| async move {
        let started = std::time::Instant::now();
        match store.purge_expired().await {
            Ok(n) => Ok(format!("purged={n} ms={}", started.elapsed().as_millis())),
            Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        }
    });
    let purge = Router::new()
        .route("/__bench/purge", purge)
        .with_state(store.clone());
    Ok(cloakroom::app(store, counters).merge(purge))
}

/// Creates `n` sessions of one field (`counter`), 64 at a time, directly in the store:
/// idle ones (a day to live) or, with `expired`, ones that expired a second ago.
async fn prefill(store: &Arc<dyn SessionStore>, n: u64, expired: bool) -> anyhow::Result<()> {
    use cloakroom_core::session::{SessionId, Timestamp};
    if n == 0 {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let now = Timestamp::now();
    let mut record = crate::memory::idle_record();
    if expired {
        let ago = |ms: i64| Timestamp::from_millis(now.as_millis() - ms);
        (record.meta.created_at, record.meta.last_seen) = (ago(60_000), ago(60_000));
        record.meta.expires_at = ago(1_000);
    }
    let record = Arc::new(record);
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..n {
        if i >= 64 {
            let _created = creates.join_next().await.expect("64 running")??;
        }
        let (store, record) = (store.clone(), record.clone());
        creates.spawn(async move {
            let key = SessionId::generate().key();
            store
                .create(&key, &record)
                .await
                .context("prefilling the store")
        });
    }
    while let Some(created) = creates.join_next().await {
        let _created = created??;
    }
    eprintln!(
        "prefilled {n} {} sessions in {:.1} s",
        if expired { "expired" } else { "idle" },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The routes every server answers (see [`Workload`](crate::cases::Workload)), given its
/// handlers; `/large` is served by the `write` handler. One table, so the servers cannot
/// drift apart.
macro_rules! bench_routes {
    ($init:expr, $init_large:expr, $read:expr, $write:expr, $blind_write:expr, $new:expr) => {
        Router::new()
            .route("/init", get($init))
            .route("/init-large", get($init_large))
            .route("/read", get($read))
            .route("/write", get($write))
            .route("/blind-write", get($blind_write))
            .route("/new", get($new))
            .route("/large", get($write))
    };
}

/// A fresh value for every blind write, so no implementation can skip it as unchanged.
pub(crate) fn next_value() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// The value of each of the `large` session's fields.
pub(crate) fn large_value() -> String {
    "x".repeat(LARGE_VALUE_LEN)
}

/// The ceiling: the same routes with no session layer.
mod plain {
    use super::*;

    pub(super) fn app() -> Router {
        let ok = || async { "0" };
        bench_routes!(ok, ok, ok, ok, ok, ok)
    }
}

/// Cloakroom's settings in every server here: the defaults, one key, and the ticket read from
/// `Authorization: Bearer` as well as the cookie (the `read-header` workload; the other
/// workloads pay the absent header's lookup).
pub(crate) fn settings(store: Arc<dyn SessionStore>, keys: KeyRing) -> SessionSettings {
    SessionSettings::new(store, keys).with_transport(Transport::CookieAndHeader)
}

/// Cloakroom: `SessionLayer` with default settings and the `Session` extractor.
mod cloakroom {
    use super::*;
    use cloakroom_tower::Session;

    type Reply = Result<String, SessionError>;

    pub(super) fn app(store: Arc<dyn SessionStore>, counters: Arc<Counters>) -> Router {
        let store: Arc<dyn SessionStore> = Arc::new(CountingStore::new(store, counters));
        let keys = KeyRing::single(Key::from_bytes(&[7; 32]).expect("a 32-byte key"));
        bench_routes!(init, init_large, read, write, blind_write, new)
            .layer(SessionLayer::new(settings(store, keys).build()))
    }

    async fn init(s: Session) -> Reply {
        workloads::init(&s).await
    }

    async fn init_large(s: Session) -> Reply {
        workloads::init_large(&s).await
    }

    async fn read(s: Session) -> Reply {
        workloads::read(&s).await
    }

    async fn write(s: Session) -> Reply {
        workloads::write(&s).await
    }

    async fn blind_write(s: Session) -> Reply {
        workloads::blind_write(&s).await
    }

    async fn new(s: Session) -> Reply {
        workloads::new(&s).await
    }
}

/// What each workload does with a Cloakroom session, written once for the axum and the
/// actix-web servers (both hand their handlers the core's `Session`), so the two measure
/// the same work.
pub(crate) mod workloads {
    use super::{LARGE_KEYS, large_value, next_value};
    use cloakroom_core::Session;
    use cloakroom_core::session::Error;

    type Reply = Result<String, Error>;

    pub(crate) async fn init(s: &Session) -> Reply {
        s.set("counter", &0u64).await?;
        Ok("0".into())
    }

    pub(crate) async fn init_large(s: &Session) -> Reply {
        let value = large_value();
        for i in 0..LARGE_KEYS {
            s.set(&format!("blob{i:02}"), &value).await?;
        }
        Ok("0".into())
    }

    pub(crate) async fn read(s: &Session) -> Reply {
        let n: Option<u64> = s.get("counter").await?;
        Ok(n.unwrap_or(0).to_string())
    }

    pub(crate) async fn write(s: &Session) -> Reply {
        let n: u64 = s.get("counter").await?.unwrap_or(0) + 1;
        s.set("counter", &n).await?;
        Ok(n.to_string())
    }

    pub(crate) async fn blind_write(s: &Session) -> Reply {
        s.set("last", &next_value()).await?;
        Ok("0".into())
    }

    pub(crate) async fn new(s: &Session) -> Reply {
        s.set("counter", &1u64).await?;
        Ok("1".into())
    }
}

/// tower-sessions 0.14: `SessionManagerLayer` with default settings and its `Session`.
mod tower_sessions_app {
    use super::*;
    use tower_sessions::{Session, SessionManagerLayer};

    type Reply = Result<String, (StatusCode, String)>;

    fn fail(e: &tower_sessions::session::Error) -> (StatusCode, String) {
        (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }

    pub(super) fn app<S>(store: S, counters: Arc<Counters>) -> Router
    where
        S: tower_sessions::SessionStore + Clone,
    {
        let store = CountingTsStore::new(store, counters);
        bench_routes!(init, init_large, read, write, blind_write, new)
            .layer(SessionManagerLayer::new(store))
    }

    async fn init(s: Session) -> Reply {
        s.insert("counter", 0u64).await.map_err(|e| fail(&e))?;
        Ok("0".into())
    }

    async fn init_large(s: Session) -> Reply {
        let value = large_value();
        for i in 0..LARGE_KEYS {
            s.insert(&format!("blob{i:02}"), &value)
                .await
                .map_err(|e| fail(&e))?;
        }
        Ok("0".into())
    }

    async fn read(s: Session) -> Reply {
        let n: Option<u64> = s.get("counter").await.map_err(|e| fail(&e))?;
        Ok(n.unwrap_or(0).to_string())
    }

    async fn write(s: Session) -> Reply {
        let n: u64 = s.get("counter").await.map_err(|e| fail(&e))?.unwrap_or(0) + 1;
        s.insert("counter", n).await.map_err(|e| fail(&e))?;
        Ok(n.to_string())
    }

    async fn blind_write(s: Session) -> Reply {
        s.insert("last", next_value()).await.map_err(|e| fail(&e))?;
        Ok("0".into())
    }

    async fn new(s: Session) -> Reply {
        s.insert("counter", 1u64).await.map_err(|e| fail(&e))?;
        Ok("1".into())
    }
}
