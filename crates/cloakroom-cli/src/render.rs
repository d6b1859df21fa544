//! Values written for people: times, durations, sizes, and text from the store made safe for
//! a terminal.

use std::io;

use cloakroom::Timestamp;
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter};

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

/// Whether `c` must not reach the admin's terminal or a JSON consumer raw: control
/// characters (C0, DEL, C1), format characters (bidi overrides and isolates such as U+202E,
/// zero-width characters such as U+200B, the BOM, the soft hyphen, tag characters) and the
/// line and paragraph separators. They move the cursor, recolour or retitle a terminal, or
/// make one name look like another (`victim\u{200b}`, text drawn backwards).
pub(crate) fn is_unsafe(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};
    c.is_control()
        || matches!(
            c.general_category(),
            GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
}

/// Text from the store (user names, user agents: set by clients) with [unsafe](is_unsafe)
/// characters escaped (`\u{1b}`, `\n`, `\u{202e}`), so it cannot move the cursor, recolour
/// or retitle the admin's terminal, nor hide or reorder what it shows.
pub(crate) fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else if is_unsafe(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes `value` as pretty JSON and a line break, with every [unsafe](is_unsafe) character
/// in its strings (and keys) escaped as `\uXXXX`: serde_json escapes only what JSON
/// requires (C0, `"` and `\\`), leaving DEL, C1 controls, bidi and zero-width characters raw
/// for the terminal. Escaping happens where serde_json writes string contents (a
/// [`Formatter`](serde_json::ser::Formatter)), so the output still parses back to the exact
/// original strings.
pub(crate) fn write_json(
    out: &mut impl std::io::Write,
    value: &impl serde::Serialize,
) -> anyhow::Result<()> {
    let mut serializer =
        serde_json::Serializer::with_formatter(&mut *out, SafeJson(PrettyFormatter::new()));
    value.serialize(&mut serializer)?;
    writeln!(out)?;
    Ok(())
}

/// [`write_json`] on one line (no indentation), for a stream of JSON lines.
pub(crate) fn write_json_line(
    out: &mut impl std::io::Write,
    value: &impl serde::Serialize,
) -> anyhow::Result<()> {
    let mut serializer =
        serde_json::Serializer::with_formatter(&mut *out, SafeJson(CompactFormatter));
    value.serialize(&mut serializer)?;
    writeln!(out)?;
    Ok(())
}

/// A serde_json formatter (pretty or compact), escaping [unsafe](is_unsafe) characters in
/// strings.
struct SafeJson<F>(F);

impl<F: Formatter> Formatter for SafeJson<F> {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (at, c) in fragment.char_indices() {
            if !is_unsafe(c) {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..at])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = at + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }

    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
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
        assert_eq!(
            time(Timestamp::from_millis(1_764_320_000_000)),
            "2025-11-28 08:53:20"
        );
    }

    #[test]
    fn relative_times_use_the_largest_unit() {
        let now = Timestamp::from_millis(1_000_000_000);
        let at = |secs: i64| Timestamp::from_millis(now.as_millis() + secs * 1000);
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

    /// Bidi, zero-width, C1 and C0 characters never reach the output raw.
    const HOSTILE: &str =
        "eve\u{202e}gnp.exe\u{200b}\u{85}\u{9b}\x1b[31m\u{2066}\u{feff}\u{ad}\u{2028}\u{e0041}\x7f";

    #[test]
    fn bidi_zero_width_and_c1_characters_are_escaped_in_text() {
        let shown = clean(HOSTILE);
        assert!(!shown.chars().any(is_unsafe), "{shown:?}");
        assert_eq!(
            shown,
            "eve\\u{202e}gnp.exe\\u{200b}\\u{85}\\u{9b}\\u{1b}[31m\\u{2066}\\u{feff}\\u{ad}\\u{2028}\\u{e0041}\\u{7f}"
        );
        // Ordinary text, accents and scripts included, is left alone.
        assert_eq!(clean("Zoë Ünal — 日本 مرحبا"), "Zoë Ünal — 日本 مرحبا");
    }

    #[test]
    fn json_escapes_them_and_still_parses_back() {
        let value = serde_json::json!({ "user": HOSTILE, HOSTILE: [HOSTILE, 1] });
        let mut out = Vec::new();
        write_json(&mut out, &value).unwrap();
        let text = String::from_utf8(out).unwrap();
        // Line breaks are the pretty printer's own.
        assert!(!text.chars().any(|c| c != '\n' && is_unsafe(c)), "{text}");
        assert!(
            text.contains("\\u202e") && text.contains("\\udb40\\udc41"),
            "{text}"
        );
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
        // Pretty, like serde_json's own.
        assert_eq!(
            text,
            format!(
                "{}\n",
                serde_json::to_string_pretty(&value)
                    .unwrap()
                    .replace('\u{202e}', "\\u202e")
                    .replace('\u{200b}', "\\u200b")
                    .replace('\u{85}', "\\u0085")
                    .replace('\u{9b}', "\\u009b")
                    .replace('\u{2066}', "\\u2066")
                    .replace('\u{feff}', "\\ufeff")
                    .replace('\u{ad}', "\\u00ad")
                    .replace('\u{2028}', "\\u2028")
                    .replace('\u{e0041}', "\\udb40\\udc41")
                    .replace('\u{7f}', "\\u007f")
            )
        );
    }

    #[test]
    fn terminal_escapes_are_defused() {
        assert_eq!(clean("a\x1b[2Jb\n"), "a\\u{1b}[2Jb\\n");
        assert_eq!(truncate("Mozilla/5.0 (X11)", 8), "Mozilla…");
        assert_eq!(truncate("short", 8), "short");
    }
}
