//! The DBSC registration and refresh endpoints: what an adapter passes in a [`DbscRequest`],
//! the checks before the store (method, origin, rate limit), and the [`DbscResponse`] it
//! sends back.

use std::net::IpAddr;

use super::{
    CHALLENGE_HEADER, DbscSettings, DeviceKey, ErrorKind, Instructions, challenge_header,
    verify_refresh, verify_registration,
};
use crate::id::{SessionKey, Timestamp};
use crate::session::{DEVICE_KEY_FIELD, Result, Session, SessionEngine};
use crate::store::Patch;

/// The DBSC endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbscEndpoint {
    /// Registration: binds a session to a device key.
    Registration,
    /// Refresh: a new bound cookie for a signed challenge.
    Refresh,
}

/// What the DBSC endpoints read of a request, as the adapter found it.
#[derive(Debug, Clone, Copy, Default)]
pub struct DbscRequest<'a> {
    /// `Sec-Secure-Session-Id` (refresh).
    pub session_id: Option<&'a str>,
    /// `Secure-Session-Response`: the proof.
    pub proof: Option<&'a str>,
    /// `Origin`, if the request sent one: another origin than the DBSC origin is refused
    /// (403; Chromium sends none with its DBSC requests, a cross-site form always does).
    pub origin: Option<&'a str>,
    /// The client's address, when the adapter knows it: the per-client rate limit.
    pub client: Option<IpAddr>,
    /// The request's session (its ticket): the per-session rate limit of registrations.
    pub session: Option<&'a Session>,
}

/// What a DBSC endpoint answers; the adapter sends it as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbscResponse {
    /// The status: 200, 400 (malformed), 401 (no such bound session: the browser drops it),
    /// 403 (sign this challenge), 503 (store failure).
    pub status: u16,
    /// Headers to send (`Set-Cookie`, `Secure-Session-Challenge`, `Content-Type`, ...).
    pub headers: Vec<(&'static str, String)>,
    /// The body (the session instructions JSON on success).
    pub body: String,
}

impl DbscResponse {
    /// A bodiless answer that must not be cached or framed.
    fn empty(status: u16) -> Self {
        DbscResponse {
            status,
            headers: vec![
                ("Cache-Control", "no-store".into()),
                ("X-Frame-Options", "DENY".into()),
                ("Content-Security-Policy", "frame-ancestors 'none'".into()),
            ],
            body: String::new(),
        }
    }

    /// A refusal with a short plain-text reason.
    fn refused(status: u16, reason: &str) -> Self {
        let mut response = DbscResponse::empty(status);
        response
            .headers
            .push(("Content-Type", "text/plain; charset=utf-8".into()));
        response.body = format!("{reason}\n");
        response
    }
}

/// A store failure becomes a 503.
async fn answer(work: impl Future<Output = Result<DbscResponse>>) -> DbscResponse {
    work.await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "DBSC endpoint failed");
        DbscResponse::empty(503)
    })
}
impl SessionEngine {
    /// The DBSC endpoint at `path`, when DBSC is on: adapters answer such a request with
    /// [`SessionEngine::dbsc_answer`] instead of the application.
    pub fn dbsc_endpoint(&self, path: &str) -> Option<DbscEndpoint> {
        let dbsc = self.dbsc()?;
        if path == dbsc.registration_path {
            Some(DbscEndpoint::Registration)
        } else if path == dbsc.refresh_path {
            Some(DbscEndpoint::Refresh)
        } else {
            None
        }
    }

    /// Answers a request to `endpoint`: 405 for a method other than `POST` (the endpoints
    /// change state and never read a body, so no form can drive them), 403 for a request
    /// from another origin, 429 over the rate limit, otherwise
    /// [`SessionEngine::dbsc_register`] or [`SessionEngine::dbsc_refresh`]. Every answer
    /// refuses framing and carries no CORS header.
    pub async fn dbsc_answer(
        &self,
        endpoint: DbscEndpoint,
        method: &str,
        request: DbscRequest<'_>,
    ) -> DbscResponse {
        let Some(dbsc) = self.dbsc() else {
            return DbscResponse::empty(404);
        };
        if method != "POST" {
            let mut response = DbscResponse::refused(405, "DBSC endpoints take POST only");
            response.headers.push(("Allow", "POST".into()));
            return response;
        }
        if request
            .origin
            .is_some_and(|o| !o.trim().eq_ignore_ascii_case(&dbsc.origin))
        {
            return DbscResponse::refused(403, "cross-origin DBSC request");
        }
        let session = match endpoint {
            DbscEndpoint::Registration => match request.session {
                Some(session) => session.ticket_key().await,
                None => None,
            },
            DbscEndpoint::Refresh => refresh_key(request.session_id),
        };
        if let Err(wait) = dbsc.limits.check(session.as_ref(), request.client) {
            let mut response = DbscResponse::refused(429, "too many DBSC requests");
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers
                .push(("Retry-After", seconds.max(1).to_string()));
            return response;
        }
        match endpoint {
            DbscEndpoint::Registration => self.dbsc_register(request).await,
            DbscEndpoint::Refresh => self.dbsc_refresh(request).await,
        }
    }

    /// The registration endpoint (`POST`, no body): checks the proof against the key in its
    /// own header and a challenge issued at login for the session, binds the session to the
    /// key (once: a bound session is never rebound), and answers the session instructions
    /// with a fresh bound cookie and the next challenge.
    pub async fn dbsc_register(&self, request: DbscRequest<'_>) -> DbscResponse {
        let Some(dbsc) = self.dbsc() else {
            return DbscResponse::empty(404);
        };
        let Some(proof) = request.proof else {
            return DbscResponse::refused(400, "Secure-Session-Response missing");
        };
        let (proof, device_key) = match verify_registration(proof, None) {
            Ok(verified) => verified,
            Err(e) => return DbscResponse::refused(proof_status(e.kind()), &e.to_string()),
        };
        answer(async {
            let Some(key) = self.take_challenge(proof.challenge()).await? else {
                return Ok(DbscResponse::empty(403));
            };
            let Some(record) = self.load_record(&key).await? else {
                return Ok(DbscResponse::empty(401));
            };
            if record.data.contains_key(DEVICE_KEY_FIELD) {
                return Ok(DbscResponse::empty(403));
            }
            let patch = Patch::new(Timestamp::now(), record.meta.expires_at)
                .set(DEVICE_KEY_FIELD, device_key.to_jwk());
            if !self.apply_patch(&key, &patch).await? {
                return Ok(DbscResponse::empty(401));
            }
            self.refreshed(dbsc, &key).await
        })
        .await
    }

    /// The refresh endpoint (`POST`, no body, `Sec-Secure-Session-Id`): 401 when the session
    /// is gone or not bound (the browser then ends it); 403 with a fresh challenge when the
    /// proof is missing, stale or invalid; 200 with a new bound cookie for a proof signed by
    /// the session's key over a challenge issued for it.
    pub async fn dbsc_refresh(&self, request: DbscRequest<'_>) -> DbscResponse {
        let Some(dbsc) = self.dbsc() else {
            return DbscResponse::empty(404);
        };
        let Some(key) = refresh_key(request.session_id) else {
            return DbscResponse::refused(400, "Sec-Secure-Session-Id missing or malformed");
        };
        answer(async {
            let record = self.load_record(&key).await?;
            let Some(device_key) = record
                .as_ref()
                .and_then(|r| r.data.get(DEVICE_KEY_FIELD))
                .and_then(|jwk| DeviceKey::from_jwk(jwk).ok())
            else {
                return Ok(DbscResponse::empty(401));
            };
            let verified = match request.proof.map(|p| verify_refresh(p, &device_key)) {
                Some(Ok(proof)) => proof,
                Some(Err(e)) if proof_status(e.kind()) == 400 => {
                    return Ok(DbscResponse::refused(400, &e.to_string()));
                }
                _ => return self.challenge_response(dbsc, &key).await,
            };
            if self.take_challenge(verified.challenge()).await? != Some(key) {
                return self.challenge_response(dbsc, &key).await;
            }
            self.refreshed(dbsc, &key).await
        })
        .await
    }

    /// 200: a new bound cookie, the next challenge, the session instructions.
    async fn refreshed(&self, dbsc: &DbscSettings, key: &SessionKey) -> Result<DbscResponse> {
        let handle = key.to_handle();
        let cookie = self.bound_cookie();
        let set_cookie = self.bound_set_cookie(key, dbsc.bound_lifetime, true);
        let attributes = &set_cookie[set_cookie.find("; Path=").map_or(0, |i| i + 2)..];
        let body = Instructions {
            session_identifier: &handle,
            refresh_url: &dbsc.refresh_path,
            origin: &dbsc.origin,
            include_site: dbsc.include_site,
            cookie_name: &cookie.name,
            cookie_attributes: attributes,
        }
        .to_json();
        let mut response = self.challenge_response(dbsc, key).await?;
        response.status = 200;
        response.headers.push(("Set-Cookie", set_cookie));
        response
            .headers
            .push(("Content-Type", "application/json".into()));
        response.body = body;
        Ok(response)
    }

    /// 403 with `Secure-Session-Challenge`: a fresh challenge for the session.
    async fn challenge_response(
        &self,
        dbsc: &DbscSettings,
        key: &SessionKey,
    ) -> Result<DbscResponse> {
        let challenge = self.put_challenge(dbsc, key).await?;
        let mut response = DbscResponse::empty(403);
        let value = challenge_header(&challenge, &key.to_handle())
            .expect("a challenge and a handle are base64url");
        response.headers.push((CHALLENGE_HEADER, value));
        Ok(response)
    }
}

/// The session key a refresh names in `Sec-Secure-Session-Id` (bare or quoted).
fn refresh_key(header: Option<&str>) -> Option<SessionKey> {
    SessionKey::from_handle(header?.trim().trim_matches('"'))
}

/// 400 for a proof that is not one (too large, malformed), 403 for one that fails a check.
fn proof_status(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::TooLarge | ErrorKind::Malformed => 400,
        _ => 403,
    }
}
