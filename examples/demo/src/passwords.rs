//! Password hashing: Argon2id with the `argon2` crate's default parameters (OWASP's minimum:
//! 19 MiB, 2 passes), run on a few dedicated threads: a hash costs tens of milliseconds of
//! CPU that must not stall the async workers.

use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Mutex};

use anyhow::Context as _;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};

/// Hashes and verifies passwords.
type Job = Box<dyn FnOnce() + Send>;

/// Argon2 runs on one dedicated thread per core, not on the blocking pool: each hash takes
/// 19 MiB, a flood of logins must queue rather than exhaust memory, and the allocator keeps
/// a per-thread arena's high-water mark, so few threads means little memory held.
static HASHERS: LazyLock<Mutex<mpsc::Sender<Job>>> = LazyLock::new(|| {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..std::thread::available_parallelism().map_or(2, usize::from) {
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("argon2-{i}"))
            .spawn(move || {
                loop {
                    let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            })
            .expect("start a hashing thread");
    }
    Mutex::new(tx)
});

/// Runs `f` on a hashing thread.
async fn on_hasher<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    HASHERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .map_err(|_| anyhow::anyhow!("the hashing threads are gone"))?;
    rx.await.context("a hashing thread died")
}

#[derive(Clone, Debug)]
pub(crate) struct Passwords {
    /// Hash of a random password, verified against when the user does not exist, so a
    /// wrong name costs as much as a wrong password (no timing oracle for valid names).
    dummy: Arc<str>,
}

impl Passwords {
    pub(crate) async fn new() -> anyhow::Result<Self> {
        let mut random = [0u8; 24];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        let dummy = Self::hash(String::from_utf8_lossy(&random).into_owned()).await?;
        Ok(Passwords {
            dummy: dummy.into(),
        })
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) for `password`.
    pub(crate) async fn hash(password: String) -> anyhow::Result<String> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        on_hasher(move || {
            let salt = SaltString::encode_b64(&salt).map_err(anyhow::Error::msg)?;
            let hash = Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .map_err(anyhow::Error::msg)?;
            Ok(hash.to_string())
        })
        .await?
    }

    /// Whether `password` matches `stored`; `stored` `None` (no such user) is always `false`
    /// but takes as long as a real check.
    pub(crate) async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> anyhow::Result<bool> {
        let dummy = self.dummy.clone();
        on_hasher(move || {
            let exists = stored.is_some();
            let phc = stored.as_deref().unwrap_or(&dummy);
            let hash = PasswordHash::new(phc).map_err(anyhow::Error::msg)?;
            let matches = Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok();
            Ok(exists && matches)
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_do() {
        let passwords = Passwords::new().await.unwrap();
        let hash = Passwords::hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let check = |pw: &str, stored: Option<&str>| {
            passwords.verify(pw.to_owned(), stored.map(str::to_owned))
        };
        assert!(check("correct horse", Some(&hash)).await.unwrap());
        assert!(!check("wrong horse", Some(&hash)).await.unwrap());
        assert!(!check("correct horse", None).await.unwrap());
        // Even the dummy's own password does not log in a missing user.
        assert!(!check("", None).await.unwrap());
    }
}
