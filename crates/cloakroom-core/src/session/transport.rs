//! Where a ticket travels: the cookie (browsers), a request header (API, mobile and command
//! line clients), or both ([`Transport`], set with
//! [`SessionSettings::with_transport`](super::SessionSettings::with_transport)).
//!
//! A header client sends `Authorization: Bearer <ticket>` (or the ticket alone in the header
//! named by [`SessionSettings::with_ticket_header`](super::SessionSettings::with_ticket_header))
//! and gets a new ticket in the [`TICKET_RESPONSE_HEADER`] of the response that made it (a
//! login, a rotation); an empty value there means the session ended and the ticket is void.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use cloakroom_core::{Key, KeyRing, MemoryStore, session::{SessionSettings, Transport}};
//!
//! let engine = SessionSettings::new(MemoryStore::new(), KeyRing::single(Key::generate()))
//!     .with_transport(Transport::CookieAndHeader)
//!     .build();
//! let login = engine.session(None);
//! login.login("ada").await.unwrap();
//! let ticket = login.ticket().await.unwrap().unwrap(); // for the JSON answer
//! let outcome = engine.commit(&login, Some("curl/8.5")).await.unwrap();
//! assert_eq!(outcome.ticket_header.as_deref(), Some(ticket.as_str()));
//! assert_eq!(outcome.set_cookie, None); // the client asked for a ticket, not a cookie
//!
//! let bearer = format!("Bearer {ticket}");
//! let next = engine.request_session(None::<&[u8]>, Some(bearer.as_bytes())).unwrap();
//! assert!(next.from_header());
//! assert_eq!(next.user().await.unwrap().as_deref(), Some("ada"));
//! # });
//! ```

use crate::cookie::MAX_COOKIE_LEN;

/// Where tickets travel. Default [`Transport::Cookie`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// The cookie only; request headers are never read for a ticket. The default.
    #[default]
    Cookie,
    /// The cookie, and the ticket header for clients that send it. A request with both
    /// naming different sessions is refused (400, [`ErrorKind::TicketConflict`](super::ErrorKind::TicketConflict)).
    CookieAndHeader,
    /// The ticket header only; cookies of the session's name are ignored and never set.
    Header,
}

/// The response header carrying a ticket to a header client: the new ticket after a login or
/// a rotation, empty when the session ended (logout, or the ticket's session is gone).
pub const TICKET_RESPONSE_HEADER: &str = "x-session-ticket";

/// The ticket in a ticket header's value: after `Bearer ` (any case, then spaces) for
/// `Authorization`, the whole value (trimmed) for another header. `None` for anything else:
/// another scheme, non-ASCII bytes, or a value over the cookie limit (refused unread, before
/// any store call).
pub(crate) fn header_ticket(authorization: bool, value: &[u8]) -> Option<&str> {
    if value.len() > MAX_COOKIE_LEN + "Bearer ".len() {
        return None;
    }
    let value = std::str::from_utf8(value).ok()?.trim_matches([' ', '\t']);
    let ticket = if authorization {
        let (scheme, rest) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        rest.trim_start_matches(' ')
    } else {
        value
    };
    let ok = !ticket.is_empty()
        && ticket.len() <= MAX_COOKIE_LEN
        && ticket.bytes().all(|b| b.is_ascii_graphic());
    ok.then_some(ticket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tickets_are_read_and_anything_else_is_no_ticket() {
        assert_eq!(header_ticket(true, b"Bearer abc"), Some("abc"));
        assert_eq!(header_ticket(true, b"bearer   abc "), Some("abc"));
        for bad in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer ",
            b"abc",
            b"Bearer a b",
            b"Bearer \xc3\xa9",
            b"",
        ] {
            assert_eq!(header_ticket(true, bad), None, "{bad:?}");
        }
        let huge = format!("Bearer {}", "a".repeat(MAX_COOKIE_LEN + 1));
        assert_eq!(header_ticket(true, huge.as_bytes()), None);
        assert_eq!(header_ticket(false, b" abc "), Some("abc"));
        assert_eq!(header_ticket(false, b"Bearer abc"), None);
    }
}
