//! The DBSC endpoints and headers in the session middleware (feature `dbsc`): the
//! [`SessionMiddleware`](crate::SessionMiddleware) answers the registration and refresh
//! endpoints and offers registration at login (see
//! [`DbscSettings`](cloakroom_core::dbsc::DbscSettings)); [`DeviceBound`](crate::DeviceBound)
//! guards the routes that need a bound session.

use actix_web::dev::ServiceRequest;
use actix_web::http::header::{self, CACHE_CONTROL, HeaderName, HeaderValue};
use cloakroom_core::Session;
use cloakroom_core::dbsc::{
    DbscEndpoint, DbscRequest, NearExpiry, RESPONSE_HEADER, SESSION_ID_HEADER,
};
use cloakroom_core::response::dbsc_response;
use cloakroom_core::session::{CommitAction, CommitOutcome, SessionEngine};

use crate::convert::to_actix;

/// Answers a request to a DBSC endpoint (the body is never read).
pub(crate) async fn answer(
    engine: SessionEngine,
    endpoint: DbscEndpoint,
    req: &ServiceRequest,
    session: Session,
) -> actix_web::HttpResponse {
    let headers = req.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let request = DbscRequest {
        session_id: text(SESSION_ID_HEADER),
        proof: text(RESPONSE_HEADER),
        origin: text("origin"),
        client: req.peer_addr().map(|a| a.ip()),
        session: Some(&session),
    };
    let answer = engine
        .dbsc_answer(endpoint, req.method().as_str(), request)
        .await;
    to_actix(dbsc_response(answer))
}

/// After the commit: a login's bound cookie and registration offer, or the early challenge
/// of a request whose bound cookie is near its expiry. A store failure here leaves the
/// response as it is, without them (logged).
pub(crate) async fn after_commit(
    engine: &SessionEngine,
    session: &Session,
    outcome: &CommitOutcome,
    near: Option<NearExpiry>,
    headers: &mut header::HeaderMap,
) {
    let (extra, early) = if outcome.action == CommitAction::Renewed {
        (engine.dbsc_headers(session, outcome).await, false)
    } else if let Some(near) = near {
        let early = engine.dbsc_early_challenge(session, outcome, near).await;
        (early.map(Vec::from_iter), true)
    } else {
        return;
    };
    match extra {
        Ok(extra) => {
            // A challenge names the session: like a ticket, not for a shared cache (unless
            // the handler chose a caching policy).
            if early && !extra.is_empty() && !headers.contains_key(CACHE_CONTROL) {
                headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            for (name, value) in extra {
                let name = HeaderName::from_bytes(name.as_bytes());
                if let (Ok(name), Ok(value)) = (name, HeaderValue::from_str(&value)) {
                    headers.append(name, value);
                }
            }
        }
        Err(error) => tracing::warn!(%error, "DBSC headers not added"),
    }
}
