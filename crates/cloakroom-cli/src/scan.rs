//! Walking a whole store page by page, with a progress line on a terminal.

use std::collections::HashSet;
use std::io::{self, IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cloakroom::SessionKey;
use cloakroom::store::{Cursor, SessionInfo, SessionStore};

/// Sessions asked for per [`SessionStore::scan`] call: one round trip per few hundred
/// sessions, small enough that a page never holds a store lock for long.
pub(crate) const PAGE_SIZE: usize = 500;

/// How often the progress line may be redrawn.
const REDRAW_EVERY: Duration = Duration::from_millis(100);

/// Scans quicker than this show no progress line at all (no flicker).
const SHOW_AFTER: Duration = Duration::from_millis(250);

/// The "scanned 12000 sessions…" line of a long scan, redrawn in place on stderr. It is
/// drawn only when enabled (stderr a terminal, output not JSON) and erased when the scan
/// ends or fails, so it never mixes with output or error messages.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    started: Instant,
    drawn: bool,
    last_draw: Option<Instant>,
}

impl Progress {
    /// No progress line (tests, scripts).
    pub fn hidden() -> Self {
        Progress {
            enabled: false,
            started: Instant::now(),
            drawn: false,
            last_draw: None,
        }
    }

    /// A progress line if `wanted` and stderr is a terminal.
    pub fn on_terminal(wanted: bool) -> Self {
        Progress {
            enabled: wanted && io::stderr().is_terminal(),
            ..Self::hidden()
        }
    }

    fn update(&mut self, scanned: usize) {
        if !self.enabled
            || self.started.elapsed() < SHOW_AFTER
            || self.last_draw.is_some_and(|at| at.elapsed() < REDRAW_EVERY)
        {
            return;
        }
        // A progress line that cannot be drawn is not worth failing the command for.
        let _ = write!(io::stderr(), "\rscanned {scanned} sessions…\x1b[K");
        self.drawn = true;
        self.last_draw = Some(Instant::now());
    }

    /// Erases the line, if one was drawn.
    fn clear(&mut self) {
        if self.drawn {
            let _ = write!(io::stderr(), "\r\x1b[K");
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Calls `each` for every live session in the store, at most `limit` of them, each once:
/// a page may repeat a session seen before (Redis `SCAN` may), so keys are remembered.
pub(crate) async fn for_each_session(
    store: &dyn SessionStore,
    limit: Option<usize>,
    progress: &mut Progress,
    mut each: impl FnMut(SessionInfo),
) -> anyhow::Result<()> {
    let mut seen: HashSet<SessionKey> = HashSet::new();
    let mut cursor = Cursor::start();
    loop {
        let want = limit.map_or(PAGE_SIZE, |limit| (limit - seen.len()).min(PAGE_SIZE));
        if want == 0 {
            break;
        }
        let page = store
            .scan(cursor, want)
            .await
            .with_context(|| format!("scanning sessions (after {} of them)", seen.len()))?;
        for info in page.sessions {
            if limit.is_some_and(|limit| seen.len() >= limit) {
                break;
            }
            if seen.insert(info.key) {
                each(info);
            }
        }
        match page.next {
            Some(next) => {
                cursor = next;
                progress.update(seen.len());
            }
            None => break,
        }
    }
    progress.clear();
    Ok(())
}
