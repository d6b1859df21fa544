//! Session errors as HTTP responses (feature `http`), and with the `axum` feature the
//! session handle as an extractor and [`Error`] as a response, so an axum handler names the
//! core types: `async fn visits(session: Session) -> Result<String, session::Error>` (the
//! `cloakroom-tower` crate's examples run exactly that).

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER, SET_COOKIE, VARY};
use http::{HeaderMap, Response, StatusCode};

#[cfg(feature = "axum")]
use crate::session::Session;
use crate::session::{Error, ErrorKind};

/// Turns a failed commit into the response sent instead of the handler's: the one type every
/// adapter's session middleware takes, so one function serves all of them. The default is
/// [`failure_response`]. The middleware logs the failure (once) before calling it.
pub type ErrorHandler = std::sync::Arc<dyn Fn(&Error) -> Response<String> + Send + Sync>;

/// The status of the response for a failed session operation: `503 Service Unavailable` for
/// a store failure, `413` for data over the limit, `400` for a request whose cookie and
/// ticket header name different sessions, `409` for a login refused by the
/// concurrent-session limit, `500` for anything else (a misuse of the API).
pub fn error_status(error: &Error) -> StatusCode {
    match error.kind() {
        ErrorKind::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::TicketConflict => StatusCode::BAD_REQUEST,
        ErrorKind::SessionLimit => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The response for a failed session operation, logging nothing: [`error_status`], with
/// `Retry-After: 1` on a 503 (the request can be retried as it is). Never cached. The session
/// middlewares' default [`ErrorHandler`] (they log the failure themselves).
pub fn failure_response(error: &Error) -> Response<String> {
    let status = error_status(error);
    let text = match status {
        StatusCode::SERVICE_UNAVAILABLE => "session store unavailable, try again shortly",
        StatusCode::PAYLOAD_TOO_LARGE => "session data too large",
        StatusCode::CONFLICT => {
            "this account is signed in on too many devices; sign out on one of them first"
        }
        StatusCode::BAD_REQUEST => {
            "the session cookie and the ticket header name different sessions; send one"
        }
        _ => "session error",
    };
    let mut res = Response::new(format!("{text}\n"));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    res
}

/// The response for a session operation a handler failed with (`?` on a session call): one
/// tracing event (an error for a store failure or a misuse, a warning for data over the
/// limit), then [`failure_response`].
pub fn error_response(error: &Error) -> Response<String> {
    match error.kind() {
        ErrorKind::Store(_) => tracing::error!(%error, "session store failed"),
        ErrorKind::TooLarge => tracing::warn!(%error, "session data over the limit"),
        ErrorKind::TicketConflict | ErrorKind::SessionLimit => {
            tracing::info!(%error, "session request refused");
        }
        _ => tracing::error!(%error, "session misuse"),
    }
    failure_response(error)
}

/// Adds a committed session's cookie to a response's headers, as every Cloakroom middleware
/// does: `Set-Cookie: <set_cookie>` (appended, other cookies kept), `Cache-Control: no-store`
/// unless the handler chose a caching policy (a response that sets a ticket must not be
/// cached and replayed to someone else), and `Vary: Cookie` unless a `Vary` header already
/// names `Cookie` or `*`.
///
/// `set_cookie` is [`CommitOutcome::set_cookie`](crate::session::CommitOutcome::set_cookie).
/// Returns `false`, and changes nothing, if it is not a valid header value (never the case
/// for a cookie the engine made).
pub fn add_session_cookie(headers: &mut HeaderMap, set_cookie: &str) -> bool {
    let Ok(value) = HeaderValue::from_str(set_cookie) else {
        tracing::error!("session cookie is not a valid header value; not sent");
        return false;
    };
    headers.append(SET_COOKIE, value);
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let varies_by_cookie = headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .map(str::trim)
                .any(|p| p.eq_ignore_ascii_case("cookie") || p == "*")
        })
    });
    if !varies_by_cookie {
        headers.append(VARY, HeaderValue::from_static("Cookie"));
    }
    true
}

/// Adds what a committed session tells the client about its ticket
/// ([`CommitOutcome`](crate::session::CommitOutcome)): the cookie with
/// [`add_session_cookie`], or the ticket header
/// ([`TICKET_RESPONSE_HEADER`](crate::session::TICKET_RESPONSE_HEADER): the new ticket, empty
/// when the session ended) with `Cache-Control: no-store` unless the handler chose a policy
/// (a response carrying a ticket must not be cached).
pub fn add_ticket(headers: &mut HeaderMap, outcome: &crate::session::CommitOutcome) {
    if let Some(cookie) = &outcome.set_cookie {
        add_session_cookie(headers, cookie);
    }
    let Some(ticket) = &outcome.ticket_header else {
        return;
    };
    let Ok(value) = HeaderValue::from_str(ticket) else {
        tracing::error!("session ticket is not a valid header value; not sent");
        return;
    };
    let name = http::HeaderName::from_static(crate::session::TICKET_RESPONSE_HEADER);
    headers.insert(name, value);
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// A DBSC endpoint's answer ([`SessionEngine::dbsc_answer`](crate::SessionEngine::dbsc_answer))
/// as an HTTP response, for every adapter. A header the engine made is always valid; one
/// that is not would be dropped (and logged), never sent half.
#[cfg(feature = "dbsc")]
pub fn dbsc_response(answer: crate::dbsc::DbscResponse) -> Response<String> {
    let mut response = Response::new(answer.body);
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in answer.headers {
        match (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(name), Ok(value)) => {
                response.headers_mut().append(name, value);
            }
            _ => tracing::error!(header = name, "DBSC header invalid; not sent"),
        }
    }
    response
}

/// What a route that needs a device-bound session answers a request that
/// [`Session::dbsc_admits`](crate::Session::dbsc_admits) refused: `303 See Other` to
/// `redirect` (when given) for a `GET` or `HEAD` (a page: the user logs in again), otherwise
/// `401 Unauthorized` with a plain-text reason (an API call).
#[cfg(feature = "dbsc")]
pub fn dbsc_refusal(method: &http::Method, redirect: Option<&str>) -> Response<String> {
    let page = method == http::Method::GET || method == http::Method::HEAD;
    let mut response = Response::new(String::new());
    match redirect.filter(|_| page).map(HeaderValue::from_str) {
        Some(Ok(location)) => {
            *response.status_mut() = StatusCode::SEE_OTHER;
            response
                .headers_mut()
                .insert(http::header::LOCATION, location);
        }
        _ => {
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            *response.body_mut() =
                "this session is device-bound: a fresh bound cookie is needed\n".into();
            (response.headers_mut()).insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
    }
    (response.headers_mut()).insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The [`Session`] extractor found no session: the session middleware is missing from the
/// route (a server misconfiguration: `500`).
#[cfg(feature = "axum")]
#[derive(Debug, Clone, Copy)]
pub struct MissingSessionLayer;

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for MissingSessionLayer {
    fn into_response(self) -> axum_core::response::Response {
        tracing::error!("Session extractor used on a route without the session layer");
        let mut res = Response::new(axum_core::body::Body::from(
            "server misconfigured: no session layer\n",
        ));
        *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        res
    }
}

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for Error {
    fn into_response(self) -> axum_core::response::Response {
        error_response(&self).map(axum_core::body::Body::from)
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum_core::extract::FromRequestParts<S> for Session {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(MissingSessionLayer)
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum_core::extract::OptionalFromRequestParts<S> for Session {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Session>().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store;

    #[cfg(feature = "dbsc")]
    #[test]
    fn dbsc_answers_keep_status_headers_and_body() {
        let answer = crate::dbsc::DbscResponse {
            status: 403,
            headers: vec![
                ("Secure-Session-Challenge", "\"c\";id=\"s\"".into()),
                ("Set-Cookie", "a=1".into()),
                ("Set-Cookie", "b=2".into()),
                ("Bad", "x\r\ny".into()),
            ],
            body: "{}".into(),
        };
        let res = dbsc_response(answer);
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(res.headers()["secure-session-challenge"], "\"c\";id=\"s\"");
        assert_eq!(res.headers().get_all(SET_COOKIE).iter().count(), 2);
        assert!(!res.headers().contains_key("bad"));
        assert_eq!(res.body(), "{}");
    }

    #[test]
    fn store_failures_are_503_with_retry_after_misuse_500() {
        let down: Error = store::Error::new(store::ErrorKind::Unavailable, "down").into();
        let res = error_response(&down);
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[RETRY_AFTER], "1");
        assert_eq!(res.headers()[CACHE_CONTROL], "no-store");
        let misuse = Error::new(ErrorKind::Committed, "late");
        assert_eq!(
            error_response(&misuse).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let big = Error::new(ErrorKind::TooLarge, "big");
        assert_eq!(error_response(&big).status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(error_response(&big).headers().get(RETRY_AFTER).is_none());
    }

    fn values<'h>(headers: &'h HeaderMap, name: &http::HeaderName) -> Vec<&'h str> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("?"))
            .collect()
    }

    #[test]
    fn a_session_cookie_adds_no_store_and_vary_cookie() {
        let mut headers = HeaderMap::new();
        assert!(add_session_cookie(&mut headers, "session=abc; Path=/"));
        assert_eq!(values(&headers, &SET_COOKIE), ["session=abc; Path=/"]);
        assert_eq!(values(&headers, &CACHE_CONTROL), ["no-store"]);
        assert_eq!(values(&headers, &VARY), ["Cookie"]);
    }

    #[test]
    fn a_session_cookie_keeps_the_handlers_headers() {
        let mut headers = HeaderMap::new();
        headers.append(SET_COOKIE, HeaderValue::from_static("theme=dark"));
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=0"),
        );
        headers.append(VARY, HeaderValue::from_static("Accept-Encoding, cookie"));
        assert!(add_session_cookie(&mut headers, "session=abc"));
        assert_eq!(values(&headers, &SET_COOKIE), ["theme=dark", "session=abc"]);
        assert_eq!(values(&headers, &CACHE_CONTROL), ["private, max-age=0"]);
        assert_eq!(values(&headers, &VARY), ["Accept-Encoding, cookie"]);

        // `Vary: *` covers Cookie; another Vary does not.
        let mut star = HeaderMap::new();
        star.append(VARY, HeaderValue::from_static("*"));
        add_session_cookie(&mut star, "session=abc");
        assert_eq!(values(&star, &VARY), ["*"]);
        let mut other = HeaderMap::new();
        other.append(VARY, HeaderValue::from_static("Accept"));
        add_session_cookie(&mut other, "session=abc");
        assert_eq!(values(&other, &VARY), ["Accept", "Cookie"]);
    }

    #[test]
    fn an_invalid_cookie_value_changes_nothing() {
        let mut headers = HeaderMap::new();
        assert!(!add_session_cookie(&mut headers, "session=a\nb"));
        assert!(headers.is_empty());
    }
}
