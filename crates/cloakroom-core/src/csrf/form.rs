//! Finding the `_xsrf` field in request bodies: `application/x-www-form-urlencoded` and
//! `multipart/form-data`. Pure functions over bytes; never panic on any input.

/// The body formats a token can be read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormKind {
    /// `application/x-www-form-urlencoded`.
    UrlEncoded,
    /// `multipart/form-data` with this boundary.
    Multipart,
}

/// The form kind of a `Content-Type` value, with the multipart boundary.
pub(crate) fn form_kind(content_type: &str) -> Option<(FormKind, Option<String>)> {
    let mut parts = content_type.split(';');
    let essence = parts.next()?.trim();
    if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Some((FormKind::UrlEncoded, None));
    }
    if essence.eq_ignore_ascii_case("multipart/form-data") {
        let boundary = parts.find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("boundary")
                .then(|| v.trim().trim_matches('"').to_owned())
        })?;
        if boundary.is_empty() || boundary.len() > 200 {
            return None;
        }
        return Some((FormKind::Multipart, Some(boundary)));
    }
    None
}

/// The first value of `field` in an urlencoded body (percent- and `+`-decoded).
pub(crate) fn urlencoded_field(body: &[u8], field: &str) -> Option<String> {
    body.split(|&b| b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        (percent_decode(k)? == field.as_bytes())
            .then(|| percent_decode(v))?
            .and_then(|v| String::from_utf8(v).ok())
    })
}

/// Decodes `%XX` and `+`; `None` for a broken escape.
pub(crate) fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    crate::percent::decode(input, true, true)
}

/// Decodes every `%XX` of a URL path (`%2F` included); `+` is itself and a broken escape
/// is kept as it is, as routers read paths.
pub(super) fn percent_decode_path(input: &[u8]) -> Vec<u8> {
    crate::percent::decode(input, false, false).unwrap_or_else(|| input.to_vec())
}

/// The value of the part named `field` in a multipart body.
pub(crate) fn multipart_field(body: &[u8], boundary: &str, field: &str) -> Option<String> {
    let delimiter = format!("--{boundary}");
    let delim = delimiter.as_bytes();
    let mut rest = body;
    // Skip the preamble up to the first delimiter.
    let start = find(rest, delim)?;
    rest = &rest[start + delim.len()..];
    loop {
        if rest.starts_with(b"--") {
            return None; // closing delimiter
        }
        // Skip the rest of the delimiter line.
        let line_end = find(rest, b"\r\n")?;
        rest = &rest[line_end + 2..];
        let headers_end = find(rest, b"\r\n\r\n")?;
        let headers = &rest[..headers_end];
        let content = &rest[headers_end + 4..];
        let next = find(content, delim)?;
        // The part's content ends before the CRLF preceding the next delimiter.
        let value = content[..next]
            .strip_suffix(b"\r\n")
            .unwrap_or(&content[..next]);
        if part_name(headers).as_deref() == Some(field) {
            return String::from_utf8(value.to_vec()).ok();
        }
        rest = &content[next + delim.len()..];
    }
}

/// The `name` of a part from its headers (`Content-Disposition: form-data; name="x"`).
fn part_name(headers: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(headers).ok()?;
    let line = text.split("\r\n").find(|l| {
        l.split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
    })?;
    let (_, value) = line.split_once(':')?;
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("name")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded() {
        let body = b"text=hi+there&_xsrf=2%7Cab%7Ccd%7C1&x";
        assert_eq!(
            urlencoded_field(body, "_xsrf").as_deref(),
            Some("2|ab|cd|1")
        );
        assert_eq!(urlencoded_field(body, "text").as_deref(), Some("hi there"));
        assert_eq!(urlencoded_field(body, "x").as_deref(), Some(""));
        assert_eq!(urlencoded_field(body, "nope"), None);
        assert_eq!(urlencoded_field(b"_xsrf=%zz", "_xsrf"), None);
        assert_eq!(urlencoded_field(b"_xsrf=%", "_xsrf"), None);
        assert_eq!(urlencoded_field(b"", "_xsrf"), None);
    }

    #[test]
    fn paths_decode_every_escape_and_keep_plus_and_broken_escapes() {
        let d = |p: &str| String::from_utf8(percent_decode_path(p.as_bytes())).unwrap();
        assert_eq!(d("/%6Cog%69n"), "/login");
        assert_eq!(d("/%6c%6F"), "/lo");
        assert_eq!(d("/a%2Fb%2fc"), "/a/b/c");
        assert_eq!(d("/a+b%2B"), "/a+b+");
        assert_eq!(d("/%zz/%4/%"), "/%zz/%4/%");
        assert_eq!(d("/%2541"), "/%41", "decoded once");
        assert_eq!(percent_decode(b"a+b%2B"), Some(b"a b+".to_vec()));
    }

    #[test]
    fn multipart() {
        let body = b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nline1\r\nline2\r\n--XyZ\r\ncontent-disposition: form-data; name=\"_xsrf\"\r\n\r\n2|00|11|3\r\n--XyZ--\r\n";
        assert_eq!(
            multipart_field(body, "XyZ", "_xsrf").as_deref(),
            Some("2|00|11|3")
        );
        assert_eq!(
            multipart_field(body, "XyZ", "text").as_deref(),
            Some("hello")
        );
        assert_eq!(multipart_field(body, "XyZ", "missing"), None);
        assert_eq!(multipart_field(b"--XyZ", "XyZ", "_xsrf"), None);
        assert_eq!(multipart_field(b"", "XyZ", "_xsrf"), None);
        assert_eq!(multipart_field(b"--XyZ\r\n\r\n\r\n", "XyZ", "_xsrf"), None);
    }

    #[test]
    fn content_types() {
        assert_eq!(
            form_kind("application/x-www-form-urlencoded; charset=UTF-8"),
            Some((FormKind::UrlEncoded, None))
        );
        assert_eq!(
            form_kind("multipart/form-data; boundary=\"abc\""),
            Some((FormKind::Multipart, Some("abc".into())))
        );
        assert_eq!(form_kind("multipart/form-data"), None);
        assert_eq!(form_kind("application/json"), None);
    }
}
