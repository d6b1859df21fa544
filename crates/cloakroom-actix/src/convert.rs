//! The boundary between the `http` 1 types the core speaks and actix-web 4's (`http` 0.2).

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use cloakroom_core::csrf::RequestHeaders;
use cloakroom_core::response::{add_session_cookie, add_ticket};
use cloakroom_core::session::{CommitOutcome, TICKET_RESPONSE_HEADER};

/// An actix header map as the core's CSRF check reads headers.
pub(crate) struct ActixHeaders<'a>(pub(crate) &'a HeaderMap);

impl RequestHeaders for ActixHeaders<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }

    fn cookie_headers(&self) -> impl Iterator<Item = &[u8]> {
        self.0.get_all(header::COOKIE).map(HeaderValue::as_bytes)
    }
}

/// `response` as an actix-web response: status, headers and body.
pub(crate) fn to_actix(response: http::Response<String>) -> HttpResponse {
    let (parts, body) = response.into_parts();
    let status =
        StatusCode::from_u16(parts.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = HttpResponse::with_body(status, body);
    for (name, value) in &parts.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            out.headers_mut().append(name, value);
        }
    }
    out.map_into_boxed_body()
}

/// Adds a cookie to an actix response's headers with the core's [`add_session_cookie`].
pub(crate) fn add_cookie(headers: &mut HeaderMap, set_cookie: &str) {
    stage(headers, |staged| add_session_cookie(staged, set_cookie));
}

/// Adds what a committed session tells the client (cookie or ticket header) with the core's
/// [`add_ticket`].
pub(crate) fn add_outcome(headers: &mut HeaderMap, outcome: &CommitOutcome) {
    if outcome.set_cookie.is_some() || outcome.ticket_header.is_some() {
        stage(headers, |staged| {
            add_ticket(staged, outcome);
            true
        });
    }
}

/// Runs `add` (a core function writing `http` headers) on an actix response's headers: the
/// headers it reads (`Cache-Control`, `Vary`) are staged in an `http::HeaderMap`, and the
/// result copied back (those two replaced, `Set-Cookie` and the ticket header appended).
fn stage(headers: &mut HeaderMap, add: impl FnOnce(&mut http::HeaderMap) -> bool) {
    let read = [
        (header::CACHE_CONTROL, http::header::CACHE_CONTROL),
        (header::VARY, http::header::VARY),
    ];
    let mut staged = http::HeaderMap::new();
    for (actix_name, name) in &read {
        for value in headers.get_all(actix_name) {
            if let Ok(value) = http::HeaderValue::from_bytes(value.as_bytes()) {
                staged.append(name, value);
            }
        }
    }
    if !add(&mut staged) {
        return;
    }
    // Cache-Control and Vary: replaced by the staged list (the old values, in order, plus
    // any the core added); Set-Cookie: the new cookie appended to the handler's.
    for (actix_name, name) in read {
        headers.remove(&actix_name);
        copy(&staged, &name, headers, &actix_name);
    }
    copy(
        &staged,
        &http::header::SET_COOKIE,
        headers,
        &header::SET_COOKIE,
    );
    let ticket = http::HeaderName::from_static(TICKET_RESPONSE_HEADER);
    let actix_ticket = HeaderName::from_static(TICKET_RESPONSE_HEADER);
    copy(&staged, &ticket, headers, &actix_ticket);
}

fn copy(from: &http::HeaderMap, name: &http::HeaderName, to: &mut HeaderMap, to_name: &HeaderName) {
    for value in from.get_all(name) {
        if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
            to.append(to_name.clone(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(headers: &HeaderMap, name: &HeaderName) -> Vec<String> {
        headers
            .get_all(name)
            .map(|v| v.to_str().unwrap_or("?").to_owned())
            .collect()
    }

    #[test]
    fn the_cookie_headers_cross_the_boundary_in_order() {
        let mut headers = HeaderMap::new();
        headers.append(header::SET_COOKIE, HeaderValue::from_static("theme=dark"));
        headers.append(header::VARY, HeaderValue::from_static("Accept"));
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        add_cookie(&mut headers, "session=abc; Path=/");
        assert_eq!(
            values(&headers, &header::SET_COOKIE),
            ["theme=dark", "session=abc; Path=/"]
        );
        assert_eq!(values(&headers, &header::CACHE_CONTROL), ["no-store"]);
        assert_eq!(
            values(&headers, &header::VARY),
            ["Accept", "Origin", "Cookie"]
        );

        let mut chosen = HeaderMap::new();
        chosen.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        chosen.insert(header::VARY, HeaderValue::from_static("Cookie"));
        add_cookie(&mut chosen, "session=abc");
        assert_eq!(values(&chosen, &header::CACHE_CONTROL), ["private"]);
        assert_eq!(values(&chosen, &header::VARY), ["Cookie"]);
    }

    #[test]
    fn an_error_response_keeps_status_headers_and_body() {
        let mut res = http::Response::new("down\n".to_owned());
        *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        res.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        let out = to_actix(res);
        assert_eq!(out.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            out.headers()
                .get(header::RETRY_AFTER)
                .map(HeaderValue::as_bytes),
            Some(&b"1"[..])
        );
    }
}
