//! Session ids (the secret in the ticket), session keys (what the store sees) and timestamps.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The length of a session id, in bytes (256 bits from the OS CSPRNG).
pub(crate) const ID_LEN: usize = 32;

/// The secret session id carried, signed, in the cookie. Never stored, never printed.
#[derive(Clone)]
pub struct SessionId([u8; ID_LEN]);

impl SessionId {
    /// A fresh random id.
    ///
    /// # Panics
    /// When the OS random source fails.
    pub fn generate() -> Self {
        Self::try_generate().expect("the OS random number generator failed")
    }

    /// A fresh random id, or the OS error.
    ///
    /// # Errors
    /// When the operating system's random source fails.
    pub(crate) fn try_generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; ID_LEN];
        getrandom::fill(&mut bytes)?;
        Ok(SessionId(bytes))
    }

    /// An id from raw bytes (tests and ticket decoding).
    pub fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
        SessionId(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// The key under which the store keeps this session: the first 128 bits of the SHA-256 of
    /// the id, so a dump of the store cannot be turned back into tickets.
    pub fn key(&self) -> SessionKey {
        let digest = Sha256::new()
            .chain_update(b"cloakroom session key\0")
            .chain_update(self.0)
            .finalize();
        SessionKey::from_digest(&digest.into())
    }
}

impl PartialEq for SessionId {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SessionId {}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(REDACTED)")
    }
}

/// The store's name for a session: 128 bits of a hash of its [`SessionId`]
/// ([`SessionId::key`]), unless an interop ticket format names its sessions otherwise
/// ([`TicketFormat::store_key`](crate::cookie::TicketFormat::store_key)).
///
/// It is also the session's public *handle* (shown on "your devices" pages and by the admin
/// CLI): knowing it lets an admin revoke the session but never use it, since a ticket needs
/// the id, which the hash does not reveal. 128 bits are enough for a lookup key of
/// server-generated ids; SECURITY.md says why.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey([u8; SessionKey::LEN]);

impl SessionKey {
    /// The length of a key, in bytes (128 bits).
    pub const LEN: usize = 16;

    /// The length of a handle ([`SessionKey::to_handle`]), in characters.
    pub(crate) const HANDLE_LEN: usize = 22;

    /// A key from its 16 raw bytes.
    pub fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        SessionKey(bytes)
    }

    /// A key from the first 16 bytes of a SHA-256 digest (the way every derived key is made).
    pub(crate) fn from_digest(digest: &[u8; 32]) -> Self {
        let mut out = [0u8; Self::LEN];
        out.copy_from_slice(&digest[..Self::LEN]);
        SessionKey(out)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// The key as 22 characters of unpadded base64url: the public handle and the text form
    /// stores use in their key names.
    pub fn to_handle(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Parses a handle made by [`SessionKey::to_handle`].
    pub fn from_handle(handle: &str) -> Option<Self> {
        if handle.len() != Self::HANDLE_LEN {
            return None;
        }
        // 22 characters carry 132 bits; the decoder refuses a last character whose 4 spare
        // bits are not zero, so each key has exactly one handle.
        let mut out = [0u8; Self::LEN];
        match URL_SAFE_NO_PAD.decode_slice(handle.as_bytes(), &mut out) {
            Ok(Self::LEN) => Some(SessionKey(out)),
            _ => None,
        }
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_handle())
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The handle is not a secret, but keep logs short.
        write!(f, "SessionKey({}…)", &self.to_handle()[..8])
    }
}

/// Milliseconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The time `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Now, by the system clock.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        Timestamp(ms as i64)
    }

    /// Milliseconds since the epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// This time plus `d` (saturating).
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }

    /// Time from `self` until `later`, zero if `later` is not later.
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(later.0.saturating_sub(self.0).max(0) as u64)
    }

    /// Seconds since the epoch, rounded down.
    pub fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.0)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, to the second.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.as_secs();
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        )
    }
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's algorithm.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_keys_are_hashes() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert_ne!(a, b);
        assert_ne!(a.key(), b.key());
        assert_eq!(a.key(), SessionId::from_bytes(*a.as_bytes()).key());
        assert_ne!(&a.key().as_bytes()[..], &a.as_bytes()[..]);
    }

    #[test]
    fn handle_round_trips_and_rejects_junk() {
        let key = SessionId::generate().key();
        let h = key.to_handle();
        assert_eq!(h.len(), SessionKey::HANDLE_LEN);
        assert_eq!(SessionKey::from_handle(&h), Some(key));
        assert_eq!(SessionKey::from_handle("../../etc/passwd"), None);
        assert_eq!(SessionKey::from_handle(&"A".repeat(23)), None);
        assert_eq!(SessionKey::from_handle(&"A".repeat(43)), None);
        assert_eq!(SessionKey::from_handle(&"!".repeat(22)), None);
        // Nonzero spare bits in the last character: not the handle of any key.
        assert_eq!(SessionKey::from_handle(&format!("{}B", &h[..21])), None);
    }

    #[test]
    fn key_is_the_first_half_of_the_hash() {
        // Locks the derivation: SHA-256("cloakroom session key\0" || id), first 16 bytes.
        let id = SessionId::from_bytes([0x41; 32]);
        let digest = Sha256::new()
            .chain_update(b"cloakroom session key\0")
            .chain_update([0x41; 32])
            .finalize();
        assert_eq!(&id.key().as_bytes()[..], &digest[..16]);
    }

    #[test]
    fn debug_hides_the_id() {
        let id = SessionId::from_bytes([0x41; 32]);
        assert_eq!(format!("{id:?}"), "SessionId(REDACTED)");
    }

    #[test]
    fn timestamps_print_as_rfc3339() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Timestamp(1_764_320_000_000).to_string(),
            "2025-11-28T08:53:20Z"
        );
    }
}
