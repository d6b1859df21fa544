//! [`SessionMiddleware`]: the session settings and the engine they make (built once, shared
//! by every worker), and [`SessionMiddlewareService`], which gives every request its
//! session and commits it when the response is ready.

use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;

use actix_web::HttpMessage;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{COOKIE, HeaderValue, USER_AGENT};
use cloakroom_core::session::{Error, SessionEngine};

use crate::convert::{add_outcome, to_actix};
use crate::{ErrorHandler, default_error_response};
use cloakroom_core::response::error_response;

/// The session middleware (`App::wrap(middleware.clone())`). Cheap to clone. Its settings
/// are the engine's (see [`SessionSettings`](cloakroom_core::session::SessionSettings), the
/// same the tower `SessionLayer` takes); the middleware adds only the response for a store
/// failure.
///
/// ```
/// use cloakroom_actix::SessionMiddleware;
/// use cloakroom_core::{Key, KeyRing, MemoryStore, SessionSettings};
///
/// let engine = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate()))
///     .with_cookie_name("__Host-session")
///     .unwrap()
///     .build();
/// let middleware = SessionMiddleware::new(engine);
/// # let _ = middleware;
/// ```
#[derive(Clone)]
#[must_use]
pub struct SessionMiddleware {
    engine: SessionEngine,
    on_error: ErrorHandler,
}

impl fmt::Debug for SessionMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionMiddleware")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl From<SessionEngine> for SessionMiddleware {
    fn from(engine: SessionEngine) -> Self {
        SessionMiddleware::new(engine)
    }
}

impl SessionMiddleware {
    /// Sessions of `engine`, store failures answered by [`default_error_response`].
    pub fn new(engine: SessionEngine) -> Self {
        SessionMiddleware {
            engine,
            on_error: Arc::new(default_error_response),
        }
    }

    /// The response sent when the store fails. Default: [`default_error_response`].
    pub fn with_error_handler(
        mut self,
        handler: impl Fn(&Error) -> http::Response<String> + Send + Sync + 'static,
    ) -> Self {
        self.on_error = Arc::new(handler);
        self
    }
}

impl<S, B> Transform<S, ServiceRequest> for SessionMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = SessionMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(SessionMiddlewareService {
            service,
            engine: self.engine.clone(),
            on_error: self.on_error.clone(),
        }))
    }
}

/// A store failure met inside the middleware before the handler (the CSRF check loading
/// the session), carried in the response's extensions: the middleware logs it and answers
/// it with its error handler, as a failed commit.
pub(crate) struct StoreFailure(pub(crate) Error);

/// The service made by [`SessionMiddleware`].
pub struct SessionMiddlewareService<S> {
    service: S,
    engine: SessionEngine,
    on_error: ErrorHandler,
}

impl<S> fmt::Debug for SessionMiddlewareService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionMiddlewareService")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for SessionMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let headers = req.headers();
        let user_agent = headers.get(USER_AGENT).cloned();
        // Every Cookie header, read as bytes: a neighbour's cookie with a non-ASCII byte
        // costs only itself, and nothing is joined or copied.
        let cookies = headers.get_all(COOKIE).map(HeaderValue::as_bytes);
        // The ticket header is looked at only when the transport reads one.
        let ticket = (self.engine.ticket_header())
            .and_then(|name| headers.get(name))
            .map(HeaderValue::as_bytes);
        let session = match self.engine.request_session(cookies, ticket) {
            Ok(session) => session,
            Err(error) => {
                let res = to_actix(error_response(&error));
                return Box::pin(std::future::ready(Ok(req
                    .into_response(res)
                    .map_into_right_body())));
            }
        };
        // The DBSC endpoints are answered here, never by the application.
        #[cfg(feature = "dbsc")]
        if let Some(endpoint) = self.engine.dbsc_endpoint(req.path()) {
            let engine = self.engine.clone();
            return Box::pin(async move {
                let res = crate::dbsc::answer(engine, endpoint, &req, session).await;
                Ok(req.into_response(res).map_into_right_body())
            });
        }
        // A bound cookie near its expiry: the response offers an early challenge.
        #[cfg(feature = "dbsc")]
        let near = (self.engine)
            .dbsc_near_expiry(req.headers().get_all(COOKIE).map(HeaderValue::as_bytes));
        req.extensions_mut().insert(session.clone());
        let fut = self.service.call(req);
        let on_error = self.on_error.clone();
        let engine = self.engine.clone();
        Box::pin(async move {
            let mut res = fut.await?;
            let failure = res.response_mut().extensions_mut().remove::<StoreFailure>();
            if let Some(StoreFailure(error)) = failure {
                tracing::error!(%error, "session store failed before the handler; answering 503");
                let (req, _) = res.into_parts();
                let res = ServiceResponse::new(req, to_actix(on_error(&error)));
                return Ok(res.map_into_right_body());
            }
            // A request that needs no store operation to commit (one that only read its
            // session, or had none) is done here, without the commit's async lock.
            if let Some(outcome) = engine.commit_now(&session) {
                add_outcome(res.headers_mut(), &outcome);
                #[cfg(feature = "dbsc")]
                if near.is_some() {
                    crate::dbsc::after_commit(&engine, &session, &outcome, near, res.headers_mut())
                        .await;
                }
                return Ok(res.map_into_left_body());
            }
            let user_agent = user_agent.as_ref().and_then(|v| v.to_str().ok());
            match engine.commit(&session, user_agent).await {
                Ok(outcome) => {
                    add_outcome(res.headers_mut(), &outcome);
                    #[cfg(feature = "dbsc")]
                    crate::dbsc::after_commit(&engine, &session, &outcome, near, res.headers_mut())
                        .await;
                    Ok(res.map_into_left_body())
                }
                Err(error) => {
                    tracing::error!(%error, "session commit failed; answering 503");
                    let (req, _) = res.into_parts();
                    let res = ServiceResponse::new(req, to_actix(on_error(&error)));
                    Ok(res.map_into_right_body())
                }
            }
        })
    }
}
