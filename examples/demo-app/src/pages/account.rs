//! The password prompt before sensitive actions ("sudo mode"), and the actions it guards
//! that live here: changing the password and deleting the account. The guard itself is the
//! framework's (`RecentLoginLayer` / `RecentLoginMiddleware`, with [`Demo::recent_login`]);
//! it sends a page whose login is older than `--recent-login-window` to `GET /confirm`.
//!
//! [`Demo::recent_login`]: crate::Demo::recent_login

use std::net::IpAddr;

use cloakroom::flash::Level;
use cloakroom::session::{AuthMethod, Session};
use cloakroom_core::recent_login::local_path;
use http::{HeaderValue, StatusCode, header};
use minijinja::context;
use serde::Deserialize;

use super::auth::{Credentials, authenticate, invalid_password};
use crate::app::{AppState, BadInput, Handled, Visit};
use crate::passwords::Passwords;
use crate::reply::{json, json_error, redirect, redirect_to};
use crate::throttle::UNKNOWN_CLIENT;

/// `GET /confirm?next=/path`: where to go once confirmed.
#[derive(Debug, Default, Deserialize)]
pub struct ConfirmQuery {
    /// A local path; anything else is ignored (no open redirect).
    pub next: Option<String>,
}

/// `POST /confirm`: the password again, and where to go next.
#[derive(Debug, Deserialize)]
pub struct ConfirmForm {
    password: String,
    next: Option<String>,
}

/// `next` if it is a local path, else `/`.
fn next_or_home(next: Option<&str>) -> &str {
    next.and_then(local_path).unwrap_or("/")
}

/// `GET /confirm`: "please confirm your password".
pub async fn confirm_form(app: &AppState, visit: &Visit, query: ConfirmQuery) -> Handled {
    let Some(user) = visit.user().await? else {
        return Ok(redirect("/login"));
    };
    let next = next_or_home(query.next.as_deref());
    let ctx = context! { name => user, next, error => None::<&str> };
    app.page(visit, StatusCode::OK, "confirm.html", ctx).await
}

/// `POST /confirm`: checks the password of the logged-in user (with the login's throttle);
/// right, the session records a fresh proof (no new id) and goes to `next`.
pub async fn confirm(
    app: &AppState,
    visit: &Visit,
    peer: Option<IpAddr>,
    form: Result<ConfirmForm, BadInput>,
) -> Handled {
    let Some(user) = visit.user().await? else {
        return Ok(redirect("/login"));
    };
    let form = match form {
        Ok(form) => form,
        Err(bad) => return app.bad_input(visit, &bad).await,
    };
    let next = next_or_home(form.next.as_deref()).to_owned();
    let credentials = Credentials {
        name: user.clone(),
        password: form.password,
        remember: None,
    };
    match authenticate(app, peer.unwrap_or(UNKNOWN_CLIENT), &credentials).await? {
        Ok(_) => {
            visit.reauthenticate(AuthMethod::Password).await?;
            tracing::info!(user, "password confirmed");
            Ok(redirect_to(&next))
        }
        Err(refused) => {
            let ctx = context! { name => user, next, error => refused.error };
            let mut res = app.page(visit, refused.status, "confirm.html", ctx).await?;
            if let Some(secs) = refused.retry_after {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            Ok(res)
        }
    }
}

/// `POST /api/confirm` (JSON `{"password"}`): the same for API clients; `{"confirmed": true}`
/// or `{"error"}` with the form's statuses.
pub async fn api_confirm(
    app: &AppState,
    session: &Session,
    peer: Option<IpAddr>,
    payload: Result<PasswordOnly, BadInput>,
) -> Handled {
    let Some(user) = session.user().await? else {
        return Ok(json_error(StatusCode::UNAUTHORIZED, "login_required"));
    };
    let payload = match payload {
        Ok(payload) => payload,
        Err(bad) => return Ok(json_error(StatusCode::BAD_REQUEST, &bad.message)),
    };
    let credentials = Credentials {
        name: user,
        password: payload.password,
        remember: None,
    };
    match authenticate(app, peer.unwrap_or(UNKNOWN_CLIENT), &credentials).await? {
        Ok(_) => {
            session.reauthenticate(AuthMethod::Password).await?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "confirmed": true }),
            ))
        }
        Err(refused) => {
            let mut res = json_error(refused.status, &refused.error);
            if let Some(secs) = refused.retry_after {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            Ok(res)
        }
    }
}

/// `POST /api/confirm`'s body.
#[derive(Debug, Deserialize)]
pub struct PasswordOnly {
    password: String,
}

/// `POST /account/password`: the new password, twice.
#[derive(Debug, Deserialize)]
pub struct NewPassword {
    password: String,
    repeat: String,
}

/// `GET /account/password` (behind the recent-login guard).
pub async fn password_form(app: &AppState, visit: &Visit) -> Handled {
    if visit.user().await?.is_none() {
        return Ok(redirect("/login"));
    }
    let ctx = context! { error => None::<&str> };
    app.page(visit, StatusCode::OK, "password.html", ctx).await
}

/// `POST /account/password` (behind the recent-login guard): sets the new password and
/// signs out every other session of the user (whoever knew the old one is out).
pub async fn change_password(
    app: &AppState,
    visit: &Visit,
    form: Result<NewPassword, BadInput>,
) -> Handled {
    let Some(user) = visit.user().await? else {
        return Ok(redirect("/login"));
    };
    let form = match form {
        Ok(form) => form,
        Err(bad) => return app.bad_input(visit, &bad).await,
    };
    let error = invalid_password(&form.password)
        .or_else(|| (form.password != form.repeat).then_some("The two passwords differ."));
    if let Some(error) = error {
        let ctx = context! { error };
        return app
            .page(
                visit,
                StatusCode::UNPROCESSABLE_ENTITY,
                "password.html",
                ctx,
            )
            .await;
    }
    let hash = Passwords::hash(form.password).await?;
    if !app.users.set_password(&user, hash).await? {
        let message = "Your account no longer exists.";
        return app
            .error_page(visit, StatusCode::NOT_FOUND, "Not found", message)
            .await;
    }
    let n = app.engine.revoke_others(visit).await?;
    tracing::info!(user, others_signed_out = n, "password changed");
    let plural = if n == 1 { "" } else { "s" };
    let message = format!("Password changed; signed out of {n} other session{plural}.");
    visit.flash().push(Level::Success, message).await?;
    Ok(redirect("/"))
}

/// `GET /account/delete` (behind the recent-login guard): "are you sure?".
pub async fn delete_form(app: &AppState, visit: &Visit) -> Handled {
    if visit.user().await?.is_none() {
        return Ok(redirect("/login"));
    }
    app.page(visit, StatusCode::OK, "delete.html", context! {})
        .await
}

/// `POST /account/delete` (behind the recent-login guard): ends every session of the user
/// (this one included), deletes the account, and ends any session a login squeezed in
/// between the two.
pub async fn delete_account(app: &AppState, session: &Session) -> Handled {
    let Some(user) = session.user().await? else {
        return Ok(redirect("/login"));
    };
    let ended = app.engine.revoke_all(&user, None).await?;
    app.users.delete(&user).await?;
    let late = app.engine.revoke_all(&user, None).await?;
    session.logout().await?;
    tracing::info!(user, sessions_ended = ended + late, "account deleted");
    Ok(redirect("/login"))
}

/// `POST /api/sessions/revoke-others` (behind the recent-login guard): ends every other
/// session of the user; `{"revoked": N}`.
pub async fn api_revoke_others(app: &AppState, session: &Session) -> Handled {
    if session.user().await?.is_none() {
        return Ok(json_error(StatusCode::UNAUTHORIZED, "login_required"));
    }
    let n = app.engine.revoke_others(session).await?;
    Ok(json(StatusCode::OK, &serde_json::json!({ "revoked": n })))
}
