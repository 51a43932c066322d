//! Per-key locks: a fixed set of striped mutexes, so a read-modify-write
//! of a key never interleaves with another of the same key, and memory
//! does not grow with the keys.

use crate::limits::KEY_LOCK_STRIPES;
use std::sync::{Mutex, MutexGuard, PoisonError};
use xxhash_rust::xxh3::xxh3_64;

/// The stripes; a key's stripe is a hash of its storage key.
pub(super) struct KeyLocks {
    stripes: Box<[Mutex<()>]>,
}

impl KeyLocks {
    pub(super) fn new() -> Self {
        Self {
            stripes: (0..KEY_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Locks the stripes of storage keys in stripe order (so two batches
    /// never deadlock), each stripe once.
    pub(super) fn lock<'a>(&self, keys: impl Iterator<Item = &'a [u8]>) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = keys
            .map(|k| (xxh3_64(k) % self.stripes.len() as u64) as usize)
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .map(|i| {
                self.stripes[i]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
            })
            .collect()
    }

    /// Locks every stripe (FLUSHALL, close): no write runs meanwhile.
    pub(super) fn lock_all(&self) -> Vec<MutexGuard<'_, ()>> {
        self.stripes
            .iter()
            .map(|l| l.lock().unwrap_or_else(PoisonError::into_inner))
            .collect()
    }
}
