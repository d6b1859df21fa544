//! The home page and the notes kept in the session.

use cloakroom::Timestamp;
use cloakroom::flash::Level;
use cloakroom::session::ErrorKind;
use cloakroom::session::Session;
use http::StatusCode;
use minijinja::context;
use serde::Deserialize;

use super::words::span;
use super::{MAX_NOTE_CHARS, MAX_NOTES, NOTES};
use crate::app::{AppState, BadInput, Handled, Visit};
use crate::error::AppError;
use crate::reply::redirect;

/// `GET /`: the user's notes, or to `/login` when anonymous.
pub async fn home(app: &AppState, visit: &Visit) -> Handled {
    let Some(user) = app.user_of(visit).await? else {
        return Ok(redirect("/login"));
    };
    let notes: Vec<String> = visit.get(NOTES).await?.unwrap_or_default();
    // Flash messages are taken first: the expiry shown is the one after this visit.
    let flashes = visit.flash().take().await?;
    let expires_at = visit.expires_at().await?.unwrap_or_default();
    let now = Timestamp::now();
    let ctx = context! {
        user,
        flashes,
        csrf_field => visit.csrf_field().await?,
        csrf_token => visit.csrf_token().await?,
        notes,
        max_note => MAX_NOTE_CHARS,
        expires_at => expires_at.to_string(),
        expires_in => format!("in {}", span(now.until(expires_at))),
    };
    app.render(StatusCode::OK, "home.html", ctx)
}

/// A new note: the form field and the JSON field.
#[derive(Debug, Deserialize)]
pub struct NewNote {
    pub(super) text: String,
}

/// Adds a note: the notes after it, or why the text was refused.
pub(super) async fn add_note(
    app: &AppState,
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
    let budget = app.engine.max_data_bytes().saturating_sub(OTHER_DATA_BYTES);
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

/// `POST /notes` (`text`).
pub async fn add_note_form(
    app: &AppState,
    visit: &Visit,
    form: Result<NewNote, BadInput>,
) -> Handled {
    if app.user_of(visit).await?.is_none() {
        // No flash message: it would store a session for an anonymous visitor. The login
        // page says why from the query instead.
        return Ok(redirect("/login?hint=notes"));
    }
    let form = match form {
        Ok(form) => form,
        Err(bad) => return app.bad_input(visit, &bad).await,
    };
    match add_note(app, visit, &form.text).await? {
        Ok(_) => visit.flash().push(Level::Success, "Note saved").await?,
        Err(why) => visit.flash().push(Level::Error, capitalize(why)).await?,
    }
    Ok(redirect("/"))
}

/// `POST /notes/delete` (`index=N`).
#[derive(Debug, Deserialize)]
pub struct DeleteNote {
    /// The note's position on the page, from 0.
    index: usize,
}

/// `POST /notes/delete` (`index=N`): deletes one note.
pub async fn delete_note_form(
    app: &AppState,
    visit: &Visit,
    form: Result<DeleteNote, BadInput>,
) -> Handled {
    if app.user_of(visit).await?.is_none() {
        return Ok(redirect("/login"));
    }
    let form = match form {
        Ok(form) => form,
        Err(bad) => return app.bad_input(visit, &bad).await,
    };
    let mut notes: Vec<String> = visit.get(NOTES).await?.unwrap_or_default();
    if form.index >= notes.len() {
        let message = "No such note: it was deleted already (in another tab?).";
        return app
            .error_page(visit, StatusCode::NOT_FOUND, "Not found", message)
            .await;
    }
    notes.remove(form.index);
    if notes.is_empty() {
        visit.remove(NOTES).await?;
    } else {
        visit.set(NOTES, &notes).await?;
    }
    notice(visit, Level::Success, "Note deleted").await?;
    Ok(redirect("/"))
}

/// `POST /notes/clear`: deletes every note.
pub async fn clear_notes_form(app: &AppState, visit: &Visit) -> Handled {
    if app.user_of(visit).await?.is_none() {
        return Ok(redirect("/login"));
    }
    let had = visit.remove(NOTES).await?;
    let message = if had {
        "All notes deleted"
    } else {
        "No notes to delete"
    };
    notice(visit, Level::Success, message).await?;
    Ok(redirect("/"))
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
