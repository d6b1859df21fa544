//! What the Redis tests share: a store opened under a key prefix of its own. A test file
//! declares `mod common;` and calls `common::open_fresh(url, "kind")`.

// Each test file uses some of the helpers.
#![allow(dead_code)]

use cloakroom_redis::{RedisStore, RedisStoreBuilder};
use cloakroom_testkit::unique_prefix;

/// A store at `url` under a fresh key prefix ([`unique_prefix`]`(kind)`), so tests sharing a
/// server never see each other's keys; [`RedisStore::prefix`] tells it.
///
/// # Panics
/// When the store does not open, naming `kind` and the error.
pub(crate) async fn open_fresh(url: impl Into<String>, kind: &str) -> RedisStore {
    open_fresh_with(url, kind, |builder| builder).await
}

/// [`open_fresh`] with `options` applied to the builder (an event log, a timeout, more
/// connections).
///
/// # Panics
/// When the store does not open, naming `kind` and the error.
pub(crate) async fn open_fresh_with(
    url: impl Into<String>,
    kind: &str,
    options: impl FnOnce(RedisStoreBuilder) -> RedisStoreBuilder,
) -> RedisStore {
    options(RedisStore::builder(url).prefix(unique_prefix(kind)))
        .build()
        .await
        .unwrap_or_else(|e| panic!("opening the {kind} store: {e}"))
}
