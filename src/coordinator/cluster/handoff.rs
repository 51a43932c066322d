//! Handoff: moving partitions when the layout changes (docs/cluster.md,
//! "Handoff").
//!
//! Each node pulls what the layout's target gives it and it does not hold
//! yet ([`Transition::moves`]): for each such partition, a stream asks a
//! current holder for the partition's records in key order, a batch at a
//! time (`Fetch`), merges them into its replica (merge makes a batch sent
//! twice harmless) and saves its cursor once they are durable, so that a
//! stream resumes where it stopped after a crash of either side. When all
//! its partitions are in, the node records `Synced`; once every target
//! member has, any node settles the layout and reads move to the target.
//! Once every member has the settled layout, each node drops the
//! partitions no live layout places on it any more.
//!
//! Two guards keep an acknowledged write readable throughout:
//! - Streams start only once every reachable member has gossiped the new
//!   target, and [`HANDOFF_START_GRACE_MS`] later: from then on every
//!   coordinator writes to the new replicas too, and writes placed by the
//!   old layout have landed. What a stream reads of a partition is
//!   therefore complete, up to writes the new replica receives itself.
//! - Old copies are dropped only once every reachable member has the
//!   settled layout, the same grace later: no coordinator reads them any
//!   more.
//!
//! Limits: [`HANDOFF_STREAMS_IN`] streams received at once,
//! [`HANDOFF_STREAMS_OUT`] batches served at once (`Busy` past them), a
//! byte rate (`--handoff-rate`) shared by the streams, and a deadline per
//! batch ([`HANDOFF_BATCH_DEADLINE_MS`]) past which the stream is dropped,
//! its slot freed, and retried from its cursor.
//!
//! # Cursor bytes (meta `handoff`, format version 1)
//! ```text
//! progress  := version:u8 (=1) target:u64le count:varint partition*count
//! partition := id:u16le state
//! state     := 0                      nothing received yet
//!            | 1 len:varint key       received up to and including key
//!            | 2                      done
//! ```

use super::ClusterCoordinator;
use crate::coordinator::{CoordinatorError, HandoffReport};
use crate::limits::{
    HANDOFF_BATCH_DEADLINE_MS, HANDOFF_BATCH_KEYS, HANDOFF_CURSOR_SAVE_MS, HANDOFF_START_GRACE_MS,
    HANDOFF_STREAMS_IN, HANDOFF_STREAMS_OUT, HANDOFF_TICK_MS, NAMESPACED_KEY_BYTES_MAX,
    PEER_BATCH_BYTES_MAX,
};
use crate::membership::layout::{Change, Layout, MemberState, Transition};
use crate::model::record::{Record, encoded_len};
use crate::peer::message::{ErrorCode, Request, Response};
use crate::replica::{Received, ReplicaService};
use crate::task::{WorkerStatus, stopped};
use crate::version::NodeId;
use crate::wire::{DecodeError, Reader, put_varint};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Where a handoff's cursors are saved.
const PROGRESS_META: &str = "handoff";

/// The cursor byte format this build writes and reads.
const PROGRESS_FORMAT_VERSION: u8 = 1;

/// Failed batches in a row after which a stream is reported stuck.
const STUCK_AFTER_FAILURES: u32 = 3;

/// Where one partition's move is. A partition is in once the whole copy
/// of `need` distinct sources is (module docs: why more than one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Cursor {
    /// Sources whose whole copy is in: `need` of them and it is done.
    need: u8,
    /// Sources whose whole copy is in (streamed, or found empty).
    passes: Vec<NodeId>,
    /// The pass in progress: its source, and the last key received from
    /// it (`None`: nothing yet).
    pass: Option<(NodeId, Option<Bytes>)>,
}

impl Cursor {
    fn is_done(&self) -> bool {
        self.passes.len() >= usize::from(self.need)
    }
}

/// What this node is receiving for one target placement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Progress {
    /// The target's fingerprint (`Layout::target_fingerprint`).
    target: u64,
    /// Each partition to receive, and its cursor.
    partitions: BTreeMap<u16, Cursor>,
}

impl Progress {
    fn pending(&self) -> impl Iterator<Item = (u16, &Cursor)> + '_ {
        self.partitions
            .iter()
            .filter(|(_, c)| !c.is_done())
            .map(|(&p, c)| (p, c))
    }

    fn done(&self) -> usize {
        self.partitions.values().filter(|c| c.is_done()).count()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![PROGRESS_FORMAT_VERSION];
        out.extend_from_slice(&self.target.to_le_bytes());
        put_varint(&mut out, self.partitions.len() as u64);
        for (p, cursor) in &self.partitions {
            out.extend_from_slice(&p.to_le_bytes());
            out.push(cursor.need);
            out.push(cursor.passes.len() as u8);
            for source in &cursor.passes {
                out.extend_from_slice(&source.to_le_bytes());
            }
            match &cursor.pass {
                None => out.push(0),
                Some((source, after)) => {
                    out.push(1);
                    out.extend_from_slice(&source.to_le_bytes());
                    match after {
                        None => out.push(0),
                        Some(key) => {
                            out.push(1);
                            put_varint(&mut out, key.len() as u64);
                            out.extend_from_slice(key);
                        }
                    }
                }
            }
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != PROGRESS_FORMAT_VERSION {
            return Err(DecodeError::UnknownVersion { found: version });
        }
        let u64_le = |r: &mut Reader<'_>| -> Result<u64, DecodeError> {
            let mut word = [0u8; 8];
            word.copy_from_slice(r.bytes(8)?);
            Ok(u64::from_le_bytes(word))
        };
        let tag = |r: &mut Reader<'_>, what| match r.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            found => Err(DecodeError::UnknownTag { what, found }),
        };
        let target = u64_le(&mut r)?;
        let count = r.count("handoff partition", crate::limits::PARTITIONS_MAX as usize)?;
        let mut partitions = BTreeMap::new();
        for _ in 0..count {
            let mut p = [0u8; 2];
            p.copy_from_slice(r.bytes(2)?);
            let need = r.u8()?;
            let passes = (0..r.u8()?)
                .map(|_| u64_le(&mut r))
                .collect::<Result<Vec<_>, _>>()?;
            let pass = if tag(&mut r, "handoff pass")? {
                let source = u64_le(&mut r)?;
                let after = if tag(&mut r, "handoff cursor")? {
                    let len = r.count("handoff cursor byte", NAMESPACED_KEY_BYTES_MAX)?;
                    Some(Bytes::copy_from_slice(r.bytes(len)?))
                } else {
                    None
                };
                Some((source, after))
            } else {
                None
            };
            let cursor = Cursor { need, passes, pass };
            partitions.insert(u16::from_le_bytes(p), cursor);
        }
        r.finish()?;
        Ok(Self { target, partitions })
    }
}

#[derive(Debug, Default)]
struct Counters {
    keys_received: AtomicU64,
    bytes_received: AtomicU64,
    partitions_received: AtomicU64,
    batches_served: AtomicU64,
    bytes_served: AtomicU64,
    busy_refusals: AtomicU64,
    retries: AtomicU64,
    partitions_dropped: AtomicU64,
}

/// What the worker and the streams share.
#[derive(Debug)]
struct State {
    progress: Progress,
    /// Partitions with a stream running.
    active: BTreeSet<u16>,
    /// Failed batches in a row, by partition (reset by a good one), and
    /// when the partition may be tried again.
    failures: BTreeMap<u16, (u32, Instant)>,
    /// When the current progress began, and the bytes received by then.
    started: Instant,
    bytes_at_start: u64,
    /// The gate: since when every reachable member has the target.
    seen_since: Option<Instant>,
    /// Whether the sources were surveyed for this progress.
    surveyed: bool,
}

/// A node's handoff: its streams, what it serves, its counters.
#[derive(Debug)]
pub(super) struct Handoff {
    /// Bytes per second received, shared by the streams.
    rate: u64,
    /// Batches served at once.
    out: Arc<Semaphore>,
    counters: Counters,
    state: Mutex<State>,
    /// Serializes cursor saves, so an older snapshot never lands last;
    /// holds when the last one was made.
    saving: tokio::sync::Mutex<Instant>,
}

impl Handoff {
    /// A handoff receiving at most `rate` bytes per second.
    pub(super) fn new(rate: u64) -> Self {
        Self {
            rate: rate.max(1),
            out: Arc::new(Semaphore::new(HANDOFF_STREAMS_OUT)),
            counters: Counters::default(),
            state: Mutex::new(State {
                progress: Progress::default(),
                active: BTreeSet::new(),
                failures: BTreeMap::new(),
                started: Instant::now(),
                bytes_at_start: 0,
                seen_since: None,
                surveyed: false,
            }),
            saving: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the cursors were last saved [`HANDOFF_CURSOR_SAVE_MS`] ago
    /// or more: each save syncs the store, so streams save at most that
    /// often (a crash costs the batches since, fetched again).
    fn save_due(&self) -> bool {
        self.saving
            .try_lock()
            .is_ok_and(|last| last.elapsed() >= Duration::from_millis(HANDOFF_CURSOR_SAVE_MS))
    }

    /// A slot to serve one batch, or `None` when all are taken.
    pub(super) fn serve_slot(&self) -> Option<OwnedSemaphorePermit> {
        let permit = Arc::clone(&self.out).try_acquire_owned().ok();
        if permit.is_none() {
            self.counters.busy_refusals.fetch_add(1, Ordering::Relaxed);
        }
        permit
    }

    /// Counts a batch served.
    pub(super) fn served(&self, bytes: usize) {
        self.counters.batches_served.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes_served
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The numbers `DYNAMO STATUS`, INFO and `dynokv admin status` show.
    pub(super) fn report(&self) -> HandoffReport {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let state = self.state();
        let total = state.progress.partitions.len();
        let done = state.progress.done();
        let elapsed = state.started.elapsed().as_secs_f64();
        let bytes = load(&self.counters.bytes_received);
        let rate = if elapsed > 0.0 && done < total {
            (bytes.saturating_sub(state.bytes_at_start)) as f64 / elapsed
        } else {
            0.0
        };
        let eta_s =
            (done > 0 && done < total).then(|| elapsed / done as f64 * (total - done) as f64);
        HandoffReport {
            partitions_to_receive: total,
            partitions_done: done,
            streams_in: state.active.len(),
            streams_out: HANDOFF_STREAMS_OUT - self.out.available_permits(),
            stuck: state
                .failures
                .values()
                .filter(|(n, _)| *n >= STUCK_AFTER_FAILURES)
                .count(),
            waiting_for_gossip: total > done && state.seen_since.is_none(),
            rate_bytes_per_s: rate,
            eta_s,
            keys_received: load(&self.counters.keys_received),
            bytes_received: bytes,
            partitions_received: load(&self.counters.partitions_received),
            batches_served: load(&self.counters.batches_served),
            bytes_served: load(&self.counters.bytes_served),
            busy_refusals: load(&self.counters.busy_refusals),
            retries: load(&self.counters.retries),
            partitions_dropped: load(&self.counters.partitions_dropped),
        }
    }
}

/// How a stream ended.
enum Ended {
    /// The partition is in.
    Done,
    /// Every source was busy or unreachable: try later, not a failure.
    Busy,
    /// A batch failed: retried from the cursor.
    Failed(String),
}

/// When old copies may go: the settled layout whose copies were dropped,
/// and since when every reachable member has gossiped the one held now.
#[derive(Debug, Default)]
struct DropGate {
    dropped: Option<u64>,
    seen_since: Option<(u64, Instant)>,
}

impl ClusterCoordinator {
    /// The handoff worker (see the module docs): streams what the layout
    /// gives this node, records its sync, settles the layout, and drops
    /// old copies. A step on `status` is a pass over the layout; a failure
    /// a stream that failed (it is retried).
    pub async fn run_handoff(self, status: Arc<WorkerStatus>, mut shutdown: watch::Receiver<bool>) {
        let inner = Arc::clone(&self.inner);
        match inner.local.meta_entry(PROGRESS_META).await {
            Ok(Some(bytes)) if !bytes.is_empty() => match Progress::decode(&bytes) {
                Ok(progress) => inner.handoff.state().progress = progress,
                Err(e) => tracing::warn!("saved handoff cursors unreadable, started over: {e}"),
            },
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot read the saved handoff cursors: {e}"),
        }
        let mut views = inner.membership.subscribe();
        let mut tick = tokio::time::interval(Duration::from_millis(HANDOFF_TICK_MS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The stream slots: each takes pending partitions one after the
        // other until none is ready.
        let mut streams: JoinSet<()> = JoinSet::new();
        let mut gate = DropGate::default();
        loop {
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => break,
                Some(_) = streams.join_next() => {}
                _ = views.changed() => {}
                _ = tick.tick() => {}
            }
            let view = inner.membership.view();
            if view.layout.get(inner.me()).is_none() {
                continue;
            }
            status.stepped();
            if view.layout.is_settled() {
                self.settled_pass(&view.layout, &mut gate, &status).await;
            } else {
                gate = DropGate::default();
                self.moving_pass(&view.layout, &mut streams, &status).await;
            }
        }
        // Each stream saved its cursor after each batch: the next start
        // resumes from there.
        streams.abort_all();
        while streams.join_next().await.is_some() {}
    }

    /// A pass over a settled layout: once every reachable member has it,
    /// and the grace later, drop the copies it no longer places here
    /// (once per layout).
    async fn settled_pass(&self, layout: &Layout, gate: &mut DropGate, status: &WorkerStatus) {
        let inner = &self.inner;
        let digest = layout.digest();
        if gate.dropped == Some(digest) {
            return;
        }
        if !inner
            .membership
            .digest_seen_by_all(digest, |id| inner.transport.reachable(id))
        {
            gate.seen_since = None;
            return;
        }
        let since = match gate.seen_since {
            Some((d, since)) if d == digest => since,
            _ => {
                gate.seen_since = Some((digest, Instant::now()));
                return;
            }
        };
        if since.elapsed() < Duration::from_millis(HANDOFF_START_GRACE_MS) {
            return;
        }
        match self.drop_old_copies().await {
            Ok(()) => gate.dropped = Some(digest),
            Err(e) => status.failed(format_args!("cannot drop old copies: {e}")),
        }
    }

    /// A pass over a layout whose data moves: plan for a new target,
    /// record the sync once every partition is in, start streams for the
    /// rest, and settle once every target member has synced.
    async fn moving_pass(
        &self,
        layout: &Layout,
        streams: &mut JoinSet<()>,
        status: &Arc<WorkerStatus>,
    ) {
        let inner = &self.inner;
        let me = inner.me();
        let placement = inner.placement();
        let target = layout.target_fingerprint();
        if inner.handoff.state().progress.target != target {
            streams.abort_all();
            self.plan(&placement, target).await;
        }
        let all_in = inner.handoff.state().progress.pending().next().is_none();
        let unsynced = layout.get(me).is_some_and(|m| {
            matches!(m.state(), MemberState::Joining | MemberState::Member)
                && m.synced.fingerprint != target
        });
        if all_in && unsynced {
            // Empty partitions' ends are saved here, once.
            if let Err(e) = self.save_progress().await {
                status.failed(format_args!("cannot save the handoff cursors: {e}"));
                return;
            }
            match inner.membership.apply(&Change::Synced { id: me }) {
                Ok(()) => tracing::info!("handoff: every partition this node is to hold is in"),
                Err(e) => tracing::warn!("handoff: cannot record the sync: {e}"),
            }
        }
        if !all_in {
            self.start_streams(&placement, target, streams, status);
        }
        let layout = &inner.membership.view().layout;
        if layout.waiting_to_settle().is_empty() && !layout.is_settled() {
            match inner.membership.apply(&Change::Settle) {
                Ok(()) => tracing::info!(
                    epoch = inner.membership.view().layout.epoch(),
                    "layout settled: reads move to the new replicas"
                ),
                Err(e) => tracing::debug!("settle refused: {e}"),
            }
        }
    }

    /// Starts a new progress for `target`: the partitions the transition
    /// moves to this node, none received.
    async fn plan(&self, placement: &Transition, target: u64) {
        let inner = &self.inner;
        let me = inner.me();
        // N - W + 1 sources: any W replicas holding a write meet them.
        let policy = inner.policy;
        let sources_needed = (policy.n + 1).saturating_sub(policy.w).max(1);
        let partitions: BTreeMap<u16, Cursor> = placement
            .moves()
            .into_iter()
            .filter(|m| m.to.contains(&me))
            .map(|m| {
                let need = sources_needed.min(m.from.len()).clamp(1, 255) as u8;
                let cursor = Cursor {
                    need,
                    ..Cursor::default()
                };
                (m.partition, cursor)
            })
            .collect();
        if !partitions.is_empty() {
            tracing::info!(
                partitions = partitions.len(),
                "handoff: the layout gives this node partitions to receive"
            );
        }
        {
            let mut state = inner.handoff.state();
            state.progress = Progress { target, partitions };
            state.active.clear();
            state.failures.clear();
            state.started = Instant::now();
            state.bytes_at_start = inner
                .handoff
                .counters
                .bytes_received
                .load(Ordering::Relaxed);
            state.seen_since = None;
            state.surveyed = false;
        }
        if let Err(e) = self.save_progress().await {
            tracing::warn!("handoff: cannot save the cursors: {e}");
        }
    }

    /// Starts stream slots, up to [`HANDOFF_STREAMS_IN`], once the gate is
    /// open (module docs) and a partition is ready.
    fn start_streams(
        &self,
        placement: &Transition,
        target: u64,
        streams: &mut JoinSet<()>,
        status: &Arc<WorkerStatus>,
    ) {
        let inner = &self.inner;
        let seen = inner
            .membership
            .seen_by_all(target, |id| inner.transport.reachable(id));
        {
            let mut state = inner.handoff.state();
            if !seen {
                state.seen_since = None;
                return;
            }
            let since = *state.seen_since.get_or_insert_with(Instant::now);
            if since.elapsed() < Duration::from_millis(HANDOFF_START_GRACE_MS) {
                return;
            }
        }
        let sources: Arc<BTreeMap<u16, Vec<NodeId>>> = Arc::new(
            placement
                .moves()
                .into_iter()
                .map(|m| (m.partition, m.from))
                .collect(),
        );
        if !std::mem::replace(&mut inner.handoff.state().surveyed, true) {
            let this = self.clone();
            let (sources, status) = (Arc::clone(&sources), Arc::clone(status));
            streams.spawn(async move { this.survey(&sources, &status).await });
            return;
        }
        while streams.len() < HANDOFF_STREAMS_IN {
            let Some(first) = self.claim() else {
                return;
            };
            let (this, sources, status) = (self.clone(), Arc::clone(&sources), Arc::clone(status));
            streams.spawn(async move {
                let mut next = Some(first);
                while let Some((partition, cursor)) = next {
                    let from = sources.get(&partition).cloned().unwrap_or_default();
                    let ended = this.stream(partition, from, cursor).await;
                    this.stream_ended(partition, ended, &status);
                    next = this.claim();
                }
            });
        }
    }

    /// Takes the next pending partition no stream has and whose retry
    /// time has come.
    fn claim(&self) -> Option<(u16, Cursor)> {
        let mut state = self.inner.handoff.state();
        let now = Instant::now();
        let (partition, cursor) = state
            .progress
            .pending()
            .find(|(p, _)| {
                !state.active.contains(p)
                    && state.failures.get(p).is_none_or(|(_, retry)| *retry <= now)
            })
            .map(|(p, cursor)| (p, cursor.clone()))?;
        state.active.insert(partition);
        Some((partition, cursor))
    }

    /// Asks each reachable source which of its partitions to send hold
    /// any record (one `Held` each): a source holding none of a partition
    /// has its whole copy in already, so a new cluster's bootstrap or a
    /// sparse one moves in a few requests, not one per partition.
    async fn survey(&self, sources: &BTreeMap<u16, Vec<NodeId>>, status: &WorkerStatus) {
        let inner = &self.inner;
        let mut asks: BTreeMap<NodeId, Vec<u16>> = BTreeMap::new();
        {
            let state = inner.handoff.state();
            for (partition, cursor) in state.progress.pending() {
                for &node in sources.get(&partition).into_iter().flatten() {
                    if !cursor.passes.contains(&node) && inner.transport.reachable(node) {
                        asks.entry(node).or_default().push(partition);
                    }
                }
            }
        }
        let deadline = Duration::from_millis(HANDOFF_BATCH_DEADLINE_MS);
        for (node, partitions) in asks {
            let request = Request::Held {
                partitions: partitions.clone(),
            };
            let held = match inner.transport.request_up_to(node, request, deadline).await {
                Ok(Response::Held { partitions }) => partitions,
                Ok(other) => {
                    status.failed(format_args!("{node:016x} answered a survey with {other:?}"));
                    continue;
                }
                Err(e) => {
                    status.failed(format_args!("survey of {node:016x}: {e}"));
                    continue;
                }
            };
            let held: BTreeSet<u16> = held.into_iter().collect();
            let mut state = inner.handoff.state();
            for partition in partitions.into_iter().filter(|p| !held.contains(p)) {
                if let Some(cursor) = state.progress.partitions.get_mut(&partition)
                    && !cursor.is_done()
                    && !cursor.passes.contains(&node)
                    && cursor.pass.as_ref().is_none_or(|(from, _)| *from != node)
                {
                    cursor.passes.push(node);
                }
            }
        }
        let (done, total) = {
            let state = inner.handoff.state();
            (state.progress.done(), state.progress.partitions.len())
        };
        tracing::info!(
            done,
            total,
            "handoff: surveyed the sources; the rest is streamed"
        );
        if let Err(e) = self.save_progress().await {
            status.failed(format_args!("cannot save the handoff cursors: {e}"));
        }
    }

    /// Pulls `partition`, one source's whole copy after another, until
    /// `need` sources' copies are in: a pass sticks to its source (a pass
    /// mixing sources would prove nothing); a source that is busy or
    /// unreachable ends the stream, to be retried later.
    async fn stream(&self, partition: u16, sources: Vec<NodeId>, mut cursor: Cursor) -> Ended {
        let inner = &self.inner;
        if cursor
            .pass
            .as_ref()
            .is_some_and(|(_, after)| after.is_some())
        {
            tracing::info!(partition, "handoff: stream resumed from its cursor");
        }
        let deadline = Duration::from_millis(HANDOFF_BATCH_DEADLINE_MS);
        while !cursor.is_done() {
            let (source, after) = match cursor.pass.clone() {
                Some(pass) => pass,
                None => {
                    let next = sources
                        .iter()
                        .copied()
                        .filter(|n| !cursor.passes.contains(n))
                        .find(|&n| inner.transport.reachable(n));
                    match next {
                        Some(source) => (source, None),
                        None => {
                            return Ended::Failed(format!(
                                "{} of {} source copies in, no other source reachable",
                                cursor.passes.len(),
                                cursor.need
                            ));
                        }
                    }
                }
            };
            let request = Request::Fetch {
                partition,
                after: after.clone(),
                limit: HANDOFF_BATCH_KEYS,
            };
            let entries = match inner
                .transport
                .request_up_to(source, request, deadline)
                .await
            {
                Ok(Response::Entries { entries }) => entries,
                Ok(Response::Error {
                    code: ErrorCode::Busy,
                    ..
                }) => return Ended::Busy,
                Ok(other) => return Ended::Failed(format!("{source:016x} answered {other:?}")),
                Err(e) => return Ended::Failed(format!("{source:016x}: {e}")),
            };
            let Some((last, _)) = entries.last() else {
                // This source's whole copy is in. Its end is saved with the
                // next save (an empty pass lost to a crash is redone).
                cursor.passes.push(source);
                cursor.pass = None;
                self.cursor_moved(partition, &cursor);
                continue;
            };
            let last = last.clone();
            let bytes: usize = entries.iter().map(|(k, r)| k.len() + encoded_len(r)).sum();
            let keys = entries.len() as u64;
            let received: Vec<Received> = entries
                .into_iter()
                .map(|(key, record)| Received::decoded(key, record))
                .collect();
            if let Err(e) = inner.local.merge_many(received).await {
                return Ended::Failed(format!("merge: {e}"));
            }
            let counters = &inner.handoff.counters;
            counters.keys_received.fetch_add(keys, Ordering::Relaxed);
            counters
                .bytes_received
                .fetch_add(bytes as u64, Ordering::Relaxed);
            cursor.pass = Some((source, Some(last)));
            self.cursor_moved(partition, &cursor);
            if inner.handoff.save_due()
                && let Err(e) = self.save_progress().await
            {
                return Ended::Failed(format!("saving the cursor: {e}"));
            }
            // The rate is shared: each of the streams takes its part.
            let pause = bytes as f64 * HANDOFF_STREAMS_IN as f64 / inner.handoff.rate as f64;
            tokio::time::sleep(Duration::from_secs_f64(pause.min(60.0))).await;
        }
        Ended::Done
    }

    /// Moves `partition`'s cursor (in memory; [`Self::save_progress`]
    /// saves every cursor, after a sync).
    fn cursor_moved(&self, partition: u16, cursor: &Cursor) {
        let mut state = self.inner.handoff.state();
        if let Some(c) = state.progress.partitions.get_mut(&partition) {
            *c = cursor.clone();
        }
    }

    async fn save_progress(&self) -> Result<(), CoordinatorError> {
        let handoff = &self.inner.handoff;
        let mut last = handoff.saving.lock().await;
        let bytes = handoff.state().progress.encode();
        self.inner
            .local
            .save_after_sync(PROGRESS_META, bytes)
            .await?;
        *last = Instant::now();
        Ok(())
    }

    fn stream_ended(&self, partition: u16, ended: Ended, status: &WorkerStatus) {
        let handoff = &self.inner.handoff;
        let mut state = handoff.state();
        state.active.remove(&partition);
        let retry = |n: u32| {
            let backoff = HANDOFF_TICK_MS.saturating_mul(1 << n.min(6));
            Instant::now() + Duration::from_millis(backoff)
        };
        match ended {
            Ended::Done => {
                state.failures.remove(&partition);
                handoff
                    .counters
                    .partitions_received
                    .fetch_add(1, Ordering::Relaxed);
                let (done, total) = (state.progress.done(), state.progress.partitions.len());
                // One line per tenth of the way, not one per partition.
                if done == total || (done * 10 / total.max(1)) > ((done - 1) * 10 / total.max(1)) {
                    tracing::info!(done, total, "handoff: partitions received");
                } else {
                    tracing::debug!(partition, done, total, "handoff: partition received");
                }
            }
            Ended::Busy => {
                state.failures.insert(partition, (0, retry(1)));
            }
            Ended::Failed(error) => {
                let failed = state.failures.get(&partition).map_or(0, |(n, _)| *n) + 1;
                state.failures.insert(partition, (failed, retry(failed)));
                handoff.counters.retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    partition,
                    failed,
                    "handoff: stream failed, retried from its cursor: {error}"
                );
                status.failed(format_args!("partition {partition}: {error}"));
            }
        }
    }

    /// Drops every record this node holds (a node that left).
    ///
    /// # Errors
    /// Store errors.
    pub async fn drop_all_data(&self) -> Result<(), CoordinatorError> {
        Ok(self.inner.local.drop_partitions(|_| true).await?)
    }

    /// Drops the records of partitions no replica set of the settled
    /// layout places on this node (all of them on a node that left).
    async fn drop_old_copies(&self) -> Result<(), CoordinatorError> {
        let inner = &self.inner;
        let placement = inner.placement();
        let me = inner.me();
        let foreign: Vec<u16> = (0..placement.current().partitions())
            .map(|p| p as u16)
            .filter(|&p| !placement.read_replicas(p).contains(&me))
            .collect();
        let held = inner.local.held(foreign).await?;
        if held.is_empty() {
            return Ok(());
        }
        let doomed: BTreeSet<u16> = held.iter().copied().collect();
        inner
            .local
            .drop_partitions(move |p| doomed.contains(&p))
            .await?;
        inner
            .handoff
            .counters
            .partitions_dropped
            .fetch_add(held.len() as u64, Ordering::Relaxed);
        tracing::info!(
            partitions = held.len(),
            "handoff: old copies dropped (no live layout places them here)"
        );
        Ok(())
    }
}

/// Serves one `Fetch` batch: up to `limit` records of `partition` after
/// `after`, cut at [`PEER_BATCH_BYTES_MAX`] (at least one); `Busy` when
/// [`HANDOFF_STREAMS_OUT`] batches are being served.
///
/// # Errors
/// Store errors.
pub(super) async fn serve_fetch(
    handoff: &Handoff,
    local: &ReplicaService,
    partition: u16,
    after: Option<Bytes>,
    limit: u32,
) -> Result<Response, CoordinatorError> {
    let Some(_slot) = handoff.serve_slot() else {
        return Ok(Response::Error {
            code: ErrorCode::Busy,
            message: format!("serving {HANDOFF_STREAMS_OUT} handoff streams already"),
        });
    };
    let limit = limit.clamp(1, HANDOFF_BATCH_KEYS) as usize;
    let mut entries = local.scan_partition(partition, after, limit).await?;
    let mut bytes = 0;
    let keep = entries
        .iter()
        .position(|(k, r): &(Bytes, Record)| {
            bytes += k.len() + encoded_len(r);
            bytes > PEER_BATCH_BYTES_MAX
        })
        .map_or(entries.len(), |i| i.max(1));
    entries.truncate(keep);
    handoff.served(bytes.min(PEER_BATCH_BYTES_MAX));
    Ok(Response::Entries { entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the cursor bytes round-trip every state, and that foreign
    // bytes are refused, never panicked on.
    #[test]
    fn progress_round_trips_and_refuses_foreign_bytes() {
        let progress = Progress {
            target: 0xfeed,
            partitions: [
                (
                    0,
                    Cursor {
                        need: 2,
                        ..Cursor::default()
                    },
                ),
                (
                    7,
                    Cursor {
                        need: 2,
                        passes: vec![3],
                        pass: Some((9, Some(Bytes::from_static(b"key")))),
                    },
                ),
                (
                    8,
                    Cursor {
                        need: 1,
                        passes: vec![],
                        pass: Some((9, None)),
                    },
                ),
                (
                    4095,
                    Cursor {
                        need: 1,
                        passes: vec![4],
                        pass: None,
                    },
                ),
            ]
            .into_iter()
            .collect(),
        };
        let bytes = progress.encode();
        assert_eq!(Progress::decode(&bytes), Ok(progress));
        assert!(Progress::decode(&[2]).is_err(), "another version");
        assert!(
            Progress::decode(&bytes[..bytes.len() - 1]).is_err(),
            "truncated"
        );
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Progress::decode(&trailing).is_err(), "trailing bytes");
        for cut in 0..bytes.len() {
            let _ = Progress::decode(&bytes[..cut]);
        }
    }
}
