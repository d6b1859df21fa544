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
        created_at    INTEGER NOT NULL,
        canonical     TEXT
    );
";

/// After [`SCHEMA`] and the migration that adds `canonical` to older tables.
const CANONICAL_INDEX: &str =
    "CREATE UNIQUE INDEX IF NOT EXISTS users_canonical ON users (canonical);";

/// Why `name` cannot be an account name: characters that are invisible or reorder text.
///
/// Refused: controls (Cc), format characters (Cf: zero-width spaces and joiners, the bidi
/// embeddings, overrides and isolates, the soft hyphen...), private-use (Co), unassigned (Cn)
/// and surrogate (Cs) code points, and the line and paragraph separators (Zl, Zp).
pub(crate) fn refused_character(name: &str) -> Option<&'static str> {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory as _};
    name.chars().find_map(|c| match c.general_category() {
        G::Control => Some("Names cannot contain control characters."),
        G::Format => Some("Names cannot contain invisible or text-direction characters."),
        G::PrivateUse | G::Unassigned | G::Surrogate => {
            Some("Names cannot contain unassigned or private-use characters.")
        }
        G::LineSeparator | G::ParagraphSeparator => Some("Names cannot contain line breaks."),
        _ => None,
    })
}

/// The form two names share when they look alike: the UTS #39 confusable skeleton of the
/// NFKC-normalised, lower-cased name. `Victim`, `victim` and `vіctim` (Cyrillic `і`) have
/// one canonical form, so only one of them can be registered; login finds the account by
/// this form too. Names with [`refused_character`]s are not checked here.
pub(crate) fn canonical(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization as _;
    let folded: String = name.nfkc().flat_map(char::to_lowercase).collect();
    let folded: String = folded.nfkc().collect();
    unicode_security::skeleton(&folded).collect()
}

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
                    create_private(path)?;
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
            migrate_canonical(&conn)?;
            conn.execute_batch(CANONICAL_INDEX)?;
            if let Some(path) = &target {
                // SQLite made the -wal and -shm files with the database's mode; check anyway.
                for file in [path.clone(), sidecar(path, "-wal"), sidecar(path, "-shm")] {
                    make_private(&file);
                }
            }
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

    /// Adds a user; `false` (and no change) when the name, or a name with the same
    /// [`canonical`] form, is taken.
    pub(crate) async fn create(&self, name: &str, password_hash: String) -> anyhow::Result<bool> {
        let name = name.to_owned();
        let canonical = canonical(&name);
        let now = cloakroom::Timestamp::now().as_millis();
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO users (name, password_hash, created_at, canonical)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
                params![name, password_hash, now, canonical],
            )
            .map(|inserted| inserted == 1)
        })
        .await
    }

    /// Replaces the password hash of the account `name` (exactly that name, as a login
    /// returns it); `false` if there is no such account.
    pub(crate) async fn set_password(
        &self,
        name: &str,
        password_hash: String,
    ) -> anyhow::Result<bool> {
        let name = name.to_owned();
        self.run(move |conn| {
            conn.execute(
                "UPDATE users SET password_hash = ?2 WHERE name = ?1",
                params![name, password_hash],
            )
            .map(|updated| updated == 1)
        })
        .await
    }

    /// Deletes the account `name` (exactly that name); `false` if there was none.
    pub(crate) async fn delete(&self, name: &str) -> anyhow::Result<bool> {
        let name = name.to_owned();
        self.run(move |conn| {
            conn.execute("DELETE FROM users WHERE name = ?1", params![name])
                .map(|deleted| deleted == 1)
        })
        .await
    }

    /// The account `name` logs in to, and its password hash: the account of exactly that
    /// name, else the one with the same [`canonical`] form (`Ana` logs in to `ana`).
    pub(crate) async fn password_hash(
        &self,
        name: &str,
    ) -> anyhow::Result<Option<(String, String)>> {
        let name = name.to_owned();
        let canonical = canonical(&name);
        self.run(move |conn| {
            conn.prepare_cached(
                "SELECT name, password_hash FROM users WHERE name = ?1 OR canonical = ?2
                 ORDER BY name = ?1 DESC LIMIT 1",
            )?
            .query_row([name, canonical], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()
        })
        .await
    }
}

/// Adds the `canonical` column to a table made before it existed, and fills it in. Where two
/// old names share a canonical form, the older account keeps it and the others are left
/// without one (they still log in by their exact name); each is logged, start-up goes on.
fn migrate_canonical(conn: &Connection) -> rusqlite::Result<()> {
    let has_column = conn
        .prepare("SELECT 1 FROM pragma_table_info('users') WHERE name = 'canonical'")?
        .exists([])?;
    if !has_column {
        conn.execute_batch("ALTER TABLE users ADD COLUMN canonical TEXT")?;
        tracing::info!("users table: added the canonical-name column");
    }
    let missing: Vec<String> = conn
        .prepare("SELECT name FROM users WHERE canonical IS NULL ORDER BY created_at, rowid")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for name in missing {
        let form = canonical(&name);
        let taken: Option<String> = conn
            .query_row(
                "SELECT name FROM users WHERE canonical = ?1",
                [&form],
                |row| row.get(0),
            )
            .optional()?;
        match taken {
            Some(first) => tracing::warn!(
                user = name,
                looks_like = first,
                "users table: this name looks like an older account's; it keeps its exact \
                 name but has no canonical form"
            ),
            None => {
                conn.execute(
                    "UPDATE users SET canonical = ?1 WHERE name = ?2",
                    [&form, &name],
                )?;
            }
        }
    }
    Ok(())
}

/// `<database><suffix>`: SQLite's `-wal` and `-shm` files.
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Creates the database file with mode 0600 if it does not exist yet: it holds password
/// hashes. (SQLite would create it 0644, and its -wal and -shm files take the same mode.)
#[cfg(unix)]
fn create_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

#[cfg(not(unix))]
fn create_private(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// Takes group and other permissions off `path` (if it exists), logging when it had any.
#[cfg(unix)]
fn make_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode();
    if mode & 0o077 == 0 {
        return;
    }
    let private = std::fs::Permissions::from_mode(mode & 0o700);
    match std::fs::set_permissions(path, private) {
        Ok(()) => tracing::warn!(
            path = %path.display(),
            was = format_args!("{:o}", mode & 0o777),
            "users database was readable by others; made it private (0600)"
        ),
        Err(error) => tracing::warn!(
            path = %path.display(),
            %error,
            "users database is readable by others and cannot be made private; chmod 600 it"
        ),
    }
}

#[cfg(not(unix))]
fn make_private(_: &Path) {}

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

    #[test]
    fn look_alikes_share_a_canonical_form() {
        let victim = canonical("victim");
        assert_eq!(canonical("v\u{456}ctim"), victim); // Cyrillic і
        assert_eq!(canonical("Victim"), victim);
        assert_eq!(canonical("VICTIM"), victim);
        assert_eq!(canonical("\u{ff56}ictim"), victim); // fullwidth ｖ
        assert_ne!(canonical("victor"), victim);
        // Ordinary names of other scripts stay distinct.
        let names = ["Zoë", "Zoe", "Łukasz", "日本", "日本人", "Ἀθηνᾶ", "ana"];
        let forms: std::collections::HashSet<String> = names.iter().map(|n| canonical(n)).collect();
        assert_eq!(forms.len(), names.len(), "{forms:?}");
        for name in names {
            assert_eq!(refused_character(name), None, "{name}");
        }
    }

    #[test]
    fn invisible_and_bidi_characters_are_refused() {
        for name in [
            "victim\u{200b}",     // zero-width space
            "vic\u{200d}tim",     // zero-width joiner
            "\u{202e}mitciv",     // right-to-left override
            "a\u{2066}b\u{2069}", // isolates
            "a\u{200f}",          // right-to-left mark
            "a\u{ad}b",           // soft hyphen
            "a\u{feff}",          // byte order mark
            "a\u{e000}",          // private use
            "a\u{378}",           // unassigned
            "a\u{2028}b",         // line separator
            "a\u{0}b",
            "a\u{85}b", // C1 control
        ] {
            assert!(refused_character(name).is_some(), "{name:?} accepted");
        }
    }

    #[tokio::test]
    async fn old_tables_get_canonical_names_and_look_alikes_keep_their_exact_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE users (name TEXT PRIMARY KEY NOT NULL, password_hash TEXT NOT NULL,
                                 created_at INTEGER NOT NULL);
             INSERT INTO users VALUES ('ana', 'h1', 1), ('Ana', 'h2', 2), ('bob', 'h3', 3);",
        )
        .unwrap();
        drop(old);
        let users = Users::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let hash = |name: &'static str| users.password_hash(name);
        // The older `ana` owns the canonical form; `Ana` still logs in by its exact name.
        assert_eq!(
            hash("ANA").await.unwrap(),
            Some(("ana".into(), "h1".into()))
        );
        assert_eq!(
            hash("Ana").await.unwrap(),
            Some(("Ana".into(), "h2".into()))
        );
        assert_eq!(
            hash("BOB").await.unwrap(),
            Some(("bob".into(), "h3".into()))
        );
        assert!(!users.create("aNa", "h4".into()).await.unwrap());
        assert!(users.create("carol", "h5".into()).await.unwrap());
        // Opening again changes nothing and fails nothing.
        drop(users);
        let again = Users::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        assert_eq!(
            again.password_hash("Ana").await.unwrap(),
            Some(("Ana".into(), "h2".into()))
        );
    }

    #[tokio::test]
    async fn names_are_unique() {
        let users = Users::open("sqlite::memory:").await.unwrap();
        assert!(users.create("ana", "h1".into()).await.unwrap());
        assert!(!users.create("ana", "h2".into()).await.unwrap());
        let found = users.password_hash("ana").await.unwrap();
        assert_eq!(found, Some(("ana".into(), "h1".into())));
        assert_eq!(users.password_hash("bob").await.unwrap(), None);
        // Look-alikes are taken and log in to the original account.
        assert!(!users.create("Ana", "h3".into()).await.unwrap());
        assert!(!users.create("\u{430}na", "h3".into()).await.unwrap()); // Cyrillic а
        let found = users.password_hash("ANA").await.unwrap();
        assert_eq!(found, Some(("ana".into(), "h1".into())));
    }
}
