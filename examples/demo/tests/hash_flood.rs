//! Password-hashing floods against the demo binary over real HTTP on loopback: logins
//! abandoned by their clients must not delay the next honest one, and more logins than the
//! hashing queue holds are refused at once with 503 + `Retry-After`, counted in /metrics.
//!
//! The floods come, as a distributed attacker's would, from many addresses (127.x.0.1) and
//! for many names, so the per-client and per-account login throttle lets them through to
//! the hashing: this is the layer behind it.
//!
//! `CLOAKROOM_DEMO_BIN=/path/to/cloakroom-demo` runs the tests against another build (to
//! measure an older one).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use cloakroom_testkit::process::ServerProcess;
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpSocket;

const NAME: &str = "honest";
const PASSWORD: &str = "correct horse battery";

fn demo_bin() -> String {
    std::env::var("CLOAKROOM_DEMO_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_cloakroom-demo").to_owned())
}

/// Loopback address number `n` (`127.n.0.1`): a client address of its own, in a /16 of its
/// own (so no throttle keying addresses by network lumps two of them together).
fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, n, 0, 1))
}

fn client() -> reqwest::Client {
    client_from(loopback(0))
}

/// A client whose connections come from `addr`.
fn client_from(addr: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(addr)
        .cookie_store(true)
        .redirect(Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Starts the demo (sessions in memory, accounts in `dir/users.db`) with one account.
async fn start(dir: &Path) -> ServerProcess {
    let users = format!("sqlite://{}", dir.join("users.db").display());
    let demo = ServerProcess::start(
        demo_bin(),
        &["--store", "memory://", "--users", &users],
        dir,
    )
    .await;
    let c = client();
    let reply = post_login(&c, &demo.base(), "/register").await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER, "registration failed");
    demo
}

/// A CSRF token from `/api/csrf`; the client keeps the `_xsrf` cookie.
async fn token(c: &reqwest::Client, base: &str) -> String {
    let v: serde_json::Value = c
        .get(format!("{base}/api/csrf"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// Posts the account's name and password to `path` (`/login` or `/register`) as the login
/// form does.
async fn post_login(c: &reqwest::Client, base: &str, path: &str) -> reqwest::Response {
    let token = token(c, base).await;
    c.post(format!("{base}{path}"))
        .form(&[("name", NAME), ("password", PASSWORD), ("_xsrf", &token)])
        .send()
        .await
        .unwrap()
}

/// A complete login request for each of `names` (the password is wrong: the names do not
/// exist), with a valid CSRF cookie and token (so it reaches the password check), as raw
/// bytes.
async fn raw_logins(base: &str, port: u16, names: impl Iterator<Item = String>) -> Vec<Vec<u8>> {
    let reply = reqwest::get(format!("{base}/api/csrf")).await.unwrap();
    let cookie = reply
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("_xsrf="))
        .expect("an _xsrf cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let v: serde_json::Value = reply.json().await.unwrap();
    let token = v["token"].as_str().unwrap();
    names
        .map(|name| {
            let body = format!("name={name}&password=guess-guess&_xsrf={token}");
            format!(
                "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        })
        .collect()
}

/// Logs in as the honest user, retrying while told to (503): how long it took, and how
/// many times it was told to retry.
async fn honest_login(c: &reqwest::Client, base: &str) -> (Duration, u32) {
    let started = Instant::now();
    let mut refused = 0;
    loop {
        let status = post_login(c, base, "/login").await.status();
        if status != StatusCode::SERVICE_UNAVAILABLE || started.elapsed().as_secs() > 30 {
            assert_eq!(status, StatusCode::SEE_OTHER, "the honest login failed");
            return (started.elapsed(), refused);
        }
        refused += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The demo's count of form posts so far (`/metrics`).
async fn form_posts(c: &reqwest::Client, base: &str) -> u64 {
    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("cloakroom_demo_requests_total{class=\"form\"} "))
        .and_then(|n| n.parse().ok())
        .expect("a form request count in /metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_logins_do_not_delay_an_honest_one() {
    const FLOOD: u64 = 400;
    let dir = tempfile::tempdir().unwrap();
    let demo = start(dir.path()).await;
    let base = demo.base();
    let names = (0..FLOOD).map(|i| format!("flood{i}"));
    let requests = raw_logins(&base, demo.port(), names).await;
    let c = client();
    // What one login costs on this machine right now (the best of three).
    let mut one_login = Duration::MAX;
    for _ in 0..3 {
        one_login = one_login.min(honest_login(&c, &base).await.0);
    }
    let posts_before = form_posts(&c, &base).await;

    // 400 logins (20 from each of 20 addresses) sent in full, then abandoned (their
    // connections closed) as soon as the demo has started on all of them: hundreds of
    // password hashes queued, seconds of work, if abandoned ones are run.
    let server = SocketAddr::from(([127, 0, 0, 1], demo.port()));
    let mut flood = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        let socket = TcpSocket::new_v4().unwrap();
        let from = loopback(10 + u8::try_from(i % 20).unwrap());
        socket.bind(SocketAddr::new(from, 0)).unwrap();
        let mut conn = socket.connect(server).await.unwrap();
        conn.write_all(request).await.unwrap();
        flood.push(conn);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while form_posts(&c, &base).await < posts_before + FLOOD && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(flood);

    // The honest user, right after, waits at most for the hashes already running (a few
    // logins' time); behind the abandoned ones, it would wait for all of them to be hashed
    // (about 10 s on two cores).
    let (took, refused) = honest_login(&c, &base).await;
    let bound = (one_login * 25).max(Duration::from_millis(1500));
    eprintln!(
        "honest login after {FLOOD} abandoned ones: {took:?} ({refused} times 503 first); \
         one login alone: {one_login:?}; bound {bound:?}"
    );
    assert!(
        took < bound,
        "the honest login waited {took:?} behind abandoned ones (one login alone: {one_login:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_hashing_queue_answers_503_with_retry_after_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start(dir.path()).await;
    let base = demo.base();

    // 100 logins at once (10 from each of 10 addresses, each for a name of its own, none of
    // them existing), every one waiting for its answer: more than the queue holds (at most
    // 40 with the most hashing threads, 10 on two cores).
    let clients: Vec<_> = (0..100)
        .map(|i| client_from(loopback(10 + i % 10)))
        .collect();
    let mut tokens = Vec::new();
    for c in &clients {
        tokens.push(token(c, &base).await);
    }
    let logins: Vec<_> = clients
        .into_iter()
        .zip(tokens)
        .enumerate()
        .map(|(i, (c, token))| {
            let url = format!("{base}/login");
            tokio::spawn(async move {
                let name = format!("nobody{i}");
                c.post(url)
                    .form(&[
                        ("name", name.as_str()),
                        ("password", PASSWORD),
                        ("_xsrf", &token),
                    ])
                    .send()
                    .await
                    .unwrap()
            })
        })
        .collect();
    let (mut refused, mut failed) = (0, 0);
    for login in logins {
        let reply = login.await.unwrap();
        match reply.status() {
            StatusCode::UNAUTHORIZED => failed += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                let retry = reply.headers().get("retry-after");
                let retry = retry.and_then(|v| v.to_str().ok());
                assert_eq!(retry, Some("1"), "503 without Retry-After");
            }
            other => panic!("login answered {other}: {}", reply.text().await.unwrap()),
        }
    }
    assert!(refused > 0, "100 logins at once, none refused");

    let metrics = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "\ncloakroom_demo_hash_queue_full_total {refused}\n"
        )),
        "{refused} refused, metrics:\n{metrics}"
    );
    // Refused logins are not failed logins.
    assert!(
        metrics.contains(&format!(
            "cloakroom_demo_logins_total{{result=\"failed\"}} {failed}\n"
        )),
        "{failed} failed, metrics:\n{metrics}"
    );

    // Once the burst is over, logging in works again.
    let reply = post_login(&client(), &base, "/login").await;
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
}

/// The demo's cap on hashing threads (`passwords::MAX_THREADS`).
const MAX_HASHING_THREADS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_memory_does_not_grow_with_logins() {
    let dir = tempfile::tempdir().unwrap();
    let demo = start(dir.path()).await;
    let c = client();
    for _ in 0..20 {
        let reply = post_login(&c, &demo.base(), "/login").await;
        assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    }
    // Each hashing thread keeps one 19 MiB Argon2 block; the rest of the demo needs far less
    // than 64 MiB. Keeping the blocks of past hashes instead took 200 MB after ten.
    let threads = std::thread::available_parallelism()
        .map_or(2, usize::from)
        .min(MAX_HASHING_THREADS);
    let bound = 64 * 1024 + 24 * 1024 * u64::try_from(threads).unwrap();
    let Some(rss) = demo.rss_kib() else {
        eprintln!("no /proc here: resident memory not checked");
        return;
    };
    eprintln!("demo RSS after 21 password hashes: {rss} KiB (bound {bound} KiB)");
    assert!(
        rss < bound,
        "the demo holds {rss} KiB after 21 password hashes"
    );
}
