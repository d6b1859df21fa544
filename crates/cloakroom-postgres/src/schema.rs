//! Versioned migrations, applied at start-up under an advisory lock.

use cloakroom_core::store::{Error, ErrorKind, Result};

use crate::error::driver;

/// The migrations, in order; version `n` is `MIGRATIONS[n - 1]`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_challenges.sql"),
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
            .replace("{challenges}", &self.challenges)
            .replace("{by_user}", &index("by_user"))
            .replace("{by_expiry}", &index("by_expiry"))
    }
}

/// A validated identifier (ASCII letters, digits, `_`) in double quotes.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Brings the table to [`SCHEMA_VERSION`], or refuses a newer or foreign one.
pub(crate) async fn migrate(
    client: &mut deadpool_postgres::ClientWrapper,
    names: &Names,
) -> Result<()> {
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
    tx.commit()
        .await
        .map_err(|e| driver("committing the schema migration", e))
}
