//! `sessions list`, `sessions show`, `sessions revoke`.

use std::io::Write;

use anyhow::{Context as _, anyhow, bail};
use cloakroom::store::{Record, SessionInfo, SessionStore, end_session, end_user};
use cloakroom::{KeyRing, SessionKey, Timestamp};
use cloakroom_core::cookie::decode_ticket;
use cloakroom_core::session::{EndReason, SessionId, seal};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::render::{self, clean, truncate, write_json};
use crate::scan::{Progress, for_each_session};
use crate::table::{Align, Table};
use crate::{ListArgs, RevokeArgs, ShowArgs};

/// Field names starting with this belong to the library (CSRF secret, flash messages).
const INTERNAL_PREFIX: &str = "__cr.";

/// Fields whose values are secrets: never printed, in any format.
const SECRET_FIELDS: [&str; 1] = ["__cr.csrf"];

/// The field holding the last authentication (`{"at": ms, "method": NAME}`).
const AUTH_FIELD: &str = "__cr.auth";

/// What replaces a secret value.
const REDACTED: &str = "REDACTED";

/// What a sealed value (or user agent) is shown as.
const SEALED: &str = "SEALED";

/// The user agent as shown: sealed ones as [`SEALED`].
fn shown_agent(agent: Option<&str>) -> Option<&str> {
    agent.map(|a| if seal::is_sealed(a) { SEALED } else { a })
}

/// Characters of the user agent shown in the table.
const USER_AGENT_WIDTH: usize = 40;

/// `sessions list`: the live sessions of the store (or of `--user`), most recently seen
/// first, as an aligned table or, with `--json`, an array of objects.
///
/// # Errors
/// Store failures and output errors.
pub async fn list(
    store: &dyn SessionStore,
    args: &ListArgs,
    now: Timestamp,
    progress: &mut Progress,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let limit = args.limit.map(usize::from);
    let mut sessions = match &args.user {
        Some(user) => store
            .sessions_of(user)
            .await
            .with_context(|| format!("listing the sessions of user {:?}", clean(user)))?,
        None => {
            let mut sessions = Vec::new();
            for_each_session(store, limit, progress, |info| sessions.push(info)).await?;
            sessions
        }
    };
    sessions.sort_by(|a, b| {
        (b.meta.last_seen, b.meta.created_at).cmp(&(a.meta.last_seen, a.meta.created_at))
    });
    // Each user's live sessions among those listed (with --user: all of them), to compare
    // with an app's `max_sessions_per_user`.
    let mut per_user: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for s in &sessions {
        if let Some(user) = &s.meta.user {
            *per_user.entry(user.clone()).or_default() += 1;
        }
    }
    if let Some(limit) = limit {
        sessions.truncate(limit);
    }
    if args.json {
        let mut list: Vec<SessionJson<'_>> = sessions
            .iter()
            .map(|s| {
                let mut json = SessionJson::new(s);
                json.user_sessions = s.meta.user.as_ref().and_then(|u| per_user.get(u).copied());
                json
            })
            .collect();
        // The last authentication is a data field: one load per session, for `--json` only.
        for entry in &mut list {
            let record = store.load(&entry.key).await.context("loading a session")?;
            entry.last_authentication = record.as_ref().and_then(last_authentication);
        }
        write_json(out, &list)?;
        return Ok(());
    }
    let scope = match &args.user {
        Some(user) => format!(" of user {}", clean(user)),
        None => String::new(),
    };
    if sessions.is_empty() {
        writeln!(out, "no sessions{scope}")?;
        return Ok(());
    }
    let mut table = Table::new(&[
        ("HANDLE", Align::Left),
        ("USER", Align::Left),
        ("CREATED (UTC)", Align::Left),
        ("LAST SEEN", Align::Left),
        ("EXPIRES", Align::Left),
        ("FIELDS", Align::Right),
        ("BYTES", Align::Right),
        ("BOUND", Align::Left),
        ("USER AGENT", Align::Left),
    ]);
    for info in &sessions {
        let meta = &info.meta;
        table.row(vec![
            info.key.to_handle(),
            meta.user.as_deref().map_or_else(|| "-".to_owned(), clean),
            render::time(meta.created_at),
            render::time(meta.last_seen),
            format!(
                "{} ({})",
                render::time(meta.expires_at),
                render::relative(now, meta.expires_at)
            ),
            info.fields.to_string(),
            info.data_bytes.to_string(),
            if info.device_bound { "device" } else { "-" }.to_owned(),
            shown_agent(meta.user_agent.as_deref())
                .map_or_else(|| "-".to_owned(), |ua| truncate(ua, USER_AGENT_WIDTH)),
        ]);
    }
    table.write(out)?;
    writeln!(
        out,
        "{}{scope}",
        render::count(sessions.len() as u64, "session")
    )?;
    Ok(())
}

/// `sessions show HANDLE`: the session's bookkeeping and its data, each value decoded from
/// its JSON text; the library's own `__cr.*` fields under "internal", the CSRF secret as
/// `REDACTED`.
///
/// # Errors
/// "no such session" when the store has no live session under the handle; store failures.
pub async fn show(
    store: &dyn SessionStore,
    args: &ShowArgs,
    now: Timestamp,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (key, id) = match (&args.ticket, args.handle) {
        (Some(ticket), _) => {
            let id = ticket_id(ticket, args.keys.as_deref())?;
            (id.key(), Some(id))
        }
        (None, Some(key)) => (key, None),
        (None, None) => bail!("sessions show needs a HANDLE or --ticket TICKET"),
    };
    let mut record = store
        .load(&key)
        .await
        .context("loading the session")?
        // A rotation grace's forwarding record is no session.
        .filter(|r| !r.is_forward())
        .ok_or_else(|| no_such_session(&key))?;
    if let Some(id) = &id {
        seal::open_record(id, &key, &mut record)
            .context("the session's sealed data does not open (altered or moved)")?;
    }
    let fields = decode_fields(&record);
    let info = record.info(key);
    if args.json {
        let map = |internal: bool| -> Map<String, Value> {
            fields
                .iter()
                .filter(|f| f.internal == internal)
                .map(|f| (f.name.clone(), f.value.json()))
                .collect()
        };
        let mut session = SessionJson::new(&info);
        session.last_authentication = last_authentication(&record);
        let shown = ShowJson {
            session,
            data: map(false),
            internal: map(true),
            undecodable: fields
                .iter()
                .filter(|f| matches!(f.value, Decoded::Raw(_)))
                .map(|f| f.name.as_str())
                .collect(),
            sealed: fields
                .iter()
                .filter(|f| matches!(f.value, Decoded::Sealed))
                .map(|f| f.name.as_str())
                .collect(),
        };
        write_json(out, &shown)?;
        return Ok(());
    }
    write_meta(&info, now, out)?;
    for (heading, internal) in [("data", false), ("internal", true)] {
        writeln!(out)?;
        writeln!(out, "{heading}:")?;
        let mut any = false;
        for field in fields.iter().filter(|f| f.internal == internal) {
            any = true;
            let value = match &field.value {
                Decoded::Redacted => REDACTED.to_owned(),
                Decoded::Sealed => format!("{SEALED} (--ticket opens it)"),
                Decoded::Json(value) => {
                    let pretty = serde_json::to_string_pretty(value)?;
                    // Later lines of a multi-line value line up under the field name.
                    clean_lines(&pretty).join("\n  ")
                }
                Decoded::Raw(text) => format!("{} (not JSON)", clean(text)),
            };
            writeln!(out, "  {} = {value}", clean(&field.name))?;
        }
        if !any {
            writeln!(out, "  (none)")?;
        }
    }
    Ok(())
}

/// Writes, under the key of a session just revoked, the marker that tells its next request
/// why (until the session would have expired).
async fn leave_reason(
    store: &dyn SessionStore,
    key: &SessionKey,
    expires_at: Timestamp,
    reason: Option<&str>,
) -> anyhow::Result<()> {
    let marker = Record::ended_by_admin(Timestamp::now(), expires_at, reason);
    store
        .create(key, &marker)
        .await
        .context("leaving the reason for the user")?;
    Ok(())
}

/// `sessions revoke HANDLE` (delete one session) or `sessions revoke --user U` (delete all
/// of a user's sessions, printing how many).
///
/// # Errors
/// "no such session" when there was no live session under the handle; store failures.
pub async fn revoke(
    store: &dyn SessionStore,
    args: &RevokeArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let reason = args.reason.as_deref();
    match (&args.handle, &args.user) {
        (Some(key), _) => {
            let expires_at = match reason {
                Some(_) => (store.load(key).await.context("loading the session")?)
                    .filter(|r| !r.is_ended() && !r.is_forward())
                    .map(|r| r.meta.expires_at),
                None => None,
            };
            let revoked = end_session(store, key, EndReason::Revoked, None);
            let deleted = revoked.await.context("revoking the session")?;
            if !deleted {
                return Err(no_such_session(key));
            }
            if let Some(expires_at) = expires_at {
                leave_reason(store, key, expires_at, reason).await?;
            }
            writeln!(out, "revoked session {}", key.to_handle())?;
        }
        (None, Some(user)) => {
            // With a reason, the sessions listed first get their marker once all are deleted
            // (one created between the listing and the deletion is ended without one).
            let listed = match reason {
                Some(_) => (store.sessions_of(user).await).context("listing the sessions")?,
                None => Vec::new(),
            };
            let n = end_user(store, user, None, EndReason::Revoked)
                .await
                .with_context(|| format!("revoking the sessions of user {:?}", clean(user)))?;
            for s in &listed {
                leave_reason(store, &s.key, s.meta.expires_at, reason).await?;
            }
            writeln!(
                out,
                "revoked {} of user {}",
                render::count(n, "session"),
                clean(user)
            )?;
        }
        (None, None) => bail!("sessions revoke needs a HANDLE or --user USER"),
    }
    Ok(())
}

/// The session id in `ticket` (`NAME=VALUE`, or a bare value of the default cookie names),
/// verified with `keys`. Errors never quote the ticket.
fn ticket_id(ticket: &str, keys: Option<&str>) -> anyhow::Result<SessionId> {
    let keys = keys.context("--ticket needs the app's keys: pass --keys or set CLOAKROOM_KEYS")?;
    let ring = KeyRing::from_base64_list(keys).context("bad --keys / CLOAKROOM_KEYS")?;
    let ticket = ticket.trim();
    let tries: Vec<(&str, &str)> = match ticket.split_once('=') {
        Some((name, value)) if !name.is_empty() => vec![(name, value)],
        _ => vec![("__Host-session", ticket), ("session", ticket)],
    };
    (tries.into_iter())
        .find_map(|(name, value)| decode_ticket(&ring, name, value).ok())
        .context("the ticket does not verify with these keys (or under that cookie name)")
}

fn no_such_session(key: &SessionKey) -> anyhow::Error {
    anyhow!(
        "no such session: {} (expired, revoked or never there)",
        key.to_handle()
    )
}

/// A session's summary in `--json` output: times as RFC 3339 and as milliseconds since the
/// epoch.
#[derive(Debug, Serialize)]
struct SessionJson<'a> {
    #[serde(skip)]
    key: SessionKey,
    handle: String,
    user: Option<&'a str>,
    created_at: String,
    created_at_ms: i64,
    last_seen: String,
    last_seen_ms: i64,
    expires_at: String,
    expires_at_ms: i64,
    fields: usize,
    data_bytes: usize,
    user_agent: Option<&'a str>,
    remember: bool,
    /// When and how the user last proved who they are (login or reauthentication):
    /// `{"at", "at_ms", "method"}`, `"SEALED"` when sealed at rest, `null` without one.
    last_authentication: Option<Value>,
    /// Bound to a device key (DBSC registered).
    device_bound: bool,
    /// `sessions list`: the user's live sessions among those listed (all of them with
    /// `--user`; before `--limit`), to compare with the app's limit on concurrent sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    user_sessions: Option<usize>,
}

impl<'a> SessionJson<'a> {
    fn new(info: &'a SessionInfo) -> Self {
        let meta = &info.meta;
        SessionJson {
            key: info.key,
            handle: info.key.to_handle(),
            user: meta.user.as_deref(),
            created_at: meta.created_at.to_string(),
            created_at_ms: meta.created_at.as_millis(),
            last_seen: meta.last_seen.to_string(),
            last_seen_ms: meta.last_seen.as_millis(),
            expires_at: meta.expires_at.to_string(),
            expires_at_ms: meta.expires_at.as_millis(),
            fields: info.fields,
            data_bytes: info.data_bytes,
            user_agent: shown_agent(meta.user_agent.as_deref()),
            remember: meta.remember,
            last_authentication: None,
            device_bound: info.device_bound,
            user_sessions: None,
        }
    }
}

/// The library's record of the last authentication (`__cr.auth`) as shown: time and method,
/// [`SEALED`], or `None` (no login, or a value that does not parse).
fn last_authentication(record: &Record) -> Option<Value> {
    let text = record.data.get(AUTH_FIELD)?;
    if seal::is_sealed(text) {
        return Some(Value::String(SEALED.to_owned()));
    }
    let stored: Value = serde_json::from_str(text).ok()?;
    let at = Timestamp::from_millis(stored["at"].as_i64()?);
    let method = stored["method"].as_str()?;
    Some(serde_json::json!({ "at": at.to_string(), "at_ms": at.as_millis(), "method": method }))
}

/// `sessions show --json`: the summary, then the decoded fields.
#[derive(Debug, Serialize)]
struct ShowJson<'a> {
    #[serde(flatten)]
    session: SessionJson<'a>,
    /// The application's fields.
    data: Map<String, Value>,
    /// The library's own `__cr.*` fields, secrets redacted.
    internal: Map<String, Value>,
    /// Fields whose stored text is not JSON (their value is given as a string of it).
    undecodable: Vec<&'a str>,
    /// Fields sealed at rest (their value is given as `"SEALED"`; `--ticket` opens them).
    sealed: Vec<&'a str>,
}

/// The header of `sessions show`.
fn write_meta(info: &SessionInfo, now: Timestamp, out: &mut impl Write) -> anyhow::Result<()> {
    let meta = &info.meta;
    let time = |ts: Timestamp| format!("{} UTC ({})", render::time(ts), render::relative(now, ts));
    let or_none = |text: &Option<String>| text.as_deref().map_or_else(|| "-".to_owned(), clean);
    let lines = [
        ("handle", info.key.to_handle()),
        ("user", or_none(&meta.user)),
        ("created", time(meta.created_at)),
        ("last seen", time(meta.last_seen)),
        ("expires", time(meta.expires_at)),
        (
            "remember",
            if meta.remember { "yes" } else { "no" }.to_owned(),
        ),
        (
            "device-bound",
            if info.device_bound {
                "yes (DBSC)"
            } else {
                "no"
            }
            .to_owned(),
        ),
        (
            "user agent",
            shown_agent(meta.user_agent.as_deref()).map_or_else(|| "-".to_owned(), clean),
        ),
        (
            "fields",
            format!("{} ({} bytes)", info.fields, info.data_bytes),
        ),
    ];
    for (label, value) in lines {
        writeln!(out, "{label:<11} {value}")?;
    }
    Ok(())
}

/// One session field, decoded for display.
#[derive(Debug)]
struct Field {
    name: String,
    internal: bool,
    value: Decoded,
}

#[derive(Debug)]
enum Decoded {
    /// A secret: the value was not even decoded.
    Redacted,
    /// Sealed at rest; opened only with the session's ticket.
    Sealed,
    Json(Value),
    /// Not valid JSON (shown as the raw text).
    Raw(String),
}

impl Decoded {
    fn json(&self) -> Value {
        match self {
            Decoded::Redacted => Value::String(REDACTED.to_owned()),
            Decoded::Sealed => Value::String(SEALED.to_owned()),
            Decoded::Json(value) => value.clone(),
            Decoded::Raw(text) => Value::String(text.clone()),
        }
    }
}

fn decode_fields(record: &Record) -> Vec<Field> {
    record
        .data
        .iter()
        .map(|(name, text)| {
            let value = if SECRET_FIELDS.contains(&name.as_str()) {
                Decoded::Redacted
            } else if seal::is_sealed(text) {
                Decoded::Sealed
            } else {
                serde_json::from_str(text)
                    .map_or_else(|_| Decoded::Raw(text.clone()), Decoded::Json)
            };
            Field {
                name: name.clone(),
                internal: name.starts_with(INTERNAL_PREFIX),
                value,
            }
        })
        .collect()
}

/// The lines of `text`, each [cleaned](clean) (serde_json leaves DEL, C1 controls, bidi and
/// zero-width characters as they are).
fn clean_lines(text: &str) -> Vec<String> {
    text.lines().map(clean).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_authentication_is_shown_sealed_or_not_at_all() {
        let mut record = Record::new(Timestamp::from_millis(0), Timestamp::from_millis(1));
        assert_eq!(last_authentication(&record), None);
        let at = 1_764_320_000_000_i64;
        let plain = format!(r#"{{"at":{at},"method":"passkey"}}"#);
        record.data.insert(AUTH_FIELD.into(), plain);
        assert_eq!(
            last_authentication(&record).unwrap(),
            serde_json::json!({"at": "2025-11-28T08:53:20Z", "at_ms": at, "method": "passkey"})
        );
        record.data.insert(AUTH_FIELD.into(), "~1AAAA".into());
        assert_eq!(last_authentication(&record).unwrap(), SEALED);
        record.data.insert(AUTH_FIELD.into(), "not json".into());
        assert_eq!(last_authentication(&record), None);
    }

    #[test]
    fn secrets_are_never_decoded_and_internal_fields_are_apart() {
        let mut record = Record::new(Timestamp::from_millis(0), Timestamp::from_millis(1));
        record.data.insert("__cr.csrf".into(), "\"s3cret\"".into());
        record.data.insert("__cr.flash".into(), "[]".into());
        record.data.insert("cart".into(), "[1,2]".into());
        record.data.insert("odd".into(), "not json".into());
        let fields = decode_fields(&record);
        let by_name = |n: &str| fields.iter().find(|f| f.name == n).unwrap();
        assert!(matches!(by_name("__cr.csrf").value, Decoded::Redacted));
        assert!(by_name("__cr.flash").internal && !by_name("cart").internal);
        assert_eq!(by_name("cart").value.json(), serde_json::json!([1, 2]));
        assert_eq!(by_name("odd").value.json(), serde_json::json!("not json"));
    }
}
