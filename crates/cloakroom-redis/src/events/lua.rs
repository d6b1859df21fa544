//! The logged scripts: each change and its event in one Lua script.

use super::*;

/// `log(stream, cap, at, kind, handle, previous, user)`: one `XADD` with a cap; `previous`
/// `''` for none, `user` `''`, nil or false for none.
pub(super) const LOG: &str = "
local function log(stream, cap, at, kind, handle, previous, user)
  local a = {stream, 'MAXLEN', '~', cap, '*', 'at', at, 'kind', kind, 'session', handle}
  if previous ~= '' then
    a[#a + 1] = 'previous'
    a[#a + 1] = previous
  end
  if user and user ~= '' then
    a[#a + 1] = 'user'
    a[#a + 1] = user
  end
  redis.call('XADD', unpack(a))
end
";

/// Base64url decoding of a 22-character session handle into the 16 raw bytes of its key,
/// or nil: [`crate::limit::DECODE`]'s result, four characters at a time (about a third of
/// its time in Redis).
pub(super) const DECODE_FAST: &str = "
local B64 = {}
local alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
for i = 1, 64 do B64[alphabet:byte(i)] = i - 1 end
local function decode(s)
  if #s ~= 22 then return nil end
  local out = {}
  for i = 1, 17, 4 do
    local a, b, c, d = s:byte(i, i + 3)
    a, b, c, d = B64[a], B64[b], B64[c], B64[d]
    if not (a and b and c and d) then return nil end
    local n = ((a * 64 + b) * 64 + c) * 64 + d
    local lo = n % 256
    n = (n - lo) / 256
    out[#out + 1] = string.char((n - n % 256) / 256, n % 256, lo)
  end
  local a, b = s:byte(21, 22)
  a, b = B64[a], B64[b]
  if not (a and b) then return nil end
  local n = a * 64 + b
  out[#out + 1] = string.char((n - n % 16) / 16)
  return table.concat(out)
end
";

/// Create and log: `KEYS` = the session's key, the stream, and for a login the user's index
/// set; `ARGV` = the cap, the event's time, kind, the new handle, the previous handle (or
/// `''`), the user (or `''`), then the create script's arguments (now, expires at, the
/// field/value pairs). Returns `{0, 0}` when a live record holds the key (nothing written
/// or logged), else `{1, size of the index}` (0 without one). The index is read (`SCARD`)
/// before the `XADD`, so a key of the wrong type fails before anything is written.
pub(crate) static CREATE_LOGGED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{BATCH}{LOG}
local k = KEYS[1]
if redis.call('EXISTS', k) == 1 then
  local e = redis.call('HGET', k, 'e')
  if not e or tonumber(e) > tonumber(ARGV[7]) then return {{0, 0}} end
  redis.call('DEL', k)
end
local size = 0
if KEYS[3] then size = redis.call('SCARD', KEYS[3]) end
log(KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
if #ARGV < 1000 then
  redis.call('HSET', k, unpack(ARGV, 9))
else
  batch('HSET', k, 9, #ARGV)
end
redis.call('PEXPIREAT', k, ARGV[8])
if KEYS[3] then size = size + redis.call('SADD', KEYS[3], ARGV[4]) end
return {{1, size}}
",
        BATCH = scripts::BATCH,
    ))
});

/// Delete (logged or not) on a store with a log: `KEYS` = the session's key, the stream;
/// `ARGV` = now, the cap, the event's time, kind (`''`: a plain delete, which logs no end),
/// the handle, the prefix of index keys (`<prefix>u:`). A live record's end is logged (with
/// the record's user) unless the kind is `''`; a record of a user that is past its expiry
/// but still indexed is logged as `expired` (noticed here). The member is dropped from the
/// user's index in the same script, so no other script can find it indexed with its record
/// gone and take a deletion for an expiry. Returns `{live, has_user, user}` as the delete
/// script does.
pub(crate) static DELETE_LOGGED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LOG}
local m = redis.call('HMGET', KEYS[1], 'e', 'u')
local e, u = m[1], m[2]
local handle = ARGV[5]
local live = 0
if e and tonumber(e) > tonumber(ARGV[1]) then live = 1 end
local idx = u and (ARGV[6] .. u)
if live == 1 then
  if ARGV[4] ~= '' then log(KEYS[2], ARGV[2], ARGV[3], ARGV[4], handle, '', u) end
elseif idx and redis.call('SISMEMBER', idx, handle) == 1 then
  log(KEYS[2], ARGV[2], ARGV[1], '{EXPIRED}', handle, '', u)
end
if redis.call('UNLINK', KEYS[1]) == 0 then return {{0, 0, ''}} end
if idx then redis.call('SREM', idx, handle) end
if u then return {{live, 1, u}} end
return {{live, 0, ''}}
"
    ))
});

/// The label of an expiry in the log.
pub(super) const EXPIRED: &str = "expired";

/// Notice expiries in a user's index: `KEYS` = the user's index set, the stream; `ARGV` =
/// the prefix of session keys (`<prefix>s:`), the user, now, the cap, then the members to
/// look at (none: every member of the index). Each of those members still in the index
/// whose session is no live session of the user is removed from it; when its record is gone
/// (Redis expired it) or is the user's past its expiry, one `expired` event of the user is
/// appended first, at now. A member already removed (by another noticer, a delete, a
/// revocation or the limit, which log their own events) is left alone, so each expiry is
/// logged once however many processes notice it. A record that is no session of the user
/// (a limit tombstone, another user's) is unindexed without an event. Returns how many
/// expiries it logged.
pub(crate) static NOTICE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{DECODE_FAST}{LOG}
local idx, sp, user, now = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local list, from = ARGV, 5
if #ARGV == 4 then list, from = redis.call('SMEMBERS', idx), 1 end
local n = 0
for i = from, #list do
  local m = list[i]
  if from == 1 or redis.call('SISMEMBER', idx, m) == 1 then
    local raw = decode(m)
    local f = raw and redis.call('HMGET', sp .. raw, 'e', 'u')
    if not (f and f[1] and tonumber(f[1]) > now and f[2] == user) then
      if f and (not f[1] or f[2] == user) then
        log(KEYS[2], ARGV[4], ARGV[3], '{EXPIRED}', m, '', user)
        n = n + 1
      end
      redis.call('SREM', idx, m)
    end
  end
end
return n
"
    ))
});

/// Revoke a user's sessions and log each: `KEYS` = the user's index set, the stream; `ARGV`
/// = the handle to keep (or `''`), the prefix of session keys (`<prefix>s:`), the user,
/// now, the cap, the event's time, kind. Deletes every session of the user the index names
/// (but the one kept), drops the members it handled from the index, and appends one event
/// per live session deleted, and one `expired` (at now) per member whose record is gone or
/// past its expiry (noticed here, as by [`NOTICE`]). Returns the handles of the live
/// sessions deleted.
pub(crate) static DELETE_USER_LOGGED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{DECODE_FAST}{LOG}
local idx = KEYS[1]
local except, sp, user, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local deleted = {{}}
for _, m in ipairs(redis.call('SMEMBERS', idx)) do
  if m ~= except then
    local raw = decode(m)
    if raw then
      local sk = sp .. raw
      local f = redis.call('HMGET', sk, 'e', 'u')
      if f[2] == user then
        if f[1] and tonumber(f[1]) > now then
          log(KEYS[2], ARGV[5], ARGV[6], ARGV[7], m, '', user)
          deleted[#deleted + 1] = m
        else
          log(KEYS[2], ARGV[5], ARGV[4], '{EXPIRED}', m, '', user)
        end
        redis.call('UNLINK', sk)
      elseif not f[1] then
        log(KEYS[2], ARGV[5], ARGV[4], '{EXPIRED}', m, '', user)
      end
    end
    redis.call('SREM', idx, m)
  end
end
return deleted
"
    ))
});

/// [`LIMITED`](crate::limit::LIMITED) (with [`DECODE_FAST`]) and the log: `KEYS[3]` = the
/// stream, `ARGV[9..=12]`
/// = the cap, the event's time, kind, previous handle ([`Log::limited_args`]), the create's
/// field/value pairs from `ARGV[13]`. Each member it prunes whose record is gone or past its
/// expiry is logged as `expired` of the user (noticed here, as by [`NOTICE`]), each session
/// the limit ends as `limit`, then the new session.
pub(crate) static LIMITED_LOGGED: LazyLock<Script> =
    LazyLock::new(|| Script::new(&limited_logged_source()));

/// `text` with `from` (which must be there exactly once) replaced by `to`.
pub(super) fn once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "{from:?} in the limit script"
    );
    text.replacen(from, to, 1)
}

/// The text of [`LIMITED_LOGGED`]: the limit script's, with the `XADD`s put in.
pub(super) fn limited_logged_source() -> String {
    let limit = kind_label(&EventKind::Ended(EndReason::Limit));
    let text = crate::limit::limited_source();
    let text = once(&text, crate::limit::DECODE, DECODE_FAST);
    let text = once(
        &text,
        "    local s = live[i]\n",
        &format!(
            "    local s = live[i]\n    log(KEYS[3], ARGV[9], ARGV[10], '{limit}', s[1], '', user)\n"
        ),
    );
    let text = once(
        &text,
        "    else\n      redis.call('SREM', idx, m)\n",
        &format!(
            "    else\n      if f and (not f[1] or f[4] == user) then\n        \
             log(KEYS[3], ARGV[9], ARGV[7], '{EXPIRED}', m, '', user)\n      end\n      \
             redis.call('SREM', idx, m)\n"
        ),
    );
    let text = once(&text, "unpack(ARGV, 9)", "unpack(ARGV, 13)");
    let text = once(
        &text,
        "batch('HSET', k, 9, #ARGV)",
        "batch('HSET', k, 13, #ARGV)",
    );
    let text = once(
        &text,
        "end\nif #ARGV < 1000 then\n",
        "end\nlog(KEYS[3], ARGV[9], ARGV[10], ARGV[11], handle, ARGV[12], user)\nif #ARGV < 1000 then\n",
    );
    format!("{LOG}{text}")
}
