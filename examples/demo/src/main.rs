//! `cloakroom-demo`: the login app of the original Tornado + pycket tutorial, on axum and
//! Cloakroom. `cloakroom-demo --help` lists the flags; each is also an environment variable.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use cloakroom_demo::server::{self, Limits};
use cloakroom_demo_app::{Flags, METRICS_MAX_CONNECTIONS};

/// The Cloakroom demo: register, log in, keep notes in your session, manage your sessions.
#[derive(Parser)]
#[command(name = "cloakroom-demo", version)]
struct Args {
    #[command(flatten)]
    flags: Flags,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let telemetry = cloakroom_demo_app::init_telemetry("cloakroom-demo", &args.flags);
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
    let served = runtime.block_on(serve(args.flags));
    // The last OTLP export, outside the runtime (it blocks).
    telemetry.shutdown();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("cloakroom-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Flags) -> anyhow::Result<()> {
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
    let limits = args.limits()?;
    if limits.idle_timeout > limits.header_timeout {
        tracing::warn!(
            "--idle-timeout {:?} is longer than --header-timeout {:?}: hyper times both with \
             one timer, so idle connections close after {:?}",
            limits.idle_timeout,
            limits.header_timeout,
            limits.header_timeout
        );
    }
    let metrics_on_main = args.metrics_on_main(addr);
    let config = args.config(addr, metrics_on_main);
    let apps = cloakroom_demo::apps(config).await?;
    tracing::info!(?limits, "connection limits");
    let shutdown = shutdown_signal();
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
        shutdown.await;
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

/// Listens for Ctrl-C and SIGTERM from the call on (before "listening on" is printed, so a
/// signal sent as soon as that line appears stops the server instead of killing the process);
/// the future resolves on the first. In-flight requests then finish before the server stops.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind| {
        signal(kind)
            .inspect_err(|e| tracing::error!(error = %e, "cannot listen for a stop signal"))
            .ok()
    };
    let (mut interrupt, mut terminate) = (
        listen(SignalKind::interrupt()),
        listen(SignalKind::terminate()),
    );
    async move {
        tokio::select! {
            () = received(interrupt.as_mut()) => {},
            () = received(terminate.as_mut()) => {},
        }
        tracing::info!("shutting down");
    }
}

/// Resolves when `signal` arrives; never without a listener.
#[cfg(unix)]
async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Ctrl-C (registered at the first poll: no SIGTERM to race with off Unix).
#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down");
    }
}
