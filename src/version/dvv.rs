//! Dots, version vectors and the DVV set algebra.

use smallvec::SmallVec;

/// A node's identity inside version vectors: random at data-dir creation,
/// recorded in the meta keyspace, never reused.
pub type NodeId = u64;

/// One write event: the `counter`-th write coordinated by `node` for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dot {
    /// The replica that minted the dot.
    pub node: NodeId,
    /// That replica's write counter for the key, from 1.
    pub counter: u64,
}

/// Entries a vector holds without a heap allocation. A key's context
/// names the replicas that coordinated its writes: N of them (3 by
/// default), a few more after membership changes.
const VECTOR_INLINE: usize = 4;

/// A vector's `(node, counter)` entries.
pub type VectorEntries = SmallVec<[(NodeId, u64); VECTOR_INLINE]>;

/// A set's siblings. One is held without a heap allocation: a key has one
/// sibling unless clients wrote it concurrently. Every write decodes,
/// clones and updates records, often on one thread and drops them on
/// another; held inline, none of that allocates or frees but the values'
/// handles (−9% CPU per SET, docs/benchmarks.md, session 7).
pub type Siblings<T> = SmallVec<[(Dot, T); 1]>;

/// Which versions a write supersedes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Supersedes {
    /// Every version a context covers: what a client (or the coordinator)
    /// had seen when it wrote without looking at one value (SET, VSET).
    Context(VersionVector),
    /// Exactly these siblings: a read-modify-write computed from one
    /// sibling supersedes that one (and dead ones), never a live sibling
    /// it did not compute from, which stays as a sibling.
    Dots(Vec<Dot>),
}

impl From<VersionVector> for Supersedes {
    fn from(context: VersionVector) -> Self {
        Self::Context(context)
    }
}

/// A version vector: for each node, how many of its writes have been seen.
/// Kept as a list sorted by node id with no zero entries, so that equal
/// vectors are equal structurally and encode to the same bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct VersionVector {
    entries: VectorEntries,
}

impl VersionVector {
    /// The empty vector (nothing seen).
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a vector from `(node, counter)` pairs in any order; repeated
    /// nodes keep their largest counter and zero counters are dropped.
    pub fn from_entries(pairs: impl IntoIterator<Item = (NodeId, u64)>) -> Self {
        let mut vector = Self::new();
        for (node, counter) in pairs {
            vector.witness(node, counter);
        }
        vector
    }

    /// A vector of entries already as [`VersionVector::entries`] keeps
    /// them (nodes strictly increasing, no zero counter) without sorting;
    /// other entries come back as they were.
    ///
    /// # Errors
    /// The entries, unchanged, when they are not in that form.
    pub fn from_sorted(entries: VectorEntries) -> Result<Self, VectorEntries> {
        let canonical =
            entries.iter().all(|e| e.1 > 0) && entries.windows(2).all(|w| w[0].0 < w[1].0);
        if canonical {
            Ok(Self { entries })
        } else {
            Err(entries)
        }
    }

    /// The `(node, counter)` entries, sorted by node.
    pub fn entries(&self) -> &[(NodeId, u64)] {
        &self.entries
    }

    /// Whether nothing has been seen.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes of `node` seen.
    pub fn get(&self, node: NodeId) -> u64 {
        match self.entries.binary_search_by_key(&node, |e| e.0) {
            Ok(i) => self.entries[i].1,
            Err(_) => 0,
        }
    }

    /// Whether the write `dot` has been seen.
    pub fn covers(&self, dot: Dot) -> bool {
        dot.counter <= self.get(dot.node)
    }

    /// Records that the first `counter` writes of `node` have been seen.
    pub fn witness(&mut self, node: NodeId, counter: u64) {
        if counter == 0 {
            return;
        }
        match self.entries.binary_search_by_key(&node, |e| e.0) {
            Ok(i) => self.entries[i].1 = self.entries[i].1.max(counter),
            Err(i) => self.entries.insert(i, (node, counter)),
        }
    }

    /// Pointwise maximum with `other`.
    pub fn join(&mut self, other: &VersionVector) {
        for &(node, counter) in &other.entries {
            self.witness(node, counter);
        }
    }

    /// Whether this vector has seen everything `other` has.
    pub fn descends(&self, other: &VersionVector) -> bool {
        other
            .entries
            .iter()
            .all(|&(node, counter)| self.get(node) >= counter)
    }
}

/// The versioned state of one key: a context and its concurrent siblings.
///
/// Invariants (checked in debug builds): siblings are sorted by dot with no
/// dot twice, and the context covers every sibling's dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DvvSet<T> {
    context: VersionVector,
    siblings: Siblings<T>,
}

impl<T> Default for DvvSet<T> {
    fn default() -> Self {
        Self {
            context: VersionVector::new(),
            siblings: Siblings::new(),
        }
    }
}

impl<T: Clone> DvvSet<T> {
    /// The empty set: nothing seen, no siblings.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a set from its parts (used by decoders).
    ///
    /// Returns `None` when the parts break the invariants: a sibling the
    /// context does not cover, or a dot twice.
    pub fn from_parts(context: VersionVector, mut siblings: Siblings<T>) -> Option<Self> {
        siblings.sort_by_key(|s| s.0);
        let unique = siblings.windows(2).all(|w| w[0].0 != w[1].0);
        let covered = siblings.iter().all(|s| context.covers(s.0));
        (unique && covered).then_some(Self { context, siblings })
    }

    /// Everything this set has seen: what VGET hands to the client.
    pub fn context(&self) -> &VersionVector {
        &self.context
    }

    /// The live siblings, sorted by dot.
    pub fn siblings(&self) -> &[(Dot, T)] {
        &self.siblings
    }

    /// Whether the set holds no siblings (it may still have a context).
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty()
    }

    /// A write of `value` coordinated by `node`, by a client that had seen
    /// `context`: drops every sibling the context covers, mints the next dot
    /// of `node` and adds the value under it. Siblings the client had not
    /// seen stay, so two writes from one context leave two siblings.
    ///
    /// Only a replica of the key may call this with its own id (dots are
    /// minted by replicas, docs/cluster.md); `self` must be its local state.
    pub fn update(&mut self, context: &VersionVector, node: NodeId, value: T) -> Dot {
        self.discard(context);
        self.mint(node, 0, value)
    }

    /// Adds `value` under the next dot of `node`: one past every counter
    /// of `node` this set's context has seen (which covers the writer's
    /// context once it is joined), and at least `floor` (a node's counter
    /// for every key: `replica::dots`).
    fn mint(&mut self, node: NodeId, floor: u64, value: T) -> Dot {
        let counter = (self.context.get(node) + 1).max(floor);
        let dot = Dot { node, counter };
        self.context.witness(node, counter);
        // The new dot is greater than every dot of `node` present, so it
        // sorts after them; binary search keeps the order for other nodes.
        let at = self.siblings.partition_point(|s| s.0 < dot);
        self.siblings.insert(at, (dot, value));
        self.check();
        dot
    }

    /// A write of `value` coordinated by `node` superseding `supersedes`:
    /// [`DvvSet::update`] for a context; for dots, drops exactly those
    /// siblings and mints the next dot of `node`. The set's context
    /// already covers the dropped dots (they were its siblings), so a
    /// replica that still holds one drops it when it syncs this set, and
    /// one that holds a sibling kept here keeps it.
    pub fn supersede(&mut self, supersedes: &Supersedes, node: NodeId, value: T) -> Dot {
        self.supersede_from(supersedes, node, 0, value)
    }

    /// [`DvvSet::supersede`] with the new dot's counter at least `floor`.
    pub fn supersede_from(
        &mut self,
        supersedes: &Supersedes,
        node: NodeId,
        floor: u64,
        value: T,
    ) -> Dot {
        match supersedes {
            Supersedes::Context(context) => {
                self.discard(context);
                self.mint(node, floor, value)
            }
            Supersedes::Dots(dots) => {
                self.siblings.retain(|s| !dots.contains(&s.0));
                self.mint(node, floor, value)
            }
        }
    }

    /// Drops the siblings `context` covers and joins it into this set's
    /// context.
    pub fn discard(&mut self, context: &VersionVector) {
        self.siblings.retain(|s| !context.covers(s.0));
        self.context.join(context);
    }

    /// Merges `other` into this set (DVV sync): a sibling survives if both
    /// sides hold it or if the side without it has not seen its dot.
    /// Commutative, associative and idempotent.
    pub fn sync(&mut self, other: &DvvSet<T>) {
        let (mine, theirs) = (&self.siblings, &other.siblings);
        let mut merged = Siblings::with_capacity(mine.len() + theirs.len());
        let (mut i, mut j) = (0, 0);
        loop {
            match (mine.get(i), theirs.get(j)) {
                (None, None) => break,
                (Some(a), Some(b)) if a.0 == b.0 => {
                    merged.push(a.clone());
                    (i, j) = (i + 1, j + 1);
                }
                (Some(a), b) if b.is_none_or(|b| a.0 < b.0) => {
                    if !other.context.covers(a.0) {
                        merged.push(a.clone());
                    }
                    i += 1;
                }
                (_, b) => {
                    // `b` is Some here: the arms above took every case
                    // where it is None.
                    if let Some(b) = b.filter(|b| !self.context.covers(b.0)) {
                        merged.push(b.clone());
                    }
                    j += 1;
                }
            }
        }
        self.siblings = merged;
        self.context.join(&other.context);
        self.check();
    }

    /// Whether this set already holds everything in `other`, so that syncing
    /// `other` into it would change nothing.
    pub fn covers_set(&self, other: &DvvSet<T>) -> bool
    where
        T: PartialEq,
    {
        self.context.descends(&other.context)
            && self
                .siblings
                .iter()
                .all(|s| !other.context.covers(s.0) || other.siblings.iter().any(|o| o.0 == s.0))
    }

    /// Drops the siblings whose value fails `keep`, leaving the context as
    /// it is: the dropped dots count as seen and superseded (expiry).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.siblings.retain(|(_, value)| keep(value));
    }

    /// Keeps at most `max` siblings (at least one), dropping those that
    /// sort lowest by `order` — last writer wins among the overflow. The
    /// context still covers the dropped dots, so replicas that see them
    /// later drop them too. Returns how many were dropped.
    pub fn bound<K: Ord>(&mut self, max: usize, order: impl Fn(&Dot, &T) -> K) -> usize {
        let max = max.max(1);
        let excess = self.siblings.len().saturating_sub(max);
        if excess == 0 {
            return 0;
        }
        let mut ranked: Vec<(K, Dot)> = self
            .siblings
            .iter()
            .map(|(d, v)| (order(d, v), *d))
            .collect();
        ranked.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let dropped: Vec<Dot> = ranked.into_iter().take(excess).map(|r| r.1).collect();
        self.siblings.retain(|s| !dropped.contains(&s.0));
        excess
    }

    /// The sibling that sorts highest by `order`, ties broken by dot.
    pub fn winner<K: Ord>(&self, order: impl Fn(&Dot, &T) -> K) -> Option<&(Dot, T)> {
        self.siblings.iter().max_by(|a, b| {
            order(&a.0, &a.1)
                .cmp(&order(&b.0, &b.1))
                .then(a.0.cmp(&b.0))
        })
    }

    /// Whether the set holds its context and siblings without a heap
    /// allocation.
    #[cfg(test)]
    pub(crate) fn is_inline(&self) -> bool {
        !self.siblings.spilled() && !self.context.entries.spilled()
    }

    fn check(&self) {
        debug_assert!(self.siblings.windows(2).all(|w| w[0].0 < w[1].0));
        debug_assert!(self.siblings.iter().all(|s| self.context.covers(s.0)));
    }
}
