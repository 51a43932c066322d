//! The single-node coordinator: every operation runs against this node's
//! replica, on the blocking pool.

use super::{
    BoxFuture, Coordinator, CoordinatorError, CoordinatorInfo, KeyCounts, OpError, ReadOptions,
    ScanPage, WriteOp, WriteOptions,
};
use crate::clock::Clock;
use crate::replica::{Planner, Replica, Written, next_key};
use crate::storage::StoreError;
use crate::storage::record::Record;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A coordinator over one local replica (N = R = W = 1).
#[derive(Debug, Clone)]
pub struct LocalCoordinator {
    replica: Arc<Replica>,
    clock: Arc<dyn Clock>,
}

impl LocalCoordinator {
    /// Coordinates over `replica`, timing writes with `clock`.
    pub fn new(replica: Arc<Replica>, clock: Arc<dyn Clock>) -> Self {
        Self { replica, clock }
    }

    /// Runs `work` on the blocking pool: the replica may block on disk.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Replica) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, CoordinatorError> {
        let replica = Arc::clone(&self.replica);
        match tokio::task::spawn_blocking(move || work(&replica)).await {
            Ok(result) => Ok(result?),
            // The runtime only drops blocking tasks when shutting down; a
            // panic inside the replica is a bug and must surface as one.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(CoordinatorError::ShuttingDown),
        }
    }
}

impl Coordinator for LocalCoordinator {
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

    fn scan(
        &self,
        from: Vec<u8>,
        count: usize,
    ) -> BoxFuture<'_, Result<ScanPage, CoordinatorError>> {
        Box::pin(self.blocking(move |replica| {
            let rows = replica.scan(&from, count.max(1))?;
            let next = (rows.len() >= count.max(1))
                .then(|| rows.last().map(|(skey, _, _)| next_key(skey)))
                .flatten();
            let entries = rows
                .into_iter()
                .map(|(_, key, record)| (key, record))
                .collect();
            Ok(ScanPage { entries, next })
        }))
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
                ("members", "1".to_owned()),
                ("members_up", "1".to_owned()),
                ("partitions", meta.partitions.to_string()),
                ("replicas_effective", "1".to_owned()),
                ("read_quorum_effective", "1".to_owned()),
                ("write_quorum_effective", "1".to_owned()),
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
                ("quorum_failures", "0".to_owned()),
                ("read_repairs", "0".to_owned()),
            ],
        }
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), CoordinatorError>> {
        Box::pin(self.blocking(|replica| replica.sync()))
    }
}
