//! `cloakroom-demo`: the login app of the original Tornado + pycket tutorial, on axum and
//! Cloakroom. `cloakroom-demo --help` lists the flags; each is also an environment variable.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use cloakroom_demo::DemoConfig;

/// The Cloakroom demo: register, log in, keep notes in your session, manage your sessions.
#[derive(Parser)]
#[command(name = "cloakroom-demo", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "CLOAKROOM_ADDR", default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    /// Session store URL: memory://, sqlite://relative.db, sqlite:///absolute.db,
    /// redis://host:port/db, redis+cluster://host:port,host:port, or
    /// pycket+redis://host:port/db?notifications_db=N to share sessions with a Tornado +
    /// pycket app (needs --tornado-secret).
    #[arg(
        long,
        env = "CLOAKROOM_STORE",
        default_value = "sqlite://cloakroom-demo.db"
    )]
    store: String,
    /// Where accounts live: a `users` table in this SQLite database, whatever the store.
    #[arg(
        long,
        env = "CLOAKROOM_USERS",
        default_value = "sqlite://cloakroom-demo.db"
    )]
    users: String,
    /// Signing keys: comma-separated standard base64, at least 32 bytes each, the first
    /// signs. Default: one generated once and kept in `<users database>.keys`.
    #[arg(long, env = "CLOAKROOM_KEYS", hide_env_values = true)]
    keys: Option<String>,
    /// The public origin, scheme://host[:port]. Default: http:// and the listening address.
    /// Session cookies are Secure unless it is http://.
    #[arg(long, env = "CLOAKROOM_ORIGIN")]
    origin: Option<String>,
    /// Tornado's cookie_secret, which signs pycket's PYCKET_ID cookie: required with a
    /// pycket+redis:// store.
    #[arg(long, env = "CLOAKROOM_TORNADO_SECRET", hide_env_values = true)]
    tornado_secret: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cloakroom-demo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("cloakroom-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let addr = listener.local_addr()?;
    let config = DemoConfig {
        store: args.store,
        users: args.users,
        keys: args.keys,
        origin: args.origin.unwrap_or_else(|| format!("http://{addr}")),
        tornado_secret: args.tornado_secret,
    };
    let app = cloakroom_demo::app(config).await?;
    // Tests and scripts wait for this line on standard output.
    println!("listening on http://{addr}");
    std::io::stdout().flush()?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM; in-flight requests then finish before the server stops.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
