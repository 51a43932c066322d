//! This node's copy of the data: reads and read-modify-writes of records
//! over a [`Store`], under per-key locks, with the fsync policy applied.
//!
//! Everything here is synchronous and may block on disk; async callers use
//! `spawn_blocking`. The replica mints dots with this node's id, so only a
//! replica of a key may coordinate a write to it (design.md §3); it knows
//! nothing of N, R or W.

use crate::limits::KEY_LOCK_STRIPES;
use crate::ring::partition_of;
use crate::storage::record::{Record, Sibling, decode_record, encode_record, is_live, lww_order};
use crate::storage::{
    BatchOp, FsyncPolicy, GroupCommit, Meta, Store, StoreError, load_or_init_meta,
    split_storage_key, storage_key,
};
use crate::version::VersionVector;
use bytes::Bytes;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use xxhash_rust::xxh3::xxh3_64;

/// Decides a write from the key's current record: `None` writes nothing,
/// `Some((context, sibling))` adds `sibling` superseding `context`.
pub type Planner = Box<dyn FnOnce(Option<&Record>) -> Option<(VersionVector, Sibling)> + Send>;

/// The outcome of one planned write.
#[derive(Debug, Clone)]
pub struct Written {
    /// The record before the write.
    pub previous: Option<Record>,
    /// The record after it, or `None` when the planner declined.
    pub current: Option<Record>,
}

/// Counters the replica keeps for INFO.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    /// Keys with a live value (maintained on every write).
    pub live_keys: AtomicI64,
    /// Siblings collapsed by the sibling bound.
    pub siblings_collapsed: AtomicU64,
    /// Records written.
    pub writes: AtomicU64,
}

/// This node's replica of the keyspace.
pub struct Replica {
    store: Arc<dyn Store>,
    meta: Meta,
    fsync: FsyncPolicy,
    group: GroupCommit,
    locks: Box<[Mutex<()>]>,
    siblings_max: AtomicUsize,
    stats: ReplicaStats,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Opens the replica over `store`, creating its meta with `partitions`
    /// if the store is new, and counts the keys holding a value (one scan).
    ///
    /// # Errors
    /// Store errors, and [`StoreError::Corrupt`] for a record that does
    /// not decode.
    pub fn open(
        store: Arc<dyn Store>,
        partitions: u32,
        fsync: FsyncPolicy,
        siblings_max: usize,
    ) -> Result<Self, StoreError> {
        let meta = load_or_init_meta(store.as_ref(), partitions)?;
        let replica = Self {
            store,
            meta,
            fsync,
            group: GroupCommit::default(),
            locks: (0..KEY_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            siblings_max: AtomicUsize::new(siblings_max),
            stats: ReplicaStats::default(),
        };
        let mut live = 0;
        let mut from = Vec::new();
        loop {
            let page = replica.scan(&from, 1024)?;
            let Some((last, _, _)) = page.last() else {
                break;
            };
            from = next_key(last);
            live += page.iter().filter(|(_, _, r)| is_live(r, 0)).count() as i64;
        }
        replica.stats.live_keys.store(live, Ordering::Relaxed);
        Ok(replica)
    }

    /// This node's id and the data directory's Q.
    pub fn meta(&self) -> Meta {
        self.meta
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
        storage_key(partition_of(key, self.meta.partitions), key)
    }

    /// Reads the record of `key`.
    ///
    /// # Errors
    /// Store errors; [`StoreError::Corrupt`] if the record does not decode.
    pub fn read(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        self.read_storage_key(&self.storage_key(key))
    }

    fn read_storage_key(&self, skey: &[u8]) -> Result<Option<Record>, StoreError> {
        self.store
            .get(skey)?
            .map(|bytes| decode(skey, &bytes))
            .transpose()
    }

    /// Runs each planner against its key's current record under the key's
    /// lock, stores every planned write in one atomic batch, and returns
    /// once the batch is as durable as the fsync policy promises. Dots are
    /// minted with this node's id.
    ///
    /// # Errors
    /// Store errors; nothing is written then.
    pub fn update(&self, writes: Vec<(Bytes, Planner)>) -> Result<Vec<Written>, StoreError> {
        let node = self.meta.node_id;
        let _guards = self.lock_keys(writes.iter().map(|(k, _)| k.as_ref()));
        let siblings_max = self.siblings_max();
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut batch: Vec<BatchOp> = Vec::new();
        // A key may appear twice in one batch (MSET a 1 a 2); later writes
        // must see earlier ones, so keep the batch's own results in view.
        let mut pending: Vec<(Vec<u8>, Record)> = Vec::new();
        let mut live_delta = 0i64;
        for (key, plan) in writes {
            let skey = self.storage_key(&key);
            let previous = match pending.iter().rev().find(|(k, _)| *k == skey) {
                Some((_, record)) => Some(record.clone()),
                None => self.read_storage_key(&skey)?,
            };
            let current = plan(previous.as_ref()).map(|(context, sibling)| {
                let mut record = previous.clone().unwrap_or_default();
                record.update(&context, node, sibling);
                let dropped = record.bound(siblings_max, lww_order);
                self.stats
                    .siblings_collapsed
                    .fetch_add(dropped as u64, Ordering::Relaxed);
                record
            });
            if let Some(record) = &current {
                live_delta += liveness_change(previous.as_ref(), record);
                batch.push((skey.clone(), Some(encode_record(record))));
                pending.push((skey, record.clone()));
            }
            outcomes.push(Written { previous, current });
        }
        self.commit(batch, live_delta)?;
        Ok(outcomes)
    }

    /// Merges a record received from another replica into this one's
    /// (replication, read repair, hinted handoff). Returns the merged record.
    ///
    /// # Errors
    /// Store errors; nothing is written then.
    pub fn merge(&self, key: &[u8], incoming: &Record) -> Result<Record, StoreError> {
        let _guards = self.lock_keys(std::iter::once(key));
        let skey = self.storage_key(key);
        let previous = self.read_storage_key(&skey)?;
        let mut record = previous.clone().unwrap_or_default();
        if previous.as_ref().is_some_and(|p| p.covers_set(incoming)) {
            return Ok(record);
        }
        record.sync(incoming);
        let dropped = record.bound(self.siblings_max(), lww_order);
        self.stats
            .siblings_collapsed
            .fetch_add(dropped as u64, Ordering::Relaxed);
        let delta = liveness_change(previous.as_ref(), &record);
        self.commit(vec![(skey, Some(encode_record(&record)))], delta)?;
        Ok(record)
    }

    fn commit(&self, batch: Vec<BatchOp>, live_delta: i64) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let count = batch.len() as u64;
        self.store.apply(batch)?;
        self.stats.writes.fetch_add(count, Ordering::Relaxed);
        self.stats
            .live_keys
            .fetch_add(live_delta, Ordering::Relaxed);
        if self.fsync == FsyncPolicy::Always {
            self.group.wait_durable(self.store.as_ref())?;
        }
        Ok(())
    }

    /// Up to `limit` records with storage keys at or after `from`, in
    /// storage-key order (partition, then key), as
    /// `(storage key, user key, record)`. Deleted and expired records are
    /// included: callers filter.
    ///
    /// # Errors
    /// Store errors; [`StoreError::Corrupt`] for a record that does not decode.
    pub fn scan(
        &self,
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Bytes, Record)>, StoreError> {
        self.store
            .scan(from, limit)?
            .into_iter()
            .map(|(skey, bytes)| {
                let record = decode(&skey, &bytes)?;
                let user = split_storage_key(&skey).map_or(&[][..], |(_, k)| k);
                let user = Bytes::copy_from_slice(user);
                Ok((skey, user, record))
            })
            .collect()
    }

    /// Makes every write so far durable (shutdown, `everysec`).
    ///
    /// # Errors
    /// Store errors.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.store.sync()
    }

    /// Locks the stripes of `keys` in stripe order (so two batches never
    /// deadlock), each stripe once.
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

/// The smallest storage key after `key`: where the next scan page starts.
pub fn next_key(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

fn decode(skey: &[u8], bytes: &[u8]) -> Result<Record, StoreError> {
    decode_record(bytes).map_err(|source| StoreError::Corrupt {
        key: skey.to_vec(),
        source,
    })
}

/// +1 when a write makes a key live, -1 when it makes it dead. Judged
/// without expiry: keys that expire are counted out when they are reaped.
fn liveness_change(previous: Option<&Record>, current: &Record) -> i64 {
    let was = previous.is_some_and(|r| is_live(r, 0));
    let is = is_live(current, 0);
    i64::from(is) - i64::from(was)
}
