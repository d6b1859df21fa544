//! [`CsrfLayer`]: the CSRF settings and the rejection hook.

use std::fmt;
use std::sync::Arc;

use cloakroom_core::csrf::CsrfSettings;
use tower_layer::Layer;

use super::{Config, CsrfService, OnRejection, default_rejection};

/// The CSRF middleware. Cheap to clone. Its settings are the core's [`CsrfSettings`] (the
/// same the actix-web `CsrfMiddleware` takes); the layer adds only the rejection hook.
#[derive(Clone)]
#[must_use]
pub struct CsrfLayer {
    config: Arc<Config>,
}

impl fmt::Debug for CsrfLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrfLayer")
            .field("settings", &self.config.settings)
            .finish_non_exhaustive()
    }
}

impl CsrfLayer {
    /// Protection checking with `settings`, refusals answered by [`default_rejection`].
    pub fn new(settings: CsrfSettings) -> Self {
        CsrfLayer {
            config: Arc::new(Config {
                settings,
                on_reject: Arc::new(default_rejection),
            }),
        }
    }

    /// The response for refused requests: anything implementing [`OnRejection`], closures
    /// `Fn(&ProtectionError, ResponseFormat) -> Response<String>` included. Default:
    /// [`default_rejection`].
    pub fn with_rejection_handler(mut self, handler: impl OnRejection) -> Self {
        Arc::make_mut(&mut self.config).on_reject = Arc::new(handler);
        self
    }
}

impl From<CsrfSettings> for CsrfLayer {
    fn from(settings: CsrfSettings) -> Self {
        CsrfLayer::new(settings)
    }
}

impl<S> Layer<S> for CsrfLayer {
    type Service = CsrfService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CsrfService::new(inner, self.config.clone())
    }
}
