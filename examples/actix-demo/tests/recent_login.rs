//! The password prompt before sensitive actions, over HTTP against both demos (their real
//! binaries on loopback, `--recent-login-window 1500ms` so the test waits 1.5 s, not 5
//! minutes): a fresh login goes straight through; a stale one is sent to `/confirm` before
//! "log out all other devices", changing the password and deleting the account (pages) or
//! refused with a JSON reason (the API); a wrong password is refused, the right one lets the
//! action through; deleting the account ends the user's other sessions.

mod common;

use std::time::Duration;

use common::{Demo, PASSWORD, client, post, register, token};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, LOCATION, REFERER, WWW_AUTHENTICATE};

const WINDOW: Duration = Duration::from_millis(1500);

/// Runs `scenario` against each demo with the short window, sessions in memory and its own
/// accounts database.
async fn on_both<F, Fut>(scenario: F)
where
    F: Fn(Demo, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    for demo in Demo::BOTH {
        let db = format!(
            "sqlite://{}",
            dir.path().join(format!("{demo:?}.db")).display()
        );
        let args = [
            "--store",
            "memory://",
            "--users",
            &db,
            "--recent-login-window",
            "1500ms",
        ];
        let server = demo.start(&args, dir.path()).await;
        scenario(demo, server.base()).await;
    }
}

/// A page request as a browser makes it (`Accept: text/html`): status and `Location`.
async fn page(client: &reqwest::Client, base: &str, path: &str) -> (StatusCode, String) {
    let res = (client.get(format!("{base}{path}")))
        .header(ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    let location = location(&res);
    (res.status(), location)
}

/// A form post from the page `from`, as a browser sends it (`Accept: text/html`, a
/// same-origin `Referer`, the `_xsrf` field).
async fn form(
    client: &reqwest::Client,
    base: &str,
    from: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let token = token(client, base).await;
    let mut fields = fields.to_vec();
    fields.push(("_xsrf", &token));
    (client.post(format!("{base}{path}")))
        .header(ACCEPT, "text/html")
        .header(REFERER, format!("{base}{from}"))
        .form(&fields)
        .send()
        .await
        .unwrap()
}

fn location(res: &reqwest::Response) -> String {
    (res.headers().get(LOCATION)).map_or_else(String::new, |v| v.to_str().unwrap().to_owned())
}

/// Whether `client`'s session is still logged in (`GET /` answers the page, not a redirect).
async fn logged_in(client: &reqwest::Client, base: &str) -> bool {
    let res = client.get(format!("{base}/")).send().await.unwrap();
    res.status() == StatusCode::OK
}

/// Confirms the password on the confirm page, wrong first (refused, 401), then right: a
/// redirect to `next`.
async fn confirm(demo: Demo, client: &reqwest::Client, base: &str, next: &str) {
    let (status, _) = page(client, base, &format!("/confirm?next={next}")).await;
    assert_eq!(status, StatusCode::OK, "{demo:?}");
    let wrong = [("password", "not-the-password"), ("next", next)];
    let res = form(client, base, "/confirm", "/confirm", &wrong).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{demo:?}");
    let right = [("password", PASSWORD), ("next", next)];
    let res = form(client, base, "/confirm", "/confirm", &right).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
    assert_eq!(location(&res), next, "{demo:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensitive_pages_ask_for_the_password_again_after_the_window() {
    on_both(|demo, base| async move {
        let ana = client();
        register(&ana, &base, "ana").await;
        let phone = client();
        common::login(&phone, &base, "ana").await;
        // Fresh from the login: straight through.
        let (status, _) = page(&ana, &base, "/account/password").await;
        assert_eq!(status, StatusCode::OK, "{demo:?}: fresh login");

        tokio::time::sleep(WINDOW).await;
        let (status, to) = page(&ana, &base, "/account/password").await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{demo:?}");
        assert_eq!(to, "/confirm?next=%2Faccount%2Fpassword", "{demo:?}");
        let res = form(&ana, &base, "/sessions", "/sessions/revoke-others", &[]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
        assert_eq!(location(&res), "/confirm?next=%2Fsessions", "{demo:?}");
        let new = [("password", "a-new-password"), ("repeat", "a-new-password")];
        let res = form(&ana, &base, "/account/password", "/account/password", &new).await;
        assert_eq!(
            location(&res),
            "/confirm?next=%2Faccount%2Fpassword",
            "{demo:?}"
        );
        let res = form(&ana, &base, "/account/delete", "/account/delete", &[]).await;
        assert_eq!(
            location(&res),
            "/confirm?next=%2Faccount%2Fdelete",
            "{demo:?}"
        );
        assert!(logged_in(&phone, &base).await, "{demo:?}: nothing was done");

        // No open redirect: a `next` elsewhere goes home.
        let res = form(
            &ana,
            &base,
            "/confirm",
            "/confirm",
            &[("password", PASSWORD), ("next", "//evil.example/")],
        )
        .await;
        assert_eq!(location(&res), "/", "{demo:?}");
        confirm(demo, &ana, &base, "/sessions").await;
        let res = form(&ana, &base, "/sessions", "/sessions/revoke-others", &[]).await;
        assert_eq!(location(&res), "/sessions", "{demo:?}: revoked");
        assert!(
            !logged_in(&phone, &base).await,
            "{demo:?}: the other device is out"
        );
        let res = form(&ana, &base, "/account/password", "/account/password", &new).await;
        assert_eq!(location(&res), "/", "{demo:?}: password changed");
        // The new password logs in, the old one no longer does.
        let res = post(
            &phone,
            &base,
            "/login",
            &[("name", "ana"), ("password", PASSWORD)],
        )
        .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{demo:?}");
        let res = post(
            &phone,
            &base,
            "/login",
            &[("name", "ana"), ("password", "a-new-password")],
        )
        .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_account_needs_a_recent_login_and_ends_every_session() {
    on_both(|demo, base| async move {
        let ana = client();
        register(&ana, &base, "ana").await;
        let phone = client();
        common::login(&phone, &base, "ana").await;
        tokio::time::sleep(WINDOW).await;
        let (status, to) = page(&ana, &base, "/account/delete").await;
        assert_eq!(
            (status, to.as_str()),
            (StatusCode::SEE_OTHER, "/confirm?next=%2Faccount%2Fdelete"),
            "{demo:?}"
        );
        confirm(demo, &ana, &base, "/account/delete").await;
        let res = form(&ana, &base, "/account/delete", "/account/delete", &[]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
        assert_eq!(location(&res), "/login", "{demo:?}");
        assert!(
            !logged_in(&phone, &base).await,
            "{demo:?}: the other session ended"
        );
        assert!(!logged_in(&ana, &base).await, "{demo:?}: this one too");
        let res = post(
            &phone,
            &base,
            "/login",
            &[("name", "ana"), ("password", PASSWORD)],
        )
        .await;
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "{demo:?}: no account"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_401_with_a_reason_until_the_password_is_confirmed() {
    on_both(|demo, base| async move {
        let browser = client();
        register(&browser, &base, "ana").await;
        let api = reqwest::Client::new();
        let res = cloakroom_testkit::demo_client::api_login(&api, &base, "ana", PASSWORD).await;
        let json: serde_json::Value = res.json().await.unwrap();
        let auth = format!("Bearer {}", json["token"].as_str().unwrap());
        let call = |path: &'static str, body: serde_json::Value| {
            (api.post(format!("{base}{path}")))
                .header(AUTHORIZATION, &auth)
                .json(&body)
                .send()
        };
        let res = call("/api/sessions/revoke-others", serde_json::json!({}))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{demo:?}: fresh");
        let json: serde_json::Value = res.json().await.unwrap();
        assert_eq!(json["revoked"], 1, "{demo:?}: the browser's session");
        assert!(!logged_in(&browser, &base).await, "{demo:?}");
        common::login(&browser, &base, "ana").await;

        tokio::time::sleep(WINDOW).await;
        let res = call("/api/sessions/revoke-others", serde_json::json!({}))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{demo:?}");
        let challenge = res.headers()[WWW_AUTHENTICATE].to_str().unwrap().to_owned();
        assert_eq!(
            challenge, "Session error=\"reauthentication_required\", max_age=2",
            "{demo:?}"
        );
        let json: serde_json::Value = res.json().await.unwrap();
        assert_eq!(json["error"], "reauthentication_required", "{demo:?}");
        assert_eq!(json["confirm_url"], "/confirm", "{demo:?}");
        // Bad input: a clear 4xx, never a 500.
        let res = (api.post(format!("{base}/api/confirm")))
            .header(AUTHORIZATION, &auth)
            .body("not json")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{demo:?}");
        let res = form(&browser, &base, "/confirm", "/confirm", &[("next", "/")]).await;
        assert!(res.status().is_client_error(), "{demo:?}: {}", res.status());
        let res = call(
            "/api/confirm",
            serde_json::json!({"password": "wrong-password"}),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{demo:?}");
        let res = call("/api/confirm", serde_json::json!({"password": PASSWORD}))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{demo:?}");
        let res = call("/api/sessions/revoke-others", serde_json::json!({}))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{demo:?}");
        let json: serde_json::Value = res.json().await.unwrap();
        assert_eq!(json["revoked"], 1, "{demo:?}: the browser's session");
        assert!(!logged_in(&browser, &base).await, "{demo:?}");
    })
    .await;
}
