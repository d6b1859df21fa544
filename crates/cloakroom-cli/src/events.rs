//! `cloakroom events`: the store's durable event log, read or followed.

use std::io::Write;
use std::num::NonZeroUsize;
use std::time::Duration;

use anyhow::{Context as _, bail};
use cloakroom::store::{Batch, LoggedEvent, Position, SessionStore, kind_label};
use serde::Serialize;

use crate::render;

/// How long one read of `--follow` waits for news (then it asks again).
const FOLLOW_WAIT: Duration = Duration::from_secs(5);
/// Events per read.
const PAGE: usize = 500;

/// Options of `events`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EventsArgs {
    /// Keep reading: print events as they are logged, until interrupted.
    #[arg(long)]
    pub follow: bool,
    /// Print one JSON object per line (an event, or a gap marker), for scripts.
    #[arg(long)]
    pub json: bool,
    /// Start after this position (as printed for an event); by default, at the oldest event
    /// the store keeps. Keep the position of the last event you handled and pass it back to
    /// go on where you stopped (events are delivered at least once).
    #[arg(long, value_name = "POSITION")]
    pub from: Option<String>,
    /// Stop after this many events (with or without --follow).
    #[arg(long, value_name = "N")]
    pub limit: Option<NonZeroUsize>,
}

/// One event as `--json` prints it.
#[derive(Serialize)]
struct EventJson<'a> {
    position: &'a str,
    at: String,
    at_ms: i64,
    kind: &'static str,
    session: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous: Option<String>,
    user: Option<&'a str>,
}

/// A gap as `--json` prints it: events before `position` were dropped unread.
#[derive(Serialize)]
struct GapJson<'a> {
    gap: bool,
    after: &'a str,
}

/// `events`: prints the events of the store's log after `--from` (or from the oldest kept),
/// and with `--follow` keeps printing new ones. A reader that fell behind what the store
/// keeps is told so by a gap line, never silently skipped ahead.
///
/// # Errors
/// A store that keeps no event log (open it with its `events=N` option), a malformed
/// position, store failures.
pub async fn events(
    store: &dyn SessionStore,
    args: &EventsArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let Some(log) = store.event_log() else {
        bail!(
            "this store keeps no event log: open it with its event log on (the URL option \
             events=N, e.g. sqlite:///path.db?events=100000)"
        );
    };
    let mut at = args
        .from
        .as_deref()
        .map_or_else(Position::start, Position::new);
    let mut left = args.limit.map_or(usize::MAX, NonZeroUsize::get);
    while left > 0 {
        let max = left.min(PAGE);
        let batch = match args.follow {
            true => log.read_wait(&at, max, FOLLOW_WAIT).await,
            false => log.read(&at, max).await,
        }
        .context("reading the event log")?;
        let Batch { events, next, gap } = batch;
        if gap {
            print_gap(&at, args.json, out)?;
        }
        if events.is_empty() && !args.follow {
            break;
        }
        left -= events.len();
        for logged in &events {
            print_event(logged, args.json, out)?;
        }
        out.flush()?;
        at = next;
    }
    Ok(())
}

fn print_gap(after: &Position, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    if json {
        let after = after.as_str();
        return render::write_json_line(out, &GapJson { gap: true, after });
    }
    writeln!(
        out,
        "-- gap: events after {after} were dropped before they were read (the store keeps only the newest) --"
    )?;
    Ok(())
}

fn print_event(logged: &LoggedEvent, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let e = &logged.event;
    let previous = cloakroom::store::previous_handle(&e.kind);
    if json {
        let line = EventJson {
            position: logged.position.as_str(),
            at: e.at.to_string(),
            at_ms: e.at.as_millis(),
            kind: kind_label(&e.kind),
            session: e.session.to_handle(),
            previous,
            user: e.user.as_deref(),
        };
        return render::write_json_line(out, &line);
    }
    let user = e
        .user
        .as_deref()
        .map_or_else(|| "-".to_owned(), render::clean);
    write!(
        out,
        "{}  {}  {:<8} {}  {user}",
        logged.position,
        render::time(e.at),
        kind_label(&e.kind),
        e.session.to_handle(),
    )?;
    if let Some(previous) = previous {
        write!(out, "  (was {previous})")?;
    }
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cloakroom::Timestamp;
    use cloakroom::store::{EventLog as _, MemoryStore, Record};
    use cloakroom_core::session::{EndReason, Event, EventKind, SessionId};

    use super::*;

    async fn logged(store: &MemoryStore, n: usize) -> Vec<String> {
        let mut handles = Vec::new();
        for i in 0..n {
            let key = SessionId::generate().key();
            let mut record = Record::new(
                Timestamp::now(),
                Timestamp::now().plus(Duration::from_secs(600)),
            );
            record.meta.user = Some(format!("user{i}\u{1b}[31m"));
            let event = Event {
                kind: EventKind::Created,
                session: key,
                user: None,
                at: Timestamp::now(),
            };
            store
                .create_logged(&key, &record, None, &event)
                .await
                .unwrap();
            let end = Event {
                kind: EventKind::Ended(EndReason::Revoked),
                ..event
            };
            store.delete_logged(&key, &end).await.unwrap();
            handles.push(key.to_handle());
        }
        handles
    }

    async fn run(store: &MemoryStore, args: EventsArgs) -> String {
        let mut out = Vec::new();
        events(store, &args, &mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn prints_the_log_as_text_and_json_lines_from_a_position() {
        let store = MemoryStore::new().with_event_log(100);
        let handles = logged(&store, 2).await;
        let text = run(&store, EventsArgs::default()).await;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].starts_with("1  ") && lines[0].contains("created"),
            "{text}"
        );
        assert!(lines[1].contains("revoked") && lines[1].contains(&handles[0]));
        assert!(
            !text.contains('\u{1b}'),
            "terminal escapes from the store are cleaned"
        );

        let json = run(
            &store,
            EventsArgs {
                json: true,
                from: Some("2".into()),
                ..Default::default()
            },
        )
        .await;
        let parsed: Vec<serde_json::Value> = json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(parsed.len(), 2, "after position 2");
        assert_eq!(parsed[0]["position"], "3");
        assert_eq!(parsed[0]["kind"], "created");
        assert_eq!(parsed[1]["kind"], "revoked");
        assert_eq!(parsed[1]["session"], handles[1].as_str());
        assert_eq!(
            parsed[1]["user"], "user1\u{1b}[31m",
            "JSON keeps the exact text, escaped"
        );
        assert!(!json.contains('\u{1b}'));
    }

    #[tokio::test]
    async fn a_reader_behind_the_cap_is_told_of_the_gap() {
        let store = MemoryStore::new().with_event_log(3);
        logged(&store, 4).await;
        let text = run(&store, EventsArgs::default()).await;
        assert!(text.starts_with("-- gap: events after start"), "{text}");
        assert_eq!(
            text.lines().count(),
            4,
            "the gap line and the 3 events kept"
        );
        let json = run(
            &store,
            EventsArgs {
                json: true,
                ..Default::default()
            },
        )
        .await;
        let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        assert_eq!(first["gap"], true);
    }

    #[tokio::test]
    async fn follow_prints_events_as_they_are_logged() {
        let store = Arc::new(MemoryStore::new().with_event_log(100));
        let writer = Arc::clone(&store);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            logged(&writer, 1).await;
        });
        let args = EventsArgs {
            follow: true,
            limit: NonZeroUsize::new(2),
            ..Default::default()
        };
        let text = tokio::time::timeout(Duration::from_secs(10), run(&store, args))
            .await
            .expect("follow returns after --limit events");
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[tokio::test]
    async fn a_store_without_a_log_is_a_clear_error() {
        let store = MemoryStore::new();
        let err = events(&store, &EventsArgs::default(), &mut Vec::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("keeps no event log"), "{err}");
    }
}
