//! The Redis near-cache (`?cache=N`) as two demo processes see it, over real HTTP against
//! one real `redis-server` of the test's own: repeated reads on A cost no Redis command; a
//! note written on B shows on A; a logout on B makes A refuse the old cookie; a restart of
//! Redis (which comes back empty) never lets A show the old logged-in session. The windows
//! are printed (run with `--nocapture`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloakroom_testkit::demo_client::{USER_AGENT, me, post};
use cloakroom_testkit::process::ServerProcess;
use cloakroom_testkit::redis_server::RedisServer;
use reqwest::StatusCode;
use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::COOKIE;
use reqwest::redirect::Policy;

const KEYS: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The demo's session cookie over plain HTTP.
const SESSION_COOKIE: &str = "session";

/// How long a change on B may take to show on A before the test fails: generous for a
/// loaded 2-core machine; the guarantee is `cache_max_stale_ms` (1 s by default), the
/// store-level test measures well under a millisecond.
const BOUND: Duration = Duration::from_secs(5);

/// Commands a cached read may leave in `INFO commandstats`: the near-cache's heartbeat
/// (`PING`, the dataset marker's `SET … GET`) and the statistics commands the testkit sends
/// itself (subcommands are counted as `config|resetstat`).
const ALLOWED: &[&str] = &["ping", "set", "info", "config", "slowlog"];

/// What the near-cache's heartbeat sends.
const HEARTBEAT: &[&str] = &["ping", "set"];

async fn start_demo(dir: &std::path::Path, redis: &RedisServer) -> ServerProcess {
    let store = format!(
        "redis://127.0.0.1:{}/0?timeout_ms=500&cache=1000",
        redis.port()
    );
    let users = format!("sqlite://{}", dir.join("users.db").display());
    ServerProcess::start(
        env!("CARGO_BIN_EXE_cloakroom-demo"),
        &["--store", &store, "--users", &users, "--keys", KEYS],
        dir,
    )
    .await
}

/// The demo client of `cloakroom_testkit::demo_client::client`, with a jar the test can read
/// (cookies are per host, not per port: one jar serves A and B).
fn client_with_jar() -> (reqwest::Client, Arc<Jar>) {
    let jar = Arc::new(Jar::default());
    let client = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(Policy::none())
        .user_agent(USER_AGENT)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a reqwest client");
    (client, jar)
}

/// The session cookie (`session=...`) the jar holds for `base`.
fn session_cookie(jar: &Jar, base: &str) -> String {
    session_cookie_or_none(jar, base).expect("a session cookie in the jar")
}

fn session_cookie_or_none(jar: &Jar, base: &str) -> Option<String> {
    let url = base.parse().expect("a URL");
    let header = jar.cookies(&url)?;
    header
        .to_str()
        .ok()?
        .split("; ")
        .find(|c| c.starts_with(&format!("{SESSION_COOKIE}=")))
        .map(str::to_owned)
}

/// `GET /api/me` with exactly `cookie` (a client without a jar: what an attacker holding an
/// old cookie sends).
async fn me_with(bare: &reqwest::Client, base: &str, cookie: &str) -> StatusCode {
    bare.get(format!("{base}/api/me"))
        .header(COOKIE, cookie)
        .send()
        .await
        .expect("GET /api/me")
        .status()
}

/// Redis, the two demos (A and B, both with `?cache=1000`) and the clients: the browser `c`
/// (its `jar` readable), and `bare`, which sends only the cookies it is given.
struct Setup {
    redis: Arc<RedisServer>,
    a: ServerProcess,
    b: ServerProcess,
    c: reqwest::Client,
    jar: Arc<Jar>,
    bare: reqwest::Client,
}

impl Setup {
    async fn start(dir: &std::path::Path) -> Setup {
        let redis = Arc::new(RedisServer::start());
        let a = start_demo(dir, &redis).await;
        let b = start_demo(dir, &redis).await;
        let (c, jar) = client_with_jar();
        let bare = reqwest::Client::builder()
            .redirect(Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a reqwest client");
        Setup {
            redis,
            a,
            b,
            c,
            jar,
            bare,
        }
    }

    /// Logs in (registers the first time) through A.
    async fn login(&self, path: &str) {
        let fields = [("name", "nia"), ("password", "near-cached")];
        let res = post(&self.c, &self.a.base(), path, &fields).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{path}");
    }

    /// 1. Repeated reads on A cost no Redis command.
    async fn reads_on_a_cost_no_command(&self) {
        let base_a = self.a.base();
        for _ in 0..3 {
            assert_eq!(me(&self.c, &base_a).await.0, StatusCode::OK);
        }
        self.redis.reset_stats();
        for _ in 0..50 {
            let (status, body) = me(&self.c, &base_a).await;
            assert_eq!(
                (status, body["name"].as_str()),
                (StatusCode::OK, Some("nia"))
            );
        }
        let stats = self.redis.commandstats();
        let sent = self.redis.commands_sent();
        assert!(
            stats
                .keys()
                .all(|name| ALLOWED.iter().any(|ok| name.split('|').next() == Some(*ok))),
            "50 cached reads on A sent Redis commands (only heartbeat `ping`s and the test's own \
             info/config/slowlog are allowed): {stats:?}, in order: {sent:?}"
        );
        assert!(
            sent.iter().all(|name| HEARTBEAT.contains(&name.as_str())),
            "50 cached reads on A sent {sent:?} (only the heartbeat's commands are allowed)"
        );
        // A's /metrics shows the near-cache's figures.
        let metrics = self
            .bare
            .get(format!("{base_a}/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        let hits: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("cloakroom_redis_near_cache_hits_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no near-cache hits in /metrics:\n{metrics}"));
        assert!(hits >= 50, "{metrics}");
    }

    /// 2. A note written on B shows on A, which had the record cached.
    async fn note_on_b_shows_on_a(&self) {
        let (base_a, base_b) = (self.a.base(), self.b.base());
        assert_eq!(
            me(&self.c, &base_b).await.1["name"],
            "nia",
            "B serves A's session"
        );
        self.redis.reset_stats();
        assert_eq!(me(&self.c, &base_a).await.1["notes"], serde_json::json!([]));
        assert_served_from_cache(&self.redis, "A's read before B's note");
        let res = post(&self.c, &base_b, "/notes", &[("text", "written on B")]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let written = Instant::now();
        let mut polls = 0;
        loop {
            polls += 1;
            let (status, body) = me(&self.c, &base_a).await;
            assert_eq!(status, StatusCode::OK);
            if body["notes"] == serde_json::json!(["written on B"]) {
                break;
            }
            assert!(
                written.elapsed() < BOUND,
                "A still shows {body} {BOUND:?} after B wrote a note"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let window = written.elapsed();
        eprintln!(
            "near-cache: B's note visible on A {:.3} ms after B's reply ({polls} A request(s))",
            ms(window)
        );
    }

    /// 3. Logout on B: A refuses the old cookie, which it had cached.
    async fn logout_on_b_ends_the_session_on_a(&self) {
        let (base_a, base_b) = (self.a.base(), self.b.base());
        // Keep the old cookie: B's reply changes the jar's.
        let old = session_cookie(&self.jar, &base_a);
        assert_eq!(me_with(&self.bare, &base_a, &old).await, StatusCode::OK);
        self.redis.reset_stats();
        assert_eq!(me_with(&self.bare, &base_a, &old).await, StatusCode::OK);
        assert_served_from_cache(&self.redis, "A's read before B's logout");
        let res = post(&self.c, &base_b, "/logout", &[]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let logged_out = Instant::now();
        assert_ne!(
            session_cookie_or_none(&self.jar, &base_a).as_deref(),
            Some(old.as_str()),
            "the logout changed or cleared the jar's cookie"
        );
        let mut polls = 0;
        loop {
            polls += 1;
            let status = me_with(&self.bare, &base_a, &old).await;
            if status == StatusCode::UNAUTHORIZED {
                break;
            }
            assert_eq!(status, StatusCode::OK, "A answered {status}");
            assert!(
                logged_out.elapsed() < BOUND,
                "A still accepts the cookie {BOUND:?} after a logout on B"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let window = logged_out.elapsed();
        eprintln!(
            "near-cache: A refused the logged-out cookie {:.3} ms after B's logout reply \
             ({polls} A request(s))",
            ms(window)
        );
        // Refused for good, and on B.
        for _ in 0..5 {
            let status = me_with(&self.bare, &base_a, &old).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        let status = me_with(&self.bare, &base_b, &old).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    /// 4. Redis restarts empty: A's cache is dropped, the old session never shows again
    ///    (every answer is 503 or 401 until it settles on 401).
    async fn restart_drops_the_cache_on_a(&self) {
        let base_a = self.a.base();
        self.login("/login").await;
        let cookie = session_cookie(&self.jar, &base_a);
        for _ in 0..3 {
            assert_eq!(me_with(&self.bare, &base_a, &cookie).await, StatusCode::OK);
        }
        self.redis.reset_stats();
        assert_eq!(me_with(&self.bare, &base_a, &cookie).await, StatusCode::OK);
        assert_served_from_cache(&self.redis, "A's read before the restart");
        let redis = self.redis.clone();
        tokio::task::spawn_blocking(move || redis.restart())
            .await
            .expect("restart Redis");
        let restarted = Instant::now();
        let mut seen = Vec::new();
        loop {
            let status = me_with(&self.bare, &base_a, &cookie).await;
            if seen.last() != Some(&status) {
                seen.push(status);
            }
            assert!(
                status == StatusCode::UNAUTHORIZED || status == StatusCode::SERVICE_UNAVAILABLE,
                "A answered {status} for the old session after Redis restarted empty \
                 (statuses so far: {seen:?})"
            );
            if status == StatusCode::UNAUTHORIZED {
                break;
            }
            assert!(
                restarted.elapsed() < Duration::from_secs(10),
                "A did not recover from the restart: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eprintln!(
            "near-cache: after the Redis restart A answered {seen:?}, settled in {:.3} ms",
            ms(restarted.elapsed())
        );
        // Still refused, and a fresh login works on both.
        let status = me_with(&self.bare, &base_a, &cookie).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        self.login("/login").await;
        assert_eq!(me(&self.c, &self.b.base()).await.1["name"], "nia");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_demos_with_the_near_cache_read_locally_and_see_each_others_changes() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::start(dir.path()).await;
    setup.login("/register").await;
    setup.reads_on_a_cost_no_command().await;
    setup.note_on_b_shows_on_a().await;
    setup.logout_on_b_ends_the_session_on_a().await;
    setup.restart_drops_the_cache_on_a().await;
    for demo in [&setup.a, &setup.b] {
        assert!(!demo.log_text().contains("panicked"), "{}", demo.log_text());
    }
}

/// Asserts that the reads since [`RedisServer::reset_stats`] were answered from A's
/// near-cache (no Redis command but the heartbeat's), so what follows checks that the cached
/// copy is dropped, not merely that Redis has the change.
fn assert_served_from_cache(redis: &RedisServer, what: &str) {
    let sent = redis.commands_sent();
    assert!(
        sent.iter().all(|name| HEARTBEAT.contains(&name.as_str())),
        "{what} was not served from the near-cache: sent {sent:?} (the heartbeat's allowed)"
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
