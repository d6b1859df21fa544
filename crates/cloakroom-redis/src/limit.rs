//! The concurrent-session limit ([`SessionStore::create_limited`]) on Redis.
//!
//! **Standalone and Sentinel**: one Lua script, [`LIMITED`], over the user's index set and the
//! new session's key (`KEYS`), and the session hashes its members name (Redis runs a script
//! alone, so nothing comes between the count and the insert): it prunes dead members,
//! counts the user's live sessions, turns the least recently seen into tombstones (or
//! refuses), writes the new record and indexes it. One round trip, where a plain login's
//! create costs two (the record, then the index).
//!
//! **Cluster**: the index set and the sessions it names live in different slots, so no
//! script can reach them together. The index set is the admission authority instead, and a
//! login is admitted by a compare-and-set on it alone ([`ADMIT`]):
//!
//! 1. the new record is written first, not yet indexed; nobody holds its ticket until the
//!    login's response, which is only sent after step 4;
//! 2. the client reads the index (`SMEMBERS`: the set `S`) and the records it names: live
//!    ones of the user (`L`) and dead ones (`D`: gone, expired, tombstones, someone else's);
//! 3. it picks the sessions to end (`E`, least recently seen, `|L| - |E| + 1 <= max`) or
//!    refuses (the new record is deleted), and turns each of `E` into a tombstone ([`END`]:
//!    one script per session key, only if it still belongs to the user);
//! 4. [`ADMIT`] on the index key: if the set is still exactly `S`, it removes `E` and `D`
//!    and adds the new session; otherwise nothing, and the client starts again at 2.
//!
//! Why no user ever has more than `max` live sessions whose tickets were issued: every such
//! session is in the index (a ticket is only issued after step 4 added it, and only
//! `delete`, revocation or expiry, which end the session, take it out). When step 4
//! succeeds, the index is unchanged since step 2, so every live member is in `L` (a member
//! of `D` cannot come back: records are never resurrected and keys are 256-bit random),
//! and `E` are tombstones already: the live members afterwards are at most `L - E` plus the
//! new one. Any failure (an error, a timeout, contention past [`ATTEMPTS`]) deletes the new
//! record and refuses the login: sessions may have been ended by then, but the limit is
//! never exceeded. The cost of that order: a login that fails after step 3 has ended
//! sessions for nothing, and a crash between steps 1 and 4 leaves a record whose ticket
//! nobody has (it expires unused). The `limit_race_*` conformance checks run this protocol
//! against a real Cluster spawned by the testkit. More in `docs/session-limit.md`.

use std::sync::LazyLock;
use std::time::Duration;

use cloakroom_core::session::{Event, SessionKey, Timestamp};
use cloakroom_core::store::{
    Admitted, ENDED_BY_LIMIT, ENDED_FIELD, Error, ErrorKind, Limit, LimitPolicy, Record, Result,
    admission,
};
use redis::{Script, Value};

use crate::codec::{self, reply};
use crate::conn::bounded;
use crate::events::Log;
use crate::scripts;
use crate::store::RedisStore;

/// How often a Cluster login tries the compare-and-set before it gives up (503): each
/// failure means another login of the same user was admitted meanwhile.
const ATTEMPTS: usize = 64;

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

/// Standalone: `KEYS` = the user's index set, the new session's key; `ARGV` = max, `1` to
/// refuse (else end the least recently seen), the handle a renewal replaces (or `''`), the
/// new handle, the prefix of session keys (`<prefix>s:`), the user, then the create
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

/// Cluster, step 4: `KEYS[1]` = the user's index set; `ARGV` = the new handle, the number
/// of members observed (`n`), those members, then the members to remove. Returns 1 (and
/// removes and adds) when the set is exactly the observed one, 0 (and writes nothing)
/// otherwise.
pub(crate) static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "
local idx = KEYS[1]
local n = tonumber(ARGV[2])
if redis.call('SCARD', idx) ~= n then return 0 end
for i = 3, 2 + n do
  if redis.call('SISMEMBER', idx, ARGV[i]) == 0 then return 0 end
end
for i = 3 + n, #ARGV do redis.call('SREM', idx, ARGV[i]) end
redis.call('SADD', idx, ARGV[1])
return 1
",
    )
});

/// Cluster, step 3: `KEYS[1]` = a session's key; `ARGV` = now, the user. Turns the record
/// into a tombstone that keeps its expiry if it is a live session of the user. Returns 1
/// when it did.
pub(crate) static END: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "
local k = KEYS[1]
local m = redis.call('HMGET', k, 'e', 'u')
if not m[1] or tonumber(m[1]) <= tonumber(ARGV[1]) or m[2] ~= ARGV[2] then return 0 end
redis.call('UNLINK', k)
redis.call('HSET', k, 'e', m[1], 'c', ARGV[1], 'd:{ENDED_FIELD}', '{ENDED_BY_LIMIT}')
redis.call('PEXPIREAT', k, m[1])
return 1
"
    ))
});

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
        let outcome = match (self.inner.cluster, logged) {
            (true, None) => self.admit_on_cluster(user, key, record, limit).await,
            (true, Some(_)) => Err(crate::events::no_cluster()),
            (false, logged) => self.admit_by_script(user, key, record, limit, logged).await,
        };
        if let (Ok(Admitted::Done { ended }), Some(near)) = (&outcome, &self.inner.near) {
            for k in ended {
                near.invalidate(&self.session_key(k));
            }
        }
        outcome
    }

    /// Standalone (and Sentinel): the one script [`LIMITED`] (or, with `logged`,
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
            self.session_key_prefix(),
            user.as_bytes().to_vec(),
        ];
        args.extend(codec::create_args(record, Timestamp::now()));
        let (script, stream) = match logged {
            // The log's arguments go after the create's times (ARGV[9..=12]).
            Some((log, event)) => {
                let at = args.len().min(8);
                args.splice(at..at, log.limited_args(event));
                (&*crate::events::LIMITED_LOGGED, Some(log.key()))
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

    /// Cluster: the compare-and-set protocol of the module docs.
    async fn admit_on_cluster(
        &self,
        user: &str,
        key: &SessionKey,
        record: &Record,
        limit: &Limit,
    ) -> Result<Admitted> {
        // Step 1: the record, not yet indexed.
        let skey = self.session_key(key);
        if !self.create_by_restore(&skey, record).await? {
            let args = codec::create_args(record, Timestamp::now());
            let created = self
                .script("create", &scripts::CREATE, &skey, &args)
                .await?;
            if reply::<i64>(created)? != 1 {
                return Ok(Admitted::Collision);
            }
        }
        let outcome = self.admit_index(user, key, limit).await;
        if !matches!(outcome, Ok(Admitted::Done { .. })) {
            // Refused or failed: the record never was a session; its ticket was never sent.
            let now = Timestamp::now().as_millis().to_string().into_bytes();
            if let Err(e) = self
                .script("create (undo)", &scripts::DELETE, &skey, &[now])
                .await
            {
                tracing::warn!(error = %e, "could not delete a record the limit refused; it expires unused");
            }
        }
        outcome
    }

    /// Steps 2 to 4, until the compare-and-set holds.
    async fn admit_index(&self, user: &str, key: &SessionKey, limit: &Limit) -> Result<Admitted> {
        let ukey = self.user_key(user);
        let handle = key.to_handle().into_bytes();
        // The sessions this login turned into tombstones, over all its attempts.
        let mut ours = Vec::new();
        for attempt in 0..ATTEMPTS {
            let members = self.index_members("create (limited)", user).await?;
            let keys: Vec<Option<SessionKey>> = members
                .iter()
                .map(|m| {
                    std::str::from_utf8(m)
                        .ok()
                        .and_then(SessionKey::from_handle)
                })
                .collect();
            let named: Vec<SessionKey> = keys.iter().flatten().copied().collect();
            let mut records = self
                .load_many("create (limited)", &named)
                .await?
                .into_iter();
            let (mut live, mut dead) = (Vec::new(), Vec::new());
            for (member, k) in members.iter().zip(&keys) {
                let record = k.and_then(|_| records.next().flatten());
                match (k, record) {
                    (Some(k), Some(r)) if r.meta.user.as_deref() == Some(user) => {
                        live.push((*k, r.meta.last_seen, r.meta.created_at));
                    }
                    _ => dead.push(member.clone()),
                }
            }
            let Some(ended) = admission(limit, live) else {
                return Ok(Admitted::Refused);
            };
            // Step 3: the sessions to end become tombstones before the admission.
            let now = Timestamp::now().as_millis().to_string().into_bytes();
            for k in &ended {
                let args = [now.clone(), user.as_bytes().to_vec()];
                let done = self
                    .script("create (ending)", &END, &self.session_key(k), &args)
                    .await?;
                if reply::<i64>(done)? == 1 {
                    ours.push(*k);
                }
            }
            // Step 4: admitted only if the index is as it was read.
            let mut args = vec![handle.clone(), members.len().to_string().into_bytes()];
            args.extend(members.iter().cloned());
            args.extend(ended.iter().map(|k| k.to_handle().into_bytes()));
            args.extend(dead);
            let admitted = self
                .script("create (admission)", &ADMIT, ukey.as_bytes(), &args)
                .await?;
            if reply::<i64>(admitted)? == 1 {
                return Ok(Admitted::Done { ended: ours });
            }
            // Another login of this user was admitted meanwhile: read again.
            let jitter = u64::from(handle[attempt % handle.len()] % 8);
            tokio::time::sleep(Duration::from_millis(1 + jitter)).await;
        }
        Err(Error::new(
            ErrorKind::Unavailable,
            "too many concurrent logins of one user; the login was refused",
        ))
    }
}
