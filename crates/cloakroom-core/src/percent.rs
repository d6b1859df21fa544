//! The one percent-decoder of the crates: the store URL parsers (Redis, PostgreSQL), the CSRF
//! check (form fields, paths) and [`redact`](crate::redact) (secrets as drivers echo them).

/// `text` with its `%XX` escapes decoded, and `+` read as a space where `plus_is_space` (a
/// query string or a form). `None` for a broken escape (`%` not followed by two hex digits)
/// or a result that is not UTF-8: a URL parser refuses what it cannot read exactly.
///
/// ```
/// use cloakroom_core::redact::percent_decode;
///
/// assert_eq!(percent_decode("p%40ss+w", true).as_deref(), Some("p@ss w"));
/// assert_eq!(percent_decode("p%40ss+w", false).as_deref(), Some("p@ss+w"));
/// assert_eq!(percent_decode("50%", false), None);
/// assert_eq!(percent_decode("%+1", false), None);
/// ```
pub fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    String::from_utf8(decode(text.as_bytes(), plus_is_space, true)?).ok()
}

/// `input` with its `%XX` escapes decoded (and `+` as a space where `plus_is_space`). A broken
/// escape makes it `None` when `strict`; otherwise it stays as written (as routers read
/// paths, and as [`redact`](crate::redact) looks for secrets).
pub(crate) fn decode(input: &[u8], plus_is_space: bool, strict: bool) -> Option<Vec<u8>> {
    let hex = |at: usize| input.get(at).and_then(|&b| char::from(b).to_digit(16));
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match (input[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
            (b'%', ..) if strict => return None,
            (b'+', ..) if plus_is_space => out.push(b' '),
            (byte, ..) => out.push(byte),
        }
        i += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_strictly_or_leniently() {
        assert_eq!(decode(b"a+b%2B", true, true), Some(b"a b+".to_vec()));
        assert_eq!(decode(b"a+b%2B", false, true), Some(b"a+b+".to_vec()));
        assert_eq!(decode(b"%zz%41", false, true), None);
        assert_eq!(decode(b"%zz%41", false, false), Some(b"%zzA".to_vec()));
        assert_eq!(decode(b"%4", true, true), None);
        assert_eq!(decode(b"%4", true, false), Some(b"%4".to_vec()));
        assert_eq!(decode(b"%2f%2F", false, true), Some(b"//".to_vec()));
        assert_eq!(percent_decode("%ff", false), None, "not UTF-8");
    }
}
