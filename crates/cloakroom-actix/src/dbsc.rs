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
use cloakroom_core::session::{CommitOutcome, SessionEngine};

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
/// of a request whose bound cookie is near its expiry
/// ([`SessionEngine::dbsc_response_headers`]).
pub(crate) async fn after_commit(
    engine: &SessionEngine,
    session: &Session,
    outcome: &CommitOutcome,
    near: Option<NearExpiry>,
    headers: &mut header::HeaderMap,
) {
    for (name, value) in engine.dbsc_response_headers(session, outcome, near).await {
        let name = HeaderName::from_bytes(name.as_bytes());
        if let (Ok(name), Ok(value)) = (name, HeaderValue::from_str(&value)) {
            if name != CACHE_CONTROL || !headers.contains_key(CACHE_CONTROL) {
                headers.append(name, value);
            }
        }
    }
}
