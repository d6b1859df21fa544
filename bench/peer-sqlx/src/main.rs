//! `cloakroom-bench-peer-sqlx --sqlite PATH`: the bench routes (`/init`, `/init-large`,
//! `/read`, `/write`, `/blind-write`, `/new`, `/large`; see `bench/src/serve.rs`) on
//! tower-sessions 0.14 and tower-sessions-sqlx-store 0.15's `SqliteStore`, on one tokio
//! thread like every server of the harness. Prints `port=N`, exits when its parent does.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tower_sessions::{Session, SessionManagerLayer};
use tower_sessions_sqlx_store::SqliteStore;
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = match (args.next().as_deref(), args.next()) {
        (Some("--sqlite"), Some(path)) => path,
        _ => return Err("usage: cloakroom-bench-peer-sqlx --sqlite PATH".into()),
    };
    watch_parent();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // The same file settings as cloakroom-sqlite: WAL, synchronous = NORMAL; sqlx's
        // default pool size.
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().connect_with(options).await?;
        let store = SqliteStore::new(pool);
        store.migrate().await?;
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
    })
}
