//! What each replica holds, read from its own store: a cluster's
//! placement as `DYNAMO RING` names it, writes spread over nodes, and the
//! check that every acknowledged key is on every replica the ring names
//! for it (the nodes stopped, each data directory opened with
//! [`FjallStore`]), not through a read that could repair it.

#![allow(
    clippy::expect_used,
    reason = "test helpers: a failed expect is the failure report"
)]

use super::{TestCluster, connect_sync, dynamo_members, eventually};
use dynokv::model::record::{decode_record, winner_value};
use dynokv::ring::partition_of;
use dynokv::storage::{FjallStore, Space, Store, storage_key};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Commands per pipeline.
pub const BATCH: usize = 500;
/// How long a ring may take to name only listed members.
const SETTLE: Duration = Duration::from_secs(60);
/// How often it is polled.
const POLL: Duration = Duration::from_millis(100);

/// `count` keys `{prefix}{i}`, each with a value of `size` bytes that
/// names its key (a copy under the wrong key would not match).
pub fn pairs(prefix: &str, count: usize, size: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| {
            let key = format!("{prefix}{i}");
            let mut value = format!("{key}=");
            while value.len() < size {
                value.push('v');
            }
            (key, value)
        })
        .collect()
}

/// Each partition's replicas as node indexes, from `DYNAMO RING`.
pub struct Placement(pub Vec<Vec<usize>>);

impl Placement {
    /// The ring as node `at` of `cluster` sees it; its member names are
    /// mapped to nodes by their client addresses (`DYNAMO MEMBERS`).
    ///
    /// # Panics
    /// If the ring names a node `DYNAMO MEMBERS` does not list (one
    /// removed, before the layout settles: see [`Placement::settled`]).
    pub fn of(cluster: &TestCluster, at: usize) -> Placement {
        Self::try_of(cluster, at).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Placement::of`], once the ring names only listed members.
    pub fn settled(cluster: &TestCluster, at: usize) -> Placement {
        let mut last = String::new();
        let settled = eventually(SETTLE, POLL, || {
            Self::try_of(cluster, at).map_err(|e| last = e).ok()
        });
        settled.unwrap_or_else(|| panic!("the ring never settled: {last}"))
    }

    pub fn try_of(cluster: &TestCluster, at: usize) -> Result<Placement, String> {
        let addr = cluster.node(at).addr();
        let by_addr: BTreeMap<String, usize> = cluster
            .addrs()
            .iter()
            .enumerate()
            .map(|(i, a)| (a.to_string(), i))
            .collect();
        let by_name: BTreeMap<String, usize> = dynamo_members(addr)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|row| {
                let index = by_addr[&row["client_addr"]];
                (row["name"].clone(), index)
            })
            .collect();
        let mut con = connect_sync(addr);
        let rows: Vec<redis::Value> = redis::cmd("DYNAMO")
            .arg("RING")
            .query(&mut con)
            .expect("DYNAMO RING");
        let text = |v: &redis::Value| match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("a replica name {other:?}"),
        };
        let ring: Vec<Vec<usize>> = rows
            .iter()
            .enumerate()
            .map(|(p, row)| match row {
                redis::Value::Array(items) => {
                    assert_eq!(items.first(), Some(&redis::Value::Int(p as i64)));
                    items[1..]
                        .iter()
                        .map(|n| {
                            let name = text(n);
                            by_name
                                .get(&name)
                                .copied()
                                .ok_or_else(|| format!("partition {p}: {name} is no member"))
                        })
                        .collect()
                }
                other => panic!("a ring row {other:?}"),
            })
            .collect::<Result<_, String>>()?;
        assert!(ring.iter().all(|r| r.len() == 3), "{:?}", ring);
        Ok(Placement(ring))
    }

    /// Q.
    pub fn partitions(&self) -> u32 {
        self.0.len() as u32
    }

    /// The replicas of `key`.
    pub fn replicas(&self, key: &str) -> &[usize] {
        &self.0[usize::from(partition_of(key.as_bytes(), self.partitions()))]
    }

    /// How many of `key`'s replicas are in `down`.
    pub fn down(&self, key: &str, down: &[usize]) -> usize {
        self.replicas(key)
            .iter()
            .filter(|r| down.contains(r))
            .count()
    }
}

/// How [`write_all`] sends its SETs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Send {
    /// [`BATCH`] per pipeline.
    Pipelined,
    /// One per round trip, each answered before the next is sent (a
    /// pipelined run is `a_pipelined_run_fails_only_its_keys_without_a_quorum`).
    OneByOne,
}

/// SETs every pair, the batches of [`BATCH`] spread over `addrs` (one
/// thread each), sent as `how` says; returns each SET's reply in order:
/// `Ok`, or the error.
pub fn write_all(
    addrs: &[SocketAddr],
    pairs: &[(String, String)],
    how: Send,
) -> Vec<Result<(), redis::RedisError>> {
    let chunks: Vec<&[(String, String)]> = pairs.chunks(BATCH).collect();
    let mut replies: Vec<Vec<redis::RedisResult<()>>> =
        (0..chunks.len()).map(|_| Vec::new()).collect();
    std::thread::scope(|s| {
        let threads: Vec<_> = addrs
            .iter()
            .enumerate()
            .map(|(t, &addr)| {
                let mine: Vec<(usize, &[(String, String)])> = chunks
                    .iter()
                    .enumerate()
                    .filter(|(c, _)| c % addrs.len() == t)
                    .map(|(c, chunk)| (c, *chunk))
                    .collect();
                s.spawn(move || {
                    let mut con = connect_sync(addr);
                    let mut out = Vec::new();
                    for (c, chunk) in mine {
                        let got: Vec<redis::RedisResult<()>> = match how {
                            Send::Pipelined => {
                                let mut pipe = redis::pipe();
                                pipe.ignore_errors();
                                for (key, value) in chunk {
                                    pipe.cmd("SET").arg(key).arg(value);
                                }
                                pipe.query(&mut con)
                                    .unwrap_or_else(|e| panic!("pipeline through {addr}: {e}"))
                            }
                            Send::OneByOne => chunk
                                .iter()
                                .map(|(key, value)| {
                                    redis::cmd("SET").arg(key).arg(value).query(&mut con)
                                })
                                .collect(),
                        };
                        out.push((c, got));
                    }
                    out
                })
            })
            .collect();
        for thread in threads {
            for (c, got) in thread.join().expect("writer thread") {
                replies[c] = got;
            }
        }
    });
    replies.into_iter().flatten().collect()
}

/// Sends SIGTERM to every running node, each exiting cleanly.
pub fn terminate_all(cluster: &mut TestCluster) {
    for (i, _) in cluster.running() {
        let status = cluster.node_mut(i).terminate();
        assert!(status.success(), "node {i} exited with {status}");
    }
}

/// Opens each node's data directory (every process stopped) and returns
/// the keys of `pairs` that some of their replicas lack (or hold with
/// another value), with those replicas, and how many copies were checked.
pub fn copies_missing(
    cluster: &TestCluster,
    placement: &Placement,
    pairs: &[(String, String)],
) -> (Vec<(String, Vec<usize>)>, usize) {
    let stores: Vec<FjallStore> = (0..cluster.len())
        .map(|i| {
            FjallStore::open(cluster.node(i).data_dir())
                .unwrap_or_else(|e| panic!("open node {i}'s store: {e}"))
        })
        .collect();
    let now = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms");
    let mut missing = Vec::new();
    let mut checked = 0;
    for (key, value) in pairs {
        let skey = storage_key(
            partition_of(key.as_bytes(), placement.partitions()),
            key.as_bytes(),
        );
        let lacking: Vec<usize> = placement
            .replicas(key)
            .iter()
            .copied()
            .filter(|&r| {
                checked += 1;
                let stored = stores[r]
                    .get(Space::Data, &skey)
                    .unwrap_or_else(|e| panic!("node {r}: get {key}: {e}"));
                let record = stored.map(|b| decode_record(&b).expect("a record decodes"));
                record
                    .as_ref()
                    .and_then(|r| winner_value(r, now))
                    .map(|v| &v[..])
                    != Some(value.as_bytes())
            })
            .collect();
        if !lacking.is_empty() {
            missing.push((key.clone(), lacking));
        }
    }
    (missing, checked)
}

/// Asserts every key of `pairs` is on all its replicas' own stores.
pub fn assert_on_every_replica(
    cluster: &TestCluster,
    placement: &Placement,
    pairs: &[(String, String)],
) {
    let (missing, checked) = copies_missing(cluster, placement, pairs);
    assert!(
        missing.is_empty(),
        "{} of {} keys lack copies on their replicas' stores (key, replicas lacking it), \
         first ones: {:?}",
        missing.len(),
        pairs.len(),
        &missing[..missing.len().min(10)]
    );
    eprintln!(
        "store check: {} keys, {checked} copies, each on its replica's own store",
        pairs.len()
    );
}
