//! Signing keys: a [`KeyRing`] holds several keys; the first signs, all verify.
//!
//! Rotation is adding a new key in front, waiting for the old tickets to expire, then
//! dropping the old key. Every key carries a short public id (derived from the key, so the
//! order of the ring does not matter) that tickets name, so verification costs one MAC.
//!
//! ```
//! use cloakroom_core::keys::{Key, KeyRing};
//! let new = Key::generate();
//! let old = Key::generate();
//! let ring = KeyRing::new(vec![new.clone(), old.clone()]).unwrap();
//! // The same ring from configuration (`CLOAKROOM_KEYS`): standard base64, comma-separated.
//! let list = format!("{},{}", new.to_base64(), old.to_base64());
//! assert_eq!(KeyRing::from_base64_list(&list).unwrap().keys().len(), 2);
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// The shortest key accepted, in bytes (OWASP: at least 256 bits of secret for HMAC-SHA256).
pub(crate) const MIN_KEY_LEN: usize = 32;

/// The length of a MAC, in bytes.
pub(crate) const MAC_LEN: usize = 32;

/// The length of a key id, in bytes.
pub(crate) const KEY_ID_LEN: usize = 4;

/// A key was refused at configuration time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is shorter than 32 bytes (256 bits).
    TooShort {
        /// How long the key was, in bytes.
        len: usize,
    },
    /// The key is not valid standard base64.
    BadBase64,
    /// A key ring needs at least one key.
    Empty,
    /// Two keys in the ring share an id (the same key given twice).
    Duplicate,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::TooShort { len } => write!(
                f,
                "key is {len} bytes; keys must be at least {MIN_KEY_LEN} random bytes"
            ),
            KeyError::BadBase64 => f.write_str("key is not valid standard base64"),
            KeyError::Empty => f.write_str("a key ring needs at least one key"),
            KeyError::Duplicate => f.write_str("the same key appears twice in the key ring"),
        }
    }
}

impl std::error::Error for KeyError {}

/// One secret key. Its `Debug` output never shows the secret.
#[derive(Clone)]
pub struct Key {
    secret: Box<[u8]>,
    id: [u8; KEY_ID_LEN],
    /// HMAC state with the key already absorbed: cloning it saves two compressions per MAC.
    mac: HmacSha256,
}

impl Key {
    /// Makes a key from raw bytes.
    ///
    /// # Errors
    /// [`KeyError::TooShort`] when `secret` has fewer than 32 bytes.
    pub fn from_bytes(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort { len: secret.len() });
        }
        let digest = Sha256::new()
            .chain_update(b"cloakroom key id\0")
            .chain_update(secret)
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        let mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
        Ok(Key {
            secret: secret.into(),
            id,
            mac,
        })
    }

    /// Makes a key from standard base64 text (as printed by `cloakroom keygen`).
    ///
    /// # Errors
    /// [`KeyError::BadBase64`] or [`KeyError::TooShort`].
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| KeyError::BadBase64)?;
        Self::from_bytes(&bytes)
    }

    /// A fresh 32-byte key from the operating system's CSPRNG.
    ///
    /// # Panics
    /// When the operating system has no random source; see [`Key::try_generate`].
    pub fn generate() -> Self {
        Self::try_generate().expect("the OS random number generator failed")
    }

    /// A fresh 32-byte key from the operating system's CSPRNG, or the OS error.
    ///
    /// # Errors
    /// When the operating system's random source fails.
    pub fn try_generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self::from_bytes(&bytes).expect("32 bytes is long enough"))
    }

    /// The key as standard base64 text, for configuration files. Handle with care.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.secret)
    }

    /// The key's public id (a hash of the key; reveals nothing of it).
    pub(crate) fn id(&self) -> [u8; KEY_ID_LEN] {
        self.id
    }

    /// MAC with the context given in pieces (concatenated), so callers need not allocate.
    fn mac_parts(&self, context: &[&[u8]], message: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = self.mac.clone();
        // Length-prefix the context so (context, message) pairs cannot collide.
        let len: usize = context.iter().map(|c| c.len()).sum();
        mac.update(&(len as u32).to_be_bytes());
        for part in context {
            mac.update(part);
        }
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &hex(&self.id))
            .field("secret", &"REDACTED")
            .finish()
    }
}

/// Several keys: the first signs, every one verifies.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<Key>,
}

impl KeyRing {
    /// A ring of `keys`; the first one signs.
    ///
    /// # Errors
    /// [`KeyError::Empty`] for no keys, [`KeyError::Duplicate`] for a key given twice.
    pub fn new(keys: Vec<Key>) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        for (i, a) in keys.iter().enumerate() {
            if keys[..i].iter().any(|b| b.id == a.id) {
                return Err(KeyError::Duplicate);
            }
        }
        Ok(KeyRing { keys })
    }

    /// A ring of one key.
    pub fn single(key: Key) -> Self {
        KeyRing { keys: vec![key] }
    }

    /// Parses a comma-separated list of standard base64 keys (the `CLOAKROOM_KEYS` format).
    ///
    /// # Errors
    /// Any [`KeyError`] of any key, or [`KeyError::Empty`].
    pub fn from_base64_list(list: &str) -> Result<Self, KeyError> {
        let keys = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Key::from_base64)
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys)
    }

    /// The key that signs.
    pub(crate) fn signing_key(&self) -> &Key {
        &self.keys[0]
    }

    /// All keys, the signing key first.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The key with this id, if the ring has it.
    pub(crate) fn find(&self, id: [u8; KEY_ID_LEN]) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// MAC of `message` under the key with id `key_id`, or `None` when the ring lacks it; the
    /// context given as concatenated pieces.
    pub(crate) fn sign_with_parts(
        &self,
        key_id: [u8; KEY_ID_LEN],
        context: &[&[u8]],
        message: &[u8],
    ) -> Option<[u8; MAC_LEN]> {
        self.find(key_id).map(|k| k.mac_parts(context, message))
    }

    /// MAC of `message` under the signing key, the context given as concatenated pieces.
    pub(crate) fn sign_parts(&self, context: &[&[u8]], message: &[u8]) -> [u8; MAC_LEN] {
        self.keys[0].mac_parts(context, message)
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing").field("keys", &self.keys).finish()
    }
}

/// Lower-case hex of `bytes` (constant time: some are secrets).
pub(crate) fn hex(bytes: &[u8]) -> String {
    base16ct::lower::encode_string(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_key_is_a_config_error() {
        assert_eq!(
            Key::from_bytes(&[7; 31]).unwrap_err(),
            KeyError::TooShort { len: 31 }
        );
        assert!(Key::from_bytes(&[7; 32]).is_ok());
        assert_eq!(
            Key::from_base64("not base64!").unwrap_err(),
            KeyError::BadBase64
        );
    }

    #[test]
    fn first_key_signs_every_key_verifies() {
        let a = Key::from_bytes(&[1; 32]).unwrap();
        let b = Key::from_bytes(&[2; 32]).unwrap();
        let old = KeyRing::single(b.clone());
        let rotated = KeyRing::new(vec![a.clone(), b.clone()]).unwrap();
        let mac = old.sign_parts(&[b"c"], b"m");
        assert_eq!(rotated.sign_with_parts(b.id(), &[b"c"], b"m"), Some(mac));
        let by_a = KeyRing::single(a.clone()).sign_parts(&[b"c"], b"m");
        assert_eq!(rotated.sign_parts(&[b"c"], b"m"), by_a);
        assert_ne!(by_a, mac);
        assert_eq!(
            KeyRing::single(a).sign_with_parts(b.id(), &[b"c"], b"m"),
            None
        );
        assert_ne!(rotated.sign_with_parts(b.id(), &[b"d"], b"m"), Some(mac));
    }

    #[test]
    fn context_and_message_do_not_run_together() {
        let ring = KeyRing::single(Key::from_bytes(&[3; 32]).unwrap());
        assert_ne!(
            ring.sign_parts(&[b"ab"], b"c"),
            ring.sign_parts(&[b"a"], b"bc")
        );
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let key = Key::from_bytes(&[0xAB; 32]).unwrap();
        let ring = KeyRing::single(key.clone());
        for text in [format!("{key:?}"), format!("{ring:?}")] {
            assert!(text.contains("REDACTED"));
            assert!(!text.contains("abab") && !text.contains("171"));
            assert!(!text.contains(&key.to_base64()));
        }
    }

    #[test]
    fn duplicates_and_empty_rings_are_refused() {
        let a = Key::from_bytes(&[1; 32]).unwrap();
        assert_eq!(KeyRing::new(vec![]).unwrap_err(), KeyError::Empty);
        assert_eq!(
            KeyRing::new(vec![a.clone(), a]).unwrap_err(),
            KeyError::Duplicate
        );
    }
}
