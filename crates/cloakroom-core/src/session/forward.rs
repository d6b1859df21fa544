//! The rotation grace's forwarding records. A rotation with a grace
//! ([`SessionSettings::with_rotation_grace`](super::SessionSettings::with_rotation_grace))
//! writes, beside the new record, a short-lived record under [`forward_key`] of the old
//! store key whose only field names the new record's key, then deletes the old record. A
//! request with the old ticket finds no record under its key, loads the forward and then the
//! record it names (at most once: a forward found there is no session), and acts on that
//! record. A forward has no user (so no user index lists it), lives until the grace ends,
//! and is skipped by [`SessionStore::scan`](crate::store::SessionStore::scan)
//! ([`Record::is_forward`]). It can never become a session: its key is a hash no ticket
//! maps to, and the loads that follow it refuse a forward as a session.
//!
//! Requests with the current ticket never look for a forward; an unknown ticket costs one
//! more load while a grace is configured.

use sha2::{Digest, Sha256};

use super::{SessionKey, Timestamp};
use crate::store::{FORWARD_FIELD, Record};

/// Where the forward of the record once under `old` is kept: a hash of `old`, so no ticket
/// (whose key is a hash of its id) names it.
pub(super) fn forward_key(old: &SessionKey) -> SessionKey {
    let digest = Sha256::new()
        .chain_update(b"cloakroom forward\0")
        .chain_update(old.as_bytes())
        .finalize();
    SessionKey::from_digest(&digest.into())
}

/// A forward to the record under `to`, live from `now` until `until`.
pub(super) fn forward_record(to: &SessionKey, now: Timestamp, until: Timestamp) -> Record {
    let mut record = Record::new(now, until);
    let json = serde_json::to_string(&to.to_handle()).expect("a string serializes");
    record.data.insert(FORWARD_FIELD.to_owned(), json);
    record
}

/// The key a forward leads to; `None` for a record that is not a forward.
pub(super) fn target(record: &Record) -> Option<SessionKey> {
    if !record.is_forward() {
        return None;
    }
    let json = record.data.get(FORWARD_FIELD)?;
    let handle: String = serde_json::from_str(json).ok()?;
    SessionKey::from_handle(&handle)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::keys::{Key, KeyRing};
    use crate::session::{SessionConfig, SessionEngine, SessionId};
    use crate::store::MemoryStore;

    /// Regression guard: a rotation racing a logout through the old ticket left the forward
    /// in place, so the logged-out ticket reached the rotated session for the whole grace.
    #[tokio::test]
    async fn a_logout_during_a_rotation_leaves_no_forward_behind() {
        let config = SessionConfig {
            rotation_grace: Duration::from_secs(30),
            ..SessionConfig::default()
        };
        let engine =
            SessionEngine::new(MemoryStore::new(), KeyRing::single(Key::generate()), config);
        let first = engine.session(None);
        first.login("ada").await.unwrap();
        let cookie = first.commit(None).await.unwrap().set_cookie.unwrap();
        let old = cookie.split(';').next().unwrap().to_owned();

        let rotating = engine.session(Some(&old));
        rotating.cycle_id().await.unwrap();
        let logout = engine.session(Some(&old));
        logout.logout().await.unwrap();
        logout.commit(None).await.unwrap();
        rotating.commit(None).await.unwrap();
        assert!(
            !engine.session(Some(&old)).exists().await.unwrap(),
            "the logged-out ticket reaches a session"
        );
    }

    #[test]
    fn a_forward_names_its_target_and_nothing_else_is_one() {
        let old = SessionId::generate().key();
        let new = SessionId::generate().key();
        assert_ne!(forward_key(&old), old);
        let now = Timestamp::now();
        let fwd = forward_record(&new, now, now);
        assert!(fwd.is_forward());
        assert_eq!(target(&fwd), Some(new));
        let mut session = Record::new(now, now);
        session.data.insert("a".into(), "1".into());
        assert_eq!(target(&session), None);
        // A logged-in record with the field (never written by the engine) is no forward.
        let mut odd = fwd;
        odd.meta.user = Some("ada".into());
        assert!(!odd.is_forward());
    }
}
