//! `cloakroom-demo`: the login app of the original Tornado + pycket tutorial, on axum and
//! Cloakroom. `cloakroom-demo --help` lists the flags; each is also an environment variable.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use cloakroom_demo::DemoConfig;
use cloakroom_demo::server::{self, Limits};

/// Default cap on concurrent connections (lowered to fit `ulimit -n` when that is smaller).
const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Connections the metrics listener serves at once.
const METRICS_MAX_CONNECTIONS: usize = 16;

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
        hide_env_values = true,
        default_value = "sqlite://cloakroom-demo.db"
    )]
    store: String,
    /// Where accounts live: a `users` table in this SQLite database, whatever the store.
    #[arg(
        long,
        env = "CLOAKROOM_USERS",
        hide_env_values = true,
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
    /// More Host header values to answer for besides --origin's host[:port] (and, for a
    /// loopback origin, localhost): `host` (any port) or `host:port`; repeatable or
    /// comma-separated. Any other Host gets 421 (DNS rebinding); /healthz answers any Host.
    #[arg(
        long = "allowed-host",
        env = "CLOAKROOM_ALLOWED_HOSTS",
        value_name = "HOST[:PORT]",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,
    /// Serve /metrics on this address only (a second listener). Without it, /metrics is
    /// served on --addr when that is a loopback address, and not at all otherwise.
    #[arg(long, env = "CLOAKROOM_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Time a client has to send a complete request head (slowloris), counted from the
    /// connection opening and, on a keep-alive connection, from the previous response.
    #[arg(long, env = "CLOAKROOM_HEADER_TIMEOUT", default_value = "10s", value_parser = server::parse_duration)]
    header_timeout: Duration,
    /// Time an idle keep-alive connection is kept. hyper times this and the header read with
    /// one timer, so the shorter of the two timeouts bounds both. Default: --header-timeout.
    #[arg(long, env = "CLOAKROOM_IDLE_TIMEOUT", value_parser = server::parse_duration)]
    idle_timeout: Option<Duration>,
    /// Most connections served at once; more get 503 until idle ones time out. Default: 512,
    /// or less to fit the open-file limit (ulimit -n) with room to spare.
    #[arg(long, env = "CLOAKROOM_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Largest request body (B, KiB, MiB): more gets 413.
    #[arg(long, env = "CLOAKROOM_MAX_BODY", default_value = "64KiB", value_parser = server::parse_size)]
    max_body: usize,
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
    let metrics_listener = match args.metrics_addr {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on {at} for metrics"))?,
        ),
        None => None,
    };
    let reserved = server::RESERVED_FDS + METRICS_MAX_CONNECTIONS as u64;
    let max_connections = server::connection_cap(
        args.max_connections,
        DEFAULT_MAX_CONNECTIONS,
        server::fd_limit(),
        reserved,
    )?;
    let idle_timeout = args.idle_timeout.unwrap_or(args.header_timeout);
    if idle_timeout > args.header_timeout {
        tracing::warn!(
            "--idle-timeout {idle_timeout:?} is longer than --header-timeout {:?}: hyper times \
             both with one timer, so idle connections close after {:?}",
            args.header_timeout,
            args.header_timeout
        );
    }
    let limits = Limits {
        header_timeout: args.header_timeout,
        idle_timeout,
        max_connections,
        max_body: args.max_body,
    };
    let metrics_on_main = metrics_listener.is_none() && addr.ip().is_loopback();
    if metrics_listener.is_none() && !metrics_on_main {
        tracing::info!("/metrics is not served: listening beyond loopback without --metrics-addr");
    }
    let config = DemoConfig {
        store: args.store,
        users: args.users,
        keys: args.keys,
        origin: args.origin.unwrap_or_else(|| format!("http://{addr}")),
        tornado_secret: args.tornado_secret,
        allowed_hosts: args.allowed_hosts,
        metrics_on_main,
    };
    let apps = cloakroom_demo::apps(config).await?;
    tracing::info!(?limits, "connection limits");
    // Tests and scripts wait for this line on standard output.
    println!("listening on http://{addr}");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let metrics_task = match metrics_listener {
        Some(metrics_listener) => {
            println!(
                "metrics on http://{}/metrics",
                metrics_listener.local_addr()?
            );
            let metrics_limits = Limits {
                max_connections: METRICS_MAX_CONNECTIONS,
                ..limits.clone()
            };
            Some(tokio::spawn(server::serve(
                metrics_listener,
                apps.metrics,
                metrics_limits,
                until_stopped(stopped.clone()),
            )))
        }
        None => None,
    };
    std::io::stdout().flush()?;
    let main_task = server::serve(listener, apps.main, limits, until_stopped(stopped));
    tokio::join!(main_task, async {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    if let Some(task) = metrics_task {
        task.await.context("metrics listener failed")?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves once `stop` says so (or its sender is gone).
async fn until_stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
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
