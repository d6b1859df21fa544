//! [`RecentLoginMiddleware`]: refuses a request whose user did not prove who they are
//! recently ("sudo mode"), with the answers of [`cloakroom_core::recent_login`]: a redirect
//! to the confirm page for pages, a `401` with a JSON reason for APIs, a `503` if the store
//! fails. Wrap the sensitive resources or scopes with it; the app (or an outer scope) must be
//! wrapped in [`SessionMiddleware`](crate::SessionMiddleware), and the last `wrap` runs first,
//! so a resource's own `wrap` runs after the app's.
//!
//! ```
//! use std::time::Duration;
//! use actix_web::{App, web};
//! use cloakroom_actix::{RecentLogin, RecentLoginMiddleware, SessionMiddleware};
//! use cloakroom_core::{Key, KeyRing, MemoryStore, SessionSettings};
//!
//! let engine = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate())).build();
//! let recent = RecentLogin::new(Duration::from_secs(300), "/confirm").unwrap()
//!     .with_login_url("/login").unwrap();
//! let app = App::new()
//!     .wrap(SessionMiddleware::new(engine))
//!     .service(
//!         web::resource("/account/delete")
//!             .wrap(RecentLoginMiddleware::new(recent))
//!             .route(web::post().to(|| async { "deleted" })),
//!     );
//! # let _ = app;
//! ```

use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::HttpMessage;
use actix_web::HttpResponse;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};

pub use cloakroom_core::recent_login::RecentLogin;

use crate::convert::{ActixHeaders, to_actix};

/// The guard as actix-web middleware. Cheap to clone.
#[derive(Clone, Debug)]
#[must_use]
pub struct RecentLoginMiddleware {
    settings: Arc<RecentLogin>,
}

impl RecentLoginMiddleware {
    /// A guard with `settings` (how recent, where to confirm, where to log in).
    pub fn new(settings: RecentLogin) -> Self {
        RecentLoginMiddleware {
            settings: Arc::new(settings),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for RecentLoginMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = RecentLoginMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RecentLoginMiddlewareService {
            service: Rc::new(service),
            settings: self.settings.clone(),
        }))
    }
}

/// The service made by [`RecentLoginMiddleware`].
pub struct RecentLoginMiddlewareService<S> {
    service: Rc<S>,
    settings: Arc<RecentLogin>,
}

impl<S> fmt::Debug for RecentLoginMiddlewareService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecentLoginMiddlewareService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for RecentLoginMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let Some(session) = req.extensions().get::<cloakroom_core::Session>().cloned() else {
            tracing::error!("RecentLoginMiddleware on a route without SessionMiddleware");
            let res = HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("server misconfigured: no session middleware\n");
            return Box::pin(ready(Ok(req.into_response(res).map_into_right_body())));
        };
        let service = self.service.clone();
        let settings = self.settings.clone();
        Box::pin(async move {
            let target = (req.uri().path_and_query())
                .map_or_else(|| req.path().to_owned(), |pq| pq.as_str().to_owned());
            let method = req.method().as_str().to_owned();
            let refused = settings
                .check(&session, &method, &target, &ActixHeaders(req.headers()))
                .await;
            if let Some(refused) = refused {
                return Ok(req.into_response(to_actix(refused)).map_into_right_body());
            }
            Ok(service.call(req).await?.map_into_left_body())
        })
    }
}
