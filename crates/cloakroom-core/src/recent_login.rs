//! The recent-login ("sudo mode") [`Guard`] (feature `http`): what a request to a sensitive
//! route gets when the user's last proof of identity is too old. The adapters' guard layers
//! (`cloakroom-tower`'s `RecentLoginLayer`, `cloakroom-actix`'s `RecentLoginMiddleware`) run
//! it.
//!
//! - Recent enough ([`Session::authenticated_within`]): the request goes on.
//! - A page (a request whose `Accept` names `text/html`): `303 See Other` to the confirm page
//!   with `?next=` the path to come back to: the request's own path and query for a `GET`
//!   or `HEAD`, else (a form post) the path of a same-origin `Referer`, if any. `next` is
//!   always a same-origin path; the confirm page must still check it ([`local_path`]) since
//!   anyone can link to it with any `next`.
//! - Anything else (an API call): `401` with JSON
//!   `{"error":"reauthentication_required","max_age":300,"confirm_url":"/confirm"}` and
//!   `WWW-Authenticate: Session error="reauthentication_required", max_age=300`.
//! - Not logged in: the same with the login URL and `login_required`.
//! - The store fails: an error, which the adapters answer with the session layer's error
//!   handler (by default `503` with `Retry-After`; never a 500, never a pass).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use cloakroom_core::guard::{Guard, GuardRequest};
//! use cloakroom_core::recent_login::RecentLogin;
//! use cloakroom_core::{Key, KeyRing, MemoryStore, SessionSettings};
//!
//! let guard = RecentLogin::new(Duration::from_secs(300), "/confirm").unwrap()
//!     .with_login_url("/login").unwrap();
//! let engine = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate())).build();
//! let session = engine.session(None);
//! let page = [("accept", "text/html")];
//! let request = GuardRequest { method: "GET", target: "/account/delete", headers: &page[..] };
//! let refused = guard.check(&session, request).await.unwrap().unwrap();
//! assert_eq!(refused.status(), 303);
//! assert_eq!(refused.headers()["location"], "/login?next=%2Faccount%2Fdelete");
//! session.login("ana").await.unwrap();
//! assert!(guard.check(&session, request).await.unwrap().is_none());
//! # });
//! ```

use std::time::Duration;

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION, WWW_AUTHENTICATE};
use http::{Response, StatusCode};

use crate::config_error::{ConfigError, ConfigErrorKind};
use crate::csrf::RequestHeaders;
use crate::guard::{Guard, GuardRequest};
use crate::session::{Result, Session};

/// Longest `next` path kept (a longer one is dropped: the confirm page then goes home).
const MAX_NEXT: usize = 2048;

/// The guard's settings: how recent a login must be, and where to send people who must
/// prove it again. Cheap to clone.
#[derive(Clone, Debug)]
#[must_use]
pub struct RecentLogin {
    max_age: Duration,
    confirm_url: String,
    login_url: String,
}

impl RecentLogin {
    /// Requests pass when the user proved who they are less than `max_age` ago; pages are
    /// sent to `confirm_url` (a same-origin path such as `/confirm`) otherwise. The login
    /// URL is `confirm_url` too until [`with_login_url`](Self::with_login_url) says
    /// otherwise.
    ///
    /// # Errors
    /// [`ConfigErrorKind::ZeroDuration`] for a zero `max_age`; [`ConfigErrorKind::LocalPath`]
    /// for a `confirm_url` that is not a same-origin path ([`local_path`]).
    pub fn new(max_age: Duration, confirm_url: &str) -> Result<Self, ConfigError> {
        if max_age.is_zero() {
            return Err(ConfigError::new(
                ConfigErrorKind::ZeroDuration,
                "recent-login max age",
                "0s",
            ));
        }
        let confirm_url = checked_path("recent-login confirm URL", confirm_url)?;
        Ok(RecentLogin {
            max_age,
            login_url: confirm_url.clone(),
            confirm_url,
        })
    }

    /// Where requests without a login are sent (a same-origin path). Default: the confirm
    /// URL (whose page should send an anonymous visitor on to the login).
    ///
    /// # Errors
    /// [`ConfigErrorKind::LocalPath`] for a URL that is not a same-origin path.
    pub fn with_login_url(mut self, login_url: &str) -> Result<Self, ConfigError> {
        self.login_url = checked_path("recent-login login URL", login_url)?;
        Ok(self)
    }

    /// How recent a login must be.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The API answer: 401, JSON and `WWW-Authenticate`.
    fn unauthorized(&self, url: &str, reason: &str, logged_in: bool) -> Response<String> {
        // Whole seconds, rounded up (a window under a second is not "0").
        let secs = self.max_age.as_millis().div_ceil(1000);
        let (body, challenge) = if logged_in {
            let body = serde_json::json!({ "error": reason, "max_age": secs, "confirm_url": url });
            (body, format!("Session error=\"{reason}\", max_age={secs}"))
        } else {
            let body = serde_json::json!({ "error": reason, "login_url": url });
            (body, format!("Session error=\"{reason}\""))
        };
        let mut res = Response::new(body.to_string());
        *res.status_mut() = StatusCode::UNAUTHORIZED;
        let headers = res.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            headers.insert(WWW_AUTHENTICATE, value);
        }
        res
    }
}

impl Guard for RecentLogin {
    /// Lets the request go on when the user proved who they are recently enough; answers
    /// it otherwise (see the [module](self)).
    async fn check<H: RequestHeaders + Sync + ?Sized>(
        &self,
        session: &Session,
        request: GuardRequest<'_, H>,
    ) -> Result<Option<Response<String>>> {
        let logged_in = session.user().await?.is_some();
        let (url, reason) = if logged_in {
            if session.authenticated_within(self.max_age).await? {
                return Ok(None);
            }
            (&self.confirm_url, "reauthentication_required")
        } else {
            (&self.login_url, "login_required")
        };
        tracing::debug!(reason, "recent-login guard refused the request");
        let (method, target, headers) = (request.method, request.target, request.headers);
        let accept = headers.header("accept").unwrap_or_default();
        if accept.to_ascii_lowercase().contains("text/html") {
            return Ok(Some(redirect(
                url,
                next_of(method, target, headers).as_deref(),
            )));
        }
        Ok(Some(self.unauthorized(url, reason, logged_in)))
    }
}

/// `303 See Other` to `url`, with `next` as its query parameter when given.
fn redirect(url: &str, next: Option<&str>) -> Response<String> {
    let location = match next {
        Some(next) => {
            let query = form_urlencoded::Serializer::new(String::new())
                .append_pair("next", next)
                .finish();
            let join = if url.contains('?') { '&' } else { '?' };
            format!("{url}{join}{query}")
        }
        None => url.to_owned(),
    };
    let mut res = Response::new(String::new());
    *res.status_mut() = StatusCode::SEE_OTHER;
    let headers = res.headers_mut();
    // Both are checked local paths and the query is percent-encoded: a valid header value.
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(LOCATION, value);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The path to come back to: the request's own for a `GET` or `HEAD`, else that of a
/// same-origin `Referer` (the page the form was on).
fn next_of(method: &str, target: &str, headers: &(impl RequestHeaders + ?Sized)) -> Option<String> {
    if method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD") {
        return local_path(target).map(str::to_owned);
    }
    let referer = headers.header("referer")?;
    let host = headers.header("host")?;
    let referer = referer.split('#').next().unwrap_or_default();
    let uri: http::Uri = referer.parse().ok()?;
    if uri.authority()?.as_str() != host {
        return None;
    }
    local_path(uri.path_and_query()?.as_str()).map(str::to_owned)
}

/// `url` if it is a same-origin path: one `/` first (not `//`, which is another host), no
/// backslash (which browsers read as `/`), no control characters or spaces, at most 2048
/// bytes. Check a `next` parameter with it before redirecting to it: an open redirect
/// otherwise.
///
/// ```
/// use cloakroom_core::recent_login::local_path;
/// assert_eq!(local_path("/sessions?tab=2"), Some("/sessions?tab=2"));
/// for bad in ["https://evil.example/", "//evil.example", "/\\evil.example", "sessions", ""] {
///     assert_eq!(local_path(bad), None);
/// }
/// ```
pub fn local_path(url: &str) -> Option<&str> {
    let ok = url.starts_with('/')
        && !url.starts_with("//")
        && url.len() <= MAX_NEXT
        && url.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    ok.then_some(url)
}

fn checked_path(setting: &'static str, url: &str) -> Result<String, ConfigError> {
    local_path(url)
        .map(str::to_owned)
        .ok_or_else(|| ConfigError::new(ConfigErrorKind::LocalPath, setting, url))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Key, KeyRing};
    use crate::session::SessionSettings;
    use crate::store::MemoryStore;

    fn guard() -> RecentLogin {
        RecentLogin::new(Duration::from_secs(300), "/confirm")
            .unwrap()
            .with_login_url("/login")
            .unwrap()
    }

    /// The guard's answer, the store not failing.
    async fn check(
        s: &Session,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Option<Response<String>> {
        let request = GuardRequest {
            method,
            target,
            headers,
        };
        guard().check(s, request).await.unwrap()
    }

    #[test]
    fn settings_refuse_other_origins_and_a_zero_age() {
        let kind = |r: Result<RecentLogin, ConfigError>| r.unwrap_err().kind();
        for bad in ["https://evil.example/confirm", "//evil", "confirm", "/a b"] {
            assert_eq!(
                kind(RecentLogin::new(Duration::from_secs(1), bad)),
                ConfigErrorKind::LocalPath
            );
        }
        assert_eq!(
            kind(RecentLogin::new(Duration::ZERO, "/confirm")),
            ConfigErrorKind::ZeroDuration
        );
    }

    #[tokio::test]
    async fn pages_are_redirected_with_next_and_apis_get_401_json() {
        let engine =
            SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate())).build();
        let s = engine.session(None);
        s.login_with("ana", crate::session::AuthMethod::RememberMe)
            .await
            .unwrap();
        let page = [("accept", "text/html,*/*"), ("host", "example.com")];
        let res = check(&s, "GET", "/x?a=1&b", &page[..]).await.unwrap();
        assert_eq!(res.status(), 303);
        assert_eq!(res.headers()[LOCATION], "/confirm?next=%2Fx%3Fa%3D1%26b");
        // A form post: back to the page it came from, if that is on this site.
        let post = [
            ("accept", "text/html"),
            ("host", "example.com"),
            ("referer", "https://example.com/sessions?x#top"),
        ];
        let res = check(&s, "POST", "/do", &post[..]).await.unwrap();
        assert_eq!(res.headers()[LOCATION], "/confirm?next=%2Fsessions%3Fx");
        let elsewhere = [
            ("accept", "text/html"),
            ("host", "example.com"),
            ("referer", "https://evil.example/sessions"),
        ];
        let res = check(&s, "POST", "/do", &elsewhere[..]).await.unwrap();
        assert_eq!(res.headers()[LOCATION], "/confirm");
        let api = [("accept", "application/json")];
        let res = check(&s, "POST", "/api/x", &api[..]).await.unwrap();
        assert_eq!(res.status(), 401);
        let body: serde_json::Value = serde_json::from_str(res.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "reauthentication_required", "max_age": 300, "confirm_url": "/confirm"})
        );
        assert_eq!(
            res.headers()[WWW_AUTHENTICATE],
            "Session error=\"reauthentication_required\", max_age=300"
        );
        s.reauthenticate(crate::session::AuthMethod::Password)
            .await
            .unwrap();
        assert!(check(&s, "POST", "/api/x", &api[..]).await.is_none());
        // Without a login: the login URL.
        let anon = engine.session(None);
        let res = check(&anon, "POST", "/api/x", &api[..]).await.unwrap();
        assert_eq!(res.status(), 401);
        assert!(res.body().contains("login_required"));
    }
}
