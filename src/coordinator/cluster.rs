//! The quorum coordinator: N replicas per key, reads complete at R, writes
//! at W, concurrent writes become siblings, stale replicas are repaired on
//! read. With one member it is the single-node store.
//!
//! The contract (what "done" means):
//! - **write**: a replica of the key coordinates it (a non-replica forwards
//!   to the first connected replica in preference order, so dots are
//!   minted by replicas). The coordinator applies the write to its own
//!   replica, sends the resulting record to the other N−1 replicas, and
//!   replies once W replicas (itself included) hold it durably. The
//!   requests to the rest are already sent and complete on their own.
//!   Fewer than W acknowledgements within the request timeout is a
//!   `NOQUORUM` error — the write may still survive on the replicas that
//!   took it, as in Dynamo and Riak.
//! - **read**: all N replicas are asked; the reply is the merge of the
//!   first R answers. Every answering replica whose record lacks part of
//!   the merge is queued for read repair (bounded; a full queue drops and
//!   counts the repair).
//! - N, R and W are the cluster settings, overridable per request, and
//!   capped at the member count.
//! - Writes whose outcome depends on the current value (NX/XX, DEL,
//!   INCR, APPEND, EXPIRE, KEEPTTL...) first read a quorum and merge it
//!   into the coordinating replica, then plan against that.
//!
//! What this node does for other nodes' requests is in [`serve`].

mod aae;
mod handoff;
mod hints;
mod replicate;
mod serve;

use super::answers::{Answers, Boxed};
use super::batches::{KeyRead, ReadBatches, cut};
use super::quorum::{self, Replies, Tally, Until};
use super::{
    BoxFuture, ClusterReport, Coordinator, CoordinatorError, CoordinatorInfo, KeyCounts,
    KeyWritten, LayoutCommand, LayoutReport, MemberStatus, OpError, ReadOptions, WriteOp,
    WriteOptions,
};
use crate::limits::{PEER_WHOLE_STORE_TIMEOUT_MS, READ_REPAIR_QUEUE_LEN, READ_TAILS_MAX};
use crate::membership::failure::FailureDetection;
use crate::membership::layout::{Change, MemberState, Transition};
use crate::membership::{Membership, View};
use crate::model::record::{Record, encode_record};
use crate::peer::message::{ErrorCode, Request, Response};
use crate::peer::transport::{PeerError, Transport};
use crate::replica::hints::HintLimits;
use crate::replica::{ReplicaService, Written};
use crate::ring::{Ring, partition_of};
use crate::storage::{HealthReport, StoreError};
use crate::task::{WorkerStatus, stopped};
use crate::version::NodeId;
use bytes::Bytes;
use handoff::Handoff;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// The cluster's N, R, W.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumPolicy {
    /// Replicas per key.
    pub n: usize,
    /// Replies a read waits for.
    pub r: usize,
    /// Durable acknowledgements a write waits for.
    pub w: usize,
}

/// How the cluster heals what a failure left (docs/cluster.md, "Sloppy
/// quorum and hinted handoff").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Healing {
    /// Whether a fallback's hint counts towards W (`--sloppy-quorum`).
    pub sloppy_quorum: bool,
    /// Whether reads repair the replicas they find stale (`--read-repair`).
    pub read_repair: bool,
    /// The hint window and cap (`--hint-window`, `--hint-max-bytes`).
    pub hints: HintLimits,
    /// Hint replay throttle in bytes per second (`--hint-rate`).
    pub hint_rate: u64,
    /// Handoff throttle in bytes per second (`--handoff-rate`).
    pub handoff_rate: u64,
    /// Time between anti-entropy rounds; zero: none (`--aae-interval`).
    pub aae_interval: std::time::Duration,
    /// Anti-entropy throttle in bytes per second (`--aae-rate`).
    pub aae_rate: u64,
}

impl Default for Healing {
    fn default() -> Self {
        use crate::limits::{
            AAE_INTERVAL_SECS_DEFAULT, AAE_RATE_KIB_DEFAULT, HANDOFF_RATE_DEFAULT,
            HINT_BYTES_MAX_DEFAULT, HINT_RATE_KIB_DEFAULT, HINT_WINDOW_SECS_DEFAULT,
        };
        Self {
            sloppy_quorum: true,
            read_repair: true,
            hints: HintLimits {
                window_ms: HINT_WINDOW_SECS_DEFAULT * 1000,
                max_bytes: HINT_BYTES_MAX_DEFAULT,
            },
            hint_rate: HINT_RATE_KIB_DEFAULT << 10,
            handoff_rate: HANDOFF_RATE_DEFAULT,
            aae_interval: std::time::Duration::from_secs(AAE_INTERVAL_SECS_DEFAULT),
            aae_rate: AAE_RATE_KIB_DEFAULT << 10,
        }
    }
}

/// The acknowledgements a write asks for: W and PW (`None`: the
/// cluster's).
#[derive(Debug, Clone, Copy, Default)]
struct Acks {
    w: Option<usize>,
    pw: Option<usize>,
}

impl Acks {
    fn of(options: &WriteOptions) -> Self {
        Self {
            w: options.w,
            pw: options.pw,
        }
    }
}

/// A repair: bring `node`'s record of `key` up to `record`.
#[derive(Debug)]
pub struct Repair {
    node: NodeId,
    key: Bytes,
    record: Record,
    /// [`Inner::flushes`] when the read that found it began: a repair of a
    /// read from before a FLUSHALL is dropped, not sent, so that it cannot
    /// bring a flushed key back.
    flushes: u64,
}

#[derive(Debug, Default)]
struct Stats {
    quorum_failures: AtomicU64,
    read_repairs: AtomicU64,
    read_repairs_dropped: AtomicU64,
    forwarded: AtomicU64,
    /// Copies acknowledged by fallbacks as hints, in keys.
    hints_sent: AtomicU64,
    /// Write tails not started: past [`WRITE_TAILS_MAX`] at once.
    write_tails_dropped: AtomicU64,
}

/// The count of flushes ([`Inner::flushes`]) a read began after; its
/// repairs carry it.
type ReadEpoch = u64;

struct Inner {
    local: ReplicaService,
    transport: Arc<Transport>,
    membership: Arc<Membership>,
    /// The failure detector's view of each peer (reports only: routing
    /// asks the transport, which holds its down marks).
    failures: Arc<FailureDetection>,
    policy: QuorumPolicy,
    healing: Healing,
    /// Whether reads repair stale replicas (`--read-repair`, CONFIG SET).
    read_repair: AtomicBool,
    /// The placement of the layout last seen: reads by its current ring,
    /// writes by both (rebuilt when the view changes).
    placement: Mutex<(Arc<View>, Arc<Transition>)>,
    /// Partitions moving to this node, and the batches it serves.
    handoff: Handoff,
    repairs: mpsc::Sender<Repair>,
    tails: Mutex<JoinSet<()>>,
    /// Writes' tails (`replicate`): the copies of requests that failed
    /// after the quorum, on their way to fallbacks; joined by `close`.
    write_tails: Mutex<JoinSet<()>>,
    /// Hints this node replays to replicas that came back (`hints`).
    hints: hints::Replay,
    /// Anti-entropy's counters (`aae`).
    aae: aae::Exchanges,
    stats: Stats,
    /// FLUSHALL/FLUSHDB this node took part in, counted as each begins.
    flushes: AtomicU64,
}

/// A replica's answer to a read of one key.
type ReplicaRecord = (NodeId, Option<Record>);

/// The replies to a batch of reads, spread to their keys: a replica that
/// failed a key counts as no answer for it.
struct ReadReplies<'a> {
    reads: &'a mut ReadBatches,
    transport: &'a Arc<Transport>,
}

impl Replies<ReplicaRecord> for ReadReplies<'_> {
    async fn next(&mut self) -> Option<Vec<(usize, Option<ReplicaRecord>)>> {
        let answers = self.reads.next(self.transport).await?;
        Some(
            answers
                .into_iter()
                .map(|(i, node, answer)| (i, answer.ok().map(|record| (node, record))))
                .collect(),
        )
    }
}

/// The quorum coordinator, and the handler of peer requests.
#[derive(Clone)]
pub struct ClusterCoordinator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ClusterCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCoordinator")
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

fn quorum_failed(
    operation: &'static str,
    required: usize,
    succeeded: usize,
    contacted: usize,
) -> CoordinatorError {
    CoordinatorError::QuorumFailed {
        operation,
        required,
        succeeded,
        contacted,
    }
}

fn peer_error(code: ErrorCode, message: String) -> CoordinatorError {
    match code {
        ErrorCode::NotAnInteger => OpError::NotAnInteger.into(),
        ErrorCode::Overflow => OpError::Overflow.into(),
        ErrorCode::TooLarge => OpError::TooLarge.into(),
        ErrorCode::WatchedKeyChanged => OpError::WatchedKeyChanged.into(),
        ErrorCode::ShuttingDown => CoordinatorError::ShuttingDown,
        ErrorCode::Quorum => CoordinatorError::RemoteQuorumFailed(message),
        // The peer's own words: answered as MISCONF, as a local one is.
        ErrorCode::Unwritable => CoordinatorError::Storage(StoreError::Unwritable {
            reason: format!("on a replica: {message}"),
        }),
        ErrorCode::Storage | ErrorCode::BadRequest | ErrorCode::Busy | ErrorCode::HintRefused => {
            CoordinatorError::Remote(message)
        }
    }
}

fn unexpected(response: Response) -> CoordinatorError {
    match response {
        Response::Error { code, message } => peer_error(code, message),
        other => CoordinatorError::Remote(format!("unexpected peer response {other:?}")),
    }
}

impl ClusterCoordinator {
    /// A coordinator over `local`, reaching peers through `transport`;
    /// returns it and the receiving end of its read-repair queue, which
    /// [`ClusterCoordinator::run_repairs`] drains.
    pub fn new(
        local: ReplicaService,
        transport: Arc<Transport>,
        membership: Arc<Membership>,
        failures: Arc<FailureDetection>,
        policy: QuorumPolicy,
        healing: Healing,
    ) -> (Self, mpsc::Receiver<Repair>) {
        let view = membership.view();
        let placement = Arc::new(Transition::new(&view.layout, local.partitions(), policy.n));
        let (repairs, queue) = mpsc::channel(READ_REPAIR_QUEUE_LEN);
        let inner = Inner {
            local,
            transport,
            membership,
            failures,
            policy,
            healing,
            read_repair: AtomicBool::new(healing.read_repair),
            placement: Mutex::new((view, placement)),
            handoff: Handoff::new(healing.handoff_rate),
            repairs,
            tails: Mutex::new(JoinSet::new()),
            write_tails: Mutex::new(JoinSet::new()),
            hints: hints::Replay::default(),
            aae: aae::Exchanges::default(),
            stats: Stats::default(),
            flushes: AtomicU64::new(0),
        };
        (
            Self {
                inner: Arc::new(inner),
            },
            queue,
        )
    }

    /// A coordinator of a cluster of one (unit tests of the client face):
    /// a node with no peers, on loopback, N = R = W = 1.
    #[cfg(test)]
    pub(crate) fn alone(local: ReplicaService, shutdown: watch::Receiver<bool>) -> Self {
        use crate::peer::message::MemberInfo;
        let me = MemberInfo {
            id: local.replica().meta().node_id,
            name: "alone".into(),
            client_addr: "127.0.0.1:0".into(),
            peer_addr: "127.0.0.1:0".into(),
            weight: 1.0,
            zone: None,
        };
        let transport = Transport::new(
            crate::peer::transport::TransportConfig {
                network: Arc::new(crate::net::Tcp),
                cluster: "alone".into(),
                secret: None,
                me: me.clone(),
                partitions: local.partitions(),
                request_timeout: std::time::Duration::from_secs(1),
            },
            shutdown,
        );
        let policy = QuorumPolicy { n: 1, r: 1, w: 1 };
        let failures = FailureDetection::new(Default::default(), 0).expect("default settings");
        let save: crate::membership::SaveLayout = Arc::new(|_| Box::pin(async { Ok(()) }));
        let membership = Membership::new(me, 1, save);
        membership
            .enter()
            .expect("an empty layout takes its founder");
        Self::new(
            local,
            transport,
            membership,
            failures,
            policy,
            Healing::default(),
        )
        .0
    }

    /// Whether every partition has enough replicas this node can reach
    /// (itself and the peers it has a link to) for the default R and W.
    /// Until it does, most commands would fail NOQUORUM; the node answers
    /// LOADING instead (see `node`, docs/cluster.md).
    pub fn quorums_reachable(&self) -> bool {
        let inner = &self.inner;
        let reachable: BTreeSet<NodeId> = inner
            .transport
            .reachable_peers()
            .into_iter()
            .chain([inner.me()])
            .collect();
        let placement = inner.placement();
        quorums_reachable(
            placement.current(),
            &reachable,
            inner.policy.r.max(inner.policy.w),
        ) && quorums_reachable(placement.target(), &reachable, inner.policy.w)
    }

    /// Sends queued read repairs until shutdown; a step on `status` is
    /// a repair sent, a failure one that was not. At shutdown it lets the
    /// reads' tails end (each by its read's deadline) rather than abort
    /// them, and sends what they and earlier reads queued.
    pub async fn run_repairs(
        self,
        mut queue: mpsc::Receiver<Repair>,
        status: Arc<WorkerStatus>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let inner = &self.inner;
        loop {
            let repair = tokio::select! {
                biased;
                () = stopped(&mut shutdown) => break,
                repair = queue.recv() => match repair {
                    Some(repair) => repair,
                    None => return,
                },
            };
            inner.repair(repair, &status).await;
        }
        let mut tails =
            std::mem::take(&mut *inner.tails.lock().unwrap_or_else(PoisonError::into_inner));
        while tails.join_next().await.is_some() {}
        while let Ok(repair) = queue.try_recv() {
            inner.repair(repair, &status).await;
        }
    }
}

impl Inner {
    /// This node's part of a FLUSHALL (`db` `None`) or FLUSHDB: counted
    /// first, so that the repairs of every read begun before it, queued or
    /// still to come from a read's tail, are dropped rather than bring
    /// flushed keys back; then the replica's flush.
    async fn flush_here(&self, db: Option<u8>) -> Result<(), CoordinatorError> {
        self.flushes.fetch_add(1, Ordering::AcqRel);
        Ok(self.local.flush(db).await?)
    }

    /// Sends one read repair: merges `repair`'s record into its node's
    /// copy, unless a FLUSHALL began here since its read began.
    async fn repair(&self, repair: Repair, status: &WorkerStatus) {
        if repair.flushes != self.flushes.load(Ordering::Acquire) {
            self.stats
                .read_repairs_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let result = if repair.node == self.me() {
            self.local
                .merge(repair.key, repair.record)
                .await
                .map_err(CoordinatorError::from)
        } else {
            let entries = vec![(repair.key, Bytes::from(encode_record(&repair.record)))];
            match self
                .transport
                .request(repair.node, Request::Replicate { entries })
                .await
            {
                Ok(Response::Ack) => Ok(()),
                Ok(other) => Err(unexpected(other)),
                Err(e) => Err(CoordinatorError::Remote(e.to_string())),
            }
        };
        match result {
            Ok(()) => {
                self.stats.read_repairs.fetch_add(1, Ordering::Relaxed);
                status.stepped();
            }
            // A peer that is down fails its repairs: read again, or
            // anti-entropy, repairs it later.
            Err(e) => status.failed(format_args!(
                "read repair of a key on {:016x}: {e}",
                repair.node
            )),
        }
    }

    fn me(&self) -> NodeId {
        self.membership.me().id
    }

    /// Counts copies a fallback acknowledged as hints.
    fn note_hinted(&self, hint: bool, keys: usize) {
        if hint {
            self.stats
                .hints_sent
                .fetch_add(keys as u64, Ordering::Relaxed);
        }
    }

    /// The placement of the current view (rebuilt when the view changes).
    fn placement(&self) -> Arc<Transition> {
        let view = self.membership.view();
        let mut cached = self
            .placement
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&cached.0, &view) {
            let placement = Arc::new(Transition::new(
                &view.layout,
                self.local.partitions(),
                self.policy.n,
            ));
            *cached = (view, placement);
        }
        Arc::clone(&cached.1)
    }

    fn replicas(&self, key: &[u8]) -> Vec<NodeId> {
        replicas_in(self.placement().current(), key).to_vec()
    }

    /// R or W for a request: the override or the default, capped at N.
    fn quorum(&self, requested: Option<usize>, default: usize, n: usize) -> usize {
        requested.unwrap_or(default).clamp(1, n.max(1))
    }

    /// Reads `keys` at quorum. Requests to other replicas go out first,
    /// one per replica per batch of keys; the keys this node holds are
    /// read in one local batch meanwhile. Every answer is awaited here,
    /// under one deadline for the batch.
    async fn read_many(
        self: Arc<Self>,
        keys: Vec<Bytes>,
        r: Option<usize>,
    ) -> Result<Vec<Option<Record>>, CoordinatorError> {
        let me = self.me();
        let epoch: ReadEpoch = self.flushes.load(Ordering::Acquire);
        let deadline = tokio::time::Instant::now() + self.transport.request_timeout();
        let mut tallies = Vec::with_capacity(keys.len());
        let mut asked: BTreeMap<NodeId, Vec<(usize, Bytes)>> = BTreeMap::new();
        let (mut local_keys, mut local_index) = (Vec::new(), Vec::new());
        let placement = self.placement();
        for (i, key) in keys.iter().enumerate() {
            let replicas = replicas_in(placement.current(), key);
            for &node in replicas {
                if node == me {
                    local_keys.push(key.clone());
                    local_index.push(i);
                } else {
                    asked.entry(node).or_default().push((i, key.clone()));
                }
            }
            let required = self.quorum(r, self.policy.r, replicas.len());
            tallies.push(Tally::new(required, replicas.len()));
        }
        let mut reads = ReadBatches::default();
        for (node, keys) in asked {
            for batch in cut(keys, |_| 0) {
                let index: Vec<usize> = batch.iter().map(|(i, _)| *i).collect();
                if reads.ask(&self.transport, node, batch).await.is_ok() {
                    index.into_iter().for_each(|i| tallies[i].asked());
                }
            }
        }
        if !local_keys.is_empty() {
            match self.local.read(local_keys).await {
                Ok(records) => {
                    for (i, record) in local_index.into_iter().zip(records) {
                        tallies[i].got.push((me, record));
                    }
                }
                Err(e) => tracing::warn!("local read failed: {e}"),
            }
        }
        let mut replies = ReadReplies {
            reads: &mut reads,
            transport: &self.transport,
        };
        let late = quorum::wait(&mut tallies, &mut replies, deadline, Until::AnyFails).await;
        if let Some(tally) = quorum::failed(&tallies) {
            self.stats.quorum_failures.fetch_add(1, Ordering::Relaxed);
            return Err(quorum_failed(
                "read",
                tally.required,
                tally.got.len(),
                tally.contacted,
            ));
        }
        let mut out = Vec::with_capacity(keys.len());
        let mut merged_all = Vec::with_capacity(keys.len());
        for (tally, key) in tallies.into_iter().zip(keys) {
            let mut merged: Option<Record> = None;
            for (_, record) in tally.got.iter().filter_map(|(n, r)| Some((n, r.as_ref()?))) {
                merged.get_or_insert_with(Record::new).sync(record);
            }
            if let Some(merged) = &merged {
                for (node, record) in &tally.got {
                    self.repair_if_stale(*node, &key, record.as_ref(), merged, epoch);
                }
            }
            out.push(merged.clone());
            merged_all.push((key, merged));
        }
        self.tail(merged_all, late, reads, deadline, epoch);
        Ok(out)
    }

    /// Keeps listening to the replicas slower than the first R, and
    /// repairs those that answer stale: without this, a replica that just
    /// came back, and so always answers last, would never be repaired by
    /// reads. Answers already in are looked at here; a task waits for the
    /// rest, until the batch's deadline. The tails are owned here and
    /// bounded; past the bound they are dropped (anti-entropy catches up).
    fn tail(
        self: &Arc<Self>,
        merged: Vec<(Bytes, Option<Record>)>,
        late: Vec<(usize, ReplicaRecord)>,
        mut reads: ReadBatches,
        deadline: tokio::time::Instant,
        epoch: ReadEpoch,
    ) {
        let look = move |inner: &Inner, merged: &[(Bytes, Option<Record>)], answer: KeyRead| {
            if let (i, node, Ok(record)) = answer
                && let Some((key, Some(merged))) = merged.get(i)
            {
                inner.repair_if_stale(node, key, record.as_ref(), merged, epoch);
            }
        };
        let late = late
            .into_iter()
            .map(|(i, (node, record))| (i, node, Ok(record)));
        for answer in late.chain(reads.ready()) {
            look(self, &merged, answer);
        }
        if reads.is_empty() {
            return;
        }
        let mut tails = self.tails.lock().unwrap_or_else(PoisonError::into_inner);
        while tails.try_join_next().is_some() {}
        if tails.len() >= READ_TAILS_MAX {
            self.stats
                .read_repairs_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let inner = Arc::clone(self);
        tails.spawn(async move {
            let _ = tokio::time::timeout_at(deadline, async {
                while let Some(answers) = reads.next(&inner.transport).await {
                    for answer in answers {
                        look(&inner, &merged, answer);
                    }
                }
            })
            .await;
        });
    }

    /// Queues a read repair of `node`'s copy of `key` if `record` (what it
    /// answered) lacks part of `merged`.
    fn repair_if_stale(
        &self,
        node: NodeId,
        key: &Bytes,
        record: Option<&Record>,
        merged: &Record,
        epoch: ReadEpoch,
    ) {
        if !self.read_repair.load(Ordering::Relaxed) || record.is_some_and(|r| r.covers_set(merged))
        {
            return;
        }
        let repair = Repair {
            node,
            key: key.clone(),
            record: merged.clone(),
            flushes: epoch,
        };
        if self.repairs.try_send(repair).is_err() {
            self.stats
                .read_repairs_dropped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Coordinates writes as a replica of their keys: one local batch,
    /// then each resulting record to the key's other replicas; done when
    /// every key has W acknowledgements.
    async fn coordinate(
        self: Arc<Self>,
        writes: Vec<(Bytes, WriteOp)>,
        Acks { w, pw }: Acks,
    ) -> Result<Vec<KeyWritten>, CoordinatorError> {
        let keys: Vec<Bytes> = writes.iter().map(|(k, _)| k.clone()).collect();
        // Writes that depend on the current value are planned against a
        // quorum's view: merge it into this replica first.
        let dependent: Vec<Bytes> = writes
            .iter()
            .filter(|(_, op)| op.reads_current())
            .map(|(k, _)| k.clone())
            .collect();
        if !dependent.is_empty() && self.membership.view().members.len() > 1 {
            let current = Arc::clone(&self).read_many(dependent.clone(), None).await?;
            for (key, record) in dependent.into_iter().zip(current) {
                if let Some(record) = record {
                    self.local.merge(key, record).await?;
                }
            }
        }
        let flushes = self.flushes.load(Ordering::Acquire);
        let written = self.local.write(writes, false).await??;
        let deadline = tokio::time::Instant::now() + self.transport.request_timeout();
        let me = self.me();
        let pw = pw.unwrap_or(if self.healing.sloppy_quorum {
            1
        } else {
            self.policy.w
        });
        // Three tallies per key (`replicate`): W of its current replicas
        // (fallbacks' hints count with the sloppy quorum), PW of them
        // (real ones), and W of its target replicas while its partition
        // moves: a write acknowledged by the old set alone could be
        // missing once reads move to the new one (docs/cluster.md,
        // "Placement during a change").
        let mut tallies = Vec::with_capacity(replicate::TALLIES * written.len());
        let mut to: BTreeMap<NodeId, Vec<replicate::Copy>> = BTreeMap::new();
        let placement = self.placement();
        for (index, (key, outcome)) in keys.into_iter().zip(&written).enumerate() {
            let partition = replicate::partition(&placement, &key);
            let current = placement.current().replicas_of(partition);
            let moving = replicate::moving(&placement, partition);
            let target = placement.target().replicas_of(partition);
            let sets = |node: NodeId| Sets {
                current: current.contains(&node),
                target: moving && target.contains(&node),
            };
            // A write that did not apply has nothing to replicate; this
            // replica's answer is all it needs.
            let Some(record) = &outcome.current else {
                tallies.extend([Tally::new(0, 1), Tally::new(0, 0), Tally::new(0, 0)]);
                continue;
            };
            // Each record is encoded once and the bytes shared by its
            // replicas.
            let encoded = Bytes::from(encode_record(record));
            let moving_to;
            let replicas = if moving {
                moving_to = placement.write_replicas(partition);
                &moving_to[..]
            } else {
                current
            };
            for &node in replicas.iter().filter(|&&n| n != me) {
                to.entry(node).or_default().push(replicate::Copy {
                    index,
                    partition,
                    key: key.clone(),
                    record: encoded.clone(),
                    sets: sets(node),
                });
            }
            let n = current.len();
            let mut w_now = Tally::new(self.quorum(w, self.policy.w, n), n);
            let mut pw_now = Tally::new(self.quorum(Some(pw), pw, n), n);
            let mut w_next = if moving {
                Tally::new(self.quorum(w, self.policy.w, target.len()), target.len())
            } else {
                Tally::new(0, 0)
            };
            // This replica holds it: one acknowledgement in each set it is in.
            let mine = sets(me);
            if mine.current {
                w_now.got.push(());
                pw_now.got.push(());
            }
            if mine.target {
                w_next.got.push(());
            }
            tallies.extend([w_now, pw_now, w_next]);
        }
        let mut replication = replicate::Replication::new(Arc::clone(&self), placement, flushes);
        replication.start(to, &mut tallies).await;
        replication.wait(&mut tallies, deadline).await;
        replication.finish(deadline);
        // Each key stands or fails on its own tallies.
        let outcomes = written
            .into_iter()
            .zip(tallies.chunks(replicate::TALLIES))
            .map(|(written, tallies)| match quorum::failed(tallies) {
                None => Ok(written),
                Some(tally) => {
                    self.stats.quorum_failures.fetch_add(1, Ordering::Relaxed);
                    Err(quorum_failed(
                        "write",
                        tally.required,
                        tally.got.len(),
                        tally.contacted,
                    ))
                }
            })
            .collect();
        Ok(outcomes)
    }

    /// Writes from a client: those this node may coordinate are
    /// coordinated here as one batch; the others are forwarded. A blind
    /// write may be coordinated by any replica of its key; one that reads
    /// the current value (INCR, APPEND, NX, a WATCHed key's write...) only
    /// by the key's first live replica, the one [`Inner::forward`] picks,
    /// so that those of one key serialize under one replica's lock
    /// instead of racing from several into siblings.
    async fn write_many(
        self: Arc<Self>,
        writes: Vec<(Bytes, WriteOp)>,
        acks: Acks,
    ) -> Result<Vec<KeyWritten>, CoordinatorError> {
        let me = self.me();
        let (mut here, mut elsewhere) = (Vec::new(), Vec::new());
        let placement = self.placement();
        for (i, write) in writes.into_iter().enumerate() {
            // Coordinators are current replicas: they hold the data.
            let replicas = replicas_in(placement.current(), &write.0);
            let coordinates_here = if write.1.reads_current() {
                replicas
                    .iter()
                    .find(|&&n| n == me || self.transport.reachable(n))
                    == Some(&me)
            } else {
                replicas.contains(&me)
            };
            if coordinates_here {
                here.push((i, write));
            } else {
                elsewhere.push((i, write));
            }
        }
        let total = here.len() + elsewhere.len();
        let mut out: Vec<Option<KeyWritten>> = (0..total).map(|_| None).collect();
        // Forwarded writes run in parallel unless a key repeats, when
        // order matters and they go one by one.
        let mut forwarded = JoinSet::new();
        let repeats = elsewhere
            .iter()
            .enumerate()
            .any(|(a, (_, x))| elsewhere[..a].iter().any(|(_, y)| x.0 == y.0));
        let mut sequential = Vec::new();
        for (i, (key, op)) in elsewhere {
            if repeats {
                sequential.push((i, key, op));
            } else {
                let inner = Arc::clone(&self);
                forwarded.spawn(async move { (i, inner.forward(key, op, acks).await) });
            }
        }
        if !here.is_empty() {
            let (index, batch): (Vec<usize>, Vec<_>) = here.into_iter().unzip();
            let written = Arc::clone(&self).coordinate(batch, acks).await?;
            for (i, outcome) in index.into_iter().zip(written) {
                out[i] = Some(outcome);
            }
        }
        for (i, key, op) in sequential {
            out[i] = Some(Arc::clone(&self).forward(key, op, acks).await);
        }
        while let Some(joined) = forwarded.join_next().await {
            let (i, outcome) =
                joined.map_err(|e| CoordinatorError::Remote(format!("task: {e}")))?;
            out[i] = Some(outcome);
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Forwards a write to the first connected replica of its key.
    async fn forward(
        self: Arc<Self>,
        key: Bytes,
        op: WriteOp,
        acks: Acks,
    ) -> Result<Written, CoordinatorError> {
        let replicas = self.replicas(&key);
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        let byte = |n: Option<usize>| n.map_or(0, |n| n.min(255) as u8);
        let mut last: Option<CoordinatorError> = None;
        // A replica marked down is skipped: the next one coordinates,
        // with fallbacks for those down (`replicate`).
        for &node in replicas.iter().filter(|&&n| self.transport.reachable(n)) {
            let request = Request::Coordinate {
                key: key.clone(),
                op: op.clone(),
                w: byte(acks.w),
                pw: byte(acks.pw),
            };
            match self.transport.request(node, request).await {
                Ok(Response::Written { previous, current }) => {
                    return Ok(Written {
                        previous: previous.map(|r| *r),
                        current: current.map(|r| *r),
                    });
                }
                // Its store refuses writes and applied nothing: the
                // next replica may coordinate (a full disk on one replica
                // must not fail writes two healthy ones can take).
                Ok(Response::Error {
                    code: ErrorCode::Unwritable,
                    message,
                }) => last = Some(peer_error(ErrorCode::Unwritable, message)),
                Ok(other) => return Err(unexpected(other)),
                // Not reached at all: the next replica may coordinate.
                Err(PeerError::NotConnected(_)) => continue,
                // Sent but unanswered: it may have applied the write, so
                // asking another replica could apply it twice.
                Err(e) => {
                    last = Some(CoordinatorError::Remote(e.to_string()));
                    break;
                }
            }
        }
        self.stats.quorum_failures.fetch_add(1, Ordering::Relaxed);
        Err(last.unwrap_or_else(|| {
            quorum_failed(
                "write",
                self.quorum(acks.w, self.policy.w, replicas.len()),
                0,
                replicas.len(),
            )
        }))
    }

    /// Asks every node at once, this one through `local`, the others
    /// with `request(node)`, and waits up to `timeout` for all: a
    /// fan-out's quorum is every node asked (one [`Tally`], through
    /// [`quorum::wait`]). Returns the answers that came and the last
    /// error, if any node failed or did not answer in time.
    async fn fan_out<T: Send + 'static>(
        self: &Arc<Self>,
        nodes: Vec<NodeId>,
        local: impl Future<Output = Result<T, CoordinatorError>> + Send + 'static,
        request: impl Fn(NodeId) -> Request,
        answer: fn(Response) -> Result<T, CoordinatorError>,
        timeout: std::time::Duration,
    ) -> (Vec<T>, Option<CoordinatorError>) {
        let mut tally = Tally::new(nodes.len(), nodes.len());
        let mut replies = FanOut {
            answers: Answers::default(),
            error: None,
        };
        let mut local = Some(local);
        for node in nodes {
            tally.asked();
            if node == self.me() {
                if let Some(local) = local.take() {
                    replies.answers.push(0, Box::pin(local));
                }
                continue;
            }
            let (transport, request) = (Arc::clone(&self.transport), request(node));
            replies.answers.push(
                0,
                Box::pin(async move {
                    match transport.request_up_to(node, request, timeout).await {
                        Ok(response) => answer(response),
                        Err(e) => Err(CoordinatorError::Remote(format!("{node:016x}: {e}"))),
                    }
                }),
            );
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tallies = [tally];
        quorum::wait(&mut tallies, &mut replies, deadline, Until::AnyFails).await;
        let [tally] = tallies;
        let error = match replies.error {
            Some(e) => Some(e),
            None if !tally.reached() => Some(CoordinatorError::Remote(format!(
                "{} of {} nodes answered in time",
                tally.got.len(),
                tally.contacted
            ))),
            None => None,
        };
        (tally.got, error)
    }

    /// Partitions grouped by the node that will count them: the first
    /// connected replica of each.
    fn counting_plan(&self) -> BTreeMap<NodeId, Vec<u16>> {
        let placement = self.placement();
        let ring = placement.current();
        let mut plan: BTreeMap<NodeId, Vec<u16>> = BTreeMap::new();
        for partition in 0..ring.partitions() {
            let partition = partition as u16;
            if let Some(&node) = ring
                .replicas_of(partition)
                .iter()
                .find(|&&n| self.transport.reachable(n))
            {
                plan.entry(node).or_default().push(partition);
            }
        }
        plan
    }
}

impl Coordinator for ClusterCoordinator {
    fn read(
        &self,
        keys: Vec<Bytes>,
        options: ReadOptions,
    ) -> BoxFuture<'_, Result<Vec<Option<Record>>, CoordinatorError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.read_many(keys, options.r).await })
    }

    fn write_each(
        &self,
        writes: Vec<(Bytes, WriteOp)>,
        options: WriteOptions,
    ) -> BoxFuture<'_, Result<Vec<KeyWritten>, CoordinatorError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            if options.all_or_nothing && writes.len() > 1 {
                // Across nodes this is a check then a write, not atomic
                // (docs/semantics.md): plan every write against a quorum
                // read first and give up if any would not apply.
                let keys = writes.iter().map(|(k, _)| k.clone()).collect();
                let now = inner.local.now_ms();
                let current = ClusterCoordinator {
                    inner: Arc::clone(&inner),
                }
                .read(keys, ReadOptions::default())
                .await?;
                for ((_, op), record) in writes.iter().zip(&current) {
                    if op.plan(record.as_ref(), now)?.is_none() {
                        return Ok(Vec::new());
                    }
                }
            }
            inner.write_many(writes, Acks::of(&options)).await
        })
    }

    fn partitions(&self) -> u32 {
        self.inner.local.partitions()
    }

    fn scan_partition(
        &self,
        partition: u16,
        after: Option<Bytes>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(Bytes, Record)>, CoordinatorError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let placement = inner.placement();
            let ring = placement.current();
            let replicas = ring.replicas_of(partition).to_vec();
            if replicas.contains(&inner.me()) {
                return Ok(inner.local.scan_partition(partition, after, limit).await?);
            }
            for node in replicas {
                let request = Request::Scan {
                    partition,
                    after: after.clone(),
                    limit: limit.min(u32::MAX as usize) as u32,
                };
                match inner.transport.request(node, request).await {
                    Ok(Response::Entries { entries }) => return Ok(entries),
                    Ok(other) => return Err(unexpected(other)),
                    Err(_) => continue,
                }
            }
            Err(quorum_failed("scan", 1, 0, ring.replicas()))
        })
    }

    fn key_counts(&self) -> BoxFuture<'_, Result<KeyCounts, CoordinatorError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            if inner.membership.view().members.len() == 1 {
                return Ok(inner.local.key_counts().await?);
            }
            let mut plan = inner.counting_plan();
            let local = {
                let (local, partitions) = (inner.local.clone(), plan.remove(&inner.me()));
                async move { Ok(local.count(partitions.unwrap_or_default()).await?) }
            };
            let nodes: Vec<NodeId> = plan.keys().copied().chain([inner.me()]).collect();
            let request = |node| Request::Count {
                partitions: plan.get(&node).cloned().unwrap_or_default(),
            };
            let counted = |response| match response {
                Response::Count { dbs } => {
                    let mut counts = KeyCounts::default();
                    for count in dbs {
                        let db = &mut counts.dbs[usize::from(count.db)];
                        db.keys += count.keys;
                        db.expires += count.expires;
                    }
                    Ok(counts)
                }
                other => Err(unexpected(other)),
            };
            let (counts, error) = inner
                .fan_out(nodes, local, request, counted, whole_store_timeout())
                .await;
            if let Some(error) = error {
                return Err(error);
            }
            let mut total = KeyCounts::default();
            for counts in &counts {
                total.add(counts);
            }
            total.expired = inner.local.key_counts().await?.expired;
            Ok(total)
        })
    }

    fn flush(&self, db: Option<u8>) -> BoxFuture<'_, Result<(), CoordinatorError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let nodes: Vec<NodeId> = inner.membership.members().iter().map(|m| m.id).collect();
            let local = {
                let inner = Arc::clone(&inner);
                async move { inner.flush_here(db).await }
            };
            let acked = |response| match response {
                Response::Ack => Ok(()),
                other => Err(unexpected(other)),
            };
            let asked = nodes.len();
            let (acks, error) = inner
                .fan_out(
                    nodes,
                    local,
                    |_| Request::Flush { db },
                    acked,
                    whole_store_timeout(),
                )
                .await;
            match error {
                None => Ok(()),
                Some(error) => {
                    let command = if db.is_some() { "FLUSHDB" } else { "FLUSHALL" };
                    Err(CoordinatorError::Remote(format!(
                        "{command} reached {} of {asked} nodes: {error}",
                        acks.len()
                    )))
                }
            }
        })
    }

    fn set_siblings_max(&self, max: usize) {
        self.inner.local.set_siblings_max(max);
    }

    fn set_read_repair(&self, on: bool) {
        self.inner.read_repair.store(on, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.inner.local.now_ms()
    }

    fn info(&self) -> CoordinatorInfo {
        let inner = &self.inner;
        let placement = inner.placement();
        let ring = placement.current();
        let view = inner.membership.view();
        let (primary, replica) = ring.owned(inner.me());
        let n = ring.replicas();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let peer_latency_us = inner
            .transport
            .latencies()
            .into_iter()
            .map(|(node, micros)| {
                let name = view
                    .get(node)
                    .map_or_else(|| format!("{node:016x}"), |m| m.name.clone());
                (name, micros)
            })
            .collect();
        let cluster = ClusterReport {
            members: view.members.len(),
            members_up: view
                .members
                .keys()
                .filter(|&&id| inner.transport.reachable(id))
                .count(),
            partitions_primary: primary,
            partitions_replica: replica,
            replicas: n,
            read_quorum: inner.quorum(None, inner.policy.r, n),
            write_quorum: inner.quorum(None, inner.policy.w, n),
            quorum_failures: load(&inner.stats.quorum_failures),
            read_repairs: load(&inner.stats.read_repairs),
            read_repairs_dropped: load(&inner.stats.read_repairs_dropped),
            writes_forwarded: load(&inner.stats.forwarded),
            failures: inner.failures.counts(),
            peer_latency_us,
            layout: layout_report(&view),
            handoff: inner.handoff.report(),
            hints: inner.hints_report(),
            aae: inner.aae_report(),
        };
        CoordinatorInfo {
            replica: inner.local.report(),
            cluster,
        }
    }

    fn close(&self) -> BoxFuture<'_, Result<(), CoordinatorError>> {
        Box::pin(async move {
            // The links are closed by now: a write's copies their
            // replicas did not acknowledge are handed on (kept here as
            // hints) before the store closes.
            let mut tails = std::mem::take(
                &mut *self
                    .inner
                    .write_tails
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            while tails.join_next().await.is_some() {}
            Ok(self.inner.local.close().await?)
        })
    }

    fn store_health(&self) -> HealthReport {
        self.inner.local.store_health()
    }

    fn members(&self) -> Vec<MemberStatus> {
        let inner = &self.inner;
        let placement = inner.placement();
        let view = inner.membership.view();
        view.members
            .values()
            .map(|info| {
                let (primary, replica) = placement.current().owned(info.id);
                let member = view.layout.get(info.id);
                MemberStatus {
                    info: info.clone(),
                    up: inner.transport.reachable(info.id),
                    health: inner.failures.peer(info.id),
                    primary,
                    replica,
                    state: member.map_or(MemberState::Member, |m| m.state()),
                    incarnation: member.map_or(0, |m| m.endpoint.incarnation),
                }
            })
            .collect()
    }

    fn ring(&self) -> Vec<Vec<String>> {
        let inner = &self.inner;
        let placement = inner.placement();
        let ring = placement.current();
        let view = inner.membership.view();
        let name = |id: &NodeId| {
            view.get(*id)
                .map_or_else(|| format!("{id:016x}"), |m| m.name.clone())
        };
        (0..ring.partitions())
            .map(|p| ring.replicas_of(p as u16).iter().map(name).collect())
            .collect()
    }

    fn change_layout(&self, command: LayoutCommand) -> BoxFuture<'_, Result<(), CoordinatorError>> {
        Box::pin(async move {
            let membership = &self.inner.membership;
            let member = |given: &str| -> Result<NodeId, CoordinatorError> {
                let view = membership.view();
                let by_id = u64::from_str_radix(given, 16)
                    .ok()
                    .filter(|_| given.len() == 16);
                view.members
                    .values()
                    .find(|m| m.name == given || Some(m.id) == by_id)
                    .map(|m| m.id)
                    .or_else(|| by_id.filter(|id| view.layout.get(*id).is_some()))
                    .ok_or_else(|| CoordinatorError::UnknownMember(given.to_owned()))
            };
            let change = match command {
                LayoutCommand::Leave => Change::Leave {
                    id: self.inner.me(),
                },
                LayoutCommand::Remove(given) => Change::Remove {
                    id: member(&given)?,
                },
                LayoutCommand::Weight(given, weight) => Change::Weight {
                    id: member(&given)?,
                    weight,
                },
            };
            membership.change(&change).await?;
            tracing::info!(
                ?change,
                epoch = membership.view().layout.epoch(),
                "layout changed by an operator"
            );
            Ok(())
        })
    }
}

/// Which of a key's two quorums a replica's acknowledgement counts for:
/// its current replicas', and, while its partition moves, its target
/// replicas'.
#[derive(Debug, Clone, Copy)]
struct Sets {
    current: bool,
    target: bool,
}

/// Whether two replica lists hold the same members (in any order).
fn same_members(a: &[NodeId], b: &[NodeId]) -> bool {
    a.len() == b.len() && a.iter().all(|id| b.contains(id))
}

/// The layout's numbers for INFO and `DYNAMO STATUS`.
fn layout_report(view: &View) -> LayoutReport {
    let layout = &view.layout;
    let count = |state| layout.members().filter(|m| m.state() == state).count();
    LayoutReport {
        epoch: layout.epoch(),
        digest: layout.digest(),
        settled: layout.is_settled(),
        joining: count(MemberState::Joining),
        leaving: count(MemberState::Leaving),
        removed: count(MemberState::Removed),
        waiting_to_settle: layout.waiting_to_settle().len(),
    }
}

/// Whether each partition of `ring` has at least `quorum` replicas in
/// `reachable`, or all of them when it has fewer (R and W are capped at
/// the replicas a key has).
fn quorums_reachable(ring: &Ring, reachable: &BTreeSet<NodeId>, quorum: usize) -> bool {
    (0..ring.partitions()).all(|p| {
        let replicas = ring.replicas_of(p as u16);
        let up = replicas.iter().filter(|id| reachable.contains(id)).count();
        up >= quorum.min(replicas.len())
    })
}

/// How long a peer may take over a request that walks its whole store
/// (DBSIZE's count, FLUSHALL): [`PEER_WHOLE_STORE_TIMEOUT_MS`], not the
/// request timeout meant for a batch of keys.
/// A fan-out's answers for [`quorum::wait`]: all for one tally (index
/// 0), each node's answer a success or a failure, the last kept.
struct FanOut<T> {
    answers: Answers<Boxed<Result<T, CoordinatorError>>>,
    error: Option<CoordinatorError>,
}

impl<T: Send> Replies<T> for FanOut<T> {
    async fn next(&mut self) -> Option<Vec<(usize, Option<T>)>> {
        let (_, answer) = self.answers.next().await?;
        Some(vec![(0, answer.map_err(|e| self.error = Some(e)).ok())])
    }
}

fn whole_store_timeout() -> std::time::Duration {
    std::time::Duration::from_millis(PEER_WHOLE_STORE_TIMEOUT_MS)
}

/// The replicas of `key` on `ring`. A batch takes the ring once and
/// places all its keys on it.
fn replicas_in<'r>(ring: &'r Ring, key: &[u8]) -> &'r [NodeId] {
    ring.replicas_of(partition_of(key, ring.partitions()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Placed;

    // Proves a quorum missed by the replica a write was forwarded to
    // comes back as the error a local one is (`NOQUORUM ...`), not as a
    // peer's failure, which clients saw as `-ERR NOQUORUM ...`.
    #[test]
    fn a_forwarded_quorum_failure_is_a_quorum_failure() {
        let there = quorum_failed("write", 2, 1, 3);
        let Response::Error { code, message } = serve::error_response(&there) else {
            panic!("a failure answers an error");
        };
        let here = peer_error(code, message);
        assert!(
            matches!(here, CoordinatorError::RemoteQuorumFailed(_)),
            "{here:?}"
        );
        assert_eq!(here.to_string(), there.to_string());
        assert!(here.to_string().starts_with("NOQUORUM "));
    }

    // Proves a node counts as able to serve only when every partition has
    // R/W replicas among itself and its links: three members, N = 3.
    #[test]
    fn quorums_are_reachable_with_enough_replicas_linked() {
        let placed = |id| Placed {
            id,
            weight: 1.0,
            zone: None,
        };
        let ring = Ring::new(vec![placed(1), placed(2), placed(3)], 64, 3);
        let set = |ids: &[NodeId]| ids.iter().copied().collect::<BTreeSet<_>>();
        assert!(
            !quorums_reachable(&ring, &set(&[1]), 2),
            "alone: no quorum of 2"
        );
        assert!(quorums_reachable(&ring, &set(&[1, 3]), 2));
        assert!(!quorums_reachable(&ring, &set(&[1, 3]), 3));
        assert!(quorums_reachable(&ring, &set(&[1, 2, 3]), 3));
        // A single node's partitions have one replica: it is its quorum.
        let alone = Ring::new(vec![placed(1)], 64, 3);
        assert!(quorums_reachable(&alone, &set(&[1]), 2));
    }

    // Proves a read repair from a read begun before a FLUSHALL is dropped,
    // not sent (the flushed key stays gone, the drop is counted), and one
    // from a read begun after it is sent: the check can fail.
    #[tokio::test]
    async fn a_repair_from_before_a_flush_is_dropped() {
        let service = ReplicaService::in_memory(0);
        let (_stop, shutdown) = watch::channel(false);
        let inner = ClusterCoordinator::alone(service, shutdown).inner;
        let status = WorkerStatus::new("read-repair");
        let key = Bytes::from_static(b"\0\0k");
        let repair = |flushes| Repair {
            node: inner.me(),
            key: key.clone(),
            record: crate::model::record::sample(),
            flushes,
        };
        let stored = || async {
            let records = inner.local.read_encoded(vec![key.clone()]).await;
            records.expect("read").pop().flatten()
        };
        let before = inner.flushes.load(Ordering::Acquire);
        inner.flush_here(None).await.expect("flush");
        inner.repair(repair(before), &status).await;
        assert!(stored().await.is_none(), "a pre-flush repair was applied");
        assert_eq!(inner.stats.read_repairs_dropped.load(Ordering::Relaxed), 1);
        let after = inner.flushes.load(Ordering::Acquire);
        inner.repair(repair(after), &status).await;
        assert!(
            stored().await.is_some(),
            "a repair after the flush was dropped"
        );
    }
}
