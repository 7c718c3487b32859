//! ID sources: random for production, sequential for tests and readable demos.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::machine::IdSource;
use crate::model::{KeyPrefix, SfId};

/// Random record numbers: safe for many processes sharing one database (62^12 > 2^64, so
/// distinct random numbers give distinct IDs).
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn next_id(&self, kind: KeyPrefix) -> SfId {
        // As with a v4 UUID, an operating system that cannot give random bytes is a broken
        // machine, not a case to answer: no ID can be safe without them.
        let bits = getrandom::u64().expect("the operating system's random source failed");
        SfId::from_number(kind, bits)
    }
}

/// Consecutive record numbers from a starting point: deterministic, for one process.
#[derive(Debug)]
pub struct SequentialIds(AtomicU64);

impl SequentialIds {
    /// Numbers start after `first - 1`.
    pub fn starting_at(first: u64) -> SequentialIds {
        SequentialIds(AtomicU64::new(first))
    }
}

impl Default for SequentialIds {
    fn default() -> Self {
        SequentialIds::starting_at(1)
    }
}

impl IdSource for SequentialIds {
    fn next_id(&self, kind: KeyPrefix) -> SfId {
        SfId::from_number(kind, self.0.fetch_add(1, Ordering::Relaxed))
    }
}
