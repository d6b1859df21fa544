//! The concurrent-session limit ([`SessionStore::create_limited`]) on Redis: one Lua
//! script, [`LIMITED`], over the user's index set and the new session's key (`KEYS`), and
//! the session hashes its members name (Redis runs a script alone, so nothing comes between
//! the count and the insert): it prunes dead members, counts the user's live sessions,
//! turns the least recently seen into tombstones (or refuses), writes the new record and
//! indexes it. One round trip, where a plain login's create costs two (the record, then the
//! index). On a Cluster too: a user's index and sessions share a slot ([`crate::shard`]).
//!
//! [`SessionStore::create_limited`]: cloakroom_core::store::SessionStore::create_limited

use std::sync::LazyLock;

use cloakroom_core::session::{Event, SessionKey, Timestamp};
use cloakroom_core::store::{
    Admitted, ENDED_BY_LIMIT, ENDED_FIELD, Error, ErrorKind, Limit, LimitPolicy, Record, Result,
};
use redis::{Script, Value};

use crate::codec::{self, reply};
use crate::conn::bounded;
use crate::events::Log;
use crate::scripts;
use crate::store::RedisStore;

/// Base64url decoding in Lua (a member of an index set is a session's 22-character handle;
/// the session's Redis key holds its 16 raw bytes).
pub(crate) const DECODE: &str = r"
local B64 = {}
local alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
for i = 1, 64 do B64[alphabet:byte(i)] = i - 1 end
local function decode(s)
  if #s ~= 22 then return nil end
  local out, bits, n = {}, 0, 0
  for i = 1, 22 do
    local v = B64[s:byte(i)]
    if not v then return nil end
    bits = bits * 64 + v
    n = n + 6
    if n >= 8 then
      n = n - 8
      local b = math.floor(bits / 2 ^ n)
      out[#out + 1] = string.char(b)
      bits = bits - b * 2 ^ n
    end
  end
  return table.concat(out)
end
";

/// `KEYS` = the user's index set, the new session's key; `ARGV` = max, `1` to
/// refuse (else end the least recently seen), the handle a renewal replaces (or `''`), the
/// new handle, the prefix of session keys (`<prefix>s:`; on a Cluster with the user's
/// shard's tag, which all the user's sessions have), the user, then the create
/// script's arguments (now, expires at, the field/value pairs). Returns `{0}` for a
/// collision, `{2}` when refused, `{1, ended handles...}` when written.
pub(crate) static LIMITED: LazyLock<Script> = LazyLock::new(|| Script::new(&limited_source()));

/// The text of [`LIMITED`] (also the base of the event log's variant,
/// [`crate::events::LIMITED_LOGGED`]).
pub(crate) fn limited_source() -> String {
    format!(
        "{BATCH}{DECODE}
local idx, k = KEYS[1], KEYS[2]
local max, refuse, repl, handle, sp, user = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local now = tonumber(ARGV[7])
if redis.call('EXISTS', k) == 1 then
  local e = redis.call('HGET', k, 'e')
  if not e or tonumber(e) > now then return {{0}} end
  redis.call('DEL', k)
end
local live = {{}}
for _, m in ipairs(redis.call('SMEMBERS', idx)) do
  if m ~= repl then
    local raw = decode(m)
    local f = raw and redis.call('HMGET', sp .. raw, 'e', 'c', 's', 'u')
    if f and f[1] and tonumber(f[1]) > now and f[4] == user then
      live[#live + 1] = {{m, tonumber(f[3] or f[2]), tonumber(f[2]), sp .. raw, f[1]}}
    else
      redis.call('SREM', idx, m)
    end
  end
end
local over = #live + 1 - max
local ended = {{1}}
if over > 0 then
  if refuse == '1' then return {{2}} end
  table.sort(live, function(a, b)
    if a[2] ~= b[2] then return a[2] < b[2] end
    if a[3] ~= b[3] then return a[3] < b[3] end
    return a[1] < b[1]
  end)
  for i = 1, over do
    local s = live[i]
    redis.call('UNLINK', s[4])
    redis.call('HSET', s[4], 'e', s[5], 'c', ARGV[7], 'd:{ENDED_FIELD}', '{ENDED_BY_LIMIT}')
    redis.call('PEXPIREAT', s[4], s[5])
    redis.call('SREM', idx, s[1])
    ended[#ended + 1] = s[1]
  end
end
if #ARGV < 1000 then
  redis.call('HSET', k, unpack(ARGV, 9))
else
  batch('HSET', k, 9, #ARGV)
end
redis.call('PEXPIREAT', k, ARGV[8])
redis.call('SADD', idx, handle)
return ended
",
        BATCH = scripts::BATCH,
    )
}

impl RedisStore {
    /// [`SessionStore::create_limited`](cloakroom_core::store::SessionStore::create_limited)
    /// for a record of `user`; with `logged` (the store's event log and the new session's
    /// event), the events are written by the same script ([`crate::events`]).
    pub(crate) async fn create_limited_for(
        &self,
        user: &str,
        key: &SessionKey,
        record: &Record,
        limit: &Limit,
        logged: Option<(&Log, &Event)>,
    ) -> Result<Admitted> {
        self.check_placed(key, Some(user))?;
        let outcome = self.admit_by_script(user, key, record, limit, logged).await;
        if let (Ok(Admitted::Done { ended }), Some(near)) = (&outcome, &self.inner.near) {
            for k in ended {
                near.invalidate(&self.session_key(k));
            }
        }
        outcome
    }

    /// The one script [`LIMITED`] (or, with `logged`,
    /// [`LIMITED_LOGGED`](crate::events::LIMITED_LOGGED)).
    async fn admit_by_script(
        &self,
        user: &str,
        key: &SessionKey,
        record: &Record,
        limit: &Limit,
        logged: Option<(&Log, &Event)>,
    ) -> Result<Admitted> {
        let (ukey, skey) = (self.user_key(user), self.session_key(key));
        let mut args = vec![
            limit.max.to_string().into_bytes(),
            if limit.policy == LimitPolicy::RefuseNew {
                b"1".to_vec()
            } else {
                b"0".to_vec()
            },
            limit
                .replacing
                .map(|k| k.to_handle().into_bytes())
                .unwrap_or_default(),
            key.to_handle().into_bytes(),
            // The user's shard: `create_limited` checked the key is placed there.
            self.session_key_prefix(self.shard_of_key(key)),
            user.as_bytes().to_vec(),
        ];
        args.extend(codec::create_args(record, Timestamp::now()));
        let (script, stream) = match logged {
            // The log's arguments go after the create's times (ARGV[9..=12]).
            Some((log, event)) => {
                let at = args.len().min(8);
                args.splice(at..at, log.limited_args(event));
                (
                    &*crate::events::LIMITED_LOGGED,
                    Some(log.key(self.shard_of_key(key))),
                )
            }
            None => (&*LIMITED, None),
        };
        let conn = self.conn_for(&skey);
        let (wait, timeout) = (self.inner.wait, self.inner.timeout);
        let replied = bounded(timeout, "create (limited)", || {
            let mut conn = conn.clone();
            let mut invocation = script.prepare_invoke();
            invocation.key(ukey.as_bytes()).key(&skey);
            if let Some(stream) = stream {
                invocation.key(stream);
            }
            for arg in &args {
                invocation.arg(arg.as_slice());
            }
            async move {
                let reply = invocation.invoke_async::<Value>(&mut conn).await?;
                if wait > 0 {
                    crate::wait::wait_on_all(std::slice::from_ref(&conn), wait, timeout).await?;
                }
                Ok(reply)
            }
        })
        .await?;
        let replied: Vec<Value> = reply(replied)?;
        let mut replied = replied.into_iter();
        let code: i64 = reply(replied.next().unwrap_or(Value::Nil))?;
        match code {
            0 => Ok(Admitted::Collision),
            2 => Ok(Admitted::Refused),
            _ => {
                let ended = replied
                    .map(|h| {
                        let h: String = reply(h)?;
                        SessionKey::from_handle(&h)
                            .ok_or_else(|| Error::new(ErrorKind::Corrupt, "bad handle"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Admitted::Done { ended })
            }
        }
    }
}
