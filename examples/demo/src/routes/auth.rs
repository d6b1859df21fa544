//! Accounts: register, log in, log out.

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use cloakroom::Session;
use cloakroom::flash::Level;
use minijinja::context;
use serde::Deserialize;

use super::{
    App, AppState, Handled, MAX_NAME_CHARS, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, Visit, to_login,
};
use crate::error::AppError;
use crate::passwords::Passwords;

#[derive(Debug, Deserialize)]
pub(super) struct Credentials {
    name: String,
    password: String,
    /// A checkbox: present ("on") when ticked, absent otherwise.
    remember: Option<String>,
}

pub(super) async fn login_form(State(app): App, session: Visit) -> Handled {
    let ctx = context! { name => "", error => None::<&str> };
    app.page(&session, StatusCode::OK, "login.html", ctx).await
}

pub(super) async fn register_form(State(app): App, session: Visit) -> Handled {
    let ctx = context! { name => "", error => None::<&str> };
    app.page(&session, StatusCode::OK, "register.html", ctx)
        .await
}

/// Why a name cannot be registered, if it cannot.
fn invalid_name(name: &str) -> Option<&'static str> {
    let chars = name.chars().count();
    if chars == 0 {
        Some("Please choose a name.")
    } else if chars > MAX_NAME_CHARS {
        Some("Names are at most 64 characters.")
    } else if name.chars().any(char::is_control) {
        Some("Names cannot contain control characters.")
    } else {
        None
    }
}

fn invalid_password(password: &str) -> Option<&'static str> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        Some("Passwords need at least 8 characters.")
    } else if chars > MAX_PASSWORD_CHARS {
        Some("Passwords are at most 1024 characters.")
    } else {
        None
    }
}

pub(super) async fn register(
    State(app): App,
    session: Visit,
    form: Result<Form<Credentials>, FormRejection>,
) -> Handled {
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => return app.bad_form(&session, rejection).await,
    };
    let name = form.name.trim();
    let refuse =
        |status, error: &str| app.page(&session, status, "register.html", context! { name, error });
    if let Some(error) = invalid_name(name).or_else(|| invalid_password(&form.password)) {
        return refuse(StatusCode::UNPROCESSABLE_ENTITY, error).await;
    }
    let hash = Passwords::hash(form.password).await?;
    if !app.users.create(name, hash).await? {
        return refuse(
            StatusCode::CONFLICT,
            "That name is taken; please choose another.",
        )
        .await;
    }
    tracing::info!(user = name, "registered");
    start_session(
        &app,
        &session,
        name,
        form.remember.is_some(),
        format!("Welcome, {name}"),
    )
    .await?;
    app.metrics.registration();
    Ok(Redirect::to("/").into_response())
}

pub(super) async fn login(
    State(app): App,
    session: Visit,
    form: Result<Form<Credentials>, FormRejection>,
) -> Handled {
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => return app.bad_form(&session, rejection).await,
    };
    let name = form.name.trim();
    let stored = match invalid_name(name) {
        None => app.users.password_hash(name).await?,
        Some(_) => None,
    };
    // Runs a full Argon2 verification even for unknown names (against a dummy hash), and
    // says the same thing in both cases: no oracle for which names exist.
    if !app.passwords.verify(form.password, stored).await? {
        app.metrics.login_failed();
        tracing::info!("failed login");
        let ctx = context! { name, error => "wrong name or password" };
        return app
            .page(&session, StatusCode::UNAUTHORIZED, "login.html", ctx)
            .await;
    }
    tracing::info!(user = name, "logged in");
    start_session(
        &app,
        &session,
        name,
        form.remember.is_some(),
        format!("Welcome back, {name}"),
    )
    .await?;
    app.metrics.login_ok();
    Ok(Redirect::to("/").into_response())
}

/// Logs the session in as `name`: a new session id (the old ticket stops working), the
/// tutorial's `ID` field, the remember-me choice and a welcome message for the next page.
async fn start_session(
    app: &AppState,
    session: &Session,
    name: &str,
    remember: bool,
    welcome: String,
) -> Result<(), AppError> {
    // Another user's notes must not follow a different user into their session.
    if app.user_of(session).await?.is_some_and(|user| user != name) {
        session.clear().await?;
    }
    session.login(name).await?;
    session.set("ID", name).await?; // the tutorial's `self.session.set('ID', name)`
    session.set_remember(remember).await?;
    session.flash().push(Level::Success, welcome).await?;
    Ok(())
}

pub(super) async fn logout(session: Session) -> Handled {
    session.logout().await?;
    Ok(to_login())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_passwords_are_checked() {
        assert!(invalid_name("ana").is_none());
        assert!(invalid_name("").is_some());
        assert!(invalid_name(&"é".repeat(64)).is_none());
        assert!(invalid_name(&"é".repeat(65)).is_some());
        assert!(invalid_name("a\u{0}b").is_some());
        assert!(invalid_password("1234567").is_some());
        assert!(invalid_password("12345678").is_none());
    }
}
