//! Key counts per logical database: the counters INFO and DBSIZE read,
//! kept in step by every commit, saved by a clean shutdown and counted
//! by a scan after a crash.

use super::{Replica, next_key};
use crate::db::DATABASES;
use crate::limits::STORE_WALK_PAGE_RECORDS;
use crate::model::record::Record;
use crate::storage::{StoreError, split_storage_key};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// One count per logical database (`crate::db`), indexed by database.
pub type PerDb<T> = [T; DATABASES];

/// Value keys and expiring keys per database, as [`ReplicaStats`] holds
/// them.
type KeyCounters = (PerDb<i64>, PerDb<i64>);

/// The logical database of a storage key's client key, as an index.
pub(super) fn db_index(skey: &[u8]) -> usize {
    usize::from(split_storage_key(skey).map_or(0, |(_, key)| crate::db::db_of(key)))
}

/// Counters the replica keeps for INFO and DBSIZE.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    /// Keys holding a value sibling, expired or not, until reaped.
    pub value_keys: PerDb<AtomicI64>,
    /// Keys in the expiry index (every value they hold expires).
    pub expiring_keys: PerDb<AtomicI64>,
    /// Keys whose values expired and were reaped from disk.
    pub expired_keys: AtomicU64,
    /// Siblings collapsed by the sibling bound.
    pub siblings_collapsed: AtomicU64,
    /// Records written.
    pub writes: AtomicU64,
}

/// Key counts for DBSIZE and INFO keyspace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyCounts {
    /// Per logical database (`crate::db`), by index.
    pub dbs: PerDb<DbKeys>,
    /// Keys whose values expired and were removed, since start.
    pub expired: u64,
}

/// One logical database's key counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbKeys {
    /// Keys holding a live value.
    pub keys: u64,
    /// Of those, keys with an expiry.
    pub expires: u64,
}

impl KeyCounts {
    /// Adds `other`'s database counts to these.
    pub fn add(&mut self, other: &Self) {
        for (mine, theirs) in self.dbs.iter_mut().zip(&other.dbs) {
            mine.keys += theirs.keys;
            mine.expires += theirs.expires;
        }
    }
}

/// Meta entry: key counts saved by a clean shutdown.
const CLEAN_COUNTS_META: &str = "clean_counts";
/// The meta entry of the trees a clean shutdown saved (`tree`'s format).
const CLEAN_TREES_META: &str = "clean_aae_trees";

/// Whether a record holds a value sibling, expired or not.
pub(super) fn has_value(record: &Record) -> bool {
    record
        .siblings()
        .iter()
        .any(|(_, s)| s.live_value(0).is_some())
}

impl Replica {
    /// Keys holding a value at `now_ms`: the value-key count less the keys
    /// whose values have all expired but are not reaped yet (an index scan
    /// as long as the reaper's backlog).
    ///
    /// # Errors
    /// Store errors.
    pub fn live_keys(&self, now_ms: u64) -> Result<PerDb<u64>, StoreError> {
        let expired = self.count_expiry_entries(now_ms)?;
        Ok(std::array::from_fn(|db| {
            let values = self.stats.value_keys[db].load(Ordering::Relaxed);
            values.saturating_sub(expired[db]).max(0) as u64
        }))
    }

    /// Counts keys with a value and expiry-index entries, and rebuilds
    /// the anti-entropy trees: one scan of the data, for an open after a
    /// crash, or after records were removed wholesale. The caller keeps
    /// writes out (the open, or every key lock held).
    pub(super) fn count_keys(&self) -> Result<KeyCounters, StoreError> {
        let mut from = Vec::new();
        let mut value_keys = PerDb::default();
        self.trees.clear();
        loop {
            let page = self.scan(&from, None, STORE_WALK_PAGE_RECORDS)?;
            let Some((last, _, _)) = page.last() else {
                break;
            };
            from = next_key(last);
            for (skey, _, record) in &page {
                value_keys[db_index(skey)] += i64::from(has_value(record));
                self.trees
                    .toggle(skey, super::tree::leaf(skey, Some(record)));
            }
        }
        Ok((value_keys, self.count_expiry_entries(u64::MAX)?))
    }

    /// The counts a clean shutdown saved, removed as they are read: after
    /// a crash they are absent and the next open counts by scanning.
    /// Value keys then expiring keys, each one i64 (big-endian) per
    /// database; a directory from before databases saved one of each.
    pub(super) fn take_clean_counts(&self) -> Result<Option<KeyCounters>, StoreError> {
        let Some(bytes) = self.store.meta_get(CLEAN_COUNTS_META)? else {
            return Ok(None);
        };
        self.store.meta_put(CLEAN_COUNTS_META, &[])?;
        let counts: Vec<i64> = bytes
            .chunks_exact(8)
            .map(|b| i64::from_be_bytes(b.try_into().unwrap_or_default()))
            .collect();
        let (mut values, mut expiring) = (PerDb::default(), PerDb::default());
        match counts.len() {
            2 => (values[0], expiring[0]) = (counts[0], counts[1]),
            n if n == 2 * DATABASES => {
                values.copy_from_slice(&counts[..DATABASES]);
                expiring.copy_from_slice(&counts[DATABASES..]);
            }
            _ => return Ok(None), // emptied by an earlier open: not clean
        }
        Ok(Some((values, expiring)))
    }

    /// Saves the key counts and the anti-entropy trees for the next
    /// open, which then need not scan (the caller holds every key lock:
    /// nothing changes them meanwhile).
    pub(super) fn save_clean_counts(&self) -> Result<(), StoreError> {
        let counts: Vec<u8> = [&self.stats.value_keys, &self.stats.expiring_keys]
            .into_iter()
            .flatten()
            .flat_map(|c| c.load(Ordering::Relaxed).to_be_bytes())
            .collect();
        self.store
            .meta_put(CLEAN_TREES_META, &self.trees.encode())?;
        self.store.meta_put(CLEAN_COUNTS_META, &counts)
    }

    /// Loads the trees a clean shutdown saved, removing them as they are
    /// read; `false` when there are none (then the open scans).
    pub(super) fn take_clean_trees(&self) -> Result<bool, StoreError> {
        let Some(bytes) = self.store.meta_get(CLEAN_TREES_META)? else {
            return Ok(false);
        };
        self.store.meta_put(CLEAN_TREES_META, &[])?;
        Ok(self.trees.load(&bytes))
    }
}
