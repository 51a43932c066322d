//! The DVV laws as properties.
//!
//! Arbitrary (context, siblings) pairs are not reachable states: a context
//! implies which writes happened and who superseded whom. So states here come
//! from random *histories*: four replicas (node ids 1..=4) each hold a
//! `DvvSet<u32>` for one key; a history is a sequence of client writes
//! (coordinated by one replica, with a context read from some replica now,
//! the empty context, or a stale context read earlier; each value a fresh
//! u32, increasing, so value order is also a causally consistent clock) and
//! syncs (`r.sync(&s)`). Every state a replica passes through is a sample.

use super::{Dot, DvvSet, NodeId, VersionVector};
use proptest::prelude::*;
use proptest::sample::Index;
use std::collections::BTreeSet;

const REPLICAS: usize = 4;

type State = DvvSet<u32>;

/// A sibling ordering for `bound` and `winner`.
type Order = fn(&Dot, &u32) -> u64;

/// Timestamps from perfect clocks: a causally later write always ranks higher.
fn causal(_: &Dot, value: &u32) -> u64 {
    u64::from(*value)
}

/// Timestamps from perfect clocks read in coarse ticks: causal except that
/// writes in one tick tie and the dot decides, like `lww_order` within a
/// millisecond.
fn coarse(_: &Dot, value: &u32) -> u64 {
    u64::from(*value / 4)
}

/// Timestamps from skewed clocks: unrelated to causality.
fn skewed(_: &Dot, value: &u32) -> u64 {
    u64::from(value.wrapping_mul(0x9E37_79B9) >> 29)
}

fn orders() -> impl Strategy<Value = Order> {
    prop_oneof![
        Just(causal as Order),
        Just(coarse as Order),
        Just(skewed as Order)
    ]
}

fn node(replica: usize) -> NodeId {
    replica as NodeId + 1
}

#[derive(Debug, Clone)]
enum Ctx {
    /// A blind write: the client has read nothing.
    Empty,
    /// The client read this replica just now.
    Current(usize),
    /// The client reuses a context some replica handed out earlier.
    Stale(Index),
}

#[derive(Debug, Clone)]
enum Op {
    Write { at: usize, ctx: Ctx },
    Sync { into: usize, from: usize },
}

/// One acknowledged write.
#[derive(Debug, Clone)]
struct Write {
    dot: Dot,
    value: u32,
    context: VersionVector,
}

#[derive(Debug)]
struct Run {
    /// Every replica's state at the end.
    replicas: Vec<State>,
    /// Every state any replica passed through, with its owner; the final
    /// ones included.
    snapshots: Vec<(usize, State)>,
    /// Every context a client could have read (snapshot contexts).
    contexts: Vec<VersionVector>,
    writes: Vec<Write>,
}

impl Run {
    fn pick(&self, at: &Index) -> &State {
        &at.get(&self.snapshots).1
    }

    fn next_value(&self) -> u32 {
        self.writes.len() as u32 + 1
    }
}

/// Plays `ops`; with `bound`, every replica bounds its state after each
/// write and sync, as `replica::write` does.
fn run(ops: &[Op], bound: Option<(usize, Order)>) -> Run {
    let mut replicas = vec![State::new(); REPLICAS];
    let mut snapshots: Vec<(usize, State)> = (0..REPLICAS).map(|r| (r, State::new())).collect();
    let mut contexts = vec![VersionVector::new()];
    let mut writes = Vec::new();
    for op in ops {
        let touched = match op {
            Op::Write { at, ctx } => {
                let context = match ctx {
                    Ctx::Empty => VersionVector::new(),
                    Ctx::Current(from) => replicas[*from].context().clone(),
                    Ctx::Stale(i) => i.get(&contexts).clone(),
                };
                let value = writes.len() as u32 + 1;
                let dot = replicas[*at].update(&context, node(*at), value);
                writes.push(Write {
                    dot,
                    value,
                    context,
                });
                *at
            }
            Op::Sync { into, from } => {
                let other = replicas[*from].clone();
                replicas[*into].sync(&other);
                *into
            }
        };
        if let Some((max, order)) = bound {
            replicas[touched].bound(max, order);
        }
        contexts.push(replicas[touched].context().clone());
        snapshots.push((touched, replicas[touched].clone()));
    }
    Run {
        replicas,
        snapshots,
        contexts,
        writes,
    }
}

fn ctx_strategy() -> impl Strategy<Value = Ctx> {
    prop_oneof![
        1 => Just(Ctx::Empty),
        3 => (0..REPLICAS).prop_map(Ctx::Current),
        2 => any::<Index>().prop_map(Ctx::Stale),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..REPLICAS, ctx_strategy()).prop_map(|(at, ctx)| Op::Write { at, ctx }),
        (0..REPLICAS, 0..REPLICAS).prop_map(|(into, from)| Op::Sync { into, from }),
    ]
}

fn history() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op_strategy(), 0..32)
}

fn vector() -> impl Strategy<Value = VersionVector> {
    prop::collection::vec((1..=4 as NodeId, 0..6u64), 0..6).prop_map(VersionVector::from_entries)
}

fn synced(a: &State, b: &State) -> State {
    let mut merged = a.clone();
    merged.sync(b);
    merged
}

fn merge_all(states: &[State]) -> State {
    states.iter().fold(State::new(), |acc, s| synced(&acc, s))
}

fn bounded(state: &State, max: usize, order: Order) -> State {
    let mut state = state.clone();
    state.bound(max, order);
    state
}

fn values(state: &State) -> BTreeSet<u32> {
    state.siblings().iter().map(|s| s.1).collect()
}

fn dots(state: &State) -> BTreeSet<Dot> {
    state.siblings().iter().map(|s| s.0).collect()
}

fn winner(state: &State, order: Order) -> Option<(Dot, u32)> {
    state.winner(order).copied()
}

fn joined(a: &VersionVector, b: &VersionVector) -> VersionVector {
    let mut j = a.clone();
    j.join(b);
    j
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    // Law 1: sync is commutative; two states of one history synced both ways are equal values.
    #[test]
    fn sync_is_commutative(ops in history(), i: Index, j: Index) {
        let h = run(&ops, None);
        let (a, b) = (h.pick(&i), h.pick(&j));
        prop_assert_eq!(synced(a, b), synced(b, a));
    }

    // Law 2: sync is associative; (a⊔b)⊔c == a⊔(b⊔c) for three states of one history.
    #[test]
    fn sync_is_associative(ops in history(), i: Index, j: Index, k: Index) {
        let h = run(&ops, None);
        let (a, b, c) = (h.pick(&i), h.pick(&j), h.pick(&k));
        prop_assert_eq!(synced(&synced(a, b), c), synced(a, &synced(b, c)));
    }

    // Law 3: sync is idempotent; a⊔a == a and (a⊔b)⊔b == a⊔b for states of one history.
    #[test]
    fn sync_is_idempotent(ops in history(), i: Index, j: Index) {
        let h = run(&ops, None);
        let (a, b) = (h.pick(&i), h.pick(&j));
        prop_assert_eq!(&synced(a, a), a);
        let ab = synced(a, b);
        prop_assert_eq!(synced(&ab, b), ab);
    }

    // Law 4: a write whose context covers every sibling (the state's own VGET context, or that
    // joined with a context read elsewhere) leaves exactly the new value; checked on every kind
    // of reachable state, with the general rule "uncovered siblings stay, plus the new one".
    #[test]
    fn covering_update_leaves_one_sibling(
        ops in history(),
        i: Index,
        extra: Index,
        join_extra: bool,
    ) {
        let h = run(&ops, None);
        let (owner, state) = i.get(&h.snapshots);
        let other = extra.get(&h.contexts);
        let context = if join_extra {
            joined(state.context(), other)
        } else {
            state.context().clone()
        };
        let value = h.next_value();
        let mut after = state.clone();
        let dot = after.update(&context, node(*owner), value);
        prop_assert_eq!(after.siblings(), &[(dot, value)][..]);
        prop_assert_eq!(dot.node, node(*owner));
        let own = node(*owner);
        prop_assert_eq!(dot.counter, state.context().get(own).max(context.get(own)) + 1);
        let mut expected_context = joined(state.context(), &context);
        expected_context.witness(dot.node, dot.counter);
        prop_assert_eq!(after.context(), &expected_context);

        // General rule, with a context that need not cover everything.
        let mut partial = state.clone();
        let dot = partial.update(other, node(*owner), value);
        let mut expected: Vec<(Dot, u32)> =
            state.siblings().iter().filter(|s| !other.covers(s.0)).copied().collect();
        expected.push((dot, value));
        expected.sort();
        prop_assert_eq!(partial.siblings(), &expected[..]);
    }

    // Law 5: two writes from one context that was the state's context leave both values and only
    // them, whether both go through one replica or through two that then sync; and when the context
    // was only the first replica's, the second keeps exactly its own siblings it did not cover.
    #[test]
    fn two_updates_from_one_context_leave_two_siblings(
        ops in history(),
        r in 0..REPLICAS,
        s in 0..REPLICAS,
    ) {
        let h = run(&ops, None);
        let (v1, v2) = (h.next_value(), h.next_value() + 1);

        // The state both clients read: the merge of r and s (just r when r == s).
        let context = synced(&h.replicas[r], &h.replicas[s]).context().clone();
        let mut at_r = h.replicas[r].clone();
        at_r.update(&context, node(r), v1);
        let result = if r == s {
            at_r.update(&context, node(r), v2);
            at_r
        } else {
            let mut at_s = h.replicas[s].clone();
            at_s.update(&context, node(s), v2);
            synced(&at_r, &at_s)
        };
        prop_assert_eq!(values(&result), BTreeSet::from([v1, v2]));

        // Both clients read r only; the write through s sits beside s's siblings r had not seen.
        if r != s {
            let context = h.replicas[r].context().clone();
            let mut at_r = h.replicas[r].clone();
            at_r.update(&context, node(r), v1);
            let mut at_s = h.replicas[s].clone();
            at_s.update(&context, node(s), v2);
            let mut expected: BTreeSet<u32> = h.replicas[s].siblings().iter()
                .filter(|x| !context.covers(x.0)).map(|x| x.1).collect();
            expected.extend([v1, v2]);
            prop_assert_eq!(values(&synced(&at_r, &at_s)), expected.clone());
            prop_assert_eq!(values(&synced(&at_s, &at_r)), expected);
        }
    }

    // Law 6: no lost and no phantom write; the merge of all replicas holds exactly the writes no
    // later write's context covered, each with its own value; its context is everything written.
    #[test]
    fn merge_keeps_exactly_the_unsuperseded_writes(ops in history()) {
        let h = run(&ops, None);
        let merged = merge_all(&h.replicas);
        let live: Vec<(Dot, u32)> = h.writes.iter()
            .filter(|w| !h.writes.iter().any(|later| later.context.covers(w.dot)))
            .map(|w| (w.dot, w.value))
            .collect::<BTreeSet<_>>().into_iter().collect();
        prop_assert_eq!(merged.siblings(), &live[..]);
        let mut everything = VersionVector::new();
        for w in &h.writes {
            everything.join(&w.context);
            everything.witness(w.dot.node, w.dot.counter);
        }
        prop_assert_eq!(merged.context(), &everything);
        // The last write is never superseded, so a key written at least once is never empty.
        if let Some(last) = h.writes.last() {
            prop_assert!(merged.siblings().contains(&(last.dot, last.value)));
        }
    }

    // Law 7: covers_set(a, b) holds exactly when a.sync(b) == a; checked on random pairs, on pairs
    // built to be covering (a⊔b over a, b), and on bounded states (the only ones where a context
    // can cover a dot without holding anything after it, so the sibling check matters).
    #[test]
    fn covers_set_iff_sync_changes_nothing(
        ops in history(),
        i: Index,
        j: Index,
        max in 1..=3usize,
        order in orders(),
    ) {
        let h = run(&ops, None);
        let lossy = run(&ops, Some((max, order)));
        let (a, b) = (h.pick(&i), h.pick(&j));
        let (la, lb) = (lossy.pick(&i), lossy.pick(&j));
        let (ab, lab, a_cut) = (synced(a, b), synced(la, lb), bounded(a, max, order));
        for (x, y) in [
            (a, b), (b, a), (&ab, a), (&ab, b), (a, &ab), (a, a),
            (la, lb), (lb, la), (&lab, la), (la, &lab), (a, &a_cut), (&a_cut, a), (a, la), (la, b),
        ] {
            prop_assert_eq!(x.covers_set(y), &synced(x, y) == x, "x={:?} y={:?}", x, y);
        }
        prop_assert!(ab.covers_set(a) && ab.covers_set(b));
    }

    // Law 8a: bound keeps min(len, max(max, 1)) siblings, exactly the top ones by (order, dot), a
    // subset of the old ones, leaves the context alone and reports how many it dropped.
    #[test]
    fn bound_keeps_the_top_siblings(
        ops in history(),
        i: Index,
        max in 0..=4usize,
        order in orders(),
    ) {
        let h = run(&ops, None);
        let before = h.pick(&i);
        let mut after = before.clone();
        let dropped = after.bound(max, order);
        prop_assert_eq!(after.context(), before.context());
        prop_assert_eq!(after.siblings().len(), before.siblings().len().min(max.max(1)));
        prop_assert_eq!(dropped, before.siblings().len() - after.siblings().len());
        let mut ranked: Vec<(u64, Dot, u32)> =
            before.siblings().iter().map(|(d, v)| (order(d, v), *d, *v)).collect();
        ranked.sort();
        let kept: Vec<(Dot, u32)> = ranked[dropped..].iter().map(|r| (r.1, r.2))
            .collect::<BTreeSet<_>>().into_iter().collect();
        prop_assert_eq!(after.siblings(), &kept[..]);
        prop_assert_eq!(winner(&after, order), winner(before, order));
    }

    // Law 8b (what survives of "bound commutes with sync", which fails in general, see the
    // counterexamples below): for any order and max, syncing bounded states gives the same context
    // as syncing the unbounded ones and a subset of its siblings: bound never invents or revives.
    #[test]
    fn syncing_bounded_states_only_loses_siblings(
        ops in history(),
        i: Index,
        j: Index,
        max in 1..=3usize,
        order in orders(),
    ) {
        let h = run(&ops, None);
        let (a, b) = (h.pick(&i), h.pick(&j));
        let full = synced(a, b);
        let lossy = synced(&bounded(a, max, order), &bounded(b, max, order));
        prop_assert_eq!(lossy.context(), full.context());
        prop_assert!(dots(&lossy).is_subset(&dots(&full)));
        prop_assert!(lossy.siblings().iter().all(|s| full.siblings().contains(s)));
    }

    // Law 8c: with a causally consistent order (perfect clocks), bounding before the sync keeps
    // the winner of the unbounded sync for any max, and for max = 1 bounding commutes with sync.
    #[test]
    fn bound_keeps_the_causal_winner_through_sync(
        ops in history(),
        i: Index,
        j: Index,
        max in 1..=3usize,
    ) {
        let h = run(&ops, None);
        let (a, b) = (h.pick(&i), h.pick(&j));
        let full = synced(a, b);
        let cut = |x: &State| bounded(x, max, causal);
        let lossy = cut(&synced(&cut(a), &cut(b)));
        prop_assert_eq!(winner(&lossy, causal), winner(&full, causal));
        if max == 1 {
            prop_assert_eq!(lossy, bounded(&full, 1, causal));
        }
    }

    // Law 8d: a system whose replicas bound after every step (as replica::write does) has, step for
    // step, the same contexts and dots as the unbounded system and a subset of its siblings (any
    // order); shown by playing one history both ways in lockstep.
    #[test]
    fn bounded_replicas_shadow_unbounded_ones(
        ops in history(),
        max in 1..=3usize,
        order in orders(),
    ) {
        let full = run(&ops, None);
        let lossy = run(&ops, Some((max, order)));
        prop_assert_eq!(
            full.writes.iter().map(|w| w.dot).collect::<Vec<_>>(),
            lossy.writes.iter().map(|w| w.dot).collect::<Vec<_>>()
        );
        for ((_, f), (_, l)) in full.snapshots.iter().zip(&lossy.snapshots) {
            prop_assert_eq!(l.context(), f.context());
            prop_assert!(l.siblings().iter().all(|s| f.siblings().contains(s)));
            prop_assert!(l.siblings().len() <= max);
        }
    }

    // Law 8e: with a causally consistent order, bounded replicas converge on the last write as
    // winner (the unbounded winner) from any pair or from all, and for max = 1 on exactly
    // bound(unbounded merge); shown on the lockstep histories of 8d.
    #[test]
    fn bounded_replicas_converge_on_the_causal_winner(
        ops in history(),
        max in 1..=3usize,
        r in 0..REPLICAS,
        s in 0..REPLICAS,
    ) {
        let full = run(&ops, None);
        let lossy = run(&ops, Some((max, causal)));
        let merged = merge_all(&full.replicas);
        let lossy_merged = bounded(&merge_all(&lossy.replicas), max, causal);
        let last = full.writes.last().map(|w| (w.dot, w.value));
        prop_assert_eq!(winner(&merged, causal), last);
        prop_assert_eq!(winner(&lossy_merged, causal), last);
        let pair = synced(&full.replicas[r], &full.replicas[s]);
        let lossy_pair = synced(&lossy.replicas[r], &lossy.replicas[s]);
        prop_assert_eq!(winner(&lossy_pair, causal), winner(&pair, causal));
        if max == 1 {
            prop_assert_eq!(lossy_merged, bounded(&merged, 1, causal));
        }
    }

    // Law 9a: join is commutative, associative and idempotent, on arbitrary small vectors.
    #[test]
    fn join_is_a_semilattice(a in vector(), b in vector(), c in vector()) {
        prop_assert_eq!(joined(&a, &b), joined(&b, &a));
        prop_assert_eq!(joined(&joined(&a, &b), &c), joined(&a, &joined(&b, &c)));
        prop_assert_eq!(joined(&a, &a), a.clone());
        prop_assert!(a.entries().windows(2).all(|w| w[0].0 < w[1].0));
        prop_assert!(a.entries().iter().all(|e| e.1 > 0));
    }

    // Law 9b: descends is a partial order (reflexive, antisymmetric, transitive) whose least upper
    // bound is join, and a descends b exactly when a ⊔ b == a; covers agrees with get.
    #[test]
    fn descends_is_the_order_of_join(
        a in vector(),
        b in vector(),
        c in vector(),
        n in 1..=5 as NodeId,
        k in 1..7u64,
    ) {
        prop_assert!(a.descends(&a));
        if a.descends(&b) && b.descends(&a) {
            prop_assert_eq!(&a, &b);
        }
        if a.descends(&b) && b.descends(&c) {
            prop_assert!(a.descends(&c));
        }
        prop_assert_eq!(a.descends(&b), joined(&a, &b) == a);
        let ab = joined(&a, &b);
        prop_assert!(ab.descends(&a) && ab.descends(&b));
        if c.descends(&a) && c.descends(&b) {
            prop_assert!(c.descends(&ab));
        }
        prop_assert_eq!(a.covers(Dot { node: n, counter: k }), a.get(n) >= k);
        prop_assert_eq!(ab.get(n), a.get(n).max(b.get(n)));
    }
}

// Contexts of states met in histories also obey 9b (they are not arbitrary vectors).
proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    // Law 9c: descends orders the contexts of one history consistently with sync: the context of
    // a ⊔ b is the join of theirs and descends both.
    #[test]
    fn sync_joins_contexts(ops in history(), i: Index, j: Index) {
        let h = run(&ops, None);
        let (a, b) = (h.pick(&i), h.pick(&j));
        let ab = synced(a, b);
        prop_assert_eq!(ab.context(), &joined(a.context(), b.context()));
        prop_assert!(ab.context().descends(a.context()) && ab.context().descends(b.context()));
    }
}

// The design's sibling example: two VSETs with the same old context make two siblings, on one
// replica or on two that sync; a VSET with the context read after that makes one.
#[test]
fn design_sibling_example() {
    let mut replica = State::new();
    replica.update(&VersionVector::new(), 1, 10);
    let old = replica.context().clone();

    let mut one = replica.clone();
    one.update(&old, 1, 11);
    one.update(&old, 1, 12);
    assert_eq!(values(&one), BTreeSet::from([11, 12]));

    let mut other = replica.clone();
    replica.update(&old, 1, 11);
    other.update(&old, 2, 12);
    let mut merged = synced(&replica, &other);
    assert_eq!(values(&merged), BTreeSet::from([11, 12]));
    assert_eq!(merged, synced(&other, &replica));

    let read = merged.context().clone();
    merged.update(&read, 1, 13);
    assert_eq!(values(&merged), BTreeSet::from([13]));
    // The replica that missed the resolving write drops both siblings once it syncs.
    other.sync(&merged);
    assert_eq!(other, merged);
}

// Counterexample to "bound commutes with sync" for max = 2 even with perfect clocks: bounding
// a state of three concurrent siblings drops x, lost though the merge {x, w} fits the bound.
#[test]
fn bound_does_not_commute_with_sync_for_max_2() {
    let write = |at, ctx| Op::Write { at, ctx };
    let ops = [
        write(1, Ctx::Empty),          // x = 1 at node 2
        write(0, Ctx::Empty),          // z1 = 2 at node 1
        write(0, Ctx::Empty),          // z2 = 3 at node 1, concurrent with z1
        Op::Sync { into: 1, from: 0 }, // node 2 = {x, z1, z2}
        write(0, Ctx::Current(0)),     // w = 4 at node 1, supersedes z1 and z2
    ];
    let h = run(&ops, None);
    let (a, b) = (&h.replicas[1], &h.replicas[0]);
    assert_eq!(values(a), BTreeSet::from([1, 2, 3]));
    assert_eq!(values(b), BTreeSet::from([4]));
    let bound_of_merge = bounded(&synced(a, b), 2, causal);
    let merge_of_bounds = bounded(
        &synced(&bounded(a, 2, causal), &bounded(b, 2, causal)),
        2,
        causal,
    );
    assert_eq!(values(&bound_of_merge), BTreeSet::from([1, 4]));
    assert_eq!(values(&merge_of_bounds), BTreeSet::from([4]));
    // The same happens in a system that bounds at every step.
    let lossy = run(&ops, Some((2, causal)));
    assert_eq!(values(&merge_all(&lossy.replicas)), BTreeSet::from([4]));
}

// Counterexample with skewed clocks and max = 1: two replicas that each keep their "newest"
// sibling each cover the other's, so they converge on no sibling at all; three acknowledged
// writes, none deleted, and the key reads as missing (unbounded, the merge is {x, w}).
#[test]
fn bound_with_skewed_clocks_can_converge_to_nothing() {
    // Timestamps: z at 50 on node 1; x at 10 on node 2; w at 5 on node 2 (clock behind), yet w
    // was written after z with a context covering z.
    let stamp = |_: &Dot, v: &u32| -> u64 {
        match v {
            1 => 50,
            2 => 10,
            _ => 5,
        }
    };
    let (z, x, w) = (1, 2, 3);
    let mut n1 = State::new();
    let mut n2 = State::new();
    n1.update(&VersionVector::new(), 1, z);
    let read_z = n1.context().clone();
    n2.update(&VersionVector::new(), 2, x);
    let (full1, mut full2) = (synced(&n1, &n2), n2.clone());
    full2.update(&read_z, 2, w);
    assert_eq!(values(&synced(&full1, &full2)), BTreeSet::from([x, w]));

    n1.sync(&n2);
    n1.bound(1, stamp); // {z}, covers x
    n2.update(&read_z, 2, w);
    n2.bound(1, stamp); // {x}, covers z (through w's context) and w
    assert_eq!(values(&n1), BTreeSet::from([z]));
    assert_eq!(values(&n2), BTreeSet::from([x]));
    assert!(synced(&n1, &n2).is_empty());
    assert!(synced(&n2, &n1).is_empty());
}

// Counterexample with perfect clocks: three writes in one millisecond, ranked (ms, dot) as
// lww_order does, and max = 1; the dot tie-break is not causal (w follows z but has the lower
// dot), so the replicas again converge on no sibling while the unbounded merge is {x, w}.
#[test]
fn bound_with_same_millisecond_writes_can_converge_to_nothing() {
    let same_ms = |dot: &Dot, _: &u32| (1_000u64, *dot);
    let (z, x, w) = (1, 2, 3);
    let (mut n1, mut n2, mut n3) = (State::new(), State::new(), State::new());
    n3.update(&VersionVector::new(), 3, z); // z = (3,1)
    n2.update(&VersionVector::new(), 2, x); // x = (2,1)
    let read_z = n3.context().clone();
    n1.update(&read_z, 1, w); // w = (1,1), written after reading z
    let full = merge_all(&[n1.clone(), synced(&n1, &n2), synced(&n3, &n2)]);
    assert_eq!(values(&full), BTreeSet::from([x, w]));

    n1.sync(&n2);
    n1.bound(1, same_ms); // {x}: (2,1) beats (1,1); covers z and w
    n3.sync(&n2);
    n3.bound(1, same_ms); // {z}: (3,1) beats (2,1); covers x
    assert_eq!(values(&n1), BTreeSet::from([x]));
    assert_eq!(values(&n3), BTreeSet::from([z]));
    assert!(synced(&n1, &n3).is_empty());
}
