//! The routes on actix-web: each extracts what the page needs, calls the framework-free page
//! in [`cloakroom_demo_app::pages`], and converts its reply. The middleware: request and
//! store-failure counting and the security headers (`observe`), the `Host` check
//! (`check_host`), then the session and CSRF middleware, in the axum demo's order.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::web::{self, Bytes, Data};
use actix_web::{App, HttpMessage as _, HttpRequest, HttpResponse, guard};
use cloakroom_actix::{
    CsrfMiddleware, CsrfSettings, CsrfToken, DeviceBound, RecentLoginMiddleware, SessionMiddleware,
};
use cloakroom_core::csrf::TokenSource;
use cloakroom_core::session::Session;
use cloakroom_demo_app::hosts::{self, AllowedHosts};
use cloakroom_demo_app::pages::{self, ConfirmQuery, LoginHint};
use cloakroom_demo_app::{
    AppState, BadInput, Demo, Handled, Reply, RouteClass, StoreFailure, Visit, input,
};
use cloakroom_demo_app::{live, proxies};

/// What every worker's `App` is built from (cheap to clone).
#[derive(Clone, Debug)]
pub(crate) struct Wiring {
    state: Data<AppState>,
    sessions: SessionMiddleware,
    csrf: CsrfSettings,
    hosts: Arc<AllowedHosts>,
    metrics_here: bool,
    /// The recent-login guard of the sensitive routes.
    recent_login: RecentLoginMiddleware,
}

impl Wiring {
    /// The session and CSRF middleware of `demo`, the store failures they meet counted.
    pub(crate) fn new(demo: Demo) -> Self {
        let on_store_error = demo.state.metrics().clone();
        let sessions = SessionMiddleware::new(demo.sessions).with_error_handler(move |error| {
            on_store_error.store_error();
            cloakroom_actix::default_error_response(error)
        });
        Wiring {
            csrf: demo.csrf,
            state: Data::from(demo.state),
            sessions,
            hosts: Arc::new(demo.hosts),
            metrics_here: demo.metrics_on_main,
            recent_login: RecentLoginMiddleware::new(demo.recent_login),
        }
    }

    /// The application: every route (and `/metrics` when served on the main listener)
    /// behind the session and CSRF middleware; bodies up to `max_body` bytes (more: 413).
    pub(crate) fn main(
        self,
        max_body: usize,
    ) -> App<
        impl ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<impl MessageBody>,
            Error = actix_web::Error,
            InitError = (),
        >,
    > {
        let hosts = self.hosts.clone();
        let observed = self.state.clone();
        // The CSRF middleware buffers form bodies to find the token: no more than the
        // handlers would read (413 beyond, as the axum demo's body limit answers).
        let csrf = CsrfMiddleware::new(self.csrf.with_body_limit(max_body));
        let metrics_here = self.metrics_here;
        // The sensitive routes: a login older than `--recent-login-window` is asked for the
        // password again (`/confirm`) first.
        let recent = self.recent_login.clone();
        App::new()
            .app_data(self.state)
            .app_data(web::PayloadConfig::new(max_body))
            .service(
                resource("/", "GET,HEAD")
                    .route(get().to(home))
                    .wrap(bound_page()),
            )
            .service(
                resource("/login", "GET,HEAD,POST")
                    .route(get().to(login_form))
                    .route(web::post().to(login)),
            )
            .service(
                resource("/register", "GET,HEAD,POST")
                    .route(get().to(register_form))
                    .route(web::post().to(register)),
            )
            .service(
                resource("/notes", "POST")
                    .route(web::post().to(add_note_form))
                    .wrap(bound_page()),
            )
            .service(
                resource("/notes/delete", "POST")
                    .route(web::post().to(delete_note_form))
                    .wrap(bound_page()),
            )
            .service(
                resource("/notes/clear", "POST")
                    .route(web::post().to(clear_notes_form))
                    .wrap(bound_page()),
            )
            .service(
                resource("/sessions", "GET,HEAD")
                    .route(get().to(sessions_page))
                    .wrap(bound_page()),
            )
            .service(
                resource("/sessions/revoke", "POST")
                    .route(web::post().to(revoke))
                    .wrap(bound_page()),
            )
            .configure(|cfg| sensitive_routes(cfg, &recent))
            .service(resource("/sessions/live", "GET").route(get().to(live)))
            .service(
                resource("/static/devices.js", "GET,HEAD")
                    .route(get().to(|| async { respond(live::devices_js()) })),
            )
            .service(resource("/logout", "POST").route(web::post().to(logout)))
            .service(resource("/api/login", "POST").route(web::post().to(api_login)))
            .service(resource("/api/logout", "POST").route(web::post().to(api_logout)))
            .service(
                resource("/api/me", "GET,HEAD")
                    .route(get().to(api_me))
                    .wrap(DeviceBound::new()),
            )
            .service(
                resource("/api/notes", "POST")
                    .route(web::post().to(api_add_note))
                    .wrap(DeviceBound::new()),
            )
            .service(resource("/api/csrf", "GET,HEAD").route(get().to(api_csrf)))
            .service(resource("/healthz", "GET,HEAD").route(get().to(healthz)))
            .service(
                resource("/static/notes.js", "GET,HEAD")
                    .route(get().to(|| async { respond(pages::notes_js()) })),
            )
            .service(resource("/app", "GET,HEAD").route(get().to(app_page)))
            .service(
                resource("/static/app.js", "GET,HEAD")
                    .route(get().to(|| async { respond(pages::app_js()) })),
            )
            .configure(move |cfg| {
                if metrics_here {
                    cfg.service(resource("/metrics", "GET,HEAD").route(get().to(metrics)));
                }
            })
            .default_service(web::to(not_found))
            .wrap(csrf)
            .wrap(self.sessions)
            // Before any session work: a request for another Host is refused (DNS rebinding).
            .wrap(from_fn(move |req, next| {
                check_host(hosts.clone(), req, next)
            }))
            .wrap(from_fn(move |req, next| {
                observe(observed.clone(), req, next)
            }))
    }

    /// Only `/metrics`, for the separate metrics listener (`--metrics-addr`).
    pub(crate) fn metrics(
        self,
    ) -> App<
        impl ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<impl MessageBody>,
            Error = actix_web::Error,
            InitError = (),
        >,
    > {
        App::new()
            .app_data(self.state)
            .service(resource("/metrics", "GET,HEAD").route(get().to(metrics)))
    }
}

/// The logged-in pages need a device-bound session once it has registered (all of them
/// under `--dbsc required`); a refused page goes to the login form.
fn bound_page() -> DeviceBound {
    DeviceBound::new().with_redirect("/login")
}

/// `GET`, and `HEAD` with it (as axum's `get` routes answer both).
fn get() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// The sensitive routes: a login older than `--recent-login-window` is asked for the
/// password again (`/confirm`) first; the pages and the API need a device-bound session
/// once it has registered.
fn sensitive_routes(cfg: &mut web::ServiceConfig, recent: &RecentLoginMiddleware) {
    let guarded = |path, allow| resource(path, allow).wrap(recent.clone());
    cfg.service(
        guarded("/sessions/revoke-others", "POST")
            .route(web::post().to(revoke_others))
            .wrap(bound_page()),
    )
    .service(
        resource("/confirm", "GET,HEAD,POST")
            .route(get().to(confirm_form))
            .route(web::post().to(confirm)),
    )
    .service(
        guarded("/account/password", "GET,HEAD,POST")
            .route(get().to(password_form))
            .route(web::post().to(change_password))
            .wrap(bound_page()),
    )
    .service(
        guarded("/account/delete", "GET,HEAD,POST")
            .route(get().to(delete_form))
            .route(web::post().to(delete_account))
            .wrap(bound_page()),
    )
    .service(resource("/api/confirm", "POST").route(web::post().to(api_confirm)))
    .service(
        guarded("/api/sessions/revoke-others", "POST")
            .route(web::post().to(api_revoke_others))
            .wrap(DeviceBound::new()),
    );
}

/// A resource at `path` that answers the methods it has no route for with 405 and
/// `Allow: allow`, as axum does (`GET,HEAD`, `POST`...).
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, allow))
            .finish()
    }))
}

/// Counts requests by route class and store failures, and adds the security headers.
async fn observe(
    app: Data<AppState>,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let method =
        http::Method::from_bytes(req.method().as_str().as_bytes()).unwrap_or(http::Method::GET);
    let mut res = next.call(req).await?;
    let matched = res.request().match_pattern();
    app.metrics()
        .request(RouteClass::of(&method, matched.as_deref()));
    if res.response().extensions().get::<StoreFailure>().is_some() {
        app.metrics().store_error();
    }
    let headers = res.headers_mut();
    for (name, value) in hosts::SECURITY_HEADERS {
        let Ok(name) = HeaderName::from_bytes(name.as_str().as_bytes()) else {
            continue;
        };
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    Ok(res)
}

/// 400 for a missing, repeated or contradicted `Host`, 421 for one the demo does not answer
/// for ([`hosts::check_host`]).
async fn check_host(
    allowed: Arc<AllowedHosts>,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let head = hosts::RequestHead {
        path: req.path(),
        http_1_1: req.version() == actix_web::http::Version::HTTP_11,
        authority: req.uri().authority().map(|a| a.as_str()),
    };
    let lines = req
        .headers()
        .get_all(header::HOST)
        .map(HeaderValue::as_bytes);
    match hosts::check_host(&allowed, head, lines) {
        Some(refused) => Ok(req.into_response(respond(refused)).map_into_right_body()),
        None => Ok(next.call(req).await?.map_into_left_body()),
    }
}

/// A framework-free reply as an actix-web response (the [`StoreFailure`] mark kept).
pub(crate) fn respond(reply: Reply) -> HttpResponse {
    let (parts, body) = reply.into_parts();
    let status =
        StatusCode::from_u16(parts.status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = HttpResponse::with_body(status, body);
    for (name, value) in &parts.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            res.headers_mut().append(name, value);
        }
    }
    if parts.extensions.get::<StoreFailure>().is_some() {
        res.extensions_mut().insert(StoreFailure);
    }
    res.map_into_boxed_body()
}

/// The page's reply, or its failure's.
fn send(handled: Handled) -> HttpResponse {
    respond(handled.unwrap_or_else(cloakroom_demo_app::AppError::into_reply))
}

/// The request's session (put there by the session middleware).
fn session(req: &HttpRequest) -> Result<Session, HttpResponse> {
    req.extensions().get::<Session>().cloned().ok_or_else(|| {
        tracing::error!("no session middleware on this route");
        HttpResponse::InternalServerError()
            .content_type("text/plain; charset=utf-8")
            .body("server misconfigured: no session middleware\n")
    })
}

/// The request's CSRF token source (put there by the CSRF middleware).
fn csrf(req: &HttpRequest) -> Result<CsrfToken, HttpResponse> {
    req.extensions().get::<CsrfToken>().cloned().ok_or_else(|| {
        tracing::error!("no CSRF middleware on this route");
        HttpResponse::InternalServerError()
            .content_type("text/plain; charset=utf-8")
            .body("server misconfigured: no CSRF layer\n")
    })
}

/// What a page gets: the session and the CSRF token source of the request.
fn visit(req: &HttpRequest) -> Result<Visit, HttpResponse> {
    Ok(Visit::new(session(req)?, TokenSource::clone(&*csrf(req)?)))
}

fn content_type(req: &HttpRequest) -> Option<&[u8]> {
    req.headers()
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
}

/// A form body, read as axum's `Form` reads it.
fn form<T: serde::de::DeserializeOwned>(req: &HttpRequest, body: &Bytes) -> Result<T, BadInput> {
    input::form(content_type(req), body)
}

/// Answers `$e`'s `Err` at once.
macro_rules! or_answer {
    ($e:expr) => {
        match $e {
            Ok(value) => value,
            Err(res) => return res,
        }
    };
}

async fn home(app: Data<AppState>, req: HttpRequest) -> HttpResponse {
    let visit = or_answer!(visit(&req));
    send(pages::home(&app, &visit).await)
}

async fn login_form(app: Data<AppState>, req: HttpRequest) -> HttpResponse {
    let visit = or_answer!(visit(&req));
    let hint = input::query::<LoginHint>(req.query_string()).and_then(|q| q.hint);
    send(pages::login_form(&app, &visit, hint.as_deref()).await)
}

async fn register_form(app: Data<AppState>, req: HttpRequest) -> HttpResponse {
    let visit = or_answer!(visit(&req));
    send(pages::register_form(&app, &visit).await)
}

async fn register(app: Data<AppState>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let visit = or_answer!(visit(&req));
    send(pages::register(&app, &visit, form(&req, &body)).await)
}

async fn login(app: Data<AppState>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let visit = or_answer!(visit(&req));
    let lines = |name| req.headers().get_all(name).map(HeaderValue::as_bytes);
    let client: Option<IpAddr> = app.client_address(
        req.peer_addr().map(|addr| addr.ip()),
        lines(proxies::FORWARDED),
        lines(proxies::X_FORWARDED_FOR),
    );
    send(pages::login(&app, &visit, client, form(&req, &body)).await)
}

async fn logout(req: HttpRequest) -> HttpResponse {
    let session = or_answer!(session(&req));
    send(pages::logout(&session).await)
}

async fn add_note_form(app: Data<AppState>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let visit = or_answer!(visit(&req));
    send(pages::add_note_form(&app, &visit, form(&req, &body)).await)
}

async fn delete_note_form(app: Data<AppState>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let visit = or_answer!(visit(&req));
    send(pages::delete_note_form(&app, &visit, form(&req, &body)).await)
}

async fn clear_notes_form(app: Data<AppState>, req: HttpRequest) -> HttpResponse {
    let visit = or_answer!(visit(&req));
    send(pages::clear_notes_form(&app, &visit).await)
}

async fn sessions_page(app: Data<AppState>, req: HttpRequest) -> HttpResponse {
    let visit = or_answer!(visit(&req));
    send(pages::sessions_page(&app, &visit).await)
}

async fn revoke(app: Data<AppState>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let visit = or_answer!(visit(&req));
    send(pages::revoke(&app, &visit, form(&req, &body)).await)
}

async fn revoke_others(app: Data<AppState>, req: HttpRequest) -> HttpResponse {
    let session = or_answer!(session(&req));
    send(pages::revoke_others(&app, &session).await)
}

/// `GET /sessions/live`: the devices page's event stream (see `cloakroom_demo_app::live`).
async fn live(app: Data<AppState>, req: HttpRequest) -> HttpResponse {
    let session = or_answer!(session(&req));
    match live::live(&app, &session).await {
        Ok(Ok(ended)) => {
            let mut res = HttpResponse::Ok();
            for (name, value) in live::STREAM_HEADERS {
                res.insert_header((name, value));
            }
            let events =
                futures_util::StreamExt::map(live::events(ended), |frame| frame.map(Bytes::from));
            res.streaming(events)
        }
        Ok(Err(reply)) => respond(reply),
        Err(e) => send(Err(e)),
    }
}

/// The client's address ([`AppState::client_address`]).
fn client_of(app: &AppState, req: &HttpRequest) -> Option<IpAddr> {
    let lines = |name| req.headers().get_all(name).map(HeaderValue::as_bytes);
    app.client_address(
        req.peer_addr().map(|addr| addr.ip()),
        lines(proxies::FORWARDED),
        lines(proxies::X_FORWARDED_FOR),
    )
}

async fn confirm_form(app: Data<AppState>, req: HttpRequest) -> HttpResponse {
    let visit = or_answer!(visit(&req));
    let query = input::query::<ConfirmQuery>(req.query_string()).unwrap_or_default();
    send(pages::confirm_form(&app, &visit, query).await)
}

async fn confirm(app: Data<AppState>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let visit = or_answer!(visit(&req));
    let client = client_of(&app, &req);
    send(pages::confirm(&app, &visit, client, form(&req, &body)).await)
}

async fn password_form(app: Data<AppState>, req: HttpRequest) -> HttpResponse {
    let visit = or_answer!(visit(&req));
    send(pages::password_form(&app, &visit).await)
}

async fn change_password(app: Data<AppState>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let visit = or_answer!(visit(&req));
    send(pages::change_password(&app, &visit, form(&req, &body)).await)
}

async fn delete_form(app: Data<AppState>, req: HttpRequest) -> HttpResponse {
    let visit = or_answer!(visit(&req));
    send(pages::delete_form(&app, &visit).await)
}

async fn delete_account(app: Data<AppState>, req: HttpRequest) -> HttpResponse {
    let session = or_answer!(session(&req));
    send(pages::delete_account(&app, &session).await)
}

async fn api_confirm(app: Data<AppState>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let session = or_answer!(session(&req));
    let client = client_of(&app, &req);
    let payload = input::json(content_type(&req), &body);
    send(pages::api_confirm(&app, &session, client, payload).await)
}

async fn api_revoke_others(app: Data<AppState>, req: HttpRequest) -> HttpResponse {
    let session = or_answer!(session(&req));
    send(pages::api_revoke_others(&app, &session).await)
}

async fn api_login(app: Data<AppState>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let session = or_answer!(session(&req));
    let lines = |name| req.headers().get_all(name).map(HeaderValue::as_bytes);
    let client: Option<IpAddr> = app.client_address(
        req.peer_addr().map(|addr| addr.ip()),
        lines(proxies::FORWARDED),
        lines(proxies::X_FORWARDED_FOR),
    );
    let payload = input::json(content_type(&req), &body);
    send(pages::api_login(&app, &session, client, payload).await)
}

async fn api_logout(req: HttpRequest) -> HttpResponse {
    let session = or_answer!(session(&req));
    send(pages::api_logout(&session).await)
}

async fn api_me(app: Data<AppState>, req: HttpRequest) -> HttpResponse {
    let session = or_answer!(session(&req));
    send(pages::api_me(&app, &session).await)
}

async fn api_csrf(req: HttpRequest) -> HttpResponse {
    let csrf = or_answer!(csrf(&req));
    send(pages::api_csrf(&csrf).await)
}

async fn api_add_note(app: Data<AppState>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let session = or_answer!(session(&req));
    let payload = input::json(content_type(&req), &body);
    send(pages::api_add_note(&app, &session, payload).await)
}

async fn healthz(app: Data<AppState>) -> HttpResponse {
    respond(pages::healthz(&app).await)
}

/// The single-page client. This answer hands the `XSRF-TOKEN` cookie out; the CSRF
/// middleware keeps it current from then on.
async fn app_page(req: HttpRequest) -> HttpResponse {
    or_answer!(csrf(&req)).ensure_spa_cookie();
    respond(pages::app_page())
}

async fn metrics(app: Data<AppState>) -> HttpResponse {
    respond(pages::metrics(&app))
}

async fn not_found(app: Data<AppState>) -> HttpResponse {
    send(pages::not_found(&app))
}
