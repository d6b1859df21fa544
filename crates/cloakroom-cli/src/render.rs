//! Values written for people: times, durations, sizes, and text from the store made safe for
//! a terminal.

use cloakroom::Timestamp;

/// `2025-11-28 08:53:20`: RFC 3339 in UTC, with a space for readability.
pub(crate) fn time(ts: Timestamp) -> String {
    ts.to_string().replacen('T', " ", 1).replace('Z', "")
}

/// `in 3h`, `5m ago`, `now`: how far `ts` is from `now`, in its largest whole unit.
pub(crate) fn relative(now: Timestamp, ts: Timestamp) -> String {
    let ms = ts.as_millis().saturating_sub(now.as_millis());
    let span = span(ms.unsigned_abs() / 1000);
    match ms {
        _ if ms.unsigned_abs() < 1000 => "now".to_owned(),
        ms if ms > 0 => format!("in {span}"),
        _ => format!("{span} ago"),
    }
}

/// `45s`, `12m`, `3h`, `2d`: a number of seconds in its largest whole unit (hours up to two
/// days, so "in 36h" stays precise enough).
fn span(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// `1017 B`, `1.2 KiB`, `3.4 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `n` and the noun, in the plural unless `n` is 1: `1 session`, `3 sessions`.
pub(crate) fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Text from the store (user names, user agents: set by clients) with control characters
/// escaped, so it cannot move the cursor, recolour or retitle the admin's terminal.
pub(crate) fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// [`clean`] text cut to at most `max` characters, ending in `…` when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    let text = clean(text);
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_without_the_t() {
        assert_eq!(time(Timestamp(1_764_320_000_000)), "2025-11-28 08:53:20");
    }

    #[test]
    fn relative_times_use_the_largest_unit() {
        let now = Timestamp(1_000_000_000);
        let at = |secs: i64| Timestamp(now.as_millis() + secs * 1000);
        assert_eq!(relative(now, at(3 * 3600 + 59 * 60)), "in 3h");
        assert_eq!(relative(now, at(-300)), "5m ago");
        assert_eq!(relative(now, at(45)), "in 45s");
        assert_eq!(relative(now, at(30 * 86_400)), "in 30d");
        assert_eq!(relative(now, now), "now");
    }

    #[test]
    fn sizes_and_counts() {
        assert_eq!(bytes(1017), "1017 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(count(1u64, "session"), "1 session");
        assert_eq!(count(0u64, "session"), "0 sessions");
    }

    #[test]
    fn terminal_escapes_are_defused() {
        assert_eq!(clean("a\x1b[2Jb\n"), "a\\u{1b}[2Jb\\n");
        assert_eq!(truncate("Mozilla/5.0 (X11)", 8), "Mozilla…");
        assert_eq!(truncate("short", 8), "short");
    }
}
