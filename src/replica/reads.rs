//! Reads through the record cache, and the cache's coherence: it holds
//! what the store holds for the keys it has, changed only under the key's
//! lock after the store applied the change (see `write`).

use super::{Replica, corrupt, next_key};
use crate::limits::STORE_WALK_PAGE_RECORDS;
use crate::model::record::{Record, decode_record_shared};
use crate::storage::{Space, StoreError};
use bytes::Bytes;

impl Replica {
    /// Loads the store's records into the record cache, and if all of
    /// them fit, lets the cache answer for keys it lacks
    /// ([`RecordCache::mark_complete`]): in a node whose data fits its
    /// cache, a key never written costs no store lookup. Stops once more
    /// than the cache's budget is read, so opening a large store reads
    /// at most that much.
    pub(super) fn warm_cache(&self) -> Result<(), StoreError> {
        let budget = self.cache.budget();
        if budget == 0 {
            return Ok(());
        }
        let (mut from, mut read) = (Vec::new(), 0);
        loop {
            let page = self
                .store
                .scan(Space::Data, &from, None, STORE_WALK_PAGE_RECORDS)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            from = next_key(last);
            for (skey, bytes) in page {
                read += skey.len() + bytes.len();
                self.cache.put(&skey, Some(Bytes::from(bytes)));
            }
            if read > budget {
                return Ok(());
            }
        }
        self.cache.mark_complete();
        Ok(())
    }

    /// Reads the record of `key`.
    ///
    /// # Errors
    /// Store errors; [`StoreError::Corrupt`] if the record does not decode.
    pub fn read(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let encoded = self.read_encoded(key)?;
        self.decode(key, encoded)
    }

    /// Reads the record of `key` as stored, not decoded: a peer's read is
    /// answered with these bytes as they are.
    ///
    /// # Errors
    /// Store errors.
    pub fn read_encoded(&self, key: &[u8]) -> Result<Option<Bytes>, StoreError> {
        let skey = self.storage_key(key);
        if let Some(cached) = self.cache.get(&skey) {
            return Ok(cached);
        }
        // Filling the cache from the store must not race a write of the key.
        let _guards = self.locks.lock(std::iter::once(skey.as_slice()));
        let stored = self.stored(&skey)?;
        self.cache.put(&skey, stored.clone());
        Ok(stored)
    }

    /// Reads `keys` as stored from the record cache alone: `None` unless
    /// every one of them is cached. Never touches the store, so async
    /// code may call it.
    pub fn read_encoded_cached(&self, keys: &[Bytes]) -> Option<Vec<Option<Bytes>>> {
        keys.iter()
            .map(|key| self.cache.get(&self.storage_key(key)))
            .collect()
    }

    /// Decodes what [`Replica::read_encoded`] gave for `key`; the values
    /// share the bytes.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the record does not decode.
    pub fn decode(&self, key: &[u8], encoded: Option<Bytes>) -> Result<Option<Record>, StoreError> {
        encoded
            .map(|bytes| {
                decode_record_shared(&bytes).map_err(|e| corrupt(&self.storage_key(key), e))
            })
            .transpose()
    }

    /// Reads a record for a write: the cache, else the store. The caller
    /// holds the key's lock; the write's commit fills the record cache.
    pub(super) fn read_for_write(&self, skey: &[u8]) -> Result<Option<Record>, StoreError> {
        let bytes = match self.cache.get(skey) {
            Some(cached) => cached,
            None => self.stored(skey)?,
        };
        decode_cached(skey, bytes)
    }

    /// The store's bytes for a storage key.
    fn stored(&self, skey: &[u8]) -> Result<Option<Bytes>, StoreError> {
        Ok(self.store.get(Space::Data, skey)?.map(Bytes::from))
    }
}

/// Decodes a record the cache or the store gave; its values share the bytes.
pub(super) fn decode_cached(
    skey: &[u8],
    bytes: Option<Bytes>,
) -> Result<Option<Record>, StoreError> {
    bytes
        .map(|bytes| decode_record_shared(&bytes).map_err(|e| corrupt(skey, e)))
        .transpose()
}
