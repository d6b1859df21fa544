//! [`SessionService`]: reads the ticket, hands the request on with its session, commits the
//! session when the response is ready.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cloakroom_core::response::{add_ticket, error_response};
use cloakroom_core::session::{Error, SessionEngine};
use http::header::{COOKIE, HeaderValue, USER_AGENT};
use http::{Request, Response};
use tower_service::Service;

use super::ErrorHandler;

/// The service made by [`SessionLayer`](super::SessionLayer).
#[derive(Clone)]
pub struct SessionService<S> {
    pub(super) inner: S,
    pub(super) engine: SessionEngine,
    pub(super) on_error: ErrorHandler,
}

impl<S> fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionService")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

/// A store failure met inside the layer before the handler (the CSRF check loading the
/// session), carried in the response's extensions: the layer logs it and answers it with
/// its error handler, as a failed commit.
#[derive(Clone)]
pub(crate) struct StoreFailure(pub(crate) Arc<Error>);

/// The future of [`SessionService`].
pub type ResponseFuture<B, E> = Pin<Box<dyn Future<Output = Result<Response<B>, E>> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let headers = req.headers();
        // A cheap clone (shared bytes): only copied into a String if a session is created.
        let user_agent = headers.get(USER_AGENT).cloned();
        // Read as bytes, every Cookie header (HTTP/2 splits them): a neighbour's cookie
        // with a non-ASCII byte costs only itself, and nothing is joined or copied.
        let cookies = headers.get_all(COOKIE).iter().map(HeaderValue::as_bytes);
        // The ticket header is looked at only when the transport reads one.
        let ticket = (self.engine.ticket_header())
            .and_then(|name| headers.get(name))
            .map(HeaderValue::as_bytes);
        let session = match self.engine.request_session(cookies, ticket) {
            Ok(session) => session,
            Err(error) => {
                let res = error_response(&error).map(ResBody::from);
                return Box::pin(std::future::ready(Ok(res)));
            }
        };
        // The DBSC endpoints are answered here, never by the application.
        #[cfg(feature = "dbsc")]
        if let Some(endpoint) = self.engine.dbsc_endpoint(req.uri().path()) {
            let parts = dbsc::Parts::of(&req);
            return Box::pin(dbsc::answer(self.engine.clone(), endpoint, parts, session));
        }
        // A bound cookie near its expiry: the response offers an early challenge.
        #[cfg(feature = "dbsc")]
        let near = (self.engine).dbsc_near_expiry(
            req.headers()
                .get_all(COOKIE)
                .iter()
                .map(HeaderValue::as_bytes),
        );
        req.extensions_mut().insert(session.clone());
        let inner = self.inner.call(req);
        let engine = self.engine.clone();
        let on_error = self.on_error.clone();
        Box::pin(async move {
            let mut res = inner.await?;
            if let Some(StoreFailure(error)) = res.extensions_mut().remove() {
                tracing::error!(%error, "session store failed before the handler; answering 503");
                return Ok(on_error(&error).map(ResBody::from));
            }
            // Done at once when the commit needs no store operation (most reads).
            let outcome = match engine.commit_now(&session) {
                Some(outcome) => outcome,
                None => {
                    let user_agent = user_agent.as_ref().and_then(|v| v.to_str().ok());
                    match engine.commit(&session, user_agent).await {
                        Ok(outcome) => outcome,
                        Err(error) => {
                            tracing::error!(%error, "session commit failed; answering 503");
                            return Ok(on_error(&error).map(ResBody::from));
                        }
                    }
                }
            };
            add_ticket(res.headers_mut(), &outcome);
            #[cfg(feature = "dbsc")]
            dbsc::after_commit(&engine, &session, &outcome, near, res.headers_mut()).await;
            Ok(res)
        })
    }
}

/// The DBSC parts of the session service (feature `dbsc`).
#[cfg(feature = "dbsc")]
mod dbsc {
    use cloakroom_core::Session;
    use cloakroom_core::dbsc::{
        DbscEndpoint, DbscRequest, NearExpiry, RESPONSE_HEADER, SESSION_ID_HEADER,
    };
    use cloakroom_core::response::dbsc_response;
    use cloakroom_core::session::{CommitOutcome, SessionEngine};
    use http::header::{CACHE_CONTROL, HeaderName, HeaderValue, ORIGIN};
    use http::{HeaderMap, Request, Response};

    /// What a DBSC endpoint reads of a request, copied out of it (the request, whose body
    /// need not be `Send`, is dropped unread).
    pub(super) struct Parts {
        method: http::Method,
        session_id: Option<String>,
        proof: Option<String>,
        origin: Option<String>,
        client: Option<std::net::IpAddr>,
    }

    impl Parts {
        pub(super) fn of<B>(req: &Request<B>) -> Self {
            let headers = req.headers();
            let text = |name: &str| {
                (headers.get(name))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            Parts {
                method: req.method().clone(),
                session_id: text(SESSION_ID_HEADER),
                proof: text(RESPONSE_HEADER),
                origin: text(ORIGIN.as_str()),
                client: client_of(req),
            }
        }
    }

    /// Answers a request to a DBSC endpoint.
    pub(super) async fn answer<ResBody: From<String>, E>(
        engine: SessionEngine,
        endpoint: DbscEndpoint,
        parts: Parts,
        session: Session,
    ) -> Result<Response<ResBody>, E> {
        let request = DbscRequest {
            session_id: parts.session_id.as_deref(),
            proof: parts.proof.as_deref(),
            origin: parts.origin.as_deref(),
            client: parts.client,
            session: Some(&session),
        };
        let answer = engine
            .dbsc_answer(endpoint, parts.method.as_str(), request)
            .await;
        Ok(dbsc_response(answer).map(ResBody::from))
    }

    /// The client address axum's `ConnectInfo` recorded, if any.
    fn client_of<B>(req: &Request<B>) -> Option<std::net::IpAddr> {
        #[cfg(feature = "axum")]
        {
            (req.extensions())
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip())
        }
        #[cfg(not(feature = "axum"))]
        {
            let _ = req;
            None
        }
    }

    /// After the commit: a login's bound cookie and registration offer, or the early
    /// challenge of a request whose bound cookie is near its expiry
    /// ([`SessionEngine::dbsc_response_headers`]).
    pub(super) async fn after_commit(
        engine: &SessionEngine,
        session: &Session,
        outcome: &CommitOutcome,
        near: Option<NearExpiry>,
        headers: &mut HeaderMap,
    ) {
        for (name, value) in engine.dbsc_response_headers(session, outcome, near).await {
            let name = HeaderName::from_bytes(name.as_bytes());
            if let (Ok(name), Ok(value)) = (name, HeaderValue::from_str(&value)) {
                if name != CACHE_CONTROL || !headers.contains_key(CACHE_CONTROL) {
                    headers.append(name, value);
                }
            }
        }
    }
}
