//! Hints: records this node keeps as a fallback for a replica that was
//! down when a write was meant for it (docs/cluster.md, "Sloppy quorum
//! and hinted handoff"), until the replay hands them over.
//!
//! A hint is the merged record of one key for one target replica, so
//! many writes to a key while its replica is down are one hint: hints
//! grow with distinct keys, not with writes. They live in the store's
//! `hints` keyspace ([`Space::Hints`]), written and synced like any
//! record (`--fsync`):
//!
//! ```text
//! target (8 bytes, big-endian) ‖ storage key  →  the record, as stored
//! target (8 bytes, big-endian)                →  window start, u64 ms BE
//! ```
//!
//! The second entry is written with a target's first hint and removed
//! with its last: the hint window (`--hint-window`) is measured from it,
//! across restarts. Past the window or past `--hint-max-bytes` of hints
//! for one target, new hints for it are refused and counted as dropped:
//! anti-entropy or read repair brings those keys to the target instead.
//!
//! All hint writes of this node take one lock (a hint is the rare path):
//! the bytes counted against the cap never race.

use super::{Received, Replica};
use crate::model::record::{Record, decode_record, encode_record};
use crate::storage::{BatchOp, FsyncPolicy, Space, StoreError, split_storage_key};
use crate::version::NodeId;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// The bytes of a target id at the head of its hints' keys.
const TARGET_BYTES: usize = 8;

/// The key of `target`'s hint for the record at storage key `skey`.
pub fn hint_key(target: NodeId, skey: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(TARGET_BYTES + skey.len());
    key.extend_from_slice(&target.to_be_bytes());
    key.extend_from_slice(skey);
    key
}

/// A hint key's target and storage key; `None` for a window entry (or a
/// malformed key).
pub fn split_hint_key(key: &[u8]) -> Option<(NodeId, &[u8])> {
    let (target, skey) = key.split_first_chunk::<TARGET_BYTES>()?;
    (skey.len() >= 2).then(|| (NodeId::from_be_bytes(*target), skey))
}

/// Where a target's entries end: the next target's first key.
fn target_end(target: NodeId) -> Option<Vec<u8>> {
    target
        .checked_add(1)
        .map(|next| next.to_be_bytes().to_vec())
}

/// What the hint settings allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintLimits {
    /// How long after a target's first hint new ones are still kept.
    pub window_ms: u64,
    /// Most bytes of hints (keys and records) kept for one target; 0
    /// keeps none.
    pub max_bytes: u64,
}

/// Why a batch of hints was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The target's hint window has passed.
    Window,
    /// The target's hints would pass `--hint-max-bytes`.
    Full,
}

/// One target's hints, as INFO and `DYNAMO HINTS` show them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetHints {
    /// Keys hinted.
    pub keys: u64,
    /// Their bytes (keys and records).
    pub bytes: u64,
    /// When the window began (the oldest hint held), ms since the epoch;
    /// 0 when none is held.
    pub since_ms: u64,
    /// Hints handed over and deleted since this node started.
    pub replayed: u64,
    /// Hints refused (window or cap) since this node started, in keys.
    pub dropped: u64,
}

/// Every target's hints, kept in step with the store under one lock.
#[derive(Debug, Default)]
pub(super) struct HintBook(Mutex<BTreeMap<NodeId, TargetHints>>);

impl HintBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, TargetHints>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Replica {
    /// Counts the hints the store holds (at open, and after a FLUSHDB
    /// removed some): one scan of the hints keyspace, which the cap
    /// bounds. The run counters (replayed, dropped) are kept.
    pub(super) fn count_hints(&self) -> Result<(), StoreError> {
        let mut counted: BTreeMap<NodeId, TargetHints> = BTreeMap::new();
        let mut from = Vec::new();
        loop {
            let page = self.store.scan(
                Space::Hints,
                &from,
                None,
                crate::limits::STORE_WALK_PAGE_RECORDS,
            )?;
            let Some((last, _)) = page.last() else {
                break;
            };
            from = super::next_key(last);
            for (key, value) in &page {
                let Some(head) = key.first_chunk::<TARGET_BYTES>() else {
                    continue;
                };
                let target = counted.entry(NodeId::from_be_bytes(*head)).or_default();
                if split_hint_key(key).is_some() {
                    target.keys += 1;
                    target.bytes += (key.len() + value.len()) as u64;
                } else if let Ok(since) = <[u8; 8]>::try_from(&value[..]) {
                    target.since_ms = u64::from_be_bytes(since);
                }
            }
        }
        let mut book = self.hints.lock();
        for (target, held) in book.iter_mut() {
            let now = counted.remove(target).unwrap_or_default();
            *held = TargetHints {
                replayed: held.replayed,
                dropped: held.dropped,
                ..now
            };
        }
        book.extend(counted);
        Ok(())
    }

    /// Keeps `entries` as hints for `target`, each merged into the hint
    /// its key already has: all of them, durably (per `--fsync`), or none
    /// when the target's window has passed or its hints would pass the
    /// cap; a refusal is counted as dropped hints.
    ///
    /// # Errors
    /// Store errors; nothing is kept then.
    pub fn store_hints(
        &self,
        target: NodeId,
        entries: &[Received],
        now_ms: u64,
        limits: HintLimits,
    ) -> Result<Result<(), Refusal>, StoreError> {
        {
            let _turn = self
                .hint_writes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let held = self.hints.lock().get(&target).copied().unwrap_or_default();
            let window_open =
                held.keys == 0 || now_ms.saturating_sub(held.since_ms) < limits.window_ms;
            let mut ops = Vec::with_capacity(entries.len() + 1);
            let mut merged: BTreeMap<Vec<u8>, (Option<usize>, Record)> = BTreeMap::new();
            for received in entries {
                let key = hint_key(target, &self.storage_key(&received.key));
                let slot = match merged.entry(key) {
                    std::collections::btree_map::Entry::Occupied(slot) => slot.into_mut(),
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        let stored = self.store.get(Space::Hints, slot.key())?;
                        let size = stored.as_ref().map(Vec::len);
                        let record = match stored {
                            Some(bytes) => {
                                decode_record(&bytes).map_err(|e| super::corrupt(slot.key(), e))?
                            }
                            None => Record::new(),
                        };
                        slot.insert((size, record))
                    }
                };
                slot.1.sync(&received.record);
            }
            let mut bytes = held.bytes;
            let mut added = 0;
            for (key, (size, record)) in merged {
                let encoded = encode_record(&record);
                match size {
                    Some(size) => bytes = bytes - size as u64 + encoded.len() as u64,
                    None => {
                        bytes += (key.len() + encoded.len()) as u64;
                        added += 1;
                    }
                }
                ops.push(BatchOp::put(Space::Hints, key, encoded));
            }
            let refusal = if !window_open {
                Some(Refusal::Window)
            } else if bytes > limits.max_bytes {
                Some(Refusal::Full)
            } else {
                None
            };
            if let Some(refusal) = refusal {
                let mut book = self.hints.lock();
                book.entry(target).or_default().dropped += entries.len() as u64;
                return Ok(Err(refusal));
            }
            let since_ms = if held.keys == 0 && added > 0 {
                ops.push(BatchOp::put(
                    Space::Hints,
                    target.to_be_bytes().to_vec(),
                    now_ms.to_be_bytes().to_vec(),
                ));
                now_ms
            } else {
                held.since_ms
            };
            self.store.apply(&ops)?;
            let mut book = self.hints.lock();
            let target = book.entry(target).or_default();
            target.keys += added;
            target.bytes = bytes;
            target.since_ms = since_ms;
        }
        if self.fsync == FsyncPolicy::Always {
            self.group.wait_durable(self.store.as_ref())?;
        }
        Ok(Ok(()))
    }

    /// Up to `limit` of `target`'s hints after hint key `after` (from the
    /// first when `None`), in key order: `(hint key, user key, record as
    /// stored)`.
    ///
    /// # Errors
    /// Store errors.
    pub fn hints_of(
        &self,
        target: NodeId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Bytes, Bytes)>, StoreError> {
        let from = after.map_or_else(|| target.to_be_bytes().to_vec(), super::next_key);
        let end = target_end(target);
        let page = self
            .store
            .scan(Space::Hints, &from, end.as_deref(), limit.saturating_add(1))?;
        Ok(page
            .into_iter()
            .filter_map(|(key, value)| {
                let (_, skey) = split_hint_key(&key)?;
                let (_, user) = split_storage_key(skey)?;
                let user = Bytes::copy_from_slice(user);
                Some((key, user, Bytes::from(value)))
            })
            .take(limit)
            .collect())
    }

    /// Deletes the hints of `target` that still hold exactly what was
    /// sent (`(hint key, bytes sent)`): one that changed since took a
    /// newer write, which the next pass sends. The target's window entry
    /// goes with its last hint. Returns how many were deleted.
    ///
    /// # Errors
    /// Store errors; nothing is deleted then.
    pub fn delete_hints(
        &self,
        target: NodeId,
        sent: &[(Vec<u8>, Bytes)],
    ) -> Result<u64, StoreError> {
        let _turn = self
            .hint_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut ops = Vec::new();
        let mut freed = 0u64;
        for (key, bytes) in sent {
            if self.store.get(Space::Hints, key)?.as_deref() == Some(&bytes[..]) {
                freed += (key.len() + bytes.len()) as u64;
                ops.push(BatchOp::delete(Space::Hints, key.clone()));
            }
        }
        let deleted = ops.len() as u64;
        if deleted == 0 {
            return Ok(0);
        }
        let held = self.hints.lock().get(&target).copied().unwrap_or_default();
        let emptied = held.keys <= deleted;
        if emptied {
            ops.push(BatchOp::delete(Space::Hints, target.to_be_bytes().to_vec()));
        }
        self.store.apply(&ops)?;
        let mut book = self.hints.lock();
        let target = book.entry(target).or_default();
        target.keys = target.keys.saturating_sub(deleted);
        target.bytes = target.bytes.saturating_sub(freed);
        target.replayed += deleted;
        if emptied {
            target.since_ms = 0;
        }
        Ok(deleted)
    }

    /// Every target's hints (held now, and counted since start).
    pub fn hint_report(&self) -> BTreeMap<NodeId, TargetHints> {
        self.hints.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::Sibling;
    use crate::replica::ReplicaSettings;
    use crate::storage::MemoryStore;
    use std::sync::Arc;

    const TARGET: NodeId = 0x42;
    const LIMITS: HintLimits = HintLimits {
        window_ms: 10_000,
        max_bytes: 1 << 20,
    };

    fn open(store: &Arc<MemoryStore>) -> Replica {
        let settings = ReplicaSettings {
            partitions: 64,
            fsync: FsyncPolicy::No,
            siblings_max: 8,
            cache_bytes: 0,
        };
        Replica::open(
            Arc::clone(store) as Arc<dyn crate::storage::Store>,
            settings,
        )
        .expect("open")
    }

    /// A record of `value` written by node `by` after `context`.
    fn write(key: &[u8], context: &Record, by: NodeId, value: &[u8]) -> Received {
        let mut record = context.clone();
        let seen = context.context().clone();
        record.update(&seen, by, Sibling::value(Bytes::copy_from_slice(value), 1));
        Received::decoded(Bytes::copy_from_slice(key), record)
    }

    fn values(bytes: &[u8]) -> Vec<Bytes> {
        let record = decode_record(bytes).expect("decodes");
        let mut values: Vec<Bytes> = record
            .siblings()
            .iter()
            .filter_map(|(_, s)| s.live_value(0).cloned())
            .collect();
        values.sort();
        values
    }

    // Proves many writes to one key are one hint holding their merge (two
    // concurrent values and a later one superseding the first), hints
    // are counted per target, and the counts come back the same from the
    // store after a restart.
    #[test]
    fn writes_to_one_key_collapse_into_one_hint_counted_across_restarts() {
        let store = Arc::new(MemoryStore::new());
        let replica = open(&store);
        let first = write(b"k", &Record::new(), 1, b"a");
        let concurrent = write(b"k", &Record::new(), 2, b"b");
        let later = write(b"k", &first.record, 1, b"c");
        for batch in [[first], [concurrent], [later]] {
            replica
                .store_hints(TARGET, &batch, 1_000, LIMITS)
                .expect("store")
                .expect("kept");
        }
        let other = write(b"j", &Record::new(), 1, b"x");
        replica
            .store_hints(TARGET + 1, &[other], 2_000, LIMITS)
            .expect("store")
            .expect("kept");
        let page = replica.hints_of(TARGET, None, 10).expect("page");
        assert_eq!(page.len(), 1, "one hint per key");
        assert_eq!(page[0].1, Bytes::from_static(b"k"));
        assert_eq!(values(&page[0].2), ["b", "c"]);
        let report = replica.hint_report();
        assert_eq!(report[&TARGET].keys, 1);
        assert_eq!(report[&TARGET].since_ms, 1_000);
        assert_eq!(report[&(TARGET + 1)].keys, 1);
        let counted = |r: &BTreeMap<NodeId, TargetHints>| {
            r.iter()
                .map(|(t, h)| (*t, h.keys, h.bytes, h.since_ms))
                .collect::<Vec<_>>()
        };
        let reopened = open(&store);
        assert_eq!(counted(&reopened.hint_report()), counted(&report));
    }

    // Proves the window and the cap refuse new hints (counted as dropped,
    // nothing kept), the window survives a restart, and it restarts once
    // every hint was handed over.
    #[test]
    fn the_window_and_the_cap_refuse_hints_and_count_them() {
        let store = Arc::new(MemoryStore::new());
        let replica = open(&store);
        let hint = |key: &[u8]| write(key, &Record::new(), 1, b"v");
        replica
            .store_hints(TARGET, &[hint(b"a")], 1_000, LIMITS)
            .expect("store")
            .expect("kept");
        let reopened = open(&store);
        let late = 1_000 + LIMITS.window_ms;
        assert_eq!(
            reopened
                .store_hints(TARGET, &[hint(b"b")], late, LIMITS)
                .expect("store"),
            Err(Refusal::Window)
        );
        assert_eq!(reopened.hint_report()[&TARGET].dropped, 1);
        assert_eq!(reopened.hint_report()[&TARGET].keys, 1);
        let tiny = HintLimits {
            max_bytes: 10,
            ..LIMITS
        };
        assert_eq!(
            reopened
                .store_hints(TARGET, &[hint(b"c")], 1_500, tiny)
                .expect("store"),
            Err(Refusal::Full)
        );
        assert!(reopened.hint_report()[&TARGET].bytes > 0);
        // Handed over: the window ends with the last hint.
        let sent: Vec<(Vec<u8>, Bytes)> = reopened
            .hints_of(TARGET, None, 10)
            .expect("page")
            .into_iter()
            .map(|(k, _, v)| (k, v))
            .collect();
        assert_eq!(reopened.delete_hints(TARGET, &sent).expect("delete"), 1);
        assert!(
            reopened
                .hints_of(TARGET, None, 10)
                .expect("page")
                .is_empty()
        );
        reopened
            .store_hints(TARGET, &[hint(b"d")], late, LIMITS)
            .expect("store")
            .expect("a new window");
        assert_eq!(reopened.hint_report()[&TARGET].since_ms, late);
    }

    // Proves a hint that changed after it was sent (a newer write merged
    // in) is not deleted by the replay's delete, and the others are.
    #[test]
    fn a_hint_changed_since_it_was_sent_is_kept() {
        let store = Arc::new(MemoryStore::new());
        let replica = open(&store);
        let a = write(b"a", &Record::new(), 1, b"1");
        let b = write(b"b", &Record::new(), 1, b"1");
        replica
            .store_hints(TARGET, &[a.clone(), b], 0, LIMITS)
            .expect("store")
            .expect("kept");
        let sent: Vec<(Vec<u8>, Bytes)> = replica
            .hints_of(TARGET, None, 10)
            .expect("page")
            .into_iter()
            .map(|(k, _, v)| (k, v))
            .collect();
        let newer = write(b"a", &a.record, 1, b"2");
        replica
            .store_hints(TARGET, &[newer], 0, LIMITS)
            .expect("store")
            .expect("kept");
        assert_eq!(replica.delete_hints(TARGET, &sent).expect("delete"), 1);
        let left = replica.hints_of(TARGET, None, 10).expect("page");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1, Bytes::from_static(b"a"));
        assert_eq!(values(&left[0].2), ["2"]);
        assert_eq!(replica.hint_report()[&TARGET].replayed, 1);
    }

    // Proves FLUSHALL removes every hint and window entry, and a
    // partition drop (a handoff's) keeps them.
    #[test]
    fn flushall_takes_hints_and_a_partition_drop_keeps_them() {
        let store = Arc::new(MemoryStore::new());
        let replica = open(&store);
        let hint = write(b"k", &Record::new(), 1, b"v");
        replica
            .store_hints(TARGET, &[hint], 0, LIMITS)
            .expect("store")
            .expect("kept");
        replica.drop_partitions(|_| true).expect("drop");
        assert_eq!(replica.hint_report()[&TARGET].keys, 1);
        replica.flush(None).expect("flush");
        assert_eq!(replica.hint_report()[&TARGET].keys, 0);
        let left = crate::storage::Store::scan(store.as_ref(), Space::Hints, b"", None, 10);
        let left = left.expect("scan");
        assert!(left.is_empty(), "{left:?}");
    }
}
