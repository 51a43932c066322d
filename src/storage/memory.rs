//! An in-memory store for unit tests and deterministic simulation. It keeps
//! what was synced apart from what was only applied, so a simulated crash
//! ([`MemoryStore::crash`]) loses exactly what a real one could.

use super::{BatchOp, Doomed, Entries, Space, Store, StoreError};
use std::collections::{BTreeMap, HashMap};

type Map = BTreeMap<(Space, Vec<u8>), Vec<u8>>;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A [`Store`] in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    data: Map,
    /// Ops applied since the last sync, oldest first.
    unsynced: Vec<BatchOp>,
    /// The data as of the last sync.
    synced: Map,
    meta: HashMap<String, Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything applied since the last sync, as a crash would.
    pub fn crash(&self) {
        let mut inner = self.lock();
        inner.unsynced.clear();
        inner.data = inner.synced.clone();
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn apply_to(map: &mut Map, op: BatchOp) {
    match op.value {
        Some(value) => {
            map.insert((op.space, op.key), value.to_vec());
        }
        None => {
            map.remove(&(op.space, op.key));
        }
    }
}

impl Store for MemoryStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().data.get(&(space, key.to_vec())).cloned())
    }

    fn apply(&self, ops: &[BatchOp]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for op in ops {
            apply_to(&mut inner.data, op.clone());
            inner.unsynced.push(op.clone());
        }
        Ok(())
    }

    fn clear(&self, doomed: &Doomed<'_>) -> Result<(), StoreError> {
        let deletes: Vec<BatchOp> = self
            .lock()
            .data
            .keys()
            .filter(|(space, key)| doomed(*space, key))
            .map(|(space, key)| BatchOp::delete(*space, key.clone()))
            .collect();
        self.apply(&deletes)
    }

    fn sync(&self) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let ops = std::mem::take(&mut inner.unsynced);
        for op in ops {
            apply_to(&mut inner.synced, op);
        }
        Ok(())
    }

    fn scan(
        &self,
        space: Space,
        from: &[u8],
        until: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        Ok(self
            .lock()
            .data
            .range((space, from.to_vec())..)
            .take_while(|((s, k), _)| *s == space && until.is_none_or(|u| k.as_slice() < u))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().meta.get(name).cloned())
    }

    fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.lock().meta.insert(name.to_owned(), value.to_vec());
        Ok(())
    }

    fn disk_bytes(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_stops_before_its_end() {
        let store = MemoryStore::new();
        let ops: Vec<BatchOp> = [&b"a"[..], b"b", b"c"]
            .iter()
            .map(|k| BatchOp::put(Space::Data, k.to_vec(), b"v".to_vec()))
            .collect();
        store.apply(&ops).expect("apply");
        let keys = |until: Option<&[u8]>| -> Vec<Vec<u8>> {
            let rows = store.scan(Space::Data, b"a", until, 10).expect("scan");
            rows.into_iter().map(|(k, _)| k).collect()
        };
        assert_eq!(keys(None), [b"a", b"b", b"c"]);
        assert_eq!(keys(Some(b"c")), [b"a", b"b"]);
        assert_eq!(keys(Some(b"a")), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn crash_keeps_only_synced_writes() {
        let store = MemoryStore::new();
        let put = |k: &[u8], v: &[u8]| BatchOp::put(Space::Data, k.to_vec(), v.to_vec());
        store.apply(&[put(b"a", b"1")]).expect("apply");
        store.sync().expect("sync");
        store.apply(&[put(b"b", b"2")]).expect("apply");
        store.crash();
        assert_eq!(
            store.get(Space::Data, b"a").expect("get"),
            Some(b"1".to_vec())
        );
        assert_eq!(store.get(Space::Data, b"b").expect("get"), None);
        store.clear(&|_, _| true).expect("clear");
        store.sync().expect("sync");
        store.crash();
        assert_eq!(
            store.scan(Space::Data, b"", None, 10).expect("scan"),
            vec![]
        );
    }
}
