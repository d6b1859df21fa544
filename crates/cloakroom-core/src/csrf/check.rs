//! The check of one unsafe request, framework-free: the adapter hands in the request's
//! method, path and headers ([`CsrfRequest`]), reads the form body when asked
//! ([`TokenCheck::form_body`]), and turns the outcome into a response.
//!
//! 1. [`CsrfSettings::begin_check`]: the cross-origin check (Fetch Metadata, then `Origin`
//!    against `Host`), then, unless tokenless mode exempts the path, the token from a header
//!    (the SPA cookie's header first, then [`HEADER_NAMES`](super::HEADER_NAMES));
//! 2. without one, the `_xsrf` field of an urlencoded or multipart body, which the adapter
//!    buffers up to [`CsrfSettings::body_limit`] and puts back for the handler;
//! 3. then (if turned on) the `_xsrf` query parameter;
//! 4. [`TokenCheck::finish`]: the token decodes (else `token malformed`) and matches the
//!    expected secret, the session's or the `_xsrf` cookie's (else `token mismatch`).
//!
//! ```
//! use cloakroom_core::csrf::{CsrfRequest, CsrfSettings, Reason};
//! let settings = CsrfSettings::new();
//! let headers: [(&str, &str); 1] = [("sec-fetch-site", "cross-site")];
//! let req = CsrfRequest::new("POST", "/notes", &headers[..]);
//! assert_eq!(settings.begin_check(&req).err(), Some(Reason::CrossOrigin));
//! ```

use std::fmt;

use crate::session;

use super::{
    CsrfSettings, FIELD_NAME, FormKind, HEADER_NAMES, Reason, RequestOrigin, TokenSource,
    check_cross_origin, decode_token, form_kind, multipart_field, urlencoded_field,
};

/// A request's headers, as the check reads them. Implemented for `http::HeaderMap` (feature
/// `http`) and for a slice of `(name, value)` pairs; adapters implement it for their own
/// header maps.
pub trait RequestHeaders {
    /// The first value of the header `name` (given in lower case), if it is visible ASCII.
    fn header(&self, name: &str) -> Option<&str>;

    /// The value of every `Cookie` header, as bytes, in order.
    fn cookie_headers(&self) -> impl Iterator<Item = &[u8]>;
}

impl RequestHeaders for [(&str, &str)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
            .filter(|v| v.bytes().all(|b| b == b'\t' || (b' '..0x7f).contains(&b)))
    }

    fn cookie_headers(&self) -> impl Iterator<Item = &[u8]> {
        self.iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .map(|(_, v)| v.as_bytes())
    }
}

#[cfg(feature = "http")]
impl RequestHeaders for http::HeaderMap {
    fn header(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }

    fn cookie_headers(&self) -> impl Iterator<Item = &[u8]> {
        self.get_all(http::header::COOKIE)
            .iter()
            .map(http::HeaderValue::as_bytes)
    }
}

/// What the check reads of a request.
#[derive(Clone, Copy)]
pub struct CsrfRequest<'a, H: ?Sized> {
    /// The method.
    pub method: &'a str,
    /// The path the router matches (axum: the raw path; actix-web: the percent-decoded
    /// `match_info().as_str()`): token paths are compared with it in every spelling
    /// ([`CsrfSettings::needs_token`]).
    pub path: &'a str,
    /// The query string, read only with the query token turned on.
    pub query: Option<&'a str>,
    /// The request-target's authority, used as `Host` when there is no `Host` header (HTTP/2).
    pub authority: Option<&'a str>,
    /// The headers.
    pub headers: &'a H,
}

impl<'a, H: ?Sized> CsrfRequest<'a, H> {
    /// A request without query or authority.
    pub fn new(method: &'a str, path: &'a str, headers: &'a H) -> Self {
        CsrfRequest {
            method,
            path,
            query: None,
            authority: None,
            headers,
        }
    }
}

impl<H: ?Sized> fmt::Debug for CsrfRequest<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsrfRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// An unsafe request past the cross-origin check, looking for its token.
#[derive(Clone)]
pub struct TokenCheck {
    needed: bool,
    submitted: Option<String>,
    form: Option<(FormKind, Option<String>)>,
    query: Option<String>,
}

impl fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCheck")
            .field("needed", &self.needed)
            .field("found", &self.submitted.is_some())
            .field("form", &self.form_body())
            .finish_non_exhaustive()
    }
}

/// Why a checked request was not handed on.
#[derive(Debug)]
pub enum CheckError {
    /// Refused: a 403 with this reason.
    Refused(Reason),
    /// The session store failed while reading the expected secret: a 503.
    Store(session::Error),
}

impl From<Reason> for CheckError {
    fn from(reason: Reason) -> Self {
        CheckError::Refused(reason)
    }
}

/// Why the form body could not be searched for the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyError {
    /// Over [`CsrfSettings::body_limit`]: a 413.
    TooLarge,
    /// The body stream failed: a 400.
    Unreadable,
}

impl CsrfSettings {
    /// The synchronous part of the check of an unsafe request on a non-exempt path (see
    /// [`skips_check`](Self::skips_check)): the cross-origin check, then the token from the
    /// headers (and the query, if turned on).
    ///
    /// # Errors
    /// [`Reason::CrossOrigin`].
    pub fn begin_check<H: RequestHeaders + ?Sized>(
        &self,
        req: &CsrfRequest<'_, H>,
    ) -> Result<TokenCheck, Reason> {
        let header = |name| req.headers.header(name);
        let origin = RequestOrigin {
            method: req.method,
            sec_fetch_site: header("sec-fetch-site"),
            origin: header("origin"),
            host: header("host").or(req.authority),
        };
        check_cross_origin(&origin, &self.trusted)?;
        if !self.needs_token(req.path) {
            return Ok(TokenCheck {
                needed: false,
                submitted: None,
                form: None,
                query: None,
            });
        }
        let spa = self.spa.as_ref().map(|spa| spa.header_name());
        let submitted = spa
            .into_iter()
            .chain(HEADER_NAMES)
            .find_map(|h| header(h).map(str::to_owned));
        let form = match submitted {
            Some(_) => None,
            None => header("content-type").and_then(form_kind),
        };
        let query = req
            .query
            .filter(|_| self.query_token)
            .and_then(|q| urlencoded_field(q.as_bytes(), FIELD_NAME));
        Ok(TokenCheck {
            needed: true,
            submitted,
            form,
            query,
        })
    }
}

impl TokenCheck {
    /// The form body the adapter must read (at most [`CsrfSettings::body_limit`] bytes) and
    /// hand to [`read_form`](Self::read_form), then put back for the handler: `Some` when a
    /// token is needed, no header carried one, and the body is an urlencoded or multipart
    /// form.
    pub fn form_body(&self) -> Option<FormKind> {
        self.form.as_ref().map(|(kind, _)| *kind)
    }

    /// Looks for the `_xsrf` field in the form body read.
    pub fn read_form(&mut self, body: &[u8]) {
        if let Some((kind, boundary)) = self.form.take() {
            self.submitted = match kind {
                FormKind::UrlEncoded => urlencoded_field(body, FIELD_NAME),
                FormKind::Multipart => {
                    multipart_field(body, boundary.as_deref().unwrap_or(""), FIELD_NAME)
                }
            };
        }
    }

    /// The end of the check: the token (header, else form field, else query) decodes and
    /// matches the expected secret of `source`. A request whose session came from the
    /// ticket header ([`Session::from_header`](crate::Session::from_header): no session
    /// cookie came) needs no token, whatever the mode: a browser never sends that header
    /// by itself, so no other site can forge the request.
    ///
    /// # Errors
    /// [`CheckError::Refused`] with `token missing`, `token malformed` (checked first, so a
    /// malformed token is reported as such whatever the secret) or `token mismatch` (also
    /// when there is no expected secret: no session secret and no `_xsrf` cookie);
    /// [`CheckError::Store`] when reading the session fails.
    pub async fn finish(self, source: &TokenSource) -> Result<(), CheckError> {
        if !self.needed || source.header_session() {
            return Ok(());
        }
        let refused = CheckError::Refused;
        let submitted = self
            .submitted
            .or(self.query)
            .ok_or(refused(Reason::TokenMissing))?;
        decode_token(&submitted).map_err(refused)?;
        let expected = source
            .expected_secret()
            .await
            .map_err(CheckError::Store)?
            .ok_or(refused(Reason::TokenMismatch))?;
        expected.verify(&submitted).map_err(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csrf::{Secret, SpaCookie};

    fn begin(settings: &CsrfSettings, path: &str, headers: &[(&str, &str)]) -> TokenCheck {
        settings
            .begin_check(&CsrfRequest::new("POST", path, headers))
            .unwrap()
    }

    #[test]
    fn the_cross_origin_check_comes_first_and_uses_the_authority_without_host() {
        let s = CsrfSettings::new();
        let headers: &[(&str, &str)] = &[("origin", "https://app.example")];
        let mut req = CsrfRequest::new("POST", "/", headers);
        assert_eq!(s.begin_check(&req).err(), Some(Reason::CrossOrigin));
        req.authority = Some("app.example");
        assert!(s.begin_check(&req).is_ok());
    }

    #[test]
    fn headers_are_read_spa_header_first_and_then_the_form_body_is_asked_for() {
        let spa = SpaCookie::new().with_header_name("X-Mine");
        let s = CsrfSettings::new().with_spa_cookie(spa).unwrap();
        let both = [("x-xsrftoken", "b"), ("x-mine", "a")];
        assert_eq!(begin(&s, "/", &both).submitted.as_deref(), Some("a"));
        let form = [("content-type", "application/x-www-form-urlencoded")];
        let mut check = begin(&s, "/", &form);
        assert_eq!(check.form_body(), Some(FormKind::UrlEncoded));
        check.read_form(b"x=1&_xsrf=t");
        assert_eq!(check.submitted.as_deref(), Some("t"));
        // A header token means the body is never read.
        let header_and_form = [form[0], ("x-csrftoken", "c")];
        assert_eq!(begin(&s, "/", &header_and_form).form_body(), None);
    }

    #[test]
    fn the_query_token_is_read_only_when_turned_on() {
        let headers: &[(&str, &str)] = &[];
        let mut req = CsrfRequest::new("POST", "/", headers);
        req.query = Some("_xsrf=q");
        let off = CsrfSettings::new().begin_check(&req).unwrap();
        assert_eq!(off.query, None);
        let on = CsrfSettings::new().with_query_token(true);
        assert_eq!(on.begin_check(&req).unwrap().query.as_deref(), Some("q"));
    }

    #[test]
    fn tokenless_mode_needs_a_token_only_on_token_paths() {
        let s = CsrfSettings::tokenless().add_token_path("/login");
        assert!(!begin(&s, "/notes", &[]).needed);
        assert!(begin(&s, "/login", &[]).needed);
        assert!(
            begin(&s, "/login/", &[]).needed,
            "every spelling of the path"
        );
        assert!(
            begin(&s, "/%6Cogin", &[]).needed,
            "every spelling of the path"
        );
        assert!(!begin(&s, "/login/x", &[]).needed, "no prefixes");
        assert!(!begin(&s, "/x/login", &[]).needed, "no suffixes");
        assert!(s.skips_check("GET", "/login"));
        let exempt = CsrfSettings::new().add_exempt_path("/hook");
        assert!(exempt.skips_check("POST", "/hook"));
        assert!(!exempt.skips_check("POST", "/hook/x"));
        for other in ["/hook/", "//hook", "/%68ook", "/HOOK", "/./hook"] {
            assert!(
                !exempt.skips_check("POST", other),
                "exact paths only: {other}"
            );
        }
    }

    #[tokio::test]
    async fn the_token_must_match_the_double_submit_cookie() {
        let s = CsrfSettings::new();
        let secret = Secret::generate();
        let cookie = format!("_xsrf={}", secret.mask());
        let headers = [("cookie", cookie.as_str())];
        let source = s.token_source(None, &headers[..]);
        let good = secret.mask();
        let cases = [
            (None, Err(Reason::TokenMissing)),
            (Some("2|x"), Err(Reason::TokenMalformed)),
            (Some(good.as_str()), Ok(())),
        ];
        for (token, want) in cases {
            let mut h = headers.to_vec();
            h.extend(token.map(|t| ("x-xsrftoken", t)));
            let check = begin(&s, "/", &h);
            let got = check.finish(&source).await.map_err(|e| match e {
                CheckError::Refused(r) => r,
                CheckError::Store(_) => unreachable!(),
            });
            assert_eq!(got, want, "{token:?}");
        }
        // No cookie at all: nothing to match.
        let bare = s.token_source(None, &[][..]);
        let h = [("x-xsrftoken", good.as_str())];
        let got = begin(&s, "/", &h).finish(&bare).await;
        assert!(matches!(
            got,
            Err(CheckError::Refused(Reason::TokenMismatch))
        ));
        assert!(
            s.with_spa_cookie(SpaCookie::new().with_header_name("a b"))
                .is_err()
        );
    }
}
