//! How a [`Record`] is laid out in a Redis hash, and reading replies.
//!
//! Data field `name` is the hash field `d:name` (the value is the JSON text, verbatim).
//! Metadata has one-letter fields: `e` (expires at) and `c` (created at), milliseconds since
//! the epoch in decimal (Redis keeps such values as 8-byte integers); `s` (last seen) only
//! once it differs from `c`; `r` (`1`, remember me) only when set; `u` (user) and `a` (user
//! agent) only when known. A one-field anonymous session is thus 3 fields, a 46-byte listpack
//! (48 with the allocator's rounding). Data fields always start with `d:`, so no data field
//! can pass for metadata.

use cloakroom_core::session::Timestamp;
use cloakroom_core::store::{Error, ErrorKind, Meta, Patch, Record, Result};
use redis::{FromRedisValue, Value};

pub(crate) const DATA: &str = "d:";
const CREATED: &[u8] = b"c";
const SEEN: &[u8] = b"s";
const EXPIRES: &[u8] = b"e";
const USER: &[u8] = b"u";
const USER_AGENT: &[u8] = b"a";
const REMEMBER: &[u8] = b"r";

fn corrupt(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Corrupt, message.into())
}

fn decimal(t: Timestamp) -> Vec<u8> {
    t.as_millis().to_string().into_bytes()
}

/// The metadata fields of a new record, as field/value pairs: `e`, `c`, then `s`, `r`, `u`,
/// `a` when they say something.
fn meta_fields(meta: &Meta) -> Vec<(&'static [u8], Vec<u8>)> {
    let mut pairs = vec![
        (EXPIRES, decimal(meta.expires_at)),
        (CREATED, decimal(meta.created_at)),
    ];
    if meta.last_seen != meta.created_at {
        pairs.push((SEEN, decimal(meta.last_seen)));
    }
    if meta.remember {
        pairs.push((REMEMBER, b"1".to_vec()));
    }
    if let Some(user) = &meta.user {
        pairs.push((USER, user.as_bytes().to_vec()));
    }
    if let Some(ua) = &meta.user_agent {
        pairs.push((USER_AGENT, ua.as_bytes().to_vec()));
    }
    pairs
}

/// `ARGV` of the create script (see [`crate::scripts::CREATE`]): now, expires at, then every
/// field/value pair of the record: the metadata, then the data fields.
pub(crate) fn create_args(record: &Record, now: Timestamp) -> Vec<Vec<u8>> {
    let meta = &record.meta;
    let mut args = Vec::with_capacity(2 + 2 * (record.data.len() + 6));
    args.push(decimal(now));
    args.push(decimal(meta.expires_at));
    for (name, value) in meta_fields(meta) {
        args.push(name.to_vec());
        args.push(value);
    }
    for (name, value) in &record.data {
        args.push(data_field(name));
        args.push(value.as_bytes().to_vec());
    }
    args
}

/// RDB type of a hash written as plain field and value strings.
const RDB_TYPE_HASH: u8 = 4;

/// The RDB version the payload claims: 9 (Redis 5 to 6.2). A server restores a payload of its
/// own version or an older one, and this type has been read the same way since Redis 2.
const RDB_VERSION: u16 = 9;

/// The checksum `DUMP` payloads end with (CRC-64/Jones, as Redis computes it).
const CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_REDIS);

/// An RDB length: 6, 14, 32 or 64 bits, big-endian, tagged in the top two bits.
fn rdb_len(out: &mut Vec<u8>, len: usize) {
    match u32::try_from(len) {
        Ok(n) if n < 1 << 6 => out.push(n as u8),
        Ok(n) if n < 1 << 14 => out.extend_from_slice(&((n as u16) | 0x4000).to_be_bytes()),
        Ok(n) => {
            out.push(0x80);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Err(_) => {
            out.push(0x81);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

fn rdb_string(out: &mut Vec<u8>, s: &[u8]) {
    rdb_len(out, s.len());
    out.extend_from_slice(s);
}

/// The record as a `DUMP` payload for `RESTORE` (see [`crate::restore`]): the same hash the
/// create script writes (`e`, `c`, the optional metadata, the data fields), RDB-encoded,
/// then the RDB version and the CRC-64 of all that, both little-endian.
pub(crate) fn restore_payload(record: &Record) -> Vec<u8> {
    let meta = meta_fields(&record.meta);
    let size = 32 + record.data_bytes() + 4 * record.data.len();
    let mut out = Vec::with_capacity(size + meta.iter().map(|(_, v)| v.len() + 16).sum::<usize>());
    out.push(RDB_TYPE_HASH);
    rdb_len(&mut out, meta.len() + record.data.len());
    for (name, value) in &meta {
        rdb_string(&mut out, name);
        rdb_string(&mut out, value);
    }
    for (name, value) in &record.data {
        rdb_string(&mut out, &data_field(name));
        rdb_string(&mut out, value.as_bytes());
    }
    out.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = CRC64.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// `ARGV` of the apply script (see [`crate::scripts::APPLY`]): now, max lifetime and max
/// idle time (ms, or empty), the number of fields to remove, those fields, last seen,
/// expires at, the remember flag (`1`, `0`, or empty: unchanged), then the data field/value
/// pairs to set.
pub(crate) fn apply_args(patch: &Patch, now: Timestamp) -> Vec<Vec<u8>> {
    let mut args = Vec::with_capacity(7 + patch.remove.len() + 2 * patch.set.len());
    args.push(decimal(now));
    for bound in [patch.max_lifetime, patch.max_idle] {
        args.push(
            bound
                .map(|l| l.as_millis().to_string().into_bytes())
                .unwrap_or_default(),
        );
    }
    args.push(patch.remove.len().to_string().into_bytes());
    args.extend(patch.remove.iter().map(|name| data_field(name)));
    args.push(decimal(patch.last_seen));
    args.push(decimal(patch.expires_at));
    args.push(
        patch
            .remember
            .map(|f| remember(f).to_vec())
            .unwrap_or_default(),
    );
    for (name, value) in &patch.set {
        args.push(data_field(name));
        args.push(value.as_bytes().to_vec());
    }
    args
}

pub(crate) fn remember(flag: bool) -> &'static [u8] {
    if flag { b"1" } else { b"0" }
}

pub(crate) fn data_field(name: &str) -> Vec<u8> {
    let mut field = Vec::with_capacity(DATA.len() + name.len());
    field.extend_from_slice(DATA.as_bytes());
    field.extend_from_slice(name.as_bytes());
    field
}

fn flag(value: &[u8]) -> Result<bool> {
    match value {
        b"1" => Ok(true),
        b"0" => Ok(false),
        _ => Err(corrupt("remember flag is neither 0 nor 1")),
    }
}

/// Decodes an `HGETALL` reply. `None` for a missing key or a record expired at `now`.
pub(crate) fn decode_record(hash: Value, now: Timestamp) -> Result<Option<Record>> {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = reply(hash)?;
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut record = Record::default();
    let (mut expires, mut created, mut seen) = (None, None, None);
    for (field, value) in pairs {
        if let Some(name) = field.strip_prefix(DATA.as_bytes()) {
            record
                .data
                .insert(utf8(name, "field name")?, utf8(&value, "value")?);
            continue;
        }
        let meta = &mut record.meta;
        match field.as_slice() {
            EXPIRES => expires = Some(millis(&value)?),
            CREATED => created = Some(millis(&value)?),
            SEEN => seen = Some(millis(&value)?),
            REMEMBER => meta.remember = flag(&value)?,
            USER => meta.user = Some(utf8(&value, "user")?),
            USER_AGENT => meta.user_agent = Some(utf8(&value, "user agent")?),
            // Fields written by a later version: ignore them.
            _ => {}
        }
    }
    let (Some(expires), Some(created)) = (expires, created) else {
        return Err(corrupt("session record without its metadata fields"));
    };
    if expires <= now {
        return Ok(None);
    }
    let meta = &mut record.meta;
    meta.created_at = created;
    meta.last_seen = seen.unwrap_or(created);
    meta.expires_at = expires;
    Ok(Some(record))
}

fn millis(value: &[u8]) -> Result<Timestamp> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Timestamp::from_millis)
        .ok_or_else(|| corrupt("timestamp is not a decimal number"))
}

fn utf8(bytes: &[u8], what: &str) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| corrupt(format!("{what} is not UTF-8")))
}

/// A reply as `T`, by redis-rs's conversions: a map or flat array of pairs, an array, a
/// string, an integer (also as text); a reply of another shape is corrupt data.
pub(crate) fn reply<T: FromRedisValue>(value: Value) -> Result<T> {
    T::from_redis_value(value).map_err(|e| corrupt(format!("unexpected reply from Redis: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    fn record() -> Record {
        let mut r = Record::new(
            Timestamp::from_millis(1_000),
            Timestamp::from_millis(i64::MAX),
        );
        r.meta.user = Some("ada".into());
        r.meta.remember = true;
        r.data.insert("c".into(), "\"not metadata\"".into());
        r.data.insert("e".into(), "\"not metadata either\"".into());
        r.data.insert(String::new(), "1".into());
        r
    }

    /// The hash the create script writes from `args`: `e`, `c`, then the pairs.
    fn created_hash(args: &[Vec<u8>]) -> Vec<Value> {
        args[2..].iter().map(|a| bulk(a)).collect()
    }

    /// The create arguments, read back as a hash reply, give the record.
    #[test]
    fn create_args_round_trip() {
        let r = record();
        let args = create_args(&r, Timestamp::from_millis(0));
        let flat = created_hash(&args);
        assert_eq!(
            decode_record(Value::Array(flat.clone()), Timestamp::from_millis(5)).unwrap(),
            Some(r.clone())
        );
        let map = flat
            .chunks(2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect();
        assert_eq!(
            decode_record(Value::Map(map), Timestamp::from_millis(5)).unwrap(),
            Some(r)
        );
    }

    /// An anonymous session just created stores `e`, `c` and its data, nothing else; a
    /// later `s` or `r` is read back.
    #[test]
    fn new_records_leave_out_what_they_can() {
        let mut r = Record::new(Timestamp::from_millis(1_000), Timestamp::from_millis(9_000));
        r.data.insert("counter".into(), "1".into());
        let args = create_args(&r, Timestamp::from_millis(1_000));
        let text: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        assert_eq!(
            text,
            [
                &b"1000"[..],
                b"9000",
                b"e",
                b"9000",
                b"c",
                b"1000",
                b"d:counter",
                b"1"
            ]
        );
        r.meta.last_seen = Timestamp::from_millis(2_000);
        r.meta.remember = true;
        r.meta.user_agent = Some("curl".into());
        let args = create_args(&r, Timestamp::from_millis(1_000));
        let text: Vec<&[u8]> = args[6..].iter().map(Vec::as_slice).collect();
        assert_eq!(
            text,
            [
                &b"s"[..],
                b"2000",
                b"r",
                b"1",
                b"a",
                b"curl",
                b"d:counter",
                b"1"
            ]
        );
        assert_eq!(
            decode_record(Value::Array(created_hash(&args)), Timestamp::from_millis(5)).unwrap(),
            Some(r)
        );
    }

    #[test]
    fn expired_or_empty_is_none_and_junk_is_corrupt() {
        let r = Record::new(Timestamp::from_millis(1_000), Timestamp::from_millis(2_000));
        let flat = created_hash(&create_args(&r, Timestamp::from_millis(0)));
        assert!(
            decode_record(Value::Array(flat.clone()), Timestamp::from_millis(1_999))
                .unwrap()
                .is_some()
        );
        assert!(
            decode_record(Value::Array(flat), Timestamp::from_millis(2_000))
                .unwrap()
                .is_none()
        );
        assert!(
            decode_record(Value::Array(vec![]), Timestamp::from_millis(0))
                .unwrap()
                .is_none()
        );
        for junk in [
            vec![bulk(b"e"), bulk(b"soon"), bulk(b"c"), bulk(b"1")],
            vec![
                bulk(b"e"),
                bulk(b"5"),
                bulk(b"c"),
                bulk(b"1"),
                bulk(b"r"),
                bulk(b"2"),
            ],
            vec![bulk(b"d:x"), bulk(b"1")],
            vec![bulk(b"e"), bulk(b"5")],
        ] {
            let err = decode_record(Value::Array(junk), Timestamp::from_millis(0)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt);
        }
        assert_eq!(
            decode_record(Value::Int(3), Timestamp::from_millis(0))
                .unwrap_err()
                .kind(),
            ErrorKind::Corrupt
        );
    }

    /// The checksum is Redis's: a payload `DUMP` returned (Redis 7.0, a listpack hash `e`,
    /// `c`, `d:counter`) ends with the CRC-64 of the rest.
    #[test]
    fn checksum_is_the_one_redis_writes() {
        let hex = "102e2e0000000600816502f4286e5034a201000009816302f428122a2fa2010000098964\
                   3a636f756e7465720a0101ff0a004b44fde9e79c23ad";
        let dump: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let (body, crc) = dump.split_at(dump.len() - 8);
        assert_eq!(CRC64.checksum(body).to_le_bytes(), crc);
    }

    #[test]
    fn restore_payload_layout() {
        let mut r = Record::new(Timestamp::from_millis(1_000), Timestamp::from_millis(9_000));
        r.data.insert("counter".into(), "1".into());
        let p = restore_payload(&r);
        let (body, crc) = p.split_at(p.len() - 8);
        assert_eq!(CRC64.checksum(body).to_le_bytes(), crc);
        assert_eq!(
            body,
            b"\x04\x03\x01e\x049000\x01c\x041000\x09d:counter\x011\x09\x00"
        );
        let mut out = Vec::new();
        for len in [63, 64, 16_383, 16_384] {
            rdb_len(&mut out, len);
        }
        assert_eq!(
            out,
            [0x3f, 0x40, 0x40, 0x7f, 0xff, 0x80, 0x00, 0x00, 0x40, 0x00]
        );
    }

    #[test]
    fn apply_args_layout() {
        let mut p = Patch::new(Timestamp::from_millis(7), Timestamp::from_millis(9))
            .set("a", "1")
            .remove("b");
        p.remember = Some(false);
        let args = apply_args(&p, Timestamp::from_millis(3));
        let text: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        assert_eq!(
            text,
            [
                &b"3"[..],
                b"",
                b"",
                b"1",
                b"d:b",
                b"7",
                b"9",
                b"0",
                b"d:a",
                b"1"
            ]
        );
        p.remember = None;
        p.max_lifetime = Some(std::time::Duration::from_secs(2));
        p.max_idle = Some(std::time::Duration::from_secs(1));
        let args = apply_args(&p, Timestamp::from_millis(3));
        assert_eq!(args[1], b"2000");
        assert_eq!(args[2], b"1000");
        assert_eq!(args[7], b"", "remember unchanged");
        assert_eq!(args.len(), 10);
    }
}
