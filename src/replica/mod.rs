//! This node's copy of the data: reads and read-modify-writes of records
//! over a [`Store`], under per-key locks, with the fsync policy applied,
//! the expiry index kept in step, and expired values reaped.
//!
//! Everything in [`Replica`] is synchronous and may block on disk; async
//! callers go through [`ReplicaService`], which runs it on the storage
//! threads (`storage::StorageExecutor`). The replica mints dots with this
//! node's id, so only a replica of a key may coordinate a write to it
//! (docs/cluster.md); it knows nothing of N, R or W.
//!
//! | file | concern |
//! |---|---|
//! | `mod.rs` | the replica: open, close, scans, FLUSHALL/FLUSHDB, meta |
//! | `write` | planned writes and merges, committed in one batch |
//! | `delta` | what a batch changes: store ops, counters, expiry index |
//! | `reads` | reads through the record cache, and its coherence |
//! | `expiry` | the expiry index and its reaper |
//! | `hints` | records kept for replicas that were down, until replayed |
//! | `tree` | anti-entropy trees, kept up to date by every commit |
//! | `reap` | dead records, and their removal if unchanged |
//! | `counters` | key counts per database (DBSIZE, INFO keyspace) |
//! | `dots` | dot counters that never repeat, for any key |
//! | `locks` | per-key lock stripes |
//! | `service` | the async front: storage jobs shared by concurrent callers |

mod counters;
mod delta;
mod dots;
mod expiry;
pub mod hints;
mod locks;
mod reads;
mod reap;
mod service;
pub mod tree;
mod write;

pub use counters::{DbKeys, KeyCounts, PerDb, ReplicaStats};
pub use service::{ReplicaReport, ReplicaService, ServiceError};

use crate::db::DATABASES;
use crate::limits::STORE_WALK_PAGE_RECORDS;
use crate::model::record::{Record, Sibling, decode_record};
use crate::ring::partition_of;
use crate::storage::{
    CacheStats, FsyncPolicy, GroupCommit, HealthReport, Meta, RecordCache, Space, Store,
    StoreError, load_or_init_meta, partition_end, split_storage_key, storage_key,
};
use crate::version::Supersedes;
use bytes::Bytes;
use counters::db_index;
use expiry::split_expiry_key;
use locks::KeyLocks;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

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
    locks: KeyLocks,
    siblings_max: AtomicUsize,
    stats: ReplicaStats,
    /// Where the expiry reaper resumes in the expiry index.
    reap_cursor: Mutex<Vec<u8>>,
    /// The hints held, by target (`hints`).
    hints: hints::HintBook,
    /// Taken by every write of hints (`hints`).
    hint_writes: Mutex<()>,
    /// Anti-entropy trees of the records held (`tree`).
    trees: tree::Trees,
    /// The counters of the dots this node mints (`dots`).
    dots: dots::DotClock,
    /// Partitions that may hold dead records (`reap`).
    reap_marks: reap::ReapMarks,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("meta", &self.meta())
            .finish_non_exhaustive()
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
        let mut meta = load_or_init_meta(store.as_ref(), settings.partitions)?;
        let dots = dots::DotClock::open(store.as_ref(), &mut meta)?;
        let replica = Self {
            store,
            cache: RecordCache::new(settings.cache_bytes),
            meta: RwLock::new(meta),
            fsync: settings.fsync,
            group: GroupCommit::default(),
            locks: KeyLocks::new(),
            siblings_max: AtomicUsize::new(settings.siblings_max),
            stats: ReplicaStats::default(),
            reap_cursor: Mutex::new(Vec::new()),
            hints: hints::HintBook::default(),
            hint_writes: Mutex::new(()),
            trees: tree::Trees::new(meta.partitions),
            dots,
            reap_marks: reap::ReapMarks::new(meta.partitions),
        };
        // Both are saved by a clean shutdown, and taken (removed) here.
        let trees = replica.take_clean_trees()?;
        let (value_keys, expiring) = match replica.take_clean_counts()? {
            Some(counts) if trees => counts,
            _ => replica.count_keys()?,
        };
        for db in 0..DATABASES {
            replica.stats.value_keys[db].store(value_keys[db], Ordering::Relaxed);
            replica.stats.expiring_keys[db].store(expiring[db], Ordering::Relaxed);
        }
        replica.count_hints()?;
        replica.warm_cache()?;
        Ok(replica)
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

    /// Shuts the replica down cleanly: flushes the in-memory tables (so
    /// the next open replays a short journal) and saves the key counts (so
    /// it need not scan).
    ///
    /// # Errors
    /// Store errors.
    pub fn close(&self) -> Result<(), StoreError> {
        let _guards = self.locks.lock_all();
        self.store.close()?;
        self.save_clean_counts()
    }

    /// (`None`: FLUSHALL), and takes a new dot id, so that dots minted from
    /// now on can never collide with dots of the removed data that other
    /// replicas may still hold in their contexts.
    ///
    /// # Errors
    /// Store errors.
    pub fn flush(&self, db: Option<u8>) -> Result<(), StoreError> {
        let _guards = self.locks.lock_all();
        // A clear must not race a write: hint writes take no key lock.
        let _hint_turn = self
            .hint_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut meta = self.meta.write().unwrap_or_else(PoisonError::into_inner);
        let in_db = |skey: &[u8]| db.is_none_or(|db| db_index(skey) == usize::from(db));
        let doomed = |space: Space, key: &[u8]| match space {
            Space::Data => in_db(key),
            Space::Expiry => split_expiry_key(key).is_some_and(|(_, skey)| in_db(skey)),
            // FLUSHALL takes every hint and window entry: a hint of a
            // flushed key must not bring it back to its replica.
            Space::Hints => {
                db.is_none() || hints::split_hint_key(key).is_some_and(|(_, skey)| in_db(skey))
            }
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
        drop(meta);
        self.count_hints()?;
        // The anti-entropy trees are rebuilt from what is left (nothing,
        // after FLUSHALL: a scan of an empty store).
        let (value_keys, expiring) = self.count_keys()?;
        for at in 0..DATABASES {
            self.stats.value_keys[at].store(value_keys[at], Ordering::Relaxed);
            self.stats.expiring_keys[at].store(expiring[at], Ordering::Relaxed);
        }
        self.store.sync()
    }

    /// Removes every record of the partitions `doomed` says (a handoff's
    /// old copies, once no live layout places them here), with their
    /// expiry entries and cached records, then counts the keys anew. The
    /// dot id stays: should a partition come back to this node, it
    /// coordinates writes to it only once the partition's records (and so
    /// the dots it minted) have been handed back to it (docs/cluster.md).
    ///
    /// # Errors
    /// Store errors.
    pub fn drop_partitions(&self, doomed: impl Fn(u16) -> bool) -> Result<(), StoreError> {
        let _guards = self.locks.lock_all();
        let _hint_turn = self
            .hint_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let of = |skey: &[u8]| split_storage_key(skey).is_some_and(|(p, _)| doomed(p));
        let dropped = |space: Space, key: &[u8]| match space {
            Space::Data => of(key),
            Space::Expiry => split_expiry_key(key).is_some_and(|(_, skey)| of(skey)),
            // Hints are kept for other nodes, whatever this one holds.
            Space::Hints => false,
        };
        match self.store.clear(&dropped) {
            Ok(()) => self.cache.forget(of),
            Err(e) => {
                self.cache.invalidate();
                return Err(e);
            }
        }
        let (value_keys, expiring) = self.count_keys()?;
        for db in 0..DATABASES {
            self.stats.value_keys[db].store(value_keys[db], Ordering::Relaxed);
            self.stats.expiring_keys[db].store(expiring[db], Ordering::Relaxed);
        }
        self.store.sync()
    }

    /// The anti-entropy roots of `partitions` (`tree`).
    pub fn tree_roots(&self, partitions: &[u16]) -> Vec<u64> {
        partitions.iter().map(|&p| self.trees.root(p)).collect()
    }

    /// The anti-entropy segments of `partition` (`tree`).
    pub fn tree_segments(&self, partition: u16) -> Vec<u64> {
        self.trees.segments(partition)
    }

    /// The keys of `partition` in `segments`, each with its leaf (`tree`),
    /// in key order: one scan of the partition.
    ///
    /// # Errors
    /// Store errors.
    pub fn tree_leaves(
        &self,
        partition: u16,
        segments: &[u16],
    ) -> Result<Vec<(Bytes, u64)>, StoreError> {
        let mut from = storage_key(partition, b"");
        let mut leaves = Vec::new();
        loop {
            let page = self.scan_partition(partition, &from, STORE_WALK_PAGE_RECORDS)?;
            let Some((last, _, _)) = page.last() else {
                return Ok(leaves);
            };
            from = next_key(last);
            for (skey, key, record) in &page {
                if segments.contains(&tree::segment_of(skey)) {
                    leaves.push((key.clone(), tree::leaf(skey, Some(record))));
                }
            }
        }
    }

    /// Whether this replica holds any record of `partition`.
    ///
    /// # Errors
    /// Store errors.
    pub fn holds_partition(&self, partition: u16) -> Result<bool, StoreError> {
        let from = storage_key(partition, b"");
        Ok(!self.scan_partition(partition, &from, 1)?.is_empty())
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
}

/// The smallest key after `key`: where the next scan page starts.
pub fn next_key(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

fn decode(skey: &[u8], bytes: &[u8]) -> Result<Record, StoreError> {
    decode_record(bytes).map_err(|e| corrupt(skey, e))
}

pub(super) fn corrupt(skey: &[u8], source: crate::wire::DecodeError) -> StoreError {
    StoreError::Corrupt {
        key: skey.to_vec(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::{encode_record, is_live};
    use crate::storage::MemoryStore;
    use std::sync::atomic::AtomicI64;

    /// The sum of per-database counters.
    fn total(counters: &PerDb<AtomicI64>) -> i64 {
        counters.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

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

    // Proves no key amnesia (Riak's kv679): a key whose record is gone
    // (reaped, or lost with an unsynced write) and written again gets a
    // dot no old context covers, so an old replica merging the new record
    // keeps the new write; and a reopen after a crash (no close) mints
    // past every counter handed out before it, for any key.
    #[test]
    fn a_recreated_key_gets_a_dot_no_old_context_covers() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let replica = Replica::open(Arc::clone(&store), settings(0)).expect("open");
        for _ in 0..3 {
            put(&replica, b"\0k", None);
        }
        let old = replica.read(b"\0k").expect("read").expect("a record");
        let skey = replica.storage_key(b"\0k");
        store
            .apply(&[crate::storage::BatchOp::delete(Space::Data, skey)])
            .expect("remove the record");
        put(&replica, b"\0k", None);
        let new = replica.read(b"\0k").expect("read").expect("a record");
        let (dot, _) = new.siblings()[0];
        assert!(
            !old.context().covers(dot),
            "{dot:?} reuses a counter of {old:?}"
        );
        let mut merged = old.clone();
        merged.sync(&new);
        assert_eq!(merged.siblings().len(), 1);
        assert_eq!(
            merged.siblings()[0].0,
            dot,
            "the old replica keeps the new write"
        );

        drop(replica);
        let reopened = Replica::open(Arc::clone(&store), settings(0)).expect("reopen");
        put(&reopened, b"\0other", None);
        let other = reopened.read(b"\0other").expect("read").expect("a record");
        assert!(other.siblings()[0].0.counter > dot.counter);
    }

    /// One change to a replica, for the tree property below.
    #[derive(Debug, Clone)]
    enum Change {
        Put(u8),
        Delete(u8),
        /// A record of another node's write merged in.
        Merge(u8, u64),
        FlushDb(u8),
    }

    fn arb_change() -> impl proptest::strategy::Strategy<Value = Change> {
        use proptest::prelude::*;
        prop_oneof![
            6 => any::<u8>().prop_map(|k| Change::Put(k % 40)),
            2 => any::<u8>().prop_map(|k| Change::Delete(k % 40)),
            3 => (any::<u8>(), 1u64..5).prop_map(|(k, c)| Change::Merge(k % 40, c)),
            1 => (0u8..2).prop_map(Change::FlushDb),
        ]
    }

    fn apply(replica: &Replica, change: &Change) {
        let key = |k: u8, db: u8| Bytes::from(vec![db, b'k', k]);
        match *change {
            Change::Put(k) => put(replica, &key(k, k % 2), None),
            Change::Delete(k) => {
                let planner: Planner<()> = Box::new(|current| {
                    let context = current.map(|r| r.context().clone()).unwrap_or_default();
                    Ok(Some((context.into(), Sibling::tombstone(1))))
                });
                let written = replica.update(vec![(key(k, k % 2), planner)], false);
                assert!(matches!(written, Ok(Ok(_))));
            }
            Change::Merge(k, counter) => {
                let dot = crate::version::Dot { node: 99, counter };
                let context = crate::version::VersionVector::from_entries([(99, counter)]);
                let sibling = (dot, Sibling::value(Bytes::from_static(b"w"), 2));
                let record = Record::from_parts(context, std::iter::once(sibling).collect())
                    .expect("covered");
                replica.merge(&key(k, k % 2), &record).expect("merge");
            }
            Change::FlushDb(db) => replica.flush(Some(db)).expect("flush"),
        }
    }

    fn all_segments(replica: &Replica) -> Vec<Vec<u64>> {
        (0..64).map(|p| replica.tree_segments(p)).collect()
    }

    proptest::proptest! {
        // Proves the anti-entropy trees a replica keeps up to date commit
        // by commit equal the trees a scan of its store builds (a reopen
        // after a crash), and the trees a clean shutdown saved: over
        // puts, deletes, merges of other nodes' records and FLUSHDB.
        #[test]
        fn incremental_trees_equal_scanned_trees(
            changes in proptest::collection::vec(arb_change(), 1..60)
        ) {
            let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
            let replica = Replica::open(Arc::clone(&store), settings(0)).expect("open");
            for change in &changes {
                apply(&replica, change);
            }
            let kept = all_segments(&replica);
            let scanned = Replica::open(Arc::clone(&store), settings(0)).expect("reopen");
            proptest::prop_assert_eq!(&all_segments(&scanned), &kept);
            scanned.close().expect("close");
            let saved = Replica::open(Arc::clone(&store), settings(0)).expect("reopen");
            proptest::prop_assert_eq!(&all_segments(&saved), &kept);
        }
    }
}
