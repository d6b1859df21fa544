//! DBSC proofs: compact JWS with `typ` `dbsc+jwt`, signed ES256 (raw r||s) or RS256.
//! Every check that needs no cryptography (size, structure, `typ`, `alg`) comes first.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Verifier as _;
use rsa::traits::PublicKeyParts as _;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use super::{Error, ErrorKind, MAX_HEADER_LEN};

/// Shortest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;

/// The public half of a browser's device key: what a session is bound to.
#[derive(Clone, PartialEq)]
pub struct DeviceKey(Key);

#[derive(Clone, PartialEq)]
enum Key {
    Es256(p256::ecdsa::VerifyingKey),
    Rs256(rsa::RsaPublicKey),
}

/// The JWS header fields read.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    jwk: Option<Jwk>,
}

/// A public JWK (RFC 7517): EC P-256 (`crv`, `x`, `y`) or RSA (`n`, `e`).
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

/// The JWS payload fields read. Chromium 150 sends neither `iat` nor `aud`.
#[derive(Deserialize)]
struct Claims {
    jti: String,
    #[serde(default)]
    authorization: Option<String>,
}

/// A verified proof: the challenge it answers, for the caller to consume.
#[derive(Clone, PartialEq, Eq)]
pub struct Proof {
    jti: String,
}

impl Proof {
    /// The challenge the proof signs (its `jti`): valid only if the store still holds it
    /// for this session, and consumed by that check.
    pub fn challenge(&self) -> &str {
        &self.jti
    }
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Proof(REDACTED)")
    }
}

impl DeviceKey {
    /// Parses a key stored with [`DeviceKey::to_jwk`].
    ///
    /// # Errors
    /// [`ErrorKind::Key`] or [`ErrorKind::WeakKey`] for anything else.
    pub fn from_jwk(json: &str) -> Result<Self, Error> {
        let jwk: Jwk = serde_json::from_str(json).map_err(|_| Error::new(ErrorKind::Key))?;
        Self::from_parts(&jwk)
    }

    /// The key as a JWK (JSON text), the form stores keep.
    pub fn to_jwk(&self) -> String {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        match &self.0 {
            Key::Es256(key) => {
                let point = key.to_encoded_point(false);
                // An uncompressed point always has both coordinates.
                let (x, y) = (point.x().map(|x| b64(x)), point.y().map(|y| b64(y)));
                serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y})
            }
            Key::Rs256(key) => serde_json::json!({
                "kty": "RSA",
                "n": b64(&key.n().to_bytes_be()),
                "e": b64(&key.e().to_bytes_be()),
            }),
        }
        .to_string()
    }

    fn algorithm(&self) -> &'static str {
        match self.0 {
            Key::Es256(_) => "ES256",
            Key::Rs256(_) => "RS256",
        }
    }

    fn from_parts(jwk: &Jwk) -> Result<Self, Error> {
        let bad = || Error::new(ErrorKind::Key);
        let bytes = |v: &Option<String>| v.as_deref().map(b64_decode).ok_or_else(bad)?;
        match jwk.kty.as_str() {
            "EC" if jwk.crv.as_deref() == Some("P-256") => {
                let (x, y) = (bytes(&jwk.x)?, bytes(&jwk.y)?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(bad());
                }
                let point = p256::EncodedPoint::from_affine_coordinates(
                    p256::FieldBytes::from_slice(&x),
                    p256::FieldBytes::from_slice(&y),
                    false,
                );
                p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                    .map(|k| DeviceKey(Key::Es256(k)))
                    .map_err(|_| bad())
            }
            "RSA" => {
                let n = rsa::BigUint::from_bytes_be(&bytes(&jwk.n)?);
                let e = rsa::BigUint::from_bytes_be(&bytes(&jwk.e)?);
                if n.bits() < MIN_RSA_BITS {
                    return Err(Error::new(ErrorKind::WeakKey));
                }
                // Refuses moduli over 4096 bits and bad exponents.
                rsa::RsaPublicKey::new(n, e)
                    .map(|k| DeviceKey(Key::Rs256(k)))
                    .map_err(|_| bad())
            }
            _ => Err(bad()),
        }
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        let bad = || Error::new(ErrorKind::Signature);
        match &self.0 {
            // JWS ES256 signatures are the raw 64-byte r||s, not DER.
            Key::Es256(key) => {
                let signature = p256::ecdsa::Signature::from_slice(signature).map_err(|_| bad())?;
                key.verify(message, &signature).map_err(|_| bad())
            }
            Key::Rs256(key) => {
                let verifier = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.clone());
                let signature = rsa::pkcs1v15::Signature::try_from(signature).map_err(|_| bad())?;
                verifier.verify(message, &signature).map_err(|_| bad())
            }
        }
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceKey({})", self.algorithm())
    }
}

/// Checks a registration proof (the `Secure-Session-Response` value, bare or quoted): signed
/// by the key in its own header's `jwk`, carrying `authorization` equal to
/// `expected_authorization` when one was asked for. Returns the proof and the key to keep
/// with the session.
///
/// # Errors
/// Which check failed, as an [`ErrorKind`].
pub fn verify_registration(
    value: &str,
    expected_authorization: Option<&str>,
) -> Result<(Proof, DeviceKey), Error> {
    let jws = Jws::parse(value)?;
    let key = DeviceKey::from_parts(jws.header.jwk.as_ref().ok_or(Error::new(ErrorKind::Key))?)?;
    let claims = jws.verify(&key)?;
    if let Some(expected) = expected_authorization {
        let got = claims.authorization.as_deref().unwrap_or_default();
        if !bool::from(got.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(Error::new(ErrorKind::Authorization));
        }
    }
    Ok((Proof { jti: claims.jti }, key))
}

/// Checks a refresh proof against the key stored at registration (a `jwk` in its header is
/// ignored).
///
/// # Errors
/// Which check failed, as an [`ErrorKind`].
pub fn verify_refresh(value: &str, key: &DeviceKey) -> Result<Proof, Error> {
    let claims = Jws::parse(value)?.verify(key)?;
    Ok(Proof { jti: claims.jti })
}

/// A compact JWS whose size, structure, `typ` and `alg` passed.
struct Jws<'a> {
    header: Header,
    signing_input: &'a str,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

impl<'a> Jws<'a> {
    fn parse(value: &'a str) -> Result<Self, Error> {
        if value.len() > MAX_HEADER_LEN {
            return Err(Error::new(ErrorKind::TooLarge));
        }
        let malformed = || Error::new(ErrorKind::Malformed);
        let value = value.trim();
        // Chromium sends a bare token; the draft says a structured-field string.
        let value = match value.strip_prefix('"') {
            Some(rest) => rest.strip_suffix('"').ok_or_else(malformed)?,
            None => value,
        };
        let (signing_input, signature) = value.rsplit_once('.').ok_or_else(malformed)?;
        let (header, payload) = signing_input.split_once('.').ok_or_else(malformed)?;
        let header: Header =
            serde_json::from_slice(&b64_decode(header)?).map_err(|_| malformed())?;
        if header.typ.as_deref() != Some("dbsc+jwt") {
            return Err(Error::new(ErrorKind::Type));
        }
        if !matches!(header.alg.as_str(), "ES256" | "RS256") {
            return Err(Error::new(ErrorKind::Algorithm));
        }
        Ok(Jws {
            header,
            signing_input,
            payload: b64_decode(payload)?,
            signature: b64_decode(signature)?,
        })
    }

    /// Verifies the signature with `key` (whose algorithm must be the header's), then reads
    /// the claims.
    fn verify(&self, key: &DeviceKey) -> Result<Claims, Error> {
        if self.header.alg != key.algorithm() {
            return Err(Error::new(ErrorKind::Algorithm));
        }
        key.verify(self.signing_input.as_bytes(), &self.signature)?;
        serde_json::from_slice(&self.payload).map_err(|_| Error::new(ErrorKind::Malformed))
    }
}

fn b64_decode(text: &str) -> Result<Vec<u8>, Error> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| Error::new(ErrorKind::Malformed))
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use hmac::Mac as _;
    use p256::ecdsa::signature::{SignatureEncoding as _, Signer as _};
    use rsa::rand_core::OsRng;

    use super::*;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn ec_key() -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::random(&mut OsRng)
    }

    fn ec_public(key: &p256::ecdsa::SigningKey) -> DeviceKey {
        DeviceKey(Key::Es256(*key.verifying_key()))
    }

    fn rsa_key() -> &'static rsa::RsaPrivateKey {
        static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap())
    }

    /// `header.payload` with `sign` applied to it, as a browser sends it.
    fn jws(header: &serde_json::Value, payload: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(payload.as_bytes())
        );
        let signature = b64(&sign(input.as_bytes()));
        format!("{input}.{signature}")
    }

    fn es256(key: &p256::ecdsa::SigningKey) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
        |m| {
            let s: p256::ecdsa::Signature = key.sign(m);
            s.to_vec()
        }
    }

    fn rs256(m: &[u8]) -> Vec<u8> {
        let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(rsa_key().clone());
        signer.sign(m).to_vec()
    }

    fn header_with_jwk(alg: &str, jwk: &DeviceKey) -> serde_json::Value {
        let jwk: serde_json::Value = serde_json::from_str(&jwk.to_jwk()).unwrap();
        serde_json::json!({"alg": alg, "typ": "dbsc+jwt", "jwk": jwk})
    }

    const CLAIMS: &str = r#"{"authorization":"authcode-123","jti":"chal-1"}"#;

    fn kind<T: fmt::Debug>(r: Result<T, Error>) -> ErrorKind {
        r.unwrap_err().kind()
    }

    #[test]
    fn a_registration_signed_es256_by_its_own_jwk_verifies_bare_and_quoted() {
        let key = ec_key();
        let proof = jws(
            &header_with_jwk("ES256", &ec_public(&key)),
            CLAIMS,
            es256(&key),
        );
        for value in [proof.clone(), format!("\"{proof}\"")] {
            let (p, stored) = verify_registration(&value, Some("authcode-123")).unwrap();
            assert_eq!(p.challenge(), "chal-1");
            assert_eq!(stored, ec_public(&key));
        }
    }

    #[test]
    fn the_proof_chromium_150_sent_verifies() {
        let (p, _) = verify_registration(CHROMIUM_150_REGISTRATION, Some("authcode-123")).unwrap();
        assert_eq!(p.challenge(), "chal-MeGIUsgv7yIx3hup");
    }

    #[test]
    fn a_registration_signed_rs256_verifies_and_refreshes_with_the_stored_key() {
        let public = DeviceKey(Key::Rs256(rsa_key().to_public_key()));
        let proof = jws(&header_with_jwk("RS256", &public), CLAIMS, rs256);
        let (_, stored) = verify_registration(&proof, None).unwrap();
        let stored = DeviceKey::from_jwk(&stored.to_jwk()).unwrap();
        let header = serde_json::json!({"alg": "RS256", "typ": "dbsc+jwt"});
        let refresh = jws(&header, r#"{"jti":"chal-2"}"#, rs256);
        assert_eq!(
            verify_refresh(&refresh, &stored).unwrap().challenge(),
            "chal-2"
        );
    }

    #[test]
    fn a_refresh_verifies_only_with_the_stored_key() {
        let (key, other) = (ec_key(), ec_key());
        let stored = DeviceKey::from_jwk(&ec_public(&key).to_jwk()).unwrap();
        let header = serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt"});
        let refresh = jws(&header, r#"{"jti":"chal-2"}"#, es256(&key));
        assert_eq!(
            verify_refresh(&refresh, &stored).unwrap().challenge(),
            "chal-2"
        );
        let forged = jws(&header, r#"{"jti":"chal-2"}"#, es256(&other));
        assert_eq!(kind(verify_refresh(&forged, &stored)), ErrorKind::Signature);
        // A jwk in a refresh header does not replace the stored key.
        let with_jwk = jws(
            &header_with_jwk("ES256", &ec_public(&other)),
            CLAIMS,
            es256(&other),
        );
        assert_eq!(
            kind(verify_refresh(&with_jwk, &stored)),
            ErrorKind::Signature
        );
    }

    #[test]
    fn a_registration_signed_by_another_key_than_its_jwk_is_refused() {
        let (key, other) = (ec_key(), ec_key());
        let proof = jws(
            &header_with_jwk("ES256", &ec_public(&key)),
            CLAIMS,
            es256(&other),
        );
        assert_eq!(
            kind(verify_registration(&proof, None)),
            ErrorKind::Signature
        );
    }

    #[test]
    fn alg_none_and_hs256_with_the_public_key_as_secret_are_refused() {
        let key = ec_key();
        let public = ec_public(&key);
        let none = jws(&header_with_jwk("none", &public), CLAIMS, |_| Vec::new());
        assert_eq!(kind(verify_registration(&none, None)), ErrorKind::Algorithm);
        let secret = public.to_jwk();
        let hs256 = jws(&header_with_jwk("HS256", &public), CLAIMS, |m| {
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(m);
            mac.finalize().into_bytes().to_vec()
        });
        assert_eq!(
            kind(verify_registration(&hs256, None)),
            ErrorKind::Algorithm
        );
        assert_eq!(kind(verify_refresh(&hs256, &public)), ErrorKind::Algorithm);
    }

    #[test]
    fn an_alg_that_is_not_the_keys_is_refused() {
        let key = ec_key();
        // RS256 claimed over an EC key (registration) and over a stored EC key (refresh).
        let proof = jws(
            &header_with_jwk("RS256", &ec_public(&key)),
            CLAIMS,
            es256(&key),
        );
        assert_eq!(
            kind(verify_registration(&proof, None)),
            ErrorKind::Algorithm
        );
        let rsa_public = DeviceKey(Key::Rs256(rsa_key().to_public_key()));
        let header = serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt"});
        let refresh = jws(&header, CLAIMS, es256(&key));
        assert_eq!(
            kind(verify_refresh(&refresh, &rsa_public)),
            ErrorKind::Algorithm
        );
    }

    #[test]
    fn a_wrong_or_missing_typ_is_refused() {
        let key = ec_key();
        for typ in [serde_json::json!("JWT"), serde_json::Value::Null] {
            let mut header = header_with_jwk("ES256", &ec_public(&key));
            header["typ"] = typ;
            let proof = jws(&header, CLAIMS, es256(&key));
            assert_eq!(kind(verify_registration(&proof, None)), ErrorKind::Type);
        }
    }

    #[test]
    fn authorization_is_checked_only_when_asked_for() {
        let key = ec_key();
        let header = header_with_jwk("ES256", &ec_public(&key));
        let proof = jws(&header, CLAIMS, es256(&key));
        assert!(verify_registration(&proof, None).is_ok());
        assert_eq!(
            kind(verify_registration(&proof, Some("other"))),
            ErrorKind::Authorization
        );
        let without = jws(&header, r#"{"jti":"c"}"#, es256(&key));
        assert_eq!(
            kind(verify_registration(&without, Some("a"))),
            ErrorKind::Authorization
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        let weak = rsa::RsaPrivateKey::new(&mut OsRng, 1024)
            .unwrap()
            .to_public_key();
        let weak = serde_json::json!({"kty": "RSA", "n": b64(&weak.n().to_bytes_be()),
            "e": b64(&weak.e().to_bytes_be())});
        assert_eq!(
            kind(DeviceKey::from_jwk(&weak.to_string())),
            ErrorKind::WeakKey
        );
        let off_curve = serde_json::json!({"kty": "EC", "crv": "P-256",
            "x": b64(&[1; 32]), "y": b64(&[2; 32])});
        let p384 = serde_json::json!({"kty": "EC", "crv": "P-384",
            "x": b64(&[1; 48]), "y": b64(&[2; 48])});
        for jwk in [
            off_curve,
            p384,
            serde_json::json!({"kty": "oct", "k": "AAAA"}),
        ] {
            assert_eq!(kind(DeviceKey::from_jwk(&jwk.to_string())), ErrorKind::Key);
        }
        let key = ec_key();
        let mut header = header_with_jwk("ES256", &ec_public(&key));
        header.as_object_mut().unwrap().remove("jwk");
        let proof = jws(&header, CLAIMS, es256(&key));
        assert_eq!(kind(verify_registration(&proof, None)), ErrorKind::Key);
    }

    #[test]
    fn malformed_and_oversized_proofs_are_typed_errors() {
        let key = ec_key();
        let header = header_with_jwk("ES256", &ec_public(&key));
        let good = jws(&header, CLAIMS, es256(&key));
        let (input, _) = good.rsplit_once('.').unwrap();
        let cases = [
            String::new(),
            "a.b".into(),
            format!("\"{good}"),
            format!("{good}.x"),
            format!("{input}.%%%"),
            format!("{input}.{}", b64(&[0; 64])),
            format!("!!!.{}", &good[good.find('.').unwrap() + 1..]),
            format!("{}.e30.sig", b64(b"{not json")),
            format!(
                "{}.e30.sig",
                b64(br#"{"alg":"ES256","typ":"dbsc+jwt","alg":"ES256"}"#)
            ),
            jws(&header, "{}", es256(&key)),
            jws(&header, "[1]", es256(&key)),
            jws(&header, r#"{"jti":7}"#, es256(&key)),
            good.replacen('.', "=.", 1),
        ];
        for case in &cases {
            let k = kind(verify_registration(case, None));
            assert!(
                matches!(k, ErrorKind::Malformed | ErrorKind::Signature),
                "{case}: {k:?}"
            );
        }
        let huge = format!("{good}{}", "A".repeat(MAX_HEADER_LEN));
        assert_eq!(kind(verify_registration(&huge, None)), ErrorKind::TooLarge);
        assert_eq!(
            kind(verify_refresh(&huge, &ec_public(&key))),
            ErrorKind::TooLarge
        );
    }

    /// Captured from Chromium 150 (`../shared/dbsc/README.md`, section 4.2).
    const CHROMIUM_150_REGISTRATION: &str = "eyJhbGciOiJFUzI1NiIsImp3ayI6eyJjcnYiOiJQLTI1NiIsImt0eSI6IkVDIiwieCI6ImV2UDhqQTYxYlBOUWxZQ3F3VnBqMHAtVHk5RjZFMWNjMFA2c0NpMS0xeTAiLCJ5IjoiMi0wZklKd3BZYjhOcVdFQ2dZVVlZa3BGd2RhWHhRUlp3cHhKVU1rREtfcyJ9LCJ0eXAiOiJkYnNjK2p3dCJ9.eyJhdXRob3JpemF0aW9uIjoiYXV0aGNvZGUtMTIzIiwianRpIjoiY2hhbC1NZUdJVXNndjd5SXgzaHVwIn0.QGtbhbO0-GJtXO0J3azbB8oX6jy9ULJN41UM33ClGmyTh3QJ2J5fWLsUBF9Mm7dOzFBm7THvs6f9g_7G-LEayQ";
}
