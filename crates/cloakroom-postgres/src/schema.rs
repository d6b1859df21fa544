//! Versioned migrations, applied at start-up under an advisory lock.

use cloakroom_core::store::{Error, ErrorKind, Result};

use crate::error::driver;

/// The migrations, in order; version `n` is `MIGRATIONS[n - 1]`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_challenges.sql"),
    include_str!("../migrations/0003_key128.sql"),
];

/// The event log's migrations (a store opened with `events=N`), versioned apart from the
/// session table's under the name `<table>_events`: a table without a log never gets them.
const EVENT_MIGRATIONS: &[&str] = &[
    include_str!("../migrations/events_0001.sql"),
    include_str!("../migrations/events_0002.sql"),
];

/// The schema version this crate writes and reads.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The key of the transaction-level advisory lock every cloakroom-postgres migration takes
/// ("cloakrm" in ASCII), so that two processes starting at once migrate one after the other.
pub const MIGRATION_LOCK: i64 = 0x0063_6c6f_616b_726d;

/// The version table's name, next to the sessions table (same schema).
pub const VERSION_TABLE: &str = "cloakroom_schema_version";

/// Quoted names of the objects of one store.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    /// The schema, when the URL named one.
    pub(crate) schema: Option<String>,
    /// The table's bare name.
    pub(crate) table_name: String,
    /// The table, quoted and qualified.
    pub(crate) table: String,
    /// The version table, quoted and qualified.
    pub(crate) versions: String,
    /// The challenges table (`<table>_dbsc`), quoted and qualified.
    pub(crate) challenges: String,
    /// The event log (`<table>_events`), quoted and qualified.
    pub(crate) events: String,
    /// The event log's one-row state (`<table>_events_state`): the sequence counter, the
    /// trim mark, the retention.
    pub(crate) events_state: String,
}

impl Names {
    pub(crate) fn new(schema: Option<String>, table_name: String) -> Self {
        let qualify = |name: &str| match &schema {
            Some(s) => format!("{}.{}", quote(s), quote(name)),
            None => quote(name),
        };
        Names {
            table: qualify(&table_name),
            versions: qualify(VERSION_TABLE),
            challenges: qualify(&format!("{table_name}_dbsc")),
            events: qualify(&format!("{table_name}_events")),
            events_state: qualify(&format!("{table_name}_events_state")),
            schema,
            table_name,
        }
    }
}

impl Names {
    /// A migration's SQL with its placeholders (`{table}`, `{challenges}`, `{by_user}`,
    /// `{by_expiry}`) replaced by these names.
    fn expand(&self, sql: &str) -> String {
        let index = |suffix: &str| quote(&format!("{}_{suffix}", self.table_name));
        sql.replace("{table}", &self.table)
            .replace("{events_state}", &self.events_state)
            .replace("{events}", &self.events)
            .replace("{challenges}", &self.challenges)
            .replace("{by_user}", &index("by_user"))
            .replace("{by_expiry}", &index("by_expiry"))
    }
}

/// A validated identifier (ASCII letters, digits, `_`) in double quotes.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Brings the table to [`SCHEMA_VERSION`], or refuses a newer or foreign one; with `events`
/// (how many to keep), also creates the event log (or sets its retention). Returns how many
/// events the table's log keeps, `None` when it has none: a table that has a log keeps it
/// whoever opens it, so that no write of any process goes unlogged.
pub(crate) async fn migrate(
    client: &mut deadpool_postgres::ClientWrapper,
    names: &Names,
    events: Option<u64>,
) -> Result<Option<u64>> {
    let what = "migrating the session table";
    let tx = client.transaction().await.map_err(|e| driver(what, e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| driver("waiting for the migration lock", e))?;
    if let Some(schema) = &names.schema {
        let exists = tx
            .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[schema])
            .await
            .map_err(|e| driver(what, e))?
            .is_some();
        if !exists {
            tx.batch_execute(&format!("CREATE SCHEMA {}", quote(schema)))
                .await
                .map_err(|e| driver("creating the session schema", e))?;
        }
    }
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {} (
             table_name text    NOT NULL,
             version    integer NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (table_name, version)
         )",
        names.versions
    ))
    .await
    .map_err(|e| driver("creating the schema version table", e))?;
    let version: i32 = tx
        .query_one(
            &format!(
                "SELECT coalesce(max(version), 0) FROM {} WHERE table_name = $1",
                names.versions
            ),
            &[&names.table_name],
        )
        .await
        .map_err(|e| driver("reading the schema version", e))?
        .try_get(0)
        .map_err(|e| driver("reading the schema version", e))?;
    if version > SCHEMA_VERSION {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "the session table {} has schema version {version}, newer than the \
                 {SCHEMA_VERSION} this cloakroom-postgres understands: upgrade cloakroom, or \
                 use another table (?table=) or schema (?schema=)",
                names.table
            ),
        ));
    }
    if version == 0 {
        let exists = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&names.table])
            .await
            .map_err(|e| driver(what, e))?
            .try_get::<_, bool>(0)
            .map_err(|e| driver(what, e))?;
        if exists {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "a table {} exists that cloakroom-postgres did not create (no row in {}): \
                     use another table (?table=) or schema (?schema=)",
                    names.table, names.versions
                ),
            ));
        }
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let v = i as i32 + 1;
        tx.batch_execute(&names.expand(sql))
            .await
            .map_err(|e| driver(&format!("applying schema migration {v}"), e))?;
        tx.execute(
            &format!(
                "INSERT INTO {} (table_name, version) VALUES ($1, $2)",
                names.versions
            ),
            &[&names.table_name, &v],
        )
        .await
        .map_err(|e| driver("recording the schema version", e))?;
        tracing::info!(table = %names.table, version = v, "applied session schema migration");
    }
    let keep = migrate_log(&tx, names, events).await?;
    tx.commit()
        .await
        .map_err(|e| driver("committing the schema migration", e))?;
    Ok(keep.map(|k| k.max(1) as u64))
}

/// The event log's part of [`migrate`], in its transaction: with `events`, creates or
/// updates the log and sets its retention; without, reads the retention of a log the table
/// already has. How many events it keeps, `None` without a log.
async fn migrate_log(
    tx: &deadpool_postgres::Transaction<'_>,
    names: &Names,
    events: Option<u64>,
) -> Result<Option<i64>> {
    let log_name = format!("{}_events", names.table_name);
    let log_version: i32 = tx
        .query_one(
            &format!(
                "SELECT coalesce(max(version), 0) FROM {} WHERE table_name = $1",
                names.versions
            ),
            &[&log_name],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| driver("reading the event log's schema version", e))?;
    if log_version > EVENT_MIGRATIONS.len() as i32 {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "the event log of {} has schema version {log_version}, newer than this \
                 cloakroom-postgres understands: upgrade cloakroom",
                names.table
            ),
        ));
    }
    // A log that exists gets its pending migrations whoever opens the table; one that does
    // not is created only by a store opened with it.
    if events.is_some() || log_version > 0 {
        for (i, sql) in EVENT_MIGRATIONS
            .iter()
            .enumerate()
            .skip(log_version as usize)
        {
            let v = i as i32 + 1;
            tx.batch_execute(&names.expand(sql))
                .await
                .map_err(|e| driver(&format!("applying event log migration {v}"), e))?;
            tx.execute(
                &format!(
                    "INSERT INTO {} (table_name, version) VALUES ($1, $2)",
                    names.versions
                ),
                &[&log_name, &v],
            )
            .await
            .map_err(|e| driver("recording the event log's schema version", e))?;
        }
    }
    Ok(match events {
        Some(keep) => {
            let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
            tx.execute(
                &format!(
                    "INSERT INTO {} (keep) VALUES ($1)
                     ON CONFLICT (id) DO UPDATE SET keep = excluded.keep",
                    names.events_state
                ),
                &[&keep],
            )
            .await
            .map_err(|e| driver("setting the event log's retention", e))?;
            Some(keep)
        }
        None if log_version > 0 => tx
            .query_opt(
                &format!("SELECT keep FROM {} WHERE id", names.events_state),
                &[],
            )
            .await
            .and_then(|row| row.map(|r| r.try_get::<_, i64>(0)).transpose())
            .map_err(|e| driver("reading the event log's retention", e))?,
        None => None,
    })
}
