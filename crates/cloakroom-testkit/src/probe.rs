//! [`Probe`]: a memory store that counts its calls and can be told to fail or hang, for
//! testing what an adapter does around the store (operations per request, 503s, timeouts).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use cloakroom_core::session::{SessionKey, Timestamp};
use cloakroom_core::store::{
    self, Admitted, Applied, Created, Cursor, Limit, MemoryStore, Page, Patch, Record, SessionInfo,
    SessionStore,
};

/// A [`MemoryStore`] that counts calls and can be told to fail (`Unavailable`) or hang.
#[derive(Debug, Default)]
pub struct Probe {
    /// The store behind it (read it directly to check what was written).
    pub inner: MemoryStore,
    calls: AtomicUsize,
    /// Every call fails with [`store::ErrorKind::Unavailable`] while set.
    pub fail: AtomicBool,
    /// Every call waits forever while set.
    pub hang: AtomicBool,
}

impl Probe {
    async fn gate(&self) -> store::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(store::Error::new(
                store::ErrorKind::Unavailable,
                "probe down",
            ));
        }
        Ok(())
    }

    /// Store calls so far (`purge_expired` aside).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl SessionStore for Probe {
    async fn load(&self, key: &SessionKey) -> store::Result<Option<Record>> {
        self.gate().await?;
        self.inner.load(key).await
    }
    async fn create(&self, key: &SessionKey, record: &Record) -> store::Result<Created> {
        self.gate().await?;
        self.inner.create(key, record).await
    }
    async fn create_limited(
        &self,
        key: &SessionKey,
        record: &Record,
        limit: &Limit,
    ) -> store::Result<Admitted> {
        self.gate().await?;
        self.inner.create_limited(key, record, limit).await
    }
    async fn apply(&self, key: &SessionKey, patch: &Patch) -> store::Result<Applied> {
        self.gate().await?;
        self.inner.apply(key, patch).await
    }
    async fn touch(
        &self,
        key: &SessionKey,
        last_seen: Timestamp,
        expires_at: Timestamp,
    ) -> store::Result<Applied> {
        self.gate().await?;
        self.inner.touch(key, last_seen, expires_at).await
    }
    async fn delete(&self, key: &SessionKey) -> store::Result<bool> {
        self.gate().await?;
        self.inner.delete(key).await
    }
    async fn sessions_of(&self, user: &str) -> store::Result<Vec<SessionInfo>> {
        self.gate().await?;
        self.inner.sessions_of(user).await
    }
    async fn delete_user(&self, user: &str, except: Option<&SessionKey>) -> store::Result<u64> {
        self.gate().await?;
        self.inner.delete_user(user, except).await
    }
    async fn scan(&self, cursor: Cursor, limit: usize) -> store::Result<Page> {
        self.gate().await?;
        self.inner.scan(cursor, limit).await
    }
    async fn purge_expired(&self) -> store::Result<u64> {
        self.inner.purge_expired().await
    }

    async fn put_challenge(
        &self,
        challenge: &str,
        session: &SessionKey,
        expires_at: Timestamp,
    ) -> store::Result<Created> {
        self.gate().await?;
        self.inner
            .put_challenge(challenge, session, expires_at)
            .await
    }

    async fn take_challenge(&self, challenge: &str) -> store::Result<Option<SessionKey>> {
        self.gate().await?;
        self.inner.take_challenge(challenge).await
    }
}
