//! [`GuardMiddleware`]: runs a [`Guard`] on the scopes or resources it wraps (inside the
//! [`SessionMiddleware`](crate::SessionMiddleware), which gives the request its session).
//! Cloakroom's guards have names of their own: [`RecentLoginMiddleware`] ("sudo mode") and,
//! with the feature `dbsc`, [`DeviceBound`].
//!
//! ```
//! use std::time::Duration;
//! use actix_web::{App, web};
//! use cloakroom_actix::{RecentLogin, RecentLoginMiddleware, SessionMiddleware};
//! use cloakroom_core::{Key, KeyRing, MemoryStore, SessionSettings};
//!
//! let engine = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate())).build();
//! let recent = RecentLogin::new(Duration::from_secs(300), "/confirm").unwrap();
//! let app = App::new()
//!     .service(
//!         web::resource("/account/delete")
//!             .wrap(RecentLoginMiddleware::new(recent))
//!             .route(web::post().to(|| async { "deleted" })),
//!     )
//!     .wrap(SessionMiddleware::new(engine));
//! # let _ = app;
//! ```
//!
//! ```
//! # #[cfg(feature = "dbsc")] {
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
//! # }
//! ```

use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::{HttpMessage, HttpResponse};
#[cfg(feature = "dbsc")]
use cloakroom_core::guard::DeviceBinding;
pub use cloakroom_core::guard::{Guard, GuardRequest};
pub use cloakroom_core::recent_login::RecentLogin;

use crate::convert::{ActixHeaders, to_actix};
use crate::middleware::StoreFailure;

/// Middleware that runs the guard `G` (see the [module](self)). Cheap to clone.
#[must_use]
pub struct GuardMiddleware<G> {
    guard: Arc<G>,
}

impl<G> Clone for GuardMiddleware<G> {
    fn clone(&self) -> Self {
        GuardMiddleware {
            guard: self.guard.clone(),
        }
    }
}

impl<G: fmt::Debug> fmt::Debug for GuardMiddleware<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardMiddleware")
            .field("guard", &self.guard)
            .finish()
    }
}

impl<G: Guard> From<G> for GuardMiddleware<G> {
    fn from(guard: G) -> Self {
        GuardMiddleware {
            guard: Arc::new(guard),
        }
    }
}

/// The recent-login guard ([`RecentLogin`]) as middleware.
pub type RecentLoginMiddleware = GuardMiddleware<RecentLogin>;

impl GuardMiddleware<RecentLogin> {
    /// A guard with `settings` (how recent, where to confirm, where to log in).
    pub fn new(settings: RecentLogin) -> Self {
        settings.into()
    }
}

/// The device-binding guard ([`DeviceBinding`]) as middleware.
#[cfg(feature = "dbsc")]
pub type DeviceBound = GuardMiddleware<DeviceBinding>;

#[cfg(feature = "dbsc")]
impl GuardMiddleware<DeviceBinding> {
    /// Refusals answered `401 Unauthorized` (API routes).
    pub fn new() -> Self {
        DeviceBinding::new().into()
    }

    /// Refused `GET` and `HEAD` requests are redirected (303) to `path` (see
    /// [`DeviceBinding::with_redirect`]).
    pub fn with_redirect(self, path: &str) -> Self {
        let guard = Arc::unwrap_or_clone(self.guard);
        guard.with_redirect(path).into()
    }
}

#[cfg(feature = "dbsc")]
impl Default for GuardMiddleware<DeviceBinding> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S, B, G> Transform<S, ServiceRequest> for GuardMiddleware<G>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
    G: Guard,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = GuardService<S, G>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(GuardService {
            service: Rc::new(service),
            guard: self.guard.clone(),
        }))
    }
}

/// The service made by [`GuardMiddleware`].
pub struct GuardService<S, G> {
    service: Rc<S>,
    guard: Arc<G>,
}

impl<S, G: fmt::Debug> fmt::Debug for GuardService<S, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardService")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl<S, B, G> Service<ServiceRequest> for GuardService<S, G>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
    G: Guard,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let guard = self.guard.clone();
        Box::pin(async move {
            let Some(session) = req.extensions().get::<cloakroom_core::Session>().cloned() else {
                tracing::error!("a guard on a route without the session middleware");
                let res = HttpResponse::InternalServerError()
                    .content_type("text/plain; charset=utf-8")
                    .body("server misconfigured: no session middleware\n");
                return Ok(req.into_response(res).map_into_right_body());
            };
            let target = (req.uri().path_and_query())
                .map_or_else(|| req.path().to_owned(), |pq| pq.as_str().to_owned());
            let request = GuardRequest {
                method: req.method().as_str(),
                target: &target,
                headers: &ActixHeaders(req.headers()),
            };
            let res = match guard.check(&session, request).await {
                Ok(None) => return Ok(service.call(req).await?.map_into_left_body()),
                Ok(Some(refused)) => to_actix(refused),
                Err(error) => {
                    // Answered by the session middleware's error handler.
                    let mut res = HttpResponse::ServiceUnavailable().finish();
                    res.extensions_mut().insert(StoreFailure(error));
                    res
                }
            };
            Ok(req.into_response(res).map_into_right_body())
        })
    }
}
