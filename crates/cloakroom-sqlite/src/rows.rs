//! Rows of the `sessions` table <-> records: columns, the data as JSON, patches as JSON merge
//! patches, keys and cursors as blobs.

use cloakroom_core::session::{SessionKey, Timestamp};
use cloakroom_core::store::{
    Cursor, Error, ErrorKind, Fields, Meta, Patch, Record, Result, SessionInfo,
};
use rusqlite::Row;

/// The columns [`raw_row`] reads, in its order (a macro, for `concat!`).
macro_rules! columns {
    () => {
        "key, user, created_at, last_seen, expires_at, user_agent, remember, data"
    };
}
pub(crate) use columns;

pub(crate) const COLUMNS: &str = columns!();

/// A row as read: the data column still JSON.
pub(crate) struct RawRow {
    pub(crate) key: [u8; SessionKey::LEN],
    meta: Meta,
    data: String,
}

pub(crate) fn raw_row(row: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        key: row.get(0)?,
        meta: Meta {
            user: row.get(1)?,
            created_at: Timestamp::from_millis(row.get(2)?),
            last_seen: Timestamp::from_millis(row.get(3)?),
            expires_at: Timestamp::from_millis(row.get(4)?),
            user_agent: row.get(5)?,
            remember: row.get(6)?,
        },
        data: row.get(7)?,
    })
}

impl RawRow {
    pub(crate) fn record(self) -> Result<Record> {
        Ok(Record {
            data: decode_data(&self.data)?,
            meta: self.meta,
        })
    }

    pub(crate) fn info(self) -> Result<SessionInfo> {
        let key = SessionKey::from_bytes(self.key);
        Ok(self.record()?.info(key))
    }
}

pub(crate) fn decode_data(json: &str) -> Result<Fields> {
    serde_json::from_str(json).map_err(|e| {
        Error::new(
            ErrorKind::Corrupt,
            "a session's data column is not a JSON object of strings",
        )
        .with_source(e)
    })
}

pub(crate) fn encode_data(fields: &Fields) -> String {
    serde_json::to_string(fields).expect("a map of strings always serializes")
}

/// The RFC 7396 merge patch for `patch`, or `None` when it changes no field. Removals go
/// in first so that a field both removed and set ends up set, as in [`Record::apply`].
pub(crate) fn merge_patch(patch: &Patch) -> Option<String> {
    if patch.set.is_empty() && patch.remove.is_empty() {
        return None;
    }
    let mut doc = serde_json::Map::new();
    for name in &patch.remove {
        doc.insert(name.clone(), serde_json::Value::Null);
    }
    for (name, json) in &patch.set {
        doc.insert(name.clone(), serde_json::Value::String(json.clone()));
    }
    Some(serde_json::Value::Object(doc).to_string())
}

pub(crate) fn key_param(key: &SessionKey) -> &[u8] {
    key.as_bytes()
}

pub(crate) fn parse_cursor(cursor: &Cursor) -> Result<Vec<u8>> {
    if cursor.as_str().is_empty() {
        return Ok(Vec::new()); // sorts before every key
    }
    SessionKey::from_handle(cursor.as_str())
        .map(|k| k.as_bytes().to_vec())
        .ok_or_else(|| Error::new(ErrorKind::Config, "invalid scan cursor"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloakroom_core::session::Timestamp;

    #[test]
    fn merge_patches_set_fields_as_strings_and_remove_with_null() {
        let now = Timestamp::from_millis(0);
        let p = Patch::new(now, now)
            .remove("a")
            .set("b", "null")
            .set("a", "[1]");
        assert_eq!(merge_patch(&p).unwrap(), r#"{"a":"[1]","b":"null"}"#);
        let p = Patch::new(now, now).remove("gone");
        assert_eq!(merge_patch(&p).unwrap(), r#"{"gone":null}"#);
        assert_eq!(merge_patch(&Patch::new(now, now)), None);
    }

    #[test]
    fn cursors_are_handles() {
        assert_eq!(parse_cursor(&Cursor::start()).unwrap(), Vec::<u8>::new());
        let key = SessionKey::from_bytes([7; 16]);
        assert_eq!(
            parse_cursor(&Cursor::new(key.to_handle())).unwrap(),
            vec![7; 16]
        );
        let err = parse_cursor(&Cursor::new("0:abc")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    #[test]
    fn data_round_trips_and_garbage_is_corrupt() {
        let mut fields = Fields::new();
        fields.insert("a\"b".into(), "\"\\u0000\"".into());
        assert_eq!(decode_data(&encode_data(&fields)).unwrap(), fields);
        assert_eq!(decode_data("[1]").unwrap_err().kind(), ErrorKind::Corrupt);
        assert_eq!(
            decode_data(r#"{"a":1}"#).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }
}
