//! Password hashing: Argon2id with the `argon2` crate's default parameters (OWASP's minimum:
//! 19 MiB, 2 passes), run on a few dedicated threads: a hash costs tens of milliseconds of
//! CPU that must not stall the async workers.
//!
//! Two floods are bounded here:
//!
//! - **Work.** The queue in front of the hashing threads holds at most
//!   [`QUEUE_PER_THREAD`] jobs per thread; when it is full the request fails at once with
//!   [`Error::QueueFull`] (a 503 with `Retry-After`, counted in `/metrics`) instead of
//!   waiting behind everyone else, and a job whose requester has gone (the client closed the
//!   connection, so the handler was dropped) is skipped, not hashed for nobody.
//! - **Memory.** Each hashing thread owns one 19 MiB block of Argon2 memory, allocated on its
//!   first hash and reused by every hash and verification it runs. Allocating one per hash
//!   (what `Argon2::hash_password` does) left the freed blocks in glibc's per-thread arenas
//!   (64 MiB heaps, never given back): the release demo went from 10 MB resident to 205 MB
//!   after 10 registrations and 302 MB after 1,000 logins; now 50 MB after either.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, LazyLock, Mutex};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

/// Jobs that may wait for a hashing thread, per thread (on top of the one each thread runs).
/// A hash takes about 50-100 ms, so a full queue is about a quarter of a second of work: a
/// request that finds it full is answered 503 at once rather than after seconds of waiting.
const QUEUE_PER_THREAD: usize = 4;

/// What a 503 for a full queue tells the client to wait, in seconds (`Retry-After`).
pub(crate) const RETRY_AFTER_SECS: u32 = 1;

/// Argon2 memory blocks each hashing thread keeps for reuse: enough for the default
/// parameters (19 MiB), which every hash this demo writes uses.
const REUSED_BLOCKS: usize = Params::DEFAULT_M_COST as usize;

/// Why hashing or verifying failed.
#[derive(Debug)]
pub(crate) enum Error {
    /// The hashing queue is full: too many hashes are already waiting. Try again later.
    QueueFull,
    /// Anything else: no OS randomness, a malformed stored hash, a dead hashing thread.
    Failed(anyhow::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::QueueFull => f.write_str("the password hashing queue is full"),
            Error::Failed(_) => f.write_str("password hashing failed"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::QueueFull => None,
            Error::Failed(e) => Some(e.as_ref()),
        }
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Error::Failed(e)
    }
}

/// A job for a hashing thread, given that thread's reusable Argon2 memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// A fixed set of hashing threads behind a bounded queue.
#[derive(Debug)]
struct Pool {
    queue: SyncSender<Job>,
}

impl Pool {
    /// Starts `threads` threads behind a queue of `threads * per_thread` jobs.
    fn start(name: &str, threads: usize, per_thread: usize) -> std::io::Result<Pool> {
        let (queue, jobs) = mpsc::sync_channel::<Job>(threads * per_thread);
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..threads {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    let mut memory = Vec::new();
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        match job {
                            Ok(job) => job(&mut memory),
                            Err(_) => return, // the pool is gone
                        }
                    }
                })?;
        }
        Ok(Pool { queue })
    }

    /// Queues `f`; its result arrives on the receiver. If the receiver is dropped before a
    /// thread picks the job up (the request was abandoned), `f` never runs.
    fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<oneshot::Receiver<T>, Error> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            if tx.is_closed() {
                return;
            }
            let _ = tx.send(f(memory));
        });
        match self.queue.try_send(job) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(Error::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(Error::Failed(anyhow::anyhow!(
                "the hashing threads are gone"
            ))),
        }
    }
}

/// Most hashing threads, however many cores: each keeps 19 MiB of Argon2 memory, so this
/// bounds the memory hashing holds (152 MiB) on a large machine; eight threads hash well
/// over a hundred passwords a second.
const MAX_THREADS: usize = 8;

/// Argon2 runs on one dedicated thread per core (at most [`MAX_THREADS`]), not on the
/// blocking pool: a flood of logins must not start a thread (and a 19 MiB block) per request.
static HASHERS: LazyLock<Pool> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let threads = cores.min(MAX_THREADS);
    Pool::start("argon2", threads, QUEUE_PER_THREAD).expect("start the hashing threads")
});

/// Requests refused because the hashing queue was full, since the process started.
static QUEUE_FULL: AtomicU64 = AtomicU64::new(0);

/// How many requests found the hashing queue full (`cloakroom_demo_hash_queue_full_total`).
/// Process-wide, like the hashing threads themselves.
pub(crate) fn queue_full_total() -> u64 {
    QUEUE_FULL.load(Ordering::Relaxed)
}

/// Runs `f` on a hashing thread with that thread's Argon2 memory.
async fn on_hasher<T: Send + 'static>(
    f: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
) -> Result<T, Error> {
    let rx = HASHERS.submit(f).inspect_err(|e| {
        if matches!(e, Error::QueueFull) {
            QUEUE_FULL.fetch_add(1, Ordering::Relaxed);
        }
    })?;
    rx.await
        .map_err(|_| Error::Failed(anyhow::anyhow!("a hashing thread died")))
}

/// Runs `argon2` into `out`, in `memory` (grown to [`REUSED_BLOCKS`] on first use) when the
/// parameters fit in it, else in a block allocated for this one call (a stored hash with
/// larger parameters than this demo writes).
fn argon2_into(
    argon2: &Argon2<'_>,
    memory: &mut Vec<Block>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    if argon2.params().block_count() > REUSED_BLOCKS {
        return argon2.hash_password_into(password, salt, out);
    }
    if memory.len() < REUSED_BLOCKS {
        memory.resize(REUSED_BLOCKS, Block::default());
    }
    argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..])
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) of `password` with `salt`
/// and the default parameters: the same string `Argon2::default().hash_password` writes.
fn hash_with(memory: &mut Vec<Block>, password: &[u8], salt: &[u8]) -> anyhow::Result<String> {
    let argon2 = Argon2::default();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(&argon2, memory, password, salt, &mut out).map_err(anyhow::Error::msg)?;
    let salt = SaltString::encode_b64(salt).map_err(anyhow::Error::msg)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).map_err(anyhow::Error::msg)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(anyhow::Error::msg)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `phc` (any Argon2 variant, version and
/// parameters, as `PasswordVerifier::verify_password` accepts), compared in constant time.
fn verify_with(memory: &mut Vec<Block>, password: &[u8], phc: &str) -> anyhow::Result<bool> {
    let hash = PasswordHash::new(phc).map_err(anyhow::Error::msg)?;
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        anyhow::bail!("stored password hash without salt or output");
    };
    let algorithm = Algorithm::try_from(hash.algorithm).map_err(anyhow::Error::msg)?;
    let version = hash
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(anyhow::Error::msg)?
        .unwrap_or_default();
    // The output length comes from the stored hash, like the crate's own verifier.
    let params = Params::try_from(&hash).map_err(anyhow::Error::msg)?;
    let argon2 = Argon2::new(algorithm, version, params);
    let mut salt_bytes = [0u8; 64];
    let salt = salt
        .decode_b64(&mut salt_bytes)
        .map_err(anyhow::Error::msg)?;
    let computed = Output::init_with(expected.len(), |out| {
        argon2_into(&argon2, memory, password, salt, out).map_err(Into::into)
    })
    .map_err(anyhow::Error::msg)?;
    // `Output`'s `==` is constant-time.
    Ok(computed == expected)
}

/// Hashes and verifies passwords.
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
    pub(crate) async fn hash(password: String) -> Result<String, Error> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        Ok(on_hasher(move |memory| hash_with(memory, password.as_bytes(), &salt)).await??)
    }

    /// Whether `password` matches `stored`; `stored` `None` (no such user) is always `false`
    /// but takes as long as a real check.
    pub(crate) async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, Error> {
        let dummy = self.dummy.clone();
        let matches = on_hasher(move |memory| {
            let exists = stored.is_some();
            let phc = stored.as_deref().unwrap_or(&dummy);
            Ok::<_, anyhow::Error>(verify_with(memory, password.as_bytes(), phc)? && exists)
        })
        .await??;
        Ok(matches)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};

    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_do() {
        let passwords = Passwords::new().await.unwrap();
        let hash = Passwords::hash("correct horse".into()).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        let check = |pw: &str, stored: Option<&str>| {
            passwords.verify(pw.to_owned(), stored.map(str::to_owned))
        };
        assert!(check("correct horse", Some(&hash)).await.unwrap());
        assert!(!check("wrong horse", Some(&hash)).await.unwrap());
        assert!(!check("correct horse", None).await.unwrap());
        // Even the dummy's own password does not log in a missing user.
        assert!(!check("", None).await.unwrap());
    }

    #[test]
    fn reused_memory_writes_and_reads_the_crates_own_phc_strings() {
        let salt = *b"sixteen-byte-slt";
        let mut memory = Vec::new();
        // Twice with the same (dirty, after the first) memory: same string as the crate's.
        let expected = Argon2::default()
            .hash_password(b"hunter22", &SaltString::encode_b64(&salt).unwrap())
            .unwrap()
            .to_string();
        for _ in 0..2 {
            assert_eq!(
                hash_with(&mut memory, b"hunter22", &salt).unwrap(),
                expected
            );
        }
        assert_eq!(memory.len(), REUSED_BLOCKS);

        // Ours verifies with the crate's verifier, and the crate's with ours.
        let ours = hash_with(&mut memory, b"correct horse", b"another16bytes!!").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(verify_with(&mut memory, b"hunter22", &expected).unwrap());
        assert!(!verify_with(&mut memory, b"hunter23", &expected).unwrap());

        // Other variants and parameters (smaller and larger than the reused memory).
        for (algorithm, m_cost) in [
            (Algorithm::Argon2i, 64),
            (Algorithm::Argon2d, 1024),
            (Algorithm::Argon2id, REUSED_BLOCKS as u32 + 8),
        ] {
            let params = Params::new(m_cost, 1, 1, Some(24)).unwrap();
            let argon2 = Argon2::new(algorithm, Version::V0x13, params);
            let salt = SaltString::encode_b64(&salt).unwrap();
            let phc = argon2.hash_password(b"pw", &salt).unwrap().to_string();
            assert!(verify_with(&mut memory, b"pw", &phc).unwrap(), "{phc}");
            assert!(!verify_with(&mut memory, b"pW", &phc).unwrap(), "{phc}");
        }
        assert_eq!(memory.len(), REUSED_BLOCKS, "larger parameters are one-off");
        assert!(verify_with(&mut memory, b"pw", "$argon2id$v=19$garbage").is_err());
    }

    /// Occupies `threads` threads of `pool` until the returned sender is dropped; the
    /// receivers must be kept, or the jobs would be skipped.
    fn block_threads(
        pool: &Pool,
        threads: usize,
    ) -> (std::sync::mpsc::Sender<()>, Vec<oneshot::Receiver<()>>) {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let wait = Arc::new(Mutex::new(wait));
        let (started_tx, started) = std::sync::mpsc::channel();
        let mut busy = Vec::new();
        for _ in 0..threads {
            let (wait, started_tx) = (wait.clone(), started_tx.clone());
            let job = move |_: &mut Vec<Block>| {
                started_tx.send(()).unwrap();
                let _ = wait.lock().unwrap().recv();
            };
            busy.push(pool.submit(job).unwrap());
        }
        for _ in 0..threads {
            started.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        (release, busy)
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_abandoned_jobs_never_run() {
        // One thread, so jobs run strictly in order; six places in the queue.
        let pool = Pool::start("test-hash", 1, 6).unwrap();
        let (release, busy) = block_threads(&pool, 1);
        let ran = Arc::new(AtomicUsize::new(0));
        let job = |ran: &Arc<AtomicUsize>| {
            let ran = ran.clone();
            move |_: &mut Vec<Block>| ran.fetch_add(1, Ordering::SeqCst)
        };
        // The six places: two kept, four abandoned (their requesters dropped the receivers).
        let kept: Vec<_> = (0..2).map(|_| pool.submit(job(&ran)).unwrap()).collect();
        for _ in 0..4 {
            drop(pool.submit(job(&ran)).unwrap());
        }
        // The seventh is refused without waiting.
        assert!(matches!(pool.submit(job(&ran)), Err(Error::QueueFull)));

        drop(release);
        for rx in busy {
            rx.await.unwrap();
        }
        for rx in kept {
            rx.await.unwrap();
        }
        // The queue drained: room again. The last job runs after the abandoned ones were
        // taken from the queue, and only the kept jobs (plus this one) ran.
        let last = pool.submit(job(&ran)).unwrap();
        last.await.unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 3, "abandoned jobs were run");
    }
}
