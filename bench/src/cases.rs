//! What is measured: the servers (a session implementation on a store) and the workloads.

use std::fmt;
use std::str::FromStr;

/// One server under test: a session implementation on a store, or no sessions at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Server {
    /// axum with no session layer: the ceiling every ratio is taken against.
    Plain,
    /// Cloakroom's `SessionLayer` on its `MemoryStore`.
    CloakroomMemory,
    /// Cloakroom on `SqliteStore`, the database file on disk in a temporary directory.
    CloakroomSqlite,
    /// Cloakroom on `RedisStore` (one multiplexed connection, the default).
    CloakroomRedis,
    /// Cloakroom on `RedisStore` with the near-cache on (`?cache=100000`).
    CloakroomRedisCache,
    /// Cloakroom on Redis with the durable event log on (`events=100000`).
    CloakroomRedisLog,
    /// Cloakroom on `PostgresStore` (opened by `store::open` from a `postgres://` URL, its
    /// defaults: a pool of 8 connections), on a PostgreSQL the harness starts.
    CloakroomPostgres,
    /// tower-sessions 0.14 on its `MemoryStore`.
    TowerSessionsMemory,
    /// tower-sessions 0.14 on tower-sessions-redis-store 0.16 (fred).
    TowerSessionsRedis,
    /// tower-sessions 0.14 on tower-sessions-sqlx-store 0.15's `SqliteStore` (sqlx 0.8), a
    /// file on disk like `cloakroom-sqlite`'s: a binary of its own (`bench/peer-sqlx`).
    TowerSessionsSqlite,
    /// tower-sessions 0.14 on tower-sessions-sqlx-store 0.15's `PostgresStore` (a pool of 8,
    /// as `cloakroom-postgres`), on the same PostgreSQL: the same binary as the SQLite peer.
    TowerSessionsPostgres,
    /// The original system: Tornado 6.6 + pycket 0.3 on the same Redis (Python).
    TornadoPycket,
    /// actix-web with no session middleware: the ceiling of the actix servers.
    ActixPlain,
    /// cloakroom-actix's `SessionMiddleware` on Cloakroom's `MemoryStore`.
    CloakroomActixMemory,
    /// cloakroom-actix's `SessionMiddleware` on `RedisStore`.
    CloakroomActixRedis,
    /// cloakroom-actix's `SessionMiddleware` on `RedisStore` with the near-cache on.
    CloakroomActixRedisCache,
    /// actix-session 0.11 on its `RedisSessionStore` (redis-rs `ConnectionManager`).
    ActixSessionRedis,
    /// actix-session 0.11 on its `CookieSessionStore` (the whole state in the cookie): a
    /// reference, not a server-side store.
    ActixSessionCookie,
}

impl Server {
    /// Every server, in report order.
    pub(crate) const ALL: [Server; 18] = [
        Server::Plain,
        Server::CloakroomMemory,
        Server::CloakroomSqlite,
        Server::CloakroomRedis,
        Server::CloakroomRedisCache,
        Server::CloakroomRedisLog,
        Server::CloakroomPostgres,
        Server::TowerSessionsMemory,
        Server::TowerSessionsRedis,
        Server::TowerSessionsSqlite,
        Server::TowerSessionsPostgres,
        Server::TornadoPycket,
        Server::ActixPlain,
        Server::CloakroomActixMemory,
        Server::CloakroomActixRedis,
        Server::CloakroomActixRedisCache,
        Server::ActixSessionRedis,
        Server::ActixSessionCookie,
    ];

    /// The name used on the command line, in tables and in `store=` fields.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Server::Plain => "plain",
            Server::CloakroomMemory => "cloakroom-memory",
            Server::CloakroomSqlite => "cloakroom-sqlite",
            Server::CloakroomRedis => "cloakroom-redis",
            Server::CloakroomRedisCache => "cloakroom-redis-cache",
            Server::CloakroomRedisLog => "cloakroom-redis-log",
            Server::CloakroomPostgres => "cloakroom-postgres",
            Server::TowerSessionsMemory => "tower-sessions-memory",
            Server::TowerSessionsRedis => "tower-sessions-redis",
            Server::TowerSessionsSqlite => "tower-sessions-sqlite",
            Server::TowerSessionsPostgres => "tower-sessions-postgres",
            Server::TornadoPycket => "tornado-pycket",
            Server::ActixPlain => "actix-plain",
            Server::CloakroomActixMemory => "cloakroom-actix-memory",
            Server::CloakroomActixRedis => "cloakroom-actix-redis",
            Server::CloakroomActixRedisCache => "cloakroom-actix-redis-cache",
            Server::ActixSessionRedis => "actix-session-redis",
            Server::ActixSessionCookie => "actix-session-cookie",
        }
    }

    /// Whether the server keeps its sessions in Redis (Redis statistics apply).
    pub(crate) fn uses_redis(self) -> bool {
        matches!(
            self,
            Server::CloakroomRedis
                | Server::CloakroomRedisCache
                | Server::CloakroomRedisLog
                | Server::TowerSessionsRedis
                | Server::TornadoPycket
                | Server::CloakroomActixRedis
                | Server::CloakroomActixRedisCache
                | Server::ActixSessionRedis
        )
    }

    /// Whether the server keeps its sessions in the PostgreSQL the harness starts.
    pub(crate) fn uses_postgres(self) -> bool {
        matches!(
            self,
            Server::CloakroomPostgres | Server::TowerSessionsPostgres
        )
    }

    /// Whether the server is the sqlx peers' binary (`bench/peer-sqlx`).
    pub(crate) fn is_sqlx_peer(self) -> bool {
        matches!(
            self,
            Server::TowerSessionsSqlite | Server::TowerSessionsPostgres
        )
    }

    /// Whether the server runs on actix-web (`HttpServer`, one worker) rather than axum.
    pub(crate) fn is_actix(self) -> bool {
        matches!(
            self,
            Server::ActixPlain
                | Server::CloakroomActixMemory
                | Server::CloakroomActixRedis
                | Server::CloakroomActixRedisCache
                | Server::ActixSessionRedis
                | Server::ActixSessionCookie
        )
    }

    /// The server without sessions that this one's `x plain` ratio and `cpu-plain` are taken
    /// against, in the same round: `plain` for the axum servers (and Tornado), `actix-plain`
    /// for the actix ones. None for the two baselines themselves.
    pub(crate) fn baseline(self) -> Option<Server> {
        match self {
            Server::Plain | Server::ActixPlain => None,
            s if s.is_actix() => Some(Server::ActixPlain),
            _ => Some(Server::Plain),
        }
    }

    /// Whether the server can run `workload`: not `large` on actix-session's cookie store,
    /// which refuses a state over 4 KB (the 10 KB session cannot be kept in a cookie);
    /// `read-header` only on Cloakroom's servers (the peers have no header transport).
    pub(crate) fn supports(self, workload: Workload) -> bool {
        match workload {
            Workload::Large => self != Server::ActixSessionCookie,
            Workload::ReadHeader => self.name().starts_with("cloakroom"),
            _ => true,
        }
    }

    /// Whether the server is this crate's binary (`serve CASE`), as opposed to Python or the
    /// sqlx peers' own binary.
    pub(crate) fn is_rust(self) -> bool {
        self != Server::TornadoPycket && !self.is_sqlx_peer()
    }

    /// The peer a Cloakroom server is compared with (`ratio_peer`): tower-sessions on the same
    /// kind of store for axum, actix-session on Redis for actix. None for the peers
    /// themselves, the baselines and cloakroom-actix on memory (actix-session has no
    /// in-memory store).
    pub(crate) fn peer(self) -> Option<Server> {
        match self {
            Server::CloakroomMemory => Some(Server::TowerSessionsMemory),
            Server::CloakroomSqlite => Some(Server::TowerSessionsSqlite),
            Server::CloakroomPostgres => Some(Server::TowerSessionsPostgres),
            Server::CloakroomRedis | Server::CloakroomRedisCache | Server::CloakroomRedisLog => {
                Some(Server::TowerSessionsRedis)
            }
            Server::CloakroomActixRedis | Server::CloakroomActixRedisCache => {
                Some(Server::ActixSessionRedis)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Server {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Server::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| anyhow::anyhow!("unknown server case {s:?}"))
    }
}

impl FromStr for Workload {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Workload::ALL
            .into_iter()
            .find(|w| w.name() == s)
            .ok_or_else(|| anyhow::anyhow!("unknown workload {s:?}"))
    }
}

/// What each request does with its session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Workload {
    /// Read one key of an existing session; no change.
    Read,
    /// `read` with the ticket sent as `Authorization: Bearer <ticket>` instead of the cookie
    /// (Cloakroom's header transport; its servers run with `Transport::CookieAndHeader`).
    ReadHeader,
    /// Read a counter and write it back incremented.
    Write,
    /// Set a key without reading anything first.
    BlindWrite,
    /// No cookie: every request starts (and writes) a new session.
    New,
    /// A session of 20 keys holding 10 KB; one small key is read and changed per request.
    Large,
}

impl Workload {
    /// Every workload, in report order.
    pub(crate) const ALL: [Workload; 6] = [
        Workload::Read,
        Workload::ReadHeader,
        Workload::Write,
        Workload::BlindWrite,
        Workload::New,
        Workload::Large,
    ];

    /// The name in tables and `case=` fields; also the request path (`/read`, ...).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Read => "read",
            Workload::ReadHeader => "read-header",
            Workload::Write => "write",
            Workload::BlindWrite => "blind-write",
            Workload::New => "new",
            Workload::Large => "large",
        }
    }

    /// The request path.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Workload::Read | Workload::ReadHeader => "/read",
            Workload::Write => "/write",
            Workload::BlindWrite => "/blind-write",
            Workload::New => "/new",
            Workload::Large => "/large",
        }
    }

    /// Requests each client sends once before measuring, to create its session (its cookie is
    /// kept). `/init` creates the session with one key; `/init-large` then adds 19 keys of
    /// 512 bytes (two requests, because pycket loses all but the last write of a request that
    /// starts a session).
    pub(crate) fn warm_up(self) -> &'static [&'static str] {
        match self {
            Workload::Read | Workload::ReadHeader | Workload::Write | Workload::BlindWrite => {
                &["/init"]
            }
            Workload::New => &[],
            Workload::Large => &["/init", "/init-large"],
        }
    }

    /// Whether clients keep the cookies the server sets.
    pub(crate) fn keeps_cookies(self) -> bool {
        self != Workload::New
    }

    /// Whether clients send their session's ticket in `Authorization: Bearer` instead of the
    /// `Cookie` header (the ticket is the value of the cookie the warm-up set).
    pub(crate) fn by_header(self) -> bool {
        self == Workload::ReadHeader
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Keys `/init-large` adds, and the bytes of each value (a JSON string of this many `x`s plus
/// its quotes). With `counter` that makes 20 keys and about 10 KB.
pub(crate) const LARGE_KEYS: usize = 19;
/// See [`LARGE_KEYS`].
pub(crate) const LARGE_VALUE_LEN: usize = 512;
