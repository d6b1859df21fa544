//! Recent-login ("sudo mode") checks: when and how the user last proved who they are.
//!
//! [`Session::login_with`] records the time and the [`AuthMethod`] of a login;
//! [`Session::reauthenticate`] records a later proof (the password asked again before a
//! sensitive action) without rotating the id or touching anything else;
//! [`Session::authenticated_within`] tells whether the last proof is recent enough. The
//! record lives in the reserved session field `__cr.auth` (so every store carries it as any
//! other field, sealed with the data when sealing is on); applications cannot read or write
//! it as a field. A logout ends the session and the record with it; a new login replaces it.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use cloakroom_core::session::AuthMethod;
//! use cloakroom_core::{Key, KeyRing, MemoryStore, SessionSettings};
//!
//! let engine = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate())).build();
//! let session = engine.session(None);
//! session.login_with("ana", AuthMethod::RememberMe).await.unwrap();
//! // A remember-me restore is no proof of presence: not a recent login.
//! assert!(!session.authenticated_within(Duration::from_secs(300)).await.unwrap());
//! session.reauthenticate(AuthMethod::Password).await.unwrap();
//! assert!(session.authenticated_within(Duration::from_secs(300)).await.unwrap());
//! # });
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Error, ErrorKind, Result, Session, Timestamp};

/// The field holding the last authentication (`{"at": ms, "method": "password"}`).
pub(crate) const AUTH_FIELD: &str = "__cr.auth";

/// Longest name of an [`AuthMethod::Other`].
const MAX_OTHER_NAME: usize = 64;

/// How the user proved who they are.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// A password (what [`Session::login`] records).
    Password,
    /// A passkey (WebAuthn).
    Passkey,
    /// A second factor (TOTP, a security key, a code sent by mail or text).
    SecondFactor,
    /// A remember-me token restored a login: no proof that the user is present, so it never
    /// counts as a recent authentication ([`Session::authenticated_within`]).
    RememberMe,
    /// Another method, by name: 1 to 64 printable ASCII characters, no spaces.
    Other(String),
}

impl AuthMethod {
    /// The method's name as stored and shown: `password`, `passkey`, `second_factor`,
    /// `remember_me`, or `other:NAME`.
    pub fn name(&self) -> std::borrow::Cow<'_, str> {
        match self {
            AuthMethod::Password => "password".into(),
            AuthMethod::Passkey => "passkey".into(),
            AuthMethod::SecondFactor => "second_factor".into(),
            AuthMethod::RememberMe => "remember_me".into(),
            AuthMethod::Other(name) => format!("other:{name}").into(),
        }
    }

    /// Whether it proves the user is present (all but [`AuthMethod::RememberMe`]).
    pub fn proves_presence(&self) -> bool {
        *self != AuthMethod::RememberMe
    }

    /// Refuses an [`AuthMethod::Other`] name that is empty, too long or not printable ASCII.
    fn check(&self) -> Result<()> {
        match self {
            AuthMethod::Other(name) if !valid_other(name) => Err(Error::new(
                ErrorKind::InvalidAuthMethod,
                format!(
                    "authentication method name must be 1 to {MAX_OTHER_NAME} printable ASCII \
                     characters without spaces"
                ),
            )),
            _ => Ok(()),
        }
    }
}

fn valid_other(name: &str) -> bool {
    (1..=MAX_OTHER_NAME).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic())
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The text is not an [`AuthMethod`] name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownAuthMethod;

impl fmt::Display for UnknownAuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown authentication method")
    }
}

impl std::error::Error for UnknownAuthMethod {}

impl FromStr for AuthMethod {
    type Err = UnknownAuthMethod;

    /// Parses what [`AuthMethod::name`] writes.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "password" => AuthMethod::Password,
            "passkey" => AuthMethod::Passkey,
            "second_factor" => AuthMethod::SecondFactor,
            "remember_me" => AuthMethod::RememberMe,
            _ => match s.strip_prefix("other:") {
                Some(name) if valid_other(name) => AuthMethod::Other(name.to_owned()),
                _ => return Err(UnknownAuthMethod),
            },
        })
    }
}

impl Serialize for AuthMethod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for AuthMethod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// When and how the user last proved who they are ([`Session::last_authentication`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authentication {
    /// When (by the clock of the server that recorded it).
    pub at: Timestamp,
    /// How.
    pub method: AuthMethod,
}

impl Authentication {
    /// Whether it proves presence ([`AuthMethod::proves_presence`]) and is younger than
    /// `max_age` at `now`. A time ahead of `now` (clocks of two servers apart) counts as now.
    pub fn is_within(&self, max_age: Duration, now: Timestamp) -> bool {
        let age = u64::try_from(now.as_millis().saturating_sub(self.at.as_millis())).unwrap_or(0);
        self.method.proves_presence() && u128::from(age) < max_age.as_millis()
    }
}

/// The stored form of [`Authentication`].
#[derive(Serialize, Deserialize)]
struct Stored {
    at: i64,
    method: AuthMethod,
}

/// The JSON text of an authentication by `method` now.
pub(super) fn record_now(method: &AuthMethod) -> Result<String> {
    method.check()?;
    let stored = Stored {
        at: Timestamp::now().as_millis(),
        method: method.clone(),
    };
    Ok(serde_json::to_string(&stored).expect("an authentication record serializes"))
}

/// The authentication in a stored `__cr.auth` value; `None` for one that does not parse (a
/// damaged record fails closed: no recent login).
pub(super) fn parse(json: &str) -> Option<Authentication> {
    let stored: Stored = serde_json::from_str(json).ok()?;
    Some(Authentication {
        at: Timestamp::from_millis(stored.at),
        method: stored.method,
    })
}

impl Session {
    /// Records a new proof of identity by `method` for the logged-in user, now: the time and
    /// method of [`last_authentication`](Self::last_authentication) change, nothing else (no
    /// new id, no new CSRF secret, no change to the user index). For the "please confirm your
    /// password" step before a sensitive action.
    ///
    /// # Errors
    /// [`ErrorKind::NotLoggedIn`] without a login, [`ErrorKind::InvalidAuthMethod`] for a bad
    /// [`AuthMethod::Other`] name, store failures, or a committed response.
    pub async fn reauthenticate(&self, method: AuthMethod) -> Result<()> {
        let json = record_now(&method)?;
        if self.user().await?.is_none() {
            return Err(Error::new(
                ErrorKind::NotLoggedIn,
                "reauthenticate needs a logged-in session",
            ));
        }
        self.set_raw(AUTH_FIELD, json).await
    }

    /// When and how the logged-in user last proved who they are (the login, or a later
    /// [`reauthenticate`](Self::reauthenticate)); `None` without a login (or for a login made
    /// before this was recorded).
    ///
    /// # Errors
    /// Store failures.
    pub async fn last_authentication(&self) -> Result<Option<Authentication>> {
        if self.user().await?.is_none() {
            return Ok(None);
        }
        Ok(self.get_raw(AUTH_FIELD).await?.as_deref().and_then(parse))
    }

    /// Whether the logged-in user proved who they are less than `max_age` ago, by a method
    /// that proves presence (a remember-me restore does not). `false` without a login.
    ///
    /// # Errors
    /// Store failures.
    pub async fn authenticated_within(&self, max_age: Duration) -> Result<bool> {
        let last = self.last_authentication().await?;
        Ok(last.is_some_and(|a| a.is_within(max_age, Timestamp::now())))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::keys::{Key, KeyRing};
    use crate::session::{CommitAction, SessionEngine, SessionSettings};
    use crate::store::{MemoryStore, SessionStore};

    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    fn engine(store: &Arc<MemoryStore>, sealed: bool) -> SessionEngine {
        let settings = SessionSettings::new(store.clone(), KeyRing::single(Key::generate()));
        #[cfg(feature = "seal")]
        let settings = settings.with_sealed_data(sealed).unwrap();
        #[cfg(not(feature = "seal"))]
        assert!(!sealed, "sealing needs the `seal` feature");
        settings.build()
    }

    /// Commits `session`; the `name=ticket` pair of its cookie (or `ticket` when none is set).
    async fn commit(engine: &SessionEngine, session: &Session, ticket: &str) -> String {
        let outcome = engine.commit(session, None).await.unwrap();
        outcome.set_cookie.map_or_else(
            || ticket.to_owned(),
            |c| c.split(';').next().unwrap().to_owned(),
        )
    }

    /// A session logged in as `ana` by `method`, committed: its `name=ticket` pair.
    async fn logged_in(engine: &SessionEngine, method: AuthMethod) -> String {
        let s = engine.session(None);
        s.login_with("ana", method).await.unwrap();
        commit(engine, &s, "").await
    }

    /// Sets the stored authentication of the session behind `ticket` to `age` ago (what the
    /// passing of time does, without the wait).
    async fn age(engine: &SessionEngine, ticket: &str, age: Duration) -> String {
        let s = engine.session(Some(ticket));
        let mut auth = s.last_authentication().await.unwrap().unwrap();
        auth.at = Timestamp::from_millis(Timestamp::now().as_millis() - age.as_millis() as i64);
        let stored = Stored {
            at: auth.at.as_millis(),
            method: auth.method,
        };
        s.set_raw(AUTH_FIELD, serde_json::to_string(&stored).unwrap())
            .await
            .unwrap();
        commit(engine, &s, ticket).await
    }

    #[tokio::test]
    async fn login_records_the_method_and_time() {
        let store = Arc::new(MemoryStore::new());
        let engine = engine(&store, false);
        let before = Timestamp::now();
        let ticket = logged_in(&engine, AuthMethod::Passkey).await;
        let s = engine.session(Some(&ticket));
        let auth = s.last_authentication().await.unwrap().unwrap();
        assert_eq!(auth.method, AuthMethod::Passkey);
        assert!(auth.at >= before && auth.at <= Timestamp::now());
        assert!(s.authenticated_within(FIVE_MINUTES).await.unwrap());
        // `login` is a password login.
        let s = engine.session(None);
        s.login("bo").await.unwrap();
        let method = s.last_authentication().await.unwrap().unwrap().method;
        assert_eq!(method, AuthMethod::Password);
    }

    #[tokio::test]
    async fn a_stale_login_is_refused_until_reauthenticated_and_that_rotates_nothing() {
        let store = Arc::new(MemoryStore::new());
        let engine = engine(&store, false);
        let ticket = logged_in(&engine, AuthMethod::Password).await;
        let ticket = age(&engine, &ticket, Duration::from_secs(301)).await;
        let s = engine.session(Some(&ticket));
        assert!(!s.authenticated_within(FIVE_MINUTES).await.unwrap());
        assert!(
            s.authenticated_within(Duration::from_secs(600))
                .await
                .unwrap()
        );
        let secret = crate::csrf::session_secret(&s).await.unwrap();
        let handle = engine.handle_of(&s).await.unwrap();
        s.reauthenticate(AuthMethod::SecondFactor).await.unwrap();
        assert!(s.authenticated_within(FIVE_MINUTES).await.unwrap());
        let outcome = engine.commit(&s, None).await.unwrap();
        assert_eq!(outcome.action, CommitAction::Patched, "no new id");
        assert!(outcome.set_cookie.is_none(), "the same ticket");
        let next = engine.session(Some(&ticket));
        assert_eq!(engine.handle_of(&next).await.unwrap(), handle);
        assert_eq!(crate::csrf::session_secret(&next).await.unwrap(), secret);
        assert_eq!(next.user().await.unwrap().as_deref(), Some("ana"));
        let auth = next.last_authentication().await.unwrap().unwrap();
        assert_eq!(auth.method, AuthMethod::SecondFactor);
        assert!(next.authenticated_within(FIVE_MINUTES).await.unwrap());
    }

    #[tokio::test]
    async fn a_remember_me_restore_is_not_a_recent_login() {
        let store = Arc::new(MemoryStore::new());
        let engine = engine(&store, false);
        let ticket = logged_in(&engine, AuthMethod::RememberMe).await;
        let s = engine.session(Some(&ticket));
        let auth = s.last_authentication().await.unwrap().unwrap();
        assert_eq!(auth.method, AuthMethod::RememberMe);
        assert!(!s.authenticated_within(FIVE_MINUTES).await.unwrap());
    }

    #[tokio::test]
    async fn logout_and_a_new_login_reset_it() {
        let store = Arc::new(MemoryStore::new());
        let engine = engine(&store, false);
        let ticket = logged_in(&engine, AuthMethod::Password).await;
        let ticket = age(&engine, &ticket, Duration::from_secs(3600)).await;
        // A new login (here as another user, by passkey) replaces the old record.
        let s = engine.session(Some(&ticket));
        s.login_with("bo", AuthMethod::Passkey).await.unwrap();
        assert!(s.authenticated_within(FIVE_MINUTES).await.unwrap());
        let ticket = commit(&engine, &s, &ticket).await;
        let s = engine.session(Some(&ticket));
        assert_eq!(
            s.last_authentication().await.unwrap().unwrap().method,
            AuthMethod::Passkey
        );
        s.logout().await.unwrap();
        assert_eq!(s.last_authentication().await.unwrap(), None);
        assert!(!s.authenticated_within(FIVE_MINUTES).await.unwrap());
        engine.commit(&s, None).await.unwrap();
        let gone = engine.session(Some(&ticket));
        assert_eq!(gone.last_authentication().await.unwrap(), None);
        // A session that was never logged in has none, and cannot reauthenticate.
        let anon = engine.session(None);
        anon.set("cart", &1).await.unwrap();
        assert_eq!(anon.last_authentication().await.unwrap(), None);
        let err = anon.reauthenticate(AuthMethod::Password).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotLoggedIn);
    }

    #[tokio::test]
    async fn the_field_is_reserved_to_the_library() {
        let store = Arc::new(MemoryStore::new());
        let engine = engine(&store, false);
        let s = engine.session(Some(&logged_in(&engine, AuthMethod::Password).await));
        let kind = |r: Result<()>| r.unwrap_err().kind();
        assert_eq!(kind(s.set(AUTH_FIELD, "x").await), ErrorKind::ReservedKey);
        assert_eq!(
            kind(s.get::<String>(AUTH_FIELD).await.map(drop)),
            ErrorKind::ReservedKey
        );
        assert_eq!(
            kind(s.remove(AUTH_FIELD).await.map(drop)),
            ErrorKind::ReservedKey
        );
        assert!(!s.keys().await.unwrap().contains(&AUTH_FIELD.to_owned()));
        s.clear().await.unwrap();
        assert!(
            s.last_authentication().await.unwrap().is_some(),
            "clear keeps it"
        );
        // Bad custom method names are refused, good ones kept.
        for bad in ["", "with space", "é", &"x".repeat(65)] {
            let err = s.reauthenticate(AuthMethod::Other(bad.into())).await;
            assert_eq!(kind(err), ErrorKind::InvalidAuthMethod, "{bad:?}");
        }
        let sms = AuthMethod::Other("sms-code".into());
        s.reauthenticate(sms.clone()).await.unwrap();
        assert_eq!(s.last_authentication().await.unwrap().unwrap().method, sms);
    }

    #[cfg(feature = "seal")]
    #[tokio::test]
    async fn it_is_sealed_with_the_data_and_opens_on_load() {
        let store = Arc::new(MemoryStore::new());
        let engine = engine(&store, true);
        let ticket = logged_in(&engine, AuthMethod::Password).await;
        let ticket = age(&engine, &ticket, Duration::from_secs(600)).await;
        let s = engine.session(Some(&ticket));
        let key = engine.handle_of(&s).await.unwrap().unwrap();
        let stored = store.load(&key).await.unwrap().unwrap();
        assert!(crate::session::seal::is_sealed(&stored.data[AUTH_FIELD]));
        assert!(!s.authenticated_within(FIVE_MINUTES).await.unwrap());
        s.reauthenticate(AuthMethod::Password).await.unwrap();
        engine.commit(&s, None).await.unwrap();
        let stored = store.load(&key).await.unwrap().unwrap();
        assert!(crate::session::seal::is_sealed(&stored.data[AUTH_FIELD]));
        let next = engine.session(Some(&ticket));
        assert!(next.authenticated_within(FIVE_MINUTES).await.unwrap());
    }

    #[test]
    fn method_names_round_trip_and_a_damaged_record_fails_closed() {
        for m in [
            AuthMethod::Password,
            AuthMethod::Passkey,
            AuthMethod::SecondFactor,
            AuthMethod::RememberMe,
            AuthMethod::Other("totp".into()),
        ] {
            assert_eq!(m.name().parse::<AuthMethod>().unwrap(), m);
        }
        assert_eq!("other:".parse::<AuthMethod>(), Err(UnknownAuthMethod));
        assert_eq!("magic".parse::<AuthMethod>(), Err(UnknownAuthMethod));
        assert_eq!(parse("{\"at\":1,\"method\":\"magic\"}"), None);
        assert_eq!(parse("not json"), None);
        let now = Timestamp::now();
        let ahead = Authentication {
            at: now.plus(Duration::from_secs(5)),
            method: AuthMethod::Password,
        };
        assert!(
            ahead.is_within(FIVE_MINUTES, now),
            "a clock ahead counts as now"
        );
    }
}
