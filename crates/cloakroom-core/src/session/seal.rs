//! Session data sealed at rest: each value encrypted under a key only the session's ticket
//! can give.
//!
//! With [`SessionSettings::with_sealed_data`](super::SessionSettings::with_sealed_data) on,
//! the engine seals every data value as it is written and opens it right after the load, so
//! handlers and the request's [`Session`](super::Session) see plaintext, and the store (which
//! keys records by a hash of the id and never sees the id) sees only sealed values.
//!
//! - Cipher: AES-256-GCM-SIV with a random 96-bit nonce per value (nonce-misuse resistant:
//!   a repeated nonce would reveal only that two values are equal).
//! - Key: HKDF-SHA256 (expand, with a fixed label as info) from the raw 256-bit session id,
//!   which is already a uniformly random key, so the extract step is skipped (RFC 5869
//!   section 3.3): no key held by the servers opens a value, only the ticket of its own
//!   session does.
//! - Associated data: the record's store key and the field name, so a value copied into
//!   another session or another field does not open: the load fails as corrupt
//!   ([`store::ErrorKind::Corrupt`], a 503) and the moved value is never returned.
//! - Encoding: `~1` then unpadded base64url of `nonce | ciphertext | tag`. JSON text never
//!   starts with `~`, so plaintext and sealed values can share a store: turning sealing on
//!   reads the plaintext ones (sealed at their next write), turning it off still opens the
//!   sealed ones (they stay sealed until written again).
//!
//! ```
//! use cloakroom_core::session::{SessionId, seal};
//! use cloakroom_core::store::Record;
//!
//! // What a support tool can do with a ticket's id and the record it names, nothing more:
//! let id = SessionId::generate();
//! let mut record = Record::default();
//! record.data.insert("cart".into(), "[1,2]".into()); // plaintext values pass through
//! seal::open_record(&id, &id.key(), &mut record).unwrap();
//! assert_eq!(record.data["cart"], "[1,2]");
//! assert!(!seal::is_sealed(&record.data["cart"]));
//! ```

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use sha2::Sha256;

use super::{SessionConfig, SessionId, SessionKey};
use crate::store::{self, Fields, Patch, Record};

/// What a sealed value starts with: a marker JSON text cannot start with, then the version.
const PREFIX: &str = "~1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// The pseudo field name the user agent is sealed under (reserved: no data field has it).
pub(crate) const USER_AGENT_FIELD: &str = "__cr.user_agent";

/// Whether a stored value is sealed (as opposed to plaintext JSON text).
pub fn is_sealed(value: &str) -> bool {
    value.starts_with('~')
}

/// Opens the sealed values (and sealed user agent) of `record`, the record stored under
/// `key` for the session `id` (a ticket's id: see
/// [`TicketFormat::decode`](crate::cookie::TicketFormat::decode)). Plaintext values are left
/// as they are. This is all it takes, and all there is: without the ticket, nothing opens.
///
/// # Errors
/// [`store::ErrorKind::Corrupt`] when a sealed value does not open: altered, written under
/// another field or session, or of an unknown version. `record` is then partly opened; drop
/// it.
pub fn open_record(id: &SessionId, key: &SessionKey, record: &mut Record) -> store::Result<()> {
    let mut seal = None;
    let agent = record
        .meta
        .user_agent
        .as_mut()
        .map(|a| (USER_AGENT_FIELD, a));
    for (name, value) in record
        .data
        .iter_mut()
        .map(|(n, v)| (n.as_str(), v))
        .chain(agent)
    {
        if is_sealed(value) {
            let seal = seal.get_or_insert_with(|| Seal::new(id, *key));
            *value = seal.open(name, value)?;
        }
    }
    Ok(())
}

/// The cipher of one session, bound to its store key.
pub(crate) struct Seal {
    cipher: Aes256GcmSiv,
    key: SessionKey,
}

impl Seal {
    /// The seal of the session `id`, whose record is stored under `key`.
    pub(crate) fn new(id: &SessionId, key: SessionKey) -> Self {
        let hkdf = Hkdf::<Sha256>::from_prk(id.as_bytes())
            .expect("a 32-byte id is a valid HKDF-SHA256 pseudo-random key");
        let mut okm = [0u8; 32];
        hkdf.expand(b"cloakroom session data v1", &mut okm)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Seal {
            cipher: Aes256GcmSiv::new(&okm.into()),
            key,
        }
    }

    /// The associated data of the field `name`: the store key (fixed length), then the name.
    fn aad(&self, name: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(32 + name.len());
        aad.extend_from_slice(self.key.as_bytes());
        aad.extend_from_slice(name.as_bytes());
        aad
    }

    /// `json`, the value of the field `name`, sealed.
    ///
    /// # Panics
    /// When the OS random source fails (as [`SessionId::generate`] does).
    pub(crate) fn seal(&self, name: &str, json: &str) -> String {
        // The device's public key stays readable: the DBSC refresh endpoint reads it without
        // the session id (the browser sends only the handle), and it is no secret.
        if name == super::DEVICE_KEY_FIELD {
            return json.to_owned();
        }
        let mut nonce = Nonce::default();
        getrandom::fill(&mut nonce).expect("the OS random number generator failed");
        let aad = self.aad(name);
        let payload = Payload {
            msg: json.as_bytes(),
            aad: &aad,
        };
        let sealed = (self.cipher.encrypt(&nonce, payload))
            .expect("AES-256-GCM-SIV seals any value a session can hold");
        let mut raw = Vec::with_capacity(NONCE_LEN + sealed.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        let mut out = String::with_capacity(PREFIX.len() + (raw.len() * 4).div_ceil(3));
        out.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(raw, &mut out);
        out
    }

    /// The plaintext of `value`, the field `name`; plaintext values are returned as they are.
    ///
    /// # Errors
    /// [`store::ErrorKind::Corrupt`] for a sealed value that does not open here.
    pub(crate) fn open(&self, name: &str, value: &str) -> store::Result<String> {
        if !is_sealed(value) {
            return Ok(value.to_owned());
        }
        let corrupt = || {
            store::Error::new(
                store::ErrorKind::Corrupt,
                format!(
                    "sealed session value {name:?} does not open (altered, or moved from another \
                     field or session)"
                ),
            )
        };
        let raw = (value.strip_prefix(PREFIX))
            .and_then(|b64| URL_SAFE_NO_PAD.decode(b64).ok())
            .filter(|raw| raw.len() >= NONCE_LEN + TAG_LEN)
            .ok_or_else(corrupt)?;
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let aad = self.aad(name);
        let payload = Payload {
            msg: sealed,
            aad: &aad,
        };
        let plain =
            (self.cipher.decrypt(Nonce::from_slice(nonce), payload)).map_err(|_| corrupt())?;
        String::from_utf8(plain).map_err(|_| corrupt())
    }

    /// Every value of `data` sealed.
    pub(crate) fn seal_fields(&self, data: &Fields) -> Fields {
        (data.iter())
            .map(|(name, json)| (name.clone(), self.seal(name, json)))
            .collect()
    }
}

/// `record` as it goes into the store under `key` for `id`, when sealing (as `config` sets
/// it) changes it: its values (and user agent) sealed. `None`: stored as it is.
pub(super) fn sealed_record(
    config: &SessionConfig,
    id: &SessionId,
    key: &SessionKey,
    record: &Record,
) -> Option<Record> {
    let agent = (record.meta.user_agent.as_deref()).filter(|_| config.seal_user_agent);
    if !config.seal_data && agent.is_none() {
        return None;
    }
    let seal = Seal::new(id, *key);
    let mut sealed = record.clone();
    if config.seal_data {
        sealed.data = seal.seal_fields(&record.data);
    }
    if let Some(agent) = agent {
        sealed.meta.user_agent = Some(seal.seal(USER_AGENT_FIELD, agent));
    }
    Some(sealed)
}

/// Seals the values `patch` sets, when `config` seals data, for the record of `id` under
/// `key`.
pub(super) fn seal_patch(
    config: &SessionConfig,
    id: &SessionId,
    key: &SessionKey,
    patch: &mut Patch,
) {
    if config.seal_data && !patch.set.is_empty() {
        let seal = Seal::new(id, *key);
        for (name, value) in &mut patch.set {
            *value = seal.seal(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Locks the format: a fixed id, key and value open (values already in stores must keep
    /// opening after any change to this module).
    #[test]
    fn a_value_sealed_with_a_fixed_id_opens() {
        let id = SessionId::from_bytes([7; 32]);
        let sealed = Seal::new(&id, id.key()).seal("cart", "[1,2]");
        assert!(sealed.starts_with("~1") && !sealed.contains("[1,2]"));
        assert_eq!(sealed.len(), 2 + ((12 + 5 + 16) * 4_usize).div_ceil(3));
        let fixed = "~1idNWoS-Q1GQlTn0g3KOVfkXXfEhDUTBZzI7ISggcQH8V";
        let mut record = Record::default();
        record.data.insert("cart".to_owned(), fixed.to_owned());
        open_record(&id, &id.key(), &mut record).unwrap();
        assert_eq!(record.data["cart"], "[1,2]");
    }

    #[test]
    fn a_value_moved_to_another_field_or_session_or_altered_does_not_open() {
        let id = SessionId::generate();
        let seal = Seal::new(&id, id.key());
        let sealed = seal.seal("role", "\"user\"");
        assert_eq!(seal.open("role", &sealed).unwrap(), "\"user\"");
        let kind = |r: store::Result<String>| r.unwrap_err().kind();
        assert_eq!(kind(seal.open("admin", &sealed)), store::ErrorKind::Corrupt);
        let other = SessionId::generate();
        let elsewhere = Seal::new(&other, other.key());
        assert_eq!(
            kind(elsewhere.open("role", &sealed)),
            store::ErrorKind::Corrupt
        );
        // The right id under another store key (the associated data) does not open either.
        let rekeyed = Seal::new(&id, other.key());
        assert_eq!(
            kind(rekeyed.open("role", &sealed)),
            store::ErrorKind::Corrupt
        );
        for bad in ["~", "~1", "~1!!", "~2AAAA", &sealed[..sealed.len() - 1]] {
            assert_eq!(
                kind(seal.open("role", bad)),
                store::ErrorKind::Corrupt,
                "{bad}"
            );
        }
        let mut flipped = sealed.into_bytes();
        let last = flipped.len() - 3;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(kind(seal.open("role", &flipped)), store::ErrorKind::Corrupt);
    }

    #[test]
    fn plaintext_passes_through_and_each_seal_differs() {
        let id = SessionId::generate();
        let seal = Seal::new(&id, id.key());
        assert_eq!(seal.open("n", "1").unwrap(), "1");
        let data = Fields::from([("n".to_owned(), "1".to_owned())]);
        let (a, b) = (seal.seal_fields(&data), seal.seal_fields(&data));
        assert_ne!(a["n"], b["n"], "random nonces");
        assert!(is_sealed(&a["n"]));
    }
}
