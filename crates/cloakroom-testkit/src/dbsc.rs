//! The browser's side of DBSC (Device Bound Session Credentials) for tests: a device key
//! (ES256, P-256) and the proofs Chromium 150 sends, in the forms captured in
//! `../shared/dbsc/` (a compact JWS, `typ` `dbsc+jwt`, the public key as a `jwk` in the
//! registration's header and absent from a refresh's, the challenge as `jti`, a raw r||s
//! signature), plus the malformed and hostile proofs a server must refuse.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::Signer as _;
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.claims` as the JWS signing input.
fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// A device key, as the browser keeps it (software keys, like Chromium's manual-testing
/// provider).
pub struct DeviceKey(SigningKey);

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceKey(REDACTED)")
    }
}

impl DeviceKey {
    /// A fresh random key.
    ///
    /// # Panics
    /// If the OS random number generator fails.
    pub fn generate() -> Self {
        loop {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).expect("OS randomness");
            if let Ok(key) = SigningKey::from_slice(&bytes) {
                return DeviceKey(key);
            }
        }
    }

    /// The public key as a JWK (`kty`, `crv`, `x`, `y`), as Chromium puts it in the header.
    ///
    /// # Panics
    /// Never for a P-256 key (its point has coordinates).
    pub fn jwk(&self) -> Value {
        let point = self.0.verifying_key().to_encoded_point(false);
        json!({"crv": "P-256", "kty": "EC",
            "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y"))})
    }

    /// The uncompressed SEC1 public key (what an `alg` confusion attack would use as an
    /// HMAC secret).
    pub fn public_bytes(&self) -> Vec<u8> {
        self.0
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    /// A registration proof over `challenge`, as Chromium 150 sends it.
    pub fn registration(&self, challenge: &str) -> String {
        let header = json!({"alg": "ES256", "jwk": self.jwk(), "typ": "dbsc+jwt"});
        self.sign(&header, &json!({"jti": challenge}))
    }

    /// A refresh proof over `challenge` (no `jwk`: the server uses the stored key).
    pub fn refresh(&self, challenge: &str) -> String {
        self.sign(
            &json!({"alg": "ES256", "typ": "dbsc+jwt"}),
            &json!({"jti": challenge}),
        )
    }

    /// Any header and claims, ES256-signed by this key.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = signing_input(header, claims);
        let signature: p256::ecdsa::Signature = self.0.sign(input.as_bytes());
        format!("{input}.{}", b64(&signature.to_vec()))
    }
}

/// An unsigned token (`alg` `none`, empty signature).
pub fn unsigned(header: &Value, claims: &Value) -> String {
    format!("{}.", signing_input(header, claims))
}

/// An HS256 token whose HMAC secret is `secret` (the `alg` confusion attack uses the
/// public key's bytes).
///
/// # Panics
/// Never: HMAC takes keys of any length.
pub fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = signing_input(header, claims);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

/// The quoted value after `prefix` in a structured header: the challenge of
/// `(ES256 RS256);path="/dbsc/register";challenge="<c>"` (prefix `challenge="`) or of
/// `"<c>";id="<sid>"` (prefix `"`).
pub fn quoted_after<'v>(value: &'v str, prefix: &str) -> Option<&'v str> {
    let rest = &value[value.find(prefix)? + prefix.len()..];
    Some(&rest[..rest.find('"')?])
}

/// The challenge and session identifier of a `Secure-Session-Challenge` value, read as
/// strictly as the form Chromium 150 parsed in the captures (`../shared/dbsc/`): one
/// structured-field item, a string, with one parameter `id`, a string, no whitespace, no
/// escapes, both base64url (what the server sends). `None` for anything else.
pub fn challenge_item(value: &str) -> Option<(&str, &str)> {
    let rest = value.strip_prefix('"')?;
    let (challenge, rest) = rest.split_once('"')?;
    let id = rest.strip_prefix(";id=\"")?.strip_suffix('"')?;
    let base64url = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (base64url(challenge) && base64url(id)).then_some((challenge, id))
}
