//! `cloakroom`: the Cloakroom admin command. `cloakroom --help` lists the commands; the
//! work happens in the library (`cloakroom_cli`), this file only maps results to exit codes:
//! 0 success, 1 failure, 2 usage.

use std::io::{self, BufWriter, Write as _};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Usage errors exit with 2, `--help` and `--version` with 0, as clap prints them.
    let cli = cloakroom_cli::parse_args(std::env::args_os()).unwrap_or_else(|e| e.exit());
    init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    let mut out = BufWriter::new(io::stdout().lock());
    let result = runtime
        .block_on(cloakroom_cli::run(&cli, &mut out))
        .and_then(|()| out.flush().map_err(anyhow::Error::from));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `cloakroom sessions list | head`: the reader has what it wanted.
        Err(e) if cloakroom_cli::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<clap::Error>() {
            Some(usage) => usage.exit(),
            None => fail(&e),
        },
    }
}

/// What the stores log at `warn` and above (`insecure_skip_verify=true`'s warning at every
/// open, say) goes to stderr, never into the output on stdout; `RUST_LOG` chooses other levels.
fn init_logging() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .without_time()
        .try_init();
}

fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("cloakroom: {}", cloakroom_cli::error_line(err));
    ExitCode::FAILURE
}
