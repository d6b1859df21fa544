//! "Your devices": the user's sessions, revoking one or all others.

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use cloakroom::flash::Level;
use cloakroom::{Session, SessionKey, Timestamp};
use minijinja::{Value, context};
use serde::Deserialize;

use super::words::ago;
use super::{App, Handled, Visit, to_login};

pub(super) async fn sessions_page(State(app): App, session: Visit) -> Handled {
    let Some(user) = app.user_of(&session).await? else {
        return Ok(to_login());
    };
    let current = session.handle().await?;
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
                user_agent => s.meta.user_agent.as_deref().unwrap_or("unknown device"),
                remember => s.meta.remember,
                created_at => s.meta.created_at.to_string(),
                created_ago => ago(s.meta.created_at, now),
                last_seen => s.meta.last_seen.to_string(),
                last_seen_ago => ago(s.meta.last_seen, now),
            }
        })
        .collect();
    app.page(
        &session,
        StatusCode::OK,
        "sessions.html",
        context! { sessions },
    )
    .await
}

#[derive(Debug, Deserialize)]
pub(super) struct RevokeForm {
    handle: String,
}

pub(super) async fn revoke(
    State(app): App,
    session: Visit,
    form: Result<Form<RevokeForm>, FormRejection>,
) -> Handled {
    let Some(user) = app.user_of(&session).await? else {
        return Ok(to_login());
    };
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => return app.bad_form(&session, rejection).await,
    };
    let Some(key) = SessionKey::from_handle(form.handle.trim()) else {
        let message = "That is not a session handle.";
        return app
            .error_page(&session, StatusCode::BAD_REQUEST, "Bad request", message)
            .await;
    };
    if session.handle().await? == Some(key) {
        session.logout().await?;
        return Ok(to_login());
    }
    // Loads the session and checks it is this user's before deleting it.
    if !app.engine.revoke(&user, &key).await? {
        let message = "No such session of yours: it has ended already, or it is not yours.";
        return app
            .error_page(&session, StatusCode::NOT_FOUND, "Not found", message)
            .await;
    }
    tracing::info!(user, session = %key, "session revoked");
    session
        .flash()
        .push(Level::Success, "Signed out of that session.")
        .await?;
    Ok(Redirect::to("/sessions").into_response())
}

pub(super) async fn revoke_others(State(app): App, session: Session) -> Handled {
    let Some(user) = app.user_of(&session).await? else {
        return Ok(to_login());
    };
    let n = if session.user().await?.is_some() {
        session.revoke_others().await?
    } else {
        // Logged in by the Tornado app (`ID` only): this session is not in the user index,
        // so every indexed session of the name is another one.
        let current = session.handle().await?;
        app.engine
            .store()
            .delete_user(&user, current.as_ref())
            .await?
    };
    let plural = if n == 1 { "" } else { "s" };
    let message = format!("Signed out of {n} other session{plural}");
    session.flash().push(Level::Success, message).await?;
    Ok(Redirect::to("/sessions").into_response())
}
