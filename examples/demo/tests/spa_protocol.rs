//! The demo as Angular's `HttpClient` and axios see it: a client whose only CSRF code is
//! copying the `XSRF-TOKEN` cookie into the `X-XSRF-TOKEN` header of unsafe requests works
//! across registration, notes, logout and login (in-process, `oneshot`).

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use cloakroom_demo::{DemoConfig, app};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

const PASSWORD: &str = "angular-axios-42";

/// What came back.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn sets(&self, name: &str) -> bool {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .any(|v| v.to_str().unwrap().starts_with(&format!("{name}=")))
    }
}

/// A browser's cookie jar and the Angular/axios rule, nothing else.
struct SpaClient {
    app: Router,
    jar: Vec<(String, String)>,
}

impl SpaClient {
    fn xsrf(&self) -> Option<String> {
        self.jar
            .iter()
            .find(|(n, _)| n == "XSRF-TOKEN")
            .map(|(_, v)| v.clone())
    }

    async fn send(&mut self, method: Method, uri: &str, body: Option<(&str, String)>) -> Reply {
        let unsafe_method = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::ACCEPT, "application/json, text/plain, */*");
        // The whole of the client's CSRF handling, as HttpClient and axios do it.
        if let Some(token) = self.xsrf().filter(|_| unsafe_method) {
            req = req.header("X-XSRF-TOKEN", token);
        }
        self.finish(req, body).await
    }

    async fn finish(
        &mut self,
        mut req: axum::http::request::Builder,
        body: Option<(&str, String)>,
    ) -> Reply {
        req = req.header(header::HOST, "127.0.0.1:8000"); // the default origin's
        if !self.jar.is_empty() {
            let pairs: Vec<String> = self.jar.iter().map(|(n, v)| format!("{n}={v}")).collect();
            req = req.header(header::COOKIE, pairs.join("; "));
        }
        let req = match body {
            Some((content_type, body)) => req
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(body)),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        for set in parts.headers.get_all(header::SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.jar.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.jar.push((name.to_owned(), value.to_owned()));
            }
        }
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(&mut self, uri: &str) -> Reply {
        self.send(Method::GET, uri, None).await
    }

    async fn post_form(&mut self, uri: &str, form: &str) -> Reply {
        let body = ("application/x-www-form-urlencoded", form.to_owned());
        self.send(Method::POST, uri, Some(body)).await
    }

    async fn post_json(&mut self, uri: &str, json: serde_json::Value) -> Reply {
        let body = ("application/json", json.to_string());
        self.send(Method::POST, uri, Some(body)).await
    }
}

#[tokio::test]
async fn a_client_that_only_copies_the_cookie_into_the_header_works_across_login_and_logout() {
    let dir = tempfile::tempdir().unwrap();
    let users = format!("sqlite://{}", dir.path().join("users.db").display());
    let mut c = SpaClient {
        app: app(DemoConfig::new("memory://", users)).await.unwrap(),
        jar: Vec::new(),
    };

    // The single-page app and its script; the first answer hands out the cookie.
    let page = c.get("/app").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<script src=\"/static/app.js\">"));
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(page.sets("XSRF-TOKEN"), "{:?}", page.headers);
    let script = c.get("/static/app.js").await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(script.body.contains("X-XSRF-TOKEN"));
    let anonymous = c.xsrf().unwrap();

    // Register (which logs in): the form has no _xsrf field, only the header.
    let res = c
        .post_form("/register", &format!("name=ada&password={PASSWORD}"))
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert!(
        res.sets("XSRF-TOKEN"),
        "the login response carries the new token"
    );
    let logged_in = c.xsrf().unwrap();
    assert_ne!(logged_in, anonymous);
    assert_eq!(c.get("/api/me").await.json()["name"], "ada");

    // Notes through the JSON API.
    let res = c
        .post_json("/api/notes", serde_json::json!({"text": "by protocol"}))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    assert_eq!(res.json()["notes"][0], "by protocol");
    let me = c.get("/api/me").await;
    assert_eq!(me.json()["notes"][0], "by protocol");
    assert!(
        !me.sets("XSRF-TOKEN"),
        "no new cookie while it holds the current token"
    );

    // The token from before login is dead; the cookie without the header never passes.
    let mut stale = c.jar.clone();
    stale.retain(|(n, _)| n != "XSRF-TOKEN");
    stale.push(("XSRF-TOKEN".into(), anonymous.clone()));
    let saved = std::mem::replace(&mut c.jar, stale);
    let res = c
        .post_json("/api/notes", serde_json::json!({"text": "stale"}))
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(res.json()["reason"], "token mismatch");
    c.jar = saved;
    let res = c
        .finish(
            Request::post("/api/notes").header(header::ACCEPT, "application/json"),
            Some(("application/json", r#"{"text":"no header"}"#.into())),
        )
        .await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(res.json()["reason"], "token missing");

    // Log out: a new cookie again, which works for logging back in.
    let res = c.post_form("/logout", "").await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert!(res.sets("XSRF-TOKEN"));
    assert_ne!(c.xsrf().unwrap(), logged_in);
    assert_eq!(c.get("/api/me").await.status, StatusCode::UNAUTHORIZED);
    let res = c
        .post_form("/login", &format!("name=ada&password={PASSWORD}"))
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.body);
    assert!(res.sets("XSRF-TOKEN"));
    let res = c
        .post_json("/api/notes", serde_json::json!({"text": "after login"}))
        .await;
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.body);
    let notes = c.get("/api/me").await.json()["notes"].clone();
    assert!(notes.to_string().contains("after login"), "{notes}");
}
