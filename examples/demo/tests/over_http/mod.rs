//! What the demo tests that drive the demo binary over HTTP share: a browser-like client and
//! the form, token and `/api/me` calls it makes.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::redirect::Policy;

/// A client with its own cookie jar that does not follow redirects.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A fresh CSRF token (the client keeps the `_xsrf` cookie).
pub(crate) async fn token(client: &reqwest::Client, base: &str) -> String {
    let v: serde_json::Value = client
        .get(format!("{base}/api/csrf"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// Posts a form the way the demo's pages do, with the `_xsrf` field: the status.
pub(crate) async fn post(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> StatusCode {
    let token = token(client, base).await;
    let mut fields = fields.to_vec();
    fields.push(("_xsrf", &token));
    client
        .post(format!("{base}{path}"))
        .form(&fields)
        .send()
        .await
        .unwrap()
        .status()
}

/// `GET /api/me`: the status and the JSON (null when there is none).
pub(crate) async fn me(client: &reqwest::Client, base: &str) -> (StatusCode, serde_json::Value) {
    let res = client.get(format!("{base}/api/me")).send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or_default())
}
