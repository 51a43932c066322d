//! Random numbers without a dependency, for ids, nonces and picks.
//!
//! std's `RandomState` keys come from the OS's randomness once per thread
//! (then step per instance); SipHash under them of the time, the pid and a
//! process-wide counter is unpredictable to a peer and never repeats
//! within a process. Enough for node ids, handshake nonces, run ids and
//! RANDOMKEY; not a general cryptographic generator.
//!
//! The deterministic simulation runs every simulated node on one thread
//! and calls [`seed_thread`] first: from then on that thread's numbers
//! come from a seeded generator, so one seed replays a run exactly.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// splitmix64: a small seeded generator with a full period and a strong
/// mix; for reproducible choices (simulation, fault schedules), never for
/// secrets.
#[derive(Debug, Clone, Copy)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose numbers are a function of `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

thread_local! {
    /// This thread's seeded generator, when seeded.
    static SEEDED: Cell<Option<SplitMix64>> = const { Cell::new(None) };
}

/// Makes this thread's numbers a function of `seed` (simulation).
pub fn seed_thread(seed: u64) {
    SEEDED.with(|s| s.set(Some(SplitMix64::new(seed))));
}

/// A fresh random 64-bit number.
pub fn random_u64() -> u64 {
    if let Some(mut seeded) = SEEDED.with(Cell::get) {
        let n = seeded.next_u64();
        SEEDED.with(|s| s.set(Some(seeded)));
        return n;
    }
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
    use super::*;

    #[test]
    fn numbers_differ() {
        let all: std::collections::HashSet<u64> = (0..1000).map(|_| random_u64()).collect();
        assert_eq!(all.len(), 1000);
    }

    #[test]
    fn a_seeded_thread_repeats_itself() {
        let run = |seed| {
            std::thread::spawn(move || {
                seed_thread(seed);
                (0..100).map(|_| random_u64()).collect::<Vec<_>>()
            })
            .join()
            .unwrap_or_default()
        };
        let (a, b, c) = (run(7), run(7), run(8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            a.iter().collect::<std::collections::HashSet<_>>().len(),
            100
        );
    }
}
