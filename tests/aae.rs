//! Anti-entropy on real processes (issue 22; docs/cluster.md,
//! "Anti-entropy"): a replica that missed writes, with read repair off and
//! no hints kept (`--hint-max-bytes 0`), so that only the exchanges can
//! bring it the data, converges without any client read; then, between
//! identical replicas, rounds go on and repair nothing.
//!
//! What each replica holds is read from its own store once the nodes are
//! stopped (`common::replicas`), not through a read that could repair it.

mod common;

use common::replicas::{Placement, Send, assert_on_every_replica, pairs, terminate_all, write_all};
use common::{TestCluster, eventually, info_dynamo_field};
use dynokv::storage::{FjallStore, Space, Store};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long the exchanges may take to bring the replica every key.
const CONVERGE: Duration = Duration::from_secs(90);
/// How often counters are polled.
const POLL: Duration = Duration::from_millis(200);
/// Exchanges (over all nodes) without a repair that show replicas
/// identical: each node of three asks the others of larger ids once a
/// second, so three rounds.
const QUIET_EXCHANGES: i64 = 9;

/// An `INFO dynamo` number of the node at `addr`, `None` while it does
/// not answer.
fn number(addr: SocketAddr, field: &str) -> Option<i64> {
    info_dynamo_field(addr, field).ok()?.parse().ok()
}

/// Waits until the running nodes' `aae_keys_repaired` stops moving for
/// [`QUIET_EXCHANGES`] exchanges in all (identical replicas repair
/// nothing), and returns it; `None` if it never does within `within`.
fn quiet(cluster: &mut TestCluster, within: Duration) -> Option<i64> {
    let mut last: Option<(i64, i64)> = None;
    eventually(within, POLL, || {
        let repaired = total(cluster, "aae_keys_repaired")?;
        let exchanges = total(cluster, "aae_exchanges")?;
        match last {
            Some((was, since)) if was == repaired => {
                (exchanges >= since + QUIET_EXCHANGES).then_some(repaired)
            }
            _ => {
                last = Some((repaired, exchanges));
                None
            }
        }
    })
}

/// The sum of `field` over the running nodes.
fn total(cluster: &mut TestCluster, field: &str) -> Option<i64> {
    cluster
        .running()
        .into_iter()
        .map(|(_, addr)| number(addr, field))
        .sum()
}

// Proves "Missed writes past hints" converge by anti-entropy alone: node
// 3 of 3 is killed (-9) and 3,000 keys are written while it is down
// (1,000 of them overwriting values it holds), with no hints kept and
// read repair off. Restarted (its trees rebuilt by a scan), it gets
// every key by the exchanges, which then go on repairing nothing (the
// replicas are identical): each key's latest value is then on all
// three replicas' own stores, and nothing read a key meanwhile.
#[test]
fn a_replica_that_missed_writes_converges_by_anti_entropy_alone() {
    const KEYS: usize = 3_000;
    let mut cluster = TestCluster::start(
        3,
        &[
            "--partitions",
            "64",
            "--read-repair",
            "off",
            "--hint-max-bytes",
            "0",
            "--aae-interval",
            "1",
        ],
    );
    let placement = Placement::of(&cluster, 0);
    let live: Vec<SocketAddr> = (0..2).map(|i| cluster.node(i).addr()).collect();
    let before = pairs("k", 1_000, 40);
    let replies = write_all(&cluster.addrs(), &before, Send::Pipelined);
    assert!(replies.iter().all(Result::is_ok), "a write failed");

    cluster.kill9(2);
    cluster.wait_converged(3);
    // k0..k999 again, with longer values: node 3 holds the old ones.
    let data = pairs("k", KEYS, 60);
    let replies = write_all(&live, &data, Send::Pipelined);
    assert!(replies.iter().all(Result::is_ok), "a write failed");
    assert_eq!(
        total(&mut cluster, "hints_held"),
        Some(0),
        "no hint is kept"
    );

    let repaired_before = total(&mut cluster, "aae_keys_repaired").expect("INFO");
    let started = Instant::now();
    cluster.restart(2);
    cluster.wait_converged(3);
    // Every key was written while node 3 was down. Two nodes exchange
    // with it (each asks the members of a larger id), so a key may be
    // repaired twice; the exchanges have converged once the count stops
    // moving over several rounds.
    let repaired = quiet(&mut cluster, CONVERGE).map(|n| n - repaired_before);
    let took = started.elapsed();
    let repaired =
        repaired.unwrap_or_else(|| panic!("the exchanges never settled in {CONVERGE:?}"));
    assert!(
        repaired >= KEYS as i64,
        "{repaired} keys repaired, of {KEYS} node 3 lacked"
    );
    eprintln!("anti-entropy repaired {repaired} keys in {took:?} (restart included)");

    terminate_all(&mut cluster);
    assert_on_every_replica(&cluster, &placement, &data);
}

/// The records in the data stores of every node (the nodes stopped).
fn records_on_disk(cluster: &TestCluster) -> usize {
    (0..cluster.len())
        .map(|i| {
            let store = FjallStore::open(cluster.node(i).data_dir())
                .unwrap_or_else(|e| panic!("open node {i}'s store: {e}"));
            store
                .scan(Space::Data, &[], None, usize::MAX)
                .unwrap_or_else(|e| panic!("scan node {i}: {e}"))
                .len()
        })
        .sum()
}

// Proves deletes are reaped once every replica holds them: 2,000 keys
// written then deleted (DEL) on a healthy 3-node cluster: every
// replica removes its tombstones (tombstones_reaped = 3 copies × 2,000),
// no deleted key reads back, the stores hold no record of them, and a
// key written again after its record was reaped (through another node)
// reads back with its new value.
#[test]
fn deleted_keys_are_reaped_from_every_replica_and_never_come_back() {
    const KEYS: usize = 2_000;
    let mut cluster = TestCluster::start(3, &["--partitions", "64", "--aae-interval", "1"]);
    let data = pairs("d", KEYS, 50);
    let replies = write_all(&cluster.addrs(), &data, Send::Pipelined);
    assert!(replies.iter().all(Result::is_ok), "a write failed");
    let mut con = common::connect_sync(cluster.node(0).addr());
    let mut pipe = redis::pipe();
    for (key, _) in &data {
        pipe.cmd("DEL").arg(key);
    }
    let deleted: Vec<i64> = pipe.query(&mut con).expect("DEL");
    assert!(deleted.iter().all(|&n| n == 1));

    let copies = (3 * KEYS) as i64;
    let reaped = eventually(CONVERGE, POLL, || {
        (total(&mut cluster, "tombstones_reaped")? >= copies).then_some(())
    });
    assert!(
        reaped.is_some(),
        "tombstones reaped: {:?} of {copies}",
        total(&mut cluster, "tombstones_reaped")
    );
    assert_eq!(total(&mut cluster, "tombstones_reaped"), Some(copies));
    let mut pipe = redis::pipe();
    for (key, _) in &data {
        pipe.cmd("GET").arg(key);
    }
    let values: Vec<Option<String>> = pipe.query(&mut con).expect("GET");
    assert!(
        values.iter().all(Option::is_none),
        "a deleted key came back"
    );

    // Written again through another node after the reap: a new record,
    // read back whole.
    let mut other = common::connect_sync(cluster.node(2).addr());
    let _: () = redis::cmd("SET")
        .arg("d7")
        .arg("again")
        .query(&mut other)
        .expect("SET");
    let again: Option<String> = redis::cmd("GET").arg("d7").query(&mut con).expect("GET");
    assert_eq!(again.as_deref(), Some("again"));
    let _: i64 = redis::cmd("DEL").arg("d7").query(&mut con).expect("DEL");
    let reaped_again = eventually(CONVERGE, POLL, || {
        (total(&mut cluster, "tombstones_reaped")? >= copies + 3).then_some(())
    });
    assert!(reaped_again.is_some(), "the second delete was not reaped");

    terminate_all(&mut cluster);
    assert_eq!(records_on_disk(&cluster), 0, "records left on disk");
}

// Proves "Disk loss": 100,000 keys on 3 nodes; node 3 is stopped, its
// data directory deleted, and it comes back empty as the same member
// (`--node-id`, its id from DYNAMO MEMBERS). Without any client read (read
// repair off), the exchanges bring every key back to its store, within
// the bound below (it prints the time taken).
#[test]
fn a_node_that_lost_its_disk_is_refilled_by_anti_entropy() {
    const KEYS: usize = 100_000;
    // 100,000 keys of some 70 bytes, fetched and sent back at the
    // default 1 MiB/s by the two nodes that exchange with it: about 15 s
    // of throttle each, and rounds of at most 10,000 keys.
    const BOUND: Duration = Duration::from_secs(120);
    let mut cluster = TestCluster::start(
        3,
        &[
            "--partitions",
            "64",
            "--read-repair",
            "off",
            "--aae-interval",
            "1",
        ],
    );
    let placement = Placement::of(&cluster, 0);
    let data = pairs("disk", KEYS, 40);
    let replies = write_all(&cluster.addrs(), &data, Send::Pipelined);
    assert!(replies.iter().all(Result::is_ok), "a write failed");
    let addr = cluster.node(2).addr().to_string();
    let id = common::dynamo_members(cluster.node(0).addr())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .find(|m| m["client_addr"] == addr)
        .map(|m| m["id"].clone())
        .expect("node 3 is a member");

    let status = cluster.node_mut(2).terminate();
    assert!(status.success(), "node 3 exited with {status}");
    let dir = cluster.node(2).data_dir().to_path_buf();
    std::fs::remove_dir_all(&dir).expect("delete node 3's data directory");
    std::fs::create_dir_all(&dir).expect("an empty data directory");
    let repaired_before = total(&mut cluster, "aae_keys_repaired").expect("INFO");
    let started = Instant::now();
    cluster.node_mut(2).add_args(&["--node-id", &id]);
    cluster.restart(2);
    cluster.wait_converged(3);
    let members = common::dynamo_members(cluster.node(0).addr()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(members.len(), 3, "node 3 came back as itself: {members:?}");
    let repaired = quiet(&mut cluster, BOUND).map(|n| n - repaired_before);
    let took = started.elapsed();
    let repaired = repaired.unwrap_or_else(|| panic!("the exchanges never settled in {BOUND:?}"));
    assert!(
        repaired >= KEYS as i64,
        "{repaired} keys repaired of {KEYS}"
    );
    eprintln!("anti-entropy refilled node 3 with {KEYS} keys ({repaired} repairs) in {took:?}");
    terminate_all(&mut cluster);
    assert_on_every_replica(&cluster, &placement, &data);
}
