//! Small store operations the store crates' integration tests share (Redis and pycket over
//! TLS and Sentinel): a record, a login's worth of operations, an error with its sources.

use std::time::Duration;

use cloakroom_core::session::{SessionId, Timestamp};
use cloakroom_core::store::{Applied, Created, Error, Patch, Record, SessionStore};

use crate::unique_prefix;

const HOUR: Duration = Duration::from_secs(3600);

/// A record of `user` (or anonymous) holding `name = "Ada"`, expiring in an hour.
pub fn record(user: Option<&str>) -> Record {
    let now = Timestamp::now();
    let mut r = Record::new(now, now.plus(HOUR));
    r.data.insert("name".into(), "\"Ada\"".into());
    r.meta.user = user.map(str::to_owned);
    r
}

/// A login's worth of operations through `store`: create a logged-in session, read it,
/// write to it, find it by user, delete it.
///
/// # Panics
/// When an operation fails or answers otherwise.
pub async fn login_round_trip(store: &dyn SessionStore) {
    let user = unique_prefix("user");
    // In the user's shard when the store places keys (Redis Cluster), as the engine does.
    let placement = store.placement();
    let id =
        cloakroom_core::store::placed(placement, Some(&user), SessionId::generate, |id| id.key());
    let key = id.key();
    assert_eq!(
        store.create(&key, &record(Some(&user))).await.unwrap(),
        Created::Done
    );
    let loaded = store.load(&key).await.unwrap().expect("the new session");
    assert_eq!(loaded.meta.user.as_deref(), Some(user.as_str()));
    let now = Timestamp::now();
    let mut patch = Patch::new(now, now.plus(HOUR));
    patch.set.push(("note".into(), "\"hi\"".into()));
    assert_eq!(store.apply(&key, &patch).await.unwrap(), Applied::Done);
    let loaded = store.load(&key).await.unwrap().expect("the session");
    assert_eq!(loaded.data.get("note").map(String::as_str), Some("\"hi\""));
    assert_eq!(store.sessions_of(&user).await.unwrap().len(), 1);
    assert!(store.delete(&key).await.unwrap());
    assert_eq!(store.load(&key).await.unwrap(), None);
}

/// An error and its sources, as one line.
pub fn error_text(err: &Error) -> String {
    let mut text = err.to_string();
    let mut next = std::error::Error::source(err);
    while let Some(e) = next {
        text.push_str(&format!(" | {e}"));
        next = e.source();
    }
    text
}
