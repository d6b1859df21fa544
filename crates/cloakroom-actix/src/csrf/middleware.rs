//! [`CsrfMiddleware`]: the CSRF settings, and [`CsrfMiddlewareService`], which checks unsafe
//! requests with the core's check, hands the rest on, and sets the `_xsrf` and SPA cookies
//! the core asks for.

use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{BodyStream, EitherBody, MessageBody, to_bytes_limited};
use actix_web::dev::{self, Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::{HttpMessage, HttpResponse};
use cloakroom_core::csrf::{
    self, BodyError, CheckError, CsrfRequest, CsrfSettings, OnRejection, ProtectionError, Reason,
    ResponseFormat, TokenSource, default_rejection,
};

use super::CsrfToken;
use crate::convert::{ActixHeaders, add_cookie, to_actix};

/// The settings the middleware gives its services.
#[derive(Clone)]
struct Config {
    settings: CsrfSettings,
    on_reject: Arc<dyn OnRejection>,
}

/// The CSRF middleware (`App::wrap(middleware.clone())`, *before* the session middleware's
/// `wrap`, so that it runs inside it). Cheap to clone. Its settings are the core's
/// [`CsrfSettings`] (the same the tower `CsrfLayer` takes); the middleware adds only the
/// rejection hook.
///
/// ```
/// use cloakroom_actix::CsrfMiddleware;
/// use cloakroom_actix::csrf::{CsrfSettings, SpaCookie};
///
/// let settings = CsrfSettings::new()
///     .with_cookie_secure(false).unwrap() // http:// in development
///     .with_spa_cookie(SpaCookie::default()).unwrap();
/// let csrf = CsrfMiddleware::new(settings);
/// # let _ = csrf;
/// ```
#[derive(Clone)]
#[must_use]
pub struct CsrfMiddleware {
    config: Arc<Config>,
}

impl fmt::Debug for CsrfMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrfMiddleware")
            .field("settings", &self.config.settings)
            .finish_non_exhaustive()
    }
}

impl From<CsrfSettings> for CsrfMiddleware {
    fn from(settings: CsrfSettings) -> Self {
        CsrfMiddleware::new(settings)
    }
}

impl CsrfMiddleware {
    /// Protection checking with `settings`, refusals answered by [`default_rejection`].
    pub fn new(settings: CsrfSettings) -> Self {
        CsrfMiddleware {
            config: Arc::new(Config {
                settings,
                on_reject: Arc::new(default_rejection),
            }),
        }
    }

    /// The response for refused requests: anything implementing [`OnRejection`], closures
    /// `Fn(&ProtectionError, ResponseFormat) -> http::Response<String>` included (the same
    /// hook the tower layer takes). Default: [`default_rejection`].
    pub fn with_rejection_handler(mut self, handler: impl OnRejection) -> Self {
        Arc::make_mut(&mut self.config).on_reject = Arc::new(handler);
        self
    }
}

impl<S, B> Transform<S, ServiceRequest> for CsrfMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = CsrfMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CsrfMiddlewareService {
            service: Rc::new(service),
            config: self.config.clone(),
        }))
    }
}

/// The service made by [`CsrfMiddleware`].
pub struct CsrfMiddlewareService<S> {
    service: Rc<S>,
    config: Arc<Config>,
}

impl<S> fmt::Debug for CsrfMiddlewareService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrfMiddlewareService")
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for CsrfMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let settings = &self.config.settings;
        let session = req.extensions().get::<cloakroom_core::Session>().cloned();
        let source = settings.token_source(session, &ActixHeaders(req.headers()));
        // Exempt and token paths are decided on the path actix-web routes on: percent-decoded
        // but for `%2F`, `%25` and `%2B` (`POST /%6Cogin` reaches the `/login` handler).
        let safe = settings.skips_check(req.method().as_str(), req.match_info().as_str());
        req.extensions_mut().insert(CsrfToken(source.clone()));
        let service = Rc::clone(&self.service);
        let config = self.config.clone();
        Box::pin(async move {
            let req = if safe {
                req
            } else {
                match check(&config, &source, req).await {
                    Ok(req) => req,
                    Err(refused) => return Ok(refused.map_into_right_body()),
                }
            };
            let mut res = service.call(req).await?;
            // After the handler: a login has rotated the secret by now, and the session
            // middleware (outside this one) has not committed yet. Each cookie comes with
            // `Cache-Control: no-store` (unless the handler chose a policy) and `Vary: Cookie`,
            // as the session cookie does.
            for cookie in source.response_cookies(&config.settings).await {
                add_cookie(res.headers_mut(), &cookie);
            }
            Ok(res.map_into_left_body())
        })
    }
}

/// Runs the core's check; returns the request (its form body buffered and put back if it
/// was read) to hand on, or the response to send instead.
async fn check(
    config: &Config,
    source: &TokenSource,
    mut req: ServiceRequest,
) -> Result<ServiceRequest, ServiceResponse> {
    let settings = &config.settings;
    let headers = ActixHeaders(req.headers());
    let format = ResponseFormat::of(&headers);
    // Logged as it came; checked as the router matches it.
    let path = req.path().to_owned();
    let routed = req.match_info().as_str().to_owned();
    let begun = settings.begin_check(&CsrfRequest {
        method: req.method().as_str(),
        path: &routed,
        query: req.uri().query(),
        authority: req.uri().authority().map(|a| a.as_str()),
        headers: &headers,
    });
    let mut pending = match begun {
        Ok(pending) => pending,
        Err(reason) => return Err(req.into_response(refused(config, reason, format, &path))),
    };
    if pending.form_body().is_some() {
        let payload = req.take_payload();
        match to_bytes_limited(BodyStream::new(payload), settings.body_limit()).await {
            Ok(Ok(bytes)) => {
                pending.read_form(&bytes);
                req.set_payload(dev::Payload::from(bytes));
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not read the form body for the CSRF check");
                let res = to_actix(csrf::body_error_response(BodyError::Unreadable));
                return Err(req.into_response(res));
            }
            Err(_) => {
                let res = to_actix(csrf::body_error_response(BodyError::TooLarge));
                return Err(req.into_response(res));
            }
        }
    }
    match pending.finish(source).await {
        Ok(()) => Ok(req),
        Err(CheckError::Refused(reason)) => {
            Err(req.into_response(refused(config, reason, format, &path)))
        }
        Err(CheckError::Store(error)) => {
            // Logged and answered by the session middleware outside, with its error handler.
            let mut res = to_actix(crate::default_error_response(&error));
            res.extensions_mut()
                .insert(crate::middleware::StoreFailure(error));
            Err(req.into_response(res))
        }
    }
}

/// The response for a refused request: the core's
/// [`rejection_response`](csrf::rejection_response) (logged, built by the hook), with the
/// [`ProtectionError`] carried over into the actix response's extensions.
fn refused(config: &Config, reason: Reason, format: ResponseFormat, path: &str) -> HttpResponse {
    let mut res = csrf::rejection_response(config.on_reject.as_ref(), reason, format, path);
    let error = res.extensions_mut().remove::<ProtectionError>();
    let mut res = to_actix(res);
    if let Some(error) = error {
        res.extensions_mut().insert(error);
    }
    res
}
