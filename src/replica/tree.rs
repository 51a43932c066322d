//! Anti-entropy trees, kept up to date as records are committed
//! (docs/cluster.md, "Anti-entropy"), in the manner of Riak's Tictac AAE:
//! per partition, [`AAE_SEGMENTS`] segment hashes, each the XOR of the
//! leaves of the keys in it. A key's leaf hashes its storage key and its
//! record's causal context, not its value: two replicas holding the same
//! DVV set agree, and reaping an expired value (which keeps the context)
//! changes nothing. XOR lets a commit update a segment by taking the old
//! leaf out and putting the new one in, with no re-read of the range; a
//! key with no record has no leaf (0, XOR's identity).
//!
//! Memory: Q × [`AAE_SEGMENTS`] × 8 bytes (1 MiB at Q = 4096), whatever
//! the data. The trees are rebuilt by a scan when a store opens after a
//! crash; a clean shutdown saves them (see [`Trees::encode`]).

use crate::limits::AAE_SEGMENTS;
use crate::model::record::Record;
use crate::storage::split_storage_key;
use std::sync::atomic::{AtomicU64, Ordering};
use xxhash_rust::xxh3::{Xxh3, xxh3_64_with_seed};

/// The seed of the hash that places a key in a segment: not the one that
/// placed it in a partition, or every key of a partition would share
/// bits of it.
const SEGMENT_SEED: u64 = 0x6161_655f_7365_676d;

/// The segment of a storage key within its partition.
pub fn segment_of(skey: &[u8]) -> u16 {
    (xxh3_64_with_seed(skey, SEGMENT_SEED) % AAE_SEGMENTS as u64) as u16
}

/// A hash of a record's causal context: what its leaf is made of.
pub fn context_hash(record: &Record) -> u64 {
    let mut context = Xxh3::new();
    for (node, counter) in record.context().entries() {
        context.update(&node.to_be_bytes());
        context.update(&counter.to_be_bytes());
    }
    context.digest()
}

/// A key's leaf from its record's [`context_hash`]: 0 with no record.
pub fn leaf_of(skey: &[u8], context: Option<u64>) -> u64 {
    context.map_or(0, |context| xxh3_64_with_seed(skey, context))
}

/// A key's leaf: 0 with no record.
pub fn leaf(skey: &[u8], record: Option<&Record>) -> u64 {
    leaf_of(skey, record.map(context_hash))
}

/// Where a storage key's leaf is: its partition and segment.
pub fn place_of(skey: &[u8]) -> Option<(u16, u16)> {
    let (partition, _) = split_storage_key(skey)?;
    Some((partition, segment_of(skey)))
}

/// One hash per partition standing for its segments: equal segments,
/// equal roots.
fn root_of(segments: &[AtomicU64]) -> u64 {
    let mut hasher = Xxh3::new();
    for segment in segments {
        hasher.update(&segment.load(Ordering::Relaxed).to_be_bytes());
    }
    hasher.digest()
}

/// The indexes where two lists of hashes differ (a missing one differs).
pub fn differing(ours: &[u64], theirs: &[u64]) -> Vec<usize> {
    (0..ours.len().max(theirs.len()))
        .filter(|&i| ours.get(i) != theirs.get(i))
        .collect()
}

/// Keys with their leaves, as `(key, leaf)`.
pub type Leaves = Vec<(bytes::Bytes, u64)>;

/// The version byte of [`Trees::encode`].
const TREES_FORMAT: u8 = 1;

/// Every partition's segments of this node's replica. Updated by
/// concurrent commits without a lock: XOR commutes, so the order of two
/// commits' updates does not matter.
pub struct Trees {
    partitions: u32,
    segments: Box<[AtomicU64]>,
}

impl Trees {
    /// Empty trees (no keys) for Q partitions.
    pub fn new(partitions: u32) -> Self {
        let len = partitions as usize * AAE_SEGMENTS;
        Self {
            partitions,
            segments: (0..len).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Takes `xor` (the old leaf XOR the new) into a segment ([`place_of`]).
    pub fn toggle_at(&self, (partition, segment): (u16, u16), xor: u64) {
        let slot = usize::from(partition) * AAE_SEGMENTS + usize::from(segment);
        if xor != 0
            && u32::from(partition) < self.partitions
            && let Some(segment) = self.segments.get(slot)
        {
            segment.fetch_xor(xor, Ordering::Relaxed);
        }
    }

    /// Takes `xor` into the storage key's segment.
    pub fn toggle(&self, skey: &[u8], xor: u64) {
        if let Some(place) = place_of(skey) {
            self.toggle_at(place, xor);
        }
    }

    fn of(&self, partition: u16) -> &[AtomicU64] {
        let start = usize::from(partition) * AAE_SEGMENTS;
        self.segments
            .get(start..start + AAE_SEGMENTS)
            .unwrap_or_default()
    }

    /// The partition's root ([`root_of`]); 0 for a partition past Q.
    pub fn root(&self, partition: u16) -> u64 {
        let segments = self.of(partition);
        if segments.is_empty() {
            0
        } else {
            root_of(segments)
        }
    }

    /// The partition's segments (none past Q).
    pub fn segments(&self, partition: u16) -> Vec<u64> {
        self.of(partition)
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect()
    }

    /// Forgets every key: the caller rebuilds from the store.
    pub fn clear(&self) {
        for segment in &self.segments {
            segment.store(0, Ordering::Relaxed);
        }
    }

    /// The trees as saved by a clean shutdown: the format byte
    /// ([`TREES_FORMAT`]), Q as u32 and the segments per partition as u16
    /// (both big-endian), then every segment as a big-endian u64,
    /// partition by partition.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(7 + self.segments.len() * 8);
        out.push(TREES_FORMAT);
        out.extend(self.partitions.to_be_bytes());
        out.extend((AAE_SEGMENTS as u16).to_be_bytes());
        for segment in &self.segments {
            out.extend(segment.load(Ordering::Relaxed).to_be_bytes());
        }
        out
    }

    /// Loads what [`Trees::encode`] saved; `false` (and nothing loaded)
    /// for bytes of another format, Q or shape: then the caller scans.
    pub fn load(&self, bytes: &[u8]) -> bool {
        let Some((&format, rest)) = bytes.split_first() else {
            return false;
        };
        let Some((q, rest)) = rest.split_first_chunk::<4>() else {
            return false;
        };
        let Some((segments, rest)) = rest.split_first_chunk::<2>() else {
            return false;
        };
        let fits = format == TREES_FORMAT
            && u32::from_be_bytes(*q) == self.partitions
            && usize::from(u16::from_be_bytes(*segments)) == AAE_SEGMENTS
            && rest.len() == self.segments.len() * 8;
        if !fits {
            return false;
        }
        for (segment, bytes) in self.segments.iter().zip(rest.chunks_exact(8)) {
            let mut word = [0; 8];
            word.copy_from_slice(bytes);
            segment.store(u64::from_be_bytes(word), Ordering::Relaxed);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::Sibling;
    use crate::storage::storage_key;
    use crate::version::{Dot, VersionVector};
    use bytes::Bytes;

    fn record(context: &[(u64, u64)], value: &'static [u8]) -> Record {
        let (node, counter) = context[0];
        let sibling = (
            Dot { node, counter },
            Sibling::value(Bytes::from_static(value), 1),
        );
        let context = VersionVector::from_entries(context.iter().copied());
        Record::from_parts(context, std::iter::once(sibling).collect()).expect("covered")
    }

    // Proves a leaf depends on the context, not the value, and that
    // taking a leaf out of its segment restores the tree: XOR's identity.
    #[test]
    fn leaves_follow_the_context_and_toggle_out() {
        let key = storage_key(3, b"k");
        let a = record(&[(1, 1)], b"a");
        let other_value = record(&[(1, 1)], b"b");
        assert_eq!(leaf(&key, Some(&a)), leaf(&key, Some(&other_value)));
        let b = record(&[(1, 2)], b"a");
        assert_ne!(leaf(&key, Some(&a)), leaf(&key, Some(&b)));
        assert_eq!(leaf(&key, None), 0);

        let trees = Trees::new(8);
        let empty = trees.root(3);
        trees.toggle(&key, leaf(&key, Some(&a)));
        assert_ne!(trees.root(3), empty);
        assert_eq!(trees.root(2), Trees::new(8).root(2));
        trees.toggle(&key, leaf(&key, Some(&a)) ^ leaf(&key, Some(&b)));
        trees.toggle(&key, leaf(&key, Some(&b)));
        assert_eq!(trees.root(3), empty);
    }

    // Proves what a clean shutdown saves loads back whole, and bytes of
    // another Q are refused.
    #[test]
    fn trees_load_what_they_saved() {
        let trees = Trees::new(4);
        trees.toggle(&storage_key(1, b"x"), 42);
        let saved = trees.encode();
        let loaded = Trees::new(4);
        assert!(loaded.load(&saved));
        assert_eq!(loaded.segments(1), trees.segments(1));
        assert!(!Trees::new(8).load(&saved));
        assert!(!Trees::new(4).load(&saved[..saved.len() - 1]));
    }

    #[test]
    fn differing_lists_the_indexes_that_differ() {
        assert_eq!(differing(&[1, 2, 3], &[1, 5, 3]), vec![1]);
        assert_eq!(differing(&[1], &[1, 2]), vec![1]);
        assert!(differing(&[], &[]).is_empty());
    }
}
