//! The session handle and the commit state machine.
//!
//! [`SessionSettings`] (store, keys, every setting, checked as it is set) builds a
//! [`SessionEngine`], one per app, which turns each request's `Cookie` header into a
//! [`Session`]: a cheap, clonable handle that loads the record on first use. Once the
//! response is ready, the adapter [commits](SessionEngine::commit) it with at most one store
//! operation (two for a login: create the new record, delete the old).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use cloakroom_core::{Key, KeyRing, MemoryStore, session::SessionSettings};
//!
//! let engine = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate())).build();
//! let session = engine.session(None);
//! session.set("cart", &vec![1, 2, 3]).await.unwrap();
//! let outcome = engine.commit(&session, Some("my-browser/1.0")).await.unwrap();
//! let cookie = outcome.set_cookie.unwrap();          // "__Host-session=<ticket>; Path=/; ..."
//! let ticket = cookie.split(';').next().unwrap();
//!
//! let next = engine.session(Some(ticket));           // the browser's next request
//! assert_eq!(next.get::<Vec<u32>>("cart").await.unwrap(), Some(vec![1, 2, 3]));
//! # });
//! ```

mod admission;
mod commit;
mod config;
mod engine;
mod error;
mod forward;
mod handle;
mod lifecycle;
mod limits;
mod load;
mod login;
mod plan;
mod recent;
pub mod seal;
mod settings;
mod shared;
mod state;
pub mod transport;

pub use crate::id::{SessionId, SessionKey, Timestamp};
pub use admission::{ENDED_BY_ADMIN_MESSAGE, ENDED_BY_LIMIT_MESSAGE};
pub use commit::{CommitAction, CommitOutcome};
pub(crate) use config::SessionConfig;
pub use engine::SessionEngine;
pub use error::{Error, ErrorKind, Result};
pub use handle::Session;
pub use lifecycle::{EndReason, Ended, Event, EventKind, SessionListener};
pub use recent::{AuthMethod, Authentication, UnknownAuthMethod};
pub use settings::SessionSettings;
pub use transport::{TICKET_RESPONSE_HEADER, Transport};

/// Field names starting with this are the library's own (CSRF secret, flash messages, the
/// last authentication).
pub(crate) const RESERVED_PREFIX: &str = "__cr.";

/// The field holding the session's CSRF secret (see [`csrf`](crate::csrf)): a login drops
/// it, so the secret rotates with the id.
pub(crate) const CSRF_SECRET_FIELD: &str = "__cr.csrf";

/// The field holding the public key a DBSC session is bound to (a JWK), written once by
/// the registration endpoint; carried by every store as any other field.
pub(crate) const DEVICE_KEY_FIELD: &str = "__cr.dbsc";

/// Longest user agent kept with a session.
const MAX_USER_AGENT: usize = 256;

/// Most verified tickets of our cookie name one request may carry into the first load (see
/// [`SessionEngine::session_from_headers`]): bounds the store loads a flood of planted pairs
/// can cost. Pairs past it are not even verified. (Each pair of our name before it that looks
/// like a ticket costs one MAC check, bounded by the size of the request's headers.)
pub(crate) const MAX_CANDIDATES: usize = 4;
