//! How the memory store keeps a session: all fields of a session in one allocation
//! (`u32` length + name + `u32` length + value, in name order) and the metadata inline, about
//! 170 bytes per idle session beyond its data, where a [`Record`] as such (a `BTreeMap`, whose
//! first leaf alone is some 540 bytes, plus one allocation per name and per value) costs about
//! 800. A load rebuilds the `Record`, which costs about what cloning it would.

use std::hash::{BuildHasher, Hasher};

use crate::id::{SessionKey, Timestamp};
use crate::session::DEVICE_KEY_FIELD;
use crate::store::{self, Fields, Meta, Patch, Record, SessionInfo};

/// Session keys are already uniform hashes: use their first bytes as the hash.
#[derive(Clone, Copy, Default, Debug)]
pub(super) struct KeyHash;

#[derive(Default)]
pub(super) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
}

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// Packed fields up to this many bytes are unpacked by insertion, larger ones bulk-built.
const SMALL_FIELDS: usize = 256;

/// One session as the store keeps it.
pub(super) struct Entry {
    /// Every field: `u32` little-endian length + name, `u32` length + value, in name order.
    pub(super) fields: Box<[u8]>,
    pub(super) created_at: Timestamp,
    pub(super) last_seen: Timestamp,
    pub(super) expires_at: Timestamp,
    pub(super) user: Option<Box<str>>,
    pub(super) user_agent: Option<Box<str>>,
    pub(super) remember: bool,
}

/// Packs `fields` (see [`Entry::fields`]).
fn pack(fields: &Fields) -> Box<[u8]> {
    let len = fields.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(len);
    for (k, v) in fields {
        push_field(&mut out, k, v);
    }
    out.into_boxed_slice()
}

/// The `(name, value)` pairs of packed fields.
fn unpacked(mut b: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    fn take<'a>(b: &mut &'a [u8]) -> &'a str {
        let (len, rest) = b.split_at(4);
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let (s, rest) = rest.split_at(len);
        *b = rest;
        // Written by `pack` from `String`s only.
        std::str::from_utf8(s).expect("packed from a String")
    }
    std::iter::from_fn(move || {
        if b.is_empty() {
            return None;
        }
        let name = take(&mut b);
        let value = take(&mut b);
        Some((name, value))
    })
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    for s in [name, value] {
        let n = u32::try_from(s.len()).expect("session data is limited far below 4 GiB");
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
}

/// Packed fields with `patch`'s removals and then its sets applied (as [`Record::apply`]
/// does), in one pass over the old bytes: a small change to a large session copies its bytes
/// once and allocates nothing per field.
fn patched(old: &[u8], patch: &Patch) -> Box<[u8]> {
    let mut changes: std::collections::BTreeMap<&str, Option<&str>> =
        std::collections::BTreeMap::new();
    for name in &patch.remove {
        changes.insert(name, None);
    }
    for (name, value) in &patch.set {
        changes.insert(name, Some(value));
    }
    let added: usize = patch.set.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(old.len() + added);
    let mut pending = changes.into_iter().peekable();
    for (name, value) in unpacked(old) {
        while let Some((new_name, new_value)) = pending.next_if(|(n, _)| *n < name) {
            if let Some(v) = new_value {
                push_field(&mut out, new_name, v);
            }
        }
        match pending.next_if(|(n, _)| *n == name) {
            Some((_, Some(v))) => push_field(&mut out, name, v),
            Some((_, None)) => {}
            None => push_field(&mut out, name, value),
        }
    }
    for (name, value) in pending {
        if let Some(v) = value {
            push_field(&mut out, name, v);
        }
    }
    out.into_boxed_slice()
}

impl Entry {
    pub(super) fn new(r: &Record) -> Entry {
        Entry {
            fields: pack(&r.data),
            created_at: r.meta.created_at,
            last_seen: r.meta.last_seen,
            expires_at: r.meta.expires_at,
            user: r.meta.user.as_deref().map(Box::from),
            user_agent: r.meta.user_agent.as_deref().map(Box::from),
            remember: r.meta.remember,
        }
    }

    pub(super) fn meta(&self) -> Meta {
        Meta {
            created_at: self.created_at,
            last_seen: self.last_seen,
            expires_at: self.expires_at,
            user: self.user.as_deref().map(str::to_owned),
            user_agent: self.user_agent.as_deref().map(str::to_owned),
            remember: self.remember,
        }
    }

    pub(super) fn record(&self) -> Record {
        let pairs = unpacked(&self.fields).map(|(k, v)| (k.to_owned(), v.to_owned()));
        // A few fields are inserted one by one (no intermediate vector); many are
        // bulk-built, which beats a search per insertion.
        let data = if self.fields.len() <= SMALL_FIELDS {
            let mut data = Fields::new();
            data.extend(pairs);
            data
        } else {
            pairs.collect()
        };
        Record {
            data,
            meta: self.meta(),
        }
    }

    pub(super) fn apply(&mut self, patch: &Patch) {
        if !patch.set.is_empty() || !patch.remove.is_empty() {
            self.fields = patched(&self.fields, patch);
        }
        self.last_seen = patch.last_seen;
        self.expires_at = patch.expiry_for(self.created_at);
        if let Some(remember) = patch.remember {
            self.remember = remember;
        }
    }

    /// Whether this is a rotation grace's forwarding record ([`Record::is_forward`]).
    pub(super) fn is_forward(&self) -> bool {
        self.user.is_none() && unpacked(&self.fields).any(|(k, _)| k == store::FORWARD_FIELD)
    }

    /// Whether this is an ended session's tombstone ([`Record::is_ended`]).
    pub(super) fn is_ended(&self) -> bool {
        self.user.is_none() && unpacked(&self.fields).any(|(k, _)| k == store::ENDED_FIELD)
    }

    pub(super) fn info(&self, key: SessionKey) -> SessionInfo {
        let (fields, data_bytes) =
            unpacked(&self.fields).fold((0, 0), |(n, b), (k, v)| (n + 1, b + k.len() + v.len()));
        SessionInfo {
            key,
            meta: self.meta(),
            fields,
            data_bytes,
            device_bound: unpacked(&self.fields).any(|(k, _)| k == DEVICE_KEY_FIELD),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::id::SessionId;

    fn record(fields: &[(&str, &str)]) -> Record {
        let mut r = Record::new(Timestamp::from_millis(1_000), Timestamp::from_millis(9_000));
        for (k, v) in fields {
            r.data.insert((*k).into(), (*v).into());
        }
        r
    }

    #[test]
    fn entries_round_trip_records() {
        for fields in [
            &[][..],
            &[("counter", "1")],
            &[("", ""), ("a", "\"\""), ("ünï", "\"çødé ✓\"")],
            &[("big", &*"x".repeat(70_000)), ("z", "null")],
        ] {
            let mut r = record(fields);
            r.meta.user = Some("ada".into());
            r.meta.user_agent = Some("agent".into());
            r.meta.remember = true;
            let e = Entry::new(&r);
            assert_eq!(e.record(), r);
            let info = e.info(SessionId::generate().key());
            assert_eq!(info.fields, r.data.len());
            assert_eq!(info.data_bytes, r.data_bytes());
            assert_eq!(info.meta, r.meta);
        }
    }

    #[test]
    fn entry_patches_match_record_patches() {
        let base = record(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let mut patch = Patch::new(
            Timestamp::from_millis(2_000),
            Timestamp::from_millis(50_000),
        )
        .set("b", "20")
        .set("d", "4")
        .remove("a");
        patch.remember = Some(true);
        patch.max_lifetime = Some(Duration::from_secs(10));
        let mut e = Entry::new(&base);
        e.apply(&patch);
        let mut expected = base.clone();
        expected.apply(&patch);
        assert_eq!(e.record(), expected);
        assert_eq!(
            e.expires_at,
            Timestamp::from_millis(11_000),
            "capped at created + lifetime"
        );
        // Every mix of removals and sets, before, between, after and on existing names, gives
        // what `Record::apply` gives.
        let names = ["", "a", "aa", "b", "c", "d", "z"];
        for mask in 0u32..(1 << 7) {
            for set_mask in [0u32, 0b1010101, 0b0110011, 0b1111111] {
                let mut p =
                    Patch::new(Timestamp::from_millis(2_000), Timestamp::from_millis(5_000));
                for (i, n) in names.iter().enumerate() {
                    if mask & (1 << i) != 0 {
                        p = p.remove(*n);
                    }
                    if set_mask & (1 << i) != 0 {
                        p = p.set(*n, format!("\"v{i}\""));
                    }
                }
                let mut e = Entry::new(&base);
                e.apply(&p);
                let mut expected = base.clone();
                expected.apply(&p);
                assert_eq!(e.record(), expected, "remove {mask:b} set {set_mask:b}");
            }
        }
        // A patch of times only leaves the fields as they are.
        let mut e2 = Entry::new(&base);
        e2.apply(&Patch::new(
            Timestamp::from_millis(3_000),
            Timestamp::from_millis(4_000),
        ));
        assert_eq!(e2.record().data, base.data);
        assert_eq!(
            (e2.last_seen, e2.expires_at),
            (Timestamp::from_millis(3_000), Timestamp::from_millis(4_000))
        );
    }
}
