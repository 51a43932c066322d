//! The replica as a service: its async front. Every operation runs
//! against this node's [`Replica`] on the storage threads, except reads
//! of keys that are all in the record cache: those are answered in place.
//!
//! Reads, writes and merges of concurrent callers are combined: a caller
//! that finds a storage job already queued adds its work to that job
//! instead of queueing (and waking a thread for) its own, and the job
//! stores every write it carries in one batch (one log write). Under
//! load this turns one wake-up and one log write per request into one
//! per burst; alone, a caller's job runs as soon as before.
//!
//! The coordinator (`coordinator::cluster`) is its one client: a node
//! alone is a cluster of one, on the same path.

use super::hints::{HintLimits, Refusal, TargetHints};
use super::{DbKeys, KeyCounts, PerDb, Planner, Received, Replica, WriteGroup, Written, next_key};
use crate::clock::Clock;
use crate::limits::{PARTITION_PAGE_RECORDS, STORAGE_JOB_KEYS_MAX};
use crate::model::ops::{OpError, WriteOp};
use crate::model::record::{Record, is_live, lww_order};
use crate::storage::{
    CacheStats, FsyncPolicy, HealthReport, JobLost, StorageExecutor, StoreError, storage_key,
};
use crate::version::NodeId;
use bytes::Bytes;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use thiserror::Error;
use tokio::sync::oneshot;

/// Why the service did not do what it was asked.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The storage threads stopped (the node is shutting down).
    #[error("storage threads stopped")]
    Stopped,
}

/// This node's replica and store, as INFO and `DYNAMO STATUS` show them.
#[derive(Debug, Clone)]
pub struct ReplicaReport {
    /// The node's id.
    pub node_id: crate::version::NodeId,
    /// Q.
    pub partitions: u32,
    /// `--fsync`.
    pub fsync: FsyncPolicy,
    /// Syncs made by group commit.
    pub fsync_group_syncs: u64,
    /// The sibling bound.
    pub siblings_max: usize,
    /// Siblings the bound collapsed.
    pub siblings_collapsed: u64,
    /// Records written.
    pub records_written: u64,
    /// The store's bytes on disk.
    pub disk_bytes: u64,
    /// Keys this replica holds a value of (expired or not, every logical
    /// database): its own copy, not the cluster's count.
    pub keys_held: u64,
    /// Whether the store takes writes.
    pub health: HealthReport,
    /// The record cache.
    pub cache: CacheStats,
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;
/// A caller's keys to read, answered as stored (not decoded).
type ReadJob = (Vec<Bytes>, Reply<Vec<Option<Bytes>>>);
/// A caller's writes; a planner may reject them.
type WriteJob = (WriteGroup<OpError>, Reply<Result<Vec<Written>, OpError>>);
/// A caller's records from other replicas.
type MergeJob = (Vec<Received>, Reply<()>);

/// Work of concurrent callers waiting for the one queued storage job.
/// Not bounded here: every entry is a caller awaiting its reply, and
/// callers are bounded (client connections, peer requests in flight).
#[derive(Default)]
struct Waiting {
    reads: Vec<ReadJob>,
    writes: Vec<WriteJob>,
    merges: Vec<MergeJob>,
}

impl Waiting {
    fn is_empty(&self) -> bool {
        self.reads.is_empty() && self.writes.is_empty() && self.merges.is_empty()
    }

    /// Takes whole callers' work, oldest first kind by kind, until it
    /// holds `max` keys or more (at least one caller's).
    fn take(&mut self, max: usize) -> Waiting {
        let mut keys = 0;
        let mut count = |sizes: &mut dyn Iterator<Item = usize>| {
            sizes
                .take_while(|&size| {
                    let room = keys < max;
                    keys += size.max(1);
                    room
                })
                .count()
        };
        let writes = count(&mut self.writes.iter().map(|w| w.0.writes.len()));
        let merges = count(&mut self.merges.iter().map(|m| m.0.len()));
        let reads = count(&mut self.reads.iter().map(|r| r.0.len()));
        Waiting {
            writes: self.writes.drain(..writes).collect(),
            merges: self.merges.drain(..merges).collect(),
            reads: self.reads.drain(..reads).collect(),
        }
    }

    /// Does all the work on a storage thread and replies to each caller.
    fn run(self, replica: &Replica) {
        if !self.writes.is_empty() {
            let (groups, replies): (Vec<_>, Vec<_>) = self.writes.into_iter().unzip();
            match replica.update_groups(groups) {
                Ok(outcomes) => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(outcome);
                    }
                }
                Err(e) => fail_all(replies, e),
            }
        }
        if !self.merges.is_empty() {
            let (batches, replies): (Vec<_>, Vec<_>) = self.merges.into_iter().unzip();
            match replica.merge_many(batches.iter().flatten()) {
                Ok(()) => {
                    for reply in replies {
                        let _ = reply.send(Ok(()));
                    }
                }
                Err(e) => fail_all(replies, e),
            }
        }
        for (keys, reply) in self.reads {
            let _ = reply.send(keys.iter().map(|k| replica.read_encoded(k)).collect());
        }
    }
}

/// Queues the job that takes waiting work. It takes up to
/// [`STORAGE_JOB_KEYS_MAX`] keys' worth and, if more waits, first queues
/// another job for the rest, which another storage thread can run
/// meanwhile: a backlog spreads over the threads instead of queueing
/// behind one.
fn submit_combined(
    replica: Arc<Replica>,
    waiting: Arc<Mutex<Waiting>>,
    executor: Arc<StorageExecutor>,
) {
    let job = {
        let (waiting, executor) = (Arc::clone(&waiting), Arc::clone(&executor));
        move || {
            let (work, more) = {
                let mut waiting = waiting.lock().unwrap_or_else(PoisonError::into_inner);
                let work = waiting.take(STORAGE_JOB_KEYS_MAX);
                (work, !waiting.is_empty())
            };
            if more {
                submit_combined(Arc::clone(&replica), waiting, executor);
            }
            work.run(&replica);
        }
    };
    if executor.submit(job).is_err() {
        // Shutting down: dropping the work tells every caller.
        drop(std::mem::take(
            &mut *waiting.lock().unwrap_or_else(PoisonError::into_inner),
        ));
    }
}

/// Sends `error` to the last caller and a duplicate of it to the rest
/// ([`StoreError::duplicate`]): a failed commit fails every caller whose
/// work was in it.
fn fail_all<T>(replies: Vec<Reply<T>>, error: StoreError) {
    let mut replies = replies.into_iter();
    let last = replies.next_back();
    for reply in replies {
        let _ = reply.send(Err(error.duplicate()));
    }
    if let Some(reply) = last {
        let _ = reply.send(Err(error));
    }
}

/// The async front of this node's replica.
#[derive(Clone)]
pub struct ReplicaService {
    replica: Arc<Replica>,
    clock: Arc<dyn Clock>,
    executor: Arc<StorageExecutor>,
    waiting: Arc<Mutex<Waiting>>,
}

impl std::fmt::Debug for ReplicaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaService")
            .field("replica", &self.replica)
            .field("executor", &self.executor)
            .finish_non_exhaustive()
    }
}

impl ReplicaService {
    /// Serves `replica`, timing writes with `clock`, running store work
    /// on `executor`.
    pub fn new(
        replica: Arc<Replica>,
        clock: Arc<dyn Clock>,
        executor: Arc<StorageExecutor>,
    ) -> Self {
        Self {
            replica,
            clock,
            executor,
            waiting: Arc::default(),
        }
    }

    /// A service over a fresh memory store (64 partitions, no fsync, the
    /// system clock, one storage thread), for unit tests of the layers
    /// above.
    #[cfg(test)]
    pub(crate) fn in_memory(cache_bytes: usize) -> Self {
        let replica = Replica::open(
            Arc::new(crate::storage::MemoryStore::new()),
            super::ReplicaSettings {
                partitions: 64,
                fsync: crate::storage::FsyncPolicy::No,
                siblings_max: 8,
                cache_bytes,
            },
        )
        .expect("a memory store opens");
        Self::new(
            Arc::new(replica),
            Arc::new(crate::clock::SystemClock),
            Arc::new(StorageExecutor::new(1, 64, 0)),
        )
    }

    /// Adds work to the queued storage job, queueing one if none is.
    async fn combined<T>(
        &self,
        add: impl FnOnce(&mut Waiting, Reply<T>),
    ) -> Result<T, ServiceError> {
        let (reply, answer) = oneshot::channel();
        let first = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            let first = waiting.is_empty();
            add(&mut waiting, reply);
            first
        };
        // Work is waiting exactly while a job that will take it is queued:
        // the first caller queues it, synchronously, so no cancelled
        // caller can leave others waiting for a job never queued.
        if first {
            submit_combined(
                Arc::clone(&self.replica),
                Arc::clone(&self.waiting),
                Arc::clone(&self.executor),
            );
        }
        match answer.await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ServiceError::Stopped),
        }
    }

    /// Runs `work` on a storage thread: the replica may block on disk.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Replica) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let replica = Arc::clone(&self.replica);
        match self.executor.run(move || work(&replica)).await {
            Ok(result) => Ok(result?),
            Err(JobLost) => Err(ServiceError::Stopped),
        }
    }
}

impl ReplicaService {
    /// The local replica (INFO, the expiry worker).
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// Reads `keys` as stored, not decoded (what a peer's read is
    /// answered with): from the record cache in place when every key is
    /// cached, else on a storage thread.
    ///
    /// # Errors
    /// Store errors.
    pub async fn read_encoded(&self, keys: Vec<Bytes>) -> Result<Vec<Option<Bytes>>, ServiceError> {
        match self.replica.read_encoded_cached(&keys) {
            Some(cached) => Ok(cached),
            None => self.read_encoded_stored(keys).await,
        }
    }

    async fn read_encoded_stored(
        &self,
        keys: Vec<Bytes>,
    ) -> Result<Vec<Option<Bytes>>, ServiceError> {
        self.combined(|waiting, reply| waiting.reads.push((keys, reply)))
            .await
    }

    /// Merges a record from another replica into this one.
    ///
    /// # Errors
    /// Store errors.
    pub async fn merge(&self, key: Bytes, record: Record) -> Result<(), ServiceError> {
        self.merge_many(vec![Received::decoded(key, record)]).await
    }

    /// Merges records from other replicas into this one, in one store
    /// batch (with those of concurrent callers).
    ///
    /// # Errors
    /// Store errors.
    pub async fn merge_many(&self, records: Vec<Received>) -> Result<(), ServiceError> {
        self.combined(|waiting, reply| waiting.merges.push((records, reply)))
            .await
    }

    /// Keys holding a live value, and how many of them expire, within
    /// `partitions` of this replica (a scan of those partitions).
    ///
    /// # Errors
    /// Store errors.
    pub async fn count(&self, partitions: Vec<u16>) -> Result<KeyCounts, ServiceError> {
        let now = self.clock.now_ms();
        self.blocking(move |replica| {
            let mut counts = KeyCounts::default();
            for partition in partitions {
                let mut from = storage_key(partition, b"");
                loop {
                    let rows = replica.scan_partition(partition, &from, PARTITION_PAGE_RECORDS)?;
                    let done = rows.len() < PARTITION_PAGE_RECORDS;
                    for (_, key, record) in &rows {
                        if let Some((_, winner)) = record.winner(lww_order)
                            && is_live(record, now)
                        {
                            let db = &mut counts.dbs[usize::from(crate::db::db_of(key))];
                            db.keys += 1;
                            db.expires += u64::from(winner.expire_at_ms.is_some());
                        }
                    }
                    match rows.last() {
                        Some((last, _, _)) if !done => from = next_key(last),
                        _ => break,
                    }
                }
            }
            Ok(counts)
        })
        .await
    }
}

impl ReplicaService {
    /// Reads the records of `keys`, in order (`None` for a key never
    /// written): in place when every key is cached.
    ///
    /// # Errors
    /// Store errors; [`StoreError::Corrupt`] for a record that does not
    /// decode.
    pub async fn read(&self, keys: Vec<Bytes>) -> Result<Vec<Option<Record>>, ServiceError> {
        let encoded = match self.replica.read_encoded_cached(&keys) {
            Some(cached) => cached,
            None => self.read_encoded_stored(keys.clone()).await?,
        };
        keys.iter()
            .zip(encoded)
            .map(|(key, bytes)| Ok(self.replica.decode(key, bytes)?))
            .collect()
    }

    /// Runs `writes`, each planned against its key's current record with
    /// dots of this node, in one store batch (with those of concurrent
    /// callers). With `all_or_nothing`, one declining op cancels all
    /// (MSETNX).
    ///
    /// # Errors
    /// The outer error is the service's, the inner an op's rejection;
    /// nothing is written on either.
    pub async fn write(
        &self,
        writes: Vec<(Bytes, WriteOp)>,
        all_or_nothing: bool,
    ) -> Result<Result<Vec<Written>, OpError>, ServiceError> {
        let now_ms = self.clock.now_ms();
        let planned: Vec<(Bytes, Planner<OpError>)> = writes
            .into_iter()
            .map(|(key, op)| {
                let planner: Planner<OpError> = Box::new(move |current| op.plan(current, now_ms));
                (key, planner)
            })
            .collect();
        let group = WriteGroup {
            writes: planned,
            all_or_nothing,
        };
        self.combined(|waiting, reply| waiting.writes.push((group, reply)))
            .await
    }

    /// Q, the number of partitions keys are spread over.
    pub fn partitions(&self) -> u32 {
        self.replica.meta().partitions
    }

    /// Up to `limit` records of `partition` whose keys sort after `after`
    /// (from the partition's start for `None`), in key order, deleted and
    /// expired ones included.
    ///
    /// # Errors
    /// Store errors.
    pub async fn scan_partition(
        &self,
        partition: u16,
        after: Option<Bytes>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Record)>, ServiceError> {
        self.blocking(move |replica| {
            let from = match &after {
                Some(key) => next_key(&storage_key(partition, key)),
                None => storage_key(partition, b""),
            };
            let rows = replica.scan_partition(partition, &from, limit.max(1))?;
            Ok(rows
                .into_iter()
                .map(|(_, key, record)| (key, record))
                .collect())
        })
        .await
    }

    /// Sets the sibling bound (CONFIG SET siblings-max).
    pub fn set_siblings_max(&self, max: usize) {
        self.replica.set_siblings_max(max);
    }

    /// This replica's key counts from its counters (no scan but of the
    /// expiry index's due front).
    ///
    /// # Errors
    /// Store errors.
    pub async fn key_counts(&self) -> Result<KeyCounts, ServiceError> {
        let now_ms = self.clock.now_ms();
        self.blocking(move |replica| {
            let live = replica.live_keys(now_ms)?;
            let stats = replica.stats();
            let count = |counters: &PerDb<AtomicI64>, db: usize| {
                counters[db].load(Ordering::Relaxed).max(0) as u64
            };
            Ok(KeyCounts {
                dbs: std::array::from_fn(|db| {
                    let keys = live[db];
                    // Keys past their expiry but not reaped yet are in the
                    // expiring count and not in `keys`; the difference is
                    // the live ones with a TTL.
                    let unreaped = count(&stats.value_keys, db).saturating_sub(keys);
                    DbKeys {
                        keys,
                        expires: count(&stats.expiring_keys, db).saturating_sub(unreaped),
                    }
                }),
                expired: stats.expired_keys.load(Ordering::Relaxed),
            })
        })
        .await
    }

    /// Removes every key of logical database `db` (FLUSHDB), or of all of
    /// them (`None`: FLUSHALL), from this replica.
    ///
    /// # Errors
    /// Store errors.
    pub async fn flush(&self, db: Option<u8>) -> Result<(), ServiceError> {
        self.blocking(move |replica| replica.flush(db)).await
    }

    /// Removes the partitions `doomed` says ([`Replica::drop_partitions`]).
    ///
    /// # Errors
    /// Store errors.
    pub async fn drop_partitions(
        &self,
        doomed: impl Fn(u16) -> bool + Send + 'static,
    ) -> Result<(), ServiceError> {
        self.blocking(move |replica| replica.drop_partitions(doomed))
            .await
    }

    /// The keys of `partition` in `segments` with their anti-entropy
    /// leaves ([`Replica::tree_leaves`]).
    ///
    /// # Errors
    /// Store errors.
    pub async fn tree_leaves(
        &self,
        partition: u16,
        segments: Vec<u16>,
    ) -> Result<Vec<(Bytes, u64)>, ServiceError> {
        self.blocking(move |replica| replica.tree_leaves(partition, &segments))
            .await
    }

    /// The dead records of `partitions` ([`Replica::dead_records`]).
    ///
    /// # Errors
    /// Store errors.
    pub async fn dead_records(
        &self,
        partitions: Vec<u16>,
        limit: usize,
    ) -> Result<Vec<(u16, super::tree::Leaves)>, ServiceError> {
        self.blocking(move |replica| replica.dead_records(&partitions, limit))
            .await
    }

    /// Removes the records of `entries` still dead and unchanged
    /// ([`Replica::reap`]).
    ///
    /// # Errors
    /// Store errors.
    pub async fn reap(&self, entries: Vec<(Bytes, u64)>) -> Result<usize, ServiceError> {
        self.blocking(move |replica| replica.reap(&entries)).await
    }

    /// Which of `partitions` this replica holds records of.
    ///
    /// # Errors
    /// Store errors.
    pub async fn held(&self, partitions: Vec<u16>) -> Result<Vec<u16>, ServiceError> {
        self.blocking(move |replica| {
            let mut held = Vec::new();
            for p in partitions {
                if replica.holds_partition(p)? {
                    held.push(p);
                }
            }
            Ok(held)
        })
        .await
    }

    /// Makes every write so far durable, then saves a named meta entry: a
    /// handoff's cursor is saved only once what it passed is on disk.
    ///
    /// # Errors
    /// Store errors.
    pub async fn save_after_sync(
        &self,
        name: &'static str,
        value: Vec<u8>,
    ) -> Result<(), ServiceError> {
        self.blocking(move |replica| {
            replica.sync()?;
            replica.set_meta_entry(name, &value)
        })
        .await
    }

    /// Keeps `entries` as hints for `target` ([`Replica::store_hints`]),
    /// now by this node's clock.
    ///
    /// # Errors
    /// Store errors.
    pub async fn store_hints(
        &self,
        target: NodeId,
        entries: Vec<Received>,
        limits: HintLimits,
    ) -> Result<Result<(), Refusal>, ServiceError> {
        let now = self.now_ms();
        self.blocking(move |replica| replica.store_hints(target, &entries, now, limits))
            .await
    }

    /// A page of `target`'s hints ([`Replica::hints_of`]).
    ///
    /// # Errors
    /// Store errors.
    pub async fn hints_of(
        &self,
        target: NodeId,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Bytes, Bytes)>, ServiceError> {
        self.blocking(move |replica| replica.hints_of(target, after.as_deref(), limit))
            .await
    }

    /// Deletes the hints handed over that did not change since
    /// ([`Replica::delete_hints`]).
    ///
    /// # Errors
    /// Store errors.
    pub async fn delete_hints(
        &self,
        target: NodeId,
        sent: Vec<(Vec<u8>, Bytes)>,
    ) -> Result<u64, ServiceError> {
        self.blocking(move |replica| replica.delete_hints(target, &sent))
            .await
    }

    /// Every target's hints here.
    pub fn hint_report(&self) -> std::collections::BTreeMap<NodeId, TargetHints> {
        self.replica.hint_report()
    }

    /// A named meta entry.
    ///
    /// # Errors
    /// Store errors.
    pub async fn meta_entry(&self, name: &'static str) -> Result<Option<Vec<u8>>, ServiceError> {
        self.blocking(move |replica| replica.meta_entry(name)).await
    }

    /// Now, in ms since the Unix epoch, by the node's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// This replica and its store, for INFO and `DYNAMO STATUS`.
    pub fn report(&self) -> ReplicaReport {
        let replica = &self.replica;
        let meta = replica.meta();
        let stats = replica.stats();
        ReplicaReport {
            node_id: meta.node_id,
            partitions: meta.partitions,
            fsync: replica.fsync(),
            fsync_group_syncs: replica.group_syncs(),
            siblings_max: replica.siblings_max(),
            siblings_collapsed: stats.siblings_collapsed.load(Ordering::Relaxed),
            records_written: stats.writes.load(Ordering::Relaxed),
            disk_bytes: replica.disk_bytes(),
            keys_held: stats
                .value_keys
                .iter()
                .map(|n| n.load(Ordering::Relaxed).max(0) as u64)
                .sum(),
            health: replica.health(),
            cache: replica.cache_stats(),
        }
    }

    /// Shuts the store down cleanly (node shutdown): every write durable,
    /// and cheap to reopen.
    ///
    /// # Errors
    /// Store errors.
    pub async fn close(&self) -> Result<(), ServiceError> {
        self.blocking(|replica| replica.close()).await
    }

    /// Whether the store takes writes, and its last failure.
    pub fn store_health(&self) -> HealthReport {
        self.replica.health()
    }
}
