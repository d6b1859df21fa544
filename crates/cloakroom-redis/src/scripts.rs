//! The Lua scripts. Each touches exactly one key (`KEYS[1]`), so every one runs on Redis
//! Cluster; a session hash and a user index set live in different slots and are never
//! touched by the same script.
//!
//! Times are milliseconds since the epoch, passed by the client (`ARGV[1]` = the client's
//! "now"): a record whose `m:exp` has passed by the application's clock counts as gone, even
//! if Redis (by its own clock) has not expired the key yet.

use std::sync::LazyLock;

use redis::Script;

/// `batch(cmd, key, from, to)`: runs `cmd key ARGV[from..=to]` in chunks (Lua's `unpack` has a
/// stack limit of a few thousand values). Chunks hold an even number of values so field/value
/// pairs are never split.
const BATCH: &str = r"
local function batch(cmd, key, from, to)
  local i = from
  while i <= to do
    local j = math.min(i + 997, to)
    redis.call(cmd, key, unpack(ARGV, i, j))
    i = j + 1
  end
end
";

/// Create: `ARGV` = now, expires at, then field/value pairs (data and metadata).
/// Returns 1 when written, 0 when a live record holds the key (nothing written). A record
/// that expired by the client's clock but not yet by Redis's is replaced.
pub(crate) static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{BATCH}
if redis.call('EXISTS', KEYS[1]) == 1 then
  local exp = redis.call('HGET', KEYS[1], 'm:exp')
  if not exp or tonumber(exp) > tonumber(ARGV[1]) then return 0 end
  redis.call('DEL', KEYS[1])
end
batch('HSET', KEYS[1], 3, #ARGV)
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
"
    ))
});

/// Apply a patch: `ARGV` = now, max lifetime in ms (`''` for none: else the expiry is capped
/// at `m:created` plus it), number of fields to remove, the fields to remove, then the
/// field/value pairs to set, starting with `m:seen` and `m:exp` (so `ARGV[p + 3]` is the
/// expiry), then `m:rem` if it changes, then the data fields.
/// Returns 0 (and writes nothing) when the record is gone: never recreates it.
///
/// Kept to as few `redis.call`s as possible (each costs Redis about a microsecond on top of
/// the command): one `HGET`, one `HSET` for metadata and data together, one `PEXPIREAT`.
pub(crate) static APPLY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{BATCH}
local e = redis.call('HGET', KEYS[1], 'm:exp')
if not e or tonumber(e) <= tonumber(ARGV[1]) then return 0 end
local r = tonumber(ARGV[3])
local p = 4 + r
if r > 0 then batch('HDEL', KEYS[1], 4, p - 1) end
if #ARGV - p < 997 then
  redis.call('HSET', KEYS[1], unpack(ARGV, p))
else
  batch('HSET', KEYS[1], p, #ARGV)
end
local exp = ARGV[p + 3]
if ARGV[2] ~= '' then
  local c = redis.call('HGET', KEYS[1], 'm:created')
  if c then
    local cap = tonumber(c) + tonumber(ARGV[2])
    if cap < tonumber(exp) then
      exp = string.format('%.0f', cap)
      redis.call('HSET', KEYS[1], 'm:exp', exp)
    end
  end
end
redis.call('PEXPIREAT', KEYS[1], exp)
return 1
"
    ))
});

/// Touch: `ARGV` = now, last seen, expires at. Returns 0 (and writes nothing) when the record
/// is gone.
pub(crate) static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "
local exp = redis.call('HGET', KEYS[1], 'm:exp')
if not exp or tonumber(exp) <= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'm:seen', ARGV[2], 'm:exp', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1
",
    )
});

/// Delete: `ARGV` = now. Returns `{live, has_user, user}`: whether a live record was deleted,
/// and the user it was bound to (so the caller can drop it from the user index).
pub(crate) static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "
local m = redis.call('HMGET', KEYS[1], 'm:exp', 'm:user')
if redis.call('UNLINK', KEYS[1]) == 0 then return {0, 0, ''} end
local live = 0
if m[1] and tonumber(m[1]) > tonumber(ARGV[1]) then live = 1 end
if m[2] then return {live, 1, m[2]} end
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
local m = redis.call('HMGET', KEYS[1], 'm:exp', 'm:user')
if m[2] ~= ARGV[2] then return -1 end
redis.call('UNLINK', KEYS[1])
if m[1] and tonumber(m[1]) > tonumber(ARGV[1]) then return 1 end
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
