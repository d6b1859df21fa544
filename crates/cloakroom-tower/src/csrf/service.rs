//! [`CsrfService`]: checks unsafe requests, hands the rest on untouched, and sets the
//! `_xsrf` cookie when a response needed a new secret.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cloakroom_core::csrf::{
    self, BodyError, CheckError, CsrfRequest, Reason, ResponseFormat, TokenSource,
};
use cloakroom_core::response::add_session_cookie;
use cloakroom_core::session::Session;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use tower_service::Service;

use super::{Config, CsrfToken};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The service made by [`CsrfLayer`](super::CsrfLayer).
#[derive(Clone)]
pub struct CsrfService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> fmt::Debug for CsrfService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrfService").finish_non_exhaustive()
    }
}

impl<S> CsrfService<S> {
    pub(super) fn new(inner: S, config: Arc<Config>) -> Self {
        CsrfService { inner, config }
    }
}

/// The future of [`CsrfService`].
pub type ResponseFuture<B, E> = Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>;

/// Appends a `Set-Cookie` header the core made, with `Cache-Control: no-store` (unless the
/// handler chose a policy) and `Vary: Cookie`, as the session layer sends its own cookie: a
/// shared cache must not hand one client's token cookie to another.
fn append_cookie<B>(res: &mut Response<B>, cookie: &str) {
    add_session_cookie(res.headers_mut(), cookie);
}

/// The path whose token rule applies: the path the router matches, unless the layer sits in
/// a router nested under a prefix (axum's `Router::nest` strips it) and the full path names
/// a token path. Fail-closed: a token path written in full still needs its token there.
fn checked_path<B>(settings: &cloakroom_core::csrf::CsrfSettings, req: &Request<B>) -> String {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::OriginalUri(full)) = req.extensions().get() {
        if !settings.needs_token(req.uri().path()) && settings.needs_token(full.path()) {
            return full.path().to_owned();
        }
    }
    #[cfg(not(feature = "axum"))]
    let _ = settings;
    req.uri().path().to_owned()
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CsrfService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: http_body::Body<Data = Bytes> + From<Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let settings = &self.config.settings;
        let session = req.extensions().get::<Session>().cloned();
        let source = settings.token_source(session, req.headers());
        let safe = settings.skips_check(req.method().as_str(), req.uri().path());
        req.extensions_mut().insert(CsrfToken(source.clone()));
        if safe && !source.has_spa_cookie() {
            // The inner service's future as it is, then the `_xsrf` cookie if the response
            // made a new secret.
            let inner = self.inner.call(req);
            let config = self.config.clone();
            return Box::pin(async move {
                let mut res = inner.await?;
                if let Some(cookie) = source.xsrf_set_cookie(&config.settings) {
                    append_cookie(&mut res, &cookie);
                }
                Ok(res)
            });
        }
        let config = self.config.clone();
        // The ready service goes with the request; this one stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // An unsafe request: checked (which may read the form body), then handed on; or,
        // with the SPA cookie on, any request (the cookie is refreshed after the handler).
        Box::pin(async move {
            let req = if safe {
                req
            } else {
                match check(&config, &source, req).await {
                    Ok(checked) => checked,
                    Err(res) => return Ok(res.map(ResBody::from)),
                }
            };
            let mut res = inner.call(req).await?;
            // After the handler: a login has rotated the secret by now, and the session
            // layer (outside this one) has not committed yet.
            for cookie in source.response_cookies(&config.settings).await {
                append_cookie(&mut res, &cookie);
            }
            Ok(res)
        })
    }
}

/// The response for a refused request: built by the configured hook (through the core's
/// [`rejection_response`](csrf::rejection_response), which logs it and puts the
/// [`ProtectionError`](csrf::ProtectionError) in its extensions, and counts it).
fn refused(
    config: &Config,
    reason: Reason,
    format: ResponseFormat,
    path: &str,
) -> Response<String> {
    csrf::rejection_response(config.on_reject.as_ref(), reason, format, path)
}

/// Runs the core's check; returns the request (its body buffered if it was read) to hand
/// on, or the response to send instead.
async fn check<B>(
    config: &Config,
    source: &TokenSource,
    req: Request<B>,
) -> Result<Request<B>, Response<String>>
where
    B: http_body::Body<Data = Bytes> + From<Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let settings = &config.settings;
    let format = ResponseFormat::of(req.headers());
    let path = checked_path(settings, &req);
    let refuse = |reason| refused(config, reason, format, &path);
    let begun = settings.begin_check(&CsrfRequest {
        method: req.method().as_str(),
        path: &path,
        query: req.uri().query(),
        authority: req.uri().authority().map(|a| a.as_str()),
        headers: req.headers(),
    });
    let mut pending = begun.map_err(refuse)?;
    let mut req = req;
    if pending.form_body().is_some() {
        let (parts, body) = req.into_parts();
        let bytes = match Limited::new(body, settings.body_limit()).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                let error = if over_a_limit(&*e) {
                    BodyError::TooLarge
                } else {
                    tracing::warn!(error = %e, "could not read the form body for the CSRF check");
                    BodyError::Unreadable
                };
                return Err(csrf::body_error_response(error));
            }
        };
        pending.read_form(&bytes);
        req = Request::from_parts(parts, B::from(bytes));
    }
    match pending.finish(source).await {
        Ok(()) => Ok(req),
        Err(CheckError::Refused(reason)) => Err(refuse(reason)),
        Err(CheckError::Store(e)) => {
            // Logged and answered by the session layer outside, with its error handler.
            let mut res = crate::session::default_error_response(&e);
            res.extensions_mut()
                .insert(crate::session::StoreFailure(Arc::new(e)));
            Err(res)
        }
    }
}

/// Whether a body error is a length limit's: this layer's own, or an outer one (tower-http's
/// `RequestBodyLimitLayer` wraps a chunked body in `Limited`, whose error reaches this layer
/// inside `axum::Error` or another body's error), found along the `source()` chain.
fn over_a_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source())
        .any(|e| e.is::<http_body_util::LengthLimitError>())
}
