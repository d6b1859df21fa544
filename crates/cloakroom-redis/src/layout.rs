//! The Redis keys of a store: a session's hash, a user's index set and a challenge, with the
//! shard's hash tag on a Cluster (see the [crate docs](crate#layout) and [`crate::shard`]).

use cloakroom_core::session::SessionKey;
use cloakroom_core::store::{Error, ErrorKind, Result};

use crate::RedisStore;

impl RedisStore {
    /// The Redis key of a session's hash: `<prefix>s:` and the 16 bytes of the
    /// [`SessionKey`], raw (shorter than text: the key is most of an idle session's memory
    /// in Redis). On a Cluster, the key's shard's tag goes between them
    /// (`<prefix>s:{t}<raw>`; see the [crate docs](crate#layout)).
    pub fn session_key(&self, key: &SessionKey) -> Vec<u8> {
        self.raw_key(self.shard_of_key(key), key.as_bytes())
    }

    /// `<prefix>s:` (on a Cluster `<prefix>s:{t}`, `t` the tag of `shard`), the start of
    /// the Redis key of every session in the shard.
    pub(crate) fn session_key_prefix(&self, shard: u16) -> Vec<u8> {
        self.raw_key(shard, b"")
    }

    /// `<prefix>s:`, the shard's tag and `tail`, in one allocation (every request builds a
    /// session key).
    pub(crate) fn raw_key(&self, shard: u16, tail: &[u8]) -> Vec<u8> {
        let (prefix, tag) = (self.inner.prefix.as_bytes(), self.tag(shard).as_bytes());
        let mut rkey = Vec::with_capacity(prefix.len() + 2 + tag.len() + tail.len());
        rkey.extend_from_slice(prefix);
        rkey.extend_from_slice(b"s:");
        rkey.extend_from_slice(tag);
        rkey.extend_from_slice(tail);
        rkey
    }

    /// The shard's hash tag on a Cluster (`{t}`); nothing on one server.
    fn tag(&self, shard: u16) -> &'static str {
        if self.inner.cluster {
            crate::shard::tag(shard)
        } else {
            ""
        }
    }

    /// The shard of a session key (0 on one server; see [`crate::shard`]).
    pub(crate) fn shard_of_key(&self, key: &SessionKey) -> u16 {
        if self.inner.cluster {
            crate::shard::PLACEMENT.shard_of_key(key)
        } else {
            0
        }
    }

    /// The shard of a user's index (0 on one server).
    pub(crate) fn shard_of_user(&self, user: &str) -> u16 {
        if self.inner.cluster {
            crate::shard::PLACEMENT.shard_of_user(user)
        } else {
            0
        }
    }

    /// Refuses a user's record under a key outside the user's shard (a Cluster only: the
    /// scripts that reach the user's index and the session need them in one slot).
    pub(crate) fn check_placed(&self, key: &SessionKey, user: Option<&str>) -> Result<()> {
        if !self.inner.cluster || crate::shard::PLACEMENT.fits(key, user) {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Config,
            "on a Redis Cluster a user's session needs a key in the user's shard \
             (SessionStore::placement; the engine makes such keys, others can draw them \
             with cloakroom_core::store::placed)",
        ))
    }

    /// The Redis key of a single-use challenge (a string holding the session's handle,
    /// expiring by `PXAT`): `<prefix>c:<challenge>`.
    pub fn challenge_key(&self, challenge: &str) -> String {
        format!("{}c:{challenge}", self.inner.prefix)
    }

    /// The Redis key of a user's index set: `<prefix>u:<user>` (on a Cluster
    /// `<prefix>u:{t}<user>`, `t` the tag of the user's shard).
    pub fn user_key(&self, user: &str) -> String {
        let shard = self.shard_of_user(user);
        format!("{}{user}", self.user_key_prefix(shard))
    }

    /// `<prefix>u:` (on a Cluster `<prefix>u:{t}`), the start of every user index's key in
    /// the shard.
    pub(crate) fn user_key_prefix(&self, shard: u16) -> String {
        format!("{}u:{}", self.inner.prefix, self.tag(shard))
    }

    /// The user whose index set is at the Redis key `rkey`, if it is one.
    pub(crate) fn user_of_index(&self, rkey: &[u8]) -> Option<String> {
        let prefix = format!("{}u:", self.inner.prefix);
        let user = if self.inner.cluster {
            crate::shard::untagged(rkey, prefix.as_bytes())?
        } else {
            rkey.strip_prefix(prefix.as_bytes())?
        };
        let user = String::from_utf8(user.to_vec()).ok()?;
        (self.user_key(&user).as_bytes() == rkey).then_some(user)
    }
}
