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
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long the exchanges may take to bring the replica every key.
const CONVERGE: Duration = Duration::from_secs(90);
/// How often counters are polled.
const POLL: Duration = Duration::from_millis(200);

/// An `INFO dynamo` number of the node at `addr`, `None` while it does
/// not answer.
fn number(addr: SocketAddr, field: &str) -> Option<i64> {
    info_dynamo_field(addr, field).ok()?.parse().ok()
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
// every key by the exchanges: each key's latest value is then on all
// three replicas' own stores, and nothing read a key meanwhile. Then
// more rounds between the identical replicas repair no key.
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
    // Every key was written while node 3 was down: each is repaired once
    // when the exchanges reach it (KEYS in all), and then no more.
    let converged = eventually(CONVERGE, POLL, || {
        let repaired = total(&mut cluster, "aae_keys_repaired")? - repaired_before;
        (repaired >= KEYS as i64).then_some(repaired)
    });
    let repaired = converged.unwrap_or_else(|| {
        panic!(
            "the exchanges repaired {:?} keys of {KEYS} in {CONVERGE:?}",
            total(&mut cluster, "aae_keys_repaired").map(|n| n - repaired_before)
        )
    });
    let took = started.elapsed();
    eprintln!("anti-entropy repaired {repaired} keys in {took:?} (restart included)");

    // Identical replicas: rounds go on (every node asks those of a larger
    // id each second) and find nothing to repair.
    let settled = total(&mut cluster, "aae_keys_repaired").expect("INFO");
    let exchanges = total(&mut cluster, "aae_exchanges").expect("INFO");
    let more = eventually(Duration::from_secs(30), POLL, || {
        (total(&mut cluster, "aae_exchanges")? >= exchanges + 6).then_some(())
    });
    assert!(more.is_some(), "the exchanges stopped");
    assert_eq!(
        total(&mut cluster, "aae_keys_repaired"),
        Some(settled),
        "identical replicas repaired keys"
    );

    terminate_all(&mut cluster);
    assert_on_every_replica(&cluster, &placement, &data);
}
