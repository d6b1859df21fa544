//! The DBSC flow end to end: login, registration, refresh, the guard and early challenges.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer as _;
use rsa::rand_core::OsRng;

use super::*;
use crate::dbsc::bound::bound_cookie_value;
use crate::dbsc::limits::EarlyChallenges;
use crate::dbsc::{DbscEndpoint, DbscRequest, DbscResponse, DeviceKey, verify_registration};
use crate::keys::{Key, KeyRing};
use crate::session::DEVICE_KEY_FIELD;
use crate::store::MemoryStore;
use crate::{SessionSettings, SessionStore};

fn engine(store: &MemoryStore) -> SessionEngine {
    let dbsc = DbscSettings::new("https://app.example").unwrap();
    SessionSettings::new(
        store.clone(),
        KeyRing::single(Key::from_bytes(&[3; 32]).unwrap()),
    )
    .with_dbsc(dbsc)
    .build()
}

/// The browser: a device key, and the proofs Chromium 150 sends.
struct Browser(p256::ecdsa::SigningKey);

impl Browser {
    fn new() -> Self {
        Browser(p256::ecdsa::SigningKey::random(&mut OsRng))
    }

    fn proof(&self, challenge: &str, with_jwk: bool) -> String {
        let point = self.0.verifying_key().to_encoded_point(false);
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let mut header = serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt"});
        if with_jwk {
            header["jwk"] = serde_json::json!({"kty": "EC", "crv": "P-256",
                "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())});
        }
        let claims = serde_json::json!({"jti": challenge});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature: p256::ecdsa::Signature = self.0.sign(input.as_bytes());
        format!("{input}.{}", b64(&signature.to_vec()))
    }
}

fn header<'r>(headers: &'r [(&'static str, String)], name: &str) -> Option<&'r str> {
    headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

/// `"<c>";id="<sid>"` -> c; `...;challenge="<c>"...` -> c.
fn quoted_after<'v>(value: &'v str, prefix: &str) -> &'v str {
    let start = value.find(prefix).unwrap() + prefix.len();
    let rest = &value[start..];
    &rest[..rest.find('"').unwrap()]
}

/// Logs in; returns the session key, the login headers and the registration challenge.
async fn login(engine: &SessionEngine) -> (SessionKey, Vec<(&'static str, String)>, String) {
    let session = engine.session(None);
    session.set("n", &1).await.unwrap();
    let created = engine.commit(&session, None).await.unwrap();
    assert_eq!(
        engine.dbsc_headers(&session, &created).await.unwrap(),
        vec![]
    );
    let ticket = created.set_cookie.unwrap();
    let session = engine.session(Some(ticket.split(';').next().unwrap()));
    session.login("ada").await.unwrap();
    let outcome = engine.commit(&session, None).await.unwrap();
    let key = engine.handle_of(&session).await.unwrap().unwrap();
    let headers = engine.dbsc_headers(&session, &outcome).await.unwrap();
    let challenge = quoted_after(
        header(&headers, REGISTRATION_HEADER).unwrap(),
        "challenge=\"",
    );
    let challenge = challenge.to_owned();
    (key, headers, challenge)
}

async fn register(engine: &SessionEngine, proof: &str) -> DbscResponse {
    let request = DbscRequest {
        proof: Some(proof),
        ..DbscRequest::default()
    };
    let endpoint = engine.dbsc_endpoint("/dbsc/register").unwrap();
    engine.dbsc_answer(endpoint, "POST", request).await
}

async fn refresh(engine: &SessionEngine, key: &SessionKey, proof: Option<&str>) -> DbscResponse {
    let id = key.to_handle();
    engine
        .dbsc_refresh(DbscRequest {
            session_id: Some(&id),
            proof,
            ..DbscRequest::default()
        })
        .await
}

fn challenge_of(response: &DbscResponse) -> String {
    quoted_after(header(&response.headers, CHALLENGE_HEADER).unwrap(), "\"").to_owned()
}

fn cookie_of(response_headers: &[(&'static str, String)]) -> String {
    let set_cookie = header(response_headers, "Set-Cookie").unwrap();
    set_cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_login_registers_refreshes_and_a_copied_ticket_gets_no_bound_cookie() {
    let store = MemoryStore::new();
    let engine = engine(&store);
    let (key, login_headers, challenge) = login(&engine).await;
    assert!(
        header(&login_headers, REGISTRATION_HEADER)
            .unwrap()
            .starts_with("(ES256 RS256);path=\"/dbsc/register\";")
    );
    assert!(engine.dbsc_bound_cookie_valid(&key, Some(&cookie_of(&login_headers))));

    let browser = Browser::new();
    let registered = register(&engine, &browser.proof(&challenge, true)).await;
    assert_eq!(registered.status, 200, "{registered:?}");
    let json: serde_json::Value = serde_json::from_str(&registered.body).unwrap();
    assert_eq!(json["session_identifier"], key.to_handle());
    assert_eq!(json["refresh_url"], "/dbsc/refresh");
    assert_eq!(json["scope"]["origin"], "https://app.example");
    let set_cookie = header(&registered.headers, "Set-Cookie").unwrap();
    assert_eq!(json["credentials"][0]["name"], "__Host-session_bound");
    let attributes = json["credentials"][0]["attributes"].as_str().unwrap();
    assert!(
        set_cookie.ends_with(&format!("; {attributes}")),
        "{set_cookie} / {attributes}"
    );
    assert!(engine.dbsc_bound_cookie_valid(&key, Some(&cookie_of(&registered.headers))));
    // The same registration proof again: its challenge is used up.
    assert_eq!(
        register(&engine, &browser.proof(&challenge, true))
            .await
            .status,
        403
    );

    // Refresh: with the challenge given in advance, then after a 403.
    let early = challenge_of(&registered);
    let refreshed = refresh(&engine, &key, Some(&browser.proof(&early, false))).await;
    assert_eq!(refreshed.status, 200, "{refreshed:?}");
    let asked = refresh(&engine, &key, None).await;
    assert_eq!(asked.status, 403);
    let challenge = challenge_of(&asked);
    assert!(
        header(&asked.headers, CHALLENGE_HEADER)
            .unwrap()
            .ends_with(&format!(";id=\"{}\"", key.to_handle()))
    );
    assert_eq!(
        refresh(&engine, &key, Some(&browser.proof(&challenge, false)))
            .await
            .status,
        200
    );
    // Replayed: a fresh 403, no cookie.
    let replayed = refresh(&engine, &key, Some(&browser.proof(&challenge, false))).await;
    assert_eq!(replayed.status, 403);
    assert_eq!(header(&replayed.headers, "Set-Cookie"), None);

    // The thief has the ticket but not the device key: every refresh is a 403.
    let thief = Browser::new();
    let challenge = challenge_of(&refresh(&engine, &key, None).await);
    let stolen = refresh(&engine, &key, Some(&thief.proof(&challenge, false))).await;
    assert_eq!(stolen.status, 403);
    assert_eq!(header(&stolen.headers, "Set-Cookie"), None);
    // Nor can anyone register another key over a bound session, even with a challenge
    // issued for it.
    let again = engine
        .put_challenge(engine.dbsc().unwrap(), &key)
        .await
        .unwrap();
    assert_eq!(
        register(&engine, &thief.proof(&again, true)).await.status,
        403
    );
    let stored = &store.load(&key).await.unwrap().unwrap().data[DEVICE_KEY_FIELD];
    assert_eq!(
        DeviceKey::from_jwk(stored).unwrap().to_jwk(),
        browser_jwk(&browser)
    );
}

fn browser_jwk(browser: &Browser) -> String {
    verify_registration(&browser.proof("x", true), None)
        .unwrap()
        .1
        .to_jwk()
}

#[tokio::test]
async fn a_challenge_of_another_session_does_not_refresh_this_one() {
    let store = MemoryStore::new();
    let engine = engine(&store);
    let browser = Browser::new();
    let (key, _, challenge) = login(&engine).await;
    assert_eq!(
        register(&engine, &browser.proof(&challenge, true))
            .await
            .status,
        200
    );
    let (other, _, other_challenge) = login(&engine).await;
    assert_eq!(
        register(&engine, &browser.proof(&other_challenge, true))
            .await
            .status,
        200
    );
    let foreign = challenge_of(&refresh(&engine, &other, None).await);
    assert_eq!(
        refresh(&engine, &key, Some(&browser.proof(&foreign, false)))
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn ended_unknown_and_unbound_sessions_get_401_and_bad_headers_400() {
    let store = MemoryStore::new();
    let engine = engine(&store);
    let (key, _, challenge) = login(&engine).await;
    // Not registered yet: not a DBSC session.
    assert_eq!(refresh(&engine, &key, None).await.status, 401);
    let browser = Browser::new();
    assert_eq!(
        register(&engine, &browser.proof(&challenge, true))
            .await
            .status,
        200
    );
    assert_eq!(refresh(&engine, &key, None).await.status, 403);
    assert!(store.delete(&key).await.unwrap());
    assert_eq!(refresh(&engine, &key, None).await.status, 401);
    let unknown = crate::SessionId::generate().key();
    assert_eq!(refresh(&engine, &unknown, None).await.status, 401);
    let bad_id = engine
        .dbsc_refresh(DbscRequest {
            session_id: Some("x"),
            ..DbscRequest::default()
        })
        .await;
    assert_eq!(bad_id.status, 400);
    assert_eq!(register(&engine, "a.b.c").await.status, 400);
    assert_eq!(register(&engine, &"A".repeat(10_000)).await.status, 400);
    assert_eq!(
        engine.dbsc_register(DbscRequest::default()).await.status,
        400
    );
    // A registration whose challenge was never issued.
    assert_eq!(
        register(&engine, &browser.proof("made-up", true))
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn endpoints_answer_post_only_and_only_when_dbsc_is_on() {
    let store = MemoryStore::new();
    let engine = engine(&store);
    assert_eq!(
        engine.dbsc_endpoint("/dbsc/refresh"),
        Some(DbscEndpoint::Refresh)
    );
    assert_eq!(engine.dbsc_endpoint("/dbsc/register/"), None);
    let get = engine
        .dbsc_answer(DbscEndpoint::Refresh, "GET", DbscRequest::default())
        .await;
    assert_eq!(
        (get.status, header(&get.headers, "Allow")),
        (405, Some("POST"))
    );
    let ring = KeyRing::single(Key::from_bytes(&[3; 32]).unwrap());
    let off = SessionSettings::new(store.clone(), ring.clone()).build();
    assert_eq!(off.dbsc_endpoint("/dbsc/refresh"), None);
    let policy_off = DbscSettings::new("https://app.example")
        .unwrap()
        .with_policy(DbscPolicy::Off);
    let off = SessionSettings::new(store, ring)
        .with_dbsc(policy_off)
        .build();
    assert_eq!(off.dbsc_endpoint("/dbsc/register"), None);
    let session = off.session(None);
    session.login("ada").await.unwrap();
    let outcome = off.commit(&session, None).await.unwrap();
    assert_eq!(off.dbsc_headers(&session, &outcome).await.unwrap(), vec![]);
}

#[tokio::test]
async fn a_login_on_a_bound_session_drops_the_binding_and_offers_registration_again() {
    let store = MemoryStore::new();
    let engine = engine(&store);
    let browser = Browser::new();
    // A login on a fresh session (no ticket yet) is a renewal too: offered registration.
    let session = engine.session(None);
    session.login("ada").await.unwrap();
    let first = engine.commit(&session, None).await.unwrap();
    assert_eq!(first.action, CommitAction::Renewed);
    let ticket = first.set_cookie.clone().unwrap();
    let registration = |headers: Vec<(&'static str, String)>| {
        let value = header(&headers, REGISTRATION_HEADER).unwrap();
        quoted_after(value, "challenge=\"").to_owned()
    };
    let challenge = registration(engine.dbsc_headers(&session, &first).await.unwrap());
    assert_eq!(
        register(&engine, &browser.proof(&challenge, true))
            .await
            .status,
        200
    );
    // Logging in again on the bound session: a new id, unbound, offered registration.
    let again = engine.session(Some(ticket.split(';').next().unwrap()));
    again.login("ada").await.unwrap();
    let outcome = engine.commit(&again, None).await.unwrap();
    let key = engine.handle_of(&again).await.unwrap().unwrap();
    assert_eq!(
        refresh(&engine, &key, None).await.status,
        401,
        "not bound yet"
    );
    let challenge = registration(engine.dbsc_headers(&again, &outcome).await.unwrap());
    assert_eq!(
        register(&engine, &browser.proof(&challenge, true))
            .await
            .status,
        200
    );
    assert_eq!(refresh(&engine, &key, None).await.status, 403, "bound");
}

#[tokio::test]
async fn a_cycled_id_drops_the_binding_and_offers_registration_again() {
    let store = MemoryStore::new();
    let engine = engine(&store);
    let browser = Browser::new();
    let session = engine.session(None);
    session.login("ada").await.unwrap();
    let first = engine.commit(&session, None).await.unwrap();
    let cookie = first.set_cookie.clone().unwrap();
    let challenge = quoted_after(
        header(
            &engine.dbsc_headers(&session, &first).await.unwrap(),
            REGISTRATION_HEADER,
        )
        .unwrap(),
        "challenge=\"",
    )
    .to_owned();
    assert_eq!(
        register(&engine, &browser.proof(&challenge, true))
            .await
            .status,
        200
    );
    let bound = engine.handle_of(&session).await.unwrap().unwrap();
    assert_eq!(refresh(&engine, &bound, None).await.status, 403, "bound");
    let again = engine.session(Some(cookie.split(';').next().unwrap()));
    again.cycle_id().await.unwrap();
    let outcome = engine.commit(&again, None).await.unwrap();
    let cycled = engine.handle_of(&again).await.unwrap().unwrap();
    assert_ne!(cycled, bound);
    assert_eq!(refresh(&engine, &cycled, None).await.status, 401, "unbound");
    let offered = engine.dbsc_headers(&again, &outcome).await.unwrap();
    assert!(header(&offered, REGISTRATION_HEADER).is_some());
    assert!(
        !store
            .load(&cycled)
            .await
            .unwrap()
            .unwrap()
            .data
            .contains_key(DEVICE_KEY_FIELD)
    );
}
#[tokio::test]
async fn early_challenges_only_near_a_registered_cookies_expiry_and_once_per_half_window() {
    let store = MemoryStore::new();
    let engine = engine(&store);
    let session = engine.session(None);
    session.login("ada").await.unwrap();
    let ticket = engine
        .commit(&session, None)
        .await
        .unwrap()
        .set_cookie
        .unwrap();
    let ticket = ticket.split(';').next().unwrap().to_owned();
    let key = engine.handle_of(&session).await.unwrap().unwrap();
    let name = engine.bound_cookie().name;
    let cookie = |left: u64, registered: bool| {
        let at = Timestamp::now().plus(Duration::from_secs(left));
        let value = bound_cookie_value(engine.keys(), &name, &key, at, registered);
        format!("{ticket}; {name}={value}")
    };
    let near = |header: &str| engine.dbsc_near_expiry([header.as_bytes()]);
    // The window of a 10-minute cookie is its last 3 minutes.
    assert_eq!(near(&cookie(181, true)), None, "fresh");
    assert_eq!(near(&cookie(179, true)), Some(NearExpiry { key }));
    assert_eq!(near(&cookie(10, false)), None, "the login's grace cookie");
    let other = crate::SessionId::generate().key();
    let at = Timestamp::now().plus(Duration::from_secs(10));
    let forged = bound_cookie_value(engine.keys(), "x", &other, at, true);
    assert_eq!(
        near(&format!("{name}={forged}")),
        None,
        "a MAC that does not verify"
    );
    // Shorter lifetimes: the last half.
    let short = EarlyChallenges::new(Duration::from_secs(4));
    assert_eq!(short.window, Duration::from_secs(2));

    // The response of a read-only request gets one, once per half window.
    let header = cookie(60, true);
    let request = engine.session(Some(&ticket));
    let outcome = request.commit_now().unwrap();
    let found = near(&header).unwrap();
    let early = engine
        .dbsc_early_challenge(&request, &outcome, found)
        .await
        .unwrap();
    let (name, value) = early.unwrap();
    assert_eq!(name, CHALLENGE_HEADER);
    let challenge = quoted_after(&value, "\"");
    assert_eq!(value, format!("\"{challenge}\";id=\"{}\"", key.to_handle()));
    assert_eq!(store.take_challenge(challenge).await.unwrap(), Some(key));
    let again = engine.session(Some(&ticket));
    let outcome = again.commit_now().unwrap();
    assert_eq!(
        engine
            .dbsc_early_challenge(&again, &outcome, found)
            .await
            .unwrap(),
        None,
        "one per half window"
    );
    // Another session's cookie beside this ticket: none.
    let stranger = engine.session(None);
    let outcome = stranger.commit_now().unwrap();
    let foreign = NearExpiry { key: other };
    assert_eq!(
        engine
            .dbsc_early_challenge(&stranger, &outcome, foreign)
            .await
            .unwrap(),
        None
    );
}
