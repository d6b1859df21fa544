//! Accounts: register, log in, log out.

use std::net::IpAddr;

use cloakroom::flash::Level;
use cloakroom::session::{self, Session};
use http::{HeaderValue, StatusCode, header};
use minijinja::context;
use serde::Deserialize;

use super::{MAX_NAME_CHARS, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};
use crate::app::{AppState, BadInput, Handled, Visit};
use crate::error::AppError;
use crate::passwords::Passwords;
use crate::reply::{json, json_error, redirect};
use crate::throttle::{UNKNOWN_CLIENT, retry_after_secs};
use crate::users::{canonical, refused_character};

/// The login and registration forms.
#[derive(Debug, Deserialize)]
pub struct Credentials {
    pub(super) name: String,
    pub(super) password: String,
    /// A checkbox: present ("on") when ticked, absent otherwise.
    pub(super) remember: Option<String>,
}

/// The answer to a login the concurrent-session limit refuses (`--session-limit-policy
/// refuse`).
const TOO_MANY_SESSIONS: &str =
    "This account is logged in on too many devices. Log out on one of them, then try again.";

/// `/login?hint=notes`: where an anonymous visitor was sent from, to say why.
#[derive(Debug, Deserialize)]
pub struct LoginHint {
    /// `notes`: sent here by `POST /notes`.
    pub hint: Option<String>,
}

/// `GET /login`.
pub async fn login_form(app: &AppState, visit: &Visit, hint: Option<&str>) -> Handled {
    let hint = match hint {
        Some("notes") => Some("Log in to keep notes."),
        _ => None,
    };
    let ctx = context! { name => "", error => None::<&str>, hint };
    app.page(visit, StatusCode::OK, "login.html", ctx).await
}

/// `GET /register`.
pub async fn register_form(app: &AppState, visit: &Visit) -> Handled {
    let ctx = context! { name => "", error => None::<&str> };
    app.page(visit, StatusCode::OK, "register.html", ctx).await
}

/// Why a name cannot be registered, if it cannot.
fn invalid_name(name: &str) -> Option<&'static str> {
    let chars = name.chars().count();
    if chars == 0 {
        Some("Please choose a name.")
    } else if chars > MAX_NAME_CHARS {
        Some("Names are at most 64 characters.")
    } else {
        refused_character(name)
    }
}

pub(super) fn invalid_password(password: &str) -> Option<&'static str> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        Some("Passwords need at least 8 characters.")
    } else if chars > MAX_PASSWORD_CHARS {
        Some("Passwords are at most 1024 characters.")
    } else {
        None
    }
}

/// `POST /register`.
pub async fn register(
    app: &AppState,
    visit: &Visit,
    form: Result<Credentials, BadInput>,
) -> Handled {
    let form = match form {
        Ok(form) => form,
        Err(bad) => return app.bad_input(visit, &bad).await,
    };
    let name = form.name.trim();
    let refuse =
        |status, error: &str| app.page(visit, status, "register.html", context! { name, error });
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
        app,
        visit,
        name,
        form.remember.is_some(),
        format!("Welcome, {name}"),
    )
    .await?;
    app.metrics.registration();
    Ok(redirect("/"))
}

/// Why a login was refused: the status, the message for the page or the JSON answer, and
/// (throttled) the seconds before a retry.
pub(super) struct Refused {
    pub(super) status: StatusCode,
    pub(super) error: String,
    pub(super) retry_after: Option<u64>,
}

/// Checks a login's name and password for the client at `client` (throttled per account and
/// client): the account's own name (`Ana` logs in to `ana`), or why not. Both login routes,
/// the form and the JSON API, and the password confirmation go through it.
pub(super) async fn authenticate(
    app: &AppState,
    client: IpAddr,
    form: &Credentials,
) -> Result<Result<String, Refused>, AppError> {
    let name = form.name.trim();
    let refused = |status, error: &str| Refused {
        status,
        error: error.to_owned(),
        retry_after: None,
    };
    // No registered password is longer: refuse without hashing and without spending the
    // throttle budget (the attempt cannot succeed and costs nothing).
    if form.password.len() > MAX_PASSWORD_CHARS
        && form.password.chars().count() > MAX_PASSWORD_CHARS
    {
        let error = "Passwords are at most 1024 characters.";
        return Ok(Err(refused(StatusCode::UNPROCESSABLE_ENTITY, error)));
    }
    let wrong = || {
        app.metrics.login_failed();
        Ok(Err(refused(
            StatusCode::UNAUTHORIZED,
            "wrong name or password",
        )))
    };
    // A name registration refuses (too long, invisible characters...) has no account:
    // everyone can tell, so no hashing is needed to hide it, and no budget is spent (nor a
    // throttle key of unbounded size stored).
    if invalid_name(name).is_some() {
        tracing::info!(client = %client, "failed login: not a valid name");
        return wrong();
    }
    // Before any hashing: is there budget left for one more failure of this account (by
    // canonical name, so look-alikes share it) and this client?
    let account_key = canonical(name);
    if let Err(wait) = app.throttle.check(&account_key, client) {
        let secs = retry_after_secs(wait);
        app.metrics.login_throttled();
        tracing::warn!(user = name, client = %client, retry_after = secs, "login throttled");
        let error = format!(
            "Too many failed logins for this account or from your address; \
             try again in {secs} s."
        );
        return Ok(Err(Refused {
            status: StatusCode::TOO_MANY_REQUESTS,
            error,
            retry_after: Some(secs),
        }));
    }
    let (account, hash) = app.users.password_hash(name).await?.unzip();
    // Runs a full Argon2 verification even for unknown names (against a dummy hash), and
    // says the same thing in both cases: no oracle for which names exist. An error here (a
    // full hashing queue, a database failure) returns early: not the user's failure, so it
    // spends no throttle budget.
    let ok = app.passwords.verify(form.password.clone(), hash).await?;
    let Some(account) = account.filter(|_| ok) else {
        app.throttle.failed(&account_key, client);
        tracing::info!(user = name, client = %client, "failed login");
        return wrong();
    };
    tracing::info!(user = account, client = %client, "logged in");
    Ok(Ok(account))
}

/// `POST /login`, from the client at `peer` ([`AppState::client_address`]; `None`: unknown,
/// as in-process tests; such requests share one "unknown" client budget).
pub async fn login(
    app: &AppState,
    visit: &Visit,
    peer: Option<IpAddr>,
    form: Result<Credentials, BadInput>,
) -> Handled {
    let form = match form {
        Ok(form) => form,
        Err(bad) => return app.bad_input(visit, &bad).await,
    };
    let account = match authenticate(app, peer.unwrap_or(UNKNOWN_CLIENT), &form).await? {
        Ok(account) => account,
        Err(refused) => {
            let ctx = context! { name => form.name.trim(), error => refused.error };
            let mut res = app.page(visit, refused.status, "login.html", ctx).await?;
            if let Some(secs) = refused.retry_after {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            return Ok(res);
        }
    };
    let welcome = format!("Welcome back, {account}");
    match start_session(app, visit, &account, form.remember.is_some(), welcome).await {
        Err(AppError::Session(e)) if e.kind() == session::ErrorKind::SessionLimit => {
            let ctx = context! { name => form.name.trim(), error => TOO_MANY_SESSIONS };
            return app
                .page(visit, StatusCode::CONFLICT, "login.html", ctx)
                .await;
        }
        other => other?,
    }
    app.metrics.login_ok();
    Ok(redirect("/"))
}

/// `POST /api/login` (JSON `{"name", "password"}`), for API clients: `{"token": TICKET}`
/// and the same ticket in the `X-Session-Ticket` header; send it back as
/// `Authorization: Bearer TICKET`. Refusals are JSON `{"error"}` with the form's statuses.
/// No cookie is set (the client asked for a ticket), so this needs no CSRF token: a forged
/// cross-site request could log no browser in.
pub async fn api_login(
    app: &AppState,
    session: &Session,
    peer: Option<IpAddr>,
    payload: Result<Credentials, BadInput>,
) -> Handled {
    let form = match payload {
        Ok(form) => form,
        Err(bad) => return Ok(json_error(StatusCode::BAD_REQUEST, &bad.message)),
    };
    let account = match authenticate(app, peer.unwrap_or(UNKNOWN_CLIENT), &form).await? {
        Ok(account) => account,
        Err(refused) => {
            let mut res = json_error(refused.status, &refused.error);
            if let Some(secs) = refused.retry_after {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            return Ok(res);
        }
    };
    if app
        .user_of(session)
        .await?
        .is_some_and(|user| user != account)
    {
        session.clear().await?;
    }
    match session.login(&account).await {
        Err(e) if e.kind() == session::ErrorKind::SessionLimit => {
            return Ok(json_error(StatusCode::CONFLICT, TOO_MANY_SESSIONS));
        }
        other => other?,
    }
    session.set("ID", &account).await?;
    let token = session.ticket().await?;
    app.metrics.login_ok();
    Ok(json(StatusCode::OK, &serde_json::json!({ "token": token })))
}

/// `POST /api/logout`: ends the session (its ticket, or cookie, stops working at once);
/// `{"logged_out": true}`.
pub async fn api_logout(session: &Session) -> Handled {
    session.logout().await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "logged_out": true }),
    ))
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

/// `POST /logout`.
pub async fn logout(session: &Session) -> Handled {
    session.logout().await?;
    Ok(redirect("/login"))
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
        assert!(invalid_name("victim\u{200b}").is_some());
        assert!(invalid_name("\u{202e}victim").is_some());
        assert!(invalid_password("1234567").is_some());
        assert!(invalid_password("12345678").is_none());
    }
}
