//! `cloakroom-actix-demo`: the login app of the original Tornado + pycket tutorial, on
//! actix-web and Cloakroom: the same flags, routes, pages, JSON, status codes and headers as
//! `cloakroom-demo` (axum). Everything but the actix glue is `cloakroom_demo_app`'s, shared
//! with that demo. `cloakroom-actix-demo --help` lists the flags; each is also an
//! environment variable.
//!
//! The server answers slow and flooding clients as the axum demo's hyper loop does (see
//! [`server`]): `--header-timeout` bounds every request head of a connection, counted from
//! the connection opening or the previous response (actix-http alone times only the first
//! head), `--body-timeout` the time from a head to its response (408, connection closed),
//! a declared body over `--max-body` gets 413 at once (also instead of `100 Continue`), a
//! head over 32 KiB gets 431, a connection past `--max-connections` gets 503 and is closed
//! at once, and a stop closes idle keep-alive connections at once.
//!
//! What remains different, and why: `--idle-timeout` is actix's keep-alive timer, apart
//! from the head timer (hyper times both with one timer; here too a head must be complete
//! within the shorter of the two); a `Content-Length` over `--max-body` is refused from the
//! head by the demo, not by a body-limit layer, so a chunked body over the limit gets the
//! app's own 413 (the CSRF middleware's or the extractor's) rather than tower-http's; a
//! head over 32 KiB is measured after actix has parsed it (actix buffers up to about
//! 128 KiB before its own 431), where hyper stops reading at 32 KiB.

mod routes;
mod server;

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use cloakroom_demo_app::limits::Limits;
use cloakroom_demo_app::{Demo, Flags, METRICS_MAX_CONNECTIONS};
use tokio_util::sync::CancellationToken;

/// Worker threads (each serves its share of the connections).
const WORKERS: usize = 2;

/// The Cloakroom demo on actix-web: register, log in, keep notes in your session, manage
/// your sessions.
#[derive(Parser)]
#[command(name = "cloakroom-actix-demo", version)]
struct Args {
    #[command(flatten)]
    flags: Flags,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let telemetry = cloakroom_demo_app::init_telemetry("cloakroom-actix-demo", &args.flags);
    let served = actix_web::rt::System::new().block_on(serve(args.flags));
    // The last OTLP export, outside the runtime (it blocks).
    telemetry.shutdown();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("cloakroom-actix-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(flags: Flags) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(flags.addr)
        .with_context(|| format!("cannot listen on {}", flags.addr))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match flags.metrics_addr {
        Some(at) => Some(
            std::net::TcpListener::bind(at)
                .with_context(|| format!("cannot listen on {at} for metrics"))?,
        ),
        None => None,
    };
    let limits = flags.limits()?;
    let metrics_on_main = flags.metrics_on_main(addr);
    let demo = Demo::open(flags.config(addr, metrics_on_main)).await?;
    let app = routes::Wiring::new(demo);
    tracing::info!(?limits, "connection limits");
    // Ctrl-C and SIGTERM are listened for from here on (before "listening on" is printed),
    // and stop both servers.
    let stop = CancellationToken::new();
    actix_web::rt::spawn(stop_on_signal(stop.clone()));
    let main = {
        let app = app.clone();
        let max_body = limits.max_body;
        server::serve(
            listener,
            move || app.clone().main(max_body),
            &limits,
            WORKERS,
            &stop,
        )?
    };
    // Tests and scripts wait for this line on standard output.
    println!("listening on http://{addr}");
    let metrics = match metrics_listener {
        Some(metrics_listener) => {
            println!(
                "metrics on http://{}/metrics",
                metrics_listener.local_addr()?
            );
            let metrics_limits = Limits {
                max_connections: METRICS_MAX_CONNECTIONS,
                ..limits.clone()
            };
            let server = server::serve(
                metrics_listener,
                move || app.clone().metrics(),
                &metrics_limits,
                1,
                &stop,
            )?;
            Some(server)
        }
        None => None,
    };
    std::io::stdout().flush()?;
    // Both servers stop on Ctrl-C or SIGTERM, after the requests in flight.
    match metrics {
        Some(metrics) => {
            let (main, metrics) = futures_join(main, metrics).await;
            main?;
            metrics.context("metrics listener failed")?;
        }
        None => main.await?,
    }
    tracing::info!("stopped");
    Ok(())
}

/// Runs both servers to the end.
async fn futures_join(
    a: actix_web::dev::Server,
    b: actix_web::dev::Server,
) -> (std::io::Result<()>, std::io::Result<()>) {
    let b = actix_web::rt::spawn(b);
    let a = a.await;
    let b = b.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
    (a, b)
}

/// Listens for Ctrl-C and SIGTERM from the call on (not from the first poll: a signal sent
/// as soon as "listening on" appears must not kill the process); the future cancels `stop`
/// on the first.
#[cfg(unix)]
fn stop_on_signal(stop: CancellationToken) -> impl std::future::Future<Output = ()> {
    use actix_web::rt::signal::unix::{SignalKind, signal};
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
        stop.cancel();
    }
}

/// Resolves when `signal` arrives; never without a listener.
#[cfg(unix)]
async fn received(signal: Option<&mut actix_web::rt::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Cancels `stop` on Ctrl-C (registered at the first poll: no SIGTERM to race with off
/// Unix).
#[cfg(not(unix))]
fn stop_on_signal(stop: CancellationToken) -> impl std::future::Future<Output = ()> {
    async move {
        if let Err(e) = actix_web::rt::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down");
        stop.cancel();
    }
}
