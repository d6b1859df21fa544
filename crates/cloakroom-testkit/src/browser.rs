//! A real headless Chromium, driven over the W3C WebDriver protocol through `chromedriver`
//! on a free loopback port. Small on purpose: navigate, fill, click, read.
//!
//! `scripts/test.sh` installs Debian's `chromium` and `chromium-driver`; without them the
//! tests that use this fail with a message saying so (they never skip).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session; chromedriver and Chromium are stopped on drop.
#[derive(Debug)]
pub struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: Child,
    _profile: TempDir,
}

#[derive(Debug)]
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn find_binary(names: &[&str]) -> Option<PathBuf> {
    names.iter().find_map(|n| {
        let p = PathBuf::from(n);
        if p.is_absolute() {
            return p.exists().then_some(p);
        }
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(n))
                .find(|c| c.exists())
        })
    })
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    ///
    /// # Panics
    /// When Chromium or chromedriver is missing, or does not start within 30 seconds.
    pub async fn start() -> Browser {
        let driver_bin = find_binary(&["chromedriver", "/usr/bin/chromedriver"]).expect(
            "chromedriver not found: run scripts/test.sh or apt-get install -y chromium chromium-driver",
        );
        let chrome_bin = find_binary(&["chromium", "/usr/bin/chromium", "chromium-browser"])
            .expect("chromium not found: run scripts/test.sh or apt-get install -y chromium");
        Browser::start_with(&chrome_bin, &driver_bin, &[]).await
    }

    /// Starts `driver` (a chromedriver matching `chrome`) and a headless session of `chrome`
    /// with `extra_args` on top of the usual ones, in a fresh profile.
    ///
    /// # Panics
    /// When either does not start within 30 seconds.
    pub async fn start_with(
        chrome_bin: &std::path::Path,
        driver_bin: &std::path::Path,
        extra_args: &[&str],
    ) -> Browser {
        let port = free_port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile =
            std::env::temp_dir().join(format!("cloakroom-chrome-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&profile).expect("profile dir");
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-default-apps".to_owned(),
            "--no-default-browser-check".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        args.extend(extra_args.iter().map(|a| (*a).to_owned()));
        let caps = json!({
            "capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chrome_bin.to_string_lossy(),
                    "args": args
                }
            }}
        });
        let mut browser = Browser {
            http,
            base,
            session: String::new(),
            driver,
            _profile: TempDir(profile),
        };
        let v = browser.call("POST", "/session", caps).await;
        browser.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let res = req
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("WebDriver request");
        let v: Value = res.json().await.expect("WebDriver JSON");
        if let Some(err) = v["value"].get("error") {
            panic!("WebDriver {method} {path}: {err} {}", v["value"]["message"]);
        }
        v["value"].clone()
    }

    async fn session_call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body).await
    }

    /// Opens `url` and waits for the page load.
    pub async fn goto(&self, url: &str) {
        self.session_call("POST", "/url", json!({ "url": url }))
            .await;
    }

    /// The element matching a CSS selector (its WebDriver id).
    pub async fn find(&self, css: &str) -> String {
        let v = self
            .session_call(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v[ELEMENT_KEY].as_str().expect("element id").to_owned()
    }

    /// Types `text` into the element matching `css`.
    pub async fn fill(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.session_call(
            "POST",
            &format!("/element/{el}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.session_call("POST", &format!("/element/{el}/click"), json!({}))
            .await;
    }

    /// The current page's HTML.
    pub async fn source(&self) -> String {
        self.session_call("GET", "/source", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.session_call("GET", "/url", Value::Null)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs JavaScript in the page and returns its result.
    pub async fn execute(&self, script: &str) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Waits until the page source contains `needle` (or panics after `timeout`).
    pub async fn wait_for_text(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let src = self.source().await;
            if src.contains(needle) {
                return src;
            }
            assert!(
                Instant::now() < deadline,
                "page never showed {needle:?}; it shows:\n{src}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The value of the cookie `name` the browser would send to the current page (HttpOnly
    /// ones included), if it holds one.
    pub async fn cookie(&self, name: &str) -> Option<String> {
        let path = format!("/session/{}/cookie", self.session);
        let all = self.call("GET", &path, Value::Null).await;
        all.as_array()?
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["value"].as_str())
            .map(str::to_owned)
    }

    /// Puts the cookie `name=value` for the current page's host into the browser (a copied
    /// cookie, as an attacker would plant it).
    pub async fn add_cookie(&self, name: &str, value: &str) {
        let cookie = json!({"cookie": {"name": name, "value": value, "path": "/"}});
        self.session_call("POST", "/cookie", cookie).await;
    }

    /// Ends the session and stops the browser.
    pub async fn quit(mut self) {
        let path = format!("/session/{}", self.session);
        let _ = self
            .http
            .delete(format!("{}{path}", self.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        self.session.clear();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
