//! The layout's laws and scenarios: merge is a join-semilattice, any
//! delivery order of a set of changes converges to one layout and digest,
//! the bytes round-trip and never panic, tombstones hold, restarts do not
//! flip-flop, and gossip spreads a change in O(log n) rounds.

use super::*;
use crate::random::SplitMix64;
use proptest::prelude::*;

fn endpoint(id: NodeId, incarnation: u64) -> Endpoint {
    Endpoint {
        incarnation,
        name: format!("node-{id}"),
        peer_addr: format!("10.0.0.{id}:16379"),
        client_addr: format!("10.0.0.{id}:6379"),
    }
}

fn role(weight: f64) -> Role {
    Role { weight, zone: None }
}

fn join(id: NodeId) -> Change {
    Change::Join {
        id,
        endpoint: endpoint(id, 1),
        role: role(1.0),
    }
}

/// A settled layout of members 1..=n.
fn settled(n: u64) -> Layout {
    let mut layout = Layout::new();
    for id in 1..=n {
        layout.apply(&join(id), id).unwrap();
    }
    sync_all(&mut layout);
    layout.apply(&Change::Settle, 1).unwrap();
    assert!(layout.is_settled());
    layout
}

/// Every target member says it holds its data.
fn sync_all(layout: &mut Layout) {
    let ids: Vec<NodeId> = layout.members().map(|m| m.id).collect();
    for id in ids {
        let _ = layout.apply(&Change::Synced { id }, id);
    }
}

fn state(layout: &Layout, id: NodeId) -> Option<MemberState> {
    layout.get(id).map(Member::state)
}

// Proves the lifecycle: a founding member is placed at once, a joiner is
// written to but not read from until every target member synced and the
// layout settled, and a leaver is read from until then.
#[test]
fn join_leave_and_settle() {
    let mut layout = Layout::new();
    layout.apply(&join(1), 1).unwrap();
    assert_eq!(state(&layout, 1), Some(MemberState::Member));
    assert_eq!(layout.current_placement().len(), 1);
    layout.apply(&join(2), 1).unwrap();
    assert_eq!(state(&layout, 2), Some(MemberState::Joining));
    assert_eq!(layout.current_placement().len(), 1);
    assert_eq!(layout.target_placement().len(), 2);
    let epoch = layout.epoch();
    assert_eq!(
        layout.apply(&Change::Settle, 1),
        Err(LayoutError::NotSynced {
            waiting: vec![1, 2]
        })
    );
    sync_all(&mut layout);
    assert!(layout.waiting_to_settle().is_empty());
    layout.apply(&Change::Settle, 2).unwrap();
    assert!(layout.epoch() > epoch);
    assert_eq!(state(&layout, 2), Some(MemberState::Member));
    assert_eq!(layout.current_placement().len(), 2);
    // Leave: still read from until the settle.
    layout.apply(&Change::Leave { id: 1 }, 1).unwrap();
    assert_eq!(state(&layout, 1), Some(MemberState::Leaving));
    assert_eq!(layout.current_placement().len(), 2);
    assert_eq!(layout.target_placement().len(), 1);
    assert_eq!(
        layout.apply(&Change::Leave { id: 2 }, 2),
        Err(LayoutError::LastOwner { id: 2 })
    );
    // Member 2's sync was for the old target: it must sync again.
    assert_eq!(layout.waiting_to_settle(), vec![2]);
    sync_all(&mut layout);
    layout.apply(&Change::Settle, 2).unwrap();
    assert_eq!(state(&layout, 1), Some(MemberState::Removed));
    assert!(layout.is_removed(1));
    assert_eq!(layout.current_placement().len(), 1);
    assert!(layout.is_settled());
}

// Proves the tombstone: a removed id never comes back, not by a rejoin,
// not by an old node's gossip, not by a newer incarnation.
#[test]
fn a_removed_member_never_comes_back() {
    let before = settled(3);
    let mut layout = before.clone();
    layout.apply(&Change::Remove { id: 3 }, 1).unwrap();
    assert_eq!(state(&layout, 3), Some(MemberState::Removed));
    // An old node's gossip, from before the remove.
    assert!(!layout.merge(&before));
    assert!(layout.is_removed(3));
    // The old process restarts and announces itself.
    let mut stale = before.clone();
    stale
        .apply(
            &Change::Announce {
                id: 3,
                endpoint: endpoint(3, 9),
            },
            3,
        )
        .unwrap();
    layout.merge(&stale);
    assert!(layout.is_removed(3));
    assert_eq!(layout.get(3).map(|m| m.endpoint.incarnation), Some(9));
    assert_eq!(
        layout.apply(&join(3), 3),
        Err(LayoutError::Removed { id: 3 })
    );
    assert_eq!(
        layout.apply(&Change::Weight { id: 3, weight: 2.0 }, 1),
        Err(LayoutError::Removed { id: 3 })
    );
    // A second remove changes nothing.
    assert!(
        layout
            .apply(&Change::Remove { id: 3 }, 2)
            .unwrap()
            .is_empty()
    );
}

// Proves a removed dead member's partitions are read from their other
// old replicas until the survivors have them: the dead member stays in
// the read placement (counted as a failed replica), is out of every
// write and every stream source.
#[test]
fn removing_a_dead_member_reads_from_the_survivors_until_settled() {
    let mut layout = settled(4);
    layout.apply(&Change::Remove { id: 4 }, 1).unwrap();
    let t = Transition::new(&layout, 256, 3);
    let mut moved = 0;
    for p in 0..256u16 {
        assert!(!t.write_replicas(p).contains(&4));
        if t.read_replicas(p).contains(&4) {
            moved += 1;
        }
    }
    assert!(moved > 0);
    let moves = t.moves();
    assert_eq!(moves.len(), moved);
    for m in &moves {
        assert!(!m.from.contains(&4));
        assert_eq!(m.to.len(), 1);
    }
    sync_all(&mut layout);
    layout.apply(&Change::Settle, 2).unwrap();
    let t = Transition::new(&layout, 256, 3);
    assert!(t.moves().is_empty());
    assert!((0..256u16).all(|p| !t.read_replicas(p).contains(&4)));
}

// Proves a restarted node with a new address and a higher incarnation
// replaces its entry, and an old process's gossip (lower incarnation)
// never flips it back, whatever order the two arrive in.
#[test]
fn a_restart_replaces_the_endpoint_without_flip_flop() {
    let base = settled(3);
    let mut restarted = base.clone();
    let mut moved = endpoint(2, 2);
    moved.peer_addr = "10.0.9.9:16379".into();
    restarted
        .apply(
            &Change::Announce {
                id: 2,
                endpoint: moved.clone(),
            },
            2,
        )
        .unwrap();
    assert_eq!(
        restarted.epoch(),
        base.epoch(),
        "an address is not placement"
    );
    for _ in 0..3 {
        let mut a = base.clone();
        a.merge(&restarted);
        a.merge(&base);
        let mut b = restarted.clone();
        b.merge(&base);
        assert_eq!(a.get(2).map(|m| &m.endpoint), Some(&moved));
        assert_eq!(a, b);
    }
    assert!(matches!(
        restarted.apply(
            &Change::Announce {
                id: 2,
                endpoint: endpoint(2, 2)
            },
            2
        ),
        Err(LayoutError::StaleIncarnation {
            known: 2,
            given: 2,
            ..
        })
    ));
}

// Proves two conflicting weight changes made at once at two nodes end in
// one layout, one epoch and one digest on both, the change at the larger
// origin id winning the tie; and a change made after seeing the other
// wins whatever its origin.
#[test]
fn concurrent_changes_end_in_one_layout() {
    let base = settled(3);
    let (mut a, mut b) = (base.clone(), base.clone());
    a.apply(&Change::Weight { id: 3, weight: 2.0 }, 1).unwrap();
    b.apply(&Change::Weight { id: 3, weight: 3.0 }, 2).unwrap();
    assert_eq!(a.epoch(), b.epoch());
    assert_ne!(a.digest(), b.digest());
    let (a0, b0) = (a.clone(), b.clone());
    a.merge(&b0);
    b.merge(&a0);
    assert_eq!(a, b);
    assert_eq!(a.summary(), b.summary());
    assert_eq!(a.get(3).and_then(Member::weight), Some(3.0));
    // Node 1 sees it and changes again: its later change wins.
    a.apply(&Change::Weight { id: 3, weight: 0.5 }, 1).unwrap();
    b.merge(&a);
    assert_eq!(b.get(3).and_then(Member::weight), Some(0.5));
    // A leave made at once with a reweight wins over it.
    let (mut c, mut d) = (base.clone(), base.clone());
    c.apply(&Change::Leave { id: 2 }, 2).unwrap();
    d.apply(&Change::Weight { id: 2, weight: 9.0 }, 9).unwrap();
    d.merge(&c);
    assert_eq!(state(&d, 2), Some(MemberState::Leaving));
}

// Proves the ring's input during a join: the joiner is never read from
// before the settle, is written for exactly the partitions it gains, and
// those are a quarter of the replica-partitions (± 10%) when a 4th node
// joins 3 at the default Q; after the settle reads follow.
#[test]
fn a_join_moves_a_quarter_and_reads_stay_with_the_old_owners() {
    let q = crate::limits::PARTITIONS_DEFAULT;
    let mut layout = settled(3);
    layout.apply(&join(4), 4).unwrap();
    let t = Transition::new(&layout, q, 3);
    let mut gained = 0usize;
    for p in 0..q as u16 {
        assert!(!t.read_replicas(p).contains(&4));
        let writes = t.write_replicas(p);
        assert!(t.read_replicas(p).iter().all(|id| writes.contains(id)));
        gained += usize::from(writes.contains(&4));
    }
    let moves = t.moves();
    assert_eq!(moves.len(), gained);
    assert!(moves.iter().all(|m| m.to == vec![4] && m.from.len() == 3));
    let share = gained as f64 / (f64::from(q) * 3.0);
    assert!((share - 0.25).abs() <= 0.025, "moved share {share:.3}");
    sync_all(&mut layout);
    layout.apply(&Change::Settle, 4).unwrap();
    let t = Transition::new(&layout, q, 3);
    assert!(t.moves().is_empty());
    let read_by_4 = (0..q as u16)
        .filter(|&p| t.read_replicas(p).contains(&4))
        .count();
    assert_eq!(read_by_4, gained);
}

#[test]
fn bad_changes_are_refused() {
    let mut layout = settled(2);
    let before = layout.clone();
    assert_eq!(
        layout.apply(
            &Change::Weight {
                id: 1,
                weight: -1.0
            },
            1
        ),
        Err(LayoutError::InvalidWeight { weight: -1.0 })
    );
    assert_eq!(
        layout.apply(&Change::Weight { id: 7, weight: 1.0 }, 1),
        Err(LayoutError::UnknownMember { id: 7 })
    );
    assert_eq!(
        layout.apply(&join(1), 1),
        Err(LayoutError::AlreadyMember { id: 1 })
    );
    let mut long = endpoint(5, 1);
    long.name = "x".repeat(LAYOUT_TEXT_BYTES_MAX + 1);
    assert!(matches!(
        layout.apply(
            &Change::Join {
                id: 5,
                endpoint: long,
                role: role(1.0)
            },
            1
        ),
        Err(LayoutError::TextTooLong { field: "name", .. })
    ));
    layout.apply(&Change::Leave { id: 2 }, 2).unwrap();
    assert!(matches!(
        layout.apply(&Change::Weight { id: 2, weight: 2.0 }, 1),
        Err(LayoutError::NotOwner {
            state: MemberState::Leaving,
            ..
        })
    ));
    assert_eq!(
        layout.apply(&Change::Remove { id: 1 }, 1),
        Err(LayoutError::LastOwner { id: 1 })
    );
    assert_ne!(layout, before);
}

// Pins the bytes of a small layout: changing them breaks every node that
// gossips with this build (bump LAYOUT_FORMAT_VERSION instead).
#[test]
fn bytes_are_pinned() {
    let mut layout = Layout::new();
    layout
        .apply(
            &Change::Join {
                id: 1,
                endpoint: Endpoint {
                    incarnation: 1,
                    name: "a".into(),
                    peer_addr: "h:1".into(),
                    client_addr: "h:2".into(),
                },
                role: Role {
                    weight: 1.0,
                    zone: Some("z".into()),
                },
            },
            1,
        )
        .unwrap();
    let bytes = layout.encode();
    let expected: Vec<u8> = [
        &[1u8, 1][..],       // version, one member
        &1u64.to_le_bytes(), // id
        &[1, 1, b'a', 3, b'h', b':', b'1', 3, b'h', b':', b'2'],
        &[1, 1],                       // target: owner, counter 1
        &1u64.to_le_bytes(),           // origin
        &1f64.to_bits().to_le_bytes(), // weight
        &[1, 1, b'z'],                 // zone
        &[1, 1],                       // current: the same
        &1u64.to_le_bytes(),
        &1f64.to_bits().to_le_bytes(),
        &[1, 1, b'z'],
        &[0, 0],             // not removed, synced counter 0
        &0u64.to_le_bytes(), // fingerprint
    ]
    .concat();
    assert_eq!(bytes, expected);
    assert_eq!(Layout::decode(&bytes), Ok(layout));
    assert_eq!(
        Layout::decode(&[2]),
        Err(DecodeError::UnknownVersion { found: 2 })
    );
    assert!(Layout::decode(&[]).is_err());
}

// ---- properties ----

/// Arbitrary members over a small id space, so layouts overlap, with
/// every register's corner: ties, out, unassigned, tombstones.
fn arb_member() -> impl Strategy<Value = Member> {
    let stamp = (0u64..4, 1u64..4).prop_map(|(counter, origin)| Stamp { counter, origin });
    let role = (
        prop_oneof![Just(0.5), Just(1.0), Just(2.0)],
        prop_oneof![
            Just(None),
            Just(Some("a".to_string())),
            Just(Some("b".to_string()))
        ],
    )
        .prop_map(|(weight, zone)| Role { weight, zone });
    let owner = (stamp, role).prop_map(|(stamp, role)| Assignment::Owner { stamp, role });
    let target = prop_oneof![
        3 => owner.clone(),
        1 => (0u64..5).prop_map(|counter| Assignment::Out { counter }),
    ];
    let current = prop_oneof![
        1 => Just(Assignment::Unassigned),
        3 => owner,
        1 => (0u64..5).prop_map(|counter| Assignment::Out { counter }),
    ];
    (
        1u64..6,
        (0u64..3, 0usize..2, 0usize..2),
        target,
        current,
        prop::bool::weighted(0.2),
        (0u64..3, 0u64..3),
    )
        .prop_map(
            |(id, (inc, name, addr), target, current, removed, (sc, sf))| {
                let target = match (removed, target) {
                    (true, Assignment::Owner { stamp, .. }) => Assignment::Out {
                        counter: stamp.counter,
                    },
                    (_, t) => t,
                };
                Member {
                    id,
                    endpoint: Endpoint {
                        incarnation: inc,
                        name: ["a", "b"][name].into(),
                        peer_addr: ["h:1", "h:2"][addr].into(),
                        client_addr: "c:1".into(),
                    },
                    target,
                    current,
                    removed,
                    synced: Synced {
                        counter: sc,
                        fingerprint: sf,
                    },
                }
            },
        )
}

fn arb_layout() -> impl Strategy<Value = Layout> {
    proptest::collection::vec(arb_member(), 0..6).prop_map(|members| Layout {
        members: members.into_iter().map(|m| (m.id, m)).collect(),
    })
}

fn merged(a: &Layout, b: &Layout) -> Layout {
    let mut out = a.clone();
    out.merge(b);
    out
}

/// A change some node might make, by kind and target, on its own view.
#[derive(Debug, Clone)]
enum Op {
    Weight(NodeId, u8),
    Leave(NodeId),
    Remove(NodeId),
    Announce(NodeId),
    Join(NodeId),
    Synced(NodeId),
    Settle,
    /// Not a change: the node merges another node's view (gossip).
    Hear(usize),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u64..6, 1u8..4).prop_map(|(id, w)| Op::Weight(id, w)),
        (1u64..6).prop_map(Op::Leave),
        (1u64..6).prop_map(Op::Remove),
        (1u64..6).prop_map(Op::Announce),
        (5u64..8).prop_map(Op::Join),
        (1u64..8).prop_map(Op::Synced),
        Just(Op::Settle),
        (0usize..4).prop_map(Op::Hear),
    ]
}

/// Makes `op` at node `at` on its view `layout`; the delta, if accepted.
fn make(layout: &mut Layout, at: NodeId, op: &Op) -> Option<Layout> {
    let change = match *op {
        Op::Weight(id, w) => Change::Weight {
            id,
            weight: f64::from(w),
        },
        Op::Leave(id) => Change::Leave { id },
        Op::Remove(id) => Change::Remove { id },
        Op::Announce(id) => Change::Announce {
            id,
            endpoint: endpoint(id, layout.get(id).map_or(1, |m| m.endpoint.incarnation + 1)),
        },
        Op::Join(id) => join(id),
        Op::Synced(id) => Change::Synced { id },
        Op::Settle => Change::Settle,
        Op::Hear(_) => return None,
    };
    layout.apply(&change, at).ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    // Proves merge is a join-semilattice: commutative, associative,
    // idempotent, and an upper bound (merging never loses either side),
    // and that the epoch never drops in a merge.
    #[test]
    fn merge_is_a_semilattice(a in arb_layout(), b in arb_layout(), c in arb_layout()) {
        prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        prop_assert_eq!(merged(&a, &a), a.clone());
        let ab = merged(&a, &b);
        prop_assert_eq!(merged(&ab, &a), ab.clone());
        prop_assert!(ab.epoch() >= a.epoch().max(b.epoch()));
        prop_assert_eq!(ab.digest(), merged(&b, &a).digest());
    }

    // Proves the bytes round-trip for any layout.
    #[test]
    fn bytes_round_trip(a in arb_layout()) {
        let bytes = a.encode();
        prop_assert_eq!(Layout::decode(&bytes), Ok(a));
    }

    // Proves decoding never panics: arbitrary bytes, and a valid encoding
    // with bytes flipped, give an error or a layout that encodes back to
    // a layout equal to itself.
    #[test]
    fn decoding_garbage_never_panics(
        junk: Vec<u8>,
        a in arb_layout(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut inputs = vec![junk.clone(), [&[1u8][..], &junk].concat()];
        let mut bytes = a.encode();
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= byte;
        }
        inputs.push(bytes);
        for input in inputs {
            if let Ok(layout) = Layout::decode(&input) {
                prop_assert_eq!(Layout::decode(&layout.encode()), Ok(layout));
            }
        }
    }

    // Proves convergence: four nodes each make changes on their own view
    // from one settled layout, now and then hearing another's view (so
    // later changes build on earlier ones, as with gossip); delivering
    // all the deltas to fresh replicas in any two orders gives the same
    // layout, epoch and digest as merging the four nodes' views.
    #[test]
    fn any_delivery_order_converges(
        ops in proptest::collection::vec((1u64..5, arb_op()), 1..12),
        order in Just((0usize..64).collect::<Vec<_>>()).prop_shuffle(),
        other in Just((0usize..64).collect::<Vec<_>>()).prop_shuffle(),
    ) {
        let base = settled(4);
        let mut views: Vec<Layout> = vec![base.clone(); 4];
        let mut deltas = Vec::new();
        for (at, op) in &ops {
            if let Op::Hear(from) = *op {
                let heard = views[from].clone();
                views[(*at - 1) as usize].merge(&heard);
            } else if let Some(delta) = make(&mut views[(*at - 1) as usize], *at, op) {
                deltas.push(delta);
            }
        }
        let mut all = base.clone();
        for view in &views {
            all.merge(view);
        }
        for order in [&order, &other] {
            let mut replica = base.clone();
            for &i in order.iter().filter(|&&i| i < deltas.len()) {
                replica.merge(&deltas[i]);
            }
            prop_assert_eq!(&replica, &all);
            prop_assert_eq!(replica.summary(), all.summary());
        }
    }
}

// ---- gossip ----

/// Rounds until a change made at node 0 reaches all `n` nodes, when every
/// round each node trades with one random other (digest first, full
/// layouts both ways when the digests differ). Rounds are synchronous:
/// a trade sees its partners' layouts from the start of the round, the
/// slowest model. Returns (rounds, full-layout trades).
fn spread(n: u64, seed: u64) -> (u32, u32) {
    let base = settled(n);
    let mut nodes = vec![base; n as usize];
    nodes[0]
        .apply(&Change::Weight { id: 2, weight: 2.0 }, 1)
        .unwrap();
    let goal = nodes[0].digest();
    let mut rng = SplitMix64::new(seed);
    let (mut rounds, mut full) = (0, 0);
    loop {
        let digests: Vec<u64> = nodes.iter().map(Layout::digest).collect();
        if digests.iter().all(|&d| d == goal) {
            break;
        }
        rounds += 1;
        let start = nodes.clone();
        for i in 0..nodes.len() {
            let pick = (rng.next_u64() % (n - 1)) as usize;
            let j = if pick >= i { pick + 1 } else { pick };
            if digests[i] != digests[j] {
                full += 1;
                nodes[i].merge(&start[j]);
                nodes[j].merge(&start[i]);
            }
        }
        assert!(rounds < 100, "no convergence");
    }
    (rounds, full)
}

// Proves gossip spreads a change in O(log n) rounds: over 200 seeds, the
// worst case for 3, 10 and 50 nodes stays within 2·log2(n) + 2 rounds,
// and prints the mean (docs/cluster.md quotes it; run with --nocapture).
#[test]
fn gossip_spreads_a_change_in_log_n_rounds() {
    for n in [3u64, 10, 50] {
        let runs: Vec<(u32, u32)> = (0..200).map(|seed| spread(n, seed)).collect();
        let mean = f64::from(runs.iter().map(|r| r.0).sum::<u32>()) / runs.len() as f64;
        let worst = runs.iter().map(|r| r.0).max().unwrap_or(0);
        let full = f64::from(runs.iter().map(|r| r.1).sum::<u32>()) / runs.len() as f64;
        let bound = 2.0 * (n as f64).log2() + 2.0;
        println!(
            "gossip: {n} nodes: mean {mean:.2} rounds, worst {worst}, {full:.1} full-layout trades per change"
        );
        assert!(
            f64::from(worst) <= bound,
            "{n} nodes: {worst} rounds > {bound:.1}"
        );
    }
}
