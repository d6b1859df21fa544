//! Dedicated connections for `WATCH`/`MULTI`/`EXEC` transactions.
//!
//! `WATCH` is connection state, so a transaction needs a connection nobody else uses while it
//! runs: the multiplexed connections the rest of the crate shares cannot carry it. A lease
//! gives one connection to one task; it goes back to the pool only when the task says the
//! connection is clean ([`Lease::release`]). A lease dropped any other way (an error, a
//! timeout that cancelled the task mid-transaction) closes its connection, so no half-done
//! `WATCH` or `MULTI` ever reaches the next user.
//!
//! New connections go where the pool's [`Master`] says: the one server, or (through Sentinel)
//! the server the sentinels name as master at that moment, checked with `ROLE`. After a
//! failover the idle connections to the old master are dropped ([`Pool::clear`], when a
//! transaction finds its connection broken or its server demoted) and the next lease asks
//! the sentinels again.

use std::sync::Mutex;
use std::time::Duration;

use cloakroom_redis::connection::Master;
use redis::RedisResult;
use redis::aio::MultiplexedConnection;
use tokio::sync::{Semaphore, SemaphorePermit};

pub(crate) struct Pool {
    master: Master,
    /// The bound on connecting.
    timeout: Duration,
    idle: Mutex<Vec<MultiplexedConnection>>,
    permits: Semaphore,
}

impl Pool {
    /// A pool of at most `size` connections to `master` (connected lazily, each within
    /// `timeout`).
    pub(crate) fn new(master: Master, timeout: Duration, size: usize) -> Pool {
        Pool {
            master,
            timeout,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
        }
    }

    /// A connection for this task alone: an idle one, or a new one. Waits while `size`
    /// leases are out.
    pub(crate) async fn lease(&self) -> RedisResult<Lease<'_>> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the pool's semaphore is never closed");
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.master.dedicated(self.timeout).await?,
        };
        Ok(Lease {
            pool: self,
            conn: Some(conn),
            _permit: permit,
        })
    }

    /// Drops every idle connection (after a connection error: they are likely dead too).
    pub(crate) fn clear(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// One task's connection; see the [module docs](self).
pub(crate) struct Lease<'a> {
    pool: &'a Pool,
    conn: Option<MultiplexedConnection>,
    _permit: SemaphorePermit<'a>,
}

impl Lease<'_> {
    pub(crate) fn conn(&mut self) -> &mut MultiplexedConnection {
        self.conn
            .as_mut()
            .expect("a lease holds its connection until released")
    }

    /// Returns the connection to the pool: only call this when no `WATCH` or `MULTI` is
    /// pending on it and its selected database is the pool's.
    pub(crate) fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
    }
}
