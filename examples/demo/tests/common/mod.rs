//! What the in-process demo tests share: a demo app with its own users database, a browser
//! (cookie jar, user agent, CSRF tokens from the pages), and the replies it gets.

// Each test binary uses its own part of these.
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use cloakroom_demo::{DemoConfig, app};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

pub(crate) const PASSWORD: &str = "correct-horse-battery";

/// An app, the `Host` a browser sends it (its origin's) and the directory holding its users
/// database (removed on drop).
pub(crate) struct Demo {
    pub(crate) app: Router,
    pub(crate) host: String,
    pub(crate) _dir: tempfile::TempDir,
}

pub(crate) async fn demo() -> Demo {
    demo_with(|_| {}).await
}

pub(crate) async fn demo_with(adjust: impl FnOnce(&mut DemoConfig)) -> Demo {
    let dir = tempfile::tempdir().unwrap();
    let users = format!("sqlite://{}", dir.path().join("users.db").display());
    let mut config = DemoConfig::new("memory://", users);
    adjust(&mut config);
    let host = config.origin.split_once("://").map(|(_, host)| host);
    let host = host.unwrap_or_default().trim_end_matches('/').to_owned();
    Demo {
        app: app(config).await.unwrap(),
        host,
        _dir: dir,
    }
}

/// What came back.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn location(&self) -> Option<&str> {
        self.headers.get(header::LOCATION)?.to_str().ok()
    }

    pub(crate) fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    pub(crate) fn header(&self, name: &header::HeaderName) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `data-handle` of each row of the sessions page.
    pub(crate) fn handles(&self) -> Vec<String> {
        self.body
            .split("data-handle=\"")
            .skip(1)
            .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
            .collect()
    }
}

/// A browser: one cookie jar (the session cookie) and a user agent.
#[derive(Clone)]
pub(crate) struct Browser {
    pub(crate) app: Router,
    /// The `Host` it sends.
    pub(crate) host: String,
    pub(crate) user_agent: &'static str,
    /// `session=<ticket>`, as sent back.
    pub(crate) cookie: Option<String>,
    /// `_xsrf=<secret>`, the CSRF cookie used before login.
    pub(crate) xsrf: Option<String>,
}

impl Browser {
    pub(crate) fn new(demo: &Demo, user_agent: &'static str) -> Self {
        Browser {
            app: demo.app.clone(),
            host: demo.host.clone(),
            user_agent,
            cookie: None,
            xsrf: None,
        }
    }

    pub(crate) async fn send(
        &mut self,
        method: Method,
        uri: &str,
        body: Option<(&str, String)>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, &self.host)
            .header(header::USER_AGENT, self.user_agent);
        let jar: Vec<&str> = [&self.cookie, &self.xsrf]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if !jar.is_empty() {
            req = req.header(header::COOKIE, jar.join("; "));
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
        let reply = Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        };
        for set in reply.set_cookies() {
            let pair = set.split(';').next().unwrap();
            if let Some(value) = pair.strip_prefix("session=") {
                self.cookie = (!value.is_empty()).then(|| pair.to_owned());
            }
            if let Some(value) = pair.strip_prefix("_xsrf=") {
                self.xsrf = (!value.is_empty()).then(|| pair.to_owned());
            }
        }
        reply
    }

    pub(crate) async fn get(&mut self, uri: &str) -> Reply {
        self.send(Method::GET, uri, None).await
    }

    /// A fresh CSRF token for this browser, as a page's script would read it.
    pub(crate) async fn token(&mut self) -> String {
        let reply = self.get("/api/csrf").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.json()["token"].as_str().unwrap().to_owned()
    }

    /// Posts a form as the demo's own pages do: with the `_xsrf` field.
    pub(crate) async fn post(&mut self, uri: &str, form: &str) -> Reply {
        let token = self.token().await.replace('|', "%7C");
        let form = if form.is_empty() {
            format!("_xsrf={token}")
        } else {
            format!("{form}&_xsrf={token}")
        };
        self.post_raw(uri, &form).await
    }

    /// Posts a form exactly as given (no CSRF token added).
    pub(crate) async fn post_raw(&mut self, uri: &str, form: &str) -> Reply {
        let body = ("application/x-www-form-urlencoded", form.to_owned());
        self.send(Method::POST, uri, Some(body)).await
    }

    /// Posts JSON as the notes script does: with the `X-XSRFToken` header.
    pub(crate) async fn post_json(&mut self, uri: &str, json: &str) -> Reply {
        let token = self.token().await;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::HOST, &self.host)
            .header(header::USER_AGENT, self.user_agent)
            .header(header::CONTENT_TYPE, "application/json")
            .header("X-XSRFToken", token);
        let jar: Vec<&str> = [&self.cookie, &self.xsrf]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if !jar.is_empty() {
            req = req.header(header::COOKIE, jar.join("; "));
        }
        let res = self
            .app
            .clone()
            .oneshot(req.body(Body::from(json.to_owned())).unwrap())
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    pub(crate) async fn register(&mut self, name: &str) -> Reply {
        let reply = self
            .post("/register", &format!("name={name}&password={PASSWORD}"))
            .await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        reply
    }

    pub(crate) async fn login(&mut self, name: &str) -> Reply {
        let reply = self
            .post("/login", &format!("name={name}&password={PASSWORD}"))
            .await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        reply
    }

    /// Whether this browser's cookie still logs in.
    pub(crate) async fn is_logged_in(&mut self) -> bool {
        let reply = self.get("/").await;
        match reply.status {
            StatusCode::OK => true,
            StatusCode::SEE_OTHER => {
                assert_eq!(reply.location(), Some("/login"));
                false
            }
            other => panic!("GET / answered {other}"),
        }
    }
}
