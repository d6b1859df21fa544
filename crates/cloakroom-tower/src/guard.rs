//! [`GuardLayer`]: runs a [`Guard`] on the routes it is put on (inside the
//! [`SessionLayer`](crate::SessionLayer), which gives the request its session). Cloakroom's
//! guards have names of their own: [`RecentLoginLayer`] ("sudo mode") and, with the feature
//! `dbsc`, [`DeviceBoundLayer`].
//!
//! ```
//! # #[cfg(feature = "axum")] {
//! use std::time::Duration;
//! use axum::{Router, routing::post};
//! use cloakroom_core::{Key, KeyRing, MemoryStore, SessionSettings};
//! use cloakroom_tower::{RecentLogin, RecentLoginLayer, SessionLayer};
//!
//! let engine = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate())).build();
//! let recent = RecentLogin::new(Duration::from_secs(300), "/confirm").unwrap()
//!     .with_login_url("/login").unwrap();
//! let app: Router = Router::new()
//!     .route("/account/delete", post(|| async { "deleted" }).layer(RecentLoginLayer::new(recent)))
//!     .layer(SessionLayer::new(engine));
//! # let _ = app;
//! # }
//! ```
//!
//! ```
//! # #[cfg(all(feature = "axum", feature = "dbsc"))] {
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
use std::sync::Arc;
use std::task::{Context, Poll};

use cloakroom_core::Session;
#[cfg(feature = "dbsc")]
use cloakroom_core::guard::DeviceBinding;
pub use cloakroom_core::guard::{Guard, GuardRequest};
pub use cloakroom_core::recent_login::RecentLogin;
use http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::session::{ResponseFuture, StoreFailure};

/// A layer that runs the guard `G` (see the [module](self)). Cheap to clone.
#[must_use]
pub struct GuardLayer<G> {
    guard: Arc<G>,
}

impl<G> Clone for GuardLayer<G> {
    fn clone(&self) -> Self {
        GuardLayer {
            guard: self.guard.clone(),
        }
    }
}

impl<G: fmt::Debug> fmt::Debug for GuardLayer<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardLayer")
            .field("guard", &self.guard)
            .finish()
    }
}

impl<G: Guard> From<G> for GuardLayer<G> {
    fn from(guard: G) -> Self {
        GuardLayer {
            guard: Arc::new(guard),
        }
    }
}

/// The recent-login guard ([`RecentLogin`]) as a layer.
pub type RecentLoginLayer = GuardLayer<RecentLogin>;

impl GuardLayer<RecentLogin> {
    /// A guard with `settings` (how recent, where to confirm, where to log in).
    pub fn new(settings: RecentLogin) -> Self {
        settings.into()
    }
}

/// The device-binding guard ([`DeviceBinding`]) as a layer.
#[cfg(feature = "dbsc")]
pub type DeviceBoundLayer = GuardLayer<DeviceBinding>;

#[cfg(feature = "dbsc")]
impl GuardLayer<DeviceBinding> {
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
impl Default for GuardLayer<DeviceBinding> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S, G> Layer<S> for GuardLayer<G> {
    type Service = Guarded<S, G>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// The service made by [`GuardLayer`].
pub struct Guarded<S, G> {
    inner: S,
    guard: Arc<G>,
}

impl<S: Clone, G> Clone for Guarded<S, G> {
    fn clone(&self) -> Self {
        Guarded {
            inner: self.inner.clone(),
            guard: self.guard.clone(),
        }
    }
}

impl<S, G: fmt::Debug> fmt::Debug for Guarded<S, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl<S, G, ReqBody, ResBody> Service<Request<ReqBody>> for Guarded<S, G>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    G: Guard,
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
        let guard = self.guard.clone();
        Box::pin(async move {
            let Some(session) = req.extensions().get::<Session>().cloned() else {
                tracing::error!("a guard layer on a route without the session layer");
                let mut res = Response::new(ResBody::from(
                    "server misconfigured: no session layer\n".to_owned(),
                ));
                *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                return Ok(res);
            };
            let target = target_of(&req);
            let request = GuardRequest {
                method: req.method().as_str(),
                target: &target,
                headers: req.headers(),
            };
            match guard.check(&session, request).await {
                Ok(None) => inner.call(req).await,
                Ok(Some(refused)) => Ok(refused.map(ResBody::from)),
                Err(error) => {
                    // Answered by the session layer's error handler.
                    let mut res = Response::new(ResBody::from(String::new()));
                    res.extensions_mut().insert(StoreFailure(Arc::new(error)));
                    Ok(res)
                }
            }
        })
    }
}

/// The request's path and query as the client sent it (under axum's `nest`, the original
/// URI, not the nested rest).
fn target_of<B>(req: &Request<B>) -> String {
    #[cfg(feature = "axum")]
    let uri = (req.extensions().get::<axum::extract::OriginalUri>()).map_or(req.uri(), |o| &o.0);
    #[cfg(not(feature = "axum"))]
    let uri = req.uri();
    uri.path_and_query()
        .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned())
}
