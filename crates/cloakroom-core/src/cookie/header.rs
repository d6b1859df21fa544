//! Reading request `Cookie` headers as bytes, so one stranger's malformed cookie costs only
//! that cookie.
//!
//! A browser sends every cookie of the site, including those other apps on the same site
//! set (a sibling port, a parent domain, a script): `theme=é` arrives as raw UTF-8 bytes, and
//! a header read as text (`HeaderValue::to_str`) fails as a whole, losing the session ticket
//! and the `_xsrf` cookie with it. Here each `;`-separated pair is judged on its own.

use super::MAX_COOKIE_LEN;

/// The values of every well-formed cookie called `name` in a request's `Cookie` header
/// values, in the order they arrive (header by header, pair by pair).
///
/// Pass every `Cookie` header of the request (HTTP/2 sends one per cookie), as bytes:
/// `headers.get_all(COOKIE).iter().map(HeaderValue::as_bytes)`. Each header is split on `;`
/// and each pair trimmed of spaces and tabs; a pair named `name` yields its value when it is
/// well-formed by RFC 6265 §4.1.1:
///
/// - it has an `=` and its value consists of cookie-octets only (printable ASCII except
///   space, `"`, `,`, `;` and `\`), at most [`MAX_COOKIE_LEN`] bytes; an empty value is
///   yielded as `""`;
/// - a value in double quotes (`"abc"`, which the RFC grammar allows and Python's
///   `SimpleCookie`, hence Tornado, writes for values holding `=`) is yielded unquoted
///   (`abc`), as Tornado reads it. Anything else with a quote (unbalanced, inner) is
///   malformed.
///
/// Every other pair is skipped without affecting the rest: other names, pairs without `=`
/// or with an empty name, non-ASCII bytes or invalid UTF-8, spaces, commas or backslashes
/// inside the value, over-long values, empty pairs (`;;`). Names compare exactly (cookie
/// names are case-sensitive); spaces and tabs around the name and around the value are
/// ignored, as browsers never send them but some clients do.
///
/// No allocation: the values borrow from the headers.
///
/// **Several pairs with our name** (a neighbour on the same site can plant one: a parent
/// domain's cookie, or one with a longer `Path`, which browsers send *first*) are all
/// yielded, in order; the caller decides. The session engine uses the first whose ticket
/// verifies and whose session the store knows
/// ([`SessionEngine`](crate::session::SessionEngine)); the CSRF layer the first that decodes
/// as a token.
///
/// ```
/// use cloakroom_core::cookie::cookie_values;
///
/// let header: &[u8] = "theme=\u{e9}; session=abc; x; session=\"q\"".as_bytes();
/// let second: &[u8] = b"session=def";
/// let found: Vec<&str> = cookie_values([header, second], "session").collect();
/// assert_eq!(found, ["abc", "q", "def"]);
/// ```
pub fn cookie_values<'h, I>(headers: I, name: &str) -> impl Iterator<Item = &'h str>
where
    I: IntoIterator<Item = &'h [u8]>,
{
    headers
        .into_iter()
        .flat_map(|header| header.split(|&b| b == b';'))
        .filter_map(move |pair| pair_value(pair, name.as_bytes()))
}

/// The value of one `name=value` pair if it is called `name` and well-formed.
fn pair_value<'a>(pair: &'a [u8], name: &[u8]) -> Option<&'a str> {
    let eq = pair.iter().position(|&b| b == b'=')?;
    let (k, v) = (trim(&pair[..eq]), trim(&pair[eq + 1..]));
    if k.is_empty() || k != name {
        return None;
    }
    let v = match v {
        [b'"', inner @ .., b'"'] => inner,
        _ => v,
    };
    if v.len() > MAX_COOKIE_LEN || !v.iter().all(|&b| is_cookie_octet(b)) {
        return None;
    }
    // Cookie-octets are ASCII, so this always succeeds; no `unsafe` needed for it.
    std::str::from_utf8(v).ok()
}

/// RFC 6265 `cookie-octet` (`%x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E`): visible
/// US-ASCII except `"`, `,`, `;` and `\`.
fn is_cookie_octet(b: u8) -> bool {
    (0x21..=0x7E).contains(&b) && !matches!(b, b'"' | b',' | b';' | b'\\')
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_octets_are_rfc_6265s() {
        for b in 0..=u8::MAX {
            let rfc = matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E);
            assert_eq!(is_cookie_octet(b), rfc, "byte {b:#04x}");
        }
    }

    fn values<'a>(headers: &[&'a [u8]], name: &'a str) -> Vec<&'a str> {
        cookie_values(headers.iter().copied(), name).collect()
    }

    /// Neighbour cookies that must cost nothing but themselves.
    fn neighbours() -> Vec<(&'static str, Vec<u8>)> {
        let mut high = b"raw=".to_vec();
        high.extend(0x80..=0xFF_u8);
        let mut junk = b"junk=".to_vec();
        junk.extend(
            (0..4096u32).map(|i| [b'j', 0xE9, b'%', b'"', 0xFF, b',', b'='][i as usize % 7]),
        );
        vec![
            ("utf-8", "theme=é".as_bytes().to_vec()),
            ("raw 0x80-0xFF", high),
            (
                "raw 0x80-0xFF name",
                (0x80..=0xFF_u8).chain(*b"=1").collect(),
            ),
            ("invalid utf-8", b"bad=\xC3\x28\xA0\xA1".to_vec()),
            ("empty pairs", b";;".to_vec()),
            ("empty", Vec::new()),
            ("no name", b"=x".to_vec()),
            ("no equals", b"x".to_vec()),
            ("quoted", b"q=\"abc\"".to_vec()),
            ("quoted utf-8", "q=\"é\"".as_bytes().to_vec()),
            ("unbalanced quote", b"q=\"abc".to_vec()),
            ("4 KB junk", junk),
            ("4 KB junk without =", vec![0xE9; 4096]),
            ("junk session pair", b"session=garbage".to_vec()),
            ("utf-8 session pair", "session=é".as_bytes().to_vec()),
            ("session pair with a space", b"session=a b".to_vec()),
            (
                "quoted session pair with a space",
                b"session=\"a b\"".to_vec(),
            ),
            ("tabs and spaces", b" \t theme = dark \t".to_vec()),
            ("control bytes", b"c=\x01\x7f".to_vec()),
            ("comma", b"c=a,b".to_vec()),
        ]
    }

    const OURS: &str = "session=AdVRHTYJ-_x|2:1";

    /// How the headers are arranged, the headers, the values expected.
    type Case<'a> = (&'static str, Vec<Vec<u8>>, Vec<&'a str>);

    #[test]
    fn neighbours_cost_only_themselves() {
        for (what, n) in neighbours() {
            // A neighbour that is itself a well-formed `session=` pair is yielded as well,
            // in its place; everything else yields nothing.
            let own: Vec<&str> = values(&[&n], "session");
            let cases: Vec<Case<'_>> = vec![
                ("before", vec![[&n[..], b"; ", OURS.as_bytes()].concat()], {
                    let mut v = own.clone();
                    v.push("AdVRHTYJ-_x|2:1");
                    v
                }),
                ("after", vec![[OURS.as_bytes(), b"; ", &n[..]].concat()], {
                    let mut v = vec!["AdVRHTYJ-_x|2:1"];
                    v.extend(&own);
                    v
                }),
                (
                    "no space",
                    vec![[&n[..], b";", OURS.as_bytes(), b";", &n[..]].concat()],
                    {
                        let mut v = own.clone();
                        v.push("AdVRHTYJ-_x|2:1");
                        v.extend(&own);
                        v
                    },
                ),
                ("two headers", vec![n.clone(), OURS.as_bytes().to_vec()], {
                    let mut v = own.clone();
                    v.push("AdVRHTYJ-_x|2:1");
                    v
                }),
            ];
            for (how, headers, want) in cases {
                let refs: Vec<&[u8]> = headers.iter().map(Vec::as_slice).collect();
                assert_eq!(values(&refs, "session"), want, "{what}, {how}");
            }
        }
    }

    #[test]
    fn malformed_pairs_of_our_name_are_skipped() {
        for bad in [
            &b"session=\xC3\xA9"[..],
            b"session=\xFF",
            b"session=a b",
            b"session=a,b",
            b"session=a\\b",
            b"session=\"ab",
            b"session=a\"b",
            b"session=\"a\"b\"",
            b"session=\"a b\"",
            b"session",
            b"session\xC3\xA9=x",
            b"Session=x",
            b"sess ion=x",
        ] {
            assert_eq!(values(&[bad], "session"), Vec::<&str>::new(), "{bad:?}");
        }
    }

    #[test]
    fn well_formed_pairs_of_our_name_are_found() {
        let cases: [(&[u8], &str); 8] = [
            (b"session=x", "x"),
            (b"session=", ""),
            (b"session=\"\"", ""),
            (b"session=\"abc\"", "abc"),
            (b" \tsession \t= \tx\t ", "x"),
            (b"session=a=b==", "a=b=="),
            (
                b"session=2|1:0|10:1700000000|9:PYCKET_ID|48:MGNh|ab",
                "2|1:0|10:1700000000|9:PYCKET_ID|48:MGNh|ab",
            ),
            (
                b"session=!#$%&'()*+-./:<>?@[]^_`{|}~",
                "!#$%&'()*+-./:<>?@[]^_`{|}~",
            ),
        ];
        for (header, want) in cases {
            assert_eq!(values(&[header], "session"), [want], "{header:?}");
        }
        assert_eq!(
            values(
                &[b"a=1; session=x; b=\"2\"; session=y;junk; session="],
                "session"
            ),
            ["x", "y", ""]
        );
        assert_eq!(values(&[b"a=1; b=\"2\""], "b"), ["2"]);
        assert_eq!(values(&[b"a=1"], "c"), Vec::<&str>::new());
        assert_eq!(values(&[], "c"), Vec::<&str>::new());
    }

    #[test]
    fn values_longer_than_the_limit_are_skipped() {
        let at = format!("session={}", "A".repeat(MAX_COOKIE_LEN));
        let over = format!("session={}", "A".repeat(MAX_COOKIE_LEN + 1));
        let header = format!("{over}; {at}; session=x");
        let found = values(&[header.as_bytes()], "session");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].len(), MAX_COOKIE_LEN);
        assert_eq!(found[1], "x");
    }
}
