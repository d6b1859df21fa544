//! Device-bound sessions (DBSC) end to end over HTTP, on both demos (so through both
//! adapters): a Rust client plays Chromium 150 (an ES256 device key, the proofs and header
//! forms captured in `../shared/dbsc/`), and a thief who copied the long-lived session
//! cookie but not the key.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cloakroom_testkit::dbsc::{DeviceKey, hs256, quoted_after, unsigned};
use common::{Demo, PASSWORD};
use reqwest::header::HeaderMap;
use serde_json::json;

/// The demos' bound cookie lifetime here (the login's grace is the same: it is shorter
/// than the default 30 s).
const BOUND: Duration = Duration::from_secs(3);

/// What came back.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// A browser tab: its own cookie jar (kept by hand, so a test can copy one cookie out of
/// it, as malware does).
struct Tab {
    http: reqwest::Client,
    base: String,
    jar: BTreeMap<String, String>,
}

impl Tab {
    fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Tab {
            http,
            base: base.to_owned(),
            jar: BTreeMap::new(),
        }
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        form: Option<&[(&str, &str)]>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if !self.jar.is_empty() {
            let pairs: Vec<String> = self.jar.iter().map(|(n, v)| format!("{n}={v}")).collect();
            req = req.header("Cookie", pairs.join("; "));
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(form) = form {
            req = req.form(form);
        }
        let res = req.send().await.unwrap();
        let headers = res.headers().clone();
        for set in headers.get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_owned(), value.to_owned());
            }
        }
        let status = res.status().as_u16();
        Reply {
            status,
            headers,
            body: res.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Reply {
        self.send("GET", path, &[("Accept", "text/html")], None)
            .await
    }

    /// A form post with a fresh `_xsrf` token, as the demo's pages send it.
    async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let token = self.send("GET", "/api/csrf", &[], None).await;
        let token: serde_json::Value = serde_json::from_str(&token.body).unwrap();
        let token = token["token"].as_str().unwrap().to_owned();
        let mut fields = fields.to_vec();
        fields.push(("_xsrf", &token));
        self.send("POST", path, &[], Some(&fields)).await
    }

    /// Registers (and so logs in) `name`; the login response.
    async fn sign_up(&mut self, name: &str) -> Reply {
        let res = self
            .post_form("/register", &[("name", name), ("password", PASSWORD)])
            .await;
        assert_eq!(res.status, 303, "{}", res.body);
        res
    }

    async fn register(&mut self, proof: &str) -> Reply {
        let headers = [("Secure-Session-Response", proof)];
        self.send("POST", "/dbsc/register", &headers, None).await
    }

    async fn refresh(&mut self, id: &str, proof: Option<&str>) -> Reply {
        let mut headers = vec![("Sec-Secure-Session-Id", id)];
        headers.extend(proof.map(|p| ("Secure-Session-Response", p)));
        self.send("POST", "/dbsc/refresh", &headers, None).await
    }

    async fn me(&mut self) -> u16 {
        let accept = [("Accept", "application/json")];
        self.send("GET", "/api/me", &accept, None).await.status
    }
}

/// The challenge a login offered for registration.
fn registration_challenge(login: &Reply) -> String {
    let offer = login
        .header("secure-session-registration")
        .unwrap_or_else(|| panic!("no registration offered: {login:?}"));
    assert!(
        offer.starts_with("(ES256 RS256);path=\"/dbsc/register\";challenge=\""),
        "{offer}"
    );
    quoted_after(offer, "challenge=\"").unwrap().to_owned()
}

/// The challenge of a `Secure-Session-Challenge: "<c>";id="<sid>"` header.
fn challenge_of(reply: &Reply) -> String {
    let value = reply
        .header("secure-session-challenge")
        .unwrap_or_else(|| panic!("no challenge: {reply:?}"));
    quoted_after(value, "\"").unwrap().to_owned()
}

/// Starts `demo` with `--dbsc mode`, sessions in memory, accounts in `dir`.
async fn start(
    demo: Demo,
    mode: &str,
    dir: &std::path::Path,
) -> cloakroom_testkit::process::ServerProcess {
    let users = format!(
        "sqlite://{}",
        dir.join(format!("{demo:?}-{mode}.db")).display()
    );
    let lifetime = format!("{}s", BOUND.as_secs());
    let args = [
        "--store",
        "memory://",
        "--users",
        &users,
        "--dbsc",
        mode,
        "--dbsc-bound-lifetime",
        &lifetime,
    ];
    demo.start(&args, dir).await
}

/// Hostile and broken registrations: refused with a 4xx, never a 500, and none of them
/// uses up the challenge.
async fn hostile_registrations(demo: Demo, tab: &mut Tab, device: &DeviceKey, challenge: &str) {
    let claims = json!({"jti": challenge});
    let header = json!({"alg": "ES256", "jwk": device.jwk(), "typ": "dbsc+jwt"});
    let mut wrong_typ = header.clone();
    wrong_typ["typ"] = json!("JWT");
    let mut none = header.clone();
    none["alg"] = json!("none");
    let mut hs = header.clone();
    hs["alg"] = json!("HS256");
    let other = DeviceKey::generate();
    let mut foreign_jwk = header.clone();
    foreign_jwk["jwk"] = other.jwk();
    let oversized = "A".repeat(10_000);
    let cases = [
        ("wrong typ", device.sign(&wrong_typ, &claims), 403),
        ("alg none", unsigned(&none, &claims), 403),
        (
            "HS256 keyed with the public key",
            hs256(&hs, &claims, &device.public_bytes()),
            403,
        ),
        (
            "signed by another key",
            device.sign(&foreign_jwk, &claims),
            403,
        ),
        (
            "a challenge never issued",
            device.registration("made-up"),
            403,
        ),
        ("malformed", "not.a.jwt!".to_owned(), 400),
        ("two parts", "abc.def".to_owned(), 400),
        ("oversized", oversized, 400),
    ];
    for (what, proof, status) in cases {
        let res = tab.register(&proof).await;
        assert_eq!(res.status, status, "{demo:?} {what}: {res:?}");
    }
    let bare = tab.send("POST", "/dbsc/register", &[], None).await;
    assert_eq!(bare.status, 400, "{demo:?}: no proof");
    let get = tab.send("GET", "/dbsc/register", &[], None).await;
    assert_eq!(get.status, 405, "{demo:?}");
}

/// Bad refresh requests: a clear 4xx each.
async fn bad_refreshes(demo: Demo, tab: &mut Tab, id: &str) {
    let malformed = tab.refresh("not a handle", None).await;
    assert_eq!(malformed.status, 400, "{demo:?}");
    let oversized = tab.refresh(id, Some(&"A".repeat(10_000))).await;
    assert_eq!(oversized.status, 400, "{demo:?}");
    let mut unknown = id.as_bytes().to_vec();
    unknown[0] = if unknown[0] == b'A' { b'B' } else { b'A' };
    let unknown = String::from_utf8(unknown).unwrap();
    assert_eq!(tab.refresh(&unknown, None).await.status, 401, "{demo:?}");
    let cross = [
        ("Sec-Secure-Session-Id", id),
        ("Origin", "https://evil.example"),
    ];
    let cross = tab.send("POST", "/dbsc/refresh", &cross, None).await;
    assert_eq!(cross.status, 403, "{demo:?}: cross-origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_session_registers_refreshes_and_a_stolen_ticket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for demo in Demo::BOTH {
        let server = start(demo, "required", dir.path()).await;
        let base = server.base();
        let mut tab = Tab::new(&base);
        let login = tab.sign_up("ada").await;
        let challenge = registration_challenge(&login);
        assert!(tab.jar.contains_key("session_bound"), "{demo:?}: {login:?}");
        assert_eq!(tab.me().await, 200, "{demo:?}: the login's bound cookie");
        let device = DeviceKey::generate();

        hostile_registrations(demo, &mut tab, &device, &challenge).await;

        // The real registration.
        let registered = tab.register(&device.registration(&challenge)).await;
        assert_eq!(registered.status, 200, "{demo:?}: {registered:?}");
        assert_eq!(registered.header("x-frame-options"), Some("DENY"));
        assert_eq!(registered.header("access-control-allow-credentials"), None);
        let instructions: serde_json::Value = serde_json::from_str(&registered.body).unwrap();
        let id = instructions["session_identifier"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(instructions["refresh_url"], "/dbsc/refresh");
        assert_eq!(instructions["scope"]["origin"], base);
        assert_eq!(instructions["credentials"][0]["name"], "session_bound");
        let early = challenge_of(&registered);
        // Replayed: the challenge is used up.
        let replay = tab.register(&device.registration(&challenge)).await;
        assert_eq!(replay.status, 403, "{demo:?}");
        assert_eq!(tab.me().await, 200, "{demo:?}: fresh bound cookie");
        let (status, _) = (tab.get("/sessions").await.status, ());
        assert_eq!(status, 200);
        assert!(
            tab.get("/sessions").await.body.contains("device-bound"),
            "{demo:?}"
        );

        // The thief copied the long-lived session cookie, not the key: refused on every
        // bound route, and refresh will not give them a bound cookie.
        let mut thief = Tab::new(&base);
        thief
            .jar
            .insert("session".into(), tab.jar["session"].clone());
        assert_eq!(thief.me().await, 401, "{demo:?}: stolen ticket on the API");
        let page = thief.get("/").await;
        assert_eq!(page.status, 303, "{demo:?}");
        assert_eq!(page.header("location"), Some("/login"));
        let asked = thief.refresh(&id, None).await;
        assert_eq!(asked.status, 403, "{demo:?}");
        let thief_key = DeviceKey::generate();
        let forged = thief
            .refresh(&id, Some(&thief_key.refresh(&challenge_of(&asked))))
            .await;
        assert_eq!(forged.status, 403, "{demo:?}: a proof by another key");
        assert!(forged.header("set-cookie").is_none());
        assert_eq!(thief.me().await, 401);

        // The challenge given in advance refreshes at once (quoted id, as the spec writes it).
        let quoted = format!("\"{id}\"");
        let refreshed = tab.refresh(&quoted, Some(&device.refresh(&early))).await;
        assert_eq!(refreshed.status, 200, "{demo:?}: {refreshed:?}");

        // The bound cookie expires: the ticket alone no longer passes; the browser refreshes
        // (403 with a challenge, then the signed proof) and goes on.
        tokio::time::sleep(BOUND + Duration::from_millis(300)).await;
        assert_eq!(tab.me().await, 401, "{demo:?}: expired bound cookie");
        let asked = tab.refresh(&id, None).await;
        assert_eq!(asked.status, 403, "{demo:?}");
        let proof = device.refresh(&challenge_of(&asked));
        let refreshed = tab.refresh(&id, Some(&proof)).await;
        assert_eq!(refreshed.status, 200, "{demo:?}: {refreshed:?}");
        assert_eq!(tab.me().await, 200, "{demo:?}: refreshed");
        let replayed = tab.refresh(&id, Some(&proof)).await;
        assert_eq!(replayed.status, 403, "{demo:?}: replayed refresh proof");

        bad_refreshes(demo, &mut tab, &id).await;

        // Logged out: the browser's refresh gets 401 and ends its DBSC session.
        assert_eq!(tab.post_form("/logout", &[]).await.status, 303);
        assert_eq!(tab.refresh(&id, None).await.status, 401, "{demo:?}: ended");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_refuses_an_unregistered_session_after_the_grace_and_optional_does_not_downgrade()
{
    let dir = tempfile::tempdir().unwrap();
    for demo in Demo::BOTH {
        // Required: a browser that never registers is refused once the grace is over.
        let required = start(demo, "required", dir.path()).await;
        let mut tab = Tab::new(&required.base());
        tab.sign_up("bob").await;
        assert_eq!(tab.me().await, 200, "{demo:?}: within the grace");
        tokio::time::sleep(BOUND + Duration::from_millis(300)).await;
        assert_eq!(tab.me().await, 401, "{demo:?}: required, never registered");
        // The login page itself stays open (a refused user can log in again).
        assert_eq!(tab.get("/login").await.status, 200);

        // Optional: the same browser keeps its plain session...
        let optional = start(demo, "optional", dir.path()).await;
        let mut tab = Tab::new(&optional.base());
        let login = tab.sign_up("cleo").await;
        tokio::time::sleep(BOUND + Duration::from_millis(300)).await;
        assert_eq!(tab.me().await, 200, "{demo:?}: optional, not registered");
        // ...but once it registers, the ticket alone is refused (no downgrade).
        let device = DeviceKey::generate();
        let registered = tab
            .register(&device.registration(&registration_challenge(&login)))
            .await;
        assert_eq!(registered.status, 200, "{demo:?}: {registered:?}");
        assert_eq!(tab.me().await, 200);
        tab.jar.remove("session_bound");
        assert_eq!(tab.me().await, 401, "{demo:?}: registered, no bound cookie");
        // An API client's login (ticket in a header) is offered nothing: it keeps no cookies.
        let api = reqwest::Client::new()
            .post(format!("{}/api/login", optional.base()))
            .json(&json!({"name": "cleo", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(api.status(), 200, "{demo:?}");
        assert!(api.headers().get("secure-session-registration").is_none());
        assert!(api.headers().get("set-cookie").is_none(), "{demo:?}");

        // Off: no offer, no endpoints (the app's CSRF check refuses the bare POST).
        let off = start(demo, "off", dir.path()).await;
        let mut tab = Tab::new(&off.base());
        let login = tab.sign_up("dan").await;
        assert!(login.header("secure-session-registration").is_none());
        assert!(!tab.jar.contains_key("session_bound"));
        let status = tab.register("a.b.c").await.status;
        assert!(matches!(status, 403 | 404), "{demo:?}: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoints_are_rate_limited_per_session() {
    let dir = tempfile::tempdir().unwrap();
    for demo in Demo::BOTH {
        let server = start(demo, "optional", dir.path()).await;
        let mut tab = Tab::new(&server.base());
        let login = tab.sign_up("eve").await;
        let device = DeviceKey::generate();
        let registered = tab
            .register(&device.registration(&registration_challenge(&login)))
            .await;
        let id: serde_json::Value = serde_json::from_str(&registered.body).unwrap();
        let id = id["session_identifier"].as_str().unwrap().to_owned();
        let mut statuses = Vec::new();
        for _ in 0..40 {
            statuses.push(tab.refresh(&id, None).await.status);
        }
        assert!(
            statuses[..20].iter().all(|s| *s == 403),
            "{demo:?}: {statuses:?}"
        );
        let limited = tab.refresh(&id, None).await;
        assert_eq!(limited.status, 429, "{demo:?}: {statuses:?}");
        assert!(limited.header("retry-after").is_some());
    }
}
