//! Where keys go on a Redis Cluster. A script reaches keys of one hash slot, and the
//! standalone scripts (the limit's, the event log's) reach a user's index set, the
//! sessions it names and the log's stream together. On a Cluster every session key, user
//! index and stream therefore carries a hash tag `{t}` naming one of [`SHARDS`] shards:
//! a session's shard is a function of its key's bytes
//! ([`Placement::shard_of_key`](cloakroom_core::store::Placement::shard_of_key)), so a
//! `load` needs nothing else; a user's index is in the user's shard
//! ([`Placement::shard_of_user`](cloakroom_core::store::Placement::shard_of_user)); and the
//! engine creates a user's sessions under keys in the user's shard (the store answers
//! [`SessionStore::placement`](cloakroom_core::store::SessionStore::placement), and
//! refuses a user's record under a key elsewhere). A logged-in session, its user's index
//! and its shard's stream `<prefix>events:{t}` then share a slot, and every script runs on
//! a Cluster as it does on one server. Anonymous sessions are in their key's shard.
//!
//! The tag of shard `i` is the first short string whose slot falls in the `i`-th
//! `1/SHARDS` of the slot range, so the shards spread over the masters as the slots do.
//! One server and Sentinel keep the untagged layout (`<prefix>s:<raw>`, `<prefix>u:<user>`,
//! `<prefix>events`).

use std::sync::LazyLock;

use cloakroom_core::store::Placement;

/// How many shards a Cluster store spreads its keys over. Fixed: the shard of every key
/// already written depends on it.
pub(crate) const SHARDS: u16 = 16;

/// The placement of a Cluster store.
pub(crate) const PLACEMENT: Placement = Placement::new(SHARDS);

/// Redis Cluster's slot count.
const SLOTS: u32 = 16384;

/// The hash tags of the shards, `{t}` with the braces.
pub(crate) static TAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    (0..u32::from(SHARDS))
        .map(|i| {
            let tag = (0_u32..)
                .map(|n| format!("{n:x}"))
                .find(|t| u32::from(crc16(t.as_bytes()) % 16384) * u32::from(SHARDS) / SLOTS == i)
                .expect("every slot range has a tag");
            format!("{{{tag}}}")
        })
        .collect()
});

/// The tag of shard `shard`, with its braces.
pub(crate) fn tag(shard: u16) -> &'static str {
    &TAGS[usize::from(shard % SHARDS)]
}

/// CRC16 (XMODEM), Redis Cluster's key hash.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a Redis key (its hash tag's, when it has one).
#[cfg(test)]
fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let len = key[open + 1..].iter().position(|&b| b == b'}')?;
        (len > 0).then(|| &key[open + 1..open + 1 + len])
    });
    crc16(tagged.unwrap_or(key)) % 16384
}

/// The part of a tagged key after `prefix` and its tag (`prefix{t}rest` gives `rest`).
pub(crate) fn untagged<'a>(key: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let rest = key.strip_prefix(prefix)?.strip_prefix(b"{")?;
    let close = rest.iter().position(|&b| b == b'}')?;
    Some(&rest[close + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloakroom_core::session::SessionId;

    #[test]
    fn slots_are_redis_slots() {
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"x{foo}y"), 12182);
        assert_eq!(slot(b"{}foo"), slot(b"{}foo"));
    }

    #[test]
    fn the_tags_spread_over_the_slot_range() {
        let width = SLOTS / u32::from(SHARDS);
        for i in 0..SHARDS {
            let t = tag(i);
            assert!(t.len() <= 6, "{t}");
            let s = u32::from(slot(format!("app:s:{t}x").as_bytes()));
            assert_eq!(s / width, u32::from(i), "shard {i}'s tag {t} in slot {s}");
        }
        // With three masters (the slot ranges Redis gives them), each holds about a third.
        let per_master = |m: u32| {
            (0..SHARDS)
                .filter(|&i| u32::from(slot(tag(i).as_bytes())) * 3 / SLOTS == m)
                .count()
        };
        for m in 0..3 {
            assert!(
                (5..=6).contains(&per_master(m)),
                "master {m}: {}",
                per_master(m)
            );
        }
    }

    #[test]
    fn a_users_sessions_share_the_users_slot() {
        for user in ["ada", "grace", "a user with spaces"] {
            let j = PLACEMENT.shard_of_user(user);
            for _ in 0..20 {
                let id = cloakroom_core::store::placed(
                    Some(PLACEMENT),
                    Some(user),
                    SessionId::generate,
                    SessionId::key,
                );
                let i = PLACEMENT.shard_of_key(&id.key());
                assert_eq!(i, j);
                let session = [b"p:s:".as_slice(), tag(i).as_bytes(), id.key().as_bytes()].concat();
                let index = format!("p:u:{}{user}", tag(j));
                assert_eq!(slot(&session), slot(index.as_bytes()));
            }
        }
    }

    #[test]
    fn tags_are_stripped() {
        let key = [b"p:s:".as_slice(), tag(3).as_bytes(), &[b'}'; 16]].concat();
        assert_eq!(untagged(&key, b"p:s:"), Some([b'}'; 16].as_slice()));
        assert_eq!(untagged(b"p:s:raw", b"p:s:"), None);
    }
}
