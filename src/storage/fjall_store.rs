//! The fjall-backed store: one database per data directory with the
//! keyspaces `data` (storage key → record), `expiry` (the expiry index)
//! and `meta`.

use super::{BatchOp, Entries, Space, Store, StoreError};
use crate::limits::{DATA_L0_TABLES_COMPACTED, DATA_MEMTABLE_BYTES};
use fjall::compaction::Leveled;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

/// A [`Store`] on fjall.
pub struct FjallStore {
    db: Database,
    data: Keyspace,
    expiry: Keyspace,
    meta: Keyspace,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore").finish_non_exhaustive()
    }
}

fn engine(error: fjall::Error) -> StoreError {
    StoreError::Engine(error.to_string())
}

impl FjallStore {
    /// Opens or creates the store in `dir`.
    ///
    /// # Errors
    /// [`StoreError::Engine`] when fjall cannot open the directory (held by
    /// another process, unreadable, corrupt).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = Database::builder(dir).open().map_err(engine)?;
        let data = db.keyspace("data", data_options).map_err(engine)?;
        let expiry = db
            .keyspace("expiry", KeyspaceCreateOptions::default)
            .map_err(engine)?;
        let meta = db
            .keyspace("meta", KeyspaceCreateOptions::default)
            .map_err(engine)?;
        Ok(Self {
            db,
            data,
            expiry,
            meta,
        })
    }

    fn space(&self, space: Space) -> &Keyspace {
        match space {
            Space::Data => &self.data,
            Space::Expiry => &self.expiry,
        }
    }
}

/// The data keyspace's options, tuned for its writes: every replica write
/// of every key lands here (see the two limits).
fn data_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .max_memtable_size(DATA_MEMTABLE_BYTES)
        .compaction_strategy(Arc::new(
            Leveled::default().with_l0_threshold(DATA_L0_TABLES_COMPACTED),
        ))
}

impl Store for FjallStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .space(space)
            .get(key)
            .map_err(engine)?
            .map(|v| v.to_vec()))
    }

    fn apply(&self, ops: &[BatchOp]) -> Result<(), StoreError> {
        let mut batch = self.db.batch();
        for op in ops {
            let keyspace = self.space(op.space);
            match &op.value {
                Some(value) => batch.insert(keyspace, op.key.as_slice(), &value[..]),
                None => batch.remove(keyspace, op.key.as_slice()),
            }
        }
        batch.commit().map_err(engine)
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        // Write the memtables out as tables, so reopening does not replay
        // the whole journal into memory.
        for keyspace in [&self.data, &self.expiry, &self.meta] {
            keyspace.rotate_memtable_and_wait().map_err(engine)?;
        }
        self.sync()
    }

    fn clear(&self) -> Result<(), StoreError> {
        self.data.clear().map_err(engine)?;
        self.expiry.clear().map_err(engine)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.db.persist(PersistMode::SyncAll).map_err(engine)
    }

    fn scan(
        &self,
        space: Space,
        from: &[u8],
        until: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let end = until.map_or(Bound::Unbounded, Bound::Excluded);
        self.space(space)
            .range::<&[u8], _>((Bound::Included(from), end))
            .take(limit)
            .map(|guard| {
                let (k, v) = guard.into_inner().map_err(engine)?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(name).map_err(engine)?.map(|v| v.to_vec()))
    }

    fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(name, value).map_err(engine)?;
        self.sync()
    }

    fn disk_bytes(&self) -> u64 {
        self.db.disk_space().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = FjallStore::open(dir.path()).expect("open");
            store
                .apply(&[BatchOp::put(Space::Data, b"\0\0k".to_vec(), b"v".to_vec())])
                .expect("apply");
            store.sync().expect("sync");
            store.meta_put("node_id", b"12345678").expect("meta");
        }
        let store = FjallStore::open(dir.path()).expect("reopen");
        assert_eq!(
            store.get(Space::Data, b"\0\0k").expect("get"),
            Some(b"v".to_vec())
        );
        assert_eq!(
            store.meta_get("node_id").expect("meta"),
            Some(b"12345678".to_vec())
        );
        let all = store.scan(Space::Data, b"", None, 10).expect("scan");
        assert_eq!(all, vec![(b"\0\0k".to_vec(), b"v".to_vec())]);
        assert_eq!(
            store
                .scan(Space::Data, b"", Some(b"\0\0k"), 10)
                .expect("scan"),
            vec![]
        );
    }

    /// Waits up to 10 s for `done`, looking every 20 ms.
    fn eventually(done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    #[test]
    fn the_data_memtable_is_flushed_at_its_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FjallStore::open(dir.path()).expect("open");
        // Past the limit, far below fjall's default of 64 MiB.
        let value = vec![7u8; 2048];
        let records = (DATA_MEMTABLE_BYTES as usize + (2 << 20)) / value.len();
        for first in (0..records as u32).step_by(64) {
            let ops: Vec<BatchOp> = (first..(first + 64).min(records as u32))
                .map(|i| BatchOp::put(Space::Data, i.to_be_bytes().to_vec(), value.clone()))
                .collect();
            store.apply(&ops).expect("apply");
        }
        assert!(
            eventually(|| store.data.table_count() > 0),
            "no table after {records} records of {} bytes",
            value.len()
        );
    }

    #[test]
    fn level_0_holds_tables_up_to_the_compaction_threshold() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FjallStore::open(dir.path()).expect("open");
        let tables = 6;
        assert!(tables < usize::from(DATA_L0_TABLES_COMPACTED));
        // Each table holds the same two keys, as tables under writes
        // spread over the keys do: none can be moved down without merging.
        for i in 0..tables as u8 {
            let ops = [b"\0\0a", b"\0\0z"].map(|k| BatchOp::put(Space::Data, k.to_vec(), vec![i]));
            store.apply(&ops).expect("apply");
            store.data.rotate_memtable_and_wait().expect("flush");
        }
        // fjall's default (4) would have merged them by now. (The first
        // table may have moved down to the empty level 1 unmerged.)
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(store.data.table_count(), tables);
    }
}
