//! `cloakroom-actix-demo`: the login app of the original Tornado + pycket tutorial, on
//! actix-web and Cloakroom: the same flags, routes, pages, JSON, status codes and headers as
//! `cloakroom-demo` (axum). Everything but the actix glue is `cloakroom_demo_app`'s, shared
//! with that demo. `cloakroom-actix-demo --help` lists the flags; each is also an
//! environment variable.
//!
//! Where actix-web's server differs from the axum demo's hyper loop: `--header-timeout` is
//! actix's `client_request_timeout` (the first request head) and `--idle-timeout` its
//! keep-alive timeout, two timers instead of hyper's one; past `--max-connections` (split
//! over the workers) new connections wait in the listen backlog instead of getting an
//! immediate 503; and a graceful stop (Ctrl-C, SIGTERM) waits for idle keep-alive
//! connections to time out (at most `--idle-timeout`, within the 30 s grace) where hyper
//! closes them at once.

mod routes;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use actix_web::HttpServer;
use actix_web::http::KeepAlive;
use anyhow::Context as _;
use clap::Parser;
use cloakroom_demo_app::{Demo, Flags, METRICS_MAX_CONNECTIONS};

/// How long a graceful shutdown waits for requests in flight (as the axum demo).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

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
    cloakroom_demo_app::init_logging();
    match actix_web::rt::System::new().block_on(serve(args.flags)) {
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
    let main = {
        let app = app.clone();
        let max_body = limits.max_body;
        HttpServer::new(move || app.clone().main(max_body))
            .workers(WORKERS)
            .max_connections(limits.max_connections.div_ceil(WORKERS))
            .client_request_timeout(limits.header_timeout)
            .keep_alive(KeepAlive::Timeout(limits.idle_timeout))
            .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
            .listen(listener)?
            .run()
    };
    // Tests and scripts wait for this line on standard output.
    println!("listening on http://{addr}");
    let metrics = match metrics_listener {
        Some(metrics_listener) => {
            println!(
                "metrics on http://{}/metrics",
                metrics_listener.local_addr()?
            );
            let server = HttpServer::new(move || app.clone().metrics())
                .workers(1)
                .max_connections(METRICS_MAX_CONNECTIONS)
                .client_request_timeout(limits.header_timeout)
                .keep_alive(KeepAlive::Timeout(limits.idle_timeout))
                .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
                .listen(metrics_listener)?
                .run();
            Some(server)
        }
        None => None,
    };
    std::io::stdout().flush()?;
    // Each server stops on Ctrl-C or SIGTERM by itself (actix-web's signal handling), after
    // the requests in flight.
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
