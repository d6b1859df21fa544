//! The JSON API used by scripts and the notes form's script.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cloakroom::tower::CsrfToken;
use cloakroom::{Session, Timestamp};
use serde::Serialize;

use super::notes::{NewNote, add_note};
use super::{App, Handled, NOTES, private};

#[derive(Debug, Serialize)]
struct Me {
    name: String,
    notes: Vec<String>,
    /// RFC 3339, UTC.
    expires_at: Option<String>,
    /// Milliseconds since the Unix epoch.
    expires_at_ms: Option<i64>,
}

fn json_error(status: StatusCode, error: &str) -> Response {
    (
        status,
        private(),
        Json(serde_json::json!({ "error": error })),
    )
        .into_response()
}

pub(super) async fn api_me(State(app): App, session: Session) -> Handled {
    let Some(name) = app.user_of(&session).await? else {
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
    Ok((private(), Json(me)).into_response())
}

/// `{"token": "2|..."}`: a fresh masked CSRF token for scripts (send it as `X-XSRFToken`).
pub(super) async fn api_csrf(csrf: CsrfToken) -> Handled {
    let token = csrf.token().await?;
    Ok((private(), Json(serde_json::json!({ "token": token }))).into_response())
}

pub(super) async fn api_add_note(
    State(app): App,
    session: Session,
    payload: Result<Json<NewNote>, JsonRejection>,
) -> Handled {
    if app.user_of(&session).await?.is_none() {
        return Ok(json_error(StatusCode::UNAUTHORIZED, "not logged in"));
    }
    let note = match payload {
        Ok(Json(note)) => note,
        Err(rejection) => return Ok(json_error(StatusCode::BAD_REQUEST, &rejection.body_text())),
    };
    Ok(match add_note(&session, &note.text).await? {
        Ok(notes) => {
            let body = Json(serde_json::json!({ "notes": notes }));
            (StatusCode::CREATED, private(), body).into_response()
        }
        Err(why) => json_error(StatusCode::BAD_REQUEST, why),
    })
}
