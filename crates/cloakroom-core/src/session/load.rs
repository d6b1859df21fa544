//! The session's lazy load: on first use, the first verified ticket whose record is live by
//! this server's timeouts, followed through a rotation grace's forward if need be.

use super::error::committed_error;
use super::forward::{forward_key, target};
use super::handle::Session;
use super::limits::timed;
use super::seal;
use super::state::{Live, Phase, State};
use super::{Result, SessionKey, Timestamp};
use crate::store::Record;
use crate::telemetry::{self, SessionEvent};

impl Session {
    /// Loads the record if not done yet; returns the locked state.
    pub(super) async fn state(&self) -> Result<tokio::sync::MutexGuard<'_, State>> {
        let mut guard = self.inner.state.lock().await;
        let st: &mut State = &mut guard;
        if let Phase::Unloaded { first, fallbacks } = &st.phase {
            // The first verified ticket whose record is live wins (see
            // `SessionEngine::session_from_headers`); usually there is just one. A store
            // failure leaves the state as it was, to retry.
            let mut found = None;
            let mut ended = None;
            let now = Timestamp::now();
            for id in std::iter::once(first).chain(fallbacks) {
                let key = self.key_of(id);
                let limit = self.config().store_timeout;
                let record = timed(limit, self.store().load(&key)).await?;
                if let Some(why) = record.as_ref().and_then(Record::ended_by) {
                    // Ended by the concurrent-session limit or an admin: no session, a flash
                    // saying why.
                    ended.get_or_insert((key, why));
                    continue;
                }
                if let Some(mut record) = self.live(record, now) {
                    // Opened at the boundary: the request sees plaintext (a value that does
                    // not open is a corrupt record: the load fails, nothing is returned).
                    seal::open_record_with(&mut st.seal_key, id, &key, &mut record)?;
                    found = Some(Live::loaded(Some(id.clone()), key, record, None));
                    break;
                }
                // Never with sealed data (the settings refuse a grace then): the old id
                // could not open the new record's values.
                if let Some(live) = self.follow_forward(&key, now).await? {
                    found = Some(live);
                    break;
                }
            }
            if found.is_none() && ended.is_none() {
                telemetry::sessions(SessionEvent::Ended("expired"), 1);
            }
            st.loaded_at = Some(now);
            if let (None, Some((tombstone, why))) = (&found, ended) {
                // The tombstone goes with this request's commit (the flash shown, or moved
                // into a new session): the message is shown once.
                let mut live = self.fresh();
                let (name, json) = super::admission::flash_ended(&mut live, Some(why));
                st.changes.insert(name, Some(json));
                st.retired.push(tombstone);
                st.retired_tombstone = Some(tombstone);
                found = Some(live);
            }
            st.settle(found, || self.fresh());
        }
        Ok(guard)
    }

    /// The session record under `key` if it is live (a forwarding record is not a session).
    async fn load_live(&self, key: &SessionKey, now: Timestamp) -> Result<Option<Record>> {
        let limit = self.config().store_timeout;
        let record = timed(limit, self.store().load(key)).await?;
        Ok(self.live(record, now))
    }

    /// `record` if it is a live session (a forward or a tombstone is not one).
    fn live(&self, record: Option<Record>, now: Timestamp) -> Option<Record> {
        record.filter(|r| !r.is_forward() && !r.is_ended() && self.is_live(r, now))
    }

    /// With a rotation grace configured, the session an old ticket (whose record under `key`
    /// is gone) still reaches: the record its forward names, if both are live. One load
    /// (two when there is a forward); none without a grace. A forward is followed once.
    async fn follow_forward(&self, key: &SessionKey, now: Timestamp) -> Result<Option<Live>> {
        let Some(fwd_key) = self.forward_of(key, now).await? else {
            return Ok(None);
        };
        let (via, to) = fwd_key;
        let record = self.load_live(&to, now).await?;
        Ok(record.map(|r| Live::loaded(None, to, r, Some(via))))
    }

    /// The live forward of the record once under `key` (its key, and the key it names), when
    /// a rotation grace is configured.
    pub(super) async fn forward_of(
        &self,
        key: &SessionKey,
        now: Timestamp,
    ) -> Result<Option<(SessionKey, SessionKey)>> {
        if self.config().rotation_grace.is_zero() {
            return Ok(None);
        }
        let via = forward_key(key);
        let limit = self.config().store_timeout;
        let record = timed(limit, self.store().load(&via)).await?;
        Ok(record
            .filter(|r| r.meta.expires_at > now)
            .and_then(|r| target(&r))
            .map(|to| (via, to)))
    }

    /// Whether a loaded record is live by this server's timeouts too (the store's expiry may
    /// predate a configuration change).
    fn is_live(&self, r: &Record, now: Timestamp) -> bool {
        let c = self.config();
        r.meta.expires_at > now
            && r.meta.created_at.plus(c.absolute_lifetime) > now
            && r.meta.last_seen.plus(c.idle_timeout) > now
    }

    /// The loaded state, refusing changes after the commit.
    pub(super) async fn state_mut(&self) -> Result<tokio::sync::MutexGuard<'_, State>> {
        let st = self.state().await?;
        if st.committed {
            return Err(committed_error());
        }
        Ok(st)
    }
}
