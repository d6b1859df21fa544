//! [`Shared`]: what every session of one engine shares.

use std::sync::Arc;

use super::SessionConfig;
use super::lifecycle::Lifecycle;
use crate::cookie::TicketFormat;
use crate::keys::KeyRing;
use crate::store::{Record, SessionStore};

/// The store, the keys, the configuration, the ticket format and the lifecycle plumbing
/// (listener, end watchers) of one engine.
pub(super) struct Shared {
    pub(super) store: Arc<dyn SessionStore>,
    pub(super) keys: KeyRing,
    pub(super) config: SessionConfig,
    pub(super) format: Arc<dyn TicketFormat>,
    pub(super) lifecycle: Lifecycle,
}

impl Shared {
    /// A new session id for `record`. When the store places a user's sessions in the user's
    /// shard ([`SessionStore::placement`], Redis Cluster) and the record has a user, ids are
    /// drawn until the store key fits (about one draw per shard); otherwise the first.
    /// Every id the engine makes for a new or renewed record comes from here.
    pub(super) fn new_id(&self, record: &Record) -> super::SessionId {
        let placement = self.store.placement();
        crate::store::placed(
            placement,
            record.meta.user.as_deref(),
            || self.format.generate(),
            |id| self.format.store_key(id),
        )
    }
}
