//! The Lua scripts. Each touches exactly one key (`KEYS[1]`); the limit's and the event
//! log's reach a user's index and its sessions, which share a slot on a Cluster
//! ([`crate::shard`]).
//!
//! Times are milliseconds since the epoch, passed by the client (`ARGV[1]` = the client's
//! "now"): a record whose expiry has passed by the application's clock counts as gone, even
//! if Redis (by its own clock) has not expired the key yet (the transactions of
//! [`crate::transaction`] go by Redis's clock).
//!
//! The record's fields are described in [`crate::codec`]. Each `redis.call` costs Redis
//! about a microsecond on top of the command, so the scripts make as few as they can.

use std::sync::LazyLock;

use redis::Script;

/// `batch(cmd, key, from, to)`: runs `cmd key ARGV[from..=to]` in chunks (Lua's `unpack` has a
/// stack limit of a few thousand values). Chunks hold an even number of values so field/value
/// pairs are never split.
pub(crate) const BATCH: &str = r"
local function batch(cmd, key, from, to)
  local i = from
  while i <= to do
    local j = math.min(i + 997, to)
    redis.call(cmd, key, unpack(ARGV, i, j))
    i = j + 1
  end
end
";

/// Create: `ARGV` = now, expires at, then every field/value pair (metadata and data).
/// Returns 1 when written, 0 when a live record holds the key (nothing written). A record
/// that expired by the client's clock but not yet by Redis's is replaced.
///
/// Three calls for a new key: `EXISTS`, one `HSET` (up to 997 field/value pairs' worth of values), `PEXPIREAT`.
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{BATCH}
local k = KEYS[1]
if redis.call('EXISTS', k) == 1 then
  local e = redis.call('HGET', k, 'e')
  if not e or tonumber(e) > tonumber(ARGV[1]) then return 0 end
  redis.call('DEL', k)
end
if #ARGV < 1000 then
  redis.call('HSET', k, unpack(ARGV, 3))
else
  batch('HSET', k, 3, #ARGV)
end
redis.call('PEXPIREAT', k, ARGV[2])
return 1
"
    ))
});

/// Apply a patch where the transaction of [`crate::transaction`] cannot (blind writes,
/// `?wait=N`, Redis before 7; a touch is a patch without fields): `ARGV` = now, max lifetime in ms (`''` for none: else the expiry is capped
/// at the creation time plus it), max idle time in ms (`''` for none), number of fields to
/// remove (`n`), the fields to remove, then at `p = 5 + n`: last seen, expires at, the
/// remember flag (`''`: unchanged), and the data field/value pairs to set. Returns 0 (and
/// writes nothing) when the record is gone, or when its lifetime or idle time is over at
/// the patch's last seen (a blind write: the record a load would refuse): never recreates it.
///
/// Three calls in the common case: one `HGET` of the expiry (`HMGET` with the creation and
/// last-seen times when there are bounds), one `HSET` for metadata and data together, one
/// `PEXPIREAT` (plus an `HDEL` when fields go).
pub(crate) static APPLY: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{BATCH}{APPLY_BODY}return 1\n")));

/// [`APPLY`], then a read of the key, so that a client with `CLIENT TRACKING` on is told
/// when the record changes afterwards (used with the near-cache only).
pub(crate) static APPLY_TRACKED: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{BATCH}{APPLY_BODY}{TRACK}")));

/// The tail of the tracked scripts: a read of the key (which tracks it), then 1.
const TRACK: &str = "redis.call('EXISTS', KEYS[1])\nreturn 1\n";

const APPLY_BODY: &str = "
local k = KEYS[1]
local e, c, seen
if ARGV[2] == '' and ARGV[3] == '' then
  e = redis.call('HGET', k, 'e')
else
  local m = redis.call('HMGET', k, 'e', 'c', 's')
  e, c, seen = m[1], m[2], m[3] or m[2]
end
if not e or tonumber(e) <= tonumber(ARGV[1]) then return 0 end
local n = tonumber(ARGV[4])
local p = 5 + n
local at = tonumber(ARGV[p])
if ARGV[2] ~= '' and c and tonumber(c) + tonumber(ARGV[2]) <= at then return 0 end
if ARGV[3] ~= '' and seen and tonumber(seen) + tonumber(ARGV[3]) <= at then return 0 end
if n > 0 then batch('HDEL', k, 5, p - 1) end
local exp = ARGV[p + 1]
if ARGV[2] ~= '' and c then
  local cap = tonumber(c) + tonumber(ARGV[2])
  if cap < tonumber(exp) then exp = string.format('%.0f', cap) end
end
local big = #ARGV - p >= 997
if ARGV[p + 2] == '' then
  if big then
    redis.call('HSET', k, 's', ARGV[p], 'e', exp)
  else
    redis.call('HSET', k, 's', ARGV[p], 'e', exp, unpack(ARGV, p + 3))
  end
elseif big then
  redis.call('HSET', k, 's', ARGV[p], 'e', exp, 'r', ARGV[p + 2])
else
  redis.call('HSET', k, 's', ARGV[p], 'e', exp, 'r', ARGV[p + 2], unpack(ARGV, p + 3))
end
if big then batch('HSET', k, p + 3, #ARGV) end
redis.call('PEXPIREAT', k, exp)
";

/// Delete: `ARGV` = now. Returns `{live, has_user, user}`: whether a live record was deleted,
/// and the user it was bound to (so the caller can drop it from the user index).
pub(crate) static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "
local m = redis.call('HMGET', KEYS[1], 'e', 'u')
if redis.call('UNLINK', KEYS[1]) == 0 then return {0, 0, ''} end
local e, u = m[1], m[2]
local live = 0
if e and tonumber(e) > tonumber(ARGV[1]) then live = 1 end
if u then return {live, 1, u} end
return {live, 0, ''}
",
    )
});

/// Delete if owned: `ARGV` = now, user. Deletes the record only if it is bound to the user.
/// Returns 1 when a live record was deleted, 0 when an expired one was, -1 when the record is
/// gone or belongs to somebody else (nothing deleted).
pub(crate) static DELETE_OWNED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "
local m = redis.call('HMGET', KEYS[1], 'e', 'u')
local e, u = m[1], m[2]
if u ~= ARGV[2] then return -1 end
redis.call('UNLINK', KEYS[1])
if e and tonumber(e) > tonumber(ARGV[1]) then return 1 end
return 0
",
    )
});

/// Add to a user index: `KEYS[1]` = the user's set, `ARGV[1]` = the session handle. Returns
/// the set's size afterwards (the caller prunes dead entries now and then).
pub(crate) static INDEX: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "
redis.call('SADD', KEYS[1], ARGV[1])
return redis.call('SCARD', KEYS[1])
",
    )
});
