//! The `cloakroom` admin command as a library: every command is a function that writes its
//! output to any [`Write`], so tests call them directly and `main.rs` only parses, runs and
//! maps errors to exit codes.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let cli = cloakroom_cli::parse_args(["cloakroom", "--store", "memory://", "stats", "--json"])
//!     .unwrap();
//! let mut out = Vec::new();
//! cloakroom_cli::run(&cli, &mut out).await.unwrap();
//! let stats: serde_json::Value = serde_json::from_slice(&out).unwrap();
//! assert_eq!(stats["count"], 0);
//! # });
//! ```
//!
//! Exit codes (see `main.rs`): 0 success, 1 failure (bad or unreachable store, no such
//! session), 2 usage (clap's errors, and the [`clap::Error`]s [`run`] returns).

mod events;
mod gc;
mod keygen;
mod render;
mod scan;
mod sessions;
mod stats;
mod store_url;
mod table;

use std::ffi::OsString;
use std::io::Write;
use std::num::NonZeroUsize;
use std::sync::Arc;

use anyhow::Context as _;
use clap::builder::TypedValueParser;
use clap::{ArgGroup, Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use cloakroom::store::SessionStore;
use cloakroom::{SessionKey, Timestamp};

pub use events::{EventsArgs, events};
pub use gc::gc;
pub use keygen::keygen;
pub use scan::Progress;
pub use sessions::{list, revoke, show};
pub use stats::stats;

/// Administer the sessions of a Cloakroom session store.
#[derive(Debug, Parser)]
#[command(name = "cloakroom", version)]
pub struct Cli {
    /// Session store URL, e.g. sqlite:///var/lib/app/sessions.db or memory://
    /// (`--help` lists the forms this build supports).
    #[arg(
        long,
        env = "CLOAKROOM_STORE",
        hide_env_values = true,
        global = true,
        value_name = "URL"
    )]
    pub store: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List, show and revoke sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Delete expired sessions and print how many went (stores whose engine expires keys by
    /// itself, such as Redis, have nothing to delete; Redis with an event log logs the
    /// expiries of logged-in sessions it finds and prints how many).
    Gc,
    /// Count sessions: by user, anonymous, expiring within the hour, data size.
    Stats(StatsArgs),
    /// Print the store's durable event log (sessions created, rotated, ended, with why), or
    /// follow it. The store must be opened with its log (URL option events=N).
    Events(EventsArgs),
    /// Print a fresh random 32-byte signing key as standard base64 (for CLOAKROOM_KEYS).
    /// Needs no store.
    Keygen,
}

/// `cloakroom sessions ...`.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List live sessions as a table (or JSON), most recently seen first.
    List(ListArgs),
    /// Show one session with its decoded data (the CSRF secret is never shown; sealed values
    /// are opened only with the session's --ticket).
    Show(ShowArgs),
    /// Revoke (delete) one session, or every session of a user.
    Revoke(RevokeArgs),
}

/// Options of `sessions list`.
#[derive(Debug, Clone, Default, Args)]
pub struct ListArgs {
    /// Only the sessions of this user (uses the store's user index instead of a full scan).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Print a JSON array with every field, for scripts.
    #[arg(long)]
    pub json: bool,
    /// List at most N sessions. Without --user this stops the scan after N sessions in the
    /// store's own order, so they are not necessarily the N most recently seen.
    #[arg(long, value_name = "N")]
    pub limit: Option<NonZeroUsize>,
}

/// Options of `sessions show`: a handle, or `--ticket` (which also opens sealed data).
#[derive(Clone, Args)]
#[command(group(ArgGroup::new("session").required(true).args(["handle", "ticket"])))]
pub struct ShowArgs {
    /// The session's handle, as `sessions list` prints it (22 characters of base64url).
    /// Sealed values are shown as sealed.
    #[arg(value_parser = HandleParser, allow_hyphen_values = true)]
    pub handle: Option<SessionKey>,
    /// Instead of a handle, the session's ticket (the cookie, `NAME=VALUE` or the value of
    /// a `__Host-session` or `session` cookie), for support: it names the session and opens
    /// its sealed data, which nothing else can. Needs the app's keys (--keys).
    #[arg(
        long,
        env = "CLOAKROOM_TICKET",
        hide_env_values = true,
        value_name = "TICKET"
    )]
    pub ticket: Option<String>,
    /// The app's signing keys, comma-separated standard base64 (the first signs), to verify
    /// --ticket.
    #[arg(
        long,
        env = "CLOAKROOM_KEYS",
        hide_env_values = true,
        requires = "ticket"
    )]
    pub keys: Option<String>,
    /// Print JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

impl std::fmt::Debug for ShowArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "REDACTED");
        f.debug_struct("ShowArgs")
            .field("handle", &self.handle)
            .field("ticket", &redacted(&self.ticket))
            .field("keys", &redacted(&self.keys))
            .field("json", &self.json)
            .finish()
    }
}

/// Options of `sessions revoke`: a handle, or `--user`.
#[derive(Debug, Clone, Default, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["handle", "user"])))]
pub struct RevokeArgs {
    /// The handle of the session to revoke, as `sessions list` prints it.
    #[arg(value_parser = HandleParser, allow_hyphen_values = true)]
    pub handle: Option<SessionKey>,
    /// Revoke every session of this user instead.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// With --user: all of the user's sessions (the default; accepted for clarity).
    #[arg(long, requires = "user")]
    pub all: bool,
    /// Tell the user why: each revoked session leaves a short-lived marker, so its next
    /// request shows "You were signed out here by an administrator." and this text (at most
    /// 200 characters), and the app's open connections of it see it revoked.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

/// Options of `stats`.
#[derive(Debug, Clone, Default, Args)]
pub struct StatsArgs {
    /// Print JSON (with every user, not only the top 20), for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Parses a handle without echoing the text back: someone may paste a cookie by mistake.
#[derive(Clone, Debug)]
struct HandleParser;

impl TypedValueParser for HandleParser {
    type Value = SessionKey;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<SessionKey, clap::Error> {
        value
            .to_str()
            .and_then(SessionKey::from_handle)
            .ok_or_else(|| {
                clap::Error::raw(
                    clap::error::ErrorKind::ValueValidation,
                    "HANDLE is not a session handle: expected the 22 characters of base64url \
                     that `cloakroom sessions list` prints\n",
                )
                .with_cmd(cmd)
            })
    }
}

/// The clap command, with the store URL forms this build supports in `--help`.
pub fn command() -> clap::Command {
    let urls = cloakroom::store::supported_urls().join(", ");
    Cli::command().mut_arg("store", |arg| {
        arg.long_help(format!(
            "Session store URL. This build supports: {urls}. A password in the URL is never \
             printed."
        ))
    })
}

/// Parses command-line arguments (the first is the program name).
///
/// # Errors
/// clap's error for bad usage, `--help` and `--version`; `main` prints it and exits with
/// its code (2 for usage errors, 0 for help).
pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = command();
    command
        .try_get_matches_from_mut(args.iter().cloned())
        .and_then(|matches| Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command)))
        // `cloakroom stats redis://:pw@h` (`--store` forgotten): clap quotes the argument.
        .map_err(|e| store_url::scrub_usage(e, &args))
}

/// Runs the command `cli` names, writing its output to `out`. Progress of long scans goes to
/// stderr, and only when stderr is a terminal and the output is not JSON.
///
/// # Errors
/// Any failure, as a chain of contexts (print it with [`error_line`]). A [`clap::Error`] in
/// the chain is a usage error (such as a missing `--store`): exit code 2. Errors never
/// contain the store URL's password.
pub async fn run(cli: &Cli, out: &mut impl Write) -> anyhow::Result<()> {
    let result = dispatch(cli, out).await;
    match (result, &cli.store) {
        (Err(err), Some(url)) => Err(store_url::scrub(err, url)),
        (result, _) => result,
    }
}

async fn dispatch(cli: &Cli, out: &mut impl Write) -> anyhow::Result<()> {
    if let Command::Keygen = cli.command {
        return keygen(out);
    }
    let Some(url) = cli.store.as_deref() else {
        return Err(command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "this command needs a session store: pass --store URL or set CLOAKROOM_STORE",
            )
            .into());
    };
    let store = open_store(url).await?;
    let store = &*store;
    let now = Timestamp::now();
    match &cli.command {
        Command::Sessions(SessionsCommand::List(args)) => {
            list(
                store,
                args,
                now,
                &mut Progress::on_terminal(!args.json),
                out,
            )
            .await
        }
        Command::Sessions(SessionsCommand::Show(args)) => show(store, args, now, out).await,
        Command::Sessions(SessionsCommand::Revoke(args)) => revoke(store, args, out).await,
        Command::Gc => gc(store, store_url::expires_by_itself(url), out).await,
        Command::Stats(args) => {
            stats(
                store,
                args,
                now,
                &mut Progress::on_terminal(!args.json),
                out,
            )
            .await
        }
        Command::Events(args) => events(store, args, out).await,
        Command::Keygen => keygen(out),
    }
}

/// Opens the store `url` names (through [`cloakroom::store::open`]) and checks it answers.
///
/// # Errors
/// An unsupported or malformed URL, or a store that cannot be opened or reached. The
/// message names the URL with its password masked.
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn SessionStore>> {
    let shown = cloakroom_core::redact::redact_url(url);
    let store = cloakroom::store::open(url)
        .await
        .with_context(|| format!("cannot open the session store {shown}"))?;
    store
        .ping()
        .await
        .with_context(|| format!("cannot reach the session store {shown}"))?;
    Ok(store)
}

/// The error and its causes on one line, `outer: inner: innermost`, for `cloakroom: <line>`.
///
/// A cause whose text its parent already includes is left out (store errors print their
/// source in their own message too), and line breaks inside messages become spaces.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether `err` comes from writing to a closed pipe (`cloakroom sessions list | head`):
/// not worth an error message.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clap_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn revoke_takes_a_handle_or_a_user_but_not_both() {
        let handle = SessionKey::from_bytes([7; 16]).to_handle();
        assert!(parse_args(["cloakroom", "sessions", "revoke", &handle]).is_ok());
        assert!(parse_args(["cloakroom", "sessions", "revoke", "--user", "u", "--all"]).is_ok());
        for bad in [
            vec!["cloakroom", "sessions", "revoke"],
            vec!["cloakroom", "sessions", "revoke", "--all"],
            vec!["cloakroom", "sessions", "revoke", &handle, "--user", "u"],
        ] {
            let err = parse_args(bad.clone()).expect_err(&format!("{bad:?}"));
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn a_bad_handle_is_a_usage_error_that_does_not_echo_it() {
        let err = parse_args(["cloakroom", "sessions", "show", "s3cr3t-cookie-value"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_store_is_a_usage_error() {
        let cli = parse_args(["cloakroom", "gc"]).unwrap();
        let err = run(&cli, &mut Vec::new()).await.unwrap_err();
        assert_eq!(err.downcast_ref::<clap::Error>().unwrap().exit_code(), 2);
    }

    #[test]
    fn error_lines_skip_repeated_causes_and_line_breaks() {
        let inner = std::io::Error::other("disk\nfull");
        let err = anyhow::Error::new(inner).context("writing: disk\nfull");
        assert_eq!(
            error_line(&err.context("saving")),
            "saving: writing: disk full"
        );
    }
}
