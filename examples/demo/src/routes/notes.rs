//! The home page and the notes kept in the session.

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use cloakroom::flash::Level;
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
    session.set(NOTES, &notes).await?;
    Ok(Ok(notes))
}

pub(super) async fn add_note_form(
    State(app): App,
    session: Visit,
    form: Result<Form<NewNote>, FormRejection>,
) -> Handled {
    if app.user_of(&session).await?.is_none() {
        // Starts an anonymous session just to carry the message to the login page.
        session
            .flash()
            .push(Level::Info, "Log in to keep notes.")
            .await?;
        return Ok(to_login());
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

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
