//! Reading the log: positions as stream ids, entries decoded, a cap's losses reported
//! as a gap, the shards of a Cluster merged, and the blocking follower.

use super::*;

/// A position as a stream id (`None` for [`Position::start`]); a malformed one is a
/// configuration error (not a position this store wrote).
pub(super) fn stream_id(position: &Position) -> Result<Option<(u64, u64)>> {
    if position.is_start() {
        return Ok(None);
    }
    parse_id(position.as_str()).map(Some).ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!(
                "{:?} is not a position of a Redis event log (a stream id such as \
                 1700000000000-0)",
                position.as_str()
            ),
        )
    })
}

/// `ms-seq` as numbers.
pub(super) fn parse_id(text: &str) -> Option<(u64, u64)> {
    let (ms, seq) = text.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(ms) || !digits(seq) {
        return None;
    }
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

pub(super) fn corrupt(what: impl Into<String>) -> Error {
    Error::new(ErrorKind::Corrupt, what.into())
}

/// The text of a string reply.
pub(super) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// The field/value pairs of a reply that is a map (RESP3) or a flat array of pairs (RESP2).
pub(super) fn pairs(value: &Value) -> Vec<(&Value, &Value)> {
    match value {
        Value::Map(map) => map.iter().map(|(k, v)| (k, v)).collect(),
        Value::Array(flat) => flat.chunks_exact(2).map(|c| (&c[0], &c[1])).collect(),
        _ => Vec::new(),
    }
}

/// What `XINFO STREAM` says about the entries the stream no longer has.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Dropped {
    /// `max-deleted-entry-id`: the highest id removed by `XDEL` (Redis does not count the
    /// cap's trims here).
    max_deleted: (u64, u64),
    /// Whether any entry was ever removed (`entries-added` > `length`): the cap's trims
    /// (and any `XDEL`), all older than the first entry kept.
    any: bool,
    /// The first entry kept (`recorded-first-entry-id`), or, for an empty stream, the last
    /// one ever added (`last-generated-id`): a reader before it missed events.
    first: (u64, u64),
}

impl Dropped {
    /// Whether a reader after `after` missed events. Trims remove the oldest entries, so a
    /// reader at or past the first entry kept missed none; one before it did, unless its
    /// last event was itself the newest one trimmed (Redis 7.0 records no trimmed ids, so
    /// that reader is told of a gap too: never a missed gap, rarely a needless one).
    pub(super) fn gap(&self, after: (u64, u64)) -> bool {
        after < self.max_deleted || (self.any && after < self.first)
    }
}

/// [`Dropped`] from `XINFO STREAM`'s reply (no stream: nothing dropped).
pub(super) fn dropped(info: &Value) -> Result<Dropped> {
    if let Value::ServerError(e) = info {
        // `ERR no such key`: nothing was ever logged (or the stream was deleted).
        return match e.details() {
            Some(d) if d.contains("no such key") => Ok(Dropped::default()),
            _ => Err(map_error(e.clone().into(), "event log (XINFO STREAM)")),
        };
    }
    let fields = pairs(info);
    let field = |name: &str| {
        (fields.iter())
            .find(|(k, _)| text(k).as_deref() == Some(name))
            .map(|(_, v)| *v)
            .ok_or_else(|| corrupt(format!("XINFO STREAM has no {name} (Redis 7?)")))
    };
    let id = |name: &str| {
        field(name).and_then(|v| {
            text(v)
                .and_then(|t| parse_id(&t))
                .ok_or_else(|| corrupt(format!("a malformed {name} in XINFO STREAM")))
        })
    };
    let int = |name: &str| match field(name)? {
        Value::Int(n) => Ok(*n),
        other => text(other)
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| corrupt(format!("a malformed {name} in XINFO STREAM"))),
    };
    let (length, added) = (int("length")?, int("entries-added")?);
    let first = if length == 0 {
        // All gone: a reader that had the last one missed nothing.
        id("last-generated-id")?
    } else {
        id("recorded-first-entry-id")?
    };
    Ok(Dropped {
        max_deleted: id("max-deleted-entry-id")?,
        any: added > length,
        first,
    })
}

/// One `XRANGE` entry as a logged event.
pub(super) fn entry(value: Value) -> Result<LoggedEvent> {
    let bad = || corrupt("a malformed entry in the Redis event log");
    let Value::Array(parts) = value else {
        return Err(bad());
    };
    let [id, fields] = <[Value; 2]>::try_from(parts).map_err(|_| bad())?;
    let id = text(&id).ok_or_else(bad)?;
    let (mut at, mut kind, mut session, mut previous, mut user) = (None, None, None, None, None);
    for (k, v) in pairs(&fields) {
        let v = text(v).ok_or_else(bad)?;
        match text(k).as_deref() {
            Some("at") => at = v.parse::<i64>().ok(),
            Some("kind") => kind = Some(v),
            Some("session") => session = SessionKey::from_handle(&v),
            Some("previous") => previous = Some(v),
            Some("user") => user = Some(v),
            _ => {}
        }
    }
    let kind = parse_kind(&kind.ok_or_else(bad)?, previous.as_deref()).ok_or_else(bad)?;
    Ok(LoggedEvent {
        position: Position::new(id),
        event: Event {
            kind,
            session: session.ok_or_else(bad)?,
            user,
            at: Timestamp::from_millis(at.ok_or_else(bad)?),
        },
    })
}

impl RedisStore {
    /// Waits up to `wait` for an entry after `id` (`XREAD BLOCK` on a follower's
    /// connection). `Ok(true)` when one came, `Ok(false)` when the wait ran out.
    pub(super) async fn block(
        &self,
        log: &Log,
        master: &Master,
        id: &str,
        wait: Duration,
    ) -> Result<bool> {
        let timeout = self.inner.timeout;
        let taken = log.lock_idle().pop();
        let mut conn = match taken {
            Some(conn) => conn,
            None => {
                let connect = master.dedicated(timeout);
                match tokio::time::timeout(timeout, connect).await {
                    Ok(Ok(conn)) => conn,
                    Ok(Err(e)) => return Err(map_error(e, "event log (follower connection)")),
                    Err(_) => {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!("redis event log: no connection within {timeout:?}"),
                        ));
                    }
                }
            }
        };
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(ms)
            .arg("STREAMS")
            .arg(log.key(0))
            .arg(id);
        let read = cmd.query_async::<Value>(&mut conn);
        match tokio::time::timeout(wait + timeout, read).await {
            Ok(Ok(value)) => {
                let mut idle = log.lock_idle();
                if idle.len() < IDLE_FOLLOWERS {
                    idle.push(conn);
                }
                Ok(!matches!(value, Value::Nil))
            }
            // The connection is dropped: its state is unknown.
            Ok(Err(e)) => Err(map_error(e, "event log (XREAD BLOCK)")),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "redis event log: XREAD BLOCK gave no reply within {wait:?} and {timeout:?}"
                ),
            )),
        }
    }
}

impl RedisStore {
    /// At most `max` entries of the stream `key` after `from` (`None`: from its start),
    /// positioned by their ids, and whether the reader missed some. One pipeline: `XINFO
    /// STREAM` and `XRANGE (<from> + COUNT <max>`.
    pub(super) async fn read_stream(
        &self,
        key: &[u8],
        from: Option<(u64, u64)>,
        max: usize,
    ) -> Result<(Vec<LoggedEvent>, bool)> {
        let start = match from {
            Some((ms, seq)) => format!("({ms}-{seq}"),
            None => "-".to_owned(),
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors()
            .cmd("XINFO")
            .arg("STREAM")
            .arg(key)
            .cmd("XRANGE")
            .arg(key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(max.max(1));
        let conn = self.conn_for(key);
        let replies = bounded(self.inner.timeout, "event log (read)", || {
            let mut conn = conn.clone();
            let pipe = &pipe;
            async move { pipe.query_async::<Vec<Value>>(&mut conn).await }
        })
        .await?;
        let mut replies = replies.into_iter();
        let (info, range) = (replies.next(), replies.next());
        let dropped = dropped(&info.unwrap_or(Value::Nil))?;
        let entries = match range {
            Some(Value::Array(entries)) => entries,
            Some(Value::ServerError(e)) => {
                return Err(map_error(e.into(), "event log (XRANGE)"));
            }
            Some(Value::Nil) | None => Vec::new(),
            Some(other) => return Err(corrupt(format!("unexpected XRANGE reply: {other:?}"))),
        };
        let events = (entries.into_iter().take(max))
            .map(entry)
            .collect::<Result<Vec<_>>>()?;
        Ok((events, dropped.gap(from.unwrap_or((0, 0)))))
    }

    /// [`EventLog::read`] on a Cluster: every shard's stream read after its id in `after`
    /// (in flight together), the entries merged by id (then shard), at most `max`; each
    /// event's position moves only its own shard's id. A gap when any shard has one.
    pub(super) async fn read_shards(
        &self,
        log: &Log,
        after: &Position,
        max: usize,
    ) -> Result<Batch> {
        let mut at = shard_ids(after, log.keys.len())?;
        let reads = (0..log.keys.len()).map(|i| {
            let from = Some(at[i]).filter(|id| *id != (0, 0));
            let key = log.keys[i].as_bytes();
            async move { self.read_stream(key, from, max).await }
        });
        let read = futures_util::future::try_join_all(reads).await?;
        let mut gap = false;
        let mut merged = Vec::new();
        for (shard, (events, shard_gap)) in read.into_iter().enumerate() {
            gap |= shard_gap;
            for event in events {
                let id = parse_id(event.position.as_str())
                    .ok_or_else(|| corrupt("a malformed stream id"))?;
                merged.push((id, shard, event));
            }
        }
        merged.sort_by_key(|(id, shard, _)| (*id, *shard));
        let mut events = Vec::with_capacity(merged.len().min(max));
        for (id, shard, mut event) in merged.into_iter().take(max.max(1)) {
            at[shard] = id;
            event.position = Position::new(join_ids(&at));
            events.push(event);
        }
        let next = events
            .last()
            .map_or_else(|| after.clone(), |e| e.position.clone());
        Ok(Batch { events, next, gap })
    }
}

/// A Cluster log's position: one stream id per shard, joined by `,` (`start`: all `0-0`).
pub(super) fn shard_ids(position: &Position, shards: usize) -> Result<Vec<(u64, u64)>> {
    if position.is_start() {
        return Ok(vec![(0, 0); shards]);
    }
    let ids: Option<Vec<(u64, u64)>> = position.as_str().split(',').map(parse_id).collect();
    ids.filter(|ids| ids.len() == shards).ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!(
                "{:?} is not a position of a Redis Cluster event log ({shards} stream ids \
                 joined by commas)",
                position.as_str()
            ),
        )
    })
}

pub(super) fn join_ids(ids: &[(u64, u64)]) -> String {
    let ids: Vec<String> = ids.iter().map(|(ms, seq)| format!("{ms}-{seq}")).collect();
    ids.join(",")
}
