//! A browser-like HTTP client for the demo binaries (axum's and actix-web's), and the form,
//! token and `/api/me` calls their pages make: what every test that drives a demo over real
//! HTTP needs.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::redirect::Policy;

/// The `User-Agent` the client sends (the demo's device list shows it).
pub const USER_AGENT: &str = "scenario-test";

/// A client with its own cookie jar that does not follow redirects.
///
/// # Panics
/// If reqwest cannot build a client (no TLS backend is needed: the demos are plain HTTP).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .user_agent(USER_AGENT)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a reqwest client")
}

/// A fresh CSRF token from `GET /api/csrf` (the client keeps the `_xsrf` cookie).
///
/// # Panics
/// If the demo does not answer with `{"token": "..."}`.
pub async fn token(client: &reqwest::Client, base: &str) -> String {
    let v: serde_json::Value = client
        .get(format!("{base}/api/csrf"))
        .send()
        .await
        .expect("GET /api/csrf")
        .json()
        .await
        .expect("JSON from /api/csrf");
    v["token"].as_str().expect("a token").to_owned()
}

/// Posts a form the way the demo's pages do, with a fresh `_xsrf` field.
///
/// # Panics
/// If the request cannot be sent.
pub async fn post(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let token = token(client, base).await;
    let mut fields = fields.to_vec();
    fields.push(("_xsrf", &token));
    client
        .post(format!("{base}{path}"))
        .form(&fields)
        .send()
        .await
        .expect("POST to the demo")
}

/// `GET /api/me`: the status and the JSON (null when there is none).
///
/// # Panics
/// If the request cannot be sent.
pub async fn me(client: &reqwest::Client, base: &str) -> (StatusCode, serde_json::Value) {
    let res = client
        .get(format!("{base}/api/me"))
        .send()
        .await
        .expect("GET /api/me");
    let status = res.status();
    (status, res.json().await.unwrap_or_default())
}

/// `POST /api/login` with JSON `{"name", "password"}`: the response (its JSON has the
/// `token`, its `X-Session-Ticket` header the same ticket).
///
/// # Panics
/// If the request cannot be sent.
pub async fn api_login(
    client: &reqwest::Client,
    base: &str,
    name: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(format!("{base}/api/login"))
        .json(&serde_json::json!({ "name": name, "password": password }))
        .send()
        .await
        .expect("POST /api/login")
}
