//! A coordinated write's copies: the records sent to the key's other
//! replicas, the quorums they count for, and the sloppy quorum (docs/
//! cluster.md, "Sloppy quorum and hinted handoff").
//!
//! Each key has three tallies:
//! - **W** of its current replicas, where a fallback's hint for a
//!   current replica counts too when the sloppy quorum is on;
//! - **PW** of its current replicas, real ones only (the default PW is
//!   W with the sloppy quorum off, else 1: the coordinator itself);
//! - **W** of its target replicas while its partition moves (real ones
//!   only: the handoff needs them to hold the data).
//!
//! A replica that is not reachable (no link, or marked down), or whose
//! request fails, has its records sent to the next fallback of the
//! key's preference list that is reachable and not already used for that
//! key, as hints for it; a fallback that fails passes them to the next
//! (one that refuses them, past the target's hint window or cap, does
//! not: they are dropped, and counted there).
//! When none is left, this node keeps the hints itself (they do not
//! count: it is already one of the W). After the quorum, the requests
//! still open are watched by their links ([`Pending::watch`]): an
//! acknowledgement costs nothing more, and a replica that fails or does
//! not answer within the request timeout gets its records as hints the
//! same way, from a tail task spawned then. Fallbacks never mint dots:
//! they only keep the records the coordinating replica made.

use super::{Inner, Sets, same_members};
use crate::coordinator::answers::Answers;
use crate::coordinator::batches::cut;
use crate::coordinator::quorum::{self, Replies, Tally, Until};
use crate::limits::WRITE_TAILS_MAX;
use crate::membership::layout::Transition;
use crate::peer::message::{ErrorCode, Request, Response};
use crate::peer::transport::{PeerError, Pending};
use crate::replica::Received;
use crate::ring::partition_of;
use crate::version::NodeId;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use tokio::time::Instant;

/// Tallies per key: see the module docs.
pub(super) const TALLIES: usize = 3;
const W_CURRENT: usize = 0;
const PW_CURRENT: usize = 1;
const W_TARGET: usize = 2;

/// One key's copy, as sent.
#[derive(Clone)]
pub(super) struct Copy {
    /// The key's index in the write batch.
    pub(super) index: usize,
    pub(super) partition: u16,
    pub(super) key: Bytes,
    /// The record, encoded once for every node it goes to.
    pub(super) record: Bytes,
    /// Which of the key's quorums the replica it is meant for counts in.
    pub(super) sets: Sets,
}

/// How a request of a write's replication was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Acked,
    /// A fallback refused the hints (the target's window or cap).
    Refused,
    /// Failed, or not answered.
    Failed,
}

impl Answer {
    fn of(answer: Result<Response, PeerError>) -> Self {
        match answer {
            Ok(Response::Ack) => Self::Acked,
            Ok(Response::Error {
                code: ErrorCode::HintRefused,
                ..
            }) => Self::Refused,
            _ => Self::Failed,
        }
    }
}

/// One request of a write's replication.
struct Sent {
    node: NodeId,
    /// `None`: to a replica, for itself; `Some(replica)`: to a fallback,
    /// as hints for that replica.
    hint_for: Option<NodeId>,
    copies: Vec<Copy>,
    /// The tallies its acknowledgement counts for.
    counts: Vec<usize>,
}

/// A write's copies in flight, and where they go next when they fail.
pub(super) struct Replication {
    inner: Arc<Inner>,
    placement: Arc<Transition>,
    /// Whether a fallback's acknowledgement counts towards W.
    sloppy: bool,
    sent: Vec<Sent>,
    /// Requests not answered yet, tagged with their index in `sent`.
    open: Answers<Pending>,
    /// By key index: the fallbacks used for it.
    used: HashMap<usize, Vec<NodeId>>,
    /// Copies no fallback took, by the replica they are for: kept here.
    kept: BTreeMap<NodeId, Vec<Copy>>,
    /// [`Inner::flushes`] when the write began: a hint of a write from
    /// before a FLUSHALL is not sent after it began.
    flushes: u64,
}

impl Replication {
    pub(super) fn new(inner: Arc<Inner>, placement: Arc<Transition>, flushes: u64) -> Self {
        let sloppy = inner.healing.sloppy_quorum;
        Self {
            inner,
            placement,
            sloppy,
            sent: Vec::new(),
            open: Answers::default(),
            used: HashMap::new(),
            kept: BTreeMap::new(),
            flushes,
        }
    }

    /// The tallies an acknowledgement of `copy` counts for, from its
    /// replica itself (`hint` false) or from a fallback keeping it as a
    /// hint.
    fn counts(&self, copy: &Copy, hint: bool) -> impl Iterator<Item = usize> {
        let base = TALLIES * copy.index;
        let of = |on: bool, at: usize| on.then_some(base + at);
        let sets = copy.sets;
        let real = !hint;
        [
            of(sets.current && (real || self.sloppy), W_CURRENT),
            of(sets.current && real, PW_CURRENT),
            of(sets.target && real, W_TARGET),
        ]
        .into_iter()
        .flatten()
    }

    /// Sends `copies` to `node` (for itself, or as hints for `hint_for`),
    /// one request per batch. Copies that cannot be sent go to fallbacks
    /// at once. Returns the tallies that now wait for one more answer.
    async fn send(
        &mut self,
        node: NodeId,
        hint_for: Option<NodeId>,
        copies: Vec<Copy>,
    ) -> Vec<usize> {
        let mut asked = Vec::new();
        let mut work = vec![(node, hint_for, copies)];
        while let Some((node, hint_for, copies)) = work.pop() {
            let reachable = self.inner.transport.reachable(node);
            for batch in cut(copies, |c| c.key.len() + c.record.len()) {
                let entries = batch
                    .iter()
                    .map(|c| (c.key.clone(), c.record.clone()))
                    .collect();
                let request = match hint_for {
                    None => Request::Replicate { entries },
                    Some(target) => Request::Hint { target, entries },
                };
                let pending = if reachable {
                    self.inner.transport.send(node, request).await.ok()
                } else {
                    None
                };
                match pending {
                    Some(pending) => {
                        let counts: Vec<usize> = batch
                            .iter()
                            .flat_map(|c| self.counts(c, hint_for.is_some()))
                            .collect();
                        asked.extend(&counts);
                        self.open.push(self.sent.len(), pending);
                        self.sent.push(Sent {
                            node,
                            hint_for,
                            copies: batch,
                            counts,
                        });
                    }
                    None => {
                        let target = hint_for.unwrap_or(node);
                        work.extend(self.fallbacks(target, batch));
                    }
                }
            }
        }
        asked
    }

    /// Where `copies` for `target` go next: grouped by each key's next
    /// fallback; those with none left are kept here.
    fn fallbacks(
        &mut self,
        target: NodeId,
        copies: Vec<Copy>,
    ) -> Vec<(NodeId, Option<NodeId>, Vec<Copy>)> {
        let me = self.inner.me();
        let ring = self.placement.current();
        let mut by_node: BTreeMap<NodeId, Vec<Copy>> = BTreeMap::new();
        for copy in copies {
            let writes_to = self.placement.write_replicas(copy.partition);
            let used = self.used.entry(copy.index).or_default();
            let next = ring
                .preference(copy.partition)
                .iter()
                .copied()
                .filter(|n| *n != me && !writes_to.contains(n) && !used.contains(n))
                .find(|&n| self.inner.transport.reachable(n));
            match next {
                Some(node) => {
                    used.push(node);
                    by_node.entry(node).or_default().push(copy);
                }
                None => self.kept.entry(target).or_default().push(copy),
            }
        }
        by_node
            .into_iter()
            .map(|(node, copies)| (node, Some(target), copies))
            .collect()
    }

    /// Sends the copies of a written batch to their replicas and sets up
    /// the tallies; `tallies` holds [`TALLIES`] per key, this node's own
    /// acknowledgements already in.
    pub(super) async fn start(
        &mut self,
        to: BTreeMap<NodeId, Vec<Copy>>,
        tallies: &mut [Tally<()>],
    ) {
        for (node, copies) in to {
            for i in self.send(node, None, copies).await {
                tallies[i].asked();
            }
        }
    }

    /// Waits for the quorums (see `quorum::wait`) until `deadline`.
    pub(super) async fn wait(&mut self, tallies: &mut [Tally<()>], deadline: Instant) {
        quorum::wait(tallies, self, deadline, Until::EachSettled).await;
    }

    /// Leaves what is still in flight: the answers already in are
    /// looked at here (most writes end now); the requests still open are
    /// handed to their links to watch ([`Replication::watched`]); the
    /// copies of those that failed, and those kept, go to a tail task.
    pub(super) fn finish(mut self, deadline: Instant) {
        let mut failed = Vec::new();
        for (i, answer) in self.open.ready() {
            let answer = Answer::of(answer);
            if answer == Answer::Acked {
                self.acked(i);
            } else {
                failed.push((i, answer));
            }
        }
        for (i, pending) in std::mem::take(&mut self.open).into_open() {
            let Some(sent) = self.sent.get_mut(i) else {
                continue;
            };
            let sent = Sent {
                node: sent.node,
                hint_for: sent.hint_for,
                copies: std::mem::take(&mut sent.copies),
                counts: std::mem::take(&mut sent.counts),
            };
            let rest = self.rest();
            pending.watch(Box::new(move |answer| {
                rest.watched(sent, Answer::of(answer))
            }));
        }
        if self.kept.is_empty() && failed.is_empty() {
            return;
        }
        spawn_tail(&Arc::clone(&self.inner), async move {
            for (i, answer) in failed {
                self.take(i, answer).await;
            }
            self.tail(deadline).await;
        });
    }

    /// A replication of none of this one's requests yet, for one of its
    /// requests answered later: the same write, and the fallbacks its
    /// keys used.
    fn rest(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            placement: Arc::clone(&self.placement),
            sloppy: self.sloppy,
            sent: Vec::new(),
            open: Answers::default(),
            used: self.used.clone(),
            kept: BTreeMap::new(),
            flushes: self.flushes,
        }
    }

    /// Takes the late answer to `sent`, on its link's task: an
    /// acknowledgement is counted; a failure has a tail task send its
    /// copies to fallbacks (a refusal is final, as in [`Replication::take`]).
    fn watched(mut self, sent: Sent, answer: Answer) {
        self.sent.push(sent);
        match answer {
            Answer::Acked => {
                self.acked(0);
            }
            Answer::Refused => {}
            Answer::Failed => {
                let deadline = Instant::now() + self.inner.transport.request_timeout();
                spawn_tail(&Arc::clone(&self.inner), async move {
                    self.take(0, answer).await;
                    self.tail(deadline).await;
                });
            }
        }
    }

    /// Waits for the answers still open until `deadline`; the copies of
    /// requests not answered by then go to fallbacks, whose answers are
    /// awaited one request timeout more; what they do not answer is kept
    /// here.
    async fn tail(mut self, deadline: Instant) {
        self.take_until(deadline).await;
        // Requests not answered in time: their copies, as hints (a
        // fallback's go to the next one: it may not have kept them).
        let silent: Vec<(NodeId, Vec<Copy>)> = std::mem::take(&mut self.open)
            .into_open()
            .into_iter()
            .filter_map(|(i, _)| {
                let sent = self.sent.get_mut(i)?;
                let target = sent.hint_for.unwrap_or(sent.node);
                Some((target, std::mem::take(&mut sent.copies)))
            })
            .collect();
        for (target, copies) in silent {
            let next = self.fallbacks(target, copies);
            for (fallback, target, copies) in next {
                self.send(fallback, target, copies).await;
            }
        }
        let second = Instant::now() + self.inner.transport.request_timeout();
        self.take_until(second).await;
        // Fallbacks that did not answer in time either: their copies are
        // kept here, not dropped (the fallback may hold them too; two
        // hints of one record are one merge at the target).
        for (i, _) in std::mem::take(&mut self.open).into_open() {
            if let Some(sent) = self.sent.get_mut(i) {
                let target = sent.hint_for.unwrap_or(sent.node);
                let copies = std::mem::take(&mut sent.copies);
                self.kept.entry(target).or_default().extend(copies);
            }
        }
        self.keep().await;
    }

    /// Takes answers as they come until none is open or `deadline`;
    /// failures go to fallbacks meanwhile.
    async fn take_until(&mut self, deadline: Instant) {
        let _ = tokio::time::timeout_at(deadline, async {
            while let Some((i, answer)) = self.open.next().await {
                self.take(i, Answer::of(answer)).await;
            }
        })
        .await;
    }

    /// Keeps on this node the copies no fallback took, unless a FLUSHALL
    /// began since the write did.
    async fn keep(&mut self) {
        let inner = &self.inner;
        for (target, copies) in std::mem::take(&mut self.kept) {
            if self.flushes != inner.flushes.load(Ordering::Acquire) {
                return;
            }
            let entries = copies
                .into_iter()
                .filter_map(|c| {
                    let record = crate::model::record::decode_record_shared(&c.record).ok()?;
                    Some(Received {
                        key: c.key,
                        record,
                        encoded: Some(c.record),
                    })
                })
                .collect();
            if let Err(e) = inner
                .local
                .store_hints(target, entries, inner.healing.hints)
                .await
            {
                tracing::warn!("cannot keep hints for {target:016x} here: {e}");
            }
        }
    }

    /// Takes the acknowledgement of request `i`: the tallies it counts
    /// for.
    fn acked(&mut self, i: usize) -> Vec<(usize, Option<()>)> {
        let Some(sent) = self.sent.get_mut(i) else {
            return Vec::new();
        };
        self.inner
            .note_hinted(sent.hint_for.is_some(), sent.copies.len());
        std::mem::take(&mut sent.counts)
            .into_iter()
            .map(|t| (t, Some(())))
            .collect()
    }

    /// Takes the answer of request `i`: the tallies it answers for, each
    /// `None` where it failed and nothing took its place. A failed
    /// request's copies go to the next fallbacks; the tallies those count
    /// for stay open for them.
    async fn take(&mut self, i: usize, answer: Answer) -> Vec<(usize, Option<()>)> {
        let Some(sent) = self.sent.get_mut(i) else {
            return Vec::new();
        };
        if answer == Answer::Acked {
            return self.acked(i);
        }
        let counts = std::mem::take(&mut sent.counts);
        let (node, hint_for) = (sent.node, sent.hint_for);
        let copies = std::mem::take(&mut sent.copies);
        let mut reopened = Vec::new();
        // A refused hint is dropped (and counted by the fallback that
        // refused it): the target is past its window or cap, and read
        // repair or anti-entropy brings it the key instead.
        if answer == Answer::Failed && self.flushes == self.inner.flushes.load(Ordering::Acquire) {
            for (fallback, target, copies) in self.fallbacks(hint_for.unwrap_or(node), copies) {
                reopened.extend(self.send(fallback, target, copies).await);
            }
        }
        // A tally the fallbacks answer for waits for them instead: one
        // failure closes one open answer, one new request opens one.
        let mut answers = Vec::with_capacity(counts.len());
        for t in counts {
            match reopened.iter().position(|&r| r == t) {
                Some(at) => {
                    reopened.swap_remove(at);
                }
                None => answers.push((t, None)),
            }
        }
        // Fallbacks that count where the failed request did not (none
        // do: a hint counts for no more than its replica) would be asked
        // twice; `reopened` is empty here.
        debug_assert!(reopened.is_empty());
        answers
    }
}

impl Replies<()> for Replication {
    async fn next(&mut self) -> Option<Vec<(usize, Option<()>)>> {
        let (i, answer) = self.open.next().await?;
        Some(self.take(i, Answer::of(answer)).await)
    }
}

/// Runs a write's tail on a task of the node's write tails (joined
/// before the store closes), unless [`WRITE_TAILS_MAX`] run already:
/// then its copies are left to read repair, and counted.
fn spawn_tail(inner: &Inner, tail: impl Future<Output = ()> + Send + 'static) {
    let mut tails = inner
        .write_tails
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    while tails.try_join_next().is_some() {}
    if tails.len() >= WRITE_TAILS_MAX {
        inner
            .stats
            .write_tails_dropped
            .fetch_add(1, Ordering::Relaxed);
        return;
    }
    tails.spawn(tail);
}

/// Whether a key's partition moves: its current and target replicas
/// differ.
pub(super) fn moving(placement: &Transition, partition: u16) -> bool {
    !same_members(
        placement.current().replicas_of(partition),
        placement.target().replicas_of(partition),
    )
}

/// The partition of `key` under `placement`.
pub(super) fn partition(placement: &Transition, key: &[u8]) -> u16 {
    partition_of(key, placement.current().partitions())
}
