//! How paths are compared with exempt paths and token paths.
//!
//! An adapter hands the check the path its router matches: axum's (matchit) is the raw
//! path, actix-web's the path with its percent-escapes decoded except `%2F`, `%25` and `%2B`.
//! - An exempt path must equal that path exactly: an exemption never covers more than what
//!   the router routes to the exempt handler (Go CVE-2025-47910 came from prefix matching).
//! - A token path covers every spelling a router, a proxy or a normalising middleware could
//!   map onto it: both are compared in [`canonical`] form (escapes decoded, empty and `.`
//!   segments dropped, `..` resolved, letters in lower case), so in doubt a token is asked
//!   for.

use super::form::percent_decode_path;

/// The form token paths are compared in: every `%XX` decoded once (`%2F` and `%2E`
/// included), then empty and `.` segments dropped (so doubled and trailing slashes do not
/// count), `..` segments resolved, and ASCII letters lower-cased. Broader than any one
/// router's matching on purpose: it only ever makes more requests need a token.
pub(super) fn canonical(path: &str) -> Vec<u8> {
    let decoded = percent_decode_path(path.as_bytes());
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(decoded.len() + 1);
    for segment in segments {
        out.push(b'/');
        out.extend(segment.iter().map(u8::to_ascii_lowercase));
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(path: &str) -> String {
        String::from_utf8(canonical(path)).unwrap()
    }

    #[test]
    fn spellings_of_one_path_share_a_canonical_form() {
        for spelling in [
            "/login",
            "/%6Cogin",
            "/%6c%6f%67%69%6e",
            "/log%69n",
            "/LOGIN",
            "//login",
            "/login/",
            "/login//",
            "/./login",
            "/%2e/login",
            "/login/%2E",
            "/x/../login",
            "/x/%2e%2e/login",
            "/../login",
            "login",
        ] {
            assert_eq!(c(spelling), "/login", "{spelling}");
        }
        for spelling in [
            "/account%2Flogin",
            "/account//login",
            "/%61ccount/./l%6Fgin/",
        ] {
            assert_eq!(c(spelling), "/account/login", "{spelling}");
        }
        for root in ["", "/", "//", "/.", "/..", "/%2e%2e/"] {
            assert_eq!(c(root), "/", "{root:?}");
        }
    }

    #[test]
    fn other_paths_stay_apart() {
        for other in [
            "/logins",
            "/log in",
            "/log+in",
            "/login%00",
            "/%256Cogin",
            "/login.",
            "/login/x",
            "/x/login",
        ] {
            assert_ne!(c(other), "/login", "{other}");
        }
        // Broken escapes and non-UTF-8 bytes are compared as they are.
        assert_eq!(canonical("/%zz/%FF"), b"/%zz/\xff");
    }
}
