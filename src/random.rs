//! Random numbers without a dependency, for ids, nonces and picks.
//!
//! std's `RandomState` keys come from the OS's randomness once per thread
//! (then step per instance); SipHash under them of the time, the pid and a
//! process-wide counter is unpredictable to a peer and never repeats
//! within a process. Enough for node ids, handshake nonces, run ids and
//! RANDOMKEY; not a general cryptographic generator.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh random 64-bit number.
pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_differ() {
        let all: std::collections::HashSet<u64> = (0..1000).map(|_| super::random_u64()).collect();
        assert_eq!(all.len(), 1000);
    }
}
