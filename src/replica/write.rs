//! Writes: a caller's planned writes run against the current records
//! under the keys' locks, and records from other replicas merge into
//! this one's; both end in one atomic store batch per call (`commit`),
//! which also keeps the record cache, the counters and the expiry index
//! in step.

use super::delta::{Delta, Footprint};
use super::{Planner, Received, Replica, WriteGroup, Written};
use crate::db::DATABASES;
use crate::model::record::{Record, lww_order};
use crate::storage::{FsyncPolicy, Space, StoreError};
use crate::version::Dot;
use bytes::Bytes;
use std::sync::atomic::Ordering;

/// Records changed by a batch: per storage key, what the record counted
/// for before the batch and the record now.
#[derive(Default)]
struct Changes<'k> {
    keys: Vec<&'k [u8]>,
    records: Vec<(Footprint, Record)>,
    index: std::collections::HashMap<&'k [u8], usize, xxhash_rust::xxh3::Xxh3DefaultBuilder>,
}

impl<'k> Changes<'k> {
    fn get(&self, skey: &[u8]) -> Option<&(Footprint, Record)> {
        self.index.get(skey).map(|&i| &self.records[i])
    }

    fn set(&mut self, skey: &'k [u8], before: Footprint, now: Record) {
        match self.index.get(skey) {
            Some(&i) => self.records[i].1 = now,
            None => {
                self.index.insert(skey, self.keys.len());
                self.keys.push(skey);
                self.records.push((before, now));
            }
        }
    }

    /// Takes `later`'s changes on top of these.
    fn absorb(&mut self, later: Changes<'k>) {
        if self.keys.is_empty() {
            // The first group of a batch, often the only one.
            *self = later;
            return;
        }
        for (skey, (before, now)) in later.keys.into_iter().zip(later.records) {
            self.set(skey, before, now);
        }
    }
}

impl Replica {
    /// Runs each planner against its key's current record under the key's
    /// lock, stores every planned write in one atomic batch, and returns
    /// once the batch is as durable as the fsync policy promises. Dots are
    /// minted with this node's id. With `all_or_nothing`, one declining
    /// planner cancels every write (MSETNX) and the result is empty.
    ///
    /// # Errors
    /// The outer error is the store's, the inner a planner's rejection;
    /// nothing is written on either.
    pub fn update<E>(
        &self,
        writes: Vec<(Bytes, Planner<E>)>,
        all_or_nothing: bool,
    ) -> Result<Result<Vec<Written>, E>, StoreError> {
        let mut outcomes = self.update_groups(vec![WriteGroup {
            writes,
            all_or_nothing,
        }])?;
        outcomes.pop().unwrap_or_else(|| Ok(Ok(Vec::new())))
    }

    /// [`Replica::update`] for the groups of several callers at once: each
    /// group applies or fails on its own, as if run one after another in
    /// order, and every applied group is stored in one atomic batch (one
    /// journal write for all of them).
    ///
    /// # Errors
    /// The outer error is the store's commit (nothing is written); per
    /// group, a store error reading its keys or a planner's rejection
    /// (that group writes nothing).
    #[expect(
        clippy::type_complexity,
        reason = "one result per group, inside the commit's"
    )]
    pub fn update_groups<E>(
        &self,
        groups: Vec<WriteGroup<E>>,
    ) -> Result<Vec<Result<Result<Vec<Written>, E>, StoreError>>, StoreError> {
        let node = self.meta().dot_id;
        let keys: Vec<Vec<Vec<u8>>> = groups
            .iter()
            .map(|g| g.writes.iter().map(|(k, _)| self.storage_key(k)).collect())
            .collect();
        let _guards = self.locks.lock(keys.iter().flatten().map(Vec::as_slice));
        // Every key the applied groups wrote: its record before this call
        // and its record now; one delta per key at the end, so a key
        // written twice (MSET a 1 a 2, or two callers) is stored once.
        let mut batch = Changes::default();
        let mut results = Vec::with_capacity(groups.len());
        for (group, keys) in groups.into_iter().zip(&keys) {
            // A group sees the batch so far and its own earlier writes.
            let mut staged = Changes::default();
            let result = self.plan_group(node, group, keys, &batch, &mut staged);
            if matches!(result, Ok(Ok(_))) {
                batch.absorb(staged);
            }
            results.push(result);
        }
        let mut delta = Delta::default();
        for (skey, (before, after)) in batch.keys.iter().zip(&batch.records) {
            delta.record(skey, *before, after);
        }
        self.commit(delta)?;
        Ok(results)
    }

    /// Plans one group of [`Replica::update_groups`] into `staged`.
    fn plan_group<'k, E>(
        &self,
        node: crate::version::NodeId,
        group: WriteGroup<E>,
        keys: &'k [Vec<u8>],
        batch: &Changes<'k>,
        staged: &mut Changes<'k>,
    ) -> Result<Result<Vec<Written>, E>, StoreError> {
        let mut outcomes = Vec::with_capacity(group.writes.len());
        for ((_, plan), skey) in group.writes.into_iter().zip(keys) {
            let (before, previous) = match staged.get(skey).or_else(|| batch.get(skey)) {
                Some((before, now)) => (*before, Some(now.clone())),
                None => {
                    let stored = self.read_for_write(skey)?;
                    (Footprint::of(stored.as_ref()), stored)
                }
            };
            let planned = match plan(previous.as_ref()) {
                Ok(planned) => planned,
                Err(rejection) => return Ok(Err(rejection)),
            };
            let current = match planned {
                Some((supersedes, sibling)) => {
                    let mut record = previous.clone().unwrap_or_default();
                    let floor = self.dots.next(self.store.as_ref())?;
                    let written = record.supersede_from(&supersedes, node, floor, sibling);
                    if written.counter > floor {
                        self.dots.used(self.store.as_ref(), written.counter)?;
                    }
                    self.bound(&mut record, written);
                    Some(record)
                }
                None => None,
            };
            if let Some(record) = &current {
                staged.set(skey, before, record.clone());
            } else if group.all_or_nothing {
                *staged = Changes::default();
                return Ok(Ok(Vec::new()));
            }
            outcomes.push(Written { previous, current });
        }
        Ok(Ok(outcomes))
    }

    /// Merges a record received from another replica into this one's
    /// (replication, read repair, hinted handoff). Returns the merged record.
    ///
    /// # Errors
    /// Store errors; nothing is written then.
    pub fn merge(&self, key: &[u8], incoming: &Record) -> Result<Record, StoreError> {
        let skey = self.storage_key(key);
        let _guards = self.locks.lock(std::iter::once(skey.as_slice()));
        let previous = self.read_for_write(&skey)?;
        let mut record = previous.clone().unwrap_or_default();
        if previous.as_ref().is_some_and(|p| p.covers_set(incoming)) {
            return Ok(record);
        }
        // No bound here: only the write's coordinator collapses siblings
        // (see `bound`), so replicas never drop different ones.
        record.sync(incoming);
        let mut delta = Delta::default();
        delta.record(&skey, Footprint::of(previous.as_ref()), &record);
        self.commit(delta)?;
        Ok(record)
    }

    /// Merges records received from other replicas (a peer's batch of
    /// replications) in one atomic store batch: one journal write for the
    /// batch instead of one per record. A key that comes twice is merged
    /// twice into one record and written once.
    ///
    /// # Errors
    /// Store errors; nothing is written then.
    pub fn merge_many<'r>(
        &self,
        incoming: impl IntoIterator<Item = &'r Received>,
    ) -> Result<(), StoreError> {
        // References: the callers' batches are not moved into one list.
        let incoming: Vec<&Received> = incoming.into_iter().collect();
        let keys: Vec<Vec<u8>> = incoming.iter().map(|r| self.storage_key(&r.key)).collect();
        let _guards = self.locks.lock(keys.iter().map(Vec::as_slice));
        // In key order, so a key's records are next to each other: a
        // batch of 256 keys is not 256 x 256 comparisons.
        let mut order: Vec<usize> = (0..incoming.len()).collect();
        order.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
        let mut delta = Delta::default();
        for same_key in order.chunk_by(|&a, &b| keys[a] == keys[b]) {
            let skey = keys[same_key[0]].as_slice();
            let previous = self.read_for_write(skey)?;
            // The common case, a replicated write: one record that
            // supersedes this replica's (or there is none). The merge is
            // that record, so it is stored as the bytes it came in.
            if let [only] = same_key
                && let Received {
                    record,
                    encoded: Some(encoded),
                    ..
                } = incoming[*only]
                && previous.as_ref().is_none_or(|p| record.covers_set(p))
            {
                // Unless the two are equal: then there is nothing to write.
                if previous.as_ref().is_none_or(|p| !p.covers_set(record)) {
                    let before = Footprint::of(previous.as_ref());
                    delta.record_as(skey, before, record, encoded.clone());
                }
                continue;
            }
            let mut current = previous.clone().unwrap_or_default();
            let mut changed = false;
            for &i in same_key {
                let record = &incoming[i].record;
                // As in `merge`: no sibling bound here.
                if !current.covers_set(record) {
                    current.sync(record);
                    changed = true;
                }
            }
            if changed {
                delta.record(skey, Footprint::of(previous.as_ref()), &current);
            }
        }
        self.commit(delta)
    }

    /// The sibling bound, applied by the coordinator of a write only, and
    /// never to the sibling it just wrote: the collapse is part of that
    /// write (its context covers the dropped dots, so every replica drops
    /// them on merge), and the new dot, which no other replica has seen,
    /// survives every merge. Bounding on merge instead can make two
    /// replicas drop different siblings and converge to none
    /// (`version::laws`).
    fn bound(&self, record: &mut Record, written: Dot) {
        let dropped = record.bound(self.siblings_max(), |dot, sibling| {
            (*dot == written, lww_order(dot, sibling))
        });
        self.stats
            .siblings_collapsed
            .fetch_add(dropped as u64, Ordering::Relaxed);
    }

    pub(super) fn commit(&self, delta: Delta) -> Result<(), StoreError> {
        if delta.ops.is_empty() {
            return Ok(());
        }
        let records = delta
            .ops
            .iter()
            .filter(|op| op.space == Space::Data)
            .count();
        if let Err(e) = self.store.apply(&delta.ops) {
            // A refused or failed write left the store as it was (see
            // `Store::apply`); any other error, and what the store holds
            // now is not known: forget it all.
            if !e.is_unwritable() {
                self.cache.invalidate();
            }
            return Err(e);
        }
        for op in delta.ops {
            if op.space == Space::Data {
                self.cache.put(&op.key, op.value);
            }
        }
        for (place, xor) in delta.leaves {
            self.trees.toggle_at(place, xor);
        }
        for partition in delta.dead {
            self.reap_marks.mark(partition);
        }
        self.stats
            .writes
            .fetch_add(records as u64, Ordering::Relaxed);
        for db in 0..DATABASES {
            self.stats.value_keys[db].fetch_add(delta.value_keys[db], Ordering::Relaxed);
            self.stats.expiring_keys[db].fetch_add(delta.expiring_keys[db], Ordering::Relaxed);
        }
        if self.fsync == FsyncPolicy::Always {
            self.group.wait_durable(self.store.as_ref())?;
        }
        Ok(())
    }
}
