//! Read-modify-write under concurrency, with a real client (the `redis`
//! crate, one blocking connection per client thread) against real node
//! processes: the WATCH/MULTI/EXEC optimistic-locking loop and INCR, on
//! one node and through the three nodes of a cluster. Every acknowledged
//! update must be in the final value: no silent loss.

#![expect(
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::{TestCluster, TestNode, connect_sync};
use redis::Value;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Increments each WATCH client makes.
const INCREMENTS: usize = 300;
/// Upper bound on one scenario's client work.
const WORK_TIMEOUT: Duration = Duration::from_secs(180);
/// Attempts one increment may take (a bound, far above what contention
/// between four clients needs).
const ATTEMPTS_MAX: usize = 10_000;

/// The optimistic-locking loop of redis-py's `transaction()` helper:
/// `WATCH key; v = GET key; MULTI; SET key v+1; EXEC`, retried while EXEC
/// aborts. Returns (successful EXECs, aborted EXECs).
fn watch_loop(addr: SocketAddr, key: &str, increments: usize, deadline: Instant) -> (usize, usize) {
    let mut con = connect_sync(addr);
    let (mut done, mut aborted) = (0, 0);
    for _ in 0..increments {
        let mut attempts = 0;
        loop {
            assert!(
                Instant::now() < deadline,
                "WATCH loop past {WORK_TIMEOUT:?}"
            );
            attempts += 1;
            assert!(
                attempts <= ATTEMPTS_MAX,
                "{ATTEMPTS_MAX} aborted EXECs in a row"
            );
            let _: () = redis::cmd("WATCH").arg(key).query(&mut con).expect("WATCH");
            let value: Option<i64> = redis::cmd("GET").arg(key).query(&mut con).expect("GET");
            let _: () = redis::cmd("MULTI").query(&mut con).expect("MULTI");
            let _: () = redis::cmd("SET")
                .arg(key)
                .arg(value.unwrap_or(0) + 1)
                .query(&mut con)
                .expect("queue SET");
            let reply: Value = redis::cmd("EXEC").query(&mut con).expect("EXEC");
            match reply {
                Value::Array(replies) => {
                    assert_eq!(replies, vec![Value::Okay], "EXEC's replies");
                    done += 1;
                    break;
                }
                Value::Nil => aborted += 1,
                other => panic!("EXEC answered {other:?}"),
            }
        }
    }
    (done, aborted)
}

/// Runs `clients` WATCH loops at once, client `i` through `addrs[i %
/// addrs.len()]`; returns the successful and aborted EXECs in total.
fn watch_loops(addrs: &[SocketAddr], clients: usize, key: &str) -> (usize, usize) {
    let deadline = Instant::now() + WORK_TIMEOUT;
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (addr, key) = (addrs[i % addrs.len()], key.to_owned());
            std::thread::spawn(move || watch_loop(addr, &key, INCREMENTS, deadline))
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("a WATCH client panicked"))
        .fold((0, 0), |(d, a), (done, aborted)| (d + done, a + aborted))
}

/// The value of `key` and its number of live siblings (VGET), read
/// through `addr`.
fn value_and_siblings(addr: SocketAddr, key: &str) -> (Option<i64>, usize) {
    let mut con = connect_sync(addr);
    let value: Option<i64> = redis::cmd("GET").arg(key).query(&mut con).expect("GET");
    let (_, siblings): (Vec<u8>, Vec<Vec<u8>>) =
        redis::cmd("VGET").arg(key).query(&mut con).expect("VGET");
    (value, siblings.len())
}

#[test]
fn watch_loop_on_one_node_loses_no_update() {
    // Proves WATCH's guarantee on one node: 4 clients × 300 optimistic increments of one key end at exactly 1,200 with one sibling. Before EXEC checked its watched keys under the replica's key lock, two EXECs could both pass the check and the later SET hid the earlier (ends near 1,050).
    let node = TestNode::start(&[]);
    let (done, aborted) = watch_loops(&[node.addr()], 4, "counter");
    println!("one node: {done} EXECs succeeded, {aborted} aborted");
    assert_eq!(done, 4 * INCREMENTS);
    assert_eq!(
        value_and_siblings(node.addr(), "counter"),
        (Some(done as i64), 1)
    );
}

#[test]
fn watch_loop_through_three_nodes_loses_no_update() {
    // Proves WATCH's guarantee across coordinators of a healthy 3-node cluster: one client per node × 300 optimistic increments end at exactly the number of successful EXECs, one sibling, read through every node (before: 900 EXECs, final 570).
    let cluster = TestCluster::start(3, &[]);
    let addrs = cluster.addrs();
    let (done, aborted) = watch_loops(&addrs, 3, "counter");
    println!("three nodes: {done} EXECs succeeded, {aborted} aborted");
    assert_eq!(done, 3 * INCREMENTS);
    for addr in addrs {
        assert_eq!(
            value_and_siblings(addr, "counter"),
            (Some(done as i64), 1),
            "through {addr}"
        );
    }
}

/// `INCR key` `count` times through `addr`; returns the acknowledged ones.
fn incr_loop(addr: SocketAddr, key: &str, count: usize, deadline: Instant) -> usize {
    let mut con = connect_sync(addr);
    let mut acked = 0;
    for _ in 0..count {
        assert!(Instant::now() < deadline, "INCR loop past {WORK_TIMEOUT:?}");
        let _: i64 = redis::cmd("INCR").arg(key).query(&mut con).expect("INCR");
        acked += 1;
    }
    acked
}

#[test]
fn incr_through_three_nodes_sums_exactly() {
    // Proves concurrent INCRs through every node of a healthy 3-node cluster (3 clients per node × 500) sum exactly, with one sibling: they all run at the key's first live replica, under its lock. Before, each node incremented its own view and 9,000 INCRs ended near 6,100.
    let cluster = TestCluster::start(3, &[]);
    let addrs = cluster.addrs();
    let deadline = Instant::now() + WORK_TIMEOUT;
    let threads: Vec<_> = (0..9)
        .map(|i| {
            let addr = addrs[i % addrs.len()];
            std::thread::spawn(move || incr_loop(addr, "hits", 500, deadline))
        })
        .collect();
    let acked: usize = threads
        .into_iter()
        .map(|t| t.join().expect("an INCR client panicked"))
        .sum();
    println!("three nodes: {acked} INCRs acknowledged");
    assert_eq!(acked, 4_500);
    for addr in addrs {
        assert_eq!(
            value_and_siblings(addr, "hits"),
            (Some(acked as i64), 1),
            "through {addr}"
        );
    }
}

/// Rounds of [`moves_race`].
const MOVE_ROUNDS: usize = 60;
/// Clients racing to move one key in a round, each to its own database.
const MOVERS: usize = 4;

/// How a racing client moves the key.
#[derive(Debug, Clone, Copy)]
enum Move {
    /// `MOVE key <c + 1>`: to its own database.
    ToDatabase,
    /// `RENAME key key:to:<c>`: to its own name.
    Rename,
}

/// Each round: `key:<round>` is set in database 0, then [`MOVERS`]
/// clients (client `c` through `addrs[c % len]`) move it at once, each
/// to its own place (`how`). Returns, per round, how many moves succeeded
/// and in how many places the value then is (source included).
fn moves_race(addrs: &[SocketAddr], how: Move) -> Vec<(usize, usize)> {
    let mut setup = connect_sync(addrs[0]);
    (0..MOVE_ROUNDS)
        .map(|round| {
            let key = format!("key:{round}");
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(round)
                .query(&mut setup)
                .expect("SET");
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(MOVERS));
            let movers: Vec<_> = (0..MOVERS)
                .map(|c| {
                    let (addr, key, barrier) =
                        (addrs[c % addrs.len()], key.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        let mut con = connect_sync(addr);
                        barrier.wait();
                        match how {
                            Move::ToDatabase => {
                                let moved: i64 = redis::cmd("MOVE")
                                    .arg(&key)
                                    .arg(c + 1)
                                    .query(&mut con)
                                    .expect("MOVE");
                                moved == 1
                            }
                            Move::Rename => {
                                let renamed: redis::RedisResult<()> = redis::cmd("RENAME")
                                    .arg(&key)
                                    .arg(format!("{key}:to:{c}"))
                                    .query(&mut con);
                                match renamed {
                                    Ok(()) => true,
                                    Err(e) if e.to_string().contains("no such key") => false,
                                    Err(e) => panic!("RENAME: {e}"),
                                }
                            }
                        }
                    })
                })
                .collect();
            let won = movers
                .into_iter()
                .map(|m| m.join().expect("a mover panicked"))
                .filter(|&m| m)
                .count();
            let mut con = connect_sync(addrs[0]);
            let places: Vec<(usize, String)> = (0..=MOVERS)
                .map(|c| match how {
                    Move::ToDatabase => (c, key.clone()),
                    Move::Rename if c == 0 => (0, key.clone()),
                    Move::Rename => (0, format!("{key}:to:{}", c - 1)),
                })
                .collect();
            let held = places
                .iter()
                .filter(|(db, name)| {
                    let _: () = redis::cmd("SELECT")
                        .arg(*db)
                        .query(&mut con)
                        .expect("SELECT");
                    let value: Option<usize> =
                        redis::cmd("GET").arg(name).query(&mut con).expect("GET");
                    value == Some(round)
                })
                .count();
            (won, held)
        })
        .collect()
}

#[test]
fn racing_moves_of_one_key_move_it_once() {
    // Proves MOVE and RENAME are read-modify-writes that lose nothing and copy nothing under concurrency: 4 clients MOVE (or RENAME) one key at once, each to its own database (or name), 60 rounds each on one node and through the three nodes of a cluster; every round exactly one succeeds and the value is in exactly one place. Before, the source's delete was unconditional, and on one node 44 rounds of 60 left the key in two to four databases.
    let node = TestNode::start(&[]);
    let cluster = TestCluster::start(3, &[]);
    for (what, addrs, how) in [
        ("one node", vec![node.addr()], Move::ToDatabase),
        ("one node", vec![node.addr()], Move::Rename),
        ("three nodes", cluster.addrs(), Move::ToDatabase),
        ("three nodes", cluster.addrs(), Move::Rename),
    ] {
        let what = format!("{what}, {how:?}");
        let rounds = moves_race(&addrs, how);
        let bad: Vec<_> = rounds
            .iter()
            .enumerate()
            .filter(|&(_, &(won, held))| (won, held) != (1, 1))
            .collect();
        println!(
            "{what}: {} rounds, {} not moved exactly once",
            rounds.len(),
            bad.len()
        );
        assert!(
            bad.is_empty(),
            "{what}: (round, (moves won, places holding it)): {bad:?}"
        );
    }
}
