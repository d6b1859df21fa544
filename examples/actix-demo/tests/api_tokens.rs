//! The demos' JSON API with the ticket in a header, as the README's three `curl` commands use
//! it (`POST /api/login`, `GET /api/me` with `Authorization: Bearer`, `POST /api/logout`),
//! over real HTTP against both demos: the token in the JSON and in `X-Session-Ticket`, no
//! CSRF token needed with the header, the browser's cookie session still checked, conflicts
//! refused, bad tickets no session, the session listed among the user's devices.

mod common;

use common::{Demo, PASSWORD, client, login, me, register};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap};

const API_CLIENT: &str = "api-tests-client";

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

/// A client with no cookie jar, as `curl` is.
fn api_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(API_CLIENT)
        .build()
        .unwrap()
}

/// Each demo in turn (sessions in memory, accounts in their own file); afterwards, neither
/// logged the ticket (at the demos' default level, `info`, what an operator's logs hold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_client_logs_in_uses_its_ticket_and_logs_out() {
    let dir = tempfile::tempdir().unwrap();
    for demo in Demo::BOTH {
        let users = dir.path().join(format!("{demo:?}.db"));
        let users = format!("sqlite://{}", users.display());
        let args = ["--store", "memory://", "--users", &users];
        let server = demo.start(&args, dir.path()).await;
        let ticket = scenario(demo, server.base()).await;
        let log = server.log_text();
        assert!(log.contains("logged in"), "{demo:?}: the log was not read");
        assert!(!log.contains(&ticket), "{demo:?}: a ticket in the log");
    }
}

/// The README's three commands and the rules around them; the ticket it used.
async fn scenario(demo: Demo, base: String) -> String {
    let browser = client();
    register(&browser, &base, "tess").await;
    let api = api_client();
    let api_login = cloakroom_testkit::demo_client::api_login;

    let res = api_login(&api, &base, "tess", "wrong-password").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{demo:?}");
    assert!(header(res.headers(), "x-session-ticket").is_none());
    let res = api
        .post(format!("{base}/api/login"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{demo:?}");

    let res = api_login(&api, &base, "tess", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK, "{demo:?}");
    assert!(
        res.headers().get("set-cookie").is_none(),
        "{demo:?}: a cookie"
    );
    assert_eq!(header(res.headers(), "cache-control"), Some("no-store"));
    let ticket = header(res.headers(), "x-session-ticket")
        .unwrap()
        .to_owned();
    let json: serde_json::Value = res.json().await.unwrap();
    assert_eq!(json["token"].as_str(), Some(ticket.as_str()), "{demo:?}");
    let auth = format!("Bearer {ticket}");

    let res = (api.get(format!("{base}/api/me")))
        .header(AUTHORIZATION, &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{demo:?}");
    let json: serde_json::Value = res.json().await.unwrap();
    assert_eq!(json["name"], "tess", "{demo:?}");

    // A write with the header needs no CSRF token; the browser's cookie session does.
    let note = serde_json::json!({ "text": "from the API" });
    let res = (api.post(format!("{base}/api/notes")))
        .header(AUTHORIZATION, &auth)
        .json(&note)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED, "{demo:?}");
    login(&browser, &base, "tess").await;
    let res = (browser.post(format!("{base}/api/notes")))
        .json(&note)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "{demo:?}: cookie, no token"
    );
    // The cookie and a header naming another session: refused, never merged.
    let res = (browser.get(format!("{base}/api/me")))
        .header(AUTHORIZATION, &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{demo:?}: conflict");
    let text = res.text().await.unwrap();
    assert!(text.contains("different sessions") && !text.contains(&ticket));

    // The API session is one of tess's devices, named by its User-Agent.
    let (status, page) = common::get(&browser, &base, "/sessions").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(API_CLIENT), "{demo:?}: not among the devices");

    bad_tickets_are_no_session(&api, &base, &ticket).await;

    let res = (api.post(format!("{base}/api/logout")))
        .header(AUTHORIZATION, &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{demo:?}");
    assert_eq!(header(res.headers(), "x-session-ticket"), Some(""));
    let res = (api.get(format!("{base}/api/me")))
        .header(AUTHORIZATION, &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "{demo:?}: after logout"
    );
    // The browser's session is another one: still logged in.
    assert_eq!(me(&browser, &base).await.0, StatusCode::OK, "{demo:?}");
    ticket
}

/// Bad tickets are no session (401 from the API), never a 500; a ticket in the query string
/// is never read.
async fn bad_tickets_are_no_session(api: &reqwest::Client, base: &str, ticket: &str) {
    let huge = format!("Bearer {}", "A".repeat(5000));
    for bad in [
        "Bearer",
        "Basic dGVzczpwdw==",
        "Bearer garbage",
        ticket,
        &huge,
    ] {
        let res = (api.get(format!("{base}/api/me")))
            .header(AUTHORIZATION, bad)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = (api.get(format!("{base}/api/me?access_token={ticket}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "query");
}
