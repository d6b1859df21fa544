//! Key placement: a store whose keys live in shards (Redis Cluster) keeps a user's sessions
//! in the user's shard, so that one atomic operation reaches a user's index and every
//! session it names. The store says so ([`SessionStore::placement`](super::SessionStore::placement));
//! the engine then draws the id of every session it creates for a user until the session's
//! key falls in the user's shard ([`Placement::fits`]).

use sha2::{Digest, Sha256};

use crate::id::SessionKey;

/// How a store spreads keys over `shards` shards: a [`SessionKey`]'s shard is a function of
/// its bytes, a user's a function of the user's id, both fixed (they name where records
/// already are).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    shards: u16,
}

impl Placement {
    /// `shards` shards (at least 1).
    pub const fn new(shards: u16) -> Self {
        Self {
            shards: if shards == 0 { 1 } else { shards },
        }
    }

    /// How many shards.
    pub const fn shards(&self) -> u16 {
        self.shards
    }

    /// The shard of a session key: its first two bytes, big-endian, modulo the shards.
    pub fn shard_of_key(&self, key: &SessionKey) -> u16 {
        let b = key.as_bytes();
        u16::from_be_bytes([b[0], b[1]]) % self.shards
    }

    /// The shard of a user: the first two bytes of the SHA-256 of the user id, big-endian,
    /// modulo the shards.
    pub fn shard_of_user(&self, user: &str) -> u16 {
        let hash = Sha256::digest(user.as_bytes());
        u16::from_be_bytes([hash[0], hash[1]]) % self.shards
    }

    /// Whether a session under `key` may belong to `user` (`None`: an anonymous record,
    /// which fits any shard).
    pub fn fits(&self, key: &SessionKey, user: Option<&str>) -> bool {
        user.is_none_or(|u| self.shard_of_key(key) == self.shard_of_user(u))
    }
}

/// Draws ids with `draw` until the key `key_of` gives fits `user` under `placement` (at once
/// without a placement or a user). With `B` shards it takes `B` draws on average; after
/// 4,096 draws it gives up and returns the last (the store then refuses the create).
pub fn placed<I>(
    placement: Option<Placement>,
    user: Option<&str>,
    mut draw: impl FnMut() -> I,
    key_of: impl Fn(&I) -> SessionKey,
) -> I {
    let mut id = draw();
    let (Some(placement), Some(user)) = (placement, user) else {
        return id;
    };
    // The user's shard once (a SHA-256), not at every draw.
    let want = placement.shard_of_user(user);
    for _ in 0..MAX_DRAWS {
        if placement.shard_of_key(&key_of(&id)) == want {
            break;
        }
        id = draw();
    }
    id
}

/// How many ids [`placed`] draws at most (a miss with 16 shards: `(15/16)^4096`, never).
pub(crate) const MAX_DRAWS: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SessionId;

    #[test]
    fn a_users_keys_land_in_the_users_shard() {
        let placement = Placement::new(16);
        for user in ["ada", "grace", "edsger", ""] {
            let id = placed(
                Some(placement),
                Some(user),
                SessionId::generate,
                SessionId::key,
            );
            assert!(placement.fits(&id.key(), Some(user)));
            assert_eq!(
                placement.shard_of_key(&id.key()),
                placement.shard_of_user(user)
            );
        }
        // Anonymous, or no placement: the first draw.
        let mut n = 0;
        placed(
            Some(placement),
            None,
            || {
                n += 1;
                SessionId::generate()
            },
            SessionId::key,
        );
        assert_eq!(n, 1);
    }

    #[test]
    fn shards_are_spread() {
        let placement = Placement::new(16);
        let mut users = [0_u32; 16];
        let mut keys = [0_u32; 16];
        for i in 0..16_000 {
            users[usize::from(placement.shard_of_user(&format!("user-{i}")))] += 1;
            keys[usize::from(placement.shard_of_key(&SessionId::generate().key()))] += 1;
        }
        for n in users.iter().chain(&keys) {
            assert!((700..1300).contains(n), "{users:?} {keys:?}");
        }
        assert_eq!(Placement::new(0).shards(), 1);
    }
}
