//! The demo binary over real HTTP on loopback with a neighbour's cookie in the browser: a
//! `theme=é` set by another app of the same site (raw UTF-8 bytes in the Cookie header) costs
//! neither the session nor a login.

use std::path::Path;
use std::time::Duration;

use cloakroom_testkit::process::ServerProcess;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, HeaderValue, SET_COOKIE};
use reqwest::redirect::Policy;

/// The neighbour's cookie, as a browser sends it: the UTF-8 bytes of `é`, unescaped.
const THEME: &[u8] = "theme=é".as_bytes();

async fn start(dir: &Path) -> ServerProcess {
    let db = format!("sqlite://{}", dir.join("x.db").display());
    let server = ServerProcess::start(
        env!("CARGO_BIN_EXE_cloakroom-demo"),
        &["--store", &db, "--users", &db],
        dir,
    )
    .await;
    let line = server
        .next_line(Duration::from_secs(5))
        .expect("no output line");
    assert_eq!(line, format!("listening on {}", server.base()));
    server
}

/// Cookie header values from byte strings (raw bytes allowed, as browsers send them).
fn cookie(parts: &[&[u8]]) -> HeaderValue {
    HeaderValue::from_bytes(&parts.join(&b"; "[..])).expect("a valid header value")
}

/// The `name=value` pair a response sets for `name`.
fn set_pair(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
        .find(|p| p.starts_with(&format!("{name}=")))
}

/// `GET /api/csrf` with these Cookie headers: the token and the `_xsrf` pair if one was set.
async fn csrf(
    client: &reqwest::Client,
    base: &str,
    cookies: &[HeaderValue],
) -> (String, Option<String>) {
    let mut req = client.get(format!("{base}/api/csrf"));
    for c in cookies {
        req = req.header(COOKIE, c.clone());
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let xsrf = set_pair(&res, "_xsrf");
    let v: serde_json::Value = res.json().await.unwrap();
    (v["token"].as_str().unwrap().to_owned(), xsrf)
}

async fn post_form(
    client: &reqwest::Client,
    url: String,
    cookies: &[HeaderValue],
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client.post(url).form(fields);
    for c in cookies {
        req = req.header(COOKIE, c.clone());
    }
    req.send().await.unwrap()
}

async fn me(client: &reqwest::Client, base: &str, cookies: &[HeaderValue]) -> (StatusCode, String) {
    let mut req = client.get(format!("{base}/api/me"));
    for c in cookies {
        req = req.header(COOKIE, c.clone());
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    (status, body["name"].as_str().unwrap_or("").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbour_cookie_with_a_non_ascii_byte_costs_neither_session_nor_login() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let base = server.base();
    let client = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let (name, password) = ("ada", "analytical-engine");

    // Register (clean cookies): a session.
    let (token, xsrf) = csrf(&client, &base, &[]).await;
    let xsrf = xsrf.expect("an _xsrf cookie");
    let res = post_form(
        &client,
        format!("{base}/register"),
        &[cookie(&[xsrf.as_bytes()])],
        &[("name", name), ("password", password), ("_xsrf", &token)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let session = set_pair(&res, "session").expect("a session cookie");
    let s = session.as_bytes();

    // The neighbour's cookie before ours, after ours, and in a Cookie header of its own.
    for cookies in [
        vec![cookie(&[THEME, s])],
        vec![cookie(&[s, THEME])],
        vec![cookie(&[THEME]), cookie(&[s])],
    ] {
        assert_eq!(
            me(&client, &base, &cookies).await,
            (StatusCode::OK, name.to_owned()),
            "logged out by a neighbour's cookie: {cookies:?}"
        );
    }

    // Logging in again from this session, the neighbour's cookie still there: the session's
    // CSRF token is accepted.
    let (token, _) = csrf(&client, &base, &[cookie(&[s])]).await;
    let res = post_form(
        &client,
        format!("{base}/login"),
        &[cookie(&[THEME, s])],
        &[("name", name), ("password", password), ("_xsrf", &token)],
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "login from a session refused"
    );
    let renewed = set_pair(&res, "session").expect("a new session cookie");
    assert_ne!(renewed, session, "the login renewed the id");

    // A browser without a session: the `_xsrf` cookie is read past the neighbour's.
    let (token, xsrf) = csrf(&client, &base, &[cookie(&[THEME])]).await;
    let xsrf = xsrf.expect("an _xsrf cookie");
    let res = post_form(
        &client,
        format!("{base}/login"),
        &[cookie(&[THEME, xsrf.as_bytes()])],
        &[("name", name), ("password", password), ("_xsrf", &token)],
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "login refused (403 token mismatch?)"
    );
    let fresh = set_pair(&res, "session").expect("a session cookie");
    assert_eq!(
        me(&client, &base, &[cookie(&[fresh.as_bytes(), THEME])]).await,
        (StatusCode::OK, name.to_owned())
    );
}
