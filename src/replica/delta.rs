//! What a batch of changed records does to the store, the key counters
//! and the expiry index, built before the commit that applies it.

use super::counters::{PerDb, db_index, has_value};
use super::expiry::{expiry_key, live_until};
use super::tree::{context_hash, leaf_of, place_of};
use crate::model::record::{Record, encode_record};
use crate::storage::{BatchOp, Space};
use bytes::Bytes;

/// What a record counts for in the counters and the expiry index: all a
/// change needs to know of the record it replaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Footprint {
    pub(super) has_value: bool,
    pub(super) live_until: Option<u64>,
    /// Its [`context_hash`], for its anti-entropy leaf; `None`: no record.
    pub(super) context: Option<u64>,
}

impl Footprint {
    pub(super) fn of(record: Option<&Record>) -> Self {
        record.map_or_else(Self::default, |r| Self {
            has_value: has_value(r),
            live_until: live_until(r),
            context: Some(context_hash(r)),
        })
    }
}

/// What changing records does to the counters and the expiry index, and
/// the store writes that make the change.
#[derive(Debug, Default)]
pub(super) struct Delta {
    pub(super) value_keys: PerDb<i64>,
    pub(super) expiring_keys: PerDb<i64>,
    pub(super) ops: Vec<BatchOp>,
    /// Anti-entropy segments to update once the ops are applied: where,
    /// and the old leaf XOR the new (`tree`).
    pub(super) leaves: Vec<((u16, u16), u64)>,
    /// Partitions given a record with no value (tombstones only), which
    /// the reaper then looks at.
    pub(super) dead: Vec<u16>,
}

impl Delta {
    pub(super) fn record(&mut self, skey: &[u8], before: Footprint, current: &Record) {
        self.record_as(skey, before, current, encode_record(current));
    }

    /// [`Delta::record`] with `current` already encoded as `encoded`.
    pub(super) fn record_as(
        &mut self,
        skey: &[u8],
        before: Footprint,
        current: &Record,
        encoded: impl Into<Bytes>,
    ) {
        let after = Footprint::of(Some(current));
        if before.context != after.context
            && let Some(place) = place_of(skey)
        {
            let xor = leaf_of(skey, before.context) ^ leaf_of(skey, after.context);
            self.leaves.push((place, xor));
        }
        let db = db_index(skey);
        self.value_keys[db] += i64::from(after.has_value) - i64::from(before.has_value);
        if before.live_until != after.live_until {
            if let Some(until) = before.live_until {
                self.ops
                    .push(BatchOp::delete(Space::Expiry, expiry_key(until, skey)));
                self.expiring_keys[db] -= 1;
            }
            if let Some(until) = after.live_until {
                self.ops.push(BatchOp::put(
                    Space::Expiry,
                    expiry_key(until, skey),
                    Vec::new(),
                ));
                self.expiring_keys[db] += 1;
            }
        }
        self.ops
            .push(BatchOp::put(Space::Data, skey.to_vec(), encoded));
        if !after.has_value {
            self.dead.push(
                skey.first_chunk::<2>()
                    .map_or(0, |p| u16::from_be_bytes(*p)),
            );
        }
    }

    /// Removes a record (reaped: `Replica::reap`) that counted for `before`.
    pub(super) fn remove(&mut self, skey: &[u8], before: Footprint) {
        let db = db_index(skey);
        self.value_keys[db] -= i64::from(before.has_value);
        if let Some(until) = before.live_until {
            self.ops
                .push(BatchOp::delete(Space::Expiry, expiry_key(until, skey)));
            self.expiring_keys[db] -= 1;
        }
        if let Some(place) = place_of(skey) {
            self.leaves.push((place, leaf_of(skey, before.context)));
        }
        self.ops.push(BatchOp::delete(Space::Data, skey.to_vec()));
    }
}
