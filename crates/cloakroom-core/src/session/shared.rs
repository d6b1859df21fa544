//! [`Shared`]: what every session of one engine shares.

use std::sync::Arc;

use super::SessionConfig;
use super::lifecycle::Lifecycle;
use crate::cookie::TicketFormat;
use crate::keys::KeyRing;
use crate::store::SessionStore;

/// The store, the keys, the configuration, the ticket format and the lifecycle plumbing
/// (listener, end watchers) of one engine.
pub(super) struct Shared {
    pub(super) store: Arc<dyn SessionStore>,
    pub(super) keys: KeyRing,
    pub(super) config: SessionConfig,
    pub(super) format: Arc<dyn TicketFormat>,
    pub(super) lifecycle: Lifecycle,
}
