//! The routes: HTML pages and forms, the JSON API, health and metrics.
//!
//! Every handler takes the request's [`Session`] and answers `Result<_, AppError>`: a session
//! store failure becomes a 503, anything unexpected a logged 500. Bad input is answered here,
//! with a 4xx page or JSON body, never a panic.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json};
use cloakroom::flash::Level;
use cloakroom::tower::{CsrfLayer, CsrfToken};
use cloakroom::{Session, SessionEngine, SessionKey, SessionLayer, Timestamp};
use minijinja::{Environment, Value, context};
use serde::{Deserialize, Serialize};

use crate::error::{AppError, StoreFailure};
use crate::metrics::{Metrics, RouteClass};
use crate::passwords::Passwords;
use crate::users::Users;

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
    /// Sessions shared with a Tornado + pycket app: a session whose `ID` field is set counts
    /// as logged in as that name even without a Cloakroom login (the Tornado app's login is
    /// `self.session.set('ID', name)`).
    pub(crate) pycket_ids: bool,
}

type App = State<Arc<AppState>>;
type Handled = Result<Response, AppError>;

/// The application's routes behind the session layer.
pub(crate) fn router(state: Arc<AppState>, sessions: SessionLayer, csrf: CsrfLayer) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_form).post(login))
        .route("/register", get(register_form).post(register))
        .route("/notes", post(add_note_form))
        .route("/sessions", get(sessions_page))
        .route("/sessions/revoke", post(revoke))
        .route("/sessions/revoke-others", post(revoke_others))
        .route("/logout", post(logout))
        .route("/api/me", get(api_me))
        .route("/api/notes", post(api_add_note))
        .route("/api/csrf", get(api_csrf))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/static/notes.js", get(notes_js))
        .fallback(not_found)
        .layer(csrf)
        .layer(sessions)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
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

/// Counts requests by route class and store failures, and adds the security headers.
async fn observe(State(app): App, req: Request, next: Next) -> Response {
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    app.metrics.request(RouteClass::of(req.method(), matched));
    let mut res = next.run(req).await;
    if res.extensions().get::<StoreFailure>().is_some() {
        app.metrics.store_error();
    }
    set_security_headers(res.headers_mut());
    res
}

fn set_security_headers(headers: &mut HeaderMap) {
    let defaults = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ];
    for (name, value) in defaults {
        headers
            .entry(name)
            .or_insert_with(|| HeaderValue::from_static(value));
    }
}

// ---- Accounts -------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct Credentials {
    name: String,
    password: String,
    /// A checkbox: present ("on") when ticked, absent otherwise.
    remember: Option<String>,
}

async fn login_form(State(app): App, session: Visit) -> Handled {
    let ctx = context! { name => "", error => None::<&str> };
    app.page(&session, StatusCode::OK, "login.html", ctx).await
}

async fn register_form(State(app): App, session: Visit) -> Handled {
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

async fn register(
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

async fn login(
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

async fn logout(session: Session) -> Handled {
    session.logout().await?;
    Ok(to_login())
}

// ---- Home and notes -------------------------------------------------------------------

async fn home(State(app): App, session: Visit) -> Handled {
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
struct NewNote {
    text: String,
}

/// Adds a note: the notes after it, or why the text was refused.
async fn add_note(
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

async fn add_note_form(
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

// ---- Sessions -------------------------------------------------------------------------

async fn sessions_page(State(app): App, session: Visit) -> Handled {
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
struct RevokeForm {
    handle: String,
}

async fn revoke(
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

async fn revoke_others(State(app): App, session: Session) -> Handled {
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

// ---- JSON API -------------------------------------------------------------------------

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

async fn api_me(State(app): App, session: Session) -> Handled {
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
async fn api_csrf(csrf: CsrfToken) -> Handled {
    let token = csrf.token().await?;
    Ok((private(), Json(serde_json::json!({ "token": token }))).into_response())
}

async fn api_add_note(
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

// ---- Operations -----------------------------------------------------------------------

async fn healthz(State(app): App) -> Response {
    let limit = app.engine.config().store_timeout;
    match tokio::time::timeout(limit, app.engine.store().ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ok").into_response(),
        failure => {
            let error = match failure {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {limit:?}"),
            };
            tracing::warn!(%error, "health check: session store unavailable");
            app.metrics.store_error();
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable").into_response()
        }
    }
}

/// The notes form's script: posts through the JSON API with the `X-XSRFToken` header.
async fn notes_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../templates/notes.js"),
    )
        .into_response()
}

async fn metrics(State(app): App) -> Response {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], app.metrics.render()).into_response()
}

async fn not_found(State(app): App) -> Handled {
    let ctx = context! {
        user => None::<String>,
        flashes => Vec::<String>::new(),
        csrf_field => "",
        csrf_token => "",
        title => "Not found",
        message => "There is no page here.",
    };
    app.render(StatusCode::NOT_FOUND, "error.html", ctx)
}

// ---- Times in words -------------------------------------------------------------------

/// "5 minutes", "3 hours", "2 days".
fn span(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = match secs {
        0..60 => return "less than a minute".into(),
        60..3600 => (secs / 60, "minute"),
        3600..172_800 => (secs / 3600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

fn ago(then: Timestamp, now: Timestamp) -> String {
    let d = then.until(now);
    if d < Duration::from_secs(60) {
        "just now".into()
    } else {
        format!("{} ago", span(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(Duration::from_secs(5)), "less than a minute");
        assert_eq!(span(Duration::from_secs(60)), "1 minute");
        assert_eq!(span(Duration::from_secs(7200)), "2 hours");
        assert_eq!(span(Duration::from_secs(86_400 * 30)), "30 days");
        assert_eq!(ago(Timestamp(0), Timestamp(1000)), "just now");
    }

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
