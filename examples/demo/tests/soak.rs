//! Faults under load: many clients, each with its own session, add notes through the demo
//! while the harness kills and restarts redis-server (Redis store) or the demo itself
//! (SQLite store, SIGKILL). Afterwards every note that got a 2xx answer must be there, no
//! session may come back after logout, the only failures allowed are 503s and connection
//! errors, and (Redis run, where the demo never restarts) its memory must be stable.
//!
//! Short by default (it runs in `scripts/test.sh`). The long run:
//!
//! ```sh
//! CLOAKROOM_SOAK=full cargo test --release -p cloakroom-demo --test soak -- --nocapture
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cloakroom_testkit::process::ServerProcess;
use cloakroom_testkit::redis_server::RedisServer;
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use tokio::sync::Mutex;

const KEYS: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct Plan {
    clients: usize,
    notes: usize,
    fault_every: Duration,
}

fn plan() -> Plan {
    match std::env::var("CLOAKROOM_SOAK").as_deref() {
        // Notes per client stay under the demo's 50-note cap, so every note must survive.
        Ok("full") => Plan {
            clients: 64,
            notes: 45,
            fault_every: Duration::from_millis(1500),
        },
        _ => Plan {
            clients: 8,
            notes: 12,
            fault_every: Duration::from_millis(400),
        },
    }
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    acknowledged: AtomicU64,
    unavailable: AtomicU64,
    connection_errors: AtomicU64,
    faults: AtomicU64,
    unexpected: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn report(&self, label: &str, lost: usize) -> String {
        format!(
            "soak {label}: requests={} faults_injected={} acknowledged_writes={} writes_lost={lost} \
             503s={} connection_errors={}",
            self.requests.load(Ordering::SeqCst),
            self.faults.load(Ordering::SeqCst),
            self.acknowledged.load(Ordering::SeqCst),
            self.unavailable.load(Ordering::SeqCst),
            self.connection_errors.load(Ordering::SeqCst),
        )
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The outcome of one request: `Ok(status)`, or `Err` for a connection error.
type Outcome = Result<(StatusCode, String), String>;

async fn token(c: &reqwest::Client, base: &str) -> Result<String, Outcome> {
    let res = c
        .get(format!("{base}/api/csrf"))
        .send()
        .await
        .map_err(|e| Err(e.to_string()))?;
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    if status != StatusCode::OK {
        return Err(Ok((status, body)));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| Err(e.to_string()))?;
    Ok(v["token"].as_str().unwrap_or_default().to_owned())
}

async fn post_note(c: &reqwest::Client, base: &str, text: &str) -> Outcome {
    let token = match token(c, base).await {
        Ok(t) => t,
        Err(outcome) => return outcome,
    };
    let res = c
        .post(format!("{base}/api/notes"))
        .header("X-XSRFToken", token)
        .json(&serde_json::json!({ "text": text }))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = res.status();
    Ok((status, res.text().await.unwrap_or_default()))
}

async fn post_form(
    c: &reqwest::Client,
    base: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> Outcome {
    let token = match token(c, base).await {
        Ok(t) => t,
        Err(outcome) => return outcome,
    };
    let mut fields = fields.to_vec();
    fields.push(("_xsrf", &token));
    let res = c
        .post(format!("{base}{path}"))
        .form(&fields)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = res.status();
    Ok((status, res.text().await.unwrap_or_default()))
}

/// Counts an outcome; records anything but 2xx/3xx, 503 and connection errors as unexpected.
fn count(tally: &Tally, what: &str, outcome: &Outcome) -> bool {
    tally.requests.fetch_add(1, Ordering::SeqCst);
    match outcome {
        Ok((s, _)) if s.is_success() || s.is_redirection() => true,
        Ok((StatusCode::SERVICE_UNAVAILABLE, _)) => {
            tally.unavailable.fetch_add(1, Ordering::SeqCst);
            false
        }
        Err(_) => {
            tally.connection_errors.fetch_add(1, Ordering::SeqCst);
            false
        }
        Ok((s, body)) => {
            tally
                .unexpected
                .lock()
                .unwrap()
                .push(format!("{what}: {s} {body:.200}"));
            false
        }
    }
}

/// Retries `f` until it succeeds (faults come and go), for at most 30 s.
async fn until_ok<F, Fut>(tally: &Tally, what: &str, mut f: F) -> (StatusCode, String)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let outcome = f().await;
        if count(tally, what, &outcome) {
            return outcome.unwrap();
        }
        assert!(Instant::now() < deadline, "{what}: no success in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One soak client: registers (or logs in, when a lost answer hid a registration), then adds
/// `notes` notes through faults; its cookie jar and the notes the demo acknowledged.
async fn run_client(
    label: &str,
    i: usize,
    base: &str,
    tally: &Tally,
    notes: usize,
) -> (reqwest::Client, Vec<String>) {
    let c = client();
    let name = format!("{label}-user{i}");
    let creds = [("name", name.as_str()), ("password", "soak-password")];
    // A registration whose answer was lost to a fault may have gone through: then the
    // name is taken (409), and logging in finishes the job.
    let registered = loop {
        let outcome = post_form(&c, base, "/register", &creds).await;
        if matches!(outcome, Ok((StatusCode::CONFLICT, _))) {
            tally.requests.fetch_add(1, Ordering::SeqCst);
            break false;
        }
        if count(tally, "register", &outcome) {
            break true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if !registered {
        until_ok(tally, "login", || post_form(&c, base, "/login", &creds)).await;
    }
    let mut mine = Vec::new();
    let mut n = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while mine.len() < notes && Instant::now() < deadline {
        if mine.len() == notes / 2 {
            // Halfway, wait for a fault during the writes (however fast the machine).
            while tally.faults.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        n += 1;
        let text = format!("{name} note {n}");
        let outcome = post_note(&c, base, &text).await;
        if count(tally, "add note", &outcome) {
            tally.acknowledged.fetch_add(1, Ordering::SeqCst);
            mine.push(text);
        } else if matches!(outcome, Ok((StatusCode::UNAUTHORIZED, _))) {
            panic!("{name} was logged out by a fault");
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    (c, mine)
}

/// Runs the clients against `base` while `fault` is injected every `plan.fault_every`.
async fn soak(
    label: &str,
    base: String,
    plan: &Plan,
    fault: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    + Send
    + Sync
    + 'static,
) -> (Arc<Tally>, usize) {
    let tally = Arc::new(Tally::default());
    let done = Arc::new(AtomicBool::new(false));
    let injector = {
        let (tally, done, every) = (tally.clone(), done.clone(), plan.fault_every);
        tokio::spawn(async move {
            // The first fault right away (clients are registering), then one every `every`.
            while !done.load(Ordering::SeqCst) {
                fault().await;
                tally.faults.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(every).await;
            }
        })
    };
    let acknowledged: Arc<Mutex<BTreeMap<usize, Vec<String>>>> = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..plan.clients {
        let (tally, base, acknowledged, notes) = (
            tally.clone(),
            base.clone(),
            acknowledged.clone(),
            plan.notes,
        );
        let label = label.to_owned();
        tasks.push(tokio::spawn(async move {
            let (c, mine) = run_client(&label, i, &base, &tally, notes).await;
            acknowledged.lock().await.insert(i, mine);
            c
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    injector.await.unwrap();

    // Every acknowledged note is there.
    let acknowledged = acknowledged.lock().await;
    let mut lost = 0;
    for (i, c) in clients.iter().enumerate() {
        let (_, body) = until_ok(&tally, "read back", || async {
            let res = c
                .get(format!("{base}/api/me"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            Ok((res.status(), res.text().await.unwrap_or_default()))
        })
        .await;
        let me: serde_json::Value = serde_json::from_str(&body).unwrap();
        let stored: Vec<String> = serde_json::from_value(me["notes"].clone()).unwrap();
        for note in &acknowledged[&i] {
            if !stored.contains(note) {
                lost += 1;
                eprintln!("lost: {note}");
            }
        }
    }
    // Log everyone out; then no old cookie may find a session again.
    for c in &clients {
        until_ok(&tally, "logout", || post_form(c, &base, "/logout", &[])).await;
    }
    for c in &clients {
        let res = c.get(format!("{base}/api/me")).send().await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "a session came back after logout"
        );
        // A write with the dead cookie must not recreate a logged-in session either.
        let outcome = post_note(c, &base, "after logout").await;
        assert!(
            matches!(outcome, Ok((StatusCode::UNAUTHORIZED, _))),
            "write after logout: {outcome:?}"
        );
    }
    let unexpected = tally.unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:#?}");
    (tally, lost)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarts_under_load_lose_no_acknowledged_write() {
    let plan = plan();
    let dir = tempfile::tempdir().unwrap();
    let redis = Arc::new(RedisServer::start_persistent());
    let store = format!("redis://127.0.0.1:{}/2?timeout_ms=1000", redis.port());
    let users = format!("sqlite://{}", dir.path().join("users.db").display());
    let demo = ServerProcess::start(
        env!("CARGO_BIN_EXE_cloakroom-demo"),
        &["--store", &store, "--users", &users, "--keys", KEYS],
        dir.path(),
    )
    .await;
    // Warm up with the same mix the clients run (concurrent Argon2 hashing takes 19 MiB per
    // hash, and the allocator keeps its arenas), then take the memory baseline.
    let warmers: Vec<_> = (0..plan.clients)
        .map(|i| {
            let base = demo.base();
            tokio::spawn(async move {
                let c = client();
                let name = format!("warm{i}");
                let creds = [("name", name.as_str()), ("password", "soak-password")];
                let _ = post_form(&c, &base, "/register", &creds).await;
                for n in 0..5 {
                    let _ = post_note(&c, &base, &format!("warm {n}")).await;
                }
                let _ = post_form(&c, &base, "/logout", &[]).await;
                let _ = post_form(&c, &base, "/login", &creds).await;
            })
        })
        .collect();
    for w in warmers {
        w.await.unwrap();
    }
    let rss_before = demo.rss_kib().unwrap_or(0);
    let r = redis.clone();
    let (tally, lost) = soak("redis", demo.base(), &plan, move || {
        let r = r.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || r.restart())
                .await
                .unwrap();
        })
    })
    .await;
    let rss_after = demo.rss_kib().unwrap_or(0);
    eprintln!("{}", tally.report("redis", lost));
    eprintln!("soak redis: demo RSS {rss_before} KiB after warm-up, {rss_after} KiB after the run");
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert!(
        tally.faults.load(Ordering::SeqCst) >= 1,
        "no fault was injected"
    );
    assert!(
        rss_after <= rss_before + rss_before / 2 + 16 * 1024,
        "demo memory grew from {rss_before} KiB to {rss_after} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_kills_under_load_lose_no_acknowledged_write_on_sqlite() {
    let plan = plan();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("soak.db").display());
    let demo = ServerProcess::start(
        env!("CARGO_BIN_EXE_cloakroom-demo"),
        &["--store", &db, "--users", &db, "--keys", KEYS],
        dir.path(),
    )
    .await;
    let base = demo.base();
    let demo = Arc::new(Mutex::new(demo));
    let d = demo.clone();
    let (tally, lost) = soak("sqlite", base, &plan, move || {
        let d = d.clone();
        Box::pin(async move {
            // SIGKILL, a moment of downtime (connection errors), then the same port again.
            let mut demo = d.lock().await;
            demo.kill();
            tokio::time::sleep(Duration::from_millis(100)).await;
            demo.restart().await;
        })
    })
    .await;
    eprintln!("{}", tally.report("sqlite", lost));
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert!(
        tally.faults.load(Ordering::SeqCst) >= 1,
        "no fault was injected"
    );
}
