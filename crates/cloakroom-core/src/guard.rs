//! Route guards: checks a request's session must pass before a handler sees it.
//!
//! A [`Guard`] looks at the session and a few parts of the request and either lets the
//! request go on or answers it. The adapters run guards with one layer each
//! (cloakroom-tower's `GuardLayer`, cloakroom-actix's `GuardMiddleware`), put on the routes
//! that need them, inside the session layer. Two guards come with Cloakroom:
//! [`RecentLogin`](crate::recent_login::RecentLogin) ("sudo mode") and, with the feature
//! `dbsc`, [`DeviceBinding`] (routes that need a device-bound session). A store failure
//! during a check is answered by the session layer's error handler, like any other.

use std::future::Future;
#[cfg(feature = "dbsc")]
use std::sync::Arc;

use http::Response;

use crate::Session;
use crate::csrf::RequestHeaders;
use crate::session::Result;

/// What a guard sees of a request.
#[derive(Debug)]
pub struct GuardRequest<'a, H: ?Sized> {
    /// The method, e.g. `GET`.
    pub method: &'a str,
    /// The path and query as the client sent them.
    pub target: &'a str,
    /// The headers.
    pub headers: &'a H,
}

// By hand: derived, they would ask `H: Copy`, which a header slice is not.
impl<H: ?Sized> Clone for GuardRequest<'_, H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<H: ?Sized> Copy for GuardRequest<'_, H> {}

/// A check on a request's session (see the [module](self)).
pub trait Guard: Send + Sync + 'static {
    /// `Ok(None)`: the request goes on. `Ok(Some(response))`: `response` answers it
    /// instead. `Err`: the store failed; the session layer's error handler answers.
    fn check<H: RequestHeaders + Sync + ?Sized>(
        &self,
        session: &Session,
        request: GuardRequest<'_, H>,
    ) -> impl Future<Output = Result<Option<Response<String>>>> + Send;
}

/// The guard of routes that need a device-bound session: it refuses a request whose session
/// is device-bound but carries no fresh bound cookie (a copied ticket), and under
/// [`DbscPolicy::Required`](crate::dbsc::DbscPolicy::Required) a logged-in session that
/// never registered, once the login's grace is over (see
/// [`Session::dbsc_admits`](crate::Session::dbsc_admits)). Refusals get
/// [`dbsc_refusal`](crate::response::dbsc_refusal): 401, or a redirect for pages when one
/// is set.
#[cfg(feature = "dbsc")]
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct DeviceBinding {
    redirect: Option<Arc<str>>,
}

#[cfg(feature = "dbsc")]
impl DeviceBinding {
    /// Refusals answered `401 Unauthorized` (API routes).
    pub fn new() -> Self {
        DeviceBinding::default()
    }

    /// Refused `GET` and `HEAD` requests are redirected (303) to `path`, e.g. the login
    /// page (which must not be behind this guard); other methods still get 401. Default:
    /// no redirect.
    pub fn with_redirect(mut self, path: &str) -> Self {
        self.redirect = Some(path.into());
        self
    }
}

#[cfg(feature = "dbsc")]
impl Guard for DeviceBinding {
    async fn check<H: RequestHeaders + Sync + ?Sized>(
        &self,
        session: &Session,
        request: GuardRequest<'_, H>,
    ) -> Result<Option<Response<String>>> {
        // Collected: the headers' own iterator need not be `Send`.
        let cookies: Vec<&[u8]> = request.headers.cookie_headers().collect();
        if session.dbsc_admits(cookies).await? {
            return Ok(None);
        }
        let path = request.target.split('?').next().unwrap_or_default();
        tracing::info!(path, "device-bound session refused");
        let method =
            http::Method::from_bytes(request.method.as_bytes()).unwrap_or(http::Method::POST);
        Ok(Some(crate::response::dbsc_refusal(
            &method,
            self.redirect.as_deref(),
        )))
    }
}
