//! The single-node coordinator: every operation runs against this node's
//! replica, on the blocking pool.

use super::{
    BoxFuture, Coordinator, CoordinatorError, CoordinatorInfo, KeyCounts, OpError, ReadOptions,
    WriteOp, WriteOptions,
};
use crate::clock::Clock;
use crate::replica::{Planner, Replica, Written, next_key};
use crate::storage::record::Record;
use crate::storage::{JobLost, StorageExecutor, StoreError, split_storage_key, storage_key};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A coordinator over one local replica (N = R = W = 1).
#[derive(Debug, Clone)]
pub struct LocalCoordinator {
    replica: Arc<Replica>,
    clock: Arc<dyn Clock>,
    executor: Arc<StorageExecutor>,
}

impl LocalCoordinator {
    /// Coordinates over `replica`, timing writes with `clock`, running
    /// store work on `executor`.
    pub fn new(
        replica: Arc<Replica>,
        clock: Arc<dyn Clock>,
        executor: Arc<StorageExecutor>,
    ) -> Self {
        Self {
            replica,
            clock,
            executor,
        }
    }

    /// Runs `work` on a storage thread: the replica may block on disk.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Replica) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, CoordinatorError> {
        let replica = Arc::clone(&self.replica);
        match self.executor.run(move || work(&replica)).await {
            Ok(result) => Ok(result?),
            Err(JobLost) => Err(CoordinatorError::ShuttingDown),
        }
    }
}

impl LocalCoordinator {
    /// The local replica (INFO, the expiry worker).
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// Merges a record from another replica into this one.
    ///
    /// # Errors
    /// Store errors.
    pub async fn merge(&self, key: Bytes, record: Record) -> Result<Record, CoordinatorError> {
        self.blocking(move |replica| replica.merge(&key, &record))
            .await
    }

    /// Merges records from other replicas into this one, in one store job
    /// and one store batch.
    ///
    /// # Errors
    /// Store errors.
    pub async fn merge_many(&self, records: Vec<(Bytes, Record)>) -> Result<(), CoordinatorError> {
        self.blocking(move |replica| replica.merge_many(&records))
            .await
    }

    /// Keys holding a live value, and how many of them expire, within
    /// `partitions` of this replica (a scan of those partitions).
    ///
    /// # Errors
    /// Store errors.
    pub async fn count(&self, partitions: Vec<u16>) -> Result<KeyCounts, CoordinatorError> {
        let now = self.clock.now_ms();
        self.blocking(move |replica| {
            let mut counts = KeyCounts::default();
            for partition in partitions {
                let mut from = storage_key(partition, b"");
                loop {
                    let rows = replica.scan(&from, 1024)?;
                    let mut done = rows.len() < 1024;
                    for (skey, _, record) in &rows {
                        if split_storage_key(skey).is_none_or(|(p, _)| p != partition) {
                            done = true;
                            break;
                        }
                        if let Some((_, winner)) = record.winner(crate::storage::record::lww_order)
                            && crate::storage::record::is_live(record, now)
                        {
                            counts.keys += 1;
                            counts.expires += u64::from(winner.expire_at_ms.is_some());
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

impl Coordinator for LocalCoordinator {
    fn members(&self) -> Vec<super::MemberStatus> {
        // A lone replica knows no member info; the cluster coordinator
        // wraps it and answers for the cluster.
        Vec::new()
    }

    fn ring(&self) -> Vec<Vec<String>> {
        Vec::new()
    }

    fn read(
        &self,
        keys: Vec<Bytes>,
        _options: ReadOptions,
    ) -> BoxFuture<'_, Result<Vec<Option<Record>>, CoordinatorError>> {
        Box::pin(self.blocking(move |replica| keys.iter().map(|k| replica.read(k)).collect()))
    }

    fn write(
        &self,
        writes: Vec<(Bytes, WriteOp)>,
        options: WriteOptions,
    ) -> BoxFuture<'_, Result<Vec<Written>, CoordinatorError>> {
        let now_ms = self.clock.now_ms();
        let planned: Vec<(Bytes, Planner<OpError>)> = writes
            .into_iter()
            .map(|(key, op)| {
                let planner: Planner<OpError> = Box::new(move |current| op.plan(current, now_ms));
                (key, planner)
            })
            .collect();
        Box::pin(async move {
            let outcome = self
                .blocking(move |replica| replica.update(planned, options.all_or_nothing))
                .await?;
            Ok(outcome?)
        })
    }

    fn partitions(&self) -> u32 {
        self.replica.meta().partitions
    }

    fn scan_partition(
        &self,
        partition: u16,
        after: Option<Bytes>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(Bytes, Record)>, CoordinatorError>> {
        Box::pin(self.blocking(move |replica| {
            let from = match &after {
                Some(key) => next_key(&storage_key(partition, key)),
                None => storage_key(partition, b""),
            };
            let rows = replica.scan(&from, limit.max(1))?;
            Ok(rows
                .into_iter()
                .take_while(|(skey, _, _)| {
                    split_storage_key(skey).is_some_and(|(p, _)| p == partition)
                })
                .map(|(_, key, record)| (key, record))
                .collect())
        }))
    }

    fn set_siblings_max(&self, max: usize) {
        self.replica.set_siblings_max(max);
    }

    fn key_counts(&self) -> BoxFuture<'_, Result<KeyCounts, CoordinatorError>> {
        let now_ms = self.clock.now_ms();
        Box::pin(self.blocking(move |replica| {
            let keys = replica.live_keys(now_ms)?;
            let expiring = replica.stats().expiring_keys.load(Ordering::Relaxed).max(0) as u64;
            // Keys past their expiry but not reaped yet are in `expiring`
            // and not in `keys`; the difference is the live ones with a TTL.
            let unreaped = replica.stats().value_keys.load(Ordering::Relaxed).max(0) as u64 - keys;
            Ok(KeyCounts {
                keys,
                expires: expiring.saturating_sub(unreaped),
                expired: replica.stats().expired_keys.load(Ordering::Relaxed),
            })
        }))
    }

    fn flush_all(&self) -> BoxFuture<'_, Result<(), CoordinatorError>> {
        Box::pin(self.blocking(|replica| replica.flush_all()))
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn info(&self) -> CoordinatorInfo {
        let replica = &self.replica;
        let meta = replica.meta();
        let stats = replica.stats();
        CoordinatorInfo {
            fields: vec![
                ("node_id", format!("{:016x}", meta.node_id)),
                ("partitions", meta.partitions.to_string()),
                ("fsync", replica.fsync().as_str().to_owned()),
                ("fsync_group_syncs", replica.group_syncs().to_string()),
                ("siblings_max", replica.siblings_max().to_string()),
                (
                    "siblings_collapsed",
                    stats.siblings_collapsed.load(Ordering::Relaxed).to_string(),
                ),
                (
                    "records_written",
                    stats.writes.load(Ordering::Relaxed).to_string(),
                ),
                ("disk_bytes", replica.disk_bytes().to_string()),
            ],
        }
    }

    fn close(&self) -> BoxFuture<'_, Result<(), CoordinatorError>> {
        Box::pin(self.blocking(|replica| replica.close()))
    }
}
