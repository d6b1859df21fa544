//! The statements of a store, built once from its table names.

use crate::events;
use crate::rows::COLUMNS;

/// The statements of one store (its table name spliced in).
pub(crate) struct Sql {
    pub(crate) load: String,
    pub(crate) create: String,
    pub(crate) apply: String,
    pub(crate) touch: String,
    pub(crate) delete: String,
    pub(crate) sessions_of: String,
    pub(crate) delete_user: String,
    pub(crate) scan: String,
    pub(crate) purge: String,
    pub(crate) put_challenge: String,
    pub(crate) take_challenge: String,
    pub(crate) purge_challenges: String,
    pub(crate) limit_lock: String,
    pub(crate) limit_live: String,
    pub(crate) limit_end: String,
    /// The event log's statements ([`events`]).
    pub(crate) log: events::LogSql,
}

impl Sql {
    /// `t`: the sessions table; `c`: the challenges table; `e`, `st`: the event log and its
    /// state.
    pub(crate) fn new(t: &str, c: &str, e: &str, st: &str) -> Self {
        Sql {
            log: events::LogSql::new(t, e, st),
            load: format!("SELECT {COLUMNS} FROM {t} WHERE key = $1 AND expires_at > $2"),
            // Inserts, or replaces a row only if it has expired: one statement, so two
            // creates of one key cannot both win.
            create: format!(
                r#"INSERT INTO {t} AS s (key, "user", created_at, last_seen, expires_at, user_agent, remember, data)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                   ON CONFLICT (key) DO UPDATE SET
                       "user" = excluded."user", created_at = excluded.created_at,
                       last_seen = excluded.last_seen, expires_at = excluded.expires_at,
                       user_agent = excluded.user_agent, remember = excluded.remember,
                       data = excluded.data
                   WHERE s.expires_at <= $9"#
            ),
            apply: format!(
                "UPDATE {t} SET
                     data = (data - $1::text[]) || $2::jsonb,
                     last_seen = $3,
                     expires_at = CASE WHEN $4::bigint IS NULL THEN $5::bigint
                                       ELSE least($5::bigint, created_at + $4::bigint) END,
                     remember = coalesce($6, remember)
                 WHERE key = $7 AND expires_at > $8
                   AND ($4::bigint IS NULL OR created_at + $4::bigint > $3)
                   AND ($9::bigint IS NULL OR last_seen + $9::bigint > $3)"
            ),
            touch: format!(
                "UPDATE {t} SET last_seen = $1, expires_at = $2 WHERE key = $3 AND expires_at > $4"
            ),
            // Deletes an expired row too (it is garbage), but reports only a live one.
            delete: format!("DELETE FROM {t} WHERE key = $1 RETURNING expires_at"),
            sessions_of: format!(
                r#"SELECT {COLUMNS} FROM {t} WHERE "user" = $1 AND expires_at > $2
                   ORDER BY last_seen DESC"#
            ),
            delete_user: format!(
                r#"DELETE FROM {t} WHERE "user" = $1 AND expires_at > $2
                   AND key IS DISTINCT FROM $3::bytea"#
            ),
            // Keyset pagination on the primary key: each page is one index range scan.
            scan: format!(
                "SELECT {COLUMNS} FROM {t} WHERE key > $1 AND expires_at > $2
                 ORDER BY key LIMIT $3"
            ),
            // The outer expiry check keeps a row re-created between the two scans.
            purge: format!(
                "DELETE FROM {t} WHERE key IN
                     (SELECT key FROM {t} WHERE expires_at <= $1 LIMIT $2)
                 AND expires_at <= $1"
            ),
            // Replaces only an expired row: one statement, so two puts cannot both win.
            put_challenge: format!(
                "INSERT INTO {c} AS x (challenge, session, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (challenge) DO UPDATE SET
                     session = excluded.session, expires_at = excluded.expires_at
                 WHERE x.expires_at <= $4"
            ),
            take_challenge: format!(
                "DELETE FROM {c} WHERE challenge = $1 RETURNING session, expires_at"
            ),
            purge_challenges: format!("DELETE FROM {c} WHERE expires_at <= $1"),
            // The admission of one user's logins, one at a time (per table and user; a hash
            // collision only makes two users wait for each other).
            limit_lock: format!("SELECT pg_advisory_xact_lock(hashtextextended('{t}:' || $1, 0))"),
            // The user's live sessions, and (`mine`) a live row under the new key.
            limit_live: format!(
                r#"SELECT key, last_seen, created_at, key = $3 AS mine FROM {t}
                   WHERE ("user" = $1 OR key = $3) AND expires_at > $2"#
            ),
            // Ended sessions become tombstones that keep their expiry.
            limit_end: format!(
                r#"UPDATE {t} SET "user" = NULL, user_agent = NULL, remember = false,
                       created_at = $2, last_seen = $2, data = $3
                   WHERE key = ANY($1)"#
            ),
        }
    }
}
