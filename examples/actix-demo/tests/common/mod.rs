//! What the tests that run both demos share: the two binaries, a browser-like client, and
//! the form, token and `/api/me` calls the demos' pages make.

// Each test binary uses its own part of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use cloakroom_testkit::process::ServerProcess;
use reqwest::StatusCode;

pub(crate) const PASSWORD: &str = "correct-horse-battery";

/// One of the two demos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Demo {
    /// `cloakroom-demo`, on axum.
    Axum,
    /// `cloakroom-actix-demo`, on actix-web.
    Actix,
}

impl Demo {
    pub(crate) const BOTH: [Demo; 2] = [Demo::Axum, Demo::Actix];

    /// The binary.
    pub(crate) fn bin(self) -> PathBuf {
        match self {
            Demo::Actix => PathBuf::from(env!("CARGO_BIN_EXE_cloakroom-actix-demo")),
            Demo::Axum => axum_bin().to_owned(),
        }
    }

    /// Starts this demo with `args` (`--addr` is added), logs in `dir`.
    pub(crate) async fn start(self, args: &[&str], dir: &Path) -> ServerProcess {
        let server = ServerProcess::start(self.bin(), args, dir).await;
        let line = server
            .next_line(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{self:?}: no output line"));
        assert_eq!(line, format!("listening on {}", server.base()), "{self:?}");
        server
    }
}

/// The axum demo's binary, beside this package's (the same target directory and profile).
///
/// cargo builds only the binaries of the packages under test: `cargo test --workspace`
/// builds it, `cargo test -p cloakroom-actix-demo` does not. So when it is missing, or older
/// than a source file of the workspace (a stale build), this builds it once per test binary
/// (`cargo build -p cloakroom-demo`, with this build's target directory and profile).
/// Not always: that build resolves features for the demo alone, unlike the workspace's
/// test build, and would compile much of the graph a second time.
fn axum_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let actix = Path::new(env!("CARGO_BIN_EXE_cloakroom-actix-demo"));
        let profile_dir = actix.parent().expect("the binary's directory");
        let bin = profile_dir.join(format!("cloakroom-demo{}", std::env::consts::EXE_SUFFIX));
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        if built.is_some_and(|built| newest_source(&workspace) <= built) {
            return bin;
        }
        let target_dir = profile_dir.parent().expect("the target directory");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build
            .args([
                "build",
                "--quiet",
                "-p",
                "cloakroom-demo",
                "--bin",
                "cloakroom-demo",
            ])
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(&workspace);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo build -p cloakroom-demo");
        assert!(status.success(), "cargo build -p cloakroom-demo failed");
        bin
    })
}

/// The newest modification time of the workspace's manifests, lock file and the files
/// under `crates/*/{src,templates}` and `examples/*/{src,templates}`.
fn newest_source(workspace: &Path) -> SystemTime {
    fn walk(path: &Path, newest: &mut SystemTime) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                walk(&entry.path(), newest);
            }
        } else if let Ok(modified) = meta.modified() {
            *newest = (*newest).max(modified);
        }
    }
    let mut newest = SystemTime::UNIX_EPOCH;
    walk(&workspace.join("Cargo.toml"), &mut newest);
    walk(&workspace.join("Cargo.lock"), &mut newest);
    for group in ["crates", "examples"] {
        for package in std::fs::read_dir(workspace.join(group))
            .into_iter()
            .flatten()
            .flatten()
        {
            for part in ["Cargo.toml", "src", "templates"] {
                walk(&package.path().join(part), &mut newest);
            }
        }
    }
    newest
}

/// Both demos, started with `args` (sessions and accounts as each test wants), at once.
pub(crate) async fn start_both(args: &[&str], dir: &Path) -> [(Demo, ServerProcess); 2] {
    let (axum, actix) = tokio::join!(Demo::Axum.start(args, dir), Demo::Actix.start(args, dir));
    [(Demo::Axum, axum), (Demo::Actix, actix)]
}

/// Runs `scenario` against each demo, each with sessions in memory and its own accounts
/// database in a fresh directory.
pub(crate) async fn on_both<F, Fut>(scenario: F)
where
    F: Fn(Demo, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let db = |demo: Demo| {
        format!(
            "sqlite://{}",
            dir.path().join(format!("{demo:?}.db")).display()
        )
    };
    let (axum_db, actix_db) = (db(Demo::Axum), db(Demo::Actix));
    let axum_args = ["--store", "memory://", "--users", &axum_db];
    let actix_args = ["--store", "memory://", "--users", &actix_db];
    let (axum, actix) = tokio::join!(
        Demo::Axum.start(&axum_args, dir.path()),
        Demo::Actix.start(&actix_args, dir.path())
    );
    for (demo, server) in [(Demo::Axum, &axum), (Demo::Actix, &actix)] {
        scenario(demo, server.base()).await;
    }
}

// Each test binary uses its own part of these too.
#[allow(unused_imports)]
pub(crate) use cloakroom_testkit::demo_client::{client, me, post, token};

/// Registers `name` (with [`PASSWORD`]): 303 to `/`.
pub(crate) async fn register(client: &reqwest::Client, base: &str, name: &str) {
    let res = post(
        client,
        base,
        "/register",
        &[("name", name), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "{}",
        res.text().await.unwrap()
    );
}

/// Logs `name` in: 303 to `/`.
pub(crate) async fn login(client: &reqwest::Client, base: &str, name: &str) {
    let res = post(
        client,
        base,
        "/login",
        &[("name", name), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "{}",
        res.text().await.unwrap()
    );
}

/// `GET /`, following nothing: the status and the body.
pub(crate) async fn get(client: &reqwest::Client, base: &str, path: &str) -> (StatusCode, String) {
    let res = client.get(format!("{base}{path}")).send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}
