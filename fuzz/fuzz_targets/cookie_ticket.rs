//! A real ticket embedded anywhere in random Cookie-header bytes is always found when its
//! pair is well-formed where it sits: on each side the header's edge, or `;` after optional
//! spaces and tabs. Whatever else is found is a well-formed cookie value, and the only value
//! that verifies is ours.
#![no_main]
use cloakroom_core::SessionId;
use cloakroom_core::cookie::{MAX_COOKIE_LEN, cookie_values, decode_ticket, encode_ticket};
use cloakroom_core::keys::{Key, KeyRing};
use libfuzzer_sys::fuzz_target;

fn is_space(b: &u8) -> bool {
    matches!(b, b' ' | b'\t')
}

/// What precedes the pair in its header lets it start a pair.
fn opens_a_pair(left: &[u8]) -> bool {
    let mut l = left;
    while let [rest @ .., last] = l {
        if !is_space(last) {
            break;
        }
        l = rest;
    }
    l.is_empty() || l.ends_with(b";")
}

/// What follows the pair in its header ends it.
fn closes_a_pair(right: &[u8]) -> bool {
    let r = &right[right.iter().take_while(|b| is_space(b)).count()..];
    r.is_empty() || r.starts_with(b";")
}

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static RING: KeyRing = KeyRing::single(Key::from_bytes(&[7; 32]).unwrap());
    }
    let [a, b, mode, rest @ ..] = data else {
        return;
    };
    let at = usize::from(u16::from_le_bytes([*a, *b])) % (rest.len() + 1);
    let (prefix, suffix) = rest.split_at(at);
    let id = SessionId::from_bytes([3; 32]);
    let ticket = RING.with(|r| encode_ticket(r, "session", &id));
    let pair = format!("session={ticket}");
    let pair = pair.as_bytes();

    // How the bytes are spread over Cookie headers (HTTP/2 sends several).
    let (left, right): (&[u8], &[u8]);
    let owned: Vec<Vec<u8>>;
    let headers: Vec<&[u8]> = match mode % 4 {
        0 => {
            (left, right) = (prefix, suffix);
            owned = vec![[prefix, pair, suffix].concat()];
            vec![&owned[0]]
        }
        1 => {
            (left, right) = (b"", suffix);
            owned = vec![[pair, suffix].concat()];
            vec![prefix, &owned[0]]
        }
        2 => {
            (left, right) = (prefix, b"");
            owned = vec![[prefix, pair].concat()];
            vec![&owned[0], suffix]
        }
        _ => {
            (left, right) = (b"", b"");
            vec![prefix, pair, suffix]
        }
    };

    let mut found = false;
    for value in cookie_values(headers.iter().copied(), "session") {
        assert!(value.len() <= MAX_COOKIE_LEN);
        assert!(
            value
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"\",;\\".contains(&b)),
            "not a cookie value: {value:?}"
        );
        if value == ticket {
            found = true;
        } else if let Ok(other) = RING.with(|r| decode_ticket(r, "session", value)) {
            assert!(other == id, "a ticket we never issued verified");
        }
    }
    if opens_a_pair(left) && closes_a_pair(right) {
        assert!(found, "a well-formed pair was missed");
    }
});
