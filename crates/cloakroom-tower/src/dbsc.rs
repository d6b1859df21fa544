//! [`DeviceBoundLayer`] (feature `dbsc`): routes that need a device-bound session.
//!
//! The [`SessionLayer`](crate::SessionLayer) answers the DBSC registration and refresh
//! endpoints and offers registration at login (see
//! [`DbscSettings`](cloakroom_core::dbsc::DbscSettings)); this layer, put on the routes
//! that need it (inside the session layer), refuses a request whose session is device-bound
//! but carries no fresh bound cookie (a copied ticket), and under
//! [`DbscPolicy::Required`](cloakroom_core::dbsc::DbscPolicy::Required) a logged-in session
//! that never registered, once the login's grace is over. See
//! [`Session::dbsc_admits`](cloakroom_core::Session::dbsc_admits).
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use axum::{Router, routing::get};
//! use cloakroom_core::dbsc::{DbscPolicy, DbscSettings};
//! use cloakroom_core::{Key, KeyRing, MemoryStore, SessionSettings};
//! use cloakroom_tower::{DeviceBoundLayer, SessionLayer};
//!
//! let dbsc = DbscSettings::new("https://app.example").unwrap().with_policy(DbscPolicy::Optional);
//! let engine = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate()))
//!     .with_dbsc(dbsc)
//!     .build();
//! let app: Router = Router::new()
//!     .route("/account", get(|| async { "bound sessions only" }))
//!     .layer(DeviceBoundLayer::new().with_redirect("/login"))
//!     .route("/login", get(|| async { "log in" }))
//!     .layer(SessionLayer::new(engine));
//! # let _ = app;
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cloakroom_core::Session;
use cloakroom_core::response::dbsc_refusal;
use http::header::COOKIE;
use http::{HeaderValue, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::session::StoreFailure;

/// Routes that need a device-bound session: refused requests get
/// [`dbsc_refusal`] (401, or a redirect for pages when one is set). Cheap to clone.
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct DeviceBoundLayer {
    redirect: Option<Arc<str>>,
}

impl DeviceBoundLayer {
    /// Refusals answered `401 Unauthorized` (API routes).
    pub fn new() -> Self {
        DeviceBoundLayer::default()
    }

    /// Refused `GET` and `HEAD` requests are redirected (303) to `path`, e.g. the login
    /// page (which must not be behind this layer); other methods still get 401. Default:
    /// no redirect.
    pub fn with_redirect(mut self, path: &str) -> Self {
        self.redirect = Some(path.into());
        self
    }
}

impl<S> Layer<S> for DeviceBoundLayer {
    type Service = DeviceBound<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeviceBound {
            inner,
            redirect: self.redirect.clone(),
        }
    }
}

/// The service made by [`DeviceBoundLayer`].
#[derive(Clone)]
pub struct DeviceBound<S> {
    inner: S,
    redirect: Option<Arc<str>>,
}

impl<S> fmt::Debug for DeviceBound<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceBound")
            .field("redirect", &self.redirect)
            .finish_non_exhaustive()
    }
}

/// The future of [`DeviceBound`].
pub type ResponseFuture<B, E> = Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for DeviceBound<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The clone that was made ready serves this request (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let redirect = self.redirect.clone();
        Box::pin(async move {
            let Some(session) = req.extensions().get::<Session>().cloned() else {
                tracing::error!("DeviceBoundLayer on a route without the session layer");
                let mut res = Response::new(ResBody::from(
                    "server misconfigured: no session layer\n".to_owned(),
                ));
                *res.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                return Ok(res);
            };
            let cookies = req.headers().get_all(COOKIE).iter();
            match session
                .dbsc_admits(cookies.map(HeaderValue::as_bytes))
                .await
            {
                Ok(true) => inner.call(req).await,
                Ok(false) => {
                    tracing::info!(path = req.uri().path(), "device-bound session refused");
                    let refusal = dbsc_refusal(req.method(), redirect.as_deref());
                    Ok(refusal.map(ResBody::from))
                }
                Err(error) => {
                    let mut res = Response::new(ResBody::from(String::new()));
                    res.extensions_mut().insert(StoreFailure(Arc::new(error)));
                    Ok(res)
                }
            }
        })
    }
}
