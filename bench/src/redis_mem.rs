//! `cloakroom-bench redis-mem [SESSIONS [ROUNDS]]`: what an idle session costs Redis, Cloakroom's
//! Redis store next to tower-sessions' (fred), each on a fresh `redis-server`.
//!
//! Both get the sessions the `new` workload leaves behind: one field `counter` = 1, no user,
//! no user agent (the load generator sends none), the default lifetime (Cloakroom: a day of
//! idleness; tower-sessions: two weeks), written through each library's store the way its
//! session layer writes a new session (Cloakroom: `RESTORE key t payload ABSTTL`;
//! tower-sessions: `SET key value EXAT t NX`), with 32 creates in flight on one connection
//! like the benchmark's 32 clients. Stores take turns, round after round (the median
//! reported, each round's figure beside it), so a busy spell of the shared machine does not
//! land on one only. Reported per session:
//!
//! - `bytes`: growth of `INFO memory` `used_memory` (keys, values, expiry entries, the
//!   dictionaries' buckets) divided by the number of sessions;
//! - `redis_cpu_us`: growth of `used_cpu_sys + used_cpu_user` (everything Redis did: reading,
//!   parsing, running, replying), and `commands`: `INFO commandstats` time by command
//!   (script-internal commands listed too, inside the script's own time);
//! - one session as Redis keeps it: `MEMORY USAGE`, encoding and fields.
//!
//! A third row, `cloakroom-redis-v1`, writes the records of Cloakroom before the compact
//! layout (metadata in `m:created`, `m:seen`, `m:exp`, `m:rem`) with that version's create
//! script, over a fred connection like tower-sessions', for the before/after comparison.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use cloakroom_core::session::{SessionId, Timestamp};
use cloakroom_core::store::{Record, SessionStore as _};
use cloakroom_testkit::redis_server::{RedisServer, Resp};

use crate::redis_stats::{RedisInfo, command_time};

/// Sessions per store when none is given.
pub(crate) const DEFAULT_SESSIONS: u64 = 20_000;

/// Creates in flight at once.
const IN_FLIGHT: u64 = 32;

/// The stores measured, in order.
const STORES: [&str; 3] = [
    "cloakroom-redis",
    "cloakroom-redis-v1",
    "tower-sessions-redis",
];

/// The create script of the first layout, as it was (an `EXISTS` check, `HSET` through a
/// chunking helper, `PEXPIREAT`).
const V1_CREATE: &str = r"
local function batch(cmd, key, from, to)
  local i = from
  while i <= to do
    local j = math.min(i + 997, to)
    redis.call(cmd, key, unpack(ARGV, i, j))
    i = j + 1
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  local exp = redis.call('HGET', KEYS[1], 'm:exp')
  if not exp or tonumber(exp) > tonumber(ARGV[1]) then return 0 end
  redis.call('DEL', KEYS[1])
end
batch('HSET', KEYS[1], 3, #ARGV)
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
";

/// What one store cost.
struct Measured {
    store: &'static str,
    sessions: u64,
    bytes: f64,
    redis_cpu_us: f64,
    commands: String,
    sample: String,
}

/// Rounds: each store is measured this many times, the stores taking turns (so a busy spell
/// of the machine does not land on one of them only); the median round is reported.
pub(crate) const ROUNDS: usize = 5;

/// Measures every store with `n` sessions, `rounds` times, and returns the report (one line
/// per store: the round with the median Redis CPU time; bytes are the median too).
pub(crate) fn run(n: u64, rounds: usize) -> anyhow::Result<String> {
    let mut out = format!(
        "redis-mem: {n} idle one-field sessions per store, each store on a fresh redis-server, \
         median of {rounds} interleaved round(s)\n"
    );
    let mut all: Vec<Vec<Measured>> = STORES.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (store, runs) in STORES.iter().zip(&mut all) {
            runs.push(measure(store, n)?);
        }
    }
    let mut results = Vec::new();
    for mut runs in all {
        runs.sort_by(|a, b| a.bytes.total_cmp(&b.bytes));
        let bytes = runs[runs.len() / 2].bytes;
        let byte_rounds: Vec<String> = runs.iter().map(|m| format!("{:.1}", m.bytes)).collect();
        runs.sort_by(|a, b| a.redis_cpu_us.total_cmp(&b.redis_cpu_us));
        let cpu: Vec<String> = runs
            .iter()
            .map(|m| format!("{:.2}", m.redis_cpu_us))
            .collect();
        let mut median = runs.swap_remove(runs.len() / 2);
        median.bytes = bytes;
        writeln!(
            out,
            "store={} sessions={} bytes_per_session={:.1} (rounds: {}) \
             redis_cpu_us_per_create={:.2} (rounds: {}) commands_per_create: {}\n  one session: {}",
            median.store,
            median.sessions,
            median.bytes,
            byte_rounds.join(" "),
            median.redis_cpu_us,
            cpu.join(" "),
            median.commands,
            median.sample
        )?;
        results.push(median);
    }
    if let [cloakroom, v1, tower] = &results[..] {
        writeln!(
            out,
            "cloakroom-redis/tower-sessions-redis: bytes {:.2}x, redis cpu {:.2}x; \
             cloakroom-redis/cloakroom-redis-v1: bytes {:.2}x, redis cpu {:.2}x",
            cloakroom.bytes / tower.bytes,
            cloakroom.redis_cpu_us / tower.redis_cpu_us,
            cloakroom.bytes / v1.bytes,
            cloakroom.redis_cpu_us / v1.redis_cpu_us,
        )?;
    }
    Ok(out)
}

fn used_memory(server: &RedisServer) -> anyhow::Result<u64> {
    let Resp::Bulk(Some(text)) = server.command(&["INFO", "memory"])? else {
        bail!("unexpected INFO reply");
    };
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .context("INFO memory has no used_memory")
}

fn int(server: &RedisServer, args: &[&str]) -> anyhow::Result<i64> {
    match server.command(args)? {
        Resp::Int(n) => Ok(n),
        other => bail!("{args:?}: unexpected reply {other:?}"),
    }
}

/// One stored session as Redis keeps it: `MEMORY USAGE`, encoding, fields or length.
fn sample(server: &RedisServer) -> anyhow::Result<String> {
    let Resp::Bulk(Some(key)) = server.command(&["RANDOMKEY"])? else {
        bail!("no key in Redis");
    };
    let key = key.as_slice();
    let usage = match server.command_bytes(&[b"MEMORY", b"USAGE", key])? {
        Resp::Int(n) => n,
        other => bail!("MEMORY USAGE: unexpected reply {other:?}"),
    };
    let encoding = server
        .command_bytes(&[b"OBJECT", b"ENCODING", key])?
        .as_str()
        .unwrap_or("?")
        .to_owned();
    let shape = match server.command_bytes(&[b"HKEYS", key])? {
        Resp::Array(Some(fields)) => {
            let names: Vec<&str> = fields.iter().filter_map(Resp::as_str).collect();
            format!("hash fields {names:?}")
        }
        _ => match server.command_bytes(&[b"STRLEN", key])? {
            Resp::Int(n) => format!("string of {n} bytes"),
            other => bail!("STRLEN: unexpected reply {other:?}"),
        },
    };
    Ok(format!(
        "key {} bytes, MEMORY USAGE {usage} bytes, {encoding}, {shape}",
        key.len()
    ))
}

fn measure(store: &'static str, n: u64) -> anyhow::Result<Measured> {
    let server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let create = Creator::open(store, &server).await?;
        // One create first (connections, scripts), then the baseline on an empty database.
        create.one().await?;
        if let Resp::Error(e) = server.command(&["FLUSHALL", "SYNC"])? {
            bail!("FLUSHALL: {e}");
        }
        let mem_before = used_memory(&server)?;
        let before = RedisInfo::read(&server)?;
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..IN_FLIGHT {
            let create = create.clone();
            let share = n / IN_FLIGHT + u64::from(t < n % IN_FLIGHT);
            tasks.spawn(async move {
                for _ in 0..share {
                    create.one().await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let after = RedisInfo::read(&server)?;
        let mem_after = used_memory(&server)?;
        let keys = int(&server, &["DBSIZE"])?;
        ensure!(
            u64::try_from(keys)? == n,
            "{store}: {keys} keys in Redis for {n} sessions"
        );
        let per = n as f64;
        Ok(Measured {
            store,
            sessions: n,
            bytes: mem_after.saturating_sub(mem_before) as f64 / per,
            redis_cpu_us: (after.cpu_secs - before.cpu_secs) * 1e6 / per,
            commands: command_time(&before, &after, per),
            sample: sample(&server)?,
        })
    })
}

/// Creates sessions the way one library's session layer does.
#[derive(Clone)]
enum Creator {
    Cloakroom(cloakroom_redis::RedisStore),
    TowerSessions(
        tower_sessions_redis_store::RedisStore<tower_sessions_redis_store::fred::prelude::Pool>,
    ),
    /// The first layout: its create script by `EVALSHA` (SHA-1 given).
    V1(tower_sessions_redis_store::fred::prelude::Pool, String),
}

/// A fred pool of one connection, as the benchmark's tower-sessions server builds it.
async fn fred_pool(url: &str) -> anyhow::Result<tower_sessions_redis_store::fred::prelude::Pool> {
    use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
    let pool = Pool::new(Config::from_url(url)?, None, None, None, 1)?;
    // The connection tasks run for as long as the process.
    let _connections = pool.connect();
    pool.wait_for_connect().await?;
    Ok(pool)
}

impl Creator {
    async fn open(store: &str, server: &RedisServer) -> anyhow::Result<Creator> {
        let url = server.url();
        let url = url.as_str();
        Ok(match store {
            "cloakroom-redis" => Creator::Cloakroom(cloakroom_redis::RedisStore::open(url).await?),
            "tower-sessions-redis" => Creator::TowerSessions(
                tower_sessions_redis_store::RedisStore::new(fred_pool(url).await?),
            ),
            "cloakroom-redis-v1" => {
                let Resp::Bulk(Some(sha)) = server.command(&["SCRIPT", "LOAD", V1_CREATE])? else {
                    bail!("SCRIPT LOAD failed");
                };
                Creator::V1(fred_pool(url).await?, String::from_utf8(sha)?)
            }
            other => bail!("unknown store {other}"),
        })
    }

    /// One new session: `counter` = 1.
    async fn one(&self) -> anyhow::Result<()> {
        match self {
            Creator::Cloakroom(store) => {
                // As the session layer makes it: created and last seen now, expiring after
                // the default idle timeout (a day), no user agent.
                let now = Timestamp::now();
                let mut record = Record::new(now, now.plus(Duration::from_secs(86_400)));
                record.data.insert("counter".into(), "1".into());
                let created = store.create(&SessionId::generate().key(), &record).await?;
                ensure!(created == cloakroom_core::store::Created::Done, "collision");
            }
            Creator::V1(pool, sha) => {
                use tower_sessions_redis_store::fred::prelude::ClientLike as _;
                use tower_sessions_redis_store::fred::types::{ClusterHash, CustomCommand};
                // The first layout's `create_args`, for the same record as above.
                let now = Timestamp::now().as_millis().to_string();
                let exp = Timestamp::now()
                    .plus(Duration::from_secs(86_400))
                    .as_millis()
                    .to_string();
                // The first layout's key: the prefix, `s:` and 43 characters of base64url
                // (a 256-bit key's handle): two 22-character handles, cut to 43.
                let handle = [SessionId::generate(), SessionId::generate()]
                    .map(|id| id.key().to_handle())
                    .concat();
                let key = format!("{}s:{}", cloakroom_redis::DEFAULT_PREFIX, &handle[..43]);
                let args: Vec<String> = [
                    sha.as_str(),
                    "1",
                    &key,
                    &now,
                    &exp,
                    "m:created",
                    &now,
                    "m:seen",
                    &now,
                    "m:exp",
                    &exp,
                    "m:rem",
                    "0",
                    "d:counter",
                    "1",
                ]
                .map(str::to_owned)
                .into();
                let evalsha = CustomCommand::new_static("EVALSHA", ClusterHash::Random, false);
                let written: i64 = pool.custom(evalsha, args).await?;
                ensure!(written == 1, "collision");
            }
            Creator::TowerSessions(store) => {
                use tower_sessions::SessionStore as _;
                use tower_sessions::cookie::time::{Duration as TimeDuration, OffsetDateTime};
                use tower_sessions::session::{Id, Record};
                // As `Session::save` makes it with the default expiry (two weeks).
                let mut record = Record {
                    id: Id::default(),
                    data: [("counter".to_owned(), serde_json::Value::from(1))]
                        .into_iter()
                        .collect(),
                    expiry_date: OffsetDateTime::now_utc() + TimeDuration::weeks(2),
                };
                store
                    .create(&mut record)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// A small run measures all three stores and finds the sessions in Redis.
    #[test]
    fn measures_every_store() {
        let report = super::run(200, 1).expect("redis-mem");
        for store in super::STORES {
            let line = report
                .lines()
                .find(|l| l.starts_with(&format!("store={store} ")))
                .unwrap_or_else(|| panic!("no {store} in {report}"));
            let bytes: f64 = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("bytes_per_session="))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no bytes in {line}"));
            assert!(bytes > 50.0, "{line}");
        }
        assert!(
            report.contains(r#"hash fields ["e", "c", "d:counter"]"#),
            "{report}"
        );
    }
}
