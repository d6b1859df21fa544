//! The actix-web servers of `cloakroom-bench serve CASE`: plain actix-web, cloakroom-actix on
//! memory and Redis, actix-session 0.11 on Redis and in a cookie. The same routes and
//! handler semantics as the axum servers in [`serve`](crate::serve), on `HttpServer` with ONE
//! worker (`workers(1)`): the worker thread does the HTTP work; actix's system thread
//! (accepting connections) is idle under keep-alive load. CPU is read over the whole process,
//! as for the axum servers.
//!
//! The Redis connections are opened on the worker thread, at the first request (the warm-up),
//! so that their I/O tasks run on the worker's runtime next to the handlers, as the axum
//! servers' run on their one thread; opened on the system thread instead, every Redis reply
//! would cross threads.

use std::io::Write as _;
use std::sync::Arc;

use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use async_trait::async_trait;
use cloakroom_core::session::{SessionKey, Timestamp};
use cloakroom_core::store::{
    self as cr, Applied, Created, Cursor, Page, Patch, Record, SessionInfo, SessionStore,
};
use cloakroom_core::{Key, KeyRing, MemoryStore};
use cloakroom_redis::RedisStore;
use tokio::sync::OnceCell;

use crate::cases::{LARGE_KEYS, Server};
use crate::counting::{Counters, CountingActixStore, CountingStore};
use crate::serve::{ServeOptions, large_value, next_value, workloads};

/// Runs an actix server for `case` until the parent process exits.
pub(crate) fn serve(case: Server, options: &ServeOptions) -> anyhow::Result<()> {
    crate::serve::watch_parent();
    let counters = Arc::new(Counters::default());
    let redis_url = || options.redis.clone().context("--redis URL is needed");
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    // The Cloakroom middleware is built once (its engine shared), like an application does,
    // exactly as the axum servers build their `SessionLayer` (`serve::settings`).
    let cloakroom = |store: Arc<dyn SessionStore>| -> anyhow::Result<Case> {
        let store: Arc<dyn SessionStore> = Arc::new(CountingStore::new(store, counters.clone()));
        let keys = KeyRing::single(Key::from_bytes(&[7; 32]).context("a 32-byte key")?);
        Ok(Case::Cloakroom(Box::new(
            cloakroom_actix::SessionMiddleware::new(crate::serve::settings(store, keys).build()),
        )))
    };
    let make = match case {
        Server::ActixPlain => Case::Plain,
        Server::CloakroomActixMemory => cloakroom(Arc::new(MemoryStore::new()))?,
        Server::CloakroomActixRedis => cloakroom(Arc::new(LazyRedis::new(redis_url()?)))?,
        Server::CloakroomActixRedisCache => cloakroom(Arc::new(LazyRedis::new(
            crate::serve::with_near_cache(&redis_url()?),
        )))?,
        Server::ActixSessionRedis => Case::ActixSessionRedis(redis_url()?),
        Server::ActixSessionCookie => Case::ActixSessionCookie,
        other => anyhow::bail!("{other} is not an actix server"),
    };
    let actix_key = actix_web::cookie::Key::from(&[7; 64]);
    let server = HttpServer::new(move || {
        let stats = counters.clone();
        let app = App::new()
            .app_data(web::Data::from(stats))
            .route("/__bench/stats", web::get().to(stats_route))
            .route("/__bench/detail/on", web::get().to(detail_on))
            .route("/__bench/detail/off", web::get().to(detail_off));
        match &make {
            Case::Plain => app.service(plain::routes()),
            Case::Cloakroom(middleware) => {
                app.service(cloakroom_app::routes().wrap((**middleware).clone()))
            }
            Case::ActixSessionRedis(url) => {
                let store = CountingActixStore::new(LazyActixRedis::new(url), counters.clone());
                let middleware = actix_session::SessionMiddleware::new(store, actix_key.clone());
                app.service(actix_session_app::routes().wrap(middleware))
            }
            Case::ActixSessionCookie => {
                let store = CountingActixStore::new(
                    actix_session::storage::CookieSessionStore::default(),
                    counters.clone(),
                );
                let middleware = actix_session::SessionMiddleware::new(store, actix_key.clone());
                app.service(actix_session_app::routes().wrap(middleware))
            }
        }
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "port={port}")?;
    out.flush()?;
    drop(out);
    actix_web::rt::System::new().block_on(server.run())?;
    Ok(())
}

/// What the worker's app factory builds.
#[derive(Clone)]
enum Case {
    Plain,
    Cloakroom(Box<cloakroom_actix::SessionMiddleware>),
    /// actix-session on Redis at this URL.
    ActixSessionRedis(String),
    ActixSessionCookie,
}

async fn stats_route(c: web::Data<Counters>) -> String {
    c.render()
}

async fn detail_on(c: web::Data<Counters>) -> &'static str {
    c.set_detail(true);
    "on"
}

async fn detail_off(c: web::Data<Counters>) -> &'static str {
    c.set_detail(false);
    "off"
}

/// The routes every server answers (see [`Workload`](crate::cases::Workload)), given its
/// handlers; `/large` is served by the `write` handler. A scope matching every path, so the
/// session middleware wraps these routes and not the `/__bench` ones registered before it.
macro_rules! actix_routes {
    ($init:expr, $init_large:expr, $read:expr, $write:expr, $blind_write:expr, $new:expr) => {
        web::scope("")
            .route("/init", web::get().to($init))
            .route("/init-large", web::get().to($init_large))
            .route("/read", web::get().to($read))
            .route("/write", web::get().to($write))
            .route("/blind-write", web::get().to($blind_write))
            .route("/new", web::get().to($new))
            .route("/large", web::get().to($write))
    };
}

/// The ceiling: the same routes with no session middleware.
mod plain {
    use super::*;

    pub(super) fn routes() -> actix_web::Scope {
        async fn ok() -> &'static str {
            "0"
        }
        actix_routes!(ok, ok, ok, ok, ok, ok)
    }
}

/// cloakroom-actix: `SessionMiddleware` with default settings and the `Session` extractor;
/// the same handlers as the axum `cloakroom` server.
mod cloakroom_app {
    use super::*;
    use cloakroom_actix::{Error, Session};

    type Reply = Result<String, Error>;

    pub(super) fn routes() -> actix_web::Scope {
        actix_routes!(init, init_large, read, write, blind_write, new)
    }

    async fn init(s: Session) -> Reply {
        Ok(workloads::init(&s).await?)
    }

    async fn init_large(s: Session) -> Reply {
        Ok(workloads::init_large(&s).await?)
    }

    async fn read(s: Session) -> Reply {
        Ok(workloads::read(&s).await?)
    }

    async fn write(s: Session) -> Reply {
        Ok(workloads::write(&s).await?)
    }

    async fn blind_write(s: Session) -> Reply {
        Ok(workloads::blind_write(&s).await?)
    }

    async fn new(s: Session) -> Reply {
        Ok(workloads::new(&s).await?)
    }
}

/// actix-session 0.11: `SessionMiddleware` with default settings and its `Session`.
mod actix_session_app {
    use super::*;
    use actix_session::Session;

    type Reply = Result<String, actix_web::Error>;

    pub(super) fn routes() -> actix_web::Scope {
        actix_routes!(init, init_large, read, write, blind_write, new)
    }

    async fn init(s: Session) -> Reply {
        s.insert("counter", 0u64)?;
        Ok("0".into())
    }

    async fn init_large(s: Session) -> Reply {
        let value = large_value();
        for i in 0..LARGE_KEYS {
            s.insert(format!("blob{i:02}"), &value)?;
        }
        Ok("0".into())
    }

    async fn read(s: Session) -> Reply {
        let n: Option<u64> = s.get("counter")?;
        Ok(n.unwrap_or(0).to_string())
    }

    async fn write(s: Session) -> Reply {
        let n: u64 = s.get("counter")?.unwrap_or(0) + 1;
        s.insert("counter", n)?;
        Ok(n.to_string())
    }

    async fn blind_write(s: Session) -> Reply {
        s.insert("last", next_value())?;
        Ok("0".into())
    }

    async fn new(s: Session) -> Reply {
        s.insert("counter", 1u64)?;
        Ok("1".into())
    }
}

/// Cloakroom's `RedisStore` (the default: one multiplexed connection), opened at its first
/// use so that its connection runs on the worker thread (see the module docs).
struct LazyRedis {
    url: String,
    store: OnceCell<RedisStore>,
}

impl LazyRedis {
    fn new(url: String) -> Self {
        LazyRedis {
            url,
            store: OnceCell::new(),
        }
    }

    async fn get(&self) -> cr::Result<&RedisStore> {
        self.store
            .get_or_try_init(|| RedisStore::open(&self.url))
            .await
    }
}

impl std::fmt::Debug for LazyRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyRedis").finish_non_exhaustive()
    }
}

#[async_trait]
impl SessionStore for LazyRedis {
    async fn load(&self, key: &SessionKey) -> cr::Result<Option<Record>> {
        self.get().await?.load(key).await
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> cr::Result<Created> {
        self.get().await?.create(key, record).await
    }

    async fn create_limited(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: &cr::Limit,
    ) -> cr::Result<cr::Admitted> {
        self.get().await?.create_limited(key, record, limit).await
    }

    async fn apply(&self, key: &SessionKey, patch: &Patch) -> cr::Result<Applied> {
        self.get().await?.apply(key, patch).await
    }

    async fn touch(
        &self,
        key: &SessionKey,
        last_seen: Timestamp,
        expires_at: Timestamp,
    ) -> cr::Result<Applied> {
        self.get().await?.touch(key, last_seen, expires_at).await
    }

    async fn delete(&self, key: &SessionKey) -> cr::Result<bool> {
        self.get().await?.delete(key).await
    }

    async fn sessions_of(&self, user: &str) -> cr::Result<Vec<SessionInfo>> {
        self.get().await?.sessions_of(user).await
    }

    async fn delete_user(&self, user: &str, except: Option<&SessionKey>) -> cr::Result<u64> {
        self.get().await?.delete_user(user, except).await
    }

    async fn scan(&self, cursor: Cursor, limit: usize) -> cr::Result<Page> {
        self.get().await?.scan(cursor, limit).await
    }

    async fn purge_expired(&self) -> cr::Result<u64> {
        self.get().await?.purge_expired().await
    }

    async fn put_challenge(
        &self,
        challenge: &str,
        session: &SessionKey,
        expires_at: Timestamp,
    ) -> cr::Result<Created> {
        self.get()
            .await?
            .put_challenge(challenge, session, expires_at)
            .await
    }

    async fn take_challenge(&self, challenge: &str) -> cr::Result<Option<SessionKey>> {
        self.get().await?.take_challenge(challenge).await
    }

    async fn ping(&self) -> cr::Result<()> {
        self.get().await?.ping().await
    }
}

/// actix-session's `RedisSessionStore` (one redis-rs `ConnectionManager`, its default),
/// opened at its first use on the worker thread (see the module docs).
struct LazyActixRedis {
    url: String,
    store: OnceCell<actix_session::storage::RedisSessionStore>,
}

impl LazyActixRedis {
    fn new(url: &str) -> Self {
        LazyActixRedis {
            url: url.to_owned(),
            store: OnceCell::new(),
        }
    }

    async fn get(&self) -> anyhow::Result<&actix_session::storage::RedisSessionStore> {
        self.store
            .get_or_try_init(|| actix_session::storage::RedisSessionStore::new(self.url.clone()))
            .await
    }
}

impl std::fmt::Debug for LazyActixRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyActixRedis").finish_non_exhaustive()
    }
}

type ActixState = std::collections::HashMap<String, String>;
type Ttl = actix_web::cookie::time::Duration;

impl actix_session::storage::SessionStore for LazyActixRedis {
    async fn load(
        &self,
        key: &actix_session::storage::SessionKey,
    ) -> Result<Option<ActixState>, actix_session::storage::LoadError> {
        let store = self
            .get()
            .await
            .map_err(actix_session::storage::LoadError::Other)?;
        store.load(key).await
    }

    async fn save(
        &self,
        state: ActixState,
        ttl: &Ttl,
    ) -> Result<actix_session::storage::SessionKey, actix_session::storage::SaveError> {
        let store = self
            .get()
            .await
            .map_err(actix_session::storage::SaveError::Other)?;
        store.save(state, ttl).await
    }

    async fn update(
        &self,
        key: actix_session::storage::SessionKey,
        state: ActixState,
        ttl: &Ttl,
    ) -> Result<actix_session::storage::SessionKey, actix_session::storage::UpdateError> {
        let store = self
            .get()
            .await
            .map_err(actix_session::storage::UpdateError::Other)?;
        store.update(key, state, ttl).await
    }

    async fn update_ttl(
        &self,
        key: &actix_session::storage::SessionKey,
        ttl: &Ttl,
    ) -> anyhow::Result<()> {
        self.get().await?.update_ttl(key, ttl).await
    }

    async fn delete(&self, key: &actix_session::storage::SessionKey) -> anyhow::Result<()> {
        self.get().await?.delete(key).await
    }
}
