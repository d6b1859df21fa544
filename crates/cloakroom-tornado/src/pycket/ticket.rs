//! pycket's ticket: the `PYCKET_ID` cookie holds a Tornado signed value of a uuid4 text,
//! and the Redis key is that uuid. Cloakroom's own tickets (the core's default format) never
//! show the store the raw id;
//! this format must, through the core's hook for it,
//! [`TicketFormat::store_key`] (see the [crate docs](crate#the-store-key-where-this-crate-departs-from-the-core)).

use crate::signed_value::{
    CreateError, DecodeError, TornadoSecret, Version, create_signed_value, decode_signed_value,
};
use cloakroom_core::cookie::{TicketError, TicketFormat};
use cloakroom_core::session::{SessionId, SessionKey, Timestamp};

/// pycket's ticket: the cookie (`PYCKET_ID`) holds a Tornado v2 signed value of a uuid4
/// text, and the store key is that uuid itself (Tornado reads the record by it).
///
/// Its [`store_key`](TicketFormat::store_key) is the uuid itself: the uuid's 16 bytes,
/// which [`pycket_uuid`] turns back into the key text. Unlike
/// Cloakroom's own tickets, the store sees the raw id here: pycket's format demands it. The
/// key ring the core passes to `encode` and `decode` is not used: Tornado's `cookie_secret`
/// signs the cookie.
#[derive(Clone, Debug)]
pub struct PycketTicket {
    secret: TornadoSecret,
    max_age_days: f64,
}

impl PycketTicket {
    /// Tickets signed with the Tornado app's `cookie_secret`, accepted for `max_age_days`
    /// (Tornado's `get_secure_cookie` default is 31).
    ///
    /// # Errors
    /// A secret that cannot sign v2 values: a versioned one whose `current` version has no
    /// secret ([`CreateError::MissingCurrentKey`]), which could sign no ticket.
    pub fn new(secret: TornadoSecret, max_age_days: f64) -> Result<Self, CreateError> {
        create_signed_value(&secret, "", b"", Version::V2, 0)?;
        Ok(PycketTicket {
            secret,
            max_age_days,
        })
    }
}

/// The uuid text (lower-case, hyphenated) of a session key's 16 bytes: the Redis key of its
/// session.
pub fn pycket_uuid(key: &SessionKey) -> String {
    let h: String = key.as_bytes().iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The session key of a uuid text (lower-case, hyphenated), as [`pycket_uuid`] makes it;
/// `None` for any other text.
pub fn pycket_key(uuid: &str) -> Option<SessionKey> {
    let b = uuid.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let digits: String = uuid.chars().filter(|&c| c != '-').collect();
    if digits.len() != 32
        || !digits
            .bytes()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let mut out = [0u8; SessionKey::LEN];
    for (i, pair) in digits.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(SessionKey::from_bytes(out))
}

impl TicketFormat for PycketTicket {
    fn generate(&self) -> SessionId {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b[..16]).expect("the OS random number generator failed");
        b[6] = (b[6] & 0x0f) | 0x40; // version 4
        b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
        SessionId::from_bytes(b)
    }

    /// The uuid: the id's first 16 bytes (the rest of a pycket id is zero).
    fn store_key(&self, id: &SessionId) -> SessionKey {
        let mut key = [0u8; SessionKey::LEN];
        key.copy_from_slice(&id.as_bytes()[..SessionKey::LEN]);
        SessionKey::from_bytes(key)
    }

    /// Tornado reads pycket's records: their values stay plaintext.
    fn sealable(&self) -> bool {
        false
    }

    fn encode(&self, cookie_name: &str, id: &SessionId) -> String {
        let uuid = pycket_uuid(&self.store_key(id));
        let now = Timestamp::now().as_secs();
        create_signed_value(&self.secret, cookie_name, uuid.as_bytes(), Version::V2, now)
            .expect("checked by PycketTicket::new: the secret signs v2 values")
    }

    fn decode(&self, cookie_name: &str, value: &str) -> Result<SessionId, TicketError> {
        let now = Timestamp::now().as_secs();
        let raw = decode_signed_value(&self.secret, cookie_name, value, self.max_age_days, now)
            .map_err(|e| match e {
                DecodeError::BadSignature | DecodeError::WrongName => TicketError::BadSignature,
                DecodeError::UnknownKeyVersion => TicketError::UnknownKey,
                _ => TicketError::Malformed,
            })?;
        let text = std::str::from_utf8(&raw).map_err(|_| TicketError::Malformed)?;
        let key = pycket_key(text).ok_or(TicketError::Malformed)?;
        let mut id = [0u8; 32];
        id[..SessionKey::LEN].copy_from_slice(key.as_bytes());
        Ok(SessionId::from_bytes(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloakroom_core::keys::{Key, KeyRing};

    /// Tornado reads pycket's values: sealing them is refused, in either order of the settings.
    #[test]
    fn sealed_data_is_refused_with_pycket_tickets() {
        use cloakroom_core::session::SessionSettings;
        use cloakroom_core::{ConfigErrorKind, MemoryStore};
        let ticket =
            || std::sync::Arc::new(PycketTicket::new(TornadoSecret::single("s"), 31.0).unwrap());
        let settings =
            || SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate()));
        let sealed_first = settings().with_sealed_data(true).unwrap();
        let err = sealed_first.with_ticket_format(ticket()).unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::Sealing);
        let pycket_first = settings().with_ticket_format(ticket()).unwrap();
        let err = pycket_first.with_sealed_data(true).unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::Sealing);
    }

    #[test]
    fn pycket_tickets_round_trip_as_uuid4() {
        let f = PycketTicket::new(TornadoSecret::single("s"), 31.0).unwrap();
        let id = f.generate();
        let uuid = pycket_uuid(&f.store_key(&id));
        assert_eq!(uuid.len(), 36);
        assert_eq!(&uuid[14..15], "4");
        assert!(matches!(&uuid[19..20], "8" | "9" | "a" | "b"));
        let cookie = f.encode("PYCKET_ID", &id);
        assert!(cookie.starts_with("2|1:0|10:"));
        assert_eq!(f.decode("PYCKET_ID", &cookie).unwrap(), id);
        assert!(f.decode("OTHER", &cookie).is_err());
        assert_eq!(pycket_key(&uuid), Some(f.store_key(&id)));
        assert_eq!(pycket_key(&uuid.to_uppercase()), None);
        assert_eq!(pycket_key("../../../../etc/passwd-0000-0000-0000"), None);
    }

    /// Regression: a versioned secret whose `current` version has no secret made `encode`
    /// panic on every new session; it is refused when the ticket format is made.
    #[test]
    fn a_versioned_secret_without_its_current_version_is_refused() {
        let versioned = |current| TornadoSecret::Versioned {
            secrets: [(1, b"one".to_vec())].into(),
            current,
        };
        assert_eq!(
            PycketTicket::new(versioned(2), 31.0).err(),
            Some(CreateError::MissingCurrentKey)
        );
        let f = PycketTicket::new(versioned(1), 31.0).unwrap();
        let id = f.generate();
        let cookie = f.encode("PYCKET_ID", &id);
        assert_eq!(f.decode("PYCKET_ID", &cookie).unwrap(), id);
    }
}
