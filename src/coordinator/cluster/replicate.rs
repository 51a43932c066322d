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
//! count: it is already one of the W). After the quorum, the rest of the
//! replies are awaited by a tail task, up to the request timeout: a
//! replica that failed or did not answer in time by then gets its records
//! as hints the same way. Fallbacks never mint dots: they only keep the
//! records the coordinating replica made.

use super::{Inner, Sets, same_members};
use crate::coordinator::answers::Answers;
use crate::coordinator::batches::cut;
use crate::coordinator::quorum::{self, Replies, Tally, Until};
use crate::limits::WRITE_TAILS_MAX;
use crate::membership::layout::Transition;
use crate::peer::message::{ErrorCode, Request, Response};
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
    answers: Answers<Answer>,
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
            answers: Answers::default(),
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
                        self.answers.push(self.sent.len(), async move {
                            match pending.answer().await {
                                Ok(Response::Ack) => Answer::Acked,
                                Ok(Response::Error {
                                    code: ErrorCode::HintRefused,
                                    ..
                                }) => Answer::Refused,
                                _ => Answer::Failed,
                            }
                        });
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

    /// Hands what is still in flight to a tail task, if anything is:
    /// it waits for the rest of the replies until `deadline`, sends the
    /// copies of the replicas that failed or did not answer to fallbacks,
    /// and keeps here what no fallback took.
    pub(super) fn finish(mut self, deadline: Instant) {
        // The answers already in are looked at here: most writes end now.
        // A failed one stays for the tail, which hands its copies on.
        let mut failed = Vec::new();
        for (i, answer) in self.answers.ready() {
            if answer == Answer::Acked {
                self.acked(i);
            } else {
                failed.push((i, answer));
            }
        }
        if self.answers.is_empty() && self.kept.is_empty() && failed.is_empty() {
            return;
        }
        let inner = Arc::clone(&self.inner);
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
        tails.spawn(async move {
            for (i, answer) in failed {
                self.take(i, answer).await;
            }
            self.tail(deadline).await;
        });
    }

    async fn tail(mut self, deadline: Instant) {
        // Replies until the deadline; failures go to fallbacks meanwhile.
        let _ = tokio::time::timeout_at(deadline, async {
            while let Some((i, answer)) = self.answers.next().await {
                self.take(i, answer).await;
            }
        })
        .await;
        // Requests not answered in time: their copies, as hints (a
        // fallback's go to the next one: it may not have kept them).
        let silent: Vec<(NodeId, Vec<Copy>)> = std::mem::take(&mut self.answers)
            .into_tags()
            .into_iter()
            .filter_map(|i| {
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
        let _ = tokio::time::timeout_at(second, async {
            while let Some((i, answer)) = self.answers.next().await {
                self.take(i, answer).await;
            }
        })
        .await;
        // Fallbacks that did not answer in time either: their copies are
        // kept here, not dropped (the fallback may hold them too; two
        // hints of one record are one merge at the target).
        for i in std::mem::take(&mut self.answers).into_tags() {
            if let Some(sent) = self.sent.get_mut(i) {
                let target = sent.hint_for.unwrap_or(sent.node);
                let copies = std::mem::take(&mut sent.copies);
                self.kept.entry(target).or_default().extend(copies);
            }
        }
        self.keep().await;
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
        let (i, answer) = self.answers.next().await?;
        Some(self.take(i, answer).await)
    }
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
