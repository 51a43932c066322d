//! The expiry index and its reaper: a record whose every value expires
//! has one index entry, keyed by the time its last value expires, written
//! in the same batch as the record; the reaper walks the index's due
//! front and drops expired values, keeping each record's context.

use super::counters::{PerDb, db_index};
use super::delta::{Delta, Footprint};
use super::{Replica, next_key};
use crate::model::record::Record;
use crate::storage::{BatchOp, Space, StoreError};
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

/// The time until which a record holds a value, if every value it holds
/// expires: the key of its expiry-index entry.
pub(super) fn live_until(record: &Record) -> Option<u64> {
    let mut until = None;
    for (_, sibling) in record.siblings() {
        if sibling.live_value(0).is_none() {
            continue; // tombstone
        }
        until = Some(until.unwrap_or(0).max(sibling.expire_at_ms?));
    }
    until
}

/// An expiry-index key: the time, big-endian so the index is in time
/// order, then the storage key.
pub(super) fn expiry_key(until: u64, skey: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + skey.len());
    key.extend_from_slice(&until.to_be_bytes());
    key.extend_from_slice(skey);
    key
}

/// The time and storage key of an expiry-index key.
pub(super) fn split_expiry_key(key: &[u8]) -> Option<(u64, &[u8])> {
    let (until, skey) = key.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*until), skey))
}

impl Replica {
    /// Index entries whose live-until is at or before `until`, per
    /// database.
    pub(super) fn count_expiry_entries(&self, until: u64) -> Result<PerDb<i64>, StoreError> {
        const PAGE: usize = 4096;
        let mut from = Vec::new();
        let mut counts = PerDb::default();
        loop {
            let page = self.store.scan(Space::Expiry, &from, None, PAGE)?;
            let mut done = page.len() < PAGE;
            for (key, _) in &page {
                match split_expiry_key(key) {
                    Some((at, skey)) if at <= until => counts[db_index(skey)] += 1,
                    _ => done = true,
                }
            }
            match page.last() {
                Some((last, _)) if !done => from = next_key(last),
                _ => return Ok(counts),
            }
        }
    }

    /// Removes from disk up to `limit` values that expired at or before
    /// `now_ms`, oldest first, keeping each record's context (dots stay
    /// covered, so a later write never re-mints one). Returns how many
    /// keys were reaped; the expiry worker calls this in bounded steps.
    ///
    /// # Errors
    /// Store errors.
    pub fn reap_expired(&self, now_ms: u64, limit: usize) -> Result<usize, StoreError> {
        // Resume after the last entry reaped: the index's front is full of
        // deleted entries, and an LSM scan from the start would step over
        // all of them every time. Entries written behind the cursor (an
        // expiry set in the past) are found when a pass finds nothing due
        // and the cursor goes back to the start.
        let mut cursor = self
            .reap_cursor
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let due: Vec<(u64, Vec<u8>, Vec<u8>)> = self
            .store
            .scan(Space::Expiry, &cursor, None, limit)?
            .into_iter()
            .filter_map(|(index_key, _)| {
                let (until, skey) = split_expiry_key(&index_key)?;
                Some((until, skey.to_vec(), index_key))
            })
            .take_while(|(until, _, _)| *until <= now_ms)
            .collect();
        match due.last() {
            Some((_, _, last)) => *cursor = next_key(last),
            None => cursor.clear(),
        }
        let _guards = self
            .locks
            .lock(due.iter().map(|(_, skey, _)| skey.as_slice()));
        let mut delta = Delta::default();
        let mut reaped = 0;
        for (until, skey, index_key) in &due {
            match self.read_for_write(skey)? {
                Some(previous) if live_until(&previous) == Some(*until) => {
                    let mut record = previous.clone();
                    // Drop expired values; tombstones and live values stay.
                    record.retain(|s| s.live_value(now_ms).is_some() || s.live_value(0).is_none());
                    delta.record(skey, Footprint::of(Some(&previous)), &record);
                    reaped += 1;
                }
                // The index is kept in the same batch as the record, so a
                // stale entry means a bug or a torn directory: clean it.
                _ => {
                    tracing::warn!(key = ?skey, "stale expiry index entry removed");
                    delta
                        .ops
                        .push(BatchOp::delete(Space::Expiry, index_key.clone()));
                    delta.expiring_keys[db_index(skey)] -= 1;
                }
            }
        }
        self.commit(delta)?;
        self.stats
            .expired_keys
            .fetch_add(reaped as u64, Ordering::Relaxed);
        Ok(reaped)
    }
}
