//! The demo's HTTP scenarios, written once and run against both demos: `cloakroom-demo`
//! (axum) and `cloakroom-actix-demo` (actix-web), each its real binary on loopback, sessions
//! in memory, accounts in their own SQLite file. Each test starts both and runs its scenario
//! against one, then the other; the last test sends one request sequence to both and
//! compares the answers header for header.

mod common;

use common::{Demo, PASSWORD, client, get, login, me, on_both, post, register, token};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};

/// The value of `name`, or "".
fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map_or("", |v| v.to_str().unwrap_or_default())
}

/// The `name=value` pair of the `Set-Cookie` for `cookie`, if the response sets it.
fn set_cookie(headers: &HeaderMap, cookie: &str) -> Option<String> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{cookie}=")))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_login() {
    on_both(|demo, base| async move {
        let ana = client();
        let token = token(&ana, &base).await;
        let res = ana
            .post(format!("{base}/register"))
            .form(&[("name", "ana"), ("password", PASSWORD), ("_xsrf", &token)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
        assert_eq!(header(res.headers(), "location"), "/", "{demo:?}");
        let cookie = set_cookie(res.headers(), "session").expect("a session cookie");
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{demo:?}: {cookie}"
        );
        assert!(
            !cookie.contains("Secure") && !cookie.contains("Max-Age"),
            "{demo:?}: {cookie}"
        );
        assert_eq!(
            header(res.headers(), "cache-control"),
            "no-store",
            "{demo:?}"
        );

        let (status, home) = get(&ana, &base, "/").await;
        assert_eq!(status, StatusCode::OK, "{demo:?}");
        assert!(
            home.contains("Hello, ana") && home.contains("Welcome, ana"),
            "{demo:?}"
        );
        let (status, mine) = me(&ana, &base).await;
        assert_eq!(
            (status, mine["name"].as_str()),
            (StatusCode::OK, Some("ana")),
            "{demo:?}"
        );

        // Another browser logs in (remember me: a persistent cookie).
        let other = client();
        let fields = [("name", "ana"), ("password", PASSWORD), ("remember", "on")];
        let res = post(&other, &base, "/login", &fields).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
        let cookie = set_cookie(res.headers(), "session").expect("a session cookie");
        assert!(
            cookie.contains("Max-Age="),
            "{demo:?}: remember me, yet {cookie}"
        );
        let (_, home) = get(&other, &base, "/").await;
        assert!(home.contains("Welcome back, ana"), "{demo:?}");

        // Wrong password and unknown name: the same 401 page.
        for name in ["ana", "nobody"] {
            let stranger = client();
            let fields = [("name", name), ("password", "wrong-password")];
            let res = post(&stranger, &base, "/login", &fields).await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{demo:?}");
            assert!(
                res.text().await.unwrap().contains("wrong name or password"),
                "{demo:?}"
            );
        }
        // Registration is validated: short password 422, a taken name 409, no body 415.
        let res = post(
            &client(),
            &base,
            "/register",
            &[("name", "bo"), ("password", "short")],
        )
        .await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{demo:?}");
        assert!(
            res.text().await.unwrap().contains("at least 8 characters"),
            "{demo:?}"
        );
        let res = post(
            &client(),
            &base,
            "/register",
            &[("name", "ANA"), ("password", PASSWORD)],
        )
        .await;
        assert_eq!(res.status(), StatusCode::CONFLICT, "{demo:?}");
        let res = post(&client(), &base, "/login", &[("name", "ana")]).await;
        assert_eq!(
            res.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{demo:?}: no password"
        );
        assert!(
            res.text()
                .await
                .unwrap()
                .contains("missing field `password`"),
            "{demo:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_and_flash_messages() {
    on_both(|demo, base| async move {
        let anonymous = client();
        let res = post(&anonymous, &base, "/notes", &[("text", "who am I")]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
        assert_eq!(
            header(res.headers(), "location"),
            "/login?hint=notes",
            "{demo:?}"
        );
        let (_, page) = get(&anonymous, &base, "/login?hint=notes").await;
        assert!(page.contains("Log in to keep notes."), "{demo:?}");

        let ana = client();
        register(&ana, &base, "ana").await;
        let (_, home) = get(&ana, &base, "/").await;
        assert!(home.contains("Welcome, ana"), "{demo:?}");
        let (_, home) = get(&ana, &base, "/").await;
        assert!(
            !home.contains("Welcome, ana"),
            "{demo:?}: a flash is shown once"
        );

        let res = post(&ana, &base, "/notes", &[("text", "first <b>note</b>")]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
        assert_eq!(header(res.headers(), "location"), "/", "{demo:?}");
        let (_, home) = get(&ana, &base, "/").await;
        assert!(
            home.contains("first &lt;b&gt;note&lt;") && !home.contains("<b>note"),
            "{demo:?}: escaped"
        );
        assert!(home.contains("Note saved"), "{demo:?}");
        let (_, home) = get(&ana, &base, "/").await;
        assert!(!home.contains("Note saved"), "{demo:?}");

        let res = post(&ana, &base, "/notes", &[("text", "   ")]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
        let (_, home) = get(&ana, &base, "/").await;
        assert!(home.contains("A note needs some text"), "{demo:?}");

        let res = post(&ana, &base, "/notes", &[("text", "second")]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
        let res = post(&ana, &base, "/notes/delete", &[("index", "0")]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
        let (_, mine) = me(&ana, &base).await;
        assert_eq!(mine["notes"], serde_json::json!(["second"]), "{demo:?}");
        let res = post(&ana, &base, "/notes/delete", &[("index", "7")]).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{demo:?}");
        let res = post(&ana, &base, "/notes/delete", &[("index", "x")]).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{demo:?}");
        let res = post(&ana, &base, "/notes/clear", &[]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
        let (_, home) = get(&ana, &base, "/").await;
        assert!(home.contains("All notes deleted"), "{demo:?}");
        let (_, mine) = me(&ana, &base).await;
        assert_eq!(mine["notes"], serde_json::json!([]), "{demo:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_list_and_revoke() {
    on_both(|demo, base| async move {
        let [laptop, phone, tablet] = [client(), client(), client()];
        register(&laptop, &base, "ana").await;
        login(&phone, &base, "ana").await;
        login(&tablet, &base, "ana").await;
        let (status, page) = get(&laptop, &base, "/sessions").await;
        assert_eq!(status, StatusCode::OK, "{demo:?}");
        let handles: Vec<String> = page
            .split("data-handle=\"")
            .skip(1)
            .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
            .collect();
        assert_eq!(handles.len(), 3, "{demo:?}: {page}");
        assert!(
            page.contains(cloakroom_testkit::demo_client::USER_AGENT),
            "{demo:?}: the user agent is listed"
        );

        // The first row is this device; revoke the second: that browser is logged out.
        let res = post(
            &laptop,
            &base,
            "/sessions/revoke",
            &[("handle", &handles[1])],
        )
        .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
        assert_eq!(header(res.headers(), "location"), "/sessions", "{demo:?}");
        let logged_in = [me(&phone, &base).await.0, me(&tablet, &base).await.0];
        assert_eq!(
            logged_in
                .iter()
                .filter(|s| **s == StatusCode::UNAUTHORIZED)
                .count(),
            1,
            "{demo:?}: exactly one other device logged out"
        );
        let (_, page) = get(&laptop, &base, "/sessions").await;
        assert!(page.contains("Signed out of that session."), "{demo:?}");

        // Not a handle: 400; someone else's (or an ended) session: 404.
        let res = post(&laptop, &base, "/sessions/revoke", &[("handle", "nope")]).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{demo:?}");
        let res = post(
            &laptop,
            &base,
            "/sessions/revoke",
            &[("handle", &handles[1])],
        )
        .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{demo:?}");

        let res = post(&laptop, &base, "/sessions/revoke-others", &[]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
        let (_, page) = get(&laptop, &base, "/sessions").await;
        assert!(page.contains("Signed out of 1 other session"), "{demo:?}");
        assert_eq!(
            me(&phone, &base).await.0,
            StatusCode::UNAUTHORIZED,
            "{demo:?}"
        );
        assert_eq!(
            me(&tablet, &base).await.0,
            StatusCode::UNAUTHORIZED,
            "{demo:?}"
        );

        // Revoking this very session is a logout.
        let res = post(
            &laptop,
            &base,
            "/sessions/revoke",
            &[("handle", &handles[0])],
        )
        .await;
        assert_eq!(header(res.headers(), "location"), "/login", "{demo:?}");
        assert_eq!(
            me(&laptop, &base).await.0,
            StatusCode::UNAUTHORIZED,
            "{demo:?}"
        );
    })
    .await;
}

/// Reads `res`'s body until it holds `needle` (or the body ends): everything read.
async fn read_until(res: &mut reqwest::Response, needle: &str, within: Duration) -> String {
    let mut seen = String::new();
    let read = async {
        while !seen.contains(needle) {
            match res.chunk().await {
                Ok(Some(chunk)) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(None) | Err(_) => break,
            }
        }
    };
    let _ = tokio::time::timeout(within, read).await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_devices_stream_closes_when_its_session_ends() {
    on_both(|demo, base| async move {
        let [laptop, phone] = [client(), client()];
        register(&laptop, &base, "ana").await;
        login(&phone, &base, "ana").await;

        // Without a session: 401, no stream.
        let res = client()
            .get(format!("{base}/sessions/live"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{demo:?}");

        // The phone's devices page opens its stream.
        let mut stream = phone
            .get(format!("{base}/sessions/live"))
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), StatusCode::OK, "{demo:?}");
        assert_eq!(
            header(stream.headers(), "content-type"),
            "text/event-stream",
            "{demo:?}"
        );
        let opened = read_until(&mut stream, "event: live", Duration::from_secs(5)).await;
        assert!(opened.contains("event: live"), "{demo:?}: {opened:?}");

        // The laptop signs the phone out ("your devices", the second row).
        let (_, page) = get(&laptop, &base, "/sessions").await;
        let handles: Vec<&str> = page
            .split("data-handle=\"")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').unwrap()])
            .collect();
        assert_eq!(handles.len(), 2, "{demo:?}");
        let res = post(
            &laptop,
            &base,
            "/sessions/revoke",
            &[("handle", handles[1])],
        )
        .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
        let revoked = Instant::now();
        let ended = read_until(&mut stream, "event: ended", Duration::from_secs(5)).await;
        let took = revoked.elapsed();
        assert!(
            ended.contains("event: ended\ndata: revoked\n"),
            "{demo:?}: {ended:?}"
        );
        assert!(
            took < Duration::from_secs(1),
            "{demo:?}: the stream took {took:?}"
        );
        // ... and then the stream ends.
        let rest = read_until(&mut stream, "never sent", Duration::from_secs(5)).await;
        assert!(rest.is_empty(), "{demo:?}: {rest:?}");

        // A logout in another tab of the same session ends its stream too.
        let mut stream = laptop
            .get(format!("{base}/sessions/live"))
            .send()
            .await
            .unwrap();
        read_until(&mut stream, "event: live", Duration::from_secs(5)).await;
        let res = post(&laptop, &base, "/logout", &[]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
        let ended = read_until(&mut stream, "event: ended", Duration::from_secs(5)).await;
        assert!(ended.contains("data: logout"), "{demo:?}: {ended:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_and_the_old_ticket_is_dead() {
    on_both(|demo, base| async move {
        let ana = client();
        let token = token(&ana, &base).await;
        let res = ana
            .post(format!("{base}/register"))
            .form(&[("name", "ana"), ("password", PASSWORD), ("_xsrf", &token)])
            .send()
            .await
            .unwrap();
        let ticket = set_cookie(res.headers(), "session").unwrap();
        let ticket = ticket.split(';').next().unwrap().to_owned();

        let res = post(&ana, &base, "/logout", &[]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
        assert_eq!(header(res.headers(), "location"), "/login", "{demo:?}");
        let removal = set_cookie(res.headers(), "session").expect("a removal cookie");
        assert!(
            removal.starts_with("session=;") && removal.contains("Max-Age=0"),
            "{removal}"
        );
        let (status, _) = get(&ana, &base, "/").await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{demo:?}");

        // The old ticket, replayed by hand: dead.
        let replay = reqwest::Client::new()
            .get(format!("{base}/api/me"))
            .header(header::COOKIE, ticket)
            .send()
            .await
            .unwrap();
        assert_eq!(replay.status(), StatusCode::UNAUTHORIZED, "{demo:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csrf_refusals_carry_their_reasons() {
    on_both(|demo, base| async move {
        let ana = client();
        let form = [("name", "ana"), ("password", PASSWORD)];
        // Login CSRF: no token at all.
        let res = ana
            .post(format!("{base}/login"))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{demo:?}");
        assert!(
            res.text().await.unwrap().contains("token missing"),
            "{demo:?}"
        );
        // Not a token.
        let mut bad = form.to_vec();
        bad.push(("_xsrf", "2|00|00|1"));
        let res = ana
            .post(format!("{base}/register"))
            .form(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{demo:?}");
        assert!(
            res.text().await.unwrap().contains("token malformed"),
            "{demo:?}"
        );
        // A token of someone else's secret.
        let theirs = token(&client(), &base).await;
        let _ = token(&ana, &base).await; // ana has her own `_xsrf` cookie now
        let mut wrong = form.to_vec();
        wrong.push(("_xsrf", &theirs));
        let res = ana
            .post(format!("{base}/register"))
            .form(&wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{demo:?}");
        assert!(
            res.text().await.unwrap().contains("token mismatch"),
            "{demo:?}"
        );
        // A valid token sent from another site: refused before the token is looked at.
        let mine = token(&ana, &base).await;
        let mut fields = form.to_vec();
        fields.push(("_xsrf", &mine));
        for (name, value) in [
            ("sec-fetch-site", "cross-site"),
            ("origin", "http://evil.example"),
        ] {
            let res = ana
                .post(format!("{base}/register"))
                .header(name, value)
                .form(&fields)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{demo:?} {name}");
            assert!(
                res.text().await.unwrap().contains("cross-origin request"),
                "{demo:?}"
            );
        }
        // Scripts asking for JSON get JSON.
        let res = ana
            .post(format!("{base}/api/notes"))
            .header(header::ACCEPT, "application/json")
            .json(&serde_json::json!({ "text": "x" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{demo:?}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["reason"], "token missing", "{demo:?}: {body}");
        // With the token, the same request goes through.
        let res = ana
            .post(format!("{base}/register"))
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_api() {
    on_both(|demo, base| async move {
        let ana = client();
        let (status, body) = me(&ana, &base).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{demo:?}");
        assert_eq!(
            body,
            serde_json::json!({ "error": "not logged in" }),
            "{demo:?}"
        );
        let token = token(&ana, &base).await;
        assert!(token.starts_with("2|"), "{demo:?}: {token}");
        let note = |text: &str| serde_json::json!({ "text": text });
        let res = ana
            .post(format!("{base}/api/notes"))
            .header("X-XSRFToken", &token)
            .json(&note("x"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{demo:?}");

        register(&ana, &base, "ana").await;
        let token = common::token(&ana, &base).await;
        let send = |body: String, content_type: &'static str| {
            ana.post(format!("{base}/api/notes"))
                .header("X-XSRFToken", &token)
                .header(header::CONTENT_TYPE, content_type)
                .body(body)
                .send()
        };
        let res = send(note("from a script").to_string(), "application/json")
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED, "{demo:?}");
        assert_eq!(
            header(res.headers(), "content-type"),
            "application/json",
            "{demo:?}"
        );
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({ "notes": ["from a script"] }),
            "{demo:?}"
        );
        for (body, content_type) in [
            (note("").to_string(), "application/json"),
            ("{".to_owned(), "application/json"),
            ("{}".to_owned(), "application/json"),
            (note("x").to_string(), "text/plain"),
        ] {
            let res = send(body.clone(), content_type).await.unwrap();
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{demo:?}: {body}");
            let json: serde_json::Value = res.json().await.unwrap();
            assert!(json["error"].is_string(), "{demo:?}: {json}");
        }
        let (status, mine) = me(&ana, &base).await;
        assert_eq!(status, StatusCode::OK, "{demo:?}");
        assert_eq!(
            mine["notes"],
            serde_json::json!(["from a script"]),
            "{demo:?}"
        );
        assert!(
            mine["expires_at"].is_string() && mine["expires_at_ms"].is_i64(),
            "{demo:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_hosts_and_security_headers() {
    on_both(|demo, base| async move {
        let c = client();
        let res = c.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{demo:?}");
        assert_eq!(
            header(res.headers(), "content-type"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(res.text().await.unwrap(), "ok", "{demo:?}");
        let (status, metrics) = get(&c, &base, "/metrics").await;
        assert_eq!(status, StatusCode::OK, "{demo:?}");
        assert!(
            metrics.contains("cloakroom_demo_requests_total{class=\"ops\"} "),
            "{demo:?}"
        );
        let res = c.get(format!("{base}/no/such/page")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{demo:?}");
        let headers = res.headers().clone();
        assert!(
            res.text().await.unwrap().contains("There is no page here."),
            "{demo:?}"
        );
        assert_eq!(header(&headers, "x-frame-options"), "DENY", "{demo:?}");
        assert!(header(&headers, "content-security-policy").contains("frame-ancestors 'none'"));
        // DNS rebinding: another name in Host gets 421, except on /healthz.
        let res = c
            .get(format!("{base}/login"))
            .header(header::HOST, "evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::MISDIRECTED_REQUEST, "{demo:?}");
        let res = c
            .get(format!("{base}/healthz"))
            .header(header::HOST, "evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{demo:?}");
        let (status, metrics) = get(&c, &base, "/metrics").await;
        assert_eq!(status, StatusCode::OK, "{demo:?}");
        assert!(
            metrics.contains("cloakroom_demo_requests_total{class=\"not_found\"} 1\n"),
            "{demo:?}: {metrics}"
        );
        // The static files and the single-page client.
        for (path, content_type) in [
            ("/static/notes.js", "text/javascript; charset=utf-8"),
            ("/static/app.js", "text/javascript; charset=utf-8"),
            ("/app", "text/html; charset=utf-8"),
        ] {
            let res = c.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{demo:?} {path}");
            assert_eq!(
                header(res.headers(), "content-type"),
                content_type,
                "{demo:?} {path}"
            );
            if path == "/app" {
                assert!(
                    set_cookie(res.headers(), "XSRF-TOKEN").is_some(),
                    "{demo:?}"
                );
            }
        }
    })
    .await;
}

/// What must be equal between the two demos' answers: the status and every header but the
/// date and the cookie values (tickets and tokens are random), in a canonical order.
fn comparable(status: StatusCode, headers: &HeaderMap) -> Vec<String> {
    let mut lines = vec![status.to_string()];
    for (name, value) in headers {
        let value = value.to_str().unwrap_or("<bytes>");
        let value = match name.as_str() {
            "date" => continue,
            "set-cookie" => {
                // The name and the attributes; Max-Age and Expires may differ by a second.
                let (pair, attributes) = value.split_once(';').unwrap_or((value, ""));
                let name = pair.split('=').next().unwrap_or_default();
                let attributes: Vec<&str> = attributes
                    .split(';')
                    .map(str::trim)
                    .filter(|a| !a.starts_with("Max-Age") && !a.starts_with("Expires"))
                    .collect();
                format!("{name}=…; {}", attributes.join("; "))
            }
            "content-length" if value != "0" => "…".to_owned(),
            _ => value.to_owned(),
        };
        lines.push(format!("{name}: {value}"));
    }
    lines[1..].sort();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_demos_answer_alike_header_for_header() {
    let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = answers.clone();
    on_both(move |demo, base| {
        let record = record.clone();
        async move {
            let c = client();
            let mut seen = Vec::new();
            let mut note = |what: &str, res: &reqwest::Response| {
                seen.push((what.to_owned(), comparable(res.status(), res.headers())));
            };
            for path in [
                "/",
                "/login",
                "/register",
                "/healthz",
                "/api/me",
                "/nope",
                "/app",
            ] {
                note(path, &c.get(format!("{base}{path}")).send().await.unwrap());
            }
            // Methods a route does not have: 405 with `Allow`; HEAD as GET.
            let methods = [
                (reqwest::Method::GET, "/notes"),
                (reqwest::Method::OPTIONS, "/login"),
                (reqwest::Method::HEAD, "/"),
                (reqwest::Method::HEAD, "/healthz"),
            ];
            for (method, path) in methods {
                let res = c
                    .request(method.clone(), format!("{base}{path}"))
                    .send()
                    .await;
                note(&format!("{method} {path}"), &res.unwrap());
            }
            let res = c
                .post(format!("{base}/login"))
                .form(&[("name", "x")])
                .send()
                .await;
            note("POST /login without token", &res.unwrap());
            let res = c
                .post(format!("{base}/login"))
                .header(header::ACCEPT, "application/json")
                .form(&[("name", "x")])
                .send()
                .await;
            note("POST /login without token, JSON", &res.unwrap());
            note(
                "register",
                &post(
                    &c,
                    &base,
                    "/register",
                    &[("name", "ana"), ("password", PASSWORD)],
                )
                .await,
            );
            for path in ["/", "/sessions", "/api/me", "/api/csrf", "/static/notes.js"] {
                note(path, &c.get(format!("{base}{path}")).send().await.unwrap());
            }
            note("note", &post(&c, &base, "/notes", &[("text", "hi")]).await);
            note(
                "wrong login",
                &post(
                    &client(),
                    &base,
                    "/login",
                    &[("name", "ana"), ("password", "nope-nope")],
                )
                .await,
            );
            note("logout", &post(&c, &base, "/logout", &[]).await);
            note(
                "/ after logout",
                &c.get(format!("{base}/")).send().await.unwrap(),
            );
            record.lock().unwrap().push((demo, seen));
        }
    })
    .await;
    let answers = answers.lock().unwrap();
    let [(Demo::Axum, axum), (Demo::Actix, actix)] = &answers[..] else {
        panic!("both demos ran");
    };
    assert_eq!(axum.len(), actix.len());
    for ((what, a), (_, b)) in axum.iter().zip(actix) {
        assert_eq!(a, b, "{what}: axum (left) and actix (right) differ");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_keys_survive_a_hard_restart_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    for demo in Demo::BOTH {
        // Sessions and accounts in one SQLite file, the key generated beside it.
        let db = format!(
            "sqlite://{}",
            dir.path().join(format!("{demo:?}.db")).display()
        );
        let mut server = demo
            .start(&["--store", &db, "--users", &db], dir.path())
            .await;
        let base = server.base();
        let c = client();
        register(&c, &base, "ada").await;
        let res = post(&c, &base, "/notes", &[("text", "kept")]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
        server.restart().await; // SIGKILL, then the same command again
        let (status, mine) = me(&c, &base).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{demo:?}: logged out by the restart"
        );
        assert_eq!(mine["notes"], serde_json::json!(["kept"]), "{demo:?}");
        assert!(
            dir.path().join(format!("{demo:?}.db.keys")).exists(),
            "{demo:?}"
        );
        // Both close idle keep-alive connections at a stop (`floods.rs` checks how fast).
        drop(c);
        let exited = server.terminate(std::time::Duration::from_secs(20));
        assert_eq!(
            exited,
            Some(true),
            "{demo:?}: SIGTERM must stop the demo with exit 0"
        );
    }
}

/// The library's metrics on `/metrics` after a scripted visit: register (a session created),
/// log in again (rotated), log out (ended), log in (created), a form posted without a token
/// (a CSRF refusal); exact counts, and the store histogram's counts of creates and deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_sessions_and_store_operations() {
    on_both(|demo, base| async move {
        let c = client();
        register(&c, &base, "ada").await;
        login(&c, &base, "ada").await;
        let res = post(&c, &base, "/logout", &[]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
        login(&c, &base, "ada").await;
        let res = (c.post(format!("{base}/notes")).form(&[("text", "hi")]))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{demo:?}");
        let (status, text) = get(&c, &base, "/metrics").await;
        assert_eq!(status, StatusCode::OK, "{demo:?}");
        let value = |series: &str| -> Option<u64> {
            (text.lines()).find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        };
        let histogram = "cloakroom_store_operation_duration_seconds_count";
        for (series, expected) in [
            ("cloakroom_sessions_created_total", 2),
            ("cloakroom_sessions_rotated_total", 1),
            ("cloakroom_sessions_ended_total{reason=\"logout\"}", 1),
            (
                "cloakroom_csrf_rejections_total{reason=\"token missing\"}",
                1,
            ),
            (
                &format!("{histogram}{{store=\"memory\",operation=\"create\"}}"),
                3,
            ),
            (
                &format!("{histogram}{{store=\"memory\",operation=\"delete\"}}"),
                2,
            ),
        ] {
            assert_eq!(value(series), Some(expected), "{demo:?} {series}:\n{text}");
        }
    })
    .await;
}

/// With `--metrics-addr`, `/metrics` is served there and not on the main listener, and the
/// readiness output names the metrics address on a second line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_live_on_their_own_listener() {
    let dir = tempfile::tempdir().unwrap();
    for demo in Demo::BOTH {
        let users = format!(
            "sqlite://{}",
            dir.path().join(format!("{demo:?}.db")).display()
        );
        let args = [
            "--store",
            "memory://",
            "--users",
            &users,
            "--metrics-addr",
            "127.0.0.1:0",
        ];
        let server = demo.start(&args, dir.path()).await;
        let second = server
            .next_line(std::time::Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{demo:?}: no metrics line"));
        let metrics_url = second
            .strip_prefix("metrics on ")
            .unwrap_or_else(|| panic!("{demo:?}: {second}"));
        let c = client();
        let (status, _) = get(&c, &server.base(), "/metrics").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{demo:?}");
        let res = c.get(metrics_url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{demo:?}");
        assert!(
            res.text()
                .await
                .unwrap()
                .contains("cloakroom_demo_requests_total")
        );
        let other = c
            .get(metrics_url.replace("/metrics", "/login"))
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), StatusCode::NOT_FOUND, "{demo:?}");
    }
}

/// Behind a reverse proxy (a public origin) the loopback listener serves whoever reaches the
/// proxy: `/metrics` is then served on `--metrics-addr` only; with a loopback origin on the
/// main listener too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_not_served_on_the_main_listener_for_a_public_origin() {
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    for demo in Demo::BOTH {
        for (origin, host, metrics_addr, status) in [
            (
                "https://demo.example",
                "demo.example",
                false,
                StatusCode::NOT_FOUND,
            ),
            ("http://localhost:1", "localhost:1", false, StatusCode::OK),
            (
                "https://demo.example",
                "demo.example",
                true,
                StatusCode::NOT_FOUND,
            ),
        ] {
            let mut args = vec!["--store", "memory://", "--users", "sqlite::memory:"];
            args.extend(["--origin", origin]);
            if metrics_addr {
                args.extend(["--metrics-addr", "127.0.0.1:0"]);
            }
            let server = demo.start(&args, dir.path()).await;
            let get = |path: &str| {
                let url = format!("{}{path}", server.base());
                c.get(url).header(header::HOST, host).send()
            };
            let login = get("/login").await.unwrap();
            assert_eq!(login.status(), StatusCode::OK, "{demo:?} {origin}");
            let metrics = get("/metrics").await.unwrap();
            assert_eq!(metrics.status(), status, "{demo:?} {origin} {args:?}");
            if metrics_addr {
                let line = server.next_line(std::time::Duration::from_secs(5));
                let line = line.unwrap_or_else(|| panic!("{demo:?}: no metrics line"));
                let url = line.strip_prefix("metrics on ").expect("the metrics URL");
                let res = c.get(url).send().await.unwrap();
                assert_eq!(res.status(), StatusCode::OK, "{demo:?}");
            }
        }
    }
}

/// Behind a trusted proxy (`--trusted-proxy`) failed logins count against the forwarded
/// client address: one client's guessing does not lock out another. Without it the
/// forwarding headers are ignored and every failure counts against the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_failed_logins_count_per_forwarded_address() {
    let dir = tempfile::tempdir().unwrap();
    for (trusted, other_client) in [
        (true, StatusCode::UNAUTHORIZED),
        (false, StatusCode::TOO_MANY_REQUESTS),
    ] {
        let mut args = vec!["--store", "memory://", "--users", "sqlite::memory:"];
        if trusted {
            args.extend(["--trusted-proxy", "127.0.0.0/8"]);
        }
        for (demo, server) in common::start_both(&args, dir.path()).await {
            let (base, c) = (server.base(), client());
            let token = token(&c, &base).await;
            let login = |name: &str, from: &str| {
                let fields = [
                    ("name", name),
                    ("password", "wrong-password"),
                    ("_xsrf", &token),
                ];
                let req = c.post(format!("{base}/login")).form(&fields);
                req.header("x-forwarded-for", from).send()
            };
            // 30 failures, then 429 (more tries in case the budget refills meanwhile).
            let mut statuses = Vec::new();
            for i in 0..40 {
                let res = login(&format!("user{i}"), "203.0.113.7").await.unwrap();
                statuses.push(res.status().as_u16());
                if res.status() == StatusCode::TOO_MANY_REQUESTS {
                    break;
                }
            }
            assert!(
                statuses.len() > 30 && statuses.last() == Some(&429),
                "{demo:?} trusted={trusted}: {statuses:?}"
            );
            let res = login("someone-else", "203.0.113.8").await.unwrap();
            assert_eq!(res.status(), other_client, "{demo:?} trusted={trusted}");
        }
    }
}

/// Sends `request` as it is on a new connection; the response's status code.
async fn raw_status(base: &str, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = base.strip_prefix("http://").expect("an http:// base");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read = stream.read_to_end(&mut response);
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), read).await;
    read.expect("the demo closes the connection").unwrap();
    let response = String::from_utf8_lossy(&response);
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok());
    status.unwrap_or_else(|| panic!("no status line: {response:?}"))
}

/// RFC 9112 §3.2: 400 for an HTTP/1.1 request without `Host`, with two `Host` lines, or
/// with an absolute-form target whose authority is not the `Host`; the allow-list (421)
/// applies to that authority. Raw requests: HTTP clients always send one `Host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_lines_follow_rfc_9112() {
    on_both(|demo, base| async move {
        let here = base.strip_prefix("http://").unwrap();
        let evil = "evil.example";
        for (head, status) in [
            ("GET /login HTTP/1.1\r\n".to_owned(), 400),
            ("GET /healthz HTTP/1.1\r\n".to_owned(), 400),
            (
                format!("GET /login HTTP/1.1\r\nHost: {here}\r\nHost: {here}\r\n"),
                400,
            ),
            (
                format!("GET /login HTTP/1.1\r\nHost: {here}\r\nHost: {evil}\r\n"),
                400,
            ),
            (
                format!("GET http://{evil}/login HTTP/1.1\r\nHost: {here}\r\n"),
                400,
            ),
            (
                format!("GET http://{here}/login HTTP/1.1\r\nHost: {evil}\r\n"),
                400,
            ),
            (
                format!("GET http://{evil}/login HTTP/1.1\r\nHost: {evil}\r\n"),
                421,
            ),
            (format!("GET http://{evil}/login HTTP/1.0\r\n"), 421),
            (
                format!("GET http://{here}/login HTTP/1.1\r\nHost: {here}\r\n"),
                200,
            ),
            (format!("GET /login HTTP/1.1\r\nHost: {here}\r\n"), 200),
            ("GET /login HTTP/1.0\r\n".to_owned(), 200),
        ] {
            let request = format!("{head}Connection: close\r\n\r\n");
            assert_eq!(
                raw_status(&base, &request).await,
                status,
                "{demo:?}: {head:?}"
            );
        }
    })
    .await;
}

/// `--seal-session-data`: notes work as ever on both demos, yet the session store's file
/// (and its write-ahead log) never holds one in the clear; without the flag it does (so the
/// file is known to show session data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_session_data_is_not_in_the_store_file() {
    let dir = tempfile::tempdir().unwrap();
    for demo in Demo::BOTH {
        for sealed in [true, false] {
            let path = |what: &str| dir.path().join(format!("{demo:?}-{sealed}-{what}.db"));
            let store = format!("sqlite://{}", path("sessions").display());
            let users = format!("sqlite://{}", path("users").display());
            let mut args = vec!["--store", &store, "--users", &users];
            if sealed {
                args.push("--seal-session-data");
            }
            let server = demo.start(&args, dir.path()).await;
            let base = server.base();
            let ana = client();
            register(&ana, &base, "ana").await;
            let note = format!("note-{sealed}-{}", cloakroom_testkit::new_key().to_handle());
            let res = post(&ana, &base, "/notes", &[("text", &note)]).await;
            assert_eq!(res.status(), StatusCode::SEE_OTHER, "{demo:?}");
            let (_, mine) = me(&ana, &base).await;
            assert_eq!(mine["notes"], serde_json::json!([note]), "{demo:?}");
            let mut bytes = std::fs::read(path("sessions")).unwrap();
            let wal = dir
                .path()
                .join(format!("{demo:?}-{sealed}-sessions.db-wal"));
            bytes.extend(std::fs::read(wal).unwrap_or_default());
            let found = bytes.windows(note.len()).any(|w| w == note.as_bytes());
            assert_eq!(found, !sealed, "{demo:?}, sealed: {sealed}");
        }
    }
}

/// `--max-sessions-per-user 3`: a fourth login ends the least recently seen browser, whose
/// next page says why (once); the real binaries of both demos, flags parsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_login_ends_the_oldest_browser_on_both_demos() {
    let dir = tempfile::tempdir().unwrap();
    for demo in Demo::BOTH {
        let users = format!(
            "sqlite://{}",
            dir.path().join(format!("{demo:?}.db")).display()
        );
        let args = [
            "--store",
            "memory://",
            "--users",
            &users,
            "--max-sessions-per-user",
            "3",
        ];
        let server = demo.start(&args, dir.path()).await;
        let base = server.base();
        let browsers: Vec<reqwest::Client> = (0..4).map(|_| client()).collect();
        register(&browsers[0], &base, "ana").await;
        for b in &browsers[1..] {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            login(b, &base, "ana").await;
        }
        let (status, _) = get(&browsers[0], &base, "/").await;
        assert_eq!(
            status,
            StatusCode::SEE_OTHER,
            "{demo:?}: the oldest was logged out"
        );
        let (_, page) = get(&browsers[0], &base, "/login").await;
        assert!(page.contains("too many devices"), "{demo:?}: {page}");
        let (_, page) = get(&browsers[0], &base, "/login").await;
        assert!(!page.contains("too many devices"), "{demo:?}: shown once");
        for b in &browsers[1..] {
            assert_eq!(get(b, &base, "/").await.0, StatusCode::OK, "{demo:?}");
        }
    }
}
