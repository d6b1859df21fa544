//! Device Bound Session Credentials (DBSC), server side: the proofs a browser signs with a
//! key it cannot export, and the header values and JSON the server answers with.
//!
//! DBSC is a W3C Working Draft (`w3c/webappsec-dbsc`); this module follows what Chromium 150
//! sends and accepts, which differs from a literal reading of the draft in small ways (the
//! proof header arrives bare, not as a quoted string; no `iat`, no `aud`; the
//! `authorization` value travels only as a claim). Expect changes as the draft moves.
//!
//! The flow: a login response carries [`registration_header`]; the browser generates a key
//! pair and POSTs a proof (a compact JWS in `Secure-Session-Response`) whose header carries
//! the public key; [`verify_registration`] checks it and yields the [`DeviceKey`] to keep
//! with the session. Later the browser refreshes its short-lived cookie: the server answers
//! [`challenge_header`], the browser signs the challenge, and [`verify_refresh`] checks the
//! proof against the stored key. Challenges are single-use: the caller consumes the proof's
//! `jti` in the store (`SessionStore::take_challenge`), which says whether it was issued.
//! A challenge given in advance spares the browser the 403 round trip: the registration and
//! refresh answers carry the next one, and so does an ordinary response whose bound cookie
//! is near its expiry
//! ([`SessionEngine::dbsc_response_headers`](crate::SessionEngine::dbsc_response_headers)).
//!
//! ```
//! use cloakroom_core::dbsc::{self, ErrorKind};
//!
//! let header = dbsc::registration_header("/dbsc/register", "c1", None).unwrap();
//! assert_eq!(header, r#"(ES256 RS256);path="/dbsc/register";challenge="c1""#);
//! // A proof that is not a JWS is refused with a typed error, never a panic.
//! let error = dbsc::verify_registration("not-a-jws", None).unwrap_err();
//! assert_eq!(error.kind(), ErrorKind::Malformed);
//! ```

use std::fmt;

mod bound;
mod endpoints;
mod flow;
mod limits;
mod proof;
mod settings;

pub use endpoints::{DbscEndpoint, DbscRequest, DbscResponse};
pub use flow::NearExpiry;
pub use proof::{DeviceKey, Proof, verify_refresh, verify_registration};
pub use settings::{DbscPolicy, DbscSettings};

/// The response header that asks the browser to register a session.
pub(crate) const REGISTRATION_HEADER: &str = "Secure-Session-Registration";
/// The request header carrying a proof (a compact JWS).
pub const RESPONSE_HEADER: &str = "Secure-Session-Response";
/// The response header carrying a fresh challenge for a session.
pub(crate) const CHALLENGE_HEADER: &str = "Secure-Session-Challenge";
/// The request header naming the session a refresh is for.
pub const SESSION_ID_HEADER: &str = "Sec-Secure-Session-Id";

/// Longest header value read (a proof with a 4096-bit RSA key is under 2 KiB).
pub const MAX_HEADER_LEN: usize = 4096;

/// A fresh single-use challenge: 256 random bits as 43 characters of base64url.
///
/// # Panics
/// When the OS random source fails.
pub fn new_challenge() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The `Secure-Session-Registration` value:
/// `(ES256 RS256);path="<path>";challenge="<challenge>"[;authorization="<authorization>"]`.
///
/// # Errors
/// [`ErrorKind::HeaderValue`] when a value is not printable ASCII (it cannot be a
/// structured-field string).
pub fn registration_header(
    path: &str,
    challenge: &str,
    authorization: Option<&str>,
) -> Result<String, Error> {
    let mut out = format!(
        "(ES256 RS256);path={};challenge={}",
        sf_string(path)?,
        sf_string(challenge)?
    );
    if let Some(authorization) = authorization {
        out.push_str(";authorization=");
        out.push_str(&sf_string(authorization)?);
    }
    Ok(out)
}

/// The `Secure-Session-Challenge` value: `"<challenge>";id="<session_identifier>"`.
///
/// # Errors
/// [`ErrorKind::HeaderValue`] when a value is not printable ASCII.
pub fn challenge_header(challenge: &str, session_identifier: &str) -> Result<String, Error> {
    Ok(format!(
        "{};id={}",
        sf_string(challenge)?,
        sf_string(session_identifier)?
    ))
}

/// The session instructions (JSON) a registration or refresh answers with. `cookie_attributes`
/// must be the attributes of the bound cookie's `Set-Cookie` exactly (e.g.
/// `Path=/; Secure; HttpOnly; SameSite=Lax`), or the browser will not recognise the cookie
/// it is to keep fresh.
#[derive(Debug, Clone, Copy)]
pub struct Instructions<'a> {
    /// Names the session in refreshes (`Sec-Secure-Session-Id`).
    pub session_identifier: &'a str,
    /// Where the browser POSTs refreshes.
    pub refresh_url: &'a str,
    /// The origin the session covers, `scheme://host[:port]`.
    pub origin: &'a str,
    /// Whether the session also covers the rest of the site (other subdomains).
    pub include_site: bool,
    /// The bound cookie's name.
    pub cookie_name: &'a str,
    /// The bound cookie's attributes, as in its `Set-Cookie`.
    pub cookie_attributes: &'a str,
}

impl Instructions<'_> {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "session_identifier": self.session_identifier,
            "refresh_url": self.refresh_url,
            "scope": { "origin": self.origin, "include_site": self.include_site },
            "credentials": [{
                "type": "cookie",
                "name": self.cookie_name,
                "attributes": self.cookie_attributes,
            }],
        })
        .to_string()
    }
}

/// A structured-field string (RFC 8941 3.3.3): printable ASCII, `"` and `\` escaped.
fn sf_string(value: &str) -> Result<String, Error> {
    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Error::new(ErrorKind::HeaderValue));
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(out)
}

/// Why a DBSC proof or header value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The header value is longer than [`MAX_HEADER_LEN`].
    TooLarge,
    /// Not a compact JWS: bad structure, base64 or JSON, or a missing claim.
    Malformed,
    /// The JWS `typ` is not `dbsc+jwt`.
    Type,
    /// The JWS `alg` is not ES256 or RS256, or not the stored key's algorithm.
    Algorithm,
    /// The public key is missing or not a valid P-256 or RSA key.
    Key,
    /// An RSA key shorter than 2048 bits.
    WeakKey,
    /// The signature does not verify.
    Signature,
    /// The `authorization` claim is missing or not the one asked for.
    Authorization,
    /// The `jti` is not a challenge issued for this session, or was already used.
    Challenge,
    /// A value we would send is not printable ASCII.
    HeaderValue,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::TooLarge => "DBSC header too large",
            ErrorKind::Malformed => "DBSC proof malformed",
            ErrorKind::Type => "DBSC proof typ is not dbsc+jwt",
            ErrorKind::Algorithm => "DBSC proof algorithm refused",
            ErrorKind::Key => "DBSC proof key invalid",
            ErrorKind::WeakKey => "DBSC proof RSA key shorter than 2048 bits",
            ErrorKind::Signature => "DBSC proof signature invalid",
            ErrorKind::Authorization => "DBSC proof authorization mismatch",
            ErrorKind::Challenge => "DBSC proof challenge unknown or used",
            ErrorKind::HeaderValue => "DBSC header value not printable ASCII",
        })
    }
}

/// A refused DBSC proof or header value; see [`ErrorKind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Self {
        Error { kind }
    }

    /// Why it was refused.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_header_matches_the_form_chromium_accepted() {
        assert_eq!(
            registration_header("/dbsc/register", "chal-1", Some("authcode-123")).unwrap(),
            r#"(ES256 RS256);path="/dbsc/register";challenge="chal-1";authorization="authcode-123""#
        );
    }

    #[test]
    fn header_values_escape_quotes_and_refuse_control_characters() {
        assert_eq!(
            challenge_header("c", r#"a"b\"#).unwrap(),
            r#""c";id="a\"b\\""#
        );
        let e = registration_header("/r", "c", Some("a\r\nSet-Cookie: x=1")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::HeaderValue);
        assert_eq!(
            challenge_header("é", "s").unwrap_err().kind(),
            ErrorKind::HeaderValue
        );
    }

    #[test]
    fn instructions_carry_scope_and_the_cookie_attributes_verbatim() {
        let json = Instructions {
            session_identifier: "sid",
            refresh_url: "/dbsc/refresh",
            origin: "https://example.com",
            include_site: false,
            cookie_name: "bound",
            cookie_attributes: "Path=/; Secure; HttpOnly; SameSite=Lax",
        }
        .to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["session_identifier"], "sid");
        assert_eq!(v["refresh_url"], "/dbsc/refresh");
        assert_eq!(v["scope"]["origin"], "https://example.com");
        assert_eq!(v["scope"]["include_site"], false);
        assert_eq!(
            v["credentials"],
            serde_json::json!([{"type": "cookie", "name": "bound",
                "attributes": "Path=/; Secure; HttpOnly; SameSite=Lax"}])
        );
    }

    #[test]
    fn challenges_are_fresh_43_character_base64url() {
        let (a, b) = (new_challenge(), new_challenge());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }
}
