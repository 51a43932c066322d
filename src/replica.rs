//! This node's copy of the data: reads and read-modify-writes of records
//! over a [`Store`], under per-key locks, with the fsync policy applied,
//! the expiry index kept in step, and expired values reaped.
//!
//! Everything here is synchronous and may block on disk; async callers go
//! through the storage threads (`storage::StorageExecutor`). The replica
//! mints dots with this node's id, so only a replica of a key may
//! coordinate a write to it (docs/cluster.md); it knows nothing of N, R
//! or W.

use crate::db::DATABASES;
use crate::limits::{KEY_LOCK_STRIPES, STORE_WALK_PAGE_RECORDS};
use crate::model::record::{
    Record, Sibling, decode_record, decode_record_shared, encode_record, lww_order,
};
use crate::ring::partition_of;
use crate::storage::{
    BatchOp, CacheStats, FsyncPolicy, GroupCommit, HealthReport, Meta, RecordCache, Space, Store,
    StoreError, load_or_init_meta, partition_end, split_storage_key, storage_key,
};
use crate::version::{Dot, Supersedes};
use bytes::Bytes;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use xxhash_rust::xxh3::xxh3_64;

/// Decides a write from the key's current record: `Ok(None)` writes
/// nothing, `Ok(Some((supersedes, sibling)))` adds `sibling` superseding
/// those versions, `Err` rejects the whole batch.
pub type Planner<E> =
    Box<dyn FnOnce(Option<&Record>) -> Result<Option<(Supersedes, Sibling)>, E> + Send>;

/// The outcome of one planned write.
#[derive(Debug, Clone)]
pub struct Written {
    /// The record before the write.
    pub previous: Option<Record>,
    /// The record after it, or `None` when the planner declined.
    pub current: Option<Record>,
}

/// A record from another replica, for [`Replica::merge_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The client key.
    pub key: Bytes,
    /// The record, decoded.
    pub record: Record,
    /// The bytes it came as, if it came encoded: a record that supersedes
    /// this replica's is stored as these bytes, not encoded again.
    pub encoded: Option<Bytes>,
}

impl Received {
    /// A record that came decoded (this node's own coordinator).
    pub fn decoded(key: Bytes, record: Record) -> Self {
        Self {
            key,
            record,
            encoded: None,
        }
    }
}

/// One caller's writes for [`Replica::update_groups`].
pub struct WriteGroup<E> {
    /// The writes, in order; a key may come more than once.
    pub writes: Vec<(Bytes, Planner<E>)>,
    /// One declining planner cancels the group (MSETNX).
    pub all_or_nothing: bool,
}

impl<E> std::fmt::Debug for WriteGroup<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteGroup")
            .field("writes", &self.writes.len())
            .field("all_or_nothing", &self.all_or_nothing)
            .finish()
    }
}

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

/// One count per logical database (`crate::db`), indexed by database.
pub type PerDb<T> = [T; DATABASES];

/// Value keys and expiring keys per database, as [`ReplicaStats`] holds
/// them.
type KeyCounters = (PerDb<i64>, PerDb<i64>);

/// The logical database of a storage key's client key, as an index.
fn db_index(skey: &[u8]) -> usize {
    usize::from(split_storage_key(skey).map_or(0, |(_, key)| crate::db::db_of(key)))
}

/// The sum of per-database counters.
pub fn total(counters: &PerDb<AtomicI64>) -> i64 {
    counters.iter().map(|c| c.load(Ordering::Relaxed)).sum()
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

/// How a replica is opened.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaSettings {
    /// Q for a new store (an existing one keeps its own).
    pub partitions: u32,
    /// When writes are made durable.
    pub fsync: FsyncPolicy,
    /// Live siblings kept per key by a write's coordinator.
    pub siblings_max: usize,
    /// The record cache's budget in bytes; 0 turns it off.
    pub cache_bytes: usize,
}

/// This node's replica of the keyspace.
pub struct Replica {
    store: Arc<dyn Store>,
    /// Holds what the store holds for the keys it has: changed only under
    /// the key's lock, after the store applied the change.
    cache: RecordCache,
    meta: RwLock<Meta>,
    fsync: FsyncPolicy,
    group: GroupCommit,
    locks: Box<[Mutex<()>]>,
    siblings_max: AtomicUsize,
    stats: ReplicaStats,
    /// Where the expiry reaper resumes in the expiry index.
    reap_cursor: Mutex<Vec<u8>>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("meta", &self.meta())
            .finish_non_exhaustive()
    }
}

/// The time until which a record holds a value, if every value it holds
/// expires: the key of its expiry-index entry.
fn live_until(record: &Record) -> Option<u64> {
    let mut until = None;
    for (_, sibling) in record.siblings() {
        if sibling.live_value(0).is_none() {
            continue; // tombstone
        }
        until = Some(until.unwrap_or(0).max(sibling.expire_at_ms?));
    }
    until
}

fn has_value(record: &Record) -> bool {
    record
        .siblings()
        .iter()
        .any(|(_, s)| s.live_value(0).is_some())
}

fn expiry_key(until: u64, skey: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + skey.len());
    key.extend_from_slice(&until.to_be_bytes());
    key.extend_from_slice(skey);
    key
}

/// Meta entry: key counts saved by a clean shutdown.
const CLEAN_COUNTS_META: &str = "clean_counts";

fn split_expiry_key(key: &[u8]) -> Option<(u64, &[u8])> {
    let (until, skey) = key.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*until), skey))
}

/// What a record counts for in the counters and the expiry index: all a
/// change needs to know of the record it replaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Footprint {
    has_value: bool,
    live_until: Option<u64>,
}

impl Footprint {
    fn of(record: Option<&Record>) -> Self {
        record.map_or_else(Self::default, |r| Self {
            has_value: has_value(r),
            live_until: live_until(r),
        })
    }
}

/// What changing records does to the counters and the expiry index, and
/// the store writes that make the change.
#[derive(Debug, Default)]
struct Delta {
    value_keys: PerDb<i64>,
    expiring_keys: PerDb<i64>,
    ops: Vec<BatchOp>,
}

impl Delta {
    fn record(&mut self, skey: &[u8], before: Footprint, current: &Record) {
        self.record_as(skey, before, current, encode_record(current));
    }

    /// [`Delta::record`] with `current` already encoded as `encoded`.
    fn record_as(
        &mut self,
        skey: &[u8],
        before: Footprint,
        current: &Record,
        encoded: impl Into<Bytes>,
    ) {
        let after = Footprint::of(Some(current));
        let db = db_index(skey);
        self.value_keys[db] += i64::from(after.has_value) - i64::from(before.has_value);
        if before.live_until != after.live_until {
            if let Some(until) = before.live_until {
                self.ops
                    .push(BatchOp::delete(Space::Expiry, expiry_key(until, skey)));
                self.expiring_keys[db] -= 1;
            }
            if let Some(until) = after.live_until {
                self.ops.push(BatchOp::put(
                    Space::Expiry,
                    expiry_key(until, skey),
                    Vec::new(),
                ));
                self.expiring_keys[db] += 1;
            }
        }
        self.ops
            .push(BatchOp::put(Space::Data, skey.to_vec(), encoded));
    }
}

impl Replica {
    /// Opens the replica over `store`, creating its meta with `partitions`
    /// if the store is new, and counts keys (one scan of the data and the
    /// expiry index).
    ///
    /// # Errors
    /// Store errors, and [`StoreError::Corrupt`] for a record that does
    /// not decode.
    pub fn open(store: Arc<dyn Store>, settings: ReplicaSettings) -> Result<Self, StoreError> {
        let meta = load_or_init_meta(store.as_ref(), settings.partitions)?;
        let replica = Self {
            store,
            cache: RecordCache::new(settings.cache_bytes),
            meta: RwLock::new(meta),
            fsync: settings.fsync,
            group: GroupCommit::default(),
            locks: (0..KEY_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            siblings_max: AtomicUsize::new(settings.siblings_max),
            stats: ReplicaStats::default(),
            reap_cursor: Mutex::new(Vec::new()),
        };
        let (value_keys, expiring) = match replica.take_clean_counts()? {
            Some(counts) => counts,
            None => replica.count_keys()?,
        };
        for db in 0..DATABASES {
            replica.stats.value_keys[db].store(value_keys[db], Ordering::Relaxed);
            replica.stats.expiring_keys[db].store(expiring[db], Ordering::Relaxed);
        }
        replica.warm_cache()?;
        Ok(replica)
    }

    /// Loads the store's records into the record cache, and if all of
    /// them fit, lets the cache answer for keys it lacks
    /// ([`RecordCache::mark_complete`]): in a node whose data fits its
    /// cache, a key never written costs no store lookup. Stops once more
    /// than the cache's budget is read, so opening a large store reads
    /// at most that much.
    fn warm_cache(&self) -> Result<(), StoreError> {
        let budget = self.cache.budget();
        if budget == 0 {
            return Ok(());
        }
        let (mut from, mut read) = (Vec::new(), 0);
        loop {
            let page = self
                .store
                .scan(Space::Data, &from, None, STORE_WALK_PAGE_RECORDS)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            from = next_key(last);
            for (skey, bytes) in page {
                read += skey.len() + bytes.len();
                self.cache.put(&skey, Some(Bytes::from(bytes)));
            }
            if read > budget {
                return Ok(());
            }
        }
        self.cache.mark_complete();
        Ok(())
    }

    /// This node's id and the data directory's Q.
    pub fn meta(&self) -> Meta {
        *self.meta.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fsync policy in force.
    pub fn fsync(&self) -> FsyncPolicy {
        self.fsync
    }

    /// Counters for INFO.
    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    /// Syncs run by group commit.
    pub fn group_syncs(&self) -> u64 {
        self.group.syncs()
    }

    /// The record cache's hits, misses and size.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Bytes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.store.disk_bytes()
    }

    /// Changes the sibling bound (CONFIG SET).
    pub fn set_siblings_max(&self, max: usize) {
        self.siblings_max.store(max.max(1), Ordering::Relaxed);
    }

    /// The sibling bound.
    pub fn siblings_max(&self) -> usize {
        self.siblings_max.load(Ordering::Relaxed)
    }

    /// The storage key of a user key.
    pub fn storage_key(&self, key: &[u8]) -> Vec<u8> {
        storage_key(partition_of(key, self.meta().partitions), key)
    }

    /// Reads the record of `key`.
    ///
    /// # Errors
    /// Store errors; [`StoreError::Corrupt`] if the record does not decode.
    pub fn read(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let encoded = self.read_encoded(key)?;
        self.decode(key, encoded)
    }

    /// Reads the record of `key` as stored, not decoded: a peer's read is
    /// answered with these bytes as they are.
    ///
    /// # Errors
    /// Store errors.
    pub fn read_encoded(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        let skey = self.storage_key(key);
        if let Some(cached) = self.cache.get(&skey) {
            return Ok(cached);
        }
        // Filling the cache from the store must not race a write of the key.
        let _guards = self.lock_keys(std::iter::once(skey.as_slice()));
        let stored = self.stored(&skey)?;
        self.cache.put(&skey, stored.clone());
        Ok(stored)
    }

    /// Reads `keys` as stored from the record cache alone: `None` unless
    /// every one of them is cached. Never touches the store, so async
    /// code may call it.
    pub fn read_encoded_cached(&self, keys: &[Bytes]) -> Option<Vec<Option<Bytes>>> {
        keys.iter()
            .map(|key| self.cache.get(&self.storage_key(key)))
            .collect()
    }

    /// Decodes what [`Replica::read_encoded`] gave for `key`; the values
    /// share the bytes.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the record does not decode.
    pub fn decode(&self, key: &[u8], encoded: Option<Bytes>) -> Result<Option<Record>, StoreError> {
        encoded
            .map(|bytes| {
                decode_record_shared(&bytes).map_err(|e| corrupt(&self.storage_key(key), e))
            })
            .transpose()
    }

    /// Reads a record for a write: the cache, else the store. The caller
    /// holds the key's lock; the write's commit fills the record cache.
    fn read_for_write(&self, skey: &[u8]) -> Result<Option<Record>, StoreError> {
        let bytes = match self.cache.get(skey) {
            Some(cached) => cached,
            None => self.stored(skey)?,
        };
        decode_cached(skey, bytes)
    }

    /// The store's bytes for a storage key.
    fn stored(&self, skey: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self.store.get(Space::Data, skey)?.map(Bytes::from))
    }

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
        let _guards = self.lock_keys(keys.iter().flatten().map(Vec::as_slice));
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
            let current = planned.map(|(supersedes, sibling)| {
                let mut record = previous.clone().unwrap_or_default();
                let written = record.supersede(&supersedes, node, sibling);
                self.bound(&mut record, written);
                record
            });
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
        let _guards = self.lock_keys(std::iter::once(skey.as_slice()));
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
        let _guards = self.lock_keys(keys.iter().map(Vec::as_slice));
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

    fn commit(&self, delta: Delta) -> Result<(), StoreError> {
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

    /// Up to `limit` records with storage keys at or after `from` and
    /// before `until` (to the end when `None`), in storage-key order
    /// (partition, then key), as
    /// `(storage key, user key, record)`. Deleted and expired records are
    /// included: callers filter.
    ///
    /// # Errors
    /// Store errors; [`StoreError::Corrupt`] for a record that does not decode.
    pub fn scan(
        &self,
        from: &[u8],
        until: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Bytes, Record)>, StoreError> {
        self.store
            .scan(Space::Data, from, until, limit)?
            .into_iter()
            .map(|(skey, bytes)| {
                let record = decode(&skey, &bytes)?;
                let user = split_storage_key(&skey).map_or(&[][..], |(_, k)| k);
                let user = Bytes::copy_from_slice(user);
                Ok((skey, user, record))
            })
            .collect()
    }

    /// [`Replica::scan`] within `partition`, from `from` (its first storage
    /// key, or one after a key of it) to the partition's end: the records
    /// of the partitions after it are not read.
    ///
    /// # Errors
    /// As [`Replica::scan`].
    pub fn scan_partition(
        &self,
        partition: u16,
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Bytes, Record)>, StoreError> {
        let end = partition_end(partition);
        self.scan(from, end.as_ref().map(|e| &e[..]), limit)
    }

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

    /// Counts keys with a value and expiry-index entries: one scan of the
    /// data, for an open after a crash.
    fn count_keys(&self) -> Result<KeyCounters, StoreError> {
        let mut from = Vec::new();
        let mut value_keys = PerDb::default();
        loop {
            let page = self.scan(&from, None, STORE_WALK_PAGE_RECORDS)?;
            let Some((last, _, _)) = page.last() else {
                break;
            };
            from = next_key(last);
            for (skey, _, record) in &page {
                value_keys[db_index(skey)] += i64::from(has_value(record));
            }
        }
        Ok((value_keys, self.count_expiry_entries(u64::MAX)?))
    }

    /// The counts a clean shutdown saved, removed as they are read: after
    /// a crash they are absent and the next open counts by scanning.
    /// Value keys then expiring keys, each one i64 (big-endian) per
    /// database; a directory from before databases saved one of each.
    fn take_clean_counts(&self) -> Result<Option<KeyCounters>, StoreError> {
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

    /// Shuts the replica down cleanly: flushes the in-memory tables (so
    /// the next open replays a short journal) and saves the key counts (so
    /// it need not scan).
    ///
    /// # Errors
    /// Store errors.
    pub fn close(&self) -> Result<(), StoreError> {
        let _guards: Vec<_> = self
            .locks
            .iter()
            .map(|l| l.lock().unwrap_or_else(PoisonError::into_inner))
            .collect();
        self.store.checkpoint()?;
        let counts: Vec<u8> = [&self.stats.value_keys, &self.stats.expiring_keys]
            .into_iter()
            .flatten()
            .flat_map(|c| c.load(Ordering::Relaxed).to_be_bytes())
            .collect();
        self.store.meta_put(CLEAN_COUNTS_META, &counts)
    }

    /// Index entries whose live-until is at or before `until`, per
    /// database.
    fn count_expiry_entries(&self, until: u64) -> Result<PerDb<i64>, StoreError> {
        const PAGE: usize = 4096;
        let mut from = Vec::new();
        let mut counts = PerDb::default();
        loop {
            let page = self.store.scan(Space::Expiry, &from, None, PAGE)?;
            let mut done = page.len() < PAGE;
            for (key, _) in &page {
                match split_expiry_key(key) {
                    Some((at, skey)) if at <= until => counts[db_index(skey)] += 1,
                    _ => done = true,
                }
            }
            match page.last() {
                Some((last, _)) if !done => from = next_key(last),
                _ => return Ok(counts),
            }
        }
    }

    /// Removes from disk up to `limit` values that expired at or before
    /// `now_ms`, oldest first, keeping each record's context (dots stay
    /// covered, so a later write never re-mints one). Returns how many
    /// keys were reaped; the expiry worker calls this in bounded steps.
    ///
    /// # Errors
    /// Store errors.
    pub fn reap_expired(&self, now_ms: u64, limit: usize) -> Result<usize, StoreError> {
        // Resume after the last entry reaped: the index's front is full of
        // deleted entries, and an LSM scan from the start would step over
        // all of them every time. Entries written behind the cursor (an
        // expiry set in the past) are found when a pass finds nothing due
        // and the cursor goes back to the start.
        let mut cursor = self
            .reap_cursor
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let due: Vec<(u64, Vec<u8>, Vec<u8>)> = self
            .store
            .scan(Space::Expiry, &cursor, None, limit)?
            .into_iter()
            .filter_map(|(index_key, _)| {
                let (until, skey) = split_expiry_key(&index_key)?;
                Some((until, skey.to_vec(), index_key))
            })
            .take_while(|(until, _, _)| *until <= now_ms)
            .collect();
        match due.last() {
            Some((_, _, last)) => *cursor = next_key(last),
            None => cursor.clear(),
        }
        let _guards = self.lock_keys(due.iter().map(|(_, skey, _)| skey.as_slice()));
        let mut delta = Delta::default();
        let mut reaped = 0;
        for (until, skey, index_key) in &due {
            match self.read_for_write(skey)? {
                Some(previous) if live_until(&previous) == Some(*until) => {
                    let mut record = previous.clone();
                    // Drop expired values; tombstones and live values stay.
                    record.retain(|s| s.live_value(now_ms).is_some() || s.live_value(0).is_none());
                    delta.record(skey, Footprint::of(Some(&previous)), &record);
                    reaped += 1;
                }
                // The index is kept in the same batch as the record, so a
                // stale entry means a bug or a torn directory: clean it.
                _ => {
                    tracing::warn!(key = ?skey, "stale expiry index entry removed");
                    delta
                        .ops
                        .push(BatchOp::delete(Space::Expiry, index_key.clone()));
                    delta.expiring_keys[db_index(skey)] -= 1;
                }
            }
        }
        self.commit(delta)?;
        self.stats
            .expired_keys
            .fetch_add(reaped as u64, Ordering::Relaxed);
        Ok(reaped)
    }

    /// Removes every key of database `db` (FLUSHDB), or of every database
    /// (`None`: FLUSHALL), and takes a new dot id, so that dots minted from
    /// now on can never collide with dots of the removed data that other
    /// replicas may still hold in their contexts.
    ///
    /// # Errors
    /// Store errors.
    pub fn flush(&self, db: Option<u8>) -> Result<(), StoreError> {
        let _guards: Vec<_> = self
            .locks
            .iter()
            .map(|l| l.lock().unwrap_or_else(PoisonError::into_inner))
            .collect();
        let mut meta = self.meta.write().unwrap_or_else(PoisonError::into_inner);
        let in_db = |skey: &[u8]| db.is_none_or(|db| db_index(skey) == usize::from(db));
        let doomed = |space: Space, key: &[u8]| match space {
            Space::Data => in_db(key),
            Space::Expiry => split_expiry_key(key).is_some_and(|(_, skey)| in_db(skey)),
        };
        // Then the store holds nothing the cache lacks; if the clear
        // failed part way, what it holds is not known.
        match self.store.clear(&doomed) {
            Ok(()) if db.is_none() => self.cache.clear(),
            Ok(()) => self.cache.forget(in_db),
            Err(e) => {
                self.cache.invalidate();
                return Err(e);
            }
        }
        *meta = crate::storage::renew_dot_id(self.store.as_ref(), *meta)?;
        for at in 0..DATABASES {
            if db.is_none_or(|db| usize::from(db) == at) {
                self.stats.value_keys[at].store(0, Ordering::Relaxed);
                self.stats.expiring_keys[at].store(0, Ordering::Relaxed);
            }
        }
        self.store.sync()
    }

    /// A named entry of the store's meta keyspace (e.g. the saved member
    /// list).
    ///
    /// # Errors
    /// Store errors.
    pub fn meta_entry(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.meta_get(name)
    }

    /// Writes and syncs a named meta entry.
    ///
    /// # Errors
    /// Store errors.
    pub fn set_meta_entry(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.store.meta_put(name, value)
    }

    /// Makes every write so far durable (shutdown, `everysec`).
    ///
    /// # Errors
    /// Store errors.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.store.sync()
    }

    /// Whether the store takes writes now, and its last failure.
    pub fn health(&self) -> HealthReport {
        self.store.health()
    }

    /// While the store refuses writes: probes it and, if the disk takes
    /// writes again, repairs it ([`Store::recover`]).
    ///
    /// # Errors
    /// The store's: it still refuses writes.
    pub fn recover(&self) -> Result<(), StoreError> {
        self.store.recover()
    }

    /// Locks the stripes of storage keys in stripe order (so two batches
    /// never deadlock), each stripe once.
    fn lock_keys<'a>(&self, keys: impl Iterator<Item = &'a [u8]>) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = keys
            .map(|k| (xxh3_64(k) % self.locks.len() as u64) as usize)
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .map(|i| self.locks[i].lock().unwrap_or_else(PoisonError::into_inner))
            .collect()
    }
}

/// The smallest key after `key`: where the next scan page starts.
pub fn next_key(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// Decodes a record the cache or the store gave; its values share the bytes.
fn decode_cached(skey: &[u8], bytes: Option<Bytes>) -> Result<Option<Record>, StoreError> {
    bytes
        .map(|bytes| decode_record_shared(&bytes).map_err(|e| corrupt(skey, e)))
        .transpose()
}

fn decode(skey: &[u8], bytes: &[u8]) -> Result<Record, StoreError> {
    decode_record(bytes).map_err(|e| corrupt(skey, e))
}

fn corrupt(skey: &[u8], source: crate::wire::DecodeError) -> StoreError {
    StoreError::Corrupt {
        key: skey.to_vec(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::is_live;
    use crate::storage::MemoryStore;

    fn settings(cache_bytes: usize) -> ReplicaSettings {
        ReplicaSettings {
            partitions: 64,
            fsync: FsyncPolicy::No,
            siblings_max: 8,
            cache_bytes,
        }
    }

    fn put(replica: &Replica, key: &[u8], expire_at_ms: Option<u64>) {
        let planner: Planner<()> = Box::new(move |current| {
            let context = current.map(|r| r.context().clone()).unwrap_or_default();
            let sibling = Sibling {
                expire_at_ms,
                ..Sibling::value(Bytes::from_static(b"v"), 1)
            };
            Ok(Some((context.into(), sibling)))
        });
        let written = replica.update(vec![(Bytes::copy_from_slice(key), planner)], false);
        assert!(matches!(written, Ok(Ok(_))));
    }

    // Proves a partition scan returns exactly its partition's records, in
    // pages, however many records the partitions after it hold.
    #[test]
    fn a_partition_scan_reads_only_its_partition() {
        let replica = Replica::open(Arc::new(MemoryStore::new()), settings(0)).expect("open");
        let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("key:{i}").into_bytes()).collect();
        for key in &keys {
            put(&replica, key, None);
        }
        let mut seen = 0;
        for partition in 0..64u16 {
            let mut expected: Vec<&[u8]> = (keys.iter().map(Vec::as_slice))
                .filter(|k| partition_of(k, 64) == partition)
                .collect();
            expected.sort();
            let mut found: Vec<Bytes> = Vec::new();
            let mut from = storage_key(partition, b"");
            loop {
                let page = replica.scan_partition(partition, &from, 2).expect("scan");
                found.extend(page.iter().map(|(_, key, _)| key.clone()));
                match page.last() {
                    Some((last, _, _)) if page.len() == 2 => from = next_key(last),
                    _ => break,
                }
            }
            assert_eq!(found, expected, "partition {partition}");
            seen += found.len();
        }
        assert_eq!(seen, keys.len());
    }

    // Proves opening a replica loads the store's records into the record
    // cache and, when they all fit, makes it complete (a key never
    // written is answered without the store); when they do not fit it
    // stays incomplete and every record still reads back.
    #[test]
    fn open_warms_the_cache_and_completes_it_when_all_fit() {
        use crate::limits::RECORD_CACHE_SHARDS;
        let store = Arc::new(MemoryStore::new());
        let keys: Vec<&'static [u8]> = (0..500)
            .map(|i| &*Box::leak(format!("key{i}").into_bytes().into_boxed_slice()))
            .collect();
        {
            let replica = Replica::open(store.clone(), settings(0)).expect("open");
            keys.iter().for_each(|key| put(&replica, key, None));
        }
        let warm = Replica::open(store.clone(), settings(16 << 20)).expect("open warm");
        let stats = warm.cache_stats();
        assert_eq!(stats.complete_shards, RECORD_CACHE_SHARDS, "{stats:?}");
        for key in &keys {
            assert!(warm.read(key).expect("read").is_some());
        }
        assert_eq!(warm.read(b"never written").expect("read"), None);
        assert_eq!(warm.cache_stats().misses, 0);

        // Room for about a fifth of the records.
        let cold = Replica::open(store, settings(500 * 100 / 5)).expect("open cold");
        assert!(cold.cache_stats().complete_shards < RECORD_CACHE_SHARDS);
        for key in &keys {
            assert!(cold.read(key).expect("read").is_some());
        }
        assert_eq!(cold.read(b"never written").expect("read"), None);
    }

    // Proves the reaper removes exactly the due values, keeps contexts and
    // counts, and finds entries written behind its cursor on a later pass.
    #[test]
    fn reaper_removes_due_values_and_keeps_contexts() {
        let replica = Replica::open(Arc::new(MemoryStore::new()), settings(1 << 20)).expect("open");
        put(&replica, b"a", Some(100));
        put(&replica, b"b", Some(200));
        put(&replica, b"c", None);
        assert_eq!(
            replica.live_keys(150).expect("count").iter().sum::<u64>(),
            2
        );
        assert_eq!(replica.reap_expired(150, 10).expect("reap"), 1);
        let a = replica.read(b"a").expect("read").expect("record kept");
        assert!(a.is_empty() && !a.context().is_empty());
        // An entry behind the cursor: found once a pass finds nothing due.
        put(&replica, b"d", Some(50));
        assert_eq!(replica.reap_expired(150, 10).expect("reap"), 0);
        assert_eq!(replica.reap_expired(150, 10).expect("reap"), 1);
        assert_eq!(replica.reap_expired(250, 10).expect("reap"), 1);
        assert_eq!(
            replica.live_keys(250).expect("count").iter().sum::<u64>(),
            1
        );
        assert!(is_live(&replica.read(b"c").expect("read").expect("c"), 250));
        assert_eq!(replica.stats().expired_keys.load(Ordering::Relaxed), 3);
    }

    // Proves each group of a combined update applies or fails alone and
    // sees the groups before it: a rejected group and a declined
    // all-or-nothing group write nothing, the others are stored once.
    #[test]
    fn update_groups_apply_or_fail_alone_in_order() {
        let replica = Replica::open(Arc::new(MemoryStore::new()), settings(1 << 20)).expect("open");
        let set = |value: &'static [u8]| -> Planner<&'static str> {
            Box::new(move |current: Option<&Record>| {
                let context = current.map(|r| r.context().clone()).unwrap_or_default();
                Ok(Some((
                    context.into(),
                    Sibling::value(Bytes::from_static(value), 1),
                )))
            })
        };
        let reject: Planner<&'static str> = Box::new(|_| Err("rejected"));
        let decline: Planner<&'static str> = Box::new(|_| Ok(None));
        let group =
            |writes: Vec<(&'static [u8], Planner<&'static str>)>, all_or_nothing| WriteGroup {
                writes: writes
                    .into_iter()
                    .map(|(k, p)| (Bytes::from_static(k), p))
                    .collect(),
                all_or_nothing,
            };
        let outcomes = replica
            .update_groups(vec![
                group(vec![(b"a", set(b"1")), (b"a", set(b"2"))], false),
                group(vec![(b"b", set(b"x")), (b"c", reject)], false),
                group(vec![(b"c", set(b"y")), (b"d", decline)], true),
                group(vec![(b"a", set(b"3")), (b"e", set(b"z"))], false),
            ])
            .expect("commit");
        assert!(matches!(&outcomes[1], Ok(Err("rejected"))));
        assert!(matches!(&outcomes[2], Ok(Ok(w)) if w.is_empty()));
        let last = match &outcomes[3] {
            Ok(Ok(written)) => written,
            other => panic!("group 4: {other:?}"),
        };
        // Group 4 saw group 1's second write as the current value.
        let seen = last[0].previous.as_ref().expect("a seen");
        assert_eq!(seen.siblings().len(), 1);
        assert_eq!(
            seen.siblings()[0].1.live_value(0),
            Some(&Bytes::from_static(b"2"))
        );
        for key in [&b"b"[..], b"c", b"d"] {
            assert!(replica.read(key).expect("read").is_none(), "{key:?}");
        }
        let a = replica.read(b"a").expect("read").expect("a");
        assert_eq!(a.siblings().len(), 1);
        assert_eq!(
            a.siblings()[0].1.live_value(0),
            Some(&Bytes::from_static(b"3"))
        );
        assert!(replica.read(b"e").expect("read").is_some());
        // a and e, each stored once.
        assert_eq!(replica.stats().writes.load(Ordering::Relaxed), 2);
        assert_eq!(total(&replica.stats().value_keys), 2);
    }

    // Proves a batch merge leaves the same records and counts as merging
    // one by one, with a key repeated in the batch and a stale record that
    // changes nothing: two source replicas write, a third merges.
    #[test]
    fn merge_many_matches_merging_one_by_one() {
        let open = || Replica::open(Arc::new(MemoryStore::new()), settings(1 << 20));
        let (a, b) = (open().expect("open a"), open().expect("open b"));
        put(&a, b"k", Some(100));
        let k_a1 = a.read(b"k").expect("read").expect("k on a");
        put(&a, b"k", None);
        let k_a2 = a.read(b"k").expect("read").expect("k on a");
        put(&b, b"k", None);
        put(&b, b"j", Some(100));
        let k_b = b.read(b"k").expect("read").expect("k on b");
        let j_b = b.read(b"j").expect("read").expect("j on b");
        let batch = vec![
            received(b"k", &k_a2),
            received(b"j", &j_b),
            received(b"k", &k_a1),
            received(b"k", &k_b),
        ];
        let (one, many) = (open().expect("open"), open().expect("open"));
        for r in &batch {
            one.merge(&r.key, &r.record).expect("merge");
        }
        many.merge_many(&batch).expect("merge_many");
        for key in [&b"k"[..], b"j"] {
            assert_eq!(
                one.read(key).expect("read"),
                many.read(key).expect("read"),
                "{key:?}"
            );
        }
        let k = many.read(b"k").expect("read").expect("k");
        assert!(k.covers_set(&k_a2) && k.siblings().len() == 2);
        for replica in [&one, &many] {
            let stats = replica.stats();
            assert_eq!(total(&stats.value_keys), 2);
            assert_eq!(total(&stats.expiring_keys), 1);
            assert_eq!(replica.live_keys(50).expect("count").iter().sum::<u64>(), 2);
        }
        assert_eq!(many.stats().writes.load(Ordering::Relaxed), 2);
    }

    fn received(key: &[u8], record: &Record) -> Received {
        Received {
            key: Bytes::copy_from_slice(key),
            record: record.clone(),
            encoded: Some(encode_record(record).into()),
        }
    }

    // Proves a lone record that supersedes the replica's is stored as the
    // bytes it came in, a stale one writes nothing, and a concurrent one
    // is merged into siblings: each as merging one by one leaves it.
    #[test]
    fn merge_many_stores_a_superseding_record_as_received() {
        let open = || Replica::open(Arc::new(MemoryStore::new()), settings(1 << 20));
        let (a, b) = (open().expect("open a"), open().expect("open b"));
        put(&a, b"k", None);
        let k1 = a.read(b"k").expect("read").expect("k on a");
        put(&a, b"k", Some(100));
        let k2 = a.read(b"k").expect("read").expect("k on a");
        put(&b, b"k", None);
        let concurrent = b.read(b"k").expect("read").expect("k on b");
        let (one, many) = (open().expect("open"), open().expect("open"));
        let mut writes = 0;
        for (step, record) in [&k1, &k2, &k1, &concurrent].into_iter().enumerate() {
            one.merge(b"k", record).expect("merge");
            let sent = received(b"k", record);
            many.merge_many(std::slice::from_ref(&sent))
                .expect("merge_many");
            assert_eq!(
                one.read(b"k").expect("read"),
                many.read(b"k").expect("read"),
                "step {step}"
            );
            let stored = many.read_encoded(b"k").expect("read").expect("stored");
            match step {
                0 | 1 => {
                    writes += 1;
                    // The cache holds the very bytes received, not a new
                    // encoding of them.
                    let sent = sent.encoded.as_ref().expect("sent encoded");
                    assert_eq!(stored.as_ptr(), sent.as_ptr(), "step {step}");
                }
                2 => {}
                _ => {
                    writes += 1;
                    assert_eq!(
                        many.read(b"k").expect("read").expect("k").siblings().len(),
                        2
                    );
                }
            }
            assert_eq!(
                many.stats().writes.load(Ordering::Relaxed),
                writes,
                "step {step}"
            );
            let counts = |r: &Replica| {
                let stats = r.stats();
                let load = |n: &PerDb<AtomicI64>| n.each_ref().map(|n| n.load(Ordering::Relaxed));
                (load(&stats.value_keys), load(&stats.expiring_keys))
            };
            assert_eq!(counts(&one), counts(&many), "step {step}");
        }
    }

    // Proves the record cache holds what the store holds through every
    // kind of change: writes with and without the current context
    // (siblings), tombstones, expiring values and their reaping, merges
    // from another replica one by one and in batches, and FLUSHALL. The
    // cache is small enough that entries are evicted all along, so reads
    // both hit and fill it.
    #[test]
    fn the_record_cache_always_holds_what_the_store_holds() {
        use crate::limits::{RECORD_CACHE_ENTRY_OVERHEAD_BYTES, RECORD_CACHE_SHARDS};
        use crate::random::SplitMix64;
        let keys: Vec<Bytes> = (0..256).map(|i| Bytes::from(format!("key{i}"))).collect();
        // Four keys a shard, room for about three small records: entries
        // are evicted all along. And a cache every record fits in, which
        // stays complete (answers for keys it lacks) throughout.
        let small = RECORD_CACHE_SHARDS * 2 * 3 * (RECORD_CACHE_ENTRY_OVERHEAD_BYTES + 32);
        let large = 16 << 20;
        for (seed, cache) in (0..8).flat_map(|seed| [(seed, small), (seed, large)]) {
            let mut rng = SplitMix64::new(seed);
            let mut pick = |n: usize| (rng.next_u64() % n as u64) as usize;
            let store = Arc::new(MemoryStore::new());
            let replica = Replica::open(store.clone(), settings(cache)).expect("open");
            let other =
                Replica::open(Arc::new(MemoryStore::new()), settings(0)).expect("open other");
            let write = |on: &Replica, key: &Bytes, keep_context: bool, sibling: Sibling| {
                let planner: Planner<()> = Box::new(move |current| {
                    let context = match current {
                        Some(r) if keep_context => r.context().clone(),
                        _ => crate::version::VersionVector::default(),
                    };
                    Ok(Some((context.into(), sibling)))
                });
                assert!(matches!(
                    on.update(vec![(key.clone(), planner)], false),
                    Ok(Ok(_))
                ));
            };
            let mut now = 1_000;
            for step in 0..3000u32 {
                let key = &keys[pick(keys.len())];
                now += pick(20) as u64;
                match pick(20) {
                    0..=6 => {
                        let value = Bytes::from(vec![b'v'; pick(40)]);
                        let mut sibling = Sibling::value(value, now);
                        if pick(3) == 0 {
                            sibling.expire_at_ms = Some(now + pick(100) as u64);
                        }
                        write(&replica, key, pick(4) != 0, sibling);
                    }
                    7 => write(&replica, key, true, Sibling::tombstone(now)),
                    8..=10 => {
                        write(&other, key, pick(2) == 0, Sibling::value(key.clone(), now));
                        let record = other.read(key).expect("read other").expect("written");
                        replica.merge(key, &record).expect("merge");
                    }
                    11 => {
                        let batch: Vec<Received> = (0..pick(6))
                            .filter_map(|_| {
                                let key = &keys[pick(keys.len())];
                                let record = other.read(key).expect("read")?;
                                Some(received(key, &record))
                            })
                            .collect();
                        replica.merge_many(&batch).expect("merge_many");
                    }
                    12..=13 => {
                        replica.reap_expired(now, 1 + pick(4)).expect("reap");
                    }
                    14 if pick(10) == 0 => replica.flush(None).expect("flush"),
                    _ => {
                        let _ = replica.read_encoded_cached(std::slice::from_ref(key));
                    }
                }
                let checked = if step.is_multiple_of(100) {
                    keys.len()
                } else {
                    16
                };
                for key in keys.iter().cycle().skip(pick(keys.len())).take(checked) {
                    let skey = replica.storage_key(key);
                    let stored = store.get(Space::Data, &skey).expect("get");
                    let stored = stored.map(|b| decode(&skey, &b).expect("decode"));
                    let read = replica.read(key).expect("read");
                    assert_eq!(read, stored, "seed {seed} step {step} key {key:?}");
                }
            }
            let stats = replica.cache_stats();
            if cache == small {
                assert!(stats.hits > 1000 && stats.misses > 1000, "{stats:?}");
                // Shards that evicted are no longer complete.
                assert!(stats.complete_shards < RECORD_CACHE_SHARDS, "{stats:?}");
            } else {
                assert_eq!(stats.misses, 0, "{stats:?}");
                assert_eq!(stats.complete_shards, RECORD_CACHE_SHARDS, "{stats:?}");
            }
        }
    }
}
