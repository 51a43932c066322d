//! A bounded in-memory cache of encoded records by storage key, in front of
//! the store. Reads of cached keys skip the engine's memtable search (a
//! skiplist walk of cache misses, a third of a node's CPU under a GET load
//! before this cache) and, when every key of a read is cached, the storage
//! thread altogether. Writes read the current record here too (under the
//! key's lock) and put the record they store: a value just written is
//! likely read, or written, next.
//!
//! The cache only ever holds what the store holds. It does not know the
//! store: its owner ([`crate::replica::Replica`]) changes an entry only
//! under the key's lock, after the store applied the change. Absence is
//! cached too (`None`): a GET of a key that does not exist should not
//! cost a trip to the store each time either.
//!
//! A cache that was given every record the store holds (the replica
//! loads them at open while they fit: [`RecordCache::mark_complete`]) is
//! complete: a key it does not hold has no record, and a read of a key
//! never written costs no store lookup. Completeness is kept per shard
//! and lost for good by the shard's first eviction.
//!
//! Eviction is by generations: each shard keeps a young and an old map.
//! Entries go into the young map; a hit in the old one moves the entry
//! back to the young; when the young map holds half the shard's budget it
//! becomes the old one and the old one is dropped. Every operation is
//! O(1) with no per-entry bookkeeping, and an entry used since the last
//! turn survives it: least-recently-used, approximately.

use super::slot_key::SlotKey;
use crate::limits::{RECORD_CACHE_ENTRY_OVERHEAD_BYTES, RECORD_CACHE_SHARDS};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use xxhash_rust::xxh3::{Xxh3DefaultBuilder, xxh3_64};

type Map = HashMap<SlotKey, Option<Bytes>, Xxh3DefaultBuilder>;

#[derive(Default)]
struct Shard {
    young: Map,
    old: Map,
    young_bytes: usize,
    old_bytes: usize,
    // Counted per shard, under its lock: one counter for all threads
    // would be a cache line every lookup fights over.
    hits: u64,
    misses: u64,
    /// Every record the store holds under this shard's keys is here: a
    /// key not here has none. Changed only under the shard's lock, with
    /// the maps, so a lookup sees both as one.
    complete: bool,
    /// The shard has dropped an entry since the cache was made: it can
    /// never be complete again.
    evicted: bool,
}

impl Shard {
    fn insert(&mut self, key: SlotKey, value: Option<Bytes>, turn_bytes: usize) {
        let key_len = key.as_slice().len();
        self.young_bytes += cost(key_len, value.as_ref());
        if let Some(replaced) = self.young.insert(key, value) {
            self.young_bytes -= cost(key_len, replaced.as_ref());
        }
        self.turn_if_full(turn_bytes);
    }

    /// The young map becomes the old one once it holds `turn_bytes`.
    fn turn_if_full(&mut self, turn_bytes: usize) {
        if self.young_bytes > turn_bytes {
            if !self.old.is_empty() {
                self.evict();
            }
            self.old = std::mem::take(&mut self.young);
            self.old_bytes = std::mem::take(&mut self.young_bytes);
        }
    }

    /// Entries are about to be dropped: from now on a key missing here
    /// may still have a record in the store.
    fn evict(&mut self) {
        self.complete = false;
        self.evicted = true;
    }

    fn remove_old(&mut self, key: &[u8]) -> Option<(SlotKey, Option<Bytes>)> {
        if self.old.is_empty() {
            return None;
        }
        let (key, value) = self.old.remove_entry(key)?;
        self.old_bytes -= cost(key.as_slice().len(), value.as_ref());
        Some((key, value))
    }
}

/// What an entry is counted as against the budget.
fn cost(key_len: usize, value: Option<&Bytes>) -> usize {
    key_len + value.map_or(0, Bytes::len) + RECORD_CACHE_ENTRY_OVERHEAD_BYTES
}

/// Hit and miss counts and the bytes held, for INFO.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to go to the store.
    pub misses: u64,
    /// Bytes held, as counted against the budget.
    pub bytes: usize,
    /// Shards that are complete (out of [`RECORD_CACHE_SHARDS`]).
    pub complete_shards: usize,
}

/// The record cache: storage key → encoded record, or `None` when the
/// store has no record for the key.
pub struct RecordCache {
    shards: Box<[Mutex<Shard>]>,
    /// Bytes a shard's young map may hold before it turns old; a shard
    /// holds at most twice this (one entry more, briefly).
    turn_bytes: usize,
}

impl std::fmt::Debug for RecordCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordCache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl RecordCache {
    /// A cache holding about `bytes` bytes at most; 0 caches nothing.
    pub fn new(bytes: usize) -> Self {
        Self {
            shards: (0..RECORD_CACHE_SHARDS).map(|_| Mutex::default()).collect(),
            turn_bytes: bytes / RECORD_CACHE_SHARDS / 2,
        }
    }

    fn shard(&self, key: &[u8]) -> MutexGuard<'_, Shard> {
        let at = (xxh3_64(key) % self.shards.len() as u64) as usize;
        self.shards[at]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached record of `key`: `Some(None)` when the store is known to
    /// have none, `None` when the cache does not know.
    pub fn get(&self, key: &[u8]) -> Option<Option<Bytes>> {
        let mut shard = self.shard(key);
        let found = match shard.young.get(key) {
            Some(value) => Some(value.clone()),
            None => match shard.remove_old(key) {
                Some((key, value)) => {
                    shard.insert(key, value.clone(), self.turn_bytes);
                    Some(value)
                }
                // A complete shard knows the key has no record.
                None => shard.complete.then_some(None),
            },
        };
        if found.is_some() {
            shard.hits += 1;
        } else {
            shard.misses += 1;
        }
        found
    }

    /// Records that the store now holds `value` for `key` (`None`: no
    /// record). A value too large to cache only removes the old entry.
    pub fn put(&self, key: &[u8], value: Option<Bytes>) {
        let mut shard = self.shard(key);
        shard.remove_old(key);
        if cost(key.len(), value.as_ref()) > self.turn_bytes {
            shard.evict();
            if let Some(stale) = shard.young.remove(key) {
                shard.young_bytes -= cost(key.len(), stale.as_ref());
            }
            return;
        }
        if let Some(held) = shard.young.get_mut(key) {
            // The common case, a key written again: no new allocation.
            let (added, removed) = (
                cost(key.len(), value.as_ref()),
                cost(key.len(), held.as_ref()),
            );
            *held = value;
            shard.young_bytes = shard.young_bytes + added - removed;
            shard.turn_if_full(self.turn_bytes);
            return;
        }
        shard.insert(SlotKey::new(key), value, self.turn_bytes);
    }

    /// The budget in bytes (0: the cache is off).
    pub fn budget(&self) -> usize {
        self.turn_bytes * 2 * self.shards.len()
    }

    /// Declares that every record the store holds has been put here: each
    /// shard that has not evicted anything since becomes complete.
    pub fn mark_complete(&self) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            shard.complete = !shard.evicted;
        }
    }

    /// Forgets everything: the store was emptied, so a complete shard
    /// stays complete. The counts stay.
    pub fn clear(&self) {
        self.reset(true);
    }

    /// Forgets the entries of the keys `doomed` names, which the store no
    /// longer holds (FLUSHDB): a complete shard stays complete. One walk
    /// of what the cache holds.
    pub fn forget(&self, doomed: impl Fn(&[u8]) -> bool) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let Shard {
                young,
                young_bytes,
                old,
                old_bytes,
                ..
            } = &mut *shard;
            for (map, bytes) in [(young, young_bytes), (old, old_bytes)] {
                map.retain(|key, value| {
                    let key = key.as_slice();
                    let keep = !doomed(key);
                    if !keep {
                        *bytes -= cost(key.len(), value.as_ref());
                    }
                    keep
                });
            }
        }
    }

    /// Forgets everything, completeness for good too: what the store
    /// holds is no longer known (a store write failed).
    pub fn invalidate(&self) {
        self.reset(false);
    }

    fn reset(&self, store_known: bool) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            *shard = Shard {
                hits: shard.hits,
                misses: shard.misses,
                complete: store_known && shard.complete,
                evicted: shard.evicted || !store_known,
                ..Shard::default()
            };
        }
    }

    /// Hits, misses and bytes held.
    pub fn stats(&self) -> CacheStats {
        let mut stats = CacheStats::default();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            stats.hits += shard.hits;
            stats.misses += shard.misses;
            stats.bytes += shard.young_bytes + shard.old_bytes;
            stats.complete_shards += usize::from(shard.complete);
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(n: usize) -> Option<Bytes> {
        Some(Bytes::from(vec![7u8; n]))
    }

    #[test]
    fn keys_short_and_long_are_told_apart() {
        let cache = RecordCache::new(1 << 20);
        // Either side of the inline length, and keys that share a prefix.
        let keys: Vec<Vec<u8>> = [0, 1, 29, 30, 31, 32, 200]
            .iter()
            .flat_map(|&n| [vec![b'k'; n], [vec![b'k'; n], vec![b'x']].concat()])
            .collect();
        for (i, key) in keys.iter().enumerate() {
            cache.put(key, value(i + 1));
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(cache.get(key), Some(value(i + 1)), "{}", key.len());
        }
    }

    #[test]
    fn remembers_values_and_absence_and_forgets_on_clear() {
        let cache = RecordCache::new(1 << 20);
        assert_eq!(cache.get(b"a"), None);
        cache.put(b"a", value(3));
        cache.put(b"b", None);
        assert_eq!(cache.get(b"a"), Some(value(3)));
        assert_eq!(cache.get(b"b"), Some(None));
        cache.put(b"a", value(5));
        assert_eq!(cache.get(b"a"), Some(value(5)));
        cache.clear();
        assert_eq!(cache.get(b"a"), None);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.bytes), (3, 2, 0));
    }

    #[test]
    fn forgets_only_doomed_keys_and_stays_complete() {
        let cache = RecordCache::new(1 << 20);
        cache.mark_complete();
        for key in [&b"a1"[..], b"a2", b"b1"] {
            cache.put(key, value(4));
        }
        let held = cache.stats().bytes;
        cache.forget(|key| key.starts_with(b"a"));
        // Complete: a forgotten key is known to have no record now.
        assert_eq!(cache.get(b"a1"), Some(None));
        assert_eq!(cache.get(b"b1"), Some(value(4)));
        assert_eq!(cache.stats().bytes, held / 3);
        assert_eq!(cache.stats().complete_shards, RECORD_CACHE_SHARDS);
    }

    #[test]
    fn stays_within_its_budget_and_keeps_what_is_used() {
        let budget = 256 * 1024;
        let cache = RecordCache::new(budget);
        cache.mark_complete();
        for i in 0u32..100_000 {
            cache.put(&i.to_be_bytes(), value(100));
            // Key 0 is read all along: it survives every turn.
            assert!(cache.get(&0u32.to_be_bytes()).is_some(), "lost at {i}");
        }
        let held = cache.stats().bytes;
        let entry = 4 + 100 + RECORD_CACHE_ENTRY_OVERHEAD_BYTES;
        assert!(held <= budget + RECORD_CACHE_SHARDS * entry, "{held}");
        assert!(held >= budget / 4, "{held}: the cache should be in use");
        // The oldest keys are gone, and every shard, having evicted, no
        // longer answers for keys it lacks.
        assert_eq!(cache.get(&1u32.to_be_bytes()), None);
        assert_eq!(cache.stats().complete_shards, 0);
    }

    // Proves a complete cache answers for keys it lacks; clearing (with
    // the store) keeps that, a value too large to cache ends it for its
    // shard, and invalidating ends it for good.
    #[test]
    fn a_complete_cache_answers_for_keys_it_lacks() {
        let cache = RecordCache::new(1 << 20);
        assert_eq!(cache.get(b"x"), None, "not complete until marked");
        cache.put(b"a", value(3));
        cache.mark_complete();
        assert_eq!(cache.stats().complete_shards, RECORD_CACHE_SHARDS);
        assert_eq!(cache.get(b"x"), Some(None));
        assert_eq!(cache.get(b"a"), Some(value(3)));
        cache.clear();
        assert_eq!(cache.get(b"a"), Some(None), "cleared with the store");
        cache.put(b"big", value(1 << 20));
        assert_eq!(cache.get(b"big"), None, "too large: not known");
        assert_eq!(cache.stats().complete_shards, RECORD_CACHE_SHARDS - 1);
        cache.invalidate();
        cache.mark_complete();
        assert_eq!(cache.stats().complete_shards, 0);
        assert_eq!(cache.get(b"a"), None);
    }

    #[test]
    fn a_value_too_large_replaces_the_cached_one_by_nothing() {
        let cache = RecordCache::new(RECORD_CACHE_SHARDS * 2 * 1024);
        cache.put(b"k", value(10));
        cache.put(b"k", value(4096));
        assert_eq!(cache.get(b"k"), None, "a stale value must not stay");
        let empty = RecordCache::new(0);
        empty.put(b"k", value(1));
        assert_eq!(empty.get(b"k"), None);
        assert_eq!(empty.stats().bytes, 0);
    }

    #[test]
    fn byte_counts_match_what_is_held() {
        let cache = RecordCache::new(RECORD_CACHE_SHARDS * 2 * 4096);
        for round in 0..50usize {
            for k in 0u8..40 {
                let v = if (k as usize + round).is_multiple_of(3) {
                    None
                } else {
                    value(k as usize * round % 97)
                };
                cache.put(&[k], v);
                let _ = cache.get(&[k.wrapping_mul(7) % 40]);
            }
        }
        let counted: usize = cache
            .shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(PoisonError::into_inner);
                let sum = |m: &Map| {
                    m.iter()
                        .map(|(k, v)| cost(k.as_slice().len(), v.as_ref()))
                        .sum::<usize>()
                };
                assert_eq!(s.young_bytes, sum(&s.young));
                assert_eq!(s.old_bytes, sum(&s.old));
                s.young_bytes + s.old_bytes
            })
            .sum();
        assert_eq!(counted, cache.stats().bytes);
    }
}
