//! How a [`Record`] is laid out in a Redis hash, and reading replies.
//!
//! Data field `name` is the hash field `d:name` (the value is the JSON text, verbatim);
//! metadata is `m:created`, `m:seen`, `m:exp` (milliseconds since the epoch, decimal),
//! `m:user`, `m:ua` (absent when `None`) and `m:rem` (`1` or `0`). The prefixes keep data
//! and metadata apart whatever the field names are.

use cloakroom_core::session::Timestamp;
use cloakroom_core::store::{Error, ErrorKind, Meta, Patch, Record, Result};
use redis::Value;

pub(crate) const DATA: &str = "d:";
const CREATED: &[u8] = b"m:created";
const SEEN: &[u8] = b"m:seen";
const EXPIRES: &[u8] = b"m:exp";
const USER: &[u8] = b"m:user";
const USER_AGENT: &[u8] = b"m:ua";
const REMEMBER: &[u8] = b"m:rem";

fn corrupt(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Corrupt, message.into())
}

/// `ARGV` of the create script: now, expires at, then every field/value pair.
pub(crate) fn create_args(record: &Record, now: Timestamp) -> Vec<Vec<u8>> {
    let meta = &record.meta;
    let mut args = Vec::with_capacity(2 + 2 * (record.data.len() + 6));
    args.push(now.as_millis().to_string().into_bytes());
    args.push(meta.expires_at.as_millis().to_string().into_bytes());
    let mut pair = |name: &[u8], value: Vec<u8>| {
        args.push(name.to_vec());
        args.push(value);
    };
    pair(
        CREATED,
        meta.created_at.as_millis().to_string().into_bytes(),
    );
    pair(SEEN, meta.last_seen.as_millis().to_string().into_bytes());
    pair(
        EXPIRES,
        meta.expires_at.as_millis().to_string().into_bytes(),
    );
    pair(REMEMBER, remember(meta.remember).to_vec());
    if let Some(user) = &meta.user {
        pair(USER, user.as_bytes().to_vec());
    }
    if let Some(ua) = &meta.user_agent {
        pair(USER_AGENT, ua.as_bytes().to_vec());
    }
    for (name, value) in &record.data {
        args.push(data_field(name));
        args.push(value.as_bytes().to_vec());
    }
    args
}

/// `ARGV` of the apply script (see [`crate::scripts::APPLY`]).
pub(crate) fn apply_args(patch: &Patch, now: Timestamp) -> Vec<Vec<u8>> {
    let mut args = Vec::with_capacity(9 + patch.remove.len() + 2 * patch.set.len());
    args.push(now.as_millis().to_string().into_bytes());
    args.push(
        patch
            .max_lifetime
            .map(|l| l.as_millis().to_string().into_bytes())
            .unwrap_or_default(),
    );
    args.push(patch.remove.len().to_string().into_bytes());
    args.extend(patch.remove.iter().map(|name| data_field(name)));
    args.push(SEEN.to_vec());
    args.push(patch.last_seen.as_millis().to_string().into_bytes());
    args.push(EXPIRES.to_vec());
    args.push(patch.expires_at.as_millis().to_string().into_bytes());
    if let Some(flag) = patch.remember {
        args.push(REMEMBER.to_vec());
        args.push(remember(flag).to_vec());
    }
    for (name, value) in &patch.set {
        args.push(data_field(name));
        args.push(value.as_bytes().to_vec());
    }
    args
}

fn remember(flag: bool) -> &'static [u8] {
    if flag { b"1" } else { b"0" }
}

fn data_field(name: &str) -> Vec<u8> {
    let mut field = Vec::with_capacity(DATA.len() + name.len());
    field.extend_from_slice(DATA.as_bytes());
    field.extend_from_slice(name.as_bytes());
    field
}

/// Decodes an `HGETALL` reply. `None` for a missing key or a record expired at `now`.
pub(crate) fn decode_record(reply: Value, now: Timestamp) -> Result<Option<Record>> {
    let pairs = pairs(reply)?;
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut record = Record::default();
    let (mut created, mut seen, mut expires) = (None, None, None);
    let mut remember_flag = None;
    for (field, value) in pairs {
        if let Some(name) = field.strip_prefix(DATA.as_bytes()) {
            record
                .data
                .insert(utf8(name, "field name")?, utf8(&value, "value")?);
            continue;
        }
        match field.as_slice() {
            CREATED => created = Some(millis(&value)?),
            SEEN => seen = Some(millis(&value)?),
            EXPIRES => expires = Some(millis(&value)?),
            USER => record.meta.user = Some(utf8(&value, "user")?),
            USER_AGENT => record.meta.user_agent = Some(utf8(&value, "user agent")?),
            REMEMBER => {
                remember_flag = Some(match value.as_slice() {
                    b"1" => true,
                    b"0" => false,
                    _ => return Err(corrupt("remember flag is neither 0 nor 1")),
                })
            }
            // Fields written by a later version: ignore them.
            _ => {}
        }
    }
    let (Some(created), Some(seen), Some(expires), Some(remember_flag)) =
        (created, seen, expires, remember_flag)
    else {
        return Err(corrupt("session record without its metadata fields"));
    };
    if expires <= now {
        return Ok(None);
    }
    record.meta = Meta {
        created_at: created,
        last_seen: seen,
        expires_at: expires,
        remember: remember_flag,
        ..record.meta
    };
    Ok(Some(record))
}

fn millis(value: &[u8]) -> Result<Timestamp> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Timestamp)
        .ok_or_else(|| corrupt("timestamp is not a decimal number"))
}

fn utf8(bytes: &[u8], what: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| corrupt(format!("{what} is not UTF-8")))
}

/// The bytes of a string reply.
pub(crate) fn bytes(value: Value) -> Result<Vec<u8>> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::VerbatimString { text, .. } => Ok(text.into_bytes()),
        other => Err(corrupt(format!(
            "expected a string reply, got {}",
            kind(&other)
        ))),
    }
}

/// An integer reply.
pub(crate) fn int(value: Value) -> Result<i64> {
    match value {
        Value::Int(n) => Ok(n),
        Value::BulkString(b) => std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt("expected an integer reply")),
        other => Err(corrupt(format!(
            "expected an integer reply, got {}",
            kind(&other)
        ))),
    }
}

/// The items of an array or set reply (`Nil` is empty).
pub(crate) fn items(value: Value) -> Result<Vec<Value>> {
    match value {
        Value::Array(v) | Value::Set(v) => Ok(v),
        Value::Nil => Ok(Vec::new()),
        other => Err(corrupt(format!(
            "expected an array reply, got {}",
            kind(&other)
        ))),
    }
}

/// The field/value pairs of a map reply (RESP3) or a flat array (RESP2).
fn pairs(value: Value) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    match value {
        Value::Map(map) => map
            .into_iter()
            .map(|(k, v)| Ok((bytes(k)?, bytes(v)?)))
            .collect(),
        Value::Array(flat) => {
            if flat.len() % 2 != 0 {
                return Err(corrupt("odd number of items in a hash reply"));
            }
            let mut out = Vec::with_capacity(flat.len() / 2);
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((bytes(k)?, bytes(v)?));
            }
            Ok(out)
        }
        Value::Nil => Ok(Vec::new()),
        other => Err(corrupt(format!(
            "expected a hash reply, got {}",
            kind(&other)
        ))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Int(_) => "an integer",
        Value::BulkString(_) | Value::SimpleString(_) | Value::VerbatimString { .. } => "a string",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        Value::Set(_) => "a set",
        Value::Okay => "OK",
        Value::ServerError(_) => "an error",
        _ => "an unexpected reply",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    fn record() -> Record {
        let mut r = Record::new(Timestamp(1_000), Timestamp(i64::MAX));
        r.meta.user = Some("ada".into());
        r.meta.remember = true;
        r.data.insert("m:exp".into(), "\"not metadata\"".into());
        r.data.insert(String::new(), "1".into());
        r
    }

    /// The create arguments, read back as a hash reply, give the record.
    #[test]
    fn create_args_round_trip() {
        let r = record();
        let args = create_args(&r, Timestamp(0));
        let flat: Vec<Value> = args[2..].iter().map(|a| bulk(a)).collect();
        assert_eq!(
            decode_record(Value::Array(flat.clone()), Timestamp(5)).unwrap(),
            Some(r)
        );
        let map = flat
            .chunks(2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect();
        assert!(
            decode_record(Value::Map(map), Timestamp(5))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn expired_or_empty_is_none_and_junk_is_corrupt() {
        let r = Record::new(Timestamp(1_000), Timestamp(2_000));
        let flat: Vec<Value> = create_args(&r, Timestamp(0))[2..]
            .iter()
            .map(|a| bulk(a))
            .collect();
        assert!(
            decode_record(Value::Array(flat.clone()), Timestamp(1_999))
                .unwrap()
                .is_some()
        );
        assert!(
            decode_record(Value::Array(flat), Timestamp(2_000))
                .unwrap()
                .is_none()
        );
        assert!(
            decode_record(Value::Array(vec![]), Timestamp(0))
                .unwrap()
                .is_none()
        );
        let junk = Value::Array(vec![bulk(b"m:exp"), bulk(b"soon")]);
        let err = decode_record(junk, Timestamp(0)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        let partial = Value::Array(vec![bulk(b"d:x"), bulk(b"1")]);
        assert_eq!(
            decode_record(partial, Timestamp(0)).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        assert_eq!(
            decode_record(Value::Int(3), Timestamp(0))
                .unwrap_err()
                .kind(),
            ErrorKind::Corrupt
        );
    }

    #[test]
    fn apply_args_layout() {
        let mut p = Patch::new(Timestamp(7), Timestamp(9))
            .set("a", "1")
            .remove("b");
        p.remember = Some(false);
        let args = apply_args(&p, Timestamp(3));
        let text: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        assert_eq!(
            text,
            [
                &b"3"[..],
                b"",
                b"1",
                b"d:b",
                b"m:seen",
                b"7",
                b"m:exp",
                b"9",
                b"m:rem",
                b"0",
                b"d:a",
                b"1"
            ]
        );
        p.remember = None;
        p.max_lifetime = Some(std::time::Duration::from_secs(2));
        let args = apply_args(&p, Timestamp(3));
        assert_eq!(args[1], b"2000");
        assert_eq!(args.len(), 10, "no m:rem pair");
    }
}
