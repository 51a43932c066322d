//! Dot counters that never repeat (docs/semantics.md, "No key amnesia").
//!
//! A dot names one write: `(node, counter)`. Minted as "one past the
//! counter the key's record has seen", a counter repeats when the record
//! is gone: reaped after a delete, or lost with the writes an unclean
//! stop did not sync. An old replica, a hint or a client context may
//! still hold the old dot, and takes the new write for one it has seen:
//! the write is lost (Riak's kv679). So every dot this node mints is
//! also past every counter it minted before, for any key: the counter is
//! the larger of the record's next and this clock's next.
//!
//! The clock is kept in memory and reserved on disk a block of
//! [`DOT_CLOCK_BLOCK`] counters ahead (the meta entry `dot_clock`, the
//! reserved bound as a big-endian u64, synced before a counter past the
//! last reservation is used): an open, clean or not, starts at the saved
//! bound, past every counter handed out before. A store from before the
//! clock (no entry) gets a fresh dot id, as FLUSHALL does, since the
//! counters minted under the old one are not known.

use crate::storage::{Meta, Store, StoreError, renew_dot_id};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

/// The meta entry of the reserved bound.
const DOT_CLOCK_META: &str = "dot_clock";

/// Counters reserved at once: one synced meta write per this many dots.
const DOT_CLOCK_BLOCK: u64 = 1 << 20;

/// This node's dot clock (see the module docs).
pub(super) struct DotClock {
    /// The next counter to hand out.
    next: AtomicU64,
    /// Counters below this are reserved on disk.
    reserved: AtomicU64,
    /// Taken to reserve the next block.
    reserving: Mutex<()>,
}

impl DotClock {
    /// Opens the clock of `store`; `meta` gets a fresh dot id if the
    /// store has no clock yet.
    pub(super) fn open(store: &dyn Store, meta: &mut Meta) -> Result<Self, StoreError> {
        let start = match store.meta_get(DOT_CLOCK_META)? {
            Some(bytes) => u64::from_be_bytes(bytes.try_into().map_err(|_| {
                StoreError::Incompatible(format!("meta entry {DOT_CLOCK_META} is malformed"))
            })?),
            None => {
                *meta = renew_dot_id(store, *meta)?;
                1
            }
        };
        let clock = Self {
            next: AtomicU64::new(start),
            reserved: AtomicU64::new(start),
            reserving: Mutex::new(()),
        };
        clock.reserve(store, start)?;
        Ok(clock)
    }

    /// A counter past every one handed out before, reserved on disk.
    pub(super) fn next(&self, store: &dyn Store) -> Result<u64, StoreError> {
        let counter = self.next.fetch_add(1, Ordering::Relaxed);
        self.reserve(store, counter)?;
        Ok(counter)
    }

    /// Notes that `counter` was used (a record's own next was past the
    /// clock): the clock moves past it.
    pub(super) fn used(&self, store: &dyn Store, counter: u64) -> Result<(), StoreError> {
        self.next
            .fetch_max(counter.saturating_add(1), Ordering::Relaxed);
        self.reserve(store, counter)
    }

    /// Makes sure `counter` is below the bound saved on disk.
    fn reserve(&self, store: &dyn Store, counter: u64) -> Result<(), StoreError> {
        if counter < self.reserved.load(Ordering::Acquire) {
            return Ok(());
        }
        let _turn = self
            .reserving
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let reserved = self.reserved.load(Ordering::Acquire);
        if counter < reserved {
            return Ok(());
        }
        let bound = counter.saturating_add(DOT_CLOCK_BLOCK);
        store.meta_put(DOT_CLOCK_META, &bound.to_be_bytes())?;
        store.sync()?;
        self.reserved.store(bound, Ordering::Release);
        Ok(())
    }
}
