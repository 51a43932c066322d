//! Tombstone reaping on this replica (docs/cluster.md, "Tombstone
//! reaping"): which records are dead (no value: tombstones only, or
//! nothing left after the expiry reaper), and their removal, each only
//! if its record is still the one the caller saw (its anti-entropy leaf
//! unchanged). When a record may go is the cluster's decision
//! (`coordinator::cluster::aae`); this only keeps it from removing a
//! record that changed meanwhile.

use super::counters::has_value;
use super::delta::{Delta, Footprint};
use super::{Replica, tree};
use crate::storage::{StoreError, storage_key};
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};

/// Per partition: whether it may hold a dead record. Set by a commit that
/// writes one (and for every partition at open: not known), cleared by
/// a look that finds none.
pub(super) struct ReapMarks(Box<[AtomicBool]>);

impl ReapMarks {
    pub(super) fn new(partitions: u32) -> Self {
        Self((0..partitions).map(|_| AtomicBool::new(true)).collect())
    }

    pub(super) fn mark(&self, partition: u16) {
        if let Some(mark) = self.0.get(usize::from(partition)) {
            mark.store(true, Ordering::Relaxed);
        }
    }

    /// Whether `partition` was marked, clearing the mark.
    fn take(&self, partition: u16) -> bool {
        self.0
            .get(usize::from(partition))
            .is_some_and(|mark| mark.swap(false, Ordering::Relaxed))
    }
}

impl Replica {
    /// The dead records of `partitions` (those marked), as `(key, leaf)`,
    /// at most `limit` in all. A partition looked at whole and found
    /// without one is unmarked.
    ///
    /// # Errors
    /// Store errors.
    pub fn dead_records(
        &self,
        partitions: &[u16],
        limit: usize,
    ) -> Result<Vec<(u16, tree::Leaves)>, StoreError> {
        let mut out = Vec::new();
        let mut left = limit;
        for &partition in partitions {
            if left == 0 || !self.reap_marks.take(partition) {
                continue;
            }
            let mut from = storage_key(partition, b"");
            let mut dead = Vec::new();
            loop {
                let page =
                    self.scan_partition(partition, &from, crate::limits::STORE_WALK_PAGE_RECORDS)?;
                let Some((last, _, _)) = page.last() else {
                    break;
                };
                from = super::next_key(last);
                for (skey, key, record) in &page {
                    if !has_value(record) {
                        dead.push((key.clone(), tree::leaf(skey, Some(record))));
                    }
                }
                if dead.len() >= left {
                    break;
                }
            }
            if !dead.is_empty() {
                // Still (or not wholly looked at): the next look starts over.
                self.reap_marks.mark(partition);
                dead.truncate(left);
                left -= dead.len();
                out.push((partition, dead));
            }
        }
        Ok(out)
    }

    /// Removes each record of `entries` that is still dead and still has
    /// that leaf (the same causal context); returns how many it removed.
    ///
    /// # Errors
    /// Store errors; nothing is removed then.
    pub fn reap(&self, entries: &[(Bytes, u64)]) -> Result<usize, StoreError> {
        let keys: Vec<Vec<u8>> = entries.iter().map(|(k, _)| self.storage_key(k)).collect();
        let _guards = self.locks.lock(keys.iter().map(Vec::as_slice));
        let mut delta = Delta::default();
        let mut reaped = 0;
        for (skey, (_, leaf)) in keys.iter().zip(entries) {
            let Some(record) = self.read_for_write(skey)? else {
                continue;
            };
            if !has_value(&record) && tree::leaf(skey, Some(&record)) == *leaf {
                delta.remove(skey, Footprint::of(Some(&record)));
                reaped += 1;
            }
        }
        self.commit(delta)?;
        Ok(reaped)
    }
}
