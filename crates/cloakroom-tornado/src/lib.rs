//! Interop between Cloakroom and [Tornado](https://www.tornadoweb.org/) +
//! [pycket](https://pypi.org/project/pycket/) 0.3, so a Cloakroom app and a Tornado app share
//! sessions:
//!
//! - [`signed_value`]: Tornado's signed values (`set_secure_cookie` / `get_secure_cookie`,
//!   v1 and v2, versioned secrets), with [`TornadoSecret`];
//! - [`PycketTicket`]: the `PYCKET_ID` cookie, a Tornado v2 signed value of the session's
//!   uuid, as Cloakroom's [`TicketFormat`](cloakroom_core::cookie::TicketFormat);
//! - [`PycketStore`]: sessions in pycket's Redis format (bare uuid keys, pickled dicts,
//!   notifications in a second database, read through a guard against hostile pickles),
//!   `pycket+redis://host:port/db?notifications_db=N` (see the [`pycket`] module).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use cloakroom_core::session::SessionSettings;
//! use cloakroom_core::{Key, KeyRing};
//! use cloakroom_tornado::{PycketStore, PycketTicket, TornadoSecret};
//!
//! // pycket's storage settings {'db_sessions': 5, 'db_notifications': 11}:
//! let store = PycketStore::open("pycket+redis://127.0.0.1:6379/5?notifications_db=11").await?;
//! // The Tornado app's `cookie_secret`; tickets read back for 31 days, as Tornado does.
//! let ticket = PycketTicket::new(TornadoSecret::single("cookie-secret"), 31.0)?;
//! let _settings = SessionSettings::new(Arc::new(store), KeyRing::single(Key::generate()))
//!     .with_cookie_name("PYCKET_ID")?
//!     .with_ticket_format(Arc::new(ticket))?;
//! # Ok(()) }
//! ```
//!
//! # The store key: where this crate departs from the core
//!
//! Cloakroom's own tickets never show the store a session's id: the core's
//! [`TicketFormat::store_key`](cloakroom_core::cookie::TicketFormat::store_key) names a
//! session by a SHA-256 of its id, so a dump of the store cannot be turned back into
//! tickets. pycket cannot work that way: Tornado looks a session up by the very uuid its
//! cookie carries. So [`PycketTicket`] overrides `store_key` (the one hook the core gives a
//! ticket format for this), and its key is the uuid itself: a store key is 16 bytes, a
//! uuid's size ([`pycket_key`](pycket::pycket_key), [`pycket_uuid`](pycket::pycket_uuid)),
//! which [`PycketStore`] writes as the bare uuid text. The price is pycket's: anyone who can
//! read this Redis database can use the sessions in it. Nothing of this reaches the core's
//! default format, which keeps the hash; and pycket's cookie is signed with Tornado's
//! `cookie_secret`, which the format holds, not with the engine's key ring.
//!
//! The Redis connections (URL options, TLS, Sentinel, the command timeout) are
//! `cloakroom-redis`'s, through its [`connection`](cloakroom_redis::connection) module.

pub mod pycket;
pub mod signed_value;

pub use crate::pycket::{PycketStore, PycketStoreBuilder, PycketTicket};
pub use crate::signed_value::TornadoSecret;
