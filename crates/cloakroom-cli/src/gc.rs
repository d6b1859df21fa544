//! `gc`: delete expired sessions.

use std::io::Write;

use anyhow::Context as _;
use cloakroom::store::SessionStore;

use crate::render;

/// `gc`: runs [`SessionStore::purge_expired`] and prints how many sessions it removed.
/// `expires_by_itself` says the store's engine deletes expired records on its own (Redis),
/// which the message then explains instead of a bare 0; with an event log there, the count
/// is of the expiries the sweep noticed and logged.
///
/// # Errors
/// Store failures and output errors.
pub async fn gc(
    store: &dyn SessionStore,
    expires_by_itself: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let removed = store
        .purge_expired()
        .await
        .context("purging expired sessions")?;
    if expires_by_itself && store.event_log().is_some() {
        writeln!(
            out,
            "logged {}: this store expires sessions by itself; its event log records the \
             expiry of a logged-in session when it is noticed (this sweep of the user indexes \
             noticed these)",
            render::count(removed, "expired session")
        )?;
    } else if removed == 0 && expires_by_itself {
        writeln!(
            out,
            "removed 0 expired sessions: this store expires sessions by itself, so there is \
             nothing to purge"
        )?;
    } else {
        writeln!(out, "removed {}", render::count(removed, "expired session"))?;
    }
    Ok(())
}
