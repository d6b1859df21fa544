//! `cloakroom-bench-peer-sqlx --sqlite PATH` or `--postgres URL TABLE`: the bench routes
//! (`/init`, `/init-large`, `/read`, `/write`, `/blind-write`, `/new`, `/large`; see
//! `bench/src/serve.rs`) on tower-sessions 0.14 and tower-sessions-sqlx-store 0.15's
//! `SqliteStore` or `PostgresStore`, on one tokio thread like every server of the harness.
//! Prints `port=N`, exits when its parent does.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tower_sessions::{Session, SessionManagerLayer, SessionStore};
use tower_sessions_sqlx_store::sqlx::postgres::PgPoolOptions;
use tower_sessions_sqlx_store::{PostgresStore, SqliteStore};
use tower_sessions_sqlx_store::sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};

/// As `bench/src/cases.rs`: 19 more keys of 512 bytes for `large`.
const LARGE_KEYS: usize = 19;
const LARGE_VALUE_LEN: usize = 512;

type Reply = Result<String, (StatusCode, String)>;

fn fail(e: &tower_sessions::session::Error) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn init(s: Session) -> Reply {
    s.insert("counter", 0u64).await.map_err(|e| fail(&e))?;
    Ok("0".into())
}

async fn init_large(s: Session) -> Reply {
    let value = "x".repeat(LARGE_VALUE_LEN);
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
    static SEQ: AtomicU64 = AtomicU64::new(0);
    s.insert("last", SEQ.fetch_add(1, Ordering::Relaxed))
        .await
        .map_err(|e| fail(&e))?;
    Ok("0".into())
}

async fn new(s: Session) -> Reply {
    s.insert("counter", 1u64).await.map_err(|e| fail(&e))?;
    Ok("1".into())
}

fn watch_parent() {
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

/// The routes on `store`, served on a free loopback port.
async fn serve<S: SessionStore + Clone>(store: S) -> Result<(), Box<dyn std::error::Error>> {
    let app = Router::new()
        .route("/init", get(init))
        .route("/init-large", get(init_large))
        .route("/read", get(read))
        .route("/write", get(write))
        .route("/blind-write", get(blind_write))
        .route("/new", get(new))
        .route("/large", get(write))
        .layer(SessionManagerLayer::new(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let mut out = std::io::stdout().lock();
    writeln!(out, "port={port}")?;
    out.flush()?;
    drop(out);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn sqlite(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    // The same file settings as cloakroom-sqlite: WAL, synchronous = NORMAL; sqlx's
    // default pool size.
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new().connect_with(options).await?;
    let store = SqliteStore::new(pool);
    store.migrate().await?;
    serve(store).await
}

async fn postgres(url: &str, table: &str) -> Result<(), Box<dyn std::error::Error>> {
    // A pool of 8 connections, as cloakroom-postgres opens by default.
    let pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
    let store = PostgresStore::new(pool).with_table_name(table)?;
    store.migrate().await?;
    serve(store).await
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    watch_parent();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args[..] {
        ["--sqlite", path] => rt.block_on(sqlite(path)),
        ["--postgres", url, table] => rt.block_on(postgres(url, table)),
        _ => Err(
            "usage: cloakroom-bench-peer-sqlx --sqlite PATH | --postgres URL TABLE".into(),
        ),
    }
}
