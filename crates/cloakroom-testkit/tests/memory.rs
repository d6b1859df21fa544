//! The conformance suite on the reference [`MemoryStore`].

use std::sync::Arc;

use cloakroom_core::store::MemoryStore;

cloakroom_testkit::conformance_tests!(async { Arc::new(MemoryStore::new()) });

cloakroom_testkit::sealed_engine_tests!(async { Arc::new(MemoryStore::new()) });
