//! [`CsrfService`]: checks unsafe requests, hands the rest on untouched, and sets the
//! `_xsrf` cookie when a response needed a new secret.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use cloakroom_core::cookie::cookie_values;
use cloakroom_core::csrf::{
    self, FIELD_NAME, FormKind, HEADER_NAMES, ProtectionError, Reason, RequestOrigin, Secret,
};
use cloakroom_core::session::Session;
use http::header::{CONTENT_TYPE, COOKIE, HOST, HeaderValue, SET_COOKIE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::response::plain;
use super::{Config, CsrfToken, ResponseFormat};

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

pin_project! {
    /// The future of [`CsrfService`].
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        state: State<F, B, E>,
    }
}

pin_project! {
    #[project = Projected]
    enum State<F, B, E> {
        // A safe (or exempt) request: the inner service's future as it is, then the `_xsrf`
        // cookie if the response made a new secret (`new_cookie`: the slot for it, requests
        // without a cookie only). Allocates nothing.
        Passed {
            #[pin]
            inner: F,
            new_cookie: Option<Arc<OnceLock<Secret>>>,
            config: Arc<Config>,
        },
        // An unsafe request: checked (which may read the form body), then handed on; or,
        // with the SPA cookie on, any request (the cookie is refreshed after the handler).
        Checked {
            inner: Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>,
        },
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("csrf::ResponseFuture")
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            Projected::Passed {
                inner,
                new_cookie,
                config,
            } => {
                let mut res = std::task::ready!(inner.poll(cx))?;
                if let Some(secret) = new_cookie.as_ref().and_then(|slot| slot.get()) {
                    set_cookie(&mut res, config, secret);
                }
                Poll::Ready(Ok(res))
            }
            Projected::Checked { inner } => inner.as_mut().poll(cx),
        }
    }
}

/// Adds the `_xsrf` cookie carrying `secret` (masked, as Tornado sets it).
fn set_cookie<B>(res: &mut Response<B>, config: &Config, secret: &Secret) {
    let value = config.cookie.set_cookie(&secret.mask(), None);
    if let Ok(v) = HeaderValue::from_str(&value) {
        res.headers_mut().append(SET_COOKIE, v);
    }
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
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let cookie_secret = cookie_secret(req.headers(), &self.config.cookie.name);
        // With the SPA cookie on: the value the request's one holds, to refresh it if stale.
        let spa_value = self
            .config
            .modes
            .spa
            .as_ref()
            .map(|spa| spa.request_value(req.headers()));
        let new_cookie = cookie_secret.is_none().then(Arc::default);
        let token = CsrfToken {
            session: req.extensions().get::<Session>().cloned(),
            mode: self.config.mode,
            cookie_secret,
            new_cookie: new_cookie.clone(),
            spa_wanted: spa_value.as_ref().map(|_| Arc::default()),
        };
        let exempt = self.config.exempt.iter().any(|p| p == req.uri().path());
        let safe = exempt || csrf::is_safe_method(req.method().as_str());
        if safe && spa_value.is_none() {
            req.extensions_mut().insert(token);
            let state = State::Passed {
                inner: self.inner.call(req),
                new_cookie,
                config: self.config.clone(),
            };
            return ResponseFuture { state };
        }
        req.extensions_mut().insert(token.clone());
        let config = self.config.clone();
        // The ready service goes with the request; this one stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = State::Checked {
            inner: Box::pin(async move {
                let req = if safe {
                    req
                } else {
                    match check(&config, &token, req).await {
                        Ok(checked) => checked,
                        Err(Refusal::Reason(reason, format, path)) => {
                            let res = refused(&config, reason, format, &path);
                            return Ok(res.map(ResBody::from));
                        }
                        Err(Refusal::Response(res)) => return Ok(res.map(ResBody::from)),
                    }
                };
                let mut res = inner.call(req).await?;
                let spa = config.modes.spa.as_ref().zip(spa_value);
                let spa = spa.filter(|(spa, current)| {
                    spa.is_eager() || current.is_some() || token.spa_wanted()
                });
                if let Some((spa, current)) = spa {
                    // After the handler: a login has rotated the secret by now, and the
                    // session layer (outside this one) has not committed yet.
                    match token.secret().await {
                        Ok(secret) => spa.refresh(&config, &secret, current.as_deref(), &mut res),
                        Err(e) => {
                            tracing::warn!(error = %e, "no CSRF secret for the SPA cookie");
                        }
                    }
                }
                if let Some(secret) = token.new_cookie_secret() {
                    set_cookie(&mut res, &config, secret);
                }
                Ok(res)
            }),
        };
        ResponseFuture { state }
    }
}

/// The response for a refused request: logged, counted (with the `metrics` feature), built
/// by the configured hook, with the [`ProtectionError`] in its extensions.
fn refused(
    config: &Config,
    reason: Reason,
    format: ResponseFormat,
    path: &str,
) -> Response<String> {
    tracing::warn!(reason = reason.as_str(), %path, "CSRF check refused request");
    #[cfg(feature = "metrics")]
    metrics::counter!("cloakroom_csrf_rejections_total", "reason" => reason.as_str()).increment(1);
    let error = ProtectionError::new(reason);
    let mut res = config.on_reject.on_rejection(&error, format);
    res.extensions_mut().insert(error);
    res
}

/// The `_xsrf` cookie's secret, if the request carries a valid one: the first cookie of that
/// name that decodes, read as bytes from every `Cookie` header (a neighbour's malformed
/// cookie costs only itself).
fn cookie_secret(headers: &http::HeaderMap, name: &str) -> Option<Secret> {
    let values = headers.get_all(COOKIE).iter().map(HeaderValue::as_bytes);
    cookie_values(values, name).find_map(|v| csrf::decode_token(v).ok())
}

/// The token in a header: the SPA cookie's header first (if on), then [`HEADER_NAMES`].
fn header_token<B>(config: &Config, req: &Request<B>) -> Option<String> {
    let spa = config
        .modes
        .spa
        .as_ref()
        .map(|spa| spa.header_name().as_str());
    spa.into_iter().chain(HEADER_NAMES).find_map(|h| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    })
}

fn query_token<B>(req: &Request<B>) -> Option<String> {
    let q = req.uri().query()?;
    csrf::urlencoded_field(q.as_bytes(), FIELD_NAME)
}

enum Refusal {
    Reason(Reason, ResponseFormat, String),
    Response(Response<String>),
}

/// Runs both checks; returns the request (its body buffered if it was read) to hand on.
async fn check<B>(
    config: &Config,
    token: &CsrfToken,
    req: Request<B>,
) -> Result<Request<B>, Refusal>
where
    B: http_body::Body<Data = Bytes> + From<Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let format = ResponseFormat::of(req.headers());
    let path = req.uri().path().to_owned();
    let refuse = |r: Reason| Refusal::Reason(r, format, path.clone());
    {
        let header = |name| {
            req.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let host = header(HOST).or_else(|| req.uri().authority().map(|a| a.as_str()));
        let origin = RequestOrigin {
            method: req.method().as_str(),
            sec_fetch_site: header(http::HeaderName::from_static("sec-fetch-site")),
            origin: header(http::header::ORIGIN),
            host,
        };
        csrf::check_cross_origin(&origin, &config.trusted).map_err(refuse)?;
    }
    if !config.modes.needs_token(&path) {
        return Ok(req);
    }

    let mut req = req;
    let mut submitted = header_token(config, &req);
    if submitted.is_none() {
        let kind = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(csrf::form_kind);
        if let Some((kind, boundary)) = kind {
            let (parts, body) = req.into_parts();
            let bytes = match Limited::new(body, config.body_limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) => {
                    let too_big = e
                        .downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some();
                    return Err(Refusal::Response(if too_big {
                        plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
                    } else {
                        plain(StatusCode::BAD_REQUEST, "could not read request body")
                    }));
                }
            };
            submitted = match kind {
                FormKind::UrlEncoded => csrf::urlencoded_field(&bytes, FIELD_NAME),
                FormKind::Multipart => {
                    csrf::multipart_field(&bytes, boundary.as_deref().unwrap_or(""), FIELD_NAME)
                }
            };
            req = Request::from_parts(parts, B::from(bytes));
        }
    }
    if submitted.is_none() && config.query_token {
        submitted = query_token(&req);
    }
    let submitted = submitted.ok_or_else(|| refuse(Reason::TokenMissing))?;
    // Decode first, so a malformed token is reported as such whatever the secret.
    csrf::decode_token(&submitted).map_err(refuse)?;
    let expected = match token.expected_secret().await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "session store failed during the CSRF check");
            return Err(Refusal::Response(crate::session::default_error_response(
                &e,
            )));
        }
    };
    let expected = expected.ok_or_else(|| refuse(Reason::TokenMismatch))?;
    expected.verify(&submitted).map_err(refuse)?;
    Ok(req)
}
