//! Times in words.

use std::time::Duration;

use cloakroom::Timestamp;

/// "5 minutes", "3 hours", "2 days".
pub(crate) fn span(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = match secs {
        0..60 => return "less than a minute".into(),
        60..3600 => (secs / 60, "minute"),
        3600..172_800 => (secs / 3600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

pub(crate) fn ago(then: Timestamp, now: Timestamp) -> String {
    let d = then.until(now);
    if d < Duration::from_secs(60) {
        "just now".into()
    } else {
        format!("{} ago", span(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(Duration::from_secs(5)), "less than a minute");
        assert_eq!(span(Duration::from_secs(60)), "1 minute");
        assert_eq!(span(Duration::from_secs(7200)), "2 hours");
        assert_eq!(span(Duration::from_secs(86_400 * 30)), "30 days");
        assert_eq!(
            ago(Timestamp::from_millis(0), Timestamp::from_millis(1000)),
            "just now"
        );
    }
}
