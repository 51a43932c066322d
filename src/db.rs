//! Redis's logical databases (SELECT 0..15) as a prefix of the key every
//! layer below the RESP face sees; pure.
//!
//! A client's key `k` in database `d` is stored, replicated and placed as
//! one byte string, its *namespaced key*:
//!
//! - database 0: `k` itself, unless `k` starts with [`ESCAPE`];
//! - otherwise: [`ESCAPE`], `d`, then `k` (so database 0's keys that start
//!   with the escape byte get `ESCAPE 0x00` in front).
//!
//! The mapping is one to one: a namespaced key starting with the escape
//! byte names its database in the next byte, any other is database 0's.
//! Database 0, where nearly every key lives, costs nothing: its keys are
//! the clients' bytes (shared, not copied), and a data directory written
//! before databases existed holds exactly them (format 3; see
//! `storage::load_or_init_meta` for the one case it refuses). The
//! coordinator, peers, replica and store need not know databases exist:
//! only what counts keys per database (DBSIZE, INFO keyspace) or removes
//! one database (FLUSHDB) asks [`db_of`].
//!
//! A namespaced key is the partition's input too, so one client key in
//! two databases lands on unrelated replicas, as two keys would.

use bytes::{BufMut, Bytes, BytesMut};

/// The number of logical databases, as Redis's default `databases 16`.
pub const DATABASES: usize = 16;

/// The first byte of every namespaced key outside database 0 (and of
/// database 0's keys that start with it).
pub const ESCAPE: u8 = 0xFF;

/// The database numbered `n`, if there is one (0..[`DATABASES`]).
#[must_use]
pub fn index(n: i64) -> Option<u8> {
    u8::try_from(n).ok().filter(|&d| usize::from(d) < DATABASES)
}

/// The namespaced key of `key` in database `db`.
#[must_use]
pub fn namespaced(db: u8, key: &Bytes) -> Bytes {
    if db == 0 && key.first() != Some(&ESCAPE) {
        return key.clone();
    }
    let mut out = BytesMut::with_capacity(2 + key.len());
    out.put_u8(ESCAPE);
    out.put_u8(db);
    out.put_slice(key);
    out.freeze()
}

/// The database and client key of a namespaced key. A key this module
/// cannot have made (a peer's bug) is taken as database 0's whole, so
/// the database is always below [`DATABASES`].
#[must_use]
pub fn split(namespaced: &[u8]) -> (u8, &[u8]) {
    match namespaced {
        [ESCAPE, db, key @ ..] if usize::from(*db) < DATABASES => (*db, key),
        key => (0, key),
    }
}

/// The database of a namespaced key.
#[must_use]
pub fn db_of(namespaced: &[u8]) -> u8 {
    split(namespaced).0
}

/// The client key of `namespaced` if it is in database `db`.
#[must_use]
pub fn client_key(db: u8, namespaced: &Bytes) -> Option<Bytes> {
    let (of, key) = split(namespaced);
    (of == db).then(|| namespaced.slice_ref(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn database_zero_keys_are_the_clients_bytes() {
        let key = Bytes::from_static(b"user:1");
        let stored = namespaced(0, &key);
        assert_eq!(stored, key);
        assert_eq!(stored.as_ptr(), key.as_ptr(), "shared, not copied");
        assert_eq!(namespaced(0, &Bytes::new()), Bytes::new());
    }

    #[test]
    fn other_databases_and_escaped_keys_are_prefixed() {
        assert_eq!(&namespaced(9, &Bytes::from_static(b"k"))[..], b"\xff\x09k");
        assert_eq!(
            &namespaced(0, &Bytes::from_static(b"\xffk"))[..],
            b"\xff\x00\xffk"
        );
        assert_eq!(&namespaced(15, &Bytes::new())[..], b"\xff\x0f");
        // What no client key becomes is still some database's.
        assert_eq!(split(b"\xff\x10k"), (0, &b"\xff\x10k"[..]));
        assert_eq!(split(b"\xff"), (0, &b"\xff"[..]));
    }

    #[test]
    fn databases_are_numbered_0_to_15() {
        assert_eq!(index(0), Some(0));
        assert_eq!(index(15), Some(15));
        for bad in [16, -1, 256, i64::MIN] {
            assert_eq!(index(bad), None, "{bad}");
        }
    }

    proptest! {
        // One to one: every (database, key) comes back from its
        // namespaced key, and two distinct pairs never share one.
        #[test]
        fn namespacing_round_trips(
            a in (0u8..16, proptest::collection::vec(any::<u8>(), 0..6)),
            b in (0u8..16, proptest::collection::vec(any::<u8>(), 0..6)),
        ) {
            let (ka, kb) = (Bytes::from(a.1.clone()), Bytes::from(b.1.clone()));
            let (na, nb) = (namespaced(a.0, &ka), namespaced(b.0, &kb));
            prop_assert_eq!(split(&na), (a.0, &a.1[..]));
            prop_assert_eq!(client_key(a.0, &na), Some(ka.clone()));
            prop_assert_eq!(na == nb, a == b);
        }
    }
}
