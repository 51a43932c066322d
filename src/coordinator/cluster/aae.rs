//! Anti-entropy exchanges (docs/cluster.md, "Anti-entropy"): replicas
//! compare their trees (`replica::tree`) and exchange only the records
//! that differ, so a replica that missed writes (past the hint window, a
//! lost disk) converges without any client read.
//!
//! The `aae` worker runs a round every `--aae-interval`: with each
//! reachable member of a larger id (one side of each pair asks, and
//! repairs both), for the partitions both replicate while the layout is
//! settled (a moving partition is the handoff's):
//! 1. `Roots` of every shared partition, in one request; those whose
//!    roots differ are asked again after [`AAE_RECHECK_MS`], and only
//!    those that still differ go on (a write in flight lands meanwhile);
//! 2. `Segments` of each such partition (at most
//!    [`AAE_PARTITIONS_PER_EXCHANGE_MAX`]); the differing ones' `Leaves`:
//!    the keys with their leaves, on both sides;
//! 3. for each key whose leaves differ (at most
//!    [`AAE_KEYS_PER_EXCHANGE_MAX`]): the peer's record is read and
//!    merged here, and the merged record is sent back (`Replicate`);
//!    records fetched and sent count against `--aae-rate`.
//!
//! Between identical replicas a round costs one `Roots` request and its
//! answer: 2 bytes per partition out, 8 back (at Q = 4096, all shared:
//! 8 KiB and 32 KiB).

use super::{ClusterCoordinator, Inner};
use crate::coordinator::CoordinatorError;
use crate::coordinator::{AaeReport, PeerAaeReport};
use crate::limits::{
    AAE_KEYS_PER_EXCHANGE_MAX, AAE_PARTITIONS_PER_EXCHANGE_MAX, AAE_RECHECK_MS,
    PEER_BATCH_KEYS_MAX, REAP_KEYS_PER_ROUND_MAX,
};
use crate::membership::layout::MemberState;
use crate::peer::message::{ErrorCode, Request, Response};
use crate::replica::tree::differing;
use crate::task::{WorkerStatus, stopped};
use crate::version::NodeId;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Why an exchange stopped short.
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("{0}")]
    Peer(String),
    #[error("this node's store: {0}")]
    Local(String),
    #[error("shutting down")]
    Stopped,
}

/// The exchanges' counters and their last outcome per peer.
#[derive(Debug, Default)]
pub(super) struct Exchanges {
    exchanges: AtomicU64,
    keys_repaired: AtomicU64,
    bytes: AtomicU64,
    /// By peer: the last exchange's outcome.
    peers: Mutex<BTreeMap<NodeId, PeerAae>>,
    /// When the last round that reached every peer it meant to ended.
    last_round: Mutex<Option<Instant>>,
    /// Dead records removed here.
    reaped: AtomicU64,
    /// By partition this node reaps: the dead records its last look
    /// found, and when (`reap_round`).
    seen: Mutex<HashMap<u16, Look>>,
}

/// A look at a partition's dead records: when, and what it found.
type Look = (Instant, HashSet<(Bytes, u64)>);

/// One peer's last exchange.
#[derive(Debug, Clone, Default)]
struct PeerAae {
    at: Option<Instant>,
    partitions: usize,
    differing: usize,
    keys_repaired: u64,
    error: Option<String>,
}

impl Inner {
    /// Serves a Reap request: dead records removed if unchanged, unless
    /// this node keeps hints (one could bring back a value the record's
    /// tombstone covers, once the record is gone).
    pub(super) async fn reap_here(
        &self,
        entries: Vec<(Bytes, u64)>,
    ) -> Result<Response, CoordinatorError> {
        let held: u64 = self.local.hint_report().values().map(|h| h.keys).sum();
        if held > 0 {
            return Ok(Response::Error {
                code: ErrorCode::Busy,
                message: format!(
                    "{held} hints kept here: nothing is reaped until they are replayed"
                ),
            });
        }
        let reaped = if entries.is_empty() {
            0
        } else {
            self.local.reap(entries).await?
        };
        self.aae.reaped.fetch_add(reaped as u64, Ordering::Relaxed);
        Ok(Response::Hashes {
            hashes: vec![reaped as u64],
        })
    }

    /// The anti-entropy counters, for INFO, `DYNAMO STATUS` and
    /// `DYNAMO AAE`.
    pub(super) fn aae_report(&self) -> AaeReport {
        let view = self.membership.view();
        let age = |at: Option<Instant>| at.map(|at| at.elapsed().as_millis() as u64);
        let peers = self
            .aae
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(&id, p)| PeerAaeReport {
                id,
                name: view
                    .get(id)
                    .map_or_else(|| format!("{id:016x}"), |m| m.name.clone()),
                last_age_ms: age(p.at),
                partitions: p.partitions,
                differing: p.differing,
                keys_repaired: p.keys_repaired,
                error: p.error.clone(),
            })
            .collect();
        AaeReport {
            enabled: !self.healing.aae_interval.is_zero(),
            exchanges: self.aae.exchanges.load(Ordering::Relaxed),
            reaped: self.aae.reaped.load(Ordering::Relaxed),
            keys_repaired: self.aae.keys_repaired.load(Ordering::Relaxed),
            bytes: self.aae.bytes.load(Ordering::Relaxed),
            last_round_age_ms: age(*self
                .aae
                .last_round
                .lock()
                .unwrap_or_else(PoisonError::into_inner)),
            peers,
        }
    }

    /// The partitions this node and `peer` both replicate.
    fn shared_partitions(&self, peer: NodeId) -> Vec<u16> {
        let placement = self.placement();
        let ring = placement.current();
        let me = self.me();
        (0..ring.partitions())
            .filter_map(|p| u16::try_from(p).ok())
            .filter(|&p| {
                let replicas = ring.replicas_of(p);
                replicas.contains(&me) && replicas.contains(&peer)
            })
            .collect()
    }

    async fn ask(&self, peer: NodeId, request: Request) -> Result<Response, ExchangeError> {
        match self.transport.request(peer, request).await {
            Ok(Response::Error { message, .. }) => Err(ExchangeError::Peer(message)),
            Ok(response) => Ok(response),
            Err(e) => Err(ExchangeError::Peer(e.to_string())),
        }
    }

    async fn roots(&self, peer: NodeId, partitions: &[u16]) -> Result<Vec<usize>, ExchangeError> {
        let request = Request::Roots {
            partitions: partitions.to_vec(),
        };
        let Response::Hashes { hashes } = self.ask(peer, request).await? else {
            return Err(ExchangeError::Peer(
                "Roots answered with another kind".into(),
            ));
        };
        let ours = self.local.replica().tree_roots(partitions);
        Ok(differing(&ours, &hashes))
    }

    /// The keys of `partition` whose leaves differ here and at `peer`.
    async fn differing_keys(
        &self,
        peer: NodeId,
        partition: u16,
    ) -> Result<Vec<Bytes>, ExchangeError> {
        let Response::Hashes { hashes } = self.ask(peer, Request::Segments { partition }).await?
        else {
            return Err(ExchangeError::Peer(
                "Segments answered with another kind".into(),
            ));
        };
        let ours = self.local.replica().tree_segments(partition);
        let segments: Vec<u16> = differing(&ours, &hashes)
            .into_iter()
            .filter_map(|s| u16::try_from(s).ok())
            .collect();
        if segments.is_empty() {
            return Ok(Vec::new());
        }
        let request = Request::Leaves {
            partition,
            segments: segments.clone(),
        };
        let Response::Leaves { leaves } = self.ask(peer, request).await? else {
            return Err(ExchangeError::Peer(
                "Leaves answered with another kind".into(),
            ));
        };
        let ours = self
            .local
            .tree_leaves(partition, segments)
            .await
            .map_err(|e| ExchangeError::Local(e.to_string()))?;
        let mut theirs: HashMap<Bytes, u64> = leaves.into_iter().collect();
        let mut keys = Vec::new();
        for (key, leaf) in ours {
            if theirs.remove(&key) != Some(leaf) {
                keys.push(key);
            }
        }
        keys.extend(theirs.into_keys());
        Ok(keys)
    }

    /// Merges `peer`'s records of `keys` here and sends the merged ones
    /// back; returns the bytes fetched and sent.
    async fn exchange_records(&self, peer: NodeId, keys: Vec<Bytes>) -> Result<u64, ExchangeError> {
        let mut bytes = 0;
        let mut rest = keys;
        while !rest.is_empty() {
            let Response::Records { records } =
                self.ask(peer, Request::Read { keys: rest.clone() }).await?
            else {
                return Err(ExchangeError::Peer(
                    "Read answered with another kind".into(),
                ));
            };
            if records.is_empty() {
                return Err(ExchangeError::Peer("Read answered no record".into()));
            }
            let asked: Vec<Bytes> = rest.drain(..records.len().min(rest.len())).collect();
            let theirs: Vec<(Bytes, Bytes)> = asked
                .iter()
                .cloned()
                .zip(records)
                .filter_map(|(key, record)| Some((key, record?)))
                .collect();
            bytes += theirs.iter().map(|(k, r)| k.len() + r.len()).sum::<usize>() as u64;
            let received = super::serve::decode_entries(theirs)
                .map_err(|e| ExchangeError::Peer(format!("{e:?}")))?;
            self.local
                .merge_many(received)
                .await
                .map_err(|e| ExchangeError::Local(e.to_string()))?;
            let merged = self
                .local
                .read_encoded(asked.clone())
                .await
                .map_err(|e| ExchangeError::Local(e.to_string()))?;
            let entries: Vec<(Bytes, Bytes)> = asked
                .into_iter()
                .zip(merged)
                .filter_map(|(key, record)| Some((key, record?)))
                .collect();
            bytes += entries
                .iter()
                .map(|(k, r)| k.len() + r.len())
                .sum::<usize>() as u64;
            if !entries.is_empty() {
                match self.ask(peer, Request::Replicate { entries }).await? {
                    Response::Ack => {}
                    other => return Err(ExchangeError::Peer(format!("Replicate: {other:?}"))),
                }
            }
        }
        Ok(bytes)
    }
}

impl ClusterCoordinator {
    /// The anti-entropy worker (see the module docs): a step on `status`
    /// is a round; a failure an exchange that stopped short.
    pub async fn run_aae(self, status: Arc<WorkerStatus>, mut shutdown: watch::Receiver<bool>) {
        let inner = Arc::clone(&self.inner);
        let every = inner.healing.aae_interval;
        if every.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => return,
                _ = tick.tick() => {}
            }
            let view = inner.membership.view();
            if view.layout.get(inner.me()).is_none() || !view.layout.is_settled() {
                continue;
            }
            let me = inner.me();
            let peers: Vec<NodeId> = view
                .layout
                .members()
                .map(|m| m.id)
                .filter(|&id| id > me)
                .collect();
            let mut whole = true;
            for peer in peers {
                if !inner.transport.reachable(peer) {
                    whole = false;
                    continue;
                }
                match self.exchange(peer, &mut shutdown).await {
                    Ok(()) => {}
                    Err(ExchangeError::Stopped) => return,
                    Err(e) => {
                        whole = false;
                        status.failed(format_args!("exchange with {peer:016x}: {e}"));
                    }
                }
            }
            if whole {
                *inner
                    .aae
                    .last_round
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                match self.reap_round(&mut shutdown).await {
                    Ok(()) => {}
                    Err(ExchangeError::Stopped) => return,
                    Err(e) => status.failed(format_args!("tombstone reaping: {e}")),
                }
            }
            status.stepped();
        }
    }

    /// One exchange with `peer` (see the module docs).
    async fn exchange(
        &self,
        peer: NodeId,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), ExchangeError> {
        let inner = &self.inner;
        let partitions = inner.shared_partitions(peer);
        if partitions.is_empty() {
            return Ok(());
        }
        let mut outcome = PeerAae {
            at: Some(Instant::now()),
            partitions: partitions.len(),
            ..PeerAae::default()
        };
        let result = async {
            let first: Vec<u16> = inner
                .roots(peer, &partitions)
                .await?
                .into_iter()
                .filter_map(|i| partitions.get(i).copied())
                .collect();
            if !first.is_empty() {
                pause(Duration::from_millis(AAE_RECHECK_MS), shutdown).await?;
            }
            let again: Vec<u16> = if first.is_empty() {
                Vec::new()
            } else {
                inner
                    .roots(peer, &first)
                    .await?
                    .into_iter()
                    .filter_map(|i| first.get(i).copied())
                    .collect()
            };
            outcome.differing = again.len();
            let mut budget = AAE_KEYS_PER_EXCHANGE_MAX;
            for partition in again.into_iter().take(AAE_PARTITIONS_PER_EXCHANGE_MAX) {
                if budget == 0 {
                    break;
                }
                let mut keys = inner.differing_keys(peer, partition).await?;
                keys.truncate(budget);
                budget -= keys.len();
                for batch in keys.chunks(PEER_BATCH_KEYS_MAX) {
                    let bytes = inner.exchange_records(peer, batch.to_vec()).await?;
                    outcome.keys_repaired += batch.len() as u64;
                    inner
                        .aae
                        .keys_repaired
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    inner.aae.bytes.fetch_add(bytes, Ordering::Relaxed);
                    let rate = inner.healing.aae_rate.max(1) as f64;
                    pause(Duration::from_secs_f64(bytes as f64 / rate), shutdown).await?;
                }
            }
            Ok(())
        }
        .await;
        inner.aae.exchanges.fetch_add(1, Ordering::Relaxed);
        outcome.error = result.as_ref().err().map(ToString::to_string);
        inner
            .aae
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(peer, outcome);
        result
    }
}

impl ClusterCoordinator {
    /// Removes the dead records of the partitions this node reaps (it is
    /// the smallest id among their replicas), in a round where every
    /// member was reached (docs/cluster.md, "Tombstone reaping"). A dead
    /// record goes only when
    /// (a) its partition's roots are equal on every replica, so each holds
    ///     it with the same causal context;
    /// (b) no member keeps a hint (asked in the same request that removes,
    ///     on replicas);
    /// (c) it was dead, unchanged, at a look at least three request
    ///     timeouts earlier too, so a write's copy in flight then has
    ///     landed or become a hint;
    /// and each replica removes it only if it is still dead and unchanged.
    async fn reap_round(&self, shutdown: &mut watch::Receiver<bool>) -> Result<(), ExchangeError> {
        let inner = &self.inner;
        let me = inner.me();
        let view = inner.membership.view();
        let others: Vec<NodeId> = view
            .layout
            .members()
            .filter(|m| m.id != me && m.state() != MemberState::Removed)
            .map(|m| m.id)
            .collect();
        if others.iter().any(|&n| !inner.transport.reachable(n)) {
            return Ok(());
        }
        let placement = inner.placement();
        let ring = placement.current();
        let replicas = |p: u16| ring.replicas_of(p).to_vec();
        let mine: Vec<u16> = (0..ring.partitions())
            .filter_map(|p| u16::try_from(p).ok())
            .filter(|&p| ring.replicas_of(p).iter().min() == Some(&me))
            .collect();
        let dead = inner
            .local
            .dead_records(mine, REAP_KEYS_PER_ROUND_MAX)
            .await
            .map_err(|e| ExchangeError::Local(e.to_string()))?;
        if dead.is_empty() {
            return Ok(());
        }
        // (a) Roots equal on every replica.
        let mut agreed: HashSet<u16> = dead.iter().map(|(p, _)| *p).collect();
        let mut asked: BTreeMap<NodeId, Vec<u16>> = BTreeMap::new();
        for &p in &agreed {
            for r in replicas(p).into_iter().filter(|&r| r != me) {
                asked.entry(r).or_default().push(p);
            }
        }
        for (peer, partitions) in &asked {
            for i in inner.roots(*peer, partitions).await? {
                agreed.remove(&partitions[i]);
            }
        }
        // (c) Dead and unchanged at the last look, long enough ago.
        let confirm = inner.transport.request_timeout() * 3;
        let now = Instant::now();
        let mut ready: Vec<(u16, Vec<(Bytes, u64)>)> = Vec::new();
        {
            let mut seen = inner
                .aae
                .seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (p, entries) in dead {
                if !agreed.contains(&p) {
                    seen.remove(&p);
                    continue;
                }
                match seen.get(&p) {
                    Some((at, before)) if now.duration_since(*at) >= confirm => {
                        let both: Vec<(Bytes, u64)> =
                            entries.into_iter().filter(|e| before.contains(e)).collect();
                        seen.remove(&p);
                        if !both.is_empty() {
                            ready.push((p, both));
                        }
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(p, (now, entries.into_iter().collect()));
                    }
                }
            }
        }
        if ready.is_empty() {
            return Ok(());
        }
        // (b) No hints anywhere: members that replicate none of these
        // partitions are asked alone; replicas when they remove.
        let holders: HashSet<NodeId> = asked.keys().copied().collect();
        for &peer in others.iter().filter(|n| !holders.contains(n)) {
            inner
                .ask(
                    peer,
                    Request::Reap {
                        entries: Vec::new(),
                    },
                )
                .await?;
        }
        for (p, entries) in ready {
            if *shutdown.borrow() {
                return Err(ExchangeError::Stopped);
            }
            let mut everywhere = true;
            for r in replicas(p).into_iter().filter(|&r| r != me) {
                let request = Request::Reap {
                    entries: entries.clone(),
                };
                if let Err(e) = inner.ask(r, request).await {
                    tracing::debug!("partition {p}: {r:016x} reaped nothing: {e}");
                    everywhere = false;
                }
            }
            // This node's copies go last, and only once every other
            // replica took the round: what is left anywhere is a
            // tombstone, never a value it covered.
            if everywhere {
                inner
                    .reap_here(entries)
                    .await
                    .map_err(|e| ExchangeError::Local(e.to_string()))?;
            }
        }
        Ok(())
    }
}

/// Sleeps `pause`, or ends early at shutdown.
async fn pause(pause: Duration, shutdown: &mut watch::Receiver<bool>) -> Result<(), ExchangeError> {
    tokio::select! {
        biased;
        () = stopped(shutdown) => Err(ExchangeError::Stopped),
        () = tokio::time::sleep(pause) => Ok(()),
    }
}
