//! The JSON API used by scripts and the notes form's script.

use cloakroom::Timestamp;
use cloakroom::csrf::TokenSource;
use cloakroom::session::Session;
use http::StatusCode;
use serde::Serialize;

use super::NOTES;
use super::notes::add_note;
use crate::app::{AppState, BadInput, Handled};
use crate::reply::{json, json_error};

pub use super::notes::NewNote;

#[derive(Debug, Serialize)]
struct Me {
    name: String,
    notes: Vec<String>,
    /// RFC 3339, UTC.
    expires_at: Option<String>,
    /// Milliseconds since the Unix epoch.
    expires_at_ms: Option<i64>,
}

/// `GET /api/me`: `{"name", "notes", "expires_at", "expires_at_ms"}`, or 401.
pub async fn api_me(app: &AppState, session: &Session) -> Handled {
    let Some(name) = app.user_of(session).await? else {
        return Ok(json_error(StatusCode::UNAUTHORIZED, "not logged in"));
    };
    let notes = session.get(NOTES).await?.unwrap_or_default();
    let expires = session.expires_at().await?;
    let me = Me {
        name,
        notes,
        expires_at: expires.map(|t| t.to_string()),
        expires_at_ms: expires.map(Timestamp::as_millis),
    };
    Ok(json(StatusCode::OK, &me))
}

/// `GET /api/csrf`: `{"token": "2|..."}`, a fresh masked CSRF token for scripts (send it as
/// `X-XSRFToken`).
pub async fn api_csrf(csrf: &TokenSource) -> Handled {
    let token = csrf.token().await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "token": token })))
}

/// `POST /api/notes` (`{"text": ...}`): 201 and the notes, 400 with the reason, 401.
pub async fn api_add_note(
    app: &AppState,
    session: &Session,
    payload: Result<NewNote, BadInput>,
) -> Handled {
    if app.user_of(session).await?.is_none() {
        return Ok(json_error(StatusCode::UNAUTHORIZED, "not logged in"));
    }
    let note = match payload {
        Ok(note) => note,
        // Every unreadable body is a 400 here, with the reason.
        Err(bad) => return Ok(json_error(StatusCode::BAD_REQUEST, &bad.message)),
    };
    Ok(match add_note(app, session, &note.text).await? {
        Ok(notes) => json(StatusCode::CREATED, &serde_json::json!({ "notes": notes })),
        Err(why) => json_error(StatusCode::BAD_REQUEST, why),
    })
}
