//! This node's durable storage: the [`Store`] trait, its fjall and in-memory
//! implementations, the record format, the fsync policy, the store's
//! health (whether it can take writes), the storage threads and the
//! record cache in front of the store.
//!
//! Stores are synchronous. Async code reaches them only through the
//! storage threads ([`StorageExecutor`]), never from a runtime thread; the
//! record cache is memory only and may be read from anywhere.
//!
//! A storage key is the partition id (two bytes, big-endian) followed by the
//! user key, so one partition is one contiguous range. The number of
//! partitions (Q), the node id and the data format version are fixed when a
//! data directory is created and kept in the store's meta keyspace.

mod cache;
mod durability;
mod executor;
mod fjall_store;
mod health;
mod memory;
mod slot_key;
mod stage;
mod stage_log;

pub use cache::{CacheStats, RecordCache};
pub use durability::{FsyncPolicy, GroupCommit};
pub use executor::{JobLost, StorageExecutor};
pub use fjall_store::FjallStore;
pub use health::{Failure, Health, HealthReport};
pub use memory::MemoryStore;

use crate::limits::PARTITIONS_MAX;
use crate::task::WorkerStatus;
use crate::version::NodeId;
use bytes::Bytes;
use std::sync::Arc;
use thiserror::Error;

/// The data directory layout this build writes (meta key `format`).
/// Format 2 added the fjall store's `log-0` and `log-1` keyspaces, whose
/// staged writes a release that reads only format 1 would not see.
/// Format 3 moved that log to files in `stage/`, which a release of
/// format 2 would not see either.
/// Format 4 holds the keys of Redis's logical databases (`crate::db`),
/// which a release of format 3 would show as database 0's.
/// (The log's entries have carried a batch's expiry-index entries since
/// format 3; that fjall's journal no longer does changed nothing on disk
/// that a build of format 4 cannot read.)
/// Format 5 adds the `hints` keyspace, whose entries the log carries
/// under a keyspace byte a release of format 4 does not know.
pub const DATA_FORMAT: u32 = 5;

/// The first format with logical databases: in an older directory, a
/// database-0 key that starts with `crate::db::ESCAPE` was stored as it
/// is, and would now be read as another database's.
const DATA_FORMAT_DATABASES: u32 = 4;

/// Formats this build reads. A directory of an older one is marked as
/// [`DATA_FORMAT`] when opened: from then on its log may hold writes.
/// Formats 1 and 2 (whose log was in fjall keyspaces) are refused: no
/// release wrote them, and their readers are gone.
const DATA_FORMATS_READ: [u32; 3] = [3, 4, DATA_FORMAT];

/// Errors from a store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The storage engine failed; fjall poisons itself after a failed
    /// journal write, and the node must not go on serving from it.
    #[error("storage engine: {0}")]
    Engine(String),
    /// A record on disk did not decode.
    #[error("corrupt record for storage key {key:?}: {source}")]
    Corrupt {
        /// The storage key.
        key: Vec<u8>,
        /// What was wrong.
        source: crate::wire::DecodeError,
    },
    /// The staged writes' log (`stage/`) failed.
    #[error("stage log: cannot {what}: {source}")]
    StageLog {
        /// What was being done.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The data directory was made by a release or with settings we cannot use.
    #[error("data directory: {0}")]
    Incompatible(String),
    /// The store cannot take writes: a write or sync failed and no probe
    /// has succeeded since ([`Health`]). Nothing of the refused write was
    /// applied.
    #[error("the data directory cannot take writes: {reason}")]
    Unwritable {
        /// The failure's error.
        reason: String,
    },
    /// A batch too large for one log entry (a bad request, not a disk
    /// failure).
    #[error("a batch of {bytes} bytes is over the 4 GiB a log entry holds")]
    BatchTooLarge {
        /// The batch's encoded size.
        bytes: usize,
    },
}

impl StoreError {
    /// Whether this is a refusal because the store cannot take writes.
    pub fn is_unwritable(&self) -> bool {
        matches!(self, Self::Unwritable { .. })
    }

    /// The same error for another caller of a failed batch: an
    /// [`StoreError::Unwritable`] stays one (its callers answer MISCONF),
    /// the rest become [`StoreError::Engine`] with this one's text.
    pub fn duplicate(&self) -> Self {
        match self {
            Self::Unwritable { reason } => Self::Unwritable {
                reason: reason.clone(),
            },
            other => Self::Engine(other.to_string()),
        }
    }
}

/// The keyspaces of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// Storage key → record.
    Data,
    /// Expiry index: live-until (8 bytes, big-endian ms) ‖ storage key →
    /// empty. One entry per key whose every value expires, kept in the
    /// same batch as the record, so the reaper finds what expired without
    /// scanning the data.
    Expiry,
    /// Hints this node keeps as a fallback for replicas that were down
    /// (`crate::replica::hints`): target node id (8 bytes, big-endian) ‖
    /// storage key → the merged record, and target ‖ nothing → when its
    /// hint window began.
    Hints,
}

impl Space {
    /// Every keyspace but meta, in a fixed order.
    pub const ALL: [Space; 3] = [Space::Data, Space::Expiry, Space::Hints];
}

/// One change in a batch: `Some` puts the bytes, `None` deletes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOp {
    /// Which keyspace.
    pub space: Space,
    /// The key.
    pub key: Vec<u8>,
    /// The new value, or `None` to delete. `Bytes`, so that the record
    /// cache keeps what was stored without a copy.
    pub value: Option<Bytes>,
}

impl BatchOp {
    /// Puts `value` at `key` in `space`.
    pub fn put(space: Space, key: Vec<u8>, value: impl Into<Bytes>) -> Self {
        Self {
            space,
            key,
            value: Some(value.into()),
        }
    }

    /// Deletes `key` from `space`.
    pub fn delete(space: Space, key: Vec<u8>) -> Self {
        Self {
            space,
            key,
            value: None,
        }
    }
}

/// Key-value pairs read by a scan, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// A key-value store of raw bytes, ordered by key.
///
/// Writes become visible when `apply` returns and durable when a later
/// `sync` returns; the caller decides when to sync ([`GroupCommit`]).
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    ///
    /// # Errors
    /// [`StoreError::Engine`] when the engine fails.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Applies all ops atomically (all or none visible after a crash).
    /// On an error nothing of them is applied, now or after a restart.
    ///
    /// # Errors
    /// [`StoreError::Unwritable`] when the write failed or the store
    /// refuses writes ([`Store::health`]); [`StoreError::BatchTooLarge`].
    fn apply(&self, ops: &[BatchOp]) -> Result<(), StoreError>;

    /// Makes every applied op durable.
    ///
    /// # Errors
    /// [`StoreError::Unwritable`] when the sync fails.
    fn sync(&self) -> Result<(), StoreError>;

    /// Up to `limit` entries of `space` with keys at or after `from` and
    /// before `until` (to the end of the space when `None`), in key order.
    ///
    /// # Errors
    /// [`StoreError::Engine`] when the engine fails.
    fn scan(
        &self,
        space: Space,
        from: &[u8],
        until: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError>;

    /// Removes the entries of every keyspace but meta for which `doomed`
    /// holds (FLUSHALL: all of them; FLUSHDB: one database's), as one
    /// change: after a crash, all of them are gone or none.
    ///
    /// # Errors
    /// [`StoreError::Engine`] when the engine fails.
    fn clear(&self, doomed: &Doomed<'_>) -> Result<(), StoreError>;

    /// Reads a meta entry (node id, partition count, format).
    ///
    /// # Errors
    /// [`StoreError::Engine`] when the engine fails.
    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Writes and syncs a meta entry.
    ///
    /// # Errors
    /// [`StoreError::Engine`] when the engine fails.
    fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), StoreError>;

    /// Makes everything durable and cheap to reopen (clean shutdown).
    ///
    /// # Errors
    /// [`StoreError::Engine`] when the engine fails.
    fn checkpoint(&self) -> Result<(), StoreError> {
        self.sync()
    }

    /// Stops and joins the store's own workers, then checkpoints: the
    /// node's shutdown. The store still serves reads and writes after it
    /// (doing inline what its workers did).
    ///
    /// # Errors
    /// [`StoreError::Engine`] when the engine fails.
    fn close(&self) -> Result<(), StoreError> {
        self.checkpoint()
    }

    /// The statuses of the workers the store runs on threads of its own,
    /// for `DYNAMO STATUS` (none for memory).
    fn workers(&self) -> Vec<Arc<WorkerStatus>> {
        Vec::new()
    }

    /// Bytes the store occupies on disk (0 for memory).
    fn disk_bytes(&self) -> u64;

    /// Whether the store takes writes now, and its last failure.
    fn health(&self) -> HealthReport {
        HealthReport::default()
    }

    /// While the store refuses writes: probes whether the disk takes
    /// writes again and, if it does, repairs what the failure left and
    /// takes writes again. Does nothing while the store is healthy.
    ///
    /// # Errors
    /// The probe's or the repair's; the store still refuses writes then.
    fn recover(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Which entries [`Store::clear`] removes: the keyspace and key of each.
pub type Doomed<'a> = dyn Fn(Space, &[u8]) -> bool + 'a;

/// What a data directory was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// This node's identity in the cluster (placement, membership); fixed
    /// for the life of the data directory.
    pub node_id: NodeId,
    /// The id this node mints dots with: the node id until FLUSHALL gives
    /// it a fresh one (see [`renew_dot_id`]).
    pub dot_id: NodeId,
    /// Q, the number of partitions (a power of two).
    pub partitions: u32,
}

/// Reads the meta of a store, or records a new one (random node id,
/// `partitions`) if the store is new.
///
/// # Errors
/// [`StoreError::Incompatible`] for a directory of another format or with
/// unreadable meta; engine errors as they come.
pub fn load_or_init_meta(store: &dyn Store, partitions: u32) -> Result<Meta, StoreError> {
    let bad = |what: &str| StoreError::Incompatible(format!("meta entry {what} is malformed"));
    match store.meta_get("format")? {
        None => {
            if !partitions.is_power_of_two() || partitions > PARTITIONS_MAX {
                return Err(StoreError::Incompatible(format!(
                    "partitions must be a power of two up to {PARTITIONS_MAX}, got {partitions}"
                )));
            }
            // A node id claimed before the store was made (`claim_node_id`).
            let node_id = match store.meta_get("node_id")? {
                Some(bytes) => u64::from_be_bytes(bytes.try_into().map_err(|_| bad("node_id"))?),
                None => random_node_id(),
            };
            let meta = Meta {
                node_id,
                dot_id: node_id,
                partitions,
            };
            store.meta_put("node_id", &meta.node_id.to_be_bytes())?;
            store.meta_put("dot_id", &meta.dot_id.to_be_bytes())?;
            store.meta_put("partitions", &meta.partitions.to_be_bytes())?;
            // Written last: a directory without it is treated as new.
            store.meta_put("format", &DATA_FORMAT.to_be_bytes())?;
            Ok(meta)
        }
        Some(format) => {
            let format = readable_format(&format)?;
            let read_u64 = |name: &'static str| -> Result<u64, StoreError> {
                let bytes = store.meta_get(name)?.ok_or_else(|| bad(name))?;
                Ok(u64::from_be_bytes(bytes.try_into().map_err(|_| bad(name))?))
            };
            let partitions = store
                .meta_get("partitions")?
                .ok_or_else(|| bad("partitions"))?;
            let meta = Meta {
                node_id: read_u64("node_id")?,
                dot_id: read_u64("dot_id")?,
                partitions: u32::from_be_bytes(
                    partitions.try_into().map_err(|_| bad("partitions"))?,
                ),
            };
            if format < DATA_FORMAT_DATABASES {
                refuse_escaped_keys(store, meta.partitions)?;
            }
            if format != DATA_FORMAT {
                store.meta_put("format", &DATA_FORMAT.to_be_bytes())?;
            }
            Ok(meta)
        }
    }
}

/// The data format of a directory whose meta `format` entry is `bytes`,
/// if this build reads it. Stores that keep a log check this before they
/// replay it, so a directory of another format is refused untouched.
///
/// # Errors
/// [`StoreError::Incompatible`], naming the format and what to do.
pub(crate) fn readable_format(bytes: &[u8]) -> Result<u32, StoreError> {
    let format = u32::from_be_bytes(
        bytes
            .try_into()
            .map_err(|_| StoreError::Incompatible("meta entry format is malformed".into()))?,
    );
    if format < DATA_FORMATS_READ[0] {
        return Err(StoreError::Incompatible(format!(
            "this directory is of data format {format}, written by a development build \
             before any release; this release reads formats {DATA_FORMATS_READ:?}. Its data \
             cannot be read here: copy it out with the build that wrote it, or move the \
             directory away and start with an empty one"
        )));
    }
    if !DATA_FORMATS_READ.contains(&format) {
        return Err(StoreError::Incompatible(format!(
            "this directory is of data format {format}, newer than this release reads \
             ({DATA_FORMATS_READ:?}): run the release that wrote it"
        )));
    }
    Ok(format)
}

/// Refuses a directory from before logical databases that holds a key
/// starting with `crate::db::ESCAPE`: one seek per partition.
fn refuse_escaped_keys(store: &dyn Store, partitions: u32) -> Result<(), StoreError> {
    for partition in 0..partitions {
        let partition = partition as u16;
        let from = storage_key(partition, &[crate::db::ESCAPE]);
        let end = partition_end(partition);
        if !store
            .scan(Space::Data, &from, end.as_ref().map(|e| &e[..]), 1)?
            .is_empty()
        {
            return Err(StoreError::Incompatible(format!(
                "this directory (format {}) holds keys that start with byte 0x{:02X}, which \
                 this release reads as another logical database's: copy the data out with \
                 the release that wrote it",
                DATA_FORMAT_DATABASES - 1,
                crate::db::ESCAPE
            )));
        }
    }
    Ok(())
}

/// Gives the node a new dot id and records it. After FLUSHALL the node's
/// write counters restart, so dots minted under the old id could collide
/// with dots of the cleared data that other replicas still hold in their
/// contexts; under a new id they cannot.
///
/// # Errors
/// The store's.
pub fn renew_dot_id(store: &dyn Store, meta: Meta) -> Result<Meta, StoreError> {
    let renewed = Meta {
        dot_id: random_node_id(),
        ..meta
    };
    store.meta_put("dot_id", &renewed.dot_id.to_be_bytes())?;
    Ok(renewed)
}

/// Gives a new store the node id `id` (`--node-id`: a node whose data
/// directory was lost comes back as the member it was, empty, and
/// anti-entropy refills it); a store already made must have that id.
///
/// # Errors
/// [`StoreError::Incompatible`] for a store of another node; the store's.
pub fn claim_node_id(store: &dyn Store, id: NodeId) -> Result<(), StoreError> {
    match store.meta_get("format")? {
        None => store.meta_put("node_id", &id.to_be_bytes()),
        Some(_) => match store.meta_get("node_id")? {
            Some(bytes) if bytes == id.to_be_bytes() => Ok(()),
            _ => Err(StoreError::Incompatible(format!(
                "the data directory belongs to another node than --node-id {id:016x}"
            ))),
        },
    }
}

fn random_node_id() -> NodeId {
    crate::random::random_u64().max(1)
}

/// The storage key of `key` in `partition`: partition id big-endian, then
/// the user key.
pub fn storage_key(partition: u16, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + key.len());
    out.extend_from_slice(&partition.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// Where the storage keys of `partition` end: the first key of the next
/// partition (its id alone), or `None` after the last one. A partition is
/// read as the range from `storage_key(partition, b"")` to this.
pub fn partition_end(partition: u16) -> Option<[u8; 2]> {
    partition.checked_add(1).map(u16::to_be_bytes)
}

/// Splits a storage key into partition id and user key.
pub fn split_storage_key(key: &[u8]) -> Option<(u16, &[u8])> {
    let (head, user) = key.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*head), user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_is_created_once_and_kept() {
        let store = MemoryStore::new();
        let meta = load_or_init_meta(&store, 1024).expect("new meta");
        assert_eq!(meta.partitions, 1024);
        // a second open ignores the requested Q: it was fixed at creation
        assert_eq!(load_or_init_meta(&store, 64).expect("meta"), meta);
        assert!(load_or_init_meta(&MemoryStore::new(), 1000).is_err());
    }

    // Proves the formats read are read and marked current, and formats
    // 1 and 2 and a newer one are refused, unchanged, with a message that
    // names the format and what to do.
    #[test]
    fn formats_read_are_marked_current_and_the_rest_refused_by_name() {
        let format = |store: &MemoryStore| store.meta_get("format").expect("meta").expect("format");
        let store = MemoryStore::new();
        let meta = load_or_init_meta(&store, 64).expect("new meta");
        assert_eq!(format(&store), DATA_FORMAT.to_be_bytes());
        for read in DATA_FORMATS_READ {
            store.meta_put("format", &read.to_be_bytes()).expect("meta");
            assert_eq!(load_or_init_meta(&store, 64).expect("format read"), meta);
            assert_eq!(format(&store), DATA_FORMAT.to_be_bytes());
        }
        for (refused, advice) in [
            (1, "move the directory away"),
            (2, "move the directory away"),
        ]
        .into_iter()
        .chain([(DATA_FORMAT + 1, "run the release that wrote it")])
        {
            store
                .meta_put("format", &refused.to_be_bytes())
                .expect("meta");
            match load_or_init_meta(&store, 64) {
                Err(StoreError::Incompatible(message)) => {
                    assert!(
                        message.contains(&format!("data format {refused},")),
                        "{message}"
                    );
                    assert!(message.contains(advice), "{message}");
                }
                other => panic!("format {refused}: expected a refusal, got {other:?}"),
            }
            assert_eq!(format(&store), refused.to_be_bytes(), "left as it was");
        }
    }

    #[test]
    fn a_directory_from_before_databases_with_escaped_keys_is_refused() {
        let store = MemoryStore::new();
        load_or_init_meta(&store, 64).expect("new meta");
        let old = (DATA_FORMAT_DATABASES - 1).to_be_bytes();
        store.meta_put("format", &old).expect("meta");
        let put = |key: &[u8]| BatchOp::put(Space::Data, storage_key(63, key), b"r".to_vec());
        store.apply(&[put(b"plain")]).expect("apply");
        load_or_init_meta(&store, 64).expect("no escaped key: read");
        store.meta_put("format", &old).expect("meta");
        store.apply(&[put(b"\xffk")]).expect("apply");
        assert!(matches!(
            load_or_init_meta(&store, 64),
            Err(StoreError::Incompatible(_))
        ));
    }

    #[test]
    fn storage_keys_are_partition_prefixed() {
        let key = storage_key(0x0102, b"k");
        assert_eq!(key, [1, 2, b'k']);
        assert_eq!(split_storage_key(&key), Some((0x0102, &b"k"[..])));
    }

    #[test]
    fn a_partition_ends_where_the_next_one_starts() {
        for partition in [0, 1, 0x01ff, u16::MAX - 1] {
            let end = partition_end(partition).expect("not the last");
            assert!(storage_key(partition, &[0xff; 40])[..] < end[..]);
            assert_eq!(end[..], storage_key(partition + 1, b"")[..]);
        }
        assert_eq!(partition_end(u16::MAX), None);
    }
}
