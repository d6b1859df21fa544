//! The ticket (the signed session id in the cookie), cookie attributes, and reading request
//! `Cookie` headers ([`cookie_values`]).
//!
//! Wire format of a ticket, version 1: unpadded base64url of
//! `0x01 | key id (4 bytes) | session id (32 bytes) | HMAC-SHA256 (32 bytes)`, 92 characters.
//! The MAC covers the version, key id and session id, and is bound to the cookie name, so a
//! ticket copied under another cookie name does not verify.
//!
//! ```
//! use cloakroom_core::cookie::{decode_ticket, encode_ticket};
//! use cloakroom_core::keys::{Key, KeyRing};
//! use cloakroom_core::session::SessionId;
//!
//! let ring = KeyRing::single(Key::generate());
//! let id = SessionId::generate();
//! let ticket = encode_ticket(&ring, "session", &id);
//! assert_eq!(decode_ticket(&ring, "session", &ticket).unwrap(), id);
//! assert!(decode_ticket(&ring, "other", &ticket).is_err());
//! ```

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config_error::{ConfigError, ConfigErrorKind};
use crate::id::{ID_LEN, SessionId, SessionKey};
use crate::keys::{KEY_ID_LEN, KeyRing, MAC_LEN};

mod header;

pub use header::cookie_values;

const VERSION: u8 = 1;
const RAW_LEN: usize = 1 + KEY_ID_LEN + ID_LEN + MAC_LEN;
/// Length of an encoded ticket, in characters.
pub(crate) const TICKET_LEN: usize = (RAW_LEN * 4).div_ceil(3);
/// Cookie values longer than this are rejected unread (browsers cap cookies near 4096 bytes).
pub const MAX_COOKIE_LEN: usize = 4096;

/// Why a ticket was refused. Every case means "no session"; none reaches the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TicketError {
    /// Wrong length, bad base64 or unknown version.
    Malformed,
    /// Signed by a key that is not in the ring (rotated out, or forged).
    UnknownKey,
    /// The MAC does not match.
    BadSignature,
}

impl fmt::Display for TicketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TicketError::Malformed => "malformed session ticket",
            TicketError::UnknownKey => "session ticket signed by an unknown key",
            TicketError::BadSignature => "session ticket signature mismatch",
        })
    }
}

impl std::error::Error for TicketError {}

/// The MAC context of a ticket: a fixed label and the cookie name (so a ticket does not
/// verify under another name).
fn context(cookie_name: &str) -> [&[u8]; 2] {
    [b"cloakroom ticket\0", cookie_name.as_bytes()]
}

/// Encodes `id` as a ticket for the cookie `cookie_name`, signed with the ring's first key.
pub fn encode_ticket(ring: &KeyRing, cookie_name: &str, id: &SessionId) -> String {
    let mut raw = [0u8; RAW_LEN];
    raw[0] = VERSION;
    raw[1..1 + KEY_ID_LEN].copy_from_slice(&ring.signing_key().id());
    raw[1 + KEY_ID_LEN..1 + KEY_ID_LEN + ID_LEN].copy_from_slice(id.as_bytes());
    let mac = ring.sign_parts(&context(cookie_name), &raw[..1 + KEY_ID_LEN + ID_LEN]);
    raw[1 + KEY_ID_LEN + ID_LEN..].copy_from_slice(&mac);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Decodes and verifies a ticket read from the cookie `cookie_name`.
///
/// # Errors
/// A [`TicketError`] for anything that is not a ticket this ring signed under this name.
pub fn decode_ticket(
    ring: &KeyRing,
    cookie_name: &str,
    value: &str,
) -> Result<SessionId, TicketError> {
    if value.len() != TICKET_LEN {
        return Err(TicketError::Malformed);
    }
    let mut raw = [0u8; RAW_LEN];
    match URL_SAFE_NO_PAD.decode_slice(value.as_bytes(), &mut raw) {
        Ok(RAW_LEN) => {}
        _ => return Err(TicketError::Malformed),
    }
    if raw[0] != VERSION {
        return Err(TicketError::Malformed);
    }
    let mut kid = [0u8; KEY_ID_LEN];
    kid.copy_from_slice(&raw[1..1 + KEY_ID_LEN]);
    let (signed, mac) = raw.split_at(1 + KEY_ID_LEN + ID_LEN);
    let expected = ring
        .sign_with_parts(kid, &context(cookie_name), signed)
        .ok_or(TicketError::UnknownKey)?;
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], mac)) {
        return Err(TicketError::BadSignature);
    }
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&signed[1 + KEY_ID_LEN..]);
    Ok(SessionId::from_bytes(id))
}

/// How session ids are made, named in the store and carried in the cookie.
///
/// The default is Cloakroom's own signed ticket (see [`encode_ticket`]), made with the
/// engine's key ring. A format set with
/// [`SessionSettings::with_ticket_format`](crate::session::SessionSettings::with_ticket_format)
/// replaces it and brings its own secrets: `cloakroom_tornado::PycketTicket` speaks pycket's
/// format (a uuid4 signed with Tornado's cookie secret) for sharing sessions with a Tornado
/// app.
pub trait TicketFormat: Send + Sync + fmt::Debug + 'static {
    /// A fresh random id.
    fn generate(&self) -> SessionId;
    /// The key under which the store keeps the session of `id`.
    ///
    /// The default is [`SessionId::key`], a SHA-256 of the id: the store never sees the id
    /// itself, so a dump of it cannot be turned back into tickets. Cloakroom's own format keeps
    /// the default. Override it only for an interop format whose records another program
    /// reads and writes under keys it chose (pycket looks its records up by the uuid in its
    /// cookie); such a format gives up that protection, and says so.
    fn store_key(&self, id: &SessionId) -> SessionKey {
        id.key()
    }
    /// Whether session data may be sealed at rest under this format
    /// ([`SessionSettings::with_sealed_data`](crate::session::SessionSettings::with_sealed_data)).
    /// Default `true`; `false` for an interop format whose records another program reads
    /// (pycket's: Tornado must read the values).
    fn sealable(&self) -> bool {
        true
    }
    /// The cookie value carrying `id`.
    fn encode(&self, cookie_name: &str, id: &SessionId) -> String;
    /// The id in a cookie value, if it verifies.
    ///
    /// # Errors
    /// A [`TicketError`] for anything that does not verify.
    fn decode(&self, cookie_name: &str, value: &str) -> Result<SessionId, TicketError>;
}

/// Cloakroom's ticket, the default format: 256 random bits, MAC'd by the engine's key ring,
/// bound to the cookie name; the store sees only a SHA-256 of the id.
#[derive(Clone, Debug)]
pub(crate) struct SignedTicket(pub(crate) KeyRing);

impl TicketFormat for SignedTicket {
    fn generate(&self) -> SessionId {
        SessionId::generate()
    }
    fn encode(&self, cookie_name: &str, id: &SessionId) -> String {
        encode_ticket(&self.0, cookie_name, id)
    }
    fn decode(&self, cookie_name: &str, value: &str) -> Result<SessionId, TicketError> {
        decode_ticket(&self.0, cookie_name, value)
    }
}

/// The `SameSite` cookie attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SameSite {
    /// Sent on same-site requests only.
    Strict,
    /// Sent on same-site requests and top-level cross-site navigations (the default: blocks
    /// cross-site POSTs while keeping links from other sites logged in).
    #[default]
    Lax,
    /// Sent everywhere (requires `Secure`).
    None,
}

impl SameSite {
    fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// Name and attributes of a cookie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CookieConfig {
    /// Cookie name.
    pub(crate) name: String,
    /// `Domain` attribute; `None` (the default) makes a host-only cookie.
    pub(crate) domain: Option<String>,
    /// `Path` attribute, default `/`.
    pub(crate) path: String,
    /// `Secure` attribute, default on.
    pub(crate) secure: bool,
    /// `HttpOnly` attribute, default on.
    pub(crate) http_only: bool,
    /// `SameSite` attribute, default `Lax`.
    pub(crate) same_site: SameSite,
}

impl CookieConfig {
    /// Safe defaults for a cookie called `name`: host-only, `Path=/`, `Secure`, `HttpOnly`,
    /// `SameSite=Lax`.
    pub(crate) fn new(name: impl Into<String>) -> Self {
        CookieConfig {
            name: name.into(),
            domain: None,
            path: "/".into(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
        }
    }

    /// Checks the configuration: a valid cookie name, attribute values without separators,
    /// `SameSite=None` only with `Secure`, and the rules of the `__Host-` and `__Secure-`
    /// prefixes.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the rule broken and the offending value.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let name = &self.name;
        let refuse = |kind, setting, value: &str| Err(ConfigError::new(kind, setting, value));
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
        {
            return refuse(ConfigErrorKind::CookieName, "cookie name", name);
        }
        let bad_attr = |v: &str| v.bytes().any(|b| b == b';' || b.is_ascii_control());
        if bad_attr(&self.path) || !self.path.starts_with('/') {
            return refuse(ConfigErrorKind::CookiePath, "cookie path", &self.path);
        }
        if let Some(domain) = self
            .domain
            .as_deref()
            .filter(|d| d.is_empty() || bad_attr(d))
        {
            return refuse(ConfigErrorKind::CookieDomain, "cookie domain", domain);
        }
        if self.same_site == SameSite::None && !self.secure {
            return refuse(ConfigErrorKind::SameSiteNoneWithoutSecure, "cookie", name);
        }
        let host_rules_broken = !self.secure || self.domain.is_some() || self.path != "/";
        if (name.starts_with("__Host-") && host_rules_broken)
            || (name.starts_with("__Secure-") && !self.secure)
        {
            return refuse(ConfigErrorKind::CookiePrefix, "cookie name", name);
        }
        Ok(())
    }

    /// A `Set-Cookie` value for `value`; `max_age` `None` makes a browser-session cookie.
    pub(crate) fn set_cookie(&self, value: &str, max_age: Option<Duration>) -> String {
        let mut s = String::with_capacity(self.name.len() + value.len() + 80);
        s.push_str(&self.name);
        s.push('=');
        s.push_str(value);
        if let Some(age) = max_age {
            s.push_str("; Max-Age=");
            s.push_str(&age.as_secs().to_string());
        }
        self.push_attributes(&mut s);
        s
    }

    /// A `Set-Cookie` value that removes the cookie (same Path/Domain/Secure/HttpOnly).
    pub(crate) fn removal(&self) -> String {
        let mut s = format!(
            "{}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
            self.name
        );
        self.push_attributes(&mut s);
        s
    }

    fn push_attributes(&self, s: &mut String) {
        s.push_str("; Path=");
        s.push_str(&self.path);
        if let Some(d) = &self.domain {
            s.push_str("; Domain=");
            s.push_str(d);
        }
        if self.secure {
            s.push_str("; Secure");
        }
        if self.http_only {
            s.push_str("; HttpOnly");
        }
        s.push_str("; SameSite=");
        s.push_str(self.same_site.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Key;

    fn ring(byte: u8) -> KeyRing {
        KeyRing::single(Key::from_bytes(&[byte; 32]).unwrap())
    }

    /// Locks the wire format: a change here breaks every logged-in user.
    #[test]
    fn ticket_format_is_stable_with_a_fixed_key() {
        let id = SessionId::from_bytes([9; 32]);
        let t = encode_ticket(&ring(1), "session", &id);
        assert_eq!(t.len(), TICKET_LEN);
        assert_eq!(TICKET_LEN, 92);
        assert_eq!(
            t,
            "AdVRHTYJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCSPTnvqJ3ratutEq0KkzQaLhyVW_5BA7QO8NawudL5j3"
        );
        assert_eq!(decode_ticket(&ring(1), "session", &t).unwrap(), id);
    }

    #[test]
    fn tampered_truncated_and_junk_tickets_are_refused() {
        let r = ring(1);
        let t = encode_ticket(&r, "s", &SessionId::generate());
        assert_eq!(
            decode_ticket(&r, "s", &t[..91]),
            Err(TicketError::Malformed)
        );
        assert_eq!(
            decode_ticket(&r, "s", &format!("{t}A")),
            Err(TicketError::Malformed)
        );
        assert_eq!(decode_ticket(&r, "s", ""), Err(TicketError::Malformed));
        assert_eq!(
            decode_ticket(&r, "s", &"!".repeat(92)),
            Err(TicketError::Malformed)
        );
        assert_eq!(
            decode_ticket(&r, "s", &"A".repeat(5000)),
            Err(TicketError::Malformed)
        );
        // Flip one character in every position: never accepted.
        for i in 0..t.len() {
            let mut b = t.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let s = String::from_utf8(b).unwrap();
            assert!(decode_ticket(&r, "s", &s).is_err(), "position {i}");
        }
    }

    #[test]
    fn unknown_and_rotated_out_keys_are_refused() {
        let old = Key::from_bytes(&[1; 32]).unwrap();
        let new = Key::from_bytes(&[2; 32]).unwrap();
        let id = SessionId::generate();
        let t = encode_ticket(&KeyRing::single(old.clone()), "s", &id);
        let rotating = KeyRing::new(vec![new.clone(), old]).unwrap();
        assert_eq!(decode_ticket(&rotating, "s", &t).unwrap(), id);
        let rotated_out = KeyRing::single(new);
        assert_eq!(
            decode_ticket(&rotated_out, "s", &t),
            Err(TicketError::UnknownKey)
        );
        // New tickets are signed with the first key.
        let fresh = encode_ticket(&rotating, "s", &id);
        assert_eq!(decode_ticket(&rotated_out, "s", &fresh).unwrap(), id);
    }

    #[test]
    fn ticket_under_another_cookie_name_is_refused() {
        let r = ring(1);
        let t = encode_ticket(&r, "a", &SessionId::generate());
        assert_eq!(decode_ticket(&r, "b", &t), Err(TicketError::BadSignature));
    }

    #[test]
    fn cookie_attributes_default_to_safe() {
        let c = CookieConfig::new("session");
        assert_eq!(
            c.set_cookie("v", None),
            "session=v; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            c.set_cookie("v", Some(Duration::from_secs(60))),
            "session=v; Max-Age=60; Path=/; Secure; HttpOnly; SameSite=Lax"
        );
        assert!(c.removal().starts_with("session=; Max-Age=0;"));
        assert!(
            c.removal()
                .ends_with("Path=/; Secure; HttpOnly; SameSite=Lax")
        );
    }

    #[test]
    fn cookie_config_validation() {
        assert!(CookieConfig::new("session").validate().is_ok());
        assert!(CookieConfig::new("bad name").validate().is_err());
        assert!(CookieConfig::new("a;b").validate().is_err());
        let mut host = CookieConfig::new("__Host-s");
        assert!(host.validate().is_ok());
        host.domain = Some("example.com".into());
        assert!(host.validate().is_err());
        let mut none = CookieConfig::new("s");
        none.same_site = SameSite::None;
        none.secure = false;
        assert!(none.validate().is_err());
    }
}
