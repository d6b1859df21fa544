//! Paging through every session with `SCAN`, node after node on a Cluster, with a cursor
//! that survives resharding.

use cloakroom_core::session::SessionKey;
use cloakroom_core::store::{Cursor, Error, ErrorKind, Page, Result};

use redis::Value;

use crate::codec::reply;
use crate::conn::bounded;
use crate::{RedisStore, SCAN_CALLS, SCAN_COUNT};

impl RedisStore {
    /// The scan topology: `(node id, address)` sorted by id. A standalone server is node 0;
    /// a Cluster master is identified by the lowest slot it serves.
    pub(crate) async fn scan_nodes(&self) -> Result<Vec<(u16, Option<(String, u16)>)>> {
        if !self.inner.cluster {
            return Ok(vec![(0, None)]);
        }
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        let corrupt = || Error::new(ErrorKind::Corrupt, "unexpected CLUSTER SLOTS reply");
        let mut masters: Vec<(u16, Option<(String, u16)>)> = Vec::new();
        let ranges: Vec<Vec<Value>> = reply(self.query("scan", b"", cmd).await?)?;
        for range in ranges {
            // `[start, end, [host, port, id, ...], replicas...]`
            let mut fields = range.into_iter();
            let (Some(start), Some(_end), Some(master)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(corrupt());
            };
            let start = u16::try_from(reply::<i64>(start)?).map_err(|_| corrupt())?;
            let mut master = reply::<Vec<Value>>(master)?.into_iter();
            let (Some(host), Some(port)) = (master.next(), master.next()) else {
                return Err(corrupt());
            };
            let host: String = reply(host)?;
            let port = u16::try_from(reply::<i64>(port)?).map_err(|_| corrupt())?;
            let addr = Some((host, port));
            match masters.iter_mut().find(|(_, a)| *a == addr) {
                Some((id, _)) => *id = (*id).min(start),
                None => masters.push((start, addr)),
            }
        }
        masters.sort_by_key(|(id, _)| *id);
        Ok(masters)
    }

    /// `cmd` on the node at `addr` (a Cluster master of [`Self::scan_nodes`]; one server
    /// ignores it).
    pub(crate) async fn query_node(
        &self,
        what: &'static str,
        addr: &(String, u16),
        cmd: redis::Cmd,
    ) -> Result<Value> {
        let conn = self.conn();
        bounded(self.inner.timeout, what, || {
            let (mut conn, cmd) = (conn.clone(), cmd.clone());
            async move { conn.send_to_node(cmd, addr).await }
        })
        .await
    }

    /// One `SCAN` call on the node at `addr` (a default one: the standalone server) from `cursor`:
    /// the next cursor and the session keys found, sorted, without duplicates.
    async fn scan_batch(
        &self,
        addr: &(String, u16),
        cursor: u64,
    ) -> Result<(u64, Vec<SessionKey>)> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(&self.inner.scan_pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let scanned = self.query_node("scan", addr, cmd).await?;
        let (next_cursor, found): (u64, Vec<Vec<u8>>) = reply(scanned)?;
        let session_prefix = format!("{}s:", self.inner.prefix);
        let mut batch: Vec<SessionKey> = found
            .into_iter()
            .filter_map(|k| {
                // On a Cluster, the shard's tag comes first (see `crate::shard`).
                let bytes = match self.inner.cluster {
                    true => crate::shard::untagged(&k, session_prefix.as_bytes())?,
                    false => k.strip_prefix(session_prefix.as_bytes())?,
                };
                let key = SessionKey::from_bytes(bytes.try_into().ok()?);
                (self.session_key(&key) == k).then_some(key)
            })
            .collect();
        batch.sort_unstable_by_key(SessionKey::to_handle);
        batch.dedup();
        Ok((next_cursor, batch))
    }

    /// One page of [`SessionStore::scan`]: `SCAN` node after node, loading what it finds.
    pub(crate) async fn scan_page(&self, cursor: Cursor, limit: usize) -> Result<Page> {
        let limit = limit.max(1);
        let mut pos = ScanPos::parse(&cursor)?;
        let nodes = self.scan_nodes().await?;
        let mut node_index = match nodes.iter().position(|(id, _)| *id >= pos.node) {
            Some(i) => i,
            None => {
                return Ok(Page {
                    sessions: Vec::new(),
                    next: None,
                });
            }
        };
        if nodes[node_index].0 != pos.node {
            // The node we were on is gone (resharding): start the next one afresh.
            pos = ScanPos {
                node: nodes[node_index].0,
                cursor: 0,
                after: None,
            };
        }
        let mut sessions = Vec::new();
        for _ in 0..SCAN_CALLS {
            let addr = nodes[node_index].1.clone().unwrap_or_default();
            let (next_cursor, mut batch) = self.scan_batch(&addr, pos.cursor).await?;
            if let Some(after) = &pos.after {
                batch.retain(|k| k.to_handle().as_str() > after.as_str());
            }
            let mut taken = 0;
            while taken < batch.len() {
                let want = (limit - sessions.len()).min(batch.len() - taken);
                let chunk = &batch[taken..taken + want];
                for (key, record) in chunk.iter().zip(self.load_many("scan", chunk).await?) {
                    // A rotation grace's forwarding record is no session.
                    if let Some(record) = record.filter(|r| !r.is_forward() && !r.is_ended()) {
                        sessions.push(record.info(*key));
                    }
                }
                taken += want;
                if sessions.len() == limit && taken < batch.len() {
                    pos.after = Some(batch[taken - 1].to_handle());
                    return Ok(Page {
                        sessions,
                        next: Some(pos.cursor()),
                    });
                }
            }
            // This batch is done: move on.
            pos.after = None;
            if next_cursor != 0 {
                pos.cursor = next_cursor;
            } else {
                node_index += 1;
                match nodes.get(node_index) {
                    Some((id, _)) => {
                        pos.node = *id;
                        pos.cursor = 0;
                    }
                    None => {
                        return Ok(Page {
                            sessions,
                            next: None,
                        });
                    }
                }
            }
            if sessions.len() == limit {
                break;
            }
        }
        Ok(Page {
            sessions,
            next: Some(pos.cursor()),
        })
    }
}

/// Escapes glob characters so the prefix matches itself in `SCAN MATCH`.
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Where a scan continues: the node (by id), its `SCAN` cursor, and the last handle taken
/// from the batch at that cursor when a page filled up in the middle of it.
struct ScanPos {
    node: u16,
    cursor: u64,
    after: Option<String>,
}

impl ScanPos {
    fn parse(cursor: &Cursor) -> Result<ScanPos> {
        if cursor.as_str().is_empty() {
            return Ok(ScanPos {
                node: 0,
                cursor: 0,
                after: None,
            });
        }
        let bad = || Error::new(ErrorKind::Config, "invalid scan cursor");
        let mut parts = cursor.as_str().splitn(3, ':');
        let node = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let scan = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let after = match parts.next().ok_or_else(bad)? {
            "" => None,
            h => Some(SessionKey::from_handle(h).ok_or_else(bad)?.to_handle()),
        };
        Ok(ScanPos {
            node,
            cursor: scan,
            after,
        })
    }

    fn cursor(&self) -> Cursor {
        Cursor::new(format!(
            "{}:{}:{}",
            self.node,
            self.cursor,
            self.after.as_deref().unwrap_or("")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_escaping() {
        assert_eq!(glob_escape("app:"), "app:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn scan_cursor_round_trip() {
        let key = SessionKey::from_bytes([7; 16]);
        let pos = ScanPos {
            node: 5461,
            cursor: 42,
            after: Some(key.to_handle()),
        };
        let again = ScanPos::parse(&pos.cursor()).unwrap();
        assert_eq!(
            (again.node, again.cursor, again.after),
            (5461, 42, Some(key.to_handle()))
        );
        assert!(ScanPos::parse(&Cursor::new("x")).is_err());
        assert!(ScanPos::parse(&Cursor::new("1:2:not-a-handle")).is_err());
        assert_eq!(ScanPos::parse(&Cursor::start()).unwrap().cursor, 0);
    }
}
