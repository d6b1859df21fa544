//! The routes: HTML pages and forms, the JSON API, health and metrics, one file per area
//! (`auth`, `notes`, `devices`, `api`, `ops`), the middleware apart.
//!
//! Every handler takes the request's [`Session`] and answers `Result<_, AppError>`: a session
//! store failure becomes a 503, anything unexpected a logged 500. Bad input is answered here,
//! with a 4xx page or JSON body, never a panic.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::StatusCode;
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use cloakroom::tower::{CsrfLayer, CsrfToken};
use cloakroom::{Session, SessionEngine, SessionLayer};
use minijinja::{Environment, Value, context};

use crate::error::AppError;
use crate::metrics::Metrics;
use crate::passwords::Passwords;
use crate::throttle::Throttle;
use crate::users::Users;

mod api;
mod auth;
mod devices;
mod middleware;
mod notes;
mod ops;
mod words;

use api::{api_add_note, api_csrf, api_me};
use auth::{login, login_form, logout, register, register_form};
use devices::{revoke, revoke_others, sessions_page};
use notes::{add_note_form, clear_notes_form, delete_note_form, home};
use ops::{app_js, app_page, healthz, metrics, not_found, notes_js};

pub(crate) use middleware::AllowedHosts;

/// Session field with the user's notes (a `Vec<String>`).
const NOTES: &str = "notes";
/// Longest note, in characters.
const MAX_NOTE_CHARS: usize = 500;
/// Most notes kept; older ones are dropped (the session has a size limit).
const MAX_NOTES: usize = 50;
/// Longest user name, in characters.
const MAX_NAME_CHARS: usize = 64;
/// Password length bounds, in characters (the upper one bounds hashing work).
const MIN_PASSWORD_CHARS: usize = 8;
const MAX_PASSWORD_CHARS: usize = 1024;

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    /// For listing and revoking a user's sessions (with the store timeout applied).
    pub(crate) engine: SessionEngine,
    pub(crate) users: Users,
    pub(crate) passwords: Passwords,
    pub(crate) templates: Environment<'static>,
    pub(crate) metrics: Arc<Metrics>,
    /// Failed-login budgets per account and per client address.
    pub(crate) throttle: Throttle,
    /// Sessions shared with a Tornado + pycket app: a session whose `ID` field is set counts
    /// as logged in as that name even without a Cloakroom login (the Tornado app's login is
    /// `self.session.set('ID', name)`).
    pub(crate) pycket_ids: bool,
}

type App = State<Arc<AppState>>;
type Handled = Result<Response, AppError>;

/// The application's routes behind the session layer.
pub(crate) fn router(
    state: Arc<AppState>,
    sessions: SessionLayer,
    csrf: CsrfLayer,
    guard: Guard,
) -> Router {
    let mut router = Router::new()
        .route("/", get(home))
        .route("/login", get(login_form).post(login))
        .route("/register", get(register_form).post(register))
        .route("/notes", post(add_note_form))
        .route("/notes/delete", post(delete_note_form))
        .route("/notes/clear", post(clear_notes_form))
        .route("/sessions", get(sessions_page))
        .route("/sessions/revoke", post(revoke))
        .route("/sessions/revoke-others", post(revoke_others))
        .route("/logout", post(logout))
        .route("/api/me", get(api_me))
        .route("/api/notes", post(api_add_note))
        .route("/api/csrf", get(api_csrf))
        .route("/healthz", get(healthz))
        .route("/static/notes.js", get(notes_js))
        .route("/app", get(app_page))
        .route("/static/app.js", get(app_js));
    if guard.metrics_here {
        router = router.route("/metrics", get(metrics));
    }
    router
        .fallback(not_found)
        .layer(csrf)
        .layer(sessions)
        // Before any session work: a request for another Host is refused (DNS rebinding).
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(guard.hosts),
            middleware::check_host,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        .with_state(state)
}

/// Where the router answers: the `Host` values it accepts and whether it serves `/metrics`.
#[derive(Debug)]
pub(crate) struct Guard {
    pub(crate) hosts: AllowedHosts,
    /// `/metrics` on this router (loopback only, without a separate metrics listener).
    pub(crate) metrics_here: bool,
}

/// Only `/metrics`, for the separate metrics listener (`--metrics-addr`).
pub(crate) fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// What a page handler gets: the session and the CSRF token source of the request.
#[derive(Debug, Clone)]
pub(crate) struct Visit {
    session: Session,
    csrf: CsrfToken,
}

impl std::ops::Deref for Visit {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Visit {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let csrf = CsrfToken::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Visit { session, csrf })
    }
}

/// The hidden CSRF form field, in every form: `<input type="hidden" name="_xsrf" ...>` with
/// a token masked afresh for this render (the secret is the session's, or, before login, the
/// `_xsrf` cookie's).
async fn csrf_field(visit: &Visit) -> Result<String, AppError> {
    Ok(visit.csrf.form_field().await?)
}

/// The bare token, for the page's `<meta name="xsrf-token">` (read by the notes script,
/// which sends it as `X-XSRFToken`).
async fn csrf_token(visit: &Visit) -> Result<String, AppError> {
    Ok(visit.csrf.token().await?)
}

impl AppState {
    /// Who the session is logged in as: its login, or (sessions shared with Tornado) the
    /// name in its `ID` field.
    async fn user_of(&self, session: &Session) -> Result<Option<String>, AppError> {
        if let Some(user) = session.user().await? {
            return Ok(Some(user));
        }
        if !self.pycket_ids {
            return Ok(None);
        }
        Ok(match session.get::<serde_json::Value>("ID").await? {
            Some(serde_json::Value::String(name)) if !name.is_empty() => Some(name),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
    }

    /// Renders `template` with the page basics (the user, the pending flash messages, which
    /// this render consumes, and the CSRF field) plus `extra`.
    async fn page(
        &self,
        session: &Visit,
        status: StatusCode,
        template: &str,
        extra: Value,
    ) -> Handled {
        let user = self.user_of(session).await?;
        let flashes = session.flash().take().await?;
        let ctx = context! {
            user,
            flashes,
            csrf_field => csrf_field(session).await?,
            csrf_token => csrf_token(session).await?,
            ..extra
        };
        self.render(status, template, ctx)
    }

    fn render(&self, status: StatusCode, template: &str, ctx: Value) -> Handled {
        let html = self.templates.get_template(template)?.render(ctx)?;
        Ok((status, private(), Html(html)).into_response())
    }

    async fn error_page(
        &self,
        session: &Visit,
        status: StatusCode,
        title: &str,
        message: &str,
    ) -> Handled {
        self.page(session, status, "error.html", context! { title, message })
            .await
    }

    /// A form body axum could not read: 400/415/422 as axum classified it.
    async fn bad_form(&self, session: &Visit, rejection: FormRejection) -> Handled {
        let message = rejection.body_text();
        self.error_page(session, rejection.status(), "Bad request", &message)
            .await
    }
}

/// `Cache-Control: no-store`: pages and API answers are per user.
fn private() -> [(header::HeaderName, &'static str); 1] {
    [(header::CACHE_CONTROL, "no-store")]
}

fn to_login() -> Response {
    Redirect::to("/login").into_response()
}
