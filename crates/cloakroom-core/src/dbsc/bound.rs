//! The bound cookie's value: the session key, its expiry and whether the session registered
//! a device key, MAC'd by the key ring so it is checked without the store.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq as _;

use crate::id::{SessionKey, Timestamp};
use crate::keys::{KEY_ID_LEN, KeyRing, MAC_LEN};

/// The MAC context of a bound cookie: a label and the cookie name.
fn bound_context(cookie_name: &str) -> [&[u8]; 2] {
    [b"cloakroom dbsc bound\0", cookie_name.as_bytes()]
}

/// Bytes signed in a bound cookie: key id, session key, expiry (ms, big-endian), and 1 when
/// the session had registered a device key (0 for the login's grace cookie).
const BOUND_SIGNED: usize = KEY_ID_LEN + SessionKey::LEN + 8 + 1;

/// A bound cookie's value: the session key, the expiry and whether the session registered,
/// MAC'd by the ring's first key (like the ticket, so it is checked without the store),
/// base64url.
pub(super) fn bound_cookie_value(
    ring: &KeyRing,
    cookie_name: &str,
    key: &SessionKey,
    expires_at: Timestamp,
    registered: bool,
) -> String {
    let mut raw = Vec::with_capacity(BOUND_SIGNED + MAC_LEN);
    raw.extend_from_slice(&ring.signing_key().id());
    raw.extend_from_slice(key.as_bytes());
    raw.extend_from_slice(&expires_at.as_millis().to_be_bytes());
    raw.push(u8::from(registered));
    let mac = ring.sign_parts(&bound_context(cookie_name), &raw);
    raw.extend_from_slice(&mac);
    URL_SAFE_NO_PAD.encode(raw)
}

/// A bound cookie's raw bytes, decoded but not yet verified.
pub(super) struct BoundRaw([u8; BOUND_SIGNED + MAC_LEN]);

impl BoundRaw {
    pub(super) fn decode(value: &[u8]) -> Option<Self> {
        let mut raw = [0u8; BOUND_SIGNED + MAC_LEN];
        (URL_SAFE_NO_PAD.decode_slice(value, &mut raw).ok()? == raw.len()).then_some(BoundRaw(raw))
    }

    /// The claimed expiry (unverified).
    pub(super) fn expires_at(&self) -> Timestamp {
        let at = KEY_ID_LEN + SessionKey::LEN;
        let bytes: [u8; 8] = self.0[at..at + 8].try_into().expect("8 bytes");
        Timestamp::from_millis(i64::from_be_bytes(bytes))
    }

    /// The claimed registration flag (unverified).
    pub(super) fn registered(&self) -> bool {
        self.0[BOUND_SIGNED - 1] == 1
    }

    /// The session, if the MAC verifies and the cookie has not expired.
    pub(super) fn verify(&self, ring: &KeyRing, cookie_name: &str) -> Option<SessionKey> {
        let (signed, mac) = self.0.split_at(BOUND_SIGNED);
        let kid: [u8; KEY_ID_LEN] = signed[..KEY_ID_LEN].try_into().ok()?;
        let expected = ring.sign_with_parts(kid, &bound_context(cookie_name), signed)?;
        if !bool::from(expected[..].ct_eq(mac)) {
            return None;
        }
        let key = signed[KEY_ID_LEN..KEY_ID_LEN + SessionKey::LEN]
            .try_into()
            .ok()?;
        (self.expires_at() > Timestamp::now()).then(|| SessionKey::from_bytes(key))
    }
}

/// The session a bound cookie value is for, if it verifies and has not expired.
pub(super) fn bound_cookie_session(
    ring: &KeyRing,
    cookie_name: &str,
    value: &[u8],
) -> Option<SessionKey> {
    BoundRaw::decode(value)?.verify(ring, cookie_name)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::keys::Key;

    #[test]
    fn bound_cookies_verify_only_for_their_session_key_and_until_expiry() {
        let ring = KeyRing::single(Key::from_bytes(&[3; 32]).unwrap());
        let key = crate::SessionId::generate().key();
        let live = bound_cookie_value(
            &ring,
            "b",
            &key,
            Timestamp::now().plus(Duration::from_secs(60)),
            true,
        );
        assert_eq!(bound_cookie_session(&ring, "b", live.as_bytes()), Some(key));
        assert_eq!(bound_cookie_session(&ring, "other", live.as_bytes()), None);
        let other_ring = KeyRing::single(Key::from_bytes(&[4; 32]).unwrap());
        assert_eq!(
            bound_cookie_session(&other_ring, "b", live.as_bytes()),
            None
        );
        let expired = bound_cookie_value(
            &ring,
            "b",
            &key,
            Timestamp::from_millis(Timestamp::now().as_millis() - 1),
            true,
        );
        assert_eq!(bound_cookie_session(&ring, "b", expired.as_bytes()), None);
        let mut tampered = live.into_bytes();
        tampered[10] ^= 1;
        assert_eq!(bound_cookie_session(&ring, "b", &tampered), None);
        assert_eq!(bound_cookie_session(&ring, "b", b"short"), None);
    }
}
