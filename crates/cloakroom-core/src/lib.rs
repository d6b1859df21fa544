//! Cloakroom's core: server-side sessions and CSRF protection, independent of any web
//! framework or store driver.
//!
//! - [`session`]: the [`Session`] handle and the commit state machine; session ids
//!   ([`SessionId`]), the keys the store sees ([`SessionKey`]) and [`Timestamp`]s;
//! - [`store`]: the [`SessionStore`] contract and the in-memory store;
//! - [`keys`]: the [`KeyRing`] that signs tickets;
//! - [`cookie`]: the ticket codec and cookie attributes;
//! - [`csrf`]: cross-origin checks and masked tokens;
//! - [`redact`]: store URLs with their passwords masked, for messages;
//! - [`telemetry`]: metrics and traces (feature `metrics`);
//! - `recent_login` (feature `http`): the recent-login ("sudo mode") guard's answers.
//! - `dbsc` (feature `dbsc`): Device Bound Session Credentials proofs and header values.
//!
//! Adapters (the tower layer) and stores (SQLite, Redis) build on this crate; it depends on
//! neither.

mod config_error;
pub mod cookie;
pub mod csrf;
#[cfg(feature = "dbsc")]
pub mod dbsc;
pub mod flash;
#[cfg(feature = "http")]
pub mod guard;
mod id;
pub mod keys;
mod percent;
#[cfg(feature = "http")]
pub mod recent_login;
pub mod redact;
#[cfg(feature = "http")]
pub mod response;
pub mod session;
pub mod store;
pub mod telemetry;

pub use config_error::{ConfigError, ConfigErrorKind};
pub use keys::{Key, KeyRing};
pub use session::{Session, SessionEngine, SessionId, SessionKey, SessionSettings, Timestamp};
pub use store::{MemoryStore, SessionStore};
