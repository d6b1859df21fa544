//! "Your devices": the user's sessions, revoking one or all others.

use cloakroom::flash::Level;
use cloakroom::session::Session;
use cloakroom::{SessionKey, Timestamp};
use http::StatusCode;
use minijinja::{Value, context};
use serde::Deserialize;

use super::words::ago;
use crate::app::{AppState, BadInput, Handled, Visit};
use crate::reply::redirect;

/// `GET /sessions`: this user's sessions, this one first.
pub async fn sessions_page(app: &AppState, session: &Visit) -> Handled {
    let Some(user) = app.user_of(session).await? else {
        return Ok(redirect("/login"));
    };
    let current = app.engine.handle_of(session).await?;
    let mut list = app.engine.sessions_of(&user).await?;
    // This device first, then the most recently used.
    list.sort_by_key(|s| (Some(s.key) != current, std::cmp::Reverse(s.meta.last_seen)));
    let now = Timestamp::now();
    let sessions: Vec<Value> = list
        .iter()
        .map(|s| {
            let handle = s.key.to_handle();
            context! {
                handle_short => handle[..8].to_owned(),
                handle,
                current => Some(s.key) == current,
                device => s.meta.user_agent.as_deref().map_or_else(|| "Unknown device".to_owned(), device_name),
                user_agent => s.meta.user_agent.as_deref().unwrap_or("no User-Agent sent"),
                remember => s.meta.remember,
                device_bound => s.device_bound,
                created_at => s.meta.created_at.to_string(),
                created_ago => ago(s.meta.created_at, now),
                last_seen => s.meta.last_seen.to_string(),
                last_seen_ago => ago(s.meta.last_seen, now),
            }
        })
        .collect();
    app.page(
        session,
        StatusCode::OK,
        "sessions.html",
        context! { sessions },
    )
    .await
}

/// A User-Agent as people name their devices: "Chrome 120 on Linux", "Firefox 141 on
/// Windows 10", "curl 8.14". Parsed with woothee (a small, regex-only classifier: no data
/// file to load); what it cannot tell becomes "Unknown browser".
fn device_name(user_agent: &str) -> String {
    let unknown = |v: &str| v.is_empty() || v == woothee::woothee::VALUE_UNKNOWN;
    let Some(found) = woothee::parser::Parser::new().parse(user_agent) else {
        return "Unknown browser".to_owned();
    };
    let mut name = if unknown(found.name) {
        "Unknown browser".to_owned()
    } else {
        found.name.to_owned()
    };
    // The major version is what people know ("Chrome 120", not "120.0.6099.109").
    let major = found.version.split('.').next().unwrap_or_default();
    if !unknown(major) && !unknown(found.name) {
        name.push(' ');
        name.push_str(major);
    }
    if !unknown(found.os) {
        name.push_str(" on ");
        name.push_str(found.os);
    }
    name
}

/// `POST /sessions/revoke` (`handle`).
#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    handle: String,
}

/// `POST /sessions/revoke`: ends one of this user's sessions (this one: a logout).
pub async fn revoke(
    app: &AppState,
    session: &Visit,
    form: Result<RevokeForm, BadInput>,
) -> Handled {
    let Some(user) = app.user_of(session).await? else {
        return Ok(redirect("/login"));
    };
    let form = match form {
        Ok(form) => form,
        Err(bad) => return app.bad_input(session, &bad).await,
    };
    let Some(key) = SessionKey::from_handle(form.handle.trim()) else {
        let message = "That is not a session handle.";
        return app
            .error_page(session, StatusCode::BAD_REQUEST, "Bad request", message)
            .await;
    };
    if app.engine.handle_of(session).await? == Some(key) {
        session.logout().await?;
        return Ok(redirect("/login"));
    }
    // Loads the session and checks it is this user's before deleting it.
    if !app.engine.revoke(&user, &key).await? {
        let message = "No such session of yours: it has ended already, or it is not yours.";
        return app
            .error_page(session, StatusCode::NOT_FOUND, "Not found", message)
            .await;
    }
    tracing::info!(user, session = %key, "session revoked");
    session
        .flash()
        .push(Level::Success, "Signed out of that session.")
        .await?;
    Ok(redirect("/sessions"))
}

/// `POST /sessions/revoke-others`: ends every other session of this user.
pub async fn revoke_others(app: &AppState, session: &Session) -> Handled {
    let Some(user) = app.user_of(session).await? else {
        return Ok(redirect("/login"));
    };
    let n = if session.user().await?.is_some() {
        app.engine.revoke_others(session).await?
    } else {
        // Logged in by the Tornado app (`ID` only): this session is not in the user index,
        // so every indexed session of the name is another one.
        let current = app.engine.handle_of(session).await?;
        app.engine.revoke_all(&user, current.as_ref()).await?
    };
    let plural = if n == 1 { "" } else { "s" };
    let message = format!("Signed out of {n} other session{plural}");
    session.flash().push(Level::Success, message).await?;
    Ok(redirect("/sessions"))
}

#[cfg(test)]
mod tests {
    use super::device_name;

    #[test]
    fn user_agents_become_device_names() {
        for (ua, name) in [
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/120.0.0.0 Safari/537.36",
                "Chrome 120 on Linux",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:141.0) Gecko/20100101 Firefox/141.0",
                "Firefox 141 on Windows 10",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 18_5 like Mac OS X) AppleWebKit/605.1.15 \
                 (KHTML, like Gecko) Version/18.5 Mobile/15E148 Safari/604.1",
                "Safari 18 on iPhone",
            ),
            ("", "Unknown browser"),
            ("\u{202e}<script>", "Unknown browser"),
        ] {
            assert_eq!(device_name(ua), name, "{ua}");
        }
    }
}
