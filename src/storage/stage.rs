//! Writes on their way into fjall (pure: no I/O): every op of a store
//! batch, to the data keyspace, the expiry index and the hints alike.
//!
//! A write into fjall's memtable is a skiplist insert: at a random key,
//! a walk of cache misses that also evicts what the rest of the write path
//! had cached. So the fjall store writes neither keyspace there. Each
//! batch becomes one entry of the store's one write-ahead log (a file per
//! generation: `stage_log`), and its ops go into a [`Generation`]: data
//! records into hash maps (one per partition), expiry-index entries and
//! hints into ordered maps; reads and scans look at both until they reach fjall. A
//! full generation is sorted and ingested into the two keyspaces as
//! tables, bypassing the memtables, and its log file is deleted. A batch
//! is thus in one place until it is ingested: its log entry, replayed
//! whole or not at all.
//!
//! On a 3-node cluster (SET -d 100 -P 16, `benches/ab.sh`, 1,000,000 SETs,
//! 5 rounds) this took 16.3 µs of node CPU per SET against 22.8 with the
//! memtable (docs/benchmarks.md, session 9; measured again against one
//! fjall batch per store batch in "One write-ahead log").
//!
//! Log entry, format version 2: every op of a batch, so that an expiry
//! index entry is recovered with its record, as the batch applied them.
//!
//! ```text
//! byte 0        format version (2)
//! then, per op  byte keyspace: 0 (data), 1 (expiry) or 2 (hints, from
//!               data format 5 on),
//!               varint key length, key bytes,
//!               byte 0 (delete) or 1 (put),
//!               [varint value length, value bytes]   if put
//! ```
//!
//! Version 1 (data ops only, no keyspace byte) was written only to the
//! log keyspaces of data directories of format 2, which this release
//! refuses (`super::DATA_FORMATS_READ`); it is no longer read.

use super::slot_key::SlotKey;
use super::{BatchOp, Entries, Space};
use crate::wire::{DecodeError, Reader, put_varint, varint_len};
use bytes::Bytes;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

/// The log entry format this build writes and reads.
const LOG_FORMAT: u8 = 2;

const SPACE_DATA: u8 = 0;
const SPACE_EXPIRY: u8 = 1;
const SPACE_HINTS: u8 = 2;

const OP_DELETE: u8 = 0;
const OP_PUT: u8 = 1;

/// Longest key and value a log entry may hold: fjall's own limits.
const LOG_KEY_BYTES_MAX: usize = u16::MAX as usize;
const LOG_VALUE_BYTES_MAX: usize = u32::MAX as usize;

/// What a generation costs beyond its keys' and values' bytes per entry
/// (the map slot, which holds keys up to 30 bytes itself), counted
/// against its size limit.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// Appends `ops` to `out` as one log entry.
pub fn encode_log(ops: &[BatchOp], out: &mut Vec<u8>) {
    let len = 1 + ops
        .iter()
        .map(|op| {
            let value = op
                .value
                .as_ref()
                .map_or(0, |v| varint_len(v.len() as u64) + v.len());
            1 + varint_len(op.key.len() as u64) + op.key.len() + 1 + value
        })
        .sum::<usize>();
    out.reserve(len);
    out.push(LOG_FORMAT);
    for op in ops {
        out.push(match op.space {
            Space::Data => SPACE_DATA,
            Space::Expiry => SPACE_EXPIRY,
            Space::Hints => SPACE_HINTS,
        });
        put_varint(out, op.key.len() as u64);
        out.extend_from_slice(&op.key);
        match &op.value {
            Some(value) => {
                out.push(OP_PUT);
                put_varint(out, value.len() as u64);
                out.extend_from_slice(value);
            }
            None => out.push(OP_DELETE),
        }
    }
}

/// The ops of one log entry, in order.
///
/// # Errors
/// [`DecodeError`] when the entry is malformed.
pub fn decode_log(entry: &[u8]) -> Result<Vec<BatchOp>, DecodeError> {
    let mut reader = Reader::new(entry);
    match reader.u8()? {
        LOG_FORMAT => {}
        found => return Err(DecodeError::UnknownVersion { found }),
    }
    let mut ops = Vec::new();
    while reader.remaining() > 0 {
        let space = match reader.u8()? {
            SPACE_DATA => Space::Data,
            SPACE_EXPIRY => Space::Expiry,
            SPACE_HINTS => Space::Hints,
            _ => {
                return Err(DecodeError::Malformed {
                    what: "log keyspace",
                });
            }
        };
        let len = reader.count("log key length", LOG_KEY_BYTES_MAX)?;
        let key = reader.bytes(len)?.to_vec();
        let value = match reader.u8()? {
            OP_PUT => {
                let len = reader.count("log value length", LOG_VALUE_BYTES_MAX)?;
                Some(Bytes::copy_from_slice(reader.bytes(len)?))
            }
            OP_DELETE => None,
            _ => return Err(DecodeError::Malformed { what: "log op" }),
        };
        ops.push(BatchOp { space, key, value });
    }
    Ok(ops)
}

type Shard = HashMap<SlotKey, Option<Bytes>, Xxh3DefaultBuilder>;

type Ordered = BTreeMap<Vec<u8>, Option<Bytes>>;

/// Where a keyspace kept in order is in [`Generation`]'s ordered maps
/// (the data keyspace is not: it is in shards).
fn ordered_index(space: Space) -> usize {
    match space {
        Space::Data | Space::Expiry => 0,
        Space::Hints => 1,
    }
}

/// The shard of `key`: its first two bytes (a storage key's partition),
/// 0 for a missing one. Key order never decreases it, so the keys of a
/// range are in the shards between its ends' shards.
fn shard_of(key: &[u8]) -> u16 {
    u16::from_be_bytes([
        key.first().copied().unwrap_or(0),
        key.get(1).copied().unwrap_or(0),
    ])
}

/// Ops applied since the last ingestion: data records by storage key in
/// hash maps, one per partition (shard), so that a write is a hash
/// insert and a scan of a partition looks at that partition's keys only;
/// expiry-index entries and hints in ordered maps, as the reaper and the
/// hint replay read them in order from a cursor (their keys start with a
/// time or a node id, so they would all fall in a few shards). Each holds
/// a value, or `None` for a delete.
#[derive(Debug, Default)]
pub struct Generation {
    /// Its number: its log file's.
    pub number: u64,
    /// Data records, indexed by [`shard_of`]: 65,536 maps (3 MiB of
    /// empty ones), made at the first write.
    shards: Vec<Shard>,
    /// Expiry-index entries, then hints (see [`ordered_index`]).
    ordered: [Ordered; 2],
    /// Keys held, in all.
    len: usize,
    bytes: usize,
    /// Entries a shard has room for when first written: what the
    /// previous generation held per shard. Growing a map one doubling at
    /// a time rehashed every entry again and again: 3% of node CPU.
    shard_capacity: usize,
}

impl Generation {
    /// An empty generation numbered `number`.
    pub fn new(number: u64) -> Self {
        Self {
            number,
            ..Self::default()
        }
    }

    /// The next generation, sized for as many writes per shard as this one.
    pub fn successor(&self) -> Self {
        let shards_used = self.shards.iter().filter(|shard| !shard.is_empty()).count();
        let data_len = self.len - self.ordered_len();
        Self {
            number: self.number + 1,
            shard_capacity: data_len.div_ceil(shards_used.max(1)),
            ..Self::default()
        }
    }

    /// Records `op`, replacing what the generation held for its key in
    /// its keyspace.
    pub fn apply(&mut self, op: &BatchOp) {
        let key = &op.key[..];
        let (replaced, added) = match op.space {
            Space::Data => self.put_data(key, op.value.clone()),
            Space::Expiry | Space::Hints => {
                let map = &mut self.ordered[ordered_index(op.space)];
                match map.get_mut(key) {
                    Some(held) => (Some(std::mem::replace(held, op.value.clone())), false),
                    None => {
                        map.insert(key.to_vec(), op.value.clone());
                        (None, true)
                    }
                }
            }
        };
        if added {
            self.bytes += key.len() + ENTRY_OVERHEAD_BYTES;
            self.len += 1;
        }
        self.bytes -= replaced.flatten().map_or(0, |v| v.len());
        self.bytes += op.value.as_ref().map_or(0, Bytes::len);
    }

    /// Puts a data record; returns what it replaced and whether its key
    /// is new.
    fn put_data(&mut self, key: &[u8], value: Option<Bytes>) -> (Option<Option<Bytes>>, bool) {
        if self.shards.is_empty() {
            self.shards
                .resize_with(usize::from(u16::MAX) + 1, Shard::default);
        }
        let shard = &mut self.shards[usize::from(shard_of(key))];
        if shard.capacity() == 0 {
            shard.reserve(self.shard_capacity);
        }
        match shard.entry(SlotKey::new(key)) {
            Entry::Occupied(mut held) => (Some(held.insert(value)), false),
            Entry::Vacant(slot) => {
                slot.insert(value);
                (None, true)
            }
        }
    }

    /// What the generation holds for `key` in `space`: `None` if nothing,
    /// `Some(None)` if a delete.
    pub fn get(&self, space: Space, key: &[u8]) -> Option<Option<&Bytes>> {
        match space {
            Space::Data => {
                let shard = self.shards.get(usize::from(shard_of(key)))?;
                shard.get(key).map(Option::as_ref)
            }
            Space::Expiry | Space::Hints => self.ordered[ordered_index(space)]
                .get(key)
                .map(Option::as_ref),
        }
    }

    /// Bytes held (keys, values and [`ENTRY_OVERHEAD_BYTES`] each).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The data entries with keys in `[from, until)`, in no order.
    fn data_range<'a>(
        &'a self,
        from: &'a [u8],
        until: Option<&'a [u8]>,
    ) -> impl Iterator<Item = (&'a [u8], Option<&'a Bytes>)> + 'a {
        let shards = usize::from(shard_of(from))..=usize::from(until.map_or(u16::MAX, shard_of));
        // None for shards that end before they start: the range is empty.
        self.shards
            .get(shards)
            .unwrap_or_default()
            .iter()
            .flat_map(|shard| shard.iter())
            .map(|(key, value)| (key.as_slice(), value.as_ref()))
            .filter(move |(key, _)| *key >= from && until.is_none_or(|until| *key < until))
    }

    /// Entries held in ordered maps.
    fn ordered_len(&self) -> usize {
        self.ordered.iter().map(BTreeMap::len).sum()
    }

    /// The entries of `space` (expiry or hints) with keys in `[from,
    /// until)`, in key order.
    fn ordered_range<'a>(
        &'a self,
        space: Space,
        from: &'a [u8],
        until: Option<&'a [u8]>,
    ) -> impl Iterator<Item = (&'a [u8], Option<&'a Bytes>)> + 'a {
        use std::ops::Bound;
        // Up to `from` itself, excluded (an empty range), when `until` is
        // not after it: BTreeMap's `range` panics at an end before the
        // start.
        let end = match until {
            Some(until) if until <= from => Bound::Excluded(from),
            Some(until) => Bound::Excluded(until),
            None => Bound::Unbounded,
        };
        self.ordered[ordered_index(space)]
            .range::<[u8], _>((Bound::Included(from), end))
            .map(|(key, value)| (key.as_slice(), value.as_ref()))
    }

    /// The entries of `space` in key order, as an ingestion takes them.
    pub fn sorted(&self, space: Space) -> Vec<(&[u8], Option<&Bytes>)> {
        match space {
            Space::Data => {
                let mut entries = Vec::with_capacity(self.len - self.ordered_len());
                for shard in &self.shards {
                    let first = entries.len();
                    entries.extend(shard.iter().map(|(k, v)| (k.as_slice(), v.as_ref())));
                    entries[first..].sort_unstable_by(|a, b| a.0.cmp(b.0));
                }
                entries
            }
            Space::Expiry | Space::Hints => self.ordered_range(space, &[], None).collect(),
        }
    }
}

/// What `generations` (newest first) hold for keys of `space` in `[from,
/// until)`: each key's newest write, in key order. Of the expiry index
/// and the hints, whose staged range can be long (the reaper reads from
/// its cursor to the end), only a prefix holding `puts_max` puts: a scan of up to
/// `puts_max` entries cannot go past it (see [`merge_scan`]).
pub fn staged_range(
    generations: &[&Generation],
    space: Space,
    from: &[u8],
    until: Option<&[u8]>,
    puts_max: usize,
) -> Vec<(Vec<u8>, Option<Bytes>)> {
    match space {
        Space::Data => {
            let mut found: HashMap<&[u8], Option<&Bytes>, Xxh3DefaultBuilder> = HashMap::default();
            for generation in generations.iter().rev() {
                found.extend(generation.data_range(from, until));
            }
            let mut range: Vec<_> = found
                .into_iter()
                .map(|(key, value)| (key.to_vec(), value.cloned()))
                .collect();
            range.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            range
        }
        Space::Expiry | Space::Hints => {
            let mut sources: Vec<_> = generations
                .iter()
                .map(|generation| generation.ordered_range(space, from, until).peekable())
                .collect();
            let mut range = Vec::new();
            let mut puts = 0;
            while puts < puts_max {
                // The smallest key at the sources' heads; the newest
                // source holding it has its newest write.
                let Some(key) = sources
                    .iter_mut()
                    .filter_map(|s| s.peek().map(|e| e.0))
                    .min()
                else {
                    break;
                };
                let mut newest = None;
                for source in &mut sources {
                    if let Some((_, value)) = source.next_if(|entry| entry.0 == key) {
                        newest.get_or_insert(value);
                    }
                }
                let value = newest.flatten().cloned();
                puts += usize::from(value.is_some());
                range.push((key.to_vec(), value));
            }
            range
        }
    }
}

/// The first `limit` live entries of `stored` (a scan of the store from
/// the same start, of `limit + staged.len()` entries, in key order) with
/// `staged` (from [`staged_range`]) over them: a staged value replaces
/// the stored one, a staged delete hides it.
///
/// Enough is fetched: staged writes hide at most `staged.len()` stored
/// entries, so the merge holds at least `limit` live entries up to the
/// last stored key whenever the scan was cut short, and stored entries
/// past it cannot come first.
pub fn merge_scan(staged: Vec<(Vec<u8>, Option<Bytes>)>, stored: Entries, limit: usize) -> Entries {
    let mut out = Vec::with_capacity(limit.min(stored.len() + staged.len()));
    let mut staged = staged.into_iter().peekable();
    let mut stored = stored.into_iter().peekable();
    while out.len() < limit {
        let order = match (staged.peek(), stored.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((a, _)), Some((b, _))) => a.cmp(b),
        };
        if order == std::cmp::Ordering::Equal {
            // The staged write replaces (or hides) the stored entry.
            stored.next();
        }
        if order == std::cmp::Ordering::Greater {
            out.extend(stored.next());
        } else if let Some((key, Some(value))) = staged.next() {
            out.push((key, value.to_vec()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op(key: &[u8], value: Option<&[u8]>) -> BatchOp {
        op_in(Space::Data, key, value)
    }

    fn op_in(space: Space, key: &[u8], value: Option<&[u8]>) -> BatchOp {
        match value {
            Some(v) => BatchOp::put(space, key.to_vec(), v.to_vec()),
            None => BatchOp::delete(space, key.to_vec()),
        }
    }

    /// Recovery's path: a log entry's ops into a generation.
    fn replay(generation: &mut Generation, entry: &[u8]) -> Result<(), DecodeError> {
        let ops = decode_log(entry)?;
        ops.iter().for_each(|op| generation.apply(op));
        Ok(())
    }

    fn encoded(ops: &[BatchOp]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_log(ops, &mut out);
        out
    }

    #[test]
    fn a_log_entry_replays_to_what_was_applied() {
        let ops = [
            op(b"\0\x01a", Some(b"1")),
            op(b"\0\x02b", None),
            BatchOp::put(Space::Expiry, b"\0\x01when".to_vec(), Vec::new()),
            op(b"\0\x01a", Some(b"2")),
        ];
        assert_eq!(decode_log(&encoded(&ops)).expect("decode"), ops);
        let mut applied = Generation::new(7);
        ops.iter().for_each(|op| applied.apply(op));
        let mut replayed = Generation::new(7);
        replay(&mut replayed, &encoded(&ops)).expect("replay");
        for space in [Space::Data, Space::Expiry] {
            assert_eq!(replayed.sorted(space), applied.sorted(space));
        }
        assert_eq!(replayed.bytes(), applied.bytes());
        assert_eq!(
            applied.sorted(Space::Data),
            vec![
                (&b"\0\x01a"[..], Some(&Bytes::from_static(b"2"))),
                (&b"\0\x02b"[..], None)
            ]
        );
        assert_eq!(
            applied.sorted(Space::Expiry),
            vec![(&b"\0\x01when"[..], Some(&Bytes::new()))]
        );
    }

    #[test]
    fn the_log_entry_layout_is_pinned() {
        let ops = [
            op(b"k", Some(b"vv")),
            op(b"d", None),
            BatchOp::delete(Space::Expiry, b"e".to_vec()),
        ];
        assert_eq!(
            encoded(&ops),
            [
                2, 0, 1, b'k', 1, 2, b'v', b'v', 0, 1, b'd', 0, 1, 1, b'e', 0
            ]
        );
        // Version 1 (format-2 data directories, refused) is not read.
        assert_eq!(
            decode_log(&[1, 1, b'k', 1, 2, b'v', b'v', 1, b'd', 0]),
            Err(DecodeError::UnknownVersion { found: 1 })
        );
    }

    #[test]
    fn a_malformed_entry_is_refused_and_changes_nothing() {
        let mut generation = Generation::new(0);
        let good = encoded(&[op(b"k", Some(b"v"))]);
        for bad in [
            &[][..],
            &[3][..],
            &good[..good.len() - 1],
            &[2, 0, 1, b'k', 9],
            &[2, 3, 1, b'k', 0],
        ] {
            assert!(replay(&mut generation, bad).is_err(), "{bad:?}");
        }
        assert!(generation.is_empty());
    }

    #[test]
    fn bytes_count_what_is_held() {
        let mut generation = Generation::new(0);
        generation.apply(&op(b"key", Some(&[0; 100])));
        assert_eq!(generation.bytes(), 3 + ENTRY_OVERHEAD_BYTES + 100);
        generation.apply(&op(b"key", Some(&[0; 10])));
        assert_eq!(generation.bytes(), 3 + ENTRY_OVERHEAD_BYTES + 10);
        generation.apply(&op(b"key", None));
        assert_eq!(generation.bytes(), 3 + ENTRY_OVERHEAD_BYTES);
    }

    #[test]
    fn a_successor_s_shards_have_room_for_what_its_predecessor_held() {
        let mut generation = Generation::new(3);
        for i in 0..40u8 {
            generation.apply(&op(&[i % 2, 0, i], Some(b"v")));
        }
        let mut next = generation.successor();
        assert_eq!(next.number, 4);
        next.apply(&op(&[5, 0, 0], Some(b"v")));
        // 20 keys in each of 2 shards: the first write makes room for 20.
        assert!(next.shards[5 << 8].capacity() >= 20);
        assert!(Generation::new(0).successor().shard_capacity == 0);
    }

    /// Short keys over a small alphabet: they meet often, and fall in
    /// several shards and at shard edges.
    fn key() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(0u8..3, 1..4)
    }

    proptest! {
        /// A scan merged from a store and staged writes equals a scan of
        /// the store with the writes applied, in either keyspace (the
        /// expiry index's staged range is cut after `limit` puts).
        #[test]
        fn a_merged_scan_equals_a_scan_of_the_applied_writes(
            expiry in any::<bool>(),
            stored in proptest::collection::btree_map(key(), any::<u8>(), 0..30),
            older in proptest::collection::vec((key(), proptest::option::of(any::<u8>())), 0..20),
            newer in proptest::collection::vec((key(), proptest::option::of(any::<u8>())), 0..20),
            from in key(),
            until in proptest::option::of(key()),
            limit in 0usize..40,
        ) {
            let space = if expiry { Space::Expiry } else { Space::Data };
            let mut generations = [Generation::new(0), Generation::new(1)];
            let mut model = stored.clone();
            for (generation, writes) in generations.iter_mut().zip([&older, &newer]) {
                for (key, value) in writes {
                    generation.apply(&op_in(space, key, value.as_ref().map(std::slice::from_ref)));
                    match value {
                        Some(value) => model.insert(key.clone(), *value),
                        None => model.remove(key),
                    };
                }
            }
            let in_range = |k: &Vec<u8>| *k >= from && until.as_ref().is_none_or(|u| k < u);
            let staged = staged_range(
                &[&generations[1], &generations[0]],
                space,
                &from,
                until.as_deref(),
                limit,
            );
            let stored: Entries = stored
                .iter()
                .filter(|(k, _)| in_range(k))
                .take(limit + staged.len())
                .map(|(k, v)| (k.clone(), vec![*v]))
                .collect();
            let expected: Entries = model
                .iter()
                .filter(|(k, _)| in_range(k))
                .take(limit)
                .map(|(k, v)| (k.clone(), vec![*v]))
                .collect();
            prop_assert_eq!(merge_scan(staged, stored, limit), expected);
        }

        /// Ingestion order is key order, across shards.
        #[test]
        fn sorted_is_key_order(keys in proptest::collection::vec(key(), 0..30)) {
            let mut generation = Generation::new(0);
            keys.iter().for_each(|k| generation.apply(&op(k, Some(b"v"))));
            let sorted: Vec<&[u8]> =
                generation.sorted(Space::Data).into_iter().map(|(k, _)| k).collect();
            let mut expected: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            expected.sort_unstable();
            expected.dedup();
            prop_assert_eq!(sorted, expected);
        }

        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_log(&bytes);
        }
    }
}
