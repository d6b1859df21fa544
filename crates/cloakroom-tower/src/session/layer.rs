//! [`SessionLayer`]: the engine [`SessionSettings`](cloakroom_core::session::SessionSettings)
//! built (shared by every route's service) and the response for a failed commit.

use std::fmt;
use std::sync::Arc;

use cloakroom_core::session::{Error, SessionEngine};
use http::Response;
use tower_layer::Layer;

use super::{ErrorHandler, SessionService, default_error_response};

/// The session middleware. Cheap to clone. Its settings are the engine's (see
/// [`SessionSettings`](cloakroom_core::session::SessionSettings)); the layer adds only the
/// response for a store failure.
#[derive(Clone)]
#[must_use]
pub struct SessionLayer {
    engine: SessionEngine,
    on_error: ErrorHandler,
}

impl fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLayer")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl SessionLayer {
    /// Sessions of `engine`, store failures answered by [`default_error_response`].
    pub fn new(engine: SessionEngine) -> Self {
        SessionLayer {
            engine,
            on_error: Arc::new(default_error_response),
        }
    }

    /// The response sent when the store fails. Default: [`default_error_response`].
    pub fn with_error_handler(
        mut self,
        handler: impl Fn(&Error) -> Response<String> + Send + Sync + 'static,
    ) -> Self {
        self.on_error = Arc::new(handler);
        self
    }
}

impl From<SessionEngine> for SessionLayer {
    fn from(engine: SessionEngine) -> Self {
        SessionLayer::new(engine)
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            engine: self.engine.clone(),
            on_error: self.on_error.clone(),
        }
    }
}
