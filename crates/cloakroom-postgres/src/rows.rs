//! Rows <-> records. `data` is a jsonb object of field name -> the field's JSON text as a
//! JSON string, kept verbatim.
//!
//! PostgreSQL text and jsonb cannot hold U+0000, which field names (and, in principle,
//! values) may contain. Such a string, and any string starting with U+0001, is stored as
//! U+0001 followed by the hex of its UTF-8 bytes; every other string is stored as is.

use std::borrow::Cow;

use cloakroom_core::session::{SessionKey, Timestamp};
use cloakroom_core::store::{Error, ErrorKind, Fields, Meta, Patch, Record, Result, SessionInfo};
use serde_json::{Map, Value};
use tokio_postgres::Row;

/// The columns every SELECT reads, in this order.
pub(crate) const COLUMNS: &str =
    r#"key, "user", created_at, last_seen, expires_at, user_agent, remember, data"#;

const MARK: char = '\u{1}';

pub(crate) fn encode_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') || s.starts_with(MARK) {
        let mut out = String::with_capacity(1 + 2 * s.len());
        out.push(MARK);
        for b in s.as_bytes() {
            out.push_str(&format!("{b:02x}"));
        }
        Cow::Owned(out)
    } else {
        Cow::Borrowed(s)
    }
}

pub(crate) fn decode_text(s: String) -> Result<String> {
    let Some(hex) = s.strip_prefix(MARK) else {
        return Ok(s);
    };
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| corrupt("a session field is badly escaped"))?;
    String::from_utf8(bytes).map_err(|_| corrupt("a session field is badly escaped"))
}

fn corrupt(message: &'static str) -> Error {
    Error::new(ErrorKind::Corrupt, message)
}

/// The jsonb object for a record's data.
pub(crate) fn encode_data(fields: &Fields) -> Value {
    let map: Map<String, Value> = fields
        .iter()
        .map(|(k, v)| {
            (
                encode_text(k).into_owned(),
                Value::String(encode_text(v).into_owned()),
            )
        })
        .collect();
    Value::Object(map)
}

/// A patch's fields to set (a jsonb object, later sets winning) and names to remove.
pub(crate) fn encode_patch(patch: &Patch) -> (Value, Vec<String>) {
    let mut set = Map::new();
    for (k, v) in &patch.set {
        set.insert(
            encode_text(k).into_owned(),
            Value::String(encode_text(v).into_owned()),
        );
    }
    let removed = patch
        .remove
        .iter()
        .map(|k| encode_text(k).into_owned())
        .collect();
    (Value::Object(set), removed)
}

fn decode_data(value: Value) -> Result<Fields> {
    let Value::Object(map) = value else {
        return Err(corrupt("a session's data column is not a JSON object"));
    };
    map.into_iter()
        .map(|(k, v)| match v {
            Value::String(v) => Ok((decode_text(k)?, decode_text(v)?)),
            _ => Err(corrupt(
                "a session's data column holds a value that is not a string",
            )),
        })
        .collect()
}

/// A row read with [`COLUMNS`].
pub(crate) fn record(row: &Row) -> Result<(SessionKey, Record)> {
    let bad = |e: tokio_postgres::Error| {
        Error::new(ErrorKind::Corrupt, "a session row could not be decoded").with_source(e)
    };
    let key: &[u8] = row.try_get(0).map_err(bad)?;
    let key: [u8; SessionKey::LEN] = key
        .try_into()
        .map_err(|_| corrupt("a session key is not 16 bytes"))?;
    let meta = Meta {
        user: row.try_get(1).map_err(bad)?,
        created_at: Timestamp::from_millis(row.try_get(2).map_err(bad)?),
        last_seen: Timestamp::from_millis(row.try_get(3).map_err(bad)?),
        expires_at: Timestamp::from_millis(row.try_get(4).map_err(bad)?),
        user_agent: row.try_get(5).map_err(bad)?,
        remember: row.try_get(6).map_err(bad)?,
    };
    let data = decode_data(row.try_get(7).map_err(bad)?)?;
    Ok((SessionKey::from_bytes(key), Record { data, meta }))
}

pub(crate) fn info(row: &Row) -> Result<SessionInfo> {
    let (key, record) = record(row)?;
    Ok(record.info(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_strings_round_trip_and_plain_ones_stay_readable() {
        for s in ["", "plain", "nul\0byte", "\u{1}starts", "a\u{1}b", "ü\0🔑"] {
            let enc = encode_text(s);
            assert!(!enc.contains('\0'));
            assert_eq!(decode_text(enc.into_owned()).unwrap(), s);
        }
        assert!(matches!(encode_text("plain"), Cow::Borrowed("plain")));
        assert_eq!(
            decode_text("\u{1}zz".into()).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }

    #[test]
    fn patches_set_last_write_and_list_removals() {
        let now = Timestamp::from_millis(0);
        let p = Patch::new(now, now)
            .set("a", "1")
            .set("a", "2")
            .remove("b\0");
        let (set, removed) = encode_patch(&p);
        assert_eq!(set, serde_json::json!({"a": "2"}));
        assert_eq!(removed, vec![encode_text("b\0").into_owned()]);
        assert_eq!(
            decode_data(serde_json::json!({"a": 1})).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }
}
