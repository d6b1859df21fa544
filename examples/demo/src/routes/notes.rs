//! The home page and the notes kept in the session.

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use cloakroom::flash::Level;
use cloakroom::session::ErrorKind;
use cloakroom::{Session, Timestamp};
use minijinja::context;
use serde::Deserialize;

use super::words::span;
use super::{
    App, Handled, MAX_NOTE_CHARS, MAX_NOTES, NOTES, Visit, csrf_field, csrf_token, to_login,
};
use crate::error::AppError;

pub(super) async fn home(State(app): App, session: Visit) -> Handled {
    let Some(user) = app.user_of(&session).await? else {
        return Ok(to_login());
    };
    let notes: Vec<String> = session.get(NOTES).await?.unwrap_or_default();
    // Flash messages are taken first: the expiry shown is the one after this visit.
    let flashes = session.flash().take().await?;
    let expires_at = session.expires_at().await?.unwrap_or_default();
    let now = Timestamp::now();
    let ctx = context! {
        user,
        flashes,
        csrf_field => csrf_field(&session).await?,
        csrf_token => csrf_token(&session).await?,
        notes,
        max_note => MAX_NOTE_CHARS,
        expires_at => expires_at.to_string(),
        expires_in => format!("in {}", span(now.until(expires_at))),
    };
    app.render(StatusCode::OK, "home.html", ctx)
}

#[derive(Debug, Deserialize)]
pub(super) struct NewNote {
    pub(super) text: String,
}

/// Adds a note: the notes after it, or why the text was refused.
pub(super) async fn add_note(
    session: &Session,
    text: &str,
) -> Result<Result<Vec<String>, &'static str>, AppError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Err("a note needs some text"));
    }
    if text.chars().count() > MAX_NOTE_CHARS {
        return Ok(Err("notes are at most 500 characters"));
    }
    let mut notes: Vec<String> = session.get(NOTES).await?.unwrap_or_default();
    notes.push(text.to_owned());
    if notes.len() > MAX_NOTES {
        notes.drain(..notes.len() - MAX_NOTES);
    }
    // Leave room for the rest of the session (login, CSRF secret, the flash that says why).
    let budget = session
        .engine_config()
        .max_data_bytes
        .saturating_sub(OTHER_DATA_BYTES);
    let size = NOTES.len() + serde_json::to_string(&notes).map_or(usize::MAX, |j| j.len());
    if size > budget {
        return Ok(Err(NOTES_FULL));
    }
    match session.set(NOTES, &notes).await {
        Err(e) if e.kind() == ErrorKind::TooLarge => return Ok(Err(NOTES_FULL)),
        result => result?,
    }
    Ok(Ok(notes))
}

/// Bytes of session data kept free of notes: the login, the CSRF secret, flash messages.
const OTHER_DATA_BYTES: usize = 4 * 1024;

/// Why a note was refused when the session has no room left for it.
const NOTES_FULL: &str = "your notes are full; delete some";

pub(super) async fn add_note_form(
    State(app): App,
    session: Visit,
    form: Result<Form<NewNote>, FormRejection>,
) -> Handled {
    if app.user_of(&session).await?.is_none() {
        // No flash message: it would store a session for an anonymous visitor. The login
        // page says why from the query instead.
        return Ok(Redirect::to("/login?hint=notes").into_response());
    }
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => return app.bad_form(&session, rejection).await,
    };
    match add_note(&session, &form.text).await? {
        Ok(_) => session.flash().push(Level::Success, "Note saved").await?,
        Err(why) => session.flash().push(Level::Error, capitalize(why)).await?,
    }
    Ok(Redirect::to("/").into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct DeleteNote {
    /// The note's position on the page, from 0.
    index: usize,
}

/// `POST /notes/delete` (`index=N`): deletes one note.
pub(super) async fn delete_note_form(
    State(app): App,
    session: Visit,
    form: Result<Form<DeleteNote>, FormRejection>,
) -> Handled {
    if app.user_of(&session).await?.is_none() {
        return Ok(to_login());
    }
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => return app.bad_form(&session, rejection).await,
    };
    let mut notes: Vec<String> = session.get(NOTES).await?.unwrap_or_default();
    if form.index >= notes.len() {
        let message = "No such note: it was deleted already (in another tab?).";
        return app
            .error_page(&session, StatusCode::NOT_FOUND, "Not found", message)
            .await;
    }
    notes.remove(form.index);
    if notes.is_empty() {
        session.remove(NOTES).await?;
    } else {
        session.set(NOTES, &notes).await?;
    }
    notice(&session, Level::Success, "Note deleted").await?;
    Ok(Redirect::to("/").into_response())
}

/// `POST /notes/clear`: deletes every note.
pub(super) async fn clear_notes_form(State(app): App, session: Visit) -> Handled {
    if app.user_of(&session).await?.is_none() {
        return Ok(to_login());
    }
    let had = session.remove(NOTES).await?;
    let message = if had {
        "All notes deleted"
    } else {
        "No notes to delete"
    };
    notice(&session, Level::Success, message).await?;
    Ok(Redirect::to("/").into_response())
}

/// A flash message, unless the session has no room left for it (then the page just shows
/// the result).
async fn notice(session: &Session, level: Level, text: &str) -> Result<(), AppError> {
    match session.flash().push(level, text).await {
        Err(e) if e.kind() == ErrorKind::TooLarge => Ok(()),
        result => Ok(result?),
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
