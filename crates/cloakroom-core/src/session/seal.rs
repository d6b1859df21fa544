//! Session data sealed at rest: each value encrypted under a key only the session's ticket
//! can give.
//!
//! With the `seal` feature and `SessionSettings::with_sealed_data` on, the engine seals
//! every data value as it is written and opens it right after the load, so handlers and the
//! request's [`Session`](super::Session) see plaintext, and the store (which keys records by
//! a hash of the id and never sees the id) sees only sealed values. Without the feature,
//! sealing cannot be configured and a sealed value found in the store reads as corrupt.
//!
//! - Key: one SHA-256 over `00 00 00 01 | id | "cloakroom seal v2"`, the one-step key
//!   derivation of NIST SP 800-56C (rev. 2, section 4.1, option 1: H(counter | Z |
//!   FixedInfo)) with one 32-byte output block. Its input is the raw 256-bit session id, a
//!   uniformly random secret that only the ticket carries (the store holds a different hash
//!   of it), so no key held by the servers opens a value, only the ticket of its own session
//!   does. No extract step is needed (the id already is a uniform key, as HKDF's RFC 5869
//!   section 3.3 says), and an HMAC adds nothing over a hash here: HMAC guards against
//!   length extension when the key precedes attacker-chosen data, and the only variable
//!   input is the secret itself; the fixed label separates this use of the id from its other
//!   hashes (the store key, the ticket MAC). The 53 bytes fit one SHA-256 block: one
//!   compression per request that opens or seals, where HKDF-Expand cost four.
//! - Cipher: AES-256-GCM (from `ring`: its AES-NI/VAES and carry-less multiply code seals
//!   1 KB in about a third of the time of the portable RustCrypto crates) with a random
//!   96-bit nonce per value. Every session has its own key and seals few values (one per
//!   write of a field), so the random-nonce bound (NIST SP 800-38D section 8.3: at most 2^32
//!   messages per key; a nonce collision among q values has a chance below q^2 / 2^97) is
//!   never approached. Nonces come from `rand`'s thread-local
//!   CSPRNG (ChaCha12 seeded from the OS and reseeded every 64 KiB of output), since the
//!   OS's own generator costs about 5 ns a byte (60 ns a nonce, where `rand` takes 20); a
//!   process must not fork after it has sealed (a child would repeat its parent's stream
//!   until the next reseed; async servers do not fork).
//! - One request derives its key once: the key derived to open the loaded record seals the
//!   request's writes too.
//! - Associated data: the record's store key and the field name, so a value copied into
//!   another session or another field does not open: the load fails as corrupt
//!   ([`store::ErrorKind::Corrupt`], a 503) and the moved value is never returned.
//! - Encoding: `~2` then unpadded base64url of `nonce | ciphertext | tag`. JSON text never
//!   starts with `~`, so plaintext and sealed values can share a store: turning sealing on
//!   reads the plaintext ones (sealed at their next write), turning it off still opens the
//!   sealed ones (they stay sealed until written again). `~2` is the only version that
//!   opens (the format changed before any release; any other is corrupt).
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

use std::fmt;

use base64_simd::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{SessionConfig, SessionId, SessionKey};
use crate::store::{self, Fields, Patch, Record};

/// What a sealed value starts with: a marker JSON text cannot start with, then the version.
const PREFIX: &str = "~2";
/// The key derivation's FixedInfo (17 bytes: with the counter and the id, one SHA-256 block).
const LABEL: &[u8] = b"cloakroom seal v2";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Field names up to this long build their associated data on the stack.
const SHORT_NAME: usize = 64;
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
    open_record_with(&mut None, id, key, record)
}

/// [`open_record`] with the request's derived key in `derived`: derived there at the first
/// sealed value (and kept for the request's writes), or taken from there when it is the one
/// of `key`.
pub(super) fn open_record_with(
    derived: &mut Option<SealKey>,
    id: &SessionId,
    key: &SessionKey,
    record: &mut Record,
) -> store::Result<()> {
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
            let seal = match &mut seal {
                Some(seal) => seal,
                none => none
                    .insert(Seal::with(SealKey::cached(derived, id, key)).ok_or_else(no_cipher)?),
            };
            seal.open_in_place(name, value)?;
        }
    }
    Ok(())
}

/// A sealed value found by a build without the `seal` feature.
fn no_cipher() -> store::Error {
    store::Error::new(
        store::ErrorKind::Corrupt,
        "a sealed session value, and this build cannot open it (built without the `seal` \
         feature)",
    )
}

/// The key one session's values are sealed under (derived from its id), and the store key
/// of its record.
#[derive(Clone, Copy)]
pub(crate) struct SealKey {
    derived: [u8; 32],
    key: SessionKey,
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(REDACTED)")
    }
}

impl SealKey {
    /// The key of the session `id`, whose record is stored under `key`.
    fn new(id: &SessionId, key: SessionKey) -> Self {
        let derived = Sha256::new()
            .chain_update(1u32.to_be_bytes())
            .chain_update(id.as_bytes())
            .chain_update(LABEL)
            .finalize()
            .into();
        SealKey { derived, key }
    }

    /// The key in `slot` if it is the one of the record under `key` (a store key is a hash
    /// of its id), else the key of `id` and `key`, left in `slot`.
    pub(super) fn cached(slot: &mut Option<SealKey>, id: &SessionId, key: &SessionKey) -> Self {
        slot.take_if(|k| k.key != *key);
        *slot.get_or_insert_with(|| SealKey::new(id, *key))
    }
}

/// AES-256-GCM from `ring` (with the `seal` feature).
#[cfg(feature = "seal")]
mod aead {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

    /// One session's AES-256-GCM key, expanded.
    pub(super) struct Cipher(LessSafeKey);

    impl Cipher {
        /// Always `Some` in this build.
        pub(super) fn new(key: &[u8; 32]) -> Option<Self> {
            let key = UnboundKey::new(&AES_256_GCM, key).expect("an AES-256 key is 32 bytes");
            Some(Cipher(LessSafeKey::new(key)))
        }

        /// Encrypts `msg` in place; returns the tag.
        pub(super) fn seal(&self, nonce: [u8; 12], aad: &[u8], msg: &mut [u8]) -> [u8; 16] {
            let nonce = Nonce::assume_unique_for_key(nonce);
            let tag = (self.0).seal_in_place_separate_tag(nonce, Aad::from(aad), msg);
            let tag = tag.expect("AES-256-GCM seals any value a session can hold");
            tag.as_ref().try_into().expect("a GCM tag is 16 bytes")
        }

        /// Decrypts `sealed` (ciphertext, then tag) in place; `None` if it does not open.
        pub(super) fn open(&self, nonce: &[u8], aad: &[u8], sealed: &mut [u8]) -> Option<()> {
            let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
            (self.0).open_in_place(nonce, Aad::from(aad), sealed).ok()?;
            Some(())
        }
    }
}

/// No cipher in a build without the `seal` feature: sealing cannot be configured (the
/// settings have no such setter) and a sealed value in the store does not open.
#[cfg(not(feature = "seal"))]
mod aead {
    /// Never built: [`Cipher::new`] has nothing to build it with.
    pub(super) struct Cipher(());

    #[expect(
        clippy::unused_self,
        reason = "the signatures of the `seal` build's cipher"
    )]
    impl Cipher {
        pub(super) fn new(_: &[u8; 32]) -> Option<Self> {
            None
        }

        pub(super) fn seal(&self, _: [u8; 12], _: &[u8], _: &mut [u8]) -> [u8; 16] {
            unreachable!("no cipher exists without the `seal` feature")
        }

        pub(super) fn open(&self, _: &[u8], _: &[u8], _: &mut [u8]) -> Option<()> {
            unreachable!("no cipher exists without the `seal` feature")
        }
    }
}

/// The cipher of one session, bound to its store key.
pub(crate) struct Seal {
    cipher: aead::Cipher,
    key: SessionKey,
}

impl Seal {
    /// The seal of `k`'s session: `None` in a build without the `seal` feature.
    fn with(k: SealKey) -> Option<Self> {
        let cipher = aead::Cipher::new(&k.derived)?;
        Some(Seal { cipher, key: k.key })
    }

    /// The seal of `k`'s session, for a write: reached only when the settings seal, which
    /// they can only with the `seal` feature.
    fn for_write(k: SealKey) -> Self {
        Seal::with(k).expect("sealing is configured only in builds with the `seal` feature")
    }

    /// The seal of the session `id`, whose record is stored under `key`.
    pub(crate) fn new(id: &SessionId, key: SessionKey) -> Self {
        Seal::for_write(SealKey::new(id, key))
    }

    /// Runs `f` on the associated data of the field `name`: the store key (fixed length),
    /// then the name.
    fn with_aad<R>(&self, name: &str, f: impl FnOnce(&[u8]) -> R) -> R {
        let name = name.as_bytes();
        if name.len() <= SHORT_NAME {
            const K: usize = SessionKey::LEN;
            let mut aad = [0u8; K + SHORT_NAME];
            aad[..K].copy_from_slice(self.key.as_bytes());
            aad[K..K + name.len()].copy_from_slice(name);
            f(&aad[..K + name.len()])
        } else {
            f(&[self.key.as_bytes(), name].concat())
        }
    }

    /// `json`, the value of the field `name`, sealed.
    ///
    /// # Panics
    /// When the OS random source fails to seed the nonce generator (as
    /// [`SessionId::generate`] does).
    pub(crate) fn seal(&self, name: &str, json: &str) -> String {
        // The device's public key stays readable: the DBSC refresh endpoint reads it without
        // the session id (the browser sends only the handle), and it is no secret.
        if name == super::DEVICE_KEY_FIELD {
            return json.to_owned();
        }
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut raw = Vec::with_capacity(NONCE_LEN + json.len() + TAG_LEN);
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(json.as_bytes());
        let tag = self.with_aad(name, |aad| {
            (self.cipher).seal(nonce, aad, &mut raw[NONCE_LEN..])
        });
        raw.extend_from_slice(&tag);
        let mut out =
            String::with_capacity(PREFIX.len() + URL_SAFE_NO_PAD.encoded_length(raw.len()));
        out.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_append(&raw, &mut out);
        out
    }

    /// Opens `value`, the field `name`, where it lies: decoded, opened and handed back in
    /// its own buffer, no allocation. Plaintext values are left as they are.
    ///
    /// # Errors
    /// [`store::ErrorKind::Corrupt`] for a sealed value that does not open here (`value` is
    /// then emptied).
    pub(crate) fn open_in_place(&self, name: &str, value: &mut String) -> store::Result<()> {
        if !is_sealed(value) {
            return Ok(());
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
        if !value.starts_with(PREFIX) {
            return Err(corrupt());
        }
        let mut bytes = std::mem::take(value).into_bytes();
        let raw =
            (URL_SAFE_NO_PAD.decode_inplace(&mut bytes[PREFIX.len()..])).map_err(|_| corrupt())?;
        let Some(text_len) = raw.len().checked_sub(NONCE_LEN + TAG_LEN) else {
            return Err(corrupt());
        };
        let (nonce, sealed) = raw.split_at_mut(NONCE_LEN);
        (self.with_aad(name, |aad| (self.cipher).open(nonce, aad, sealed))).ok_or_else(corrupt)?;
        let start = PREFIX.len() + NONCE_LEN;
        bytes.copy_within(start..start + text_len, 0);
        bytes.truncate(text_len);
        *value = String::from_utf8(bytes).map_err(|_| corrupt())?;
        Ok(())
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
    let data = if config.seal_data {
        seal.seal_fields(&record.data)
    } else {
        record.data.clone()
    };
    let mut sealed = Record {
        data,
        meta: record.meta.clone(),
    };
    if let Some(agent) = agent {
        sealed.meta.user_agent = Some(seal.seal(USER_AGENT_FIELD, agent));
    }
    Some(sealed)
}

/// Seals the values `patch` sets, when `config` seals data, for the record of `id` under
/// `key`, with the request's derived key in `derived` (derived there if it is not yet).
pub(super) fn seal_patch(
    config: &SessionConfig,
    derived: &mut Option<SealKey>,
    (id, key): (&SessionId, &SessionKey),
    patch: &mut Patch,
) {
    if config.seal_data && !patch.set.is_empty() {
        let seal = Seal::for_write(SealKey::cached(derived, id, key));
        for (name, value) in &mut patch.set {
            *value = seal.seal(name, value);
        }
    }
}

#[cfg(all(test, feature = "seal"))]
mod tests {
    use super::*;

    impl Seal {
        /// The plaintext of `value`, the field `name`, opened in a copy.
        fn open(&self, name: &str, value: &str) -> store::Result<String> {
            let mut value = value.to_owned();
            self.open_in_place(name, &mut value)?;
            Ok(value)
        }
    }

    /// Locks the format: a fixed id, key and value open (values already in stores must keep
    /// opening after any change to this module; a change of format bumps the version).
    #[test]
    fn a_value_sealed_with_a_fixed_id_opens() {
        let id = SessionId::from_bytes([7; 32]);
        let sealed = Seal::new(&id, id.key()).seal("cart", "[1,2]");
        assert!(sealed.starts_with("~2") && !sealed.contains("[1,2]"));
        assert_eq!(sealed.len(), 2 + ((12 + 5 + 16) * 4_usize).div_ceil(3));
        let fixed = "~2Y9T2mL1CjownscE2K8NhFdCCql8S1lWU1rlML7IrJTCj";
        let mut record = Record::default();
        record.data.insert("cart".to_owned(), fixed.to_owned());
        open_record(&id, &id.key(), &mut record).unwrap();
        assert_eq!(record.data["cart"], "[1,2]");
        // The first format (`~1`, AES-256-GCM-SIV under an HKDF key) was never released and
        // does not open: one version.
        let first = "~1idNWoS-Q1GQlTn0g3KOVfkXXfEhDUTBZzI7ISggcQH8V";
        record.data.insert("cart".to_owned(), first.to_owned());
        let refused = open_record(&id, &id.key(), &mut record).unwrap_err();
        assert_eq!(refused.kind(), store::ErrorKind::Corrupt);
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
        for bad in ["~", "~2", "~2!!", "~3AAAA", &sealed[..sealed.len() - 1]] {
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

    /// The request's derived key is reused only for the record it was derived for.
    #[test]
    fn a_cached_key_serves_only_its_own_record() {
        let (id, other) = (SessionId::generate(), SessionId::generate());
        let mut slot = None;
        let sealed = Seal::for_write(SealKey::cached(&mut slot, &id, &id.key())).seal("n", "1");
        assert!(slot.is_some_and(|k| k.key == id.key()));
        let again = Seal::for_write(SealKey::cached(&mut slot, &id, &id.key()));
        assert_eq!(again.open("n", &sealed).unwrap(), "1");
        let elsewhere = Seal::for_write(SealKey::cached(&mut slot, &other, &other.key()));
        let moved = elsewhere.open("n", &sealed);
        assert_eq!(moved.unwrap_err().kind(), store::ErrorKind::Corrupt);
        assert!(slot.is_some_and(|k| k.key == other.key()));
    }
}
