//! CSRF secrets and tokens in Tornado's formats.
//!
//! - v2 (what we render): `2|hex(mask)|hex(secret XOR mask)|timestamp`, a fresh 4-byte
//!   mask every time (so the token on a page changes on every render: BREACH);
//! - v1 (accepted): `hex(secret)`.
//!
//! Both decode to the 16-byte secret, compared in constant time.

use std::fmt;

use subtle::ConstantTimeEq;

use super::Reason;

/// Bytes in a secret (Tornado uses 16).
pub(crate) const SECRET_LEN: usize = 16;

/// Longest token accepted; longer input is malformed without further work.
pub(crate) const MAX_TOKEN_LEN: usize = 256;

/// The unmasked CSRF secret. `Debug` prints nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; SECRET_LEN]);

impl Secret {
    /// A fresh random secret.
    ///
    /// # Panics
    /// When the OS random source fails.
    pub fn generate() -> Self {
        let mut b = [0u8; SECRET_LEN];
        getrandom::fill(&mut b).expect("the OS random number generator failed");
        Secret(b)
    }

    /// Lower-case hex (also the v1 token form).
    pub fn to_hex(&self) -> String {
        crate::keys::hex(&self.0)
    }

    /// Parses 32 hex digits.
    pub(crate) fn from_hex(text: &str) -> Option<Self> {
        let bytes = unhex(text)?;
        Some(Secret(bytes.try_into().ok()?))
    }

    /// A v2 token with a fresh random mask and the current time.
    pub fn mask(&self) -> String {
        let mut mask = [0u8; 4];
        getrandom::fill(&mut mask).expect("the OS random number generator failed");
        self.mask_with(mask, crate::session::Timestamp::now().as_secs())
    }

    /// A v2 token with a given mask and timestamp (deterministic, for tests and interop).
    pub fn mask_with(&self, mask: [u8; 4], timestamp: i64) -> String {
        let mut masked = self.0;
        for (i, b) in masked.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        format!(
            "2|{}|{}|{timestamp}",
            crate::keys::hex(&mask),
            crate::keys::hex(&masked)
        )
    }

    /// Checks a submitted token (v1 or v2) against this secret in constant time.
    ///
    /// # Errors
    /// [`Reason::TokenMissing`] for an empty token, [`Reason::TokenMalformed`] for one that
    /// does not decode to 16 bytes, [`Reason::TokenMismatch`] for a well-formed wrong one.
    pub fn verify(&self, token: &str) -> Result<(), Reason> {
        let got = decode_token(token)?;
        if bool::from(got.0.ct_eq(&self.0)) {
            Ok(())
        } else {
            Err(Reason::TokenMismatch)
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(REDACTED)")
    }
}

/// Decodes a v1 or v2 token (or a Tornado `_xsrf` cookie value) to its secret.
///
/// # Errors
/// [`Reason::TokenMissing`] or [`Reason::TokenMalformed`].
pub fn decode_token(token: &str) -> Result<Secret, Reason> {
    let token = token.trim();
    if token.is_empty() {
        return Err(Reason::TokenMissing);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(Reason::TokenMalformed);
    }
    let bytes = if let Some(rest) = token.strip_prefix("2|") {
        let mut parts = rest.split('|');
        let (Some(mask), Some(masked), Some(ts), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Reason::TokenMalformed);
        };
        if ts.is_empty() || ts.len() > 20 || !ts.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Reason::TokenMalformed);
        }
        let mask = unhex(mask)
            .filter(|m| m.len() == 4)
            .ok_or(Reason::TokenMalformed)?;
        let mut masked = unhex(masked).ok_or(Reason::TokenMalformed)?;
        for (i, b) in masked.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        masked
    } else if token.contains('|') {
        // Another version (`3|...`), or junk.
        return Err(Reason::TokenMalformed);
    } else {
        unhex(token).ok_or(Reason::TokenMalformed)?
    };
    let bytes: [u8; SECRET_LEN] = bytes.try_into().map_err(|_| Reason::TokenMalformed)?;
    Ok(Secret(bytes))
}

/// The bytes of hex digits of either case (constant time: they are secrets); `None` for
/// anything else.
fn unhex(text: &str) -> Option<Vec<u8>> {
    base16ct::mixed::decode_vec(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_differ_and_all_verify() {
        let s = Secret::generate();
        let tokens: Vec<String> = (0..50).map(|_| s.mask()).collect();
        let mut unique = tokens.clone();
        unique.sort();
        unique.dedup();
        assert!(unique.len() >= 49, "masks must change on every render");
        for t in &tokens {
            assert!(t.starts_with("2|"));
            s.verify(t).unwrap();
        }
    }

    #[test]
    fn v1_and_v2_of_one_secret_verify() {
        let s = Secret(*b"0123456789abcdef");
        s.verify(&s.to_hex()).unwrap();
        s.verify(&s.to_hex().to_uppercase()).unwrap();
        let v2 = s.mask_with([1, 2, 3, 4], 1_700_000_000);
        assert_eq!(v2, "2|01020304|3133313735373533393b626662666662|1700000000");
        s.verify(&v2).unwrap();
    }

    #[test]
    fn other_secrets_mismatch() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_eq!(a.verify(&b.mask()), Err(Reason::TokenMismatch));
        assert_eq!(a.verify(&b.to_hex()), Err(Reason::TokenMismatch));
    }

    #[test]
    fn malformed_tokens_have_the_right_reason() {
        let s = Secret::generate();
        let good = s.mask();
        let cases: [(&str, Reason); 13] = [
            ("", Reason::TokenMissing),
            ("   ", Reason::TokenMissing),
            ("abc", Reason::TokenMalformed),
            (&"zz".repeat(16), Reason::TokenMalformed),
            (&"00".repeat(15), Reason::TokenMalformed),
            (&"00".repeat(17), Reason::TokenMalformed),
            (&good.replacen("2|", "3|", 1), Reason::TokenMalformed),
            ("2|", Reason::TokenMalformed),
            ("2|0102|00|1", Reason::TokenMalformed),
            (&format!("{good}|extra"), Reason::TokenMalformed),
            (&good.replace('|', "||"), Reason::TokenMalformed),
            (&"a".repeat(100_000), Reason::TokenMalformed),
            (&"é".repeat(16), Reason::TokenMalformed),
        ];
        for (token, reason) in cases {
            assert_eq!(s.verify(token), Err(reason), "{token:.40}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let s = Secret([0xAB; 16]);
        assert_eq!(format!("{s:?}"), "Secret(REDACTED)");
    }
}
