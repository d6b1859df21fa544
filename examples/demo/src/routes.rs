//! The routes on axum: each extracts what the page needs, calls the framework-free page in
//! [`cloakroom_demo_app::pages`], and sends its reply. The middleware apart: request
//! counting, store-failure counting and security headers (`observe`), and the `Host` check
//! (`check_host`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::{FormRejection, JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Json, Router};
use cloakroom::SessionLayer;
use cloakroom::csrf::TokenSource;
use cloakroom::session::Session;
use cloakroom::tower::{CsrfLayer, CsrfToken, DeviceBoundLayer, RecentLoginLayer};
use cloakroom_demo_app::hosts::{self, AllowedHosts};
use cloakroom_demo_app::pages::{
    self, ConfirmForm, ConfirmQuery, Credentials, DeleteNote, LoginHint, NewNote, NewPassword,
    PasswordOnly, RevokeForm,
};
use cloakroom_demo_app::{AppState, BadInput, Handled, RouteClass, StoreFailure, Visit};
use cloakroom_demo_app::{live, proxies};

type App = State<Arc<AppState>>;

/// The application's routes behind the session and CSRF layers.
pub(crate) fn router(
    state: Arc<AppState>,
    sessions: SessionLayer,
    csrf: CsrfLayer,
    guard: Guard,
    recent_login: &RecentLoginLayer,
) -> Router {
    // The sensitive routes: a login older than `--recent-login-window` is asked for the
    // password again (`/confirm`) first.
    let recent =
        |route: axum::routing::MethodRouter<Arc<AppState>>| route.layer(recent_login.clone());
    // The logged-in pages and API need a device-bound session once it has registered (all
    // of them under `--dbsc required`); a refused page goes to the login form.
    let bound_pages = Router::new()
        .route("/", get(home))
        .route("/notes", post(add_note_form))
        .route("/notes/delete", post(delete_note_form))
        .route("/notes/clear", post(clear_notes_form))
        .route("/sessions", get(sessions_page))
        .route("/sessions/revoke", post(revoke))
        .route("/sessions/revoke-others", recent(post(revoke_others)))
        .route(
            "/account/password",
            recent(get(password_form).post(change_password)),
        )
        .route(
            "/account/delete",
            recent(get(delete_form).post(delete_account)),
        )
        .route_layer(DeviceBoundLayer::new().with_redirect("/login"));
    let bound_api = Router::new()
        .route("/api/me", get(api_me))
        .route("/api/notes", post(api_add_note))
        .route(
            "/api/sessions/revoke-others",
            recent(post(api_revoke_others)),
        )
        .route_layer(DeviceBoundLayer::new());
    let mut router = Router::new()
        .merge(bound_pages)
        .merge(bound_api)
        .route("/login", get(login_form).post(login))
        .route("/register", get(register_form).post(register))
        .route("/confirm", get(confirm_form).post(confirm))
        .route("/api/confirm", post(api_confirm))
        .route("/sessions/live", get(live))
        .route(
            "/static/devices.js",
            get(|| async { send(Ok(live::devices_js())) }),
        )
        .route("/logout", post(logout))
        .route("/api/login", post(api_login))
        .route("/api/logout", post(api_logout))
        .route("/api/csrf", get(api_csrf))
        .route("/healthz", get(healthz))
        .route("/static/notes.js", get(|| async { pages::notes_js() }))
        .route("/app", get(app_page))
        .route("/static/app.js", get(|| async { pages::app_js() }));
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
            check_host,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
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

/// Counts requests by route class and store failures, and adds the security headers.
async fn observe(State(app): App, req: Request, next: Next) -> Response {
    let matched = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    app.metrics().request(RouteClass::of(req.method(), matched));
    let mut res = next.run(req).await;
    if res.extensions().get::<StoreFailure>().is_some() {
        app.metrics().store_error();
    }
    hosts::set_security_headers(res.headers_mut());
    res
}

/// 400 for a missing, repeated or contradicted `Host`, 421 for one the demo does not answer
/// for ([`hosts::check_host`]).
async fn check_host(
    State(allowed): State<Arc<AllowedHosts>>,
    req: Request,
    next: Next,
) -> Response {
    let head = hosts::RequestHead {
        path: req.uri().path(),
        http_1_1: req.version() == axum::http::Version::HTTP_11,
        authority: req.uri().authority().map(|a| a.as_str()),
    };
    let lines = req.headers().get_all(axum::http::header::HOST);
    match hosts::check_host(&allowed, head, lines.iter().map(HeaderValue::as_bytes)) {
        Some(refused) => refused.into_response(),
        None => next.run(req).await,
    }
}

/// What a page handler gets: the session and the CSRF token source of the request.
struct Page(Visit);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Page {
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
        Ok(Page(Visit::new(session, TokenSource::clone(&csrf))))
    }
}

/// The page's reply, or its failure's.
fn send(handled: Handled) -> Response {
    handled
        .unwrap_or_else(cloakroom_demo_app::AppError::into_reply)
        .into_response()
}

/// A form body axum could not read: 400/415/422 as axum classified it.
fn form<T>(form: Result<Form<T>, FormRejection>) -> Result<T, BadInput> {
    form.map(|Form(form)| form).map_err(|rejection| BadInput {
        status: rejection.status(),
        message: rejection.body_text(),
    })
}

async fn home(State(app): App, Page(visit): Page) -> Response {
    send(pages::home(&app, &visit).await)
}

async fn login_form(
    State(app): App,
    Page(visit): Page,
    hint: Result<Query<LoginHint>, QueryRejection>,
) -> Response {
    let hint = hint.ok().and_then(|Query(q)| q.hint);
    send(pages::login_form(&app, &visit, hint.as_deref()).await)
}

async fn register_form(State(app): App, Page(visit): Page) -> Response {
    send(pages::register_form(&app, &visit).await)
}

async fn register(
    State(app): App,
    Page(visit): Page,
    body: Result<Form<Credentials>, FormRejection>,
) -> Response {
    send(pages::register(&app, &visit, form(body)).await)
}

/// The TCP peer's address, as the server recorded it (`ConnectInfo`); requests without one
/// (in-process tests, a server that does not record it) share one "unknown" client budget.
type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

async fn login(
    State(app): App,
    peer: Peer,
    headers: HeaderMap,
    Page(visit): Page,
    body: Result<Form<Credentials>, FormRejection>,
) -> Response {
    let lines = |name| headers.get_all(name).into_iter().map(HeaderValue::as_bytes);
    let client = app.client_address(
        peer.map(|Extension(ConnectInfo(addr))| addr.ip()),
        lines(proxies::FORWARDED),
        lines(proxies::X_FORWARDED_FOR),
    );
    send(pages::login(&app, &visit, client, form(body)).await)
}

async fn logout(session: Session) -> Response {
    send(pages::logout(&session).await)
}

async fn add_note_form(
    State(app): App,
    Page(visit): Page,
    body: Result<Form<NewNote>, FormRejection>,
) -> Response {
    send(pages::add_note_form(&app, &visit, form(body)).await)
}

async fn delete_note_form(
    State(app): App,
    Page(visit): Page,
    body: Result<Form<DeleteNote>, FormRejection>,
) -> Response {
    send(pages::delete_note_form(&app, &visit, form(body)).await)
}

async fn clear_notes_form(State(app): App, Page(visit): Page) -> Response {
    send(pages::clear_notes_form(&app, &visit).await)
}

async fn sessions_page(State(app): App, Page(visit): Page) -> Response {
    send(pages::sessions_page(&app, &visit).await)
}

async fn revoke(
    State(app): App,
    Page(visit): Page,
    body: Result<Form<RevokeForm>, FormRejection>,
) -> Response {
    send(pages::revoke(&app, &visit, form(body)).await)
}

async fn revoke_others(State(app): App, session: Session) -> Response {
    send(pages::revoke_others(&app, &session).await)
}

/// `GET /sessions/live`: the devices page's event stream (see `cloakroom_demo_app::live`).
async fn live(State(app): App, session: Session) -> Response {
    match live::live(&app, &session).await {
        Ok(Ok(ended)) => {
            let mut res = Response::new(axum::body::Body::from_stream(live::events(ended)));
            for (name, value) in live::STREAM_HEADERS {
                res.headers_mut()
                    .insert(name, HeaderValue::from_static(value));
            }
            res
        }
        Ok(Err(reply)) => send(Ok(reply)),
        Err(e) => send(Err(e)),
    }
}

async fn confirm_form(
    State(app): App,
    Page(visit): Page,
    query: Result<Query<ConfirmQuery>, QueryRejection>,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    send(pages::confirm_form(&app, &visit, query).await)
}

async fn confirm(
    State(app): App,
    peer: Peer,
    headers: HeaderMap,
    Page(visit): Page,
    body: Result<Form<ConfirmForm>, FormRejection>,
) -> Response {
    let client = client_of(&app, peer, &headers);
    send(pages::confirm(&app, &visit, client, form(body)).await)
}

async fn password_form(State(app): App, Page(visit): Page) -> Response {
    send(pages::password_form(&app, &visit).await)
}

async fn change_password(
    State(app): App,
    Page(visit): Page,
    body: Result<Form<NewPassword>, FormRejection>,
) -> Response {
    send(pages::change_password(&app, &visit, form(body)).await)
}

async fn delete_form(State(app): App, Page(visit): Page) -> Response {
    send(pages::delete_form(&app, &visit).await)
}

async fn delete_account(State(app): App, session: Session) -> Response {
    send(pages::delete_account(&app, &session).await)
}

async fn api_confirm(
    State(app): App,
    peer: Peer,
    headers: HeaderMap,
    session: Session,
    payload: Result<Json<PasswordOnly>, JsonRejection>,
) -> Response {
    let client = client_of(&app, peer, &headers);
    let payload = payload.map(|Json(p)| p).map_err(|rejection| BadInput {
        status: rejection.status(),
        message: rejection.body_text(),
    });
    send(pages::api_confirm(&app, &session, client, payload).await)
}

async fn api_revoke_others(State(app): App, session: Session) -> Response {
    send(pages::api_revoke_others(&app, &session).await)
}

/// The client's address ([`AppState::client_address`]).
fn client_of(app: &AppState, peer: Peer, headers: &HeaderMap) -> Option<std::net::IpAddr> {
    let lines = |name| headers.get_all(name).into_iter().map(HeaderValue::as_bytes);
    app.client_address(
        peer.map(|Extension(ConnectInfo(addr))| addr.ip()),
        lines(proxies::FORWARDED),
        lines(proxies::X_FORWARDED_FOR),
    )
}

async fn api_login(
    State(app): App,
    peer: Peer,
    headers: HeaderMap,
    session: Session,
    payload: Result<Json<Credentials>, JsonRejection>,
) -> Response {
    let lines = |name| headers.get_all(name).into_iter().map(HeaderValue::as_bytes);
    let client = app.client_address(
        peer.map(|Extension(ConnectInfo(addr))| addr.ip()),
        lines(proxies::FORWARDED),
        lines(proxies::X_FORWARDED_FOR),
    );
    let payload = payload.map(|Json(c)| c).map_err(|rejection| BadInput {
        status: rejection.status(),
        message: rejection.body_text(),
    });
    send(pages::api_login(&app, &session, client, payload).await)
}

async fn api_logout(session: Session) -> Response {
    send(pages::api_logout(&session).await)
}

async fn api_me(State(app): App, session: Session) -> Response {
    send(pages::api_me(&app, &session).await)
}

async fn api_csrf(csrf: CsrfToken) -> Response {
    send(pages::api_csrf(&csrf).await)
}

async fn api_add_note(
    State(app): App,
    session: Session,
    payload: Result<Json<NewNote>, JsonRejection>,
) -> Response {
    let payload = payload
        .map(|Json(note)| note)
        .map_err(|rejection| BadInput {
            status: rejection.status(),
            message: rejection.body_text(),
        });
    send(pages::api_add_note(&app, &session, payload).await)
}

async fn healthz(State(app): App) -> Response {
    pages::healthz(&app).await.into_response()
}

/// The single-page client. This answer hands the `XSRF-TOKEN` cookie out; the CSRF layer
/// keeps it current from then on.
async fn app_page(csrf: CsrfToken) -> Response {
    csrf.ensure_spa_cookie();
    pages::app_page().into_response()
}

async fn metrics(State(app): App) -> Response {
    pages::metrics(&app).into_response()
}

async fn not_found(State(app): App) -> Response {
    send(pages::not_found(&app))
}
