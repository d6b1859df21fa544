//! [`RecentLoginLayer`]: refuses a request whose user did not prove who they are recently
//! ("sudo mode"), with the answers of [`cloakroom_core::recent_login`]: a redirect to the
//! confirm page for pages, a `401` with a JSON reason for APIs, a `503` if the store fails.
//! Put it on the sensitive routes, inside the [`SessionLayer`](crate::SessionLayer) (it reads
//! the request's session) and the [`CsrfLayer`](crate::CsrfLayer).
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

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cloakroom_core::Session;
pub use cloakroom_core::recent_login::RecentLogin;
use http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

/// The guard as a tower layer. Cheap to clone.
#[derive(Clone, Debug)]
#[must_use]
pub struct RecentLoginLayer {
    settings: Arc<RecentLogin>,
}

impl RecentLoginLayer {
    /// A guard with `settings` (how recent, where to confirm, where to log in).
    pub fn new(settings: RecentLogin) -> Self {
        RecentLoginLayer {
            settings: Arc::new(settings),
        }
    }
}

impl<S> Layer<S> for RecentLoginLayer {
    type Service = RecentLoginService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecentLoginService {
            inner,
            settings: self.settings.clone(),
        }
    }
}

/// The service made by [`RecentLoginLayer`].
#[derive(Clone)]
pub struct RecentLoginService<S> {
    inner: S,
    settings: Arc<RecentLogin>,
}

impl<S> fmt::Debug for RecentLoginService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecentLoginService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The future of [`RecentLoginService`].
pub type ResponseFuture<B, E> = Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RecentLoginService<S>
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
        let Some(session) = req.extensions().get::<Session>().cloned() else {
            tracing::error!("RecentLoginLayer on a route without SessionLayer");
            let mut res = Response::new(ResBody::from(
                "server misconfigured: no session layer\n".to_owned(),
            ));
            *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return Box::pin(std::future::ready(Ok(res)));
        };
        // The service that was made ready takes this request; its clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let settings = self.settings.clone();
        Box::pin(async move {
            let target = target_of(&req);
            let method = req.method().as_str();
            if let Some(refused) = settings
                .check(&session, method, &target, req.headers())
                .await
            {
                return Ok(refused.map(ResBody::from));
            }
            inner.call(req).await
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
