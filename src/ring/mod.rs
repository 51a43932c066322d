//! Placement, pure: key → partition → preference list.
//!
//! Keys hash onto Q fixed partitions (Q a power of two, fixed when a data
//! directory is created). Each partition's replicas come from weighted
//! rendezvous hashing (HRW) over the members: every member gets a score
//! `-weight / ln(u)` with `u` a uniform hash of (member id, partition), and
//! the partition's preference list is the members in descending score. The
//! first N distinct members (spread over zones when zones are given) hold
//! the partition; the rest, in order, are its fallbacks for the sloppy
//! quorum. Because a member's score does not depend on the other members,
//! adding a member only inserts it into each ranking: partitions move only
//! to the new member, never between old ones, and removing a member moves
//! only its own partitions.
//!
//! The hashes are fixed forever: they decide where every stored key lives.

use crate::version::NodeId;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The partition of `key` among `partitions` (Q, a power of two).
pub fn partition_of(key: &[u8], partitions: u32) -> u16 {
    debug_assert!(partitions.is_power_of_two() && partitions <= 1 << 16);
    (xxh3_64(key) & u64::from(partitions - 1)) as u16
}

/// What placement needs to know of a member.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    /// The member's id.
    pub id: NodeId,
    /// Its capacity weight (> 0).
    pub weight: f64,
    /// Its failure zone, if any.
    pub zone: Option<String>,
}

/// The HRW score of `member` for `partition`: higher ranks first.
fn score(member: &Placed, partition: u16) -> f64 {
    let hash = xxh3_64_with_seed(&member.id.to_le_bytes(), u64::from(partition));
    // A uniform u in (0, 1): 53 random bits, offset by half a step.
    let u = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -member.weight / u.ln()
}

/// The members ranked for `partition`: the first `n` after zone spreading
/// are its replicas (see [`preference_list`]); this is the raw HRW order.
pub fn ranking(members: &[Placed], partition: u16) -> Vec<NodeId> {
    let mut scored: Vec<(f64, NodeId)> = members
        .iter()
        .map(|m| (score(m, partition), m.id))
        .collect();
    // Ties (practically impossible) break by id so every node agrees.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, id)| id).collect()
}

/// The preference list of `partition`: every member, replicas first. The
/// first `n` (at most the member count) are the replicas: in HRW order,
/// but skipping a member whose zone already holds a replica while members
/// of unused zones remain; the rest follow in HRW order as fallbacks.
pub fn preference_list(members: &[Placed], partition: u16, n: usize) -> Vec<NodeId> {
    let ranked = ranking(members, partition);
    let zone_of = |id: NodeId| {
        members
            .iter()
            .find(|m| m.id == id)
            .and_then(|m| m.zone.as_deref())
    };
    let zones: std::collections::BTreeSet<&str> =
        members.iter().filter_map(|m| m.zone.as_deref()).collect();
    let n = n.min(ranked.len());
    if zones.len() < 2 {
        return ranked;
    }
    let mut replicas: Vec<NodeId> = Vec::with_capacity(n);
    let mut used: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    // First pass: one replica per zone, best-ranked first.
    for &id in &ranked {
        if replicas.len() == n {
            break;
        }
        if let Some(zone) = zone_of(id)
            && used.insert(zone)
        {
            replicas.push(id);
        }
    }
    // Then fill from the ranking.
    for &id in &ranked {
        if replicas.len() == n {
            break;
        }
        if !replicas.contains(&id) {
            replicas.push(id);
        }
    }
    replicas.sort_by_key(|id| ranked.iter().position(|r| r == id));
    let fallbacks: Vec<NodeId> = ranked
        .iter()
        .copied()
        .filter(|id| !replicas.contains(id))
        .collect();
    replicas.extend(fallbacks);
    replicas
}

/// A ring: the members and Q, with each partition's preference list
/// computed once.
#[derive(Debug, Clone, PartialEq)]
pub struct Ring {
    partitions: u32,
    replicas: usize,
    members: Vec<Placed>,
    /// Every partition's preference list (all members), one after the
    /// other in one allocation: placing a key reads one cache line, not a
    /// list's header and then its heap.
    lists: Vec<NodeId>,
}

impl Ring {
    /// Places `partitions` partitions over `members` with `replicas` (N)
    /// replicas each.
    pub fn new(mut members: Vec<Placed>, partitions: u32, replicas: usize) -> Self {
        members.sort_by_key(|m| m.id);
        members.dedup_by_key(|m| m.id);
        let lists = (0..partitions)
            .flat_map(|p| preference_list(&members, p as u16, replicas))
            .collect();
        Self {
            partitions,
            replicas,
            members,
            lists,
        }
    }

    /// Q.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The effective N: replicas per partition, capped at the member count.
    pub fn replicas(&self) -> usize {
        self.replicas.min(self.members.len()).max(1)
    }

    /// The members, by id.
    pub fn members(&self) -> &[Placed] {
        &self.members
    }

    /// All members of `partition` in preference order: the first
    /// [`Ring::replicas`] are its replicas, the rest its fallbacks.
    pub fn preference(&self, partition: u16) -> &[NodeId] {
        let len = self.members.len();
        let at = usize::from(partition) * len;
        self.lists.get(at..at + len).unwrap_or(&[])
    }

    /// The replicas of `partition`.
    pub fn replicas_of(&self, partition: u16) -> &[NodeId] {
        let list = self.preference(partition);
        &list[..self.replicas().min(list.len())]
    }

    /// Partitions for which `node` is the first replica, and for which it
    /// is any replica.
    pub fn owned(&self, node: NodeId) -> (usize, usize) {
        let mut primary = 0;
        let mut replica = 0;
        for p in 0..self.partitions {
            let replicas = self.replicas_of(p as u16);
            primary += usize::from(replicas.first() == Some(&node));
            replica += usize::from(replicas.contains(&node));
        }
        (primary, replica)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(n: u64) -> Vec<Placed> {
        (1..=n)
            .map(|i| Placed {
                id: xxh3_64(&i.to_le_bytes()),
                weight: 1.0,
                zone: None,
            })
            .collect()
    }

    #[test]
    fn partition_hash_is_pinned() {
        // Changing these moves stored keys: never update them casually.
        assert_eq!(partition_of(b"foo", 4096), (xxh3_64(b"foo") & 4095) as u16);
        assert_eq!(partition_of(b"", 1), 0);
        let spread: std::collections::HashSet<u16> = (0..10_000u32)
            .map(|i| partition_of(&i.to_be_bytes(), 64))
            .collect();
        assert_eq!(spread.len(), 64);
    }

    #[test]
    fn placement_is_pinned() {
        // Golden: the HRW order of a fixed membership for partition 0.
        let ring = Ring::new(members(3), 8, 3);
        let again = Ring::new(members(3).into_iter().rev().collect(), 8, 3);
        assert_eq!(ring, again);
        assert_eq!(ring.replicas_of(0).len(), 3);
    }

    /// Share of replica-partitions and primaries per node, as fractions of fair.
    fn shares(ring: &Ring) -> Vec<(f64, f64)> {
        let n = ring.members().len() as f64;
        let q = f64::from(ring.partitions());
        let r = ring.replicas() as f64;
        ring.members()
            .iter()
            .map(|m| {
                let (primary, replica) = ring.owned(m.id);
                (primary as f64 / (q / n), replica as f64 / (q * r / n))
            })
            .collect()
    }

    #[test]
    fn balanced_within_ten_percent_at_the_default_q() {
        for n in 3..=10 {
            let ring = Ring::new(members(n), crate::limits::PARTITIONS_DEFAULT, 3);
            for (primary, replica) in shares(&ring) {
                assert!(
                    (primary - 1.0).abs() <= 0.10,
                    "{n} nodes: primary share {primary:.3}"
                );
                assert!(
                    (replica - 1.0).abs() <= 0.10,
                    "{n} nodes: replica share {replica:.3}"
                );
            }
        }
    }

    #[test]
    fn weight_two_gets_twice_the_primaries() {
        let mut m = members(4);
        m[0].weight = 2.0;
        let heavy = m[0].id;
        let ring = Ring::new(m, crate::limits::PARTITIONS_DEFAULT, 3);
        let heavy_primaries = ring.owned(heavy).0 as f64;
        let others: Vec<f64> = ring
            .members()
            .iter()
            .filter(|x| x.id != heavy)
            .map(|x| ring.owned(x.id).0 as f64)
            .collect();
        let light = others.iter().sum::<f64>() / others.len() as f64;
        let ratio = heavy_primaries / light;
        assert!((ratio - 2.0).abs() <= 0.3, "weight-2 node gets {ratio:.2}x");
    }

    #[test]
    fn zones_spread_replicas() {
        let mut m = members(6);
        for (i, member) in m.iter_mut().enumerate() {
            member.zone = Some(format!("z{}", i % 3));
        }
        let zone = |id: NodeId| m.iter().find(|x| x.id == id).and_then(|x| x.zone.clone());
        let ring = Ring::new(m.clone(), 256, 3);
        for p in 0..256u16 {
            let zones: std::collections::BTreeSet<_> =
                ring.replicas_of(p).iter().map(|&id| zone(id)).collect();
            assert_eq!(zones.len(), 3, "partition {p}");
        }
    }

    // Proves the ring's lists, laid out one after another, are each
    // partition's preference list: every member once, replicas first,
    // with zones and without, and none past the last partition.
    #[test]
    fn every_partition_lists_every_member_in_preference_order() {
        for n in 1..=7 {
            let mut zoned = members(n);
            for (i, member) in zoned.iter_mut().enumerate() {
                member.zone = Some(format!("z{}", i % 2));
            }
            for m in [members(n), zoned] {
                let ring = Ring::new(m.clone(), 64, 3);
                for p in 0..64u16 {
                    let list = ring.preference(p);
                    assert_eq!(
                        list,
                        preference_list(&m, p, 3),
                        "{n} members, partition {p}"
                    );
                    let distinct: std::collections::BTreeSet<_> = list.iter().collect();
                    assert_eq!(distinct.len(), m.len(), "{n} members, partition {p}");
                }
                assert!(ring.preference(64).is_empty());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        // Deterministic, and a join moves only partitions the new node
        // gains; a leave moves only the leaver's. (1–20 nodes, Q = 256.)
        #[test]
        fn joins_and_leaves_move_only_what_they_must(n in 1u64..20, replicas in 1usize..4) {
            let before = Ring::new(members(n), 256, replicas);
            prop_assert_eq!(&before, &Ring::new(members(n), 256, replicas));
            let after = Ring::new(members(n + 1), 256, replicas);
            let newcomer = members(n + 1)[n as usize].id;
            for p in 0..256u16 {
                let old = before.replicas_of(p);
                let new = after.replicas_of(p);
                // Every old member still placed here was placed here before.
                for id in new.iter().filter(|&&id| id != newcomer) {
                    prop_assert!(old.contains(id), "partition {} moved between old nodes", p);
                }
                // Whatever left the list was displaced by the newcomer.
                if !new.contains(&newcomer) {
                    prop_assert_eq!(old, new);
                }
                // Leaving is the same change in reverse.
            }
        }
    }
}
