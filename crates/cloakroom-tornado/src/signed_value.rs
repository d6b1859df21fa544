//! Tornado's signed values (`set_secure_cookie` / `get_secure_cookie`), both formats, as
//! Tornado 6 makes and checks them (`tornado/web.py`: `create_signed_value`,
//! `decode_signed_value`):
//!
//! - v1: `base64(value)|timestamp|hex(HMAC-SHA1(secret, name + base64(value) + timestamp))`
//! - v2: `2|len:key_version|len:timestamp|len:name|len:base64(value)|hex(HMAC-SHA256(secret,
//!   everything before the signature, final '|' included))`, `len:` being the decimal length
//!   of the field and a colon.
//!
//! ```
//! use cloakroom_tornado::signed_value::{TornadoSecret, create_signed_value, decode_signed_value, Version};
//! let secret = TornadoSecret::single("cookie-secret");
//! let v = create_signed_value(&secret, "PYCKET_ID", b"0ca7a58c", Version::V2, 1_700_000_000).unwrap();
//! assert_eq!(decode_signed_value(&secret, "PYCKET_ID", &v, 31.0, 1_700_000_100).unwrap(), b"0ca7a58c");
//! assert!(decode_signed_value(&secret, "other", &v, 31.0, 1_700_000_100).is_err());
//! ```

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The signed-value format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HMAC-SHA1, no name or key version in the value.
    V1,
    /// HMAC-SHA256 with length-prefixed fields (Tornado's default since 3.2).
    V2,
}

/// Tornado's `cookie_secret`: one secret, or a `{key_version: secret}` map with the version
/// that signs.
#[derive(Clone)]
pub enum TornadoSecret {
    /// `cookie_secret = "..."`.
    Single(Vec<u8>),
    /// `cookie_secret = {1: "...", 2: "..."}` with `key_version = current`.
    Versioned {
        /// Every secret by version.
        secrets: BTreeMap<u64, Vec<u8>>,
        /// The version new values are signed with.
        current: u64,
    },
}

impl TornadoSecret {
    /// One secret.
    pub fn single(secret: impl AsRef<[u8]>) -> Self {
        TornadoSecret::Single(secret.as_ref().to_vec())
    }

    fn for_version(&self, version: u64) -> Option<&[u8]> {
        match self {
            TornadoSecret::Single(s) => Some(s),
            TornadoSecret::Versioned { secrets, .. } => secrets.get(&version).map(Vec::as_slice),
        }
    }
}

impl fmt::Debug for TornadoSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TornadoSecret::Single(_) => f.write_str("TornadoSecret::Single(REDACTED)"),
            TornadoSecret::Versioned { secrets, current } => f
                .debug_struct("TornadoSecret::Versioned")
                .field("versions", &secrets.keys().collect::<Vec<_>>())
                .field("current", current)
                .finish(),
        }
    }
}

/// Why a signed value was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Empty, unparsable, or an unknown version.
    Malformed,
    /// The signature does not match.
    BadSignature,
    /// Signed for another name.
    WrongName,
    /// Older than `max_age_days`.
    Expired,
    /// v1 timestamp too far in the future, or with a leading zero (Tornado's tamper checks).
    Tampered,
    /// Signed with a key version the secret map lacks.
    UnknownKeyVersion,
    /// The value is not valid base64.
    BadValue,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::Malformed => "malformed signed value",
            DecodeError::BadSignature => "invalid signature",
            DecodeError::WrongName => "signed for another name",
            DecodeError::Expired => "expired signed value",
            DecodeError::Tampered => "tampered timestamp",
            DecodeError::UnknownKeyVersion => "unknown key version",
            DecodeError::BadValue => "value is not base64",
        })
    }
}

impl std::error::Error for DecodeError {}

/// A value could not be signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CreateError {
    /// v1 cannot use a versioned secret map (Tornado asserts the same).
    V1WithVersionedSecret,
    /// The current key version is missing from the map.
    MissingCurrentKey,
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CreateError::V1WithVersionedSecret => "v1 signed values need a single secret",
            CreateError::MissingCurrentKey => "the current key version has no secret",
        })
    }
}

impl std::error::Error for CreateError {}

fn hex(bytes: &[u8]) -> String {
    base16ct::lower::encode_string(bytes)
}

fn sig_v1(secret: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    hex(&mac.finalize().into_bytes())
}

fn sig_v2(secret: &[u8], signed: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(signed);
    hex(&mac.finalize().into_bytes())
}

/// Signs `value` under `name` at `now` (seconds since the epoch), as
/// `create_signed_value(secret, name, value, version=..., clock=lambda: now)` does.
///
/// # Errors
/// [`CreateError`] for a secret that cannot sign in this version.
pub fn create_signed_value(
    secret: &TornadoSecret,
    name: &str,
    value: &[u8],
    version: Version,
    now: i64,
) -> Result<String, CreateError> {
    let timestamp = now.to_string();
    let b64 = STANDARD.encode(value);
    match version {
        Version::V1 => {
            let TornadoSecret::Single(s) = secret else {
                return Err(CreateError::V1WithVersionedSecret);
            };
            let sig = sig_v1(s, &[name.as_bytes(), b64.as_bytes(), timestamp.as_bytes()]);
            Ok(format!("{b64}|{timestamp}|{sig}"))
        }
        Version::V2 => {
            let key_version = match secret {
                TornadoSecret::Single(_) => 0,
                TornadoSecret::Versioned { current, .. } => *current,
            };
            let s = secret
                .for_version(key_version)
                .ok_or(CreateError::MissingCurrentKey)?;
            let field = |f: &str| format!("{}:{f}", f.len());
            let to_sign = format!(
                "2|{}|{}|{}|{}|",
                field(&key_version.to_string()),
                field(&timestamp),
                field(name),
                field(&b64)
            );
            let sig = sig_v2(s, to_sign.as_bytes());
            Ok(to_sign + &sig)
        }
    }
}

/// The version of a signed value, as Tornado's `_get_version` decides it: a leading
/// `N|` with N in 1..=999, else 1.
pub fn version_of(value: &str) -> u32 {
    let Some((head, _)) = value.split_once('|') else {
        return 1;
    };
    if head.is_empty() || head.starts_with('0') || !head.bytes().all(|b| b.is_ascii_digit()) {
        return 1;
    }
    match head.parse::<u64>() {
        Ok(n) if n <= 999 => n as u32,
        _ => 1,
    }
}

/// Checks and decodes a signed value, as `decode_signed_value(secret, name, value,
/// max_age_days, clock=lambda: now)` does; `Err` where Tornado returns `None`.
///
/// # Errors
/// A [`DecodeError`] naming the first check that failed.
pub fn decode_signed_value(
    secret: &TornadoSecret,
    name: &str,
    value: &str,
    max_age_days: f64,
    now: i64,
) -> Result<Vec<u8>, DecodeError> {
    if value.is_empty() || value.len() > 8192 {
        return Err(DecodeError::Malformed);
    }
    match version_of(value) {
        1 => decode_v1(secret, name, value, max_age_days, now),
        2 => decode_v2(secret, name, value, max_age_days, now),
        _ => Err(DecodeError::Malformed),
    }
}

fn too_old(timestamp: i64, max_age_days: f64, now: i64) -> bool {
    (timestamp as f64) < now as f64 - max_age_days * 86_400.0
}

fn decode_v1(
    secret: &TornadoSecret,
    name: &str,
    value: &str,
    max_age_days: f64,
    now: i64,
) -> Result<Vec<u8>, DecodeError> {
    let TornadoSecret::Single(s) = secret else {
        // Tornado asserts here; a versioned map cannot check v1 values.
        return Err(DecodeError::UnknownKeyVersion);
    };
    let parts: Vec<&str> = value.split('|').collect();
    let [b64, ts, sig] = parts[..] else {
        return Err(DecodeError::Malformed);
    };
    let expected = sig_v1(s, &[name.as_bytes(), b64.as_bytes(), ts.as_bytes()]);
    if !bool::from(expected.as_bytes().ct_eq(sig.as_bytes())) {
        return Err(DecodeError::BadSignature);
    }
    let timestamp: i64 = parse_int(ts).ok_or(DecodeError::Malformed)?;
    if too_old(timestamp, max_age_days, now) {
        return Err(DecodeError::Expired);
    }
    // The v1 MAC has no delimiters, so trailing value bytes could move into the timestamp:
    // Tornado refuses far-future timestamps and leading zeros.
    if timestamp > now + 31 * 86_400 || ts.starts_with('0') {
        return Err(DecodeError::Tampered);
    }
    STANDARD.decode(b64).map_err(|_| DecodeError::BadValue)
}

fn parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Splits `len:field|` off the front of `rest`.
fn consume_field(rest: &str) -> Result<(&str, &str), DecodeError> {
    let (len, rest) = rest.split_once(':').ok_or(DecodeError::Malformed)?;
    let n: usize = parse_int(len)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(DecodeError::Malformed)?;
    let field = rest.get(..n).ok_or(DecodeError::Malformed)?;
    let rest = rest[n..].strip_prefix('|').ok_or(DecodeError::Malformed)?;
    Ok((field, rest))
}

/// The fields of a v2 value: key version, timestamp, name, base64 value, signature.
pub fn decode_fields_v2(value: &str) -> Result<(u64, &str, &str, &str, &str), DecodeError> {
    let rest = value.strip_prefix("2|").ok_or(DecodeError::Malformed)?;
    let (key_version, rest) = consume_field(rest)?;
    let (timestamp, rest) = consume_field(rest)?;
    let (name, rest) = consume_field(rest)?;
    let (b64, sig) = consume_field(rest)?;
    let key_version = parse_int(key_version)
        .and_then(|v| u64::try_from(v).ok())
        .ok_or(DecodeError::Malformed)?;
    Ok((key_version, timestamp, name, b64, sig))
}

fn decode_v2(
    secret: &TornadoSecret,
    name: &str,
    value: &str,
    max_age_days: f64,
    now: i64,
) -> Result<Vec<u8>, DecodeError> {
    let (key_version, ts, name_field, b64, sig) = decode_fields_v2(value)?;
    let signed = &value[..value.len() - sig.len()];
    let s = secret
        .for_version(key_version)
        .ok_or(DecodeError::UnknownKeyVersion)?;
    let expected = sig_v2(s, signed.as_bytes());
    if sig.is_empty() || !bool::from(expected.as_bytes().ct_eq(sig.as_bytes())) {
        return Err(DecodeError::BadSignature);
    }
    if name_field != name {
        return Err(DecodeError::WrongName);
    }
    let timestamp = parse_int(ts).ok_or(DecodeError::Malformed)?;
    if too_old(timestamp, max_age_days, now) {
        return Err(DecodeError::Expired);
    }
    STANDARD.decode(b64).map_err(|_| DecodeError::BadValue)
}

/// The key version a v2 value was signed with (Tornado's `get_signature_key_version`).
pub fn key_version_of(value: &str) -> Option<u64> {
    decode_fields_v2(value).ok().map(|f| f.0)
}
