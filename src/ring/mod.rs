//! Placement, pure: key → partition. (The preference lists over the
//! membership view join this module with the cluster.)
//!
//! The hash is fixed forever: it decides where every stored key lives, so
//! changing it would orphan existing data directories.

use xxhash_rust::xxh3::xxh3_64;

/// The partition of `key` among `partitions` (Q, a power of two).
pub fn partition_of(key: &[u8], partitions: u32) -> u16 {
    debug_assert!(partitions.is_power_of_two() && partitions <= 1 << 16);
    (xxh3_64(key) & u64::from(partitions - 1)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_hash_is_pinned() {
        // Changing these moves stored keys: never update them casually.
        assert_eq!(partition_of(b"foo", 4096), (xxh3_64(b"foo") & 4095) as u16);
        assert_eq!(partition_of(b"", 1), 0);
        let spread: std::collections::HashSet<u16> = (0..10_000u32)
            .map(|i| partition_of(&i.to_be_bytes(), 64))
            .collect();
        assert_eq!(spread.len(), 64);
    }
}
