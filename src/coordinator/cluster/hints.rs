//! Hint replay: handing the hints this node keeps as a fallback to the
//! replicas they are for, once those are reachable again (docs/
//! cluster.md, "Sloppy quorum and hinted handoff").
//!
//! The `hints` worker looks every [`HINT_REPLAY_TICK_MS`] for targets
//! that are reachable and have hints here, and replays them one target
//! at a time, a batch of [`HINT_REPLAY_BATCH_KEYS`] after the other, at
//! most `--hint-rate` bytes per second. A batch goes as one `Replicate`,
//! answered once the target holds it durably (per its fsync); only then
//! is each hint deleted, and only if it still holds what was sent (a
//! write that came meanwhile is sent by the next pass). Nothing is
//! deleted before it is acknowledged, so a crash of either side costs
//! only a batch sent again (merging is idempotent).
//!
//! A hint whose partition is no longer placed on its target (the layout
//! changed, or the target was removed from the cluster) goes to the
//! partition's replicas now instead: a write a fallback's hint counted
//! for is not lost with the replica it was meant for.

use super::ClusterCoordinator;
use crate::coordinator::{HintsReport, TargetHintsReport};
use crate::limits::{HINT_REPLAY_BATCH_KEYS, HINT_REPLAY_TICK_MS};
use crate::membership::layout::MemberState;
use crate::peer::message::{Request, Response};
use crate::replica::Received;
use crate::replica::hints::Refusal;
use crate::ring::partition_of;
use crate::task::{WorkerStatus, stopped};
use crate::version::NodeId;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

/// The replay's state, for reports.
#[derive(Debug, Default)]
pub(super) struct Replay {
    /// The target being replayed, and the hints it had when it began.
    active: Mutex<Option<(NodeId, u64)>>,
}

/// How one target's replay ended.
#[derive(Debug)]
enum Ended {
    /// Every hint was handed over (or none was left).
    Done,
    /// The node is shutting down.
    Stopped,
    /// This node failed (its store): retried at a later tick.
    Failed(String),
    /// The node handed to did not take the batch (unreachable, or its
    /// store refuses writes): its own condition, not this node's
    /// failure; retried at a later tick.
    Refused(String),
}

impl super::Inner {
    /// Keeps records as hints for `target` (a `Hint` request: this node
    /// is a fallback).
    pub(super) async fn keep_hints(
        &self,
        target: NodeId,
        entries: Vec<Received>,
    ) -> Result<Response, crate::coordinator::CoordinatorError> {
        match self
            .local
            .store_hints(target, entries, self.healing.hints)
            .await?
        {
            Ok(()) => Ok(Response::Ack),
            Err(refusal) => {
                let why = match refusal {
                    Refusal::Window => "its hint window has passed",
                    Refusal::Full => "its hints are at --hint-max-bytes",
                };
                Ok(Response::Error {
                    code: crate::peer::message::ErrorCode::HintRefused,
                    message: format!("no more hints kept for {target:016x}: {why}"),
                })
            }
        }
    }

    /// The hints this node keeps, by target, for INFO, `DYNAMO STATUS`
    /// and `DYNAMO HINTS`.
    pub(super) fn hints_report(&self) -> HintsReport {
        let view = self.membership.view();
        let now = self.local.now_ms();
        let active = *self
            .hints
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let targets = self
            .local
            .hint_report()
            .into_iter()
            .map(|(id, held)| TargetHintsReport {
                id,
                name: view
                    .get(id)
                    .map_or_else(|| format!("{id:016x}"), |m| m.name.clone()),
                keys: held.keys,
                bytes: held.bytes,
                oldest_age_ms: (held.keys > 0).then(|| now.saturating_sub(held.since_ms)),
                replayed: held.replayed,
                dropped: held.dropped,
                replaying: active
                    .filter(|(target, _)| *target == id)
                    .map(|(_, total)| total),
            })
            .collect();
        HintsReport {
            targets,
            sent: self.stats.hints_sent.load(Ordering::Relaxed),
            write_tails_dropped: self.stats.write_tails_dropped.load(Ordering::Relaxed),
        }
    }
}

impl ClusterCoordinator {
    /// The hint replay worker (see the module docs). A step on `status`
    /// is a target whose hints were all handed over; a failure a batch
    /// that was not.
    pub async fn run_hints(self, status: Arc<WorkerStatus>, mut shutdown: watch::Receiver<bool>) {
        let inner = Arc::clone(&self.inner);
        let mut tick = tokio::time::interval(Duration::from_millis(HINT_REPLAY_TICK_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'ticks: loop {
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => break,
                _ = tick.tick() => {}
            }
            let view = inner.membership.view();
            if view.layout.get(inner.me()).is_none() {
                continue;
            }
            for (target, held) in inner.local.hint_report() {
                // A target removed from the cluster never comes back: its
                // hints go to the replicas that took its place.
                let removed = view
                    .layout
                    .get(target)
                    .is_none_or(|m| m.state() == MemberState::Removed);
                if held.keys == 0 || !(removed || inner.transport.reachable(target)) {
                    continue;
                }
                *inner
                    .hints
                    .active
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some((target, held.keys));
                let ended = self.replay(target, false, &mut shutdown).await;
                *inner
                    .hints
                    .active
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                match ended {
                    Ended::Done => status.stepped(),
                    Ended::Stopped => break 'ticks,
                    Ended::Failed(why) => {
                        status.failed(format_args!("hint replay to {target:016x}: {why}"));
                    }
                    Ended::Refused(why) => {
                        tracing::debug!("hint replay to {target:016x} put off: {why}");
                    }
                }
            }
        }
    }

    /// Replays `target`'s hints, a batch at a time, throttled; to the
    /// replicas of each hint's partition but the target when `around`
    /// (this node leaves and the target is down: no one else would).
    async fn replay(
        &self,
        target: NodeId,
        around: bool,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Ended {
        let inner = &self.inner;
        let mut after: Option<Vec<u8>> = None;
        loop {
            if *shutdown.borrow() {
                return Ended::Stopped;
            }
            let flushes = inner.flushes.load(Ordering::Acquire);
            let page = match inner
                .local
                .hints_of(target, after.clone(), HINT_REPLAY_BATCH_KEYS)
                .await
            {
                Ok(page) => page,
                Err(e) => return Ended::Failed(format!("cannot read hints: {e}")),
            };
            let Some((last, _, _)) = page.last() else {
                return Ended::Done;
            };
            after = Some(last.clone());
            let bytes: usize = page.iter().map(|(k, _, v)| k.len() + v.len()).sum();
            // Where each hint goes: its target, or the partition's
            // replicas now if the layout moved it away.
            let placement = inner.placement();
            let me = inner.me();
            let mut to: BTreeMap<NodeId, Vec<(Bytes, Bytes)>> = BTreeMap::new();
            for (_, key, record) in &page {
                let partition = partition_of(key, placement.current().partitions());
                let replicas = placement.write_replicas(partition);
                let nodes = if replicas.contains(&target) && !around {
                    vec![target]
                } else {
                    replicas
                        .into_iter()
                        .filter(|&n| n != target && !(around && n == me))
                        .collect()
                };
                for node in nodes {
                    to.entry(node)
                        .or_default()
                        .push((key.clone(), record.clone()));
                }
            }
            // A FLUSHALL that began since the page was read took these
            // hints: they must not bring flushed keys back.
            if flushes != inner.flushes.load(Ordering::Acquire) {
                return Ended::Failed("a FLUSHALL began during the replay".into());
            }
            for (node, entries) in to {
                if let Err(ended) = self.hand_over(node, entries).await {
                    return ended;
                }
            }
            let sent: Vec<(Vec<u8>, Bytes)> = page.into_iter().map(|(k, _, v)| (k, v)).collect();
            if let Err(e) = inner.local.delete_hints(target, sent).await {
                return Ended::Failed(format!("cannot delete replayed hints: {e}"));
            }
            let pause = Duration::from_secs_f64(bytes as f64 / inner.healing.hint_rate as f64);
            tokio::select! {
                biased;
                () = stopped(shutdown) => return Ended::Stopped,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Before a node that left drops its data: hands every hint it still
    /// keeps to its target if reachable, else to the other replicas of
    /// each hint's partition, once (throttled as the replay is). Returns
    /// the hints left behind (a replica that did not take them): read
    /// repair or anti-entropy must bring those keys to their target.
    pub async fn hand_off_hints(&self) -> u64 {
        let (_keep, mut never) = watch::channel(false);
        let mut left = 0;
        for (target, held) in self.inner.local.hint_report() {
            if held.keys == 0 {
                continue;
            }
            let around = !self.inner.transport.reachable(target);
            if let Ended::Failed(why) | Ended::Refused(why) =
                self.replay(target, around, &mut never).await
            {
                tracing::warn!("hints for {target:016x} not handed off before leaving: {why}");
            }
            left += self
                .inner
                .local
                .hint_report()
                .get(&target)
                .map_or(0, |h| h.keys);
        }
        left
    }

    /// Merges `entries` into `node`'s replica (this node's own, or a
    /// peer's, acknowledged once durable there).
    async fn hand_over(&self, node: NodeId, entries: Vec<(Bytes, Bytes)>) -> Result<(), Ended> {
        let inner = &self.inner;
        if node == inner.me() {
            let received = entries
                .into_iter()
                .filter_map(|(key, bytes)| {
                    let record = crate::model::record::decode_record_shared(&bytes).ok()?;
                    Some(Received {
                        key,
                        record,
                        encoded: Some(bytes),
                    })
                })
                .collect();
            return inner
                .local
                .merge_many(received)
                .await
                .map_err(|e| Ended::Failed(format!("cannot merge hints here: {e}")));
        }
        match inner
            .transport
            .request(node, Request::Replicate { entries })
            .await
        {
            Ok(Response::Ack) => Ok(()),
            Ok(other) => Err(Ended::Refused(format!("{node:016x} answered {other:?}"))),
            Err(e) => Err(Ended::Refused(e.to_string())),
        }
    }
}
