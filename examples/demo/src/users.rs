//! The accounts: a `users` table in a SQLite file (possibly the session store's own file;
//! WAL mode lets both work side by side). Every query runs on the blocking thread pool.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::{Connection, OptionalExtension as _, params};

/// The users database.
#[derive(Clone)]
pub(crate) struct Users {
    conn: Arc<Mutex<Connection>>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users").field("path", &self.path).finish()
    }
}

/// The file a `sqlite:` URL names; `None` for `sqlite::memory:`.
fn database_path(url: &str) -> anyhow::Result<Option<PathBuf>> {
    let rest = url
        .strip_prefix("sqlite:")
        .with_context(|| format!("users database URL {url:?} must start with sqlite:"))?;
    if rest == ":memory:" {
        return Ok(None);
    }
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path.is_empty() || path.contains(['?', '#']) {
        anyhow::bail!(
            "users database URL {url:?} needs a plain file path: sqlite://relative.db or sqlite:///absolute.db"
        );
    }
    Ok(Some(PathBuf::from(path)))
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS users (
        name          TEXT PRIMARY KEY NOT NULL,
        password_hash TEXT NOT NULL,
        created_at    INTEGER NOT NULL
    );
";

impl Users {
    /// Opens (creating if needed) the database `url` names and its `users` table.
    pub(crate) async fn open(url: &str) -> anyhow::Result<Self> {
        let path = database_path(url)?;
        let target = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> anyhow::Result<Connection> {
            let conn = match &target {
                None => Connection::open_in_memory()?,
                Some(path) => {
                    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                        std::fs::create_dir_all(dir)
                            .with_context(|| format!("cannot create {}", dir.display()))?;
                    }
                    let conn = Connection::open(path)
                        .with_context(|| format!("cannot open {}", path.display()))?;
                    let mode: String =
                        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
                    if !mode.eq_ignore_ascii_case("wal") {
                        tracing::warn!(%mode, "users database is not in WAL mode");
                    }
                    conn.pragma_update(None, "synchronous", "NORMAL")?;
                    conn
                }
            };
            // The session store may write to the same file: wait for its locks.
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        })
        .await??;
        Ok(Users {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// The database file; `None` when it is in memory.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    async fn run<R: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    ) -> anyhow::Result<R> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            query(&conn)
        })
        .await
        .context("users database task failed")?
        .context("users database query failed")
    }

    /// Adds a user; `false` (and no change) when the name is taken.
    pub(crate) async fn create(&self, name: &str, password_hash: String) -> anyhow::Result<bool> {
        let name = name.to_owned();
        let now = cloakroom::Timestamp::now().as_millis();
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO users (name, password_hash, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO NOTHING",
                params![name, password_hash, now],
            )
            .map(|inserted| inserted == 1)
        })
        .await
    }

    /// The password hash of `name`, if there is such a user.
    pub(crate) async fn password_hash(&self, name: &str) -> anyhow::Result<Option<String>> {
        let name = name.to_owned();
        self.run(move |conn| {
            conn.prepare_cached("SELECT password_hash FROM users WHERE name = ?1")?
                .query_row([name], |row| row.get(0))
                .optional()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_files() {
        assert_eq!(
            database_path("sqlite://a/u.db").unwrap(),
            Some("a/u.db".into())
        );
        assert_eq!(
            database_path("sqlite:///a/u.db").unwrap(),
            Some("/a/u.db".into())
        );
        assert_eq!(database_path("sqlite::memory:").unwrap(), None);
        assert!(database_path("memory://").is_err());
        assert!(database_path("sqlite://").is_err());
    }

    #[tokio::test]
    async fn names_are_unique() {
        let users = Users::open("sqlite::memory:").await.unwrap();
        assert!(users.create("ana", "h1".into()).await.unwrap());
        assert!(!users.create("ana", "h2".into()).await.unwrap());
        assert_eq!(
            users.password_hash("ana").await.unwrap().as_deref(),
            Some("h1")
        );
        assert_eq!(users.password_hash("bob").await.unwrap(), None);
    }
}
