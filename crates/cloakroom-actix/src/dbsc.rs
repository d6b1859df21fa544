//! [`DeviceBound`] (feature `dbsc`): routes that need a device-bound session.
//!
//! The [`SessionMiddleware`](crate::SessionMiddleware) answers the DBSC registration and
//! refresh endpoints and offers registration at login (see
//! [`DbscSettings`](cloakroom_core::dbsc::DbscSettings)); this middleware, wrapped around
//! the scopes or resources that need it (inside the session middleware), refuses a request
//! whose session is device-bound but carries no fresh bound cookie (a copied ticket), and
//! under [`DbscPolicy::Required`](cloakroom_core::dbsc::DbscPolicy::Required) a logged-in
//! session that never registered, once the login's grace is over. See
//! [`Session::dbsc_admits`](cloakroom_core::Session::dbsc_admits).
//!
//! ```
//! use actix_web::{App, web};
//! use cloakroom_actix::{DeviceBound, SessionMiddleware};
//! use cloakroom_core::dbsc::DbscSettings;
//! use cloakroom_core::{Key, KeyRing, MemoryStore, SessionSettings};
//!
//! let dbsc = DbscSettings::new("https://app.example").unwrap();
//! let engine = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate()))
//!     .with_dbsc(dbsc)
//!     .build();
//! let app = App::new()
//!     .service(
//!         web::scope("/account")
//!             .wrap(DeviceBound::new().with_redirect("/login"))
//!             .route("", web::get().to(|| async { "bound sessions only" })),
//!     )
//!     .wrap(SessionMiddleware::new(engine));
//! # let _ = app;
//! ```

use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::HttpMessage;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{self, CACHE_CONTROL, HeaderName, HeaderValue};
use cloakroom_core::Session;
use cloakroom_core::dbsc::{
    DbscEndpoint, DbscRequest, NearExpiry, RESPONSE_HEADER, SESSION_ID_HEADER,
};
use cloakroom_core::response::{dbsc_refusal, dbsc_response};
use cloakroom_core::session::{CommitAction, CommitOutcome, SessionEngine};

use crate::convert::to_actix;
use crate::middleware::StoreFailure;

/// The middleware for routes that need a device-bound session: refused requests get
/// [`dbsc_refusal`] (401, or a redirect for pages when one is set). Cheap to clone.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct DeviceBound {
    redirect: Option<Arc<str>>,
}

impl DeviceBound {
    /// Refusals answered `401 Unauthorized` (API routes).
    pub fn new() -> Self {
        DeviceBound::default()
    }

    /// Refused `GET` and `HEAD` requests are redirected (303) to `path`, e.g. the login
    /// page (which must not be behind this middleware); other methods still get 401.
    /// Default: no redirect.
    pub fn with_redirect(mut self, path: &str) -> Self {
        self.redirect = Some(path.into());
        self
    }
}

impl<S, B> Transform<S, ServiceRequest> for DeviceBound
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = DeviceBoundService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(DeviceBoundService {
            service: Rc::new(service),
            redirect: self.redirect.clone(),
        }))
    }
}

/// The service made by [`DeviceBound`].
pub struct DeviceBoundService<S> {
    service: Rc<S>,
    redirect: Option<Arc<str>>,
}

impl<S> fmt::Debug for DeviceBoundService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceBoundService")
            .field("redirect", &self.redirect)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for DeviceBoundService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let redirect = self.redirect.clone();
        Box::pin(async move {
            let Some(session) = req.extensions().get::<Session>().cloned() else {
                tracing::error!("DeviceBound on a route without the session middleware");
                let res = actix_web::HttpResponse::InternalServerError()
                    .body("server misconfigured: no session middleware\n");
                return Ok(req.into_response(res).map_into_right_body());
            };
            let cookies = req.headers().get_all(header::COOKIE);
            match session
                .dbsc_admits(cookies.map(HeaderValue::as_bytes))
                .await
            {
                Ok(true) => Ok(service.call(req).await?.map_into_left_body()),
                Ok(false) => {
                    tracing::info!(path = req.path(), "device-bound session refused");
                    let method = http::Method::from_bytes(req.method().as_str().as_bytes())
                        .unwrap_or(http::Method::POST);
                    let res = to_actix(dbsc_refusal(&method, redirect.as_deref()));
                    Ok(req.into_response(res).map_into_right_body())
                }
                Err(error) => {
                    let mut res = actix_web::HttpResponse::ServiceUnavailable().finish();
                    res.extensions_mut().insert(StoreFailure(error));
                    Ok(req.into_response(res).map_into_right_body())
                }
            }
        })
    }
}

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
