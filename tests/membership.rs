//! Membership changes on real processes (docs/cluster.md, "Handoff"): a
//! join under load, a leave, the remove of a dead node, and crashes of
//! both ends of a handoff. Each test checks what clients see (every
//! acknowledged key readable throughout) and what each replica holds
//! (`keys_held`: every key on exactly N nodes once the layout settled and
//! the old copies are dropped).

// `allow-expect-in-tests` covers `#[test]` bodies only, not the helpers
// here; in a test, a failed expect is the failure report we want.
#![expect(
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::{TestCluster, connect_sync, dynamo_members, eventually, info_dynamo_field};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Q for these clusters: small enough that a move is quick, large enough
/// that a node's share is measured to a few percent.
const Q: &str = "256";
/// Replicas per key (the default).
const N: u64 = 3;
/// Keys written and read per request.
const BATCH: usize = 500;
/// How long a layout change may take to settle, old copies dropped.
const SETTLE_MAX: Duration = Duration::from_secs(120);

fn args() -> Vec<&'static str> {
    vec!["--partitions", Q]
}

/// An `INFO dynamo` number of the node at `addr`.
fn number(addr: SocketAddr, field: &str) -> u64 {
    let text = info_dynamo_field(addr, field).unwrap_or_else(|e| panic!("{e}"));
    text.parse()
        .unwrap_or_else(|e| panic!("{field} = {text:?}: {e}"))
}

fn value(prefix: &str, i: usize, size: usize) -> String {
    let mut v = format!("{prefix}{i}:");
    while v.len() < size {
        v.push('x');
    }
    v
}

/// Writes `prefix{i}` for `i` in `range` through `addr`, pipelined.
fn load(addr: SocketAddr, prefix: &str, range: std::ops::Range<usize>, size: usize) {
    let mut con = connect_sync(addr);
    let ids: Vec<usize> = range.collect();
    for chunk in ids.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            pipe.cmd("SET")
                .arg(format!("{prefix}{i}"))
                .arg(value(prefix, i, size))
                .ignore();
        }
        let () = pipe
            .query(&mut con)
            .unwrap_or_else(|e| panic!("load {prefix}: {e}"));
    }
}

/// The keys of `ids` that do not read back as written through `addr`.
fn missing(
    addr: SocketAddr,
    prefix: &str,
    ids: &[usize],
    size: usize,
) -> Result<Vec<usize>, String> {
    let mut con = common::try_connect_sync(addr).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for chunk in ids.chunks(BATCH) {
        let keys: Vec<String> = chunk.iter().map(|i| format!("{prefix}{i}")).collect();
        let got: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query(&mut con)
            .map_err(|e| e.to_string())?;
        for (&i, v) in chunk.iter().zip(got) {
            if v.as_deref() != Some(value(prefix, i, size).as_str()) {
                out.push(i);
            }
        }
    }
    Ok(out)
}

/// Waits until the running nodes' copies add up to N per key (the layout
/// settled and every old copy dropped): `keys` distinct keys in all.
fn wait_exactly_n_copies(cluster: &mut TestCluster, keys: u64) {
    let addrs: Vec<SocketAddr> = cluster.running().into_iter().map(|(_, a)| a).collect();
    let mut last = Vec::new();
    let held = eventually(SETTLE_MAX, Duration::from_millis(250), || {
        last = addrs.iter().map(|&a| number(a, "keys_held")).collect();
        (last.iter().sum::<u64>() == N * keys).then_some(())
    });
    assert!(
        held.is_some(),
        "the nodes hold {last:?} keys ({} in all), not {N} × {keys}",
        last.iter().sum::<u64>()
    );
    eprintln!("keys held per node: {last:?} = {N} × {keys}");
}

fn dbsize(addr: SocketAddr) -> u64 {
    let mut con = connect_sync(addr);
    redis::cmd("DBSIZE").query(&mut con).expect("DBSIZE")
}

fn member_field(addr: SocketAddr, name: &str, field: &str) -> String {
    let rows = dynamo_members(addr).unwrap_or_else(|e| panic!("{e}"));
    let row = rows
        .iter()
        .find(|r| r.get("name").map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no member {name} in {rows:?}"));
    row.get(field).cloned().unwrap_or_default()
}

fn name_of(addr: SocketAddr) -> String {
    info_dynamo_field(addr, "node_id")
        .ok()
        .and_then(|id| {
            dynamo_members(addr)
                .ok()?
                .into_iter()
                .find(|r| r.get("id") == Some(&id))?
                .get("name")
                .cloned()
        })
        .unwrap_or_else(|| panic!("no name for {addr}"))
}

// Proves the join of a 4th node to 3 holding 100,000 keys, while clients
// write and read through every node: every acknowledged key reads back at
// every moment of the move, the new node receives a quarter of the
// replica-partitions (±10%) and the old ones none, and afterwards each
// key is on exactly N nodes (the old copies dropped).
#[test]
fn a_join_under_load_moves_a_quarter_and_loses_nothing() {
    const KEYS: usize = 100_000;
    const SIZE: usize = 32;
    let mut cluster = TestCluster::start(3, &args());
    let started = Instant::now();
    load(cluster.addrs()[0], "k", 0..KEYS, SIZE);
    eprintln!("loaded {KEYS} keys in {:?}", started.elapsed());

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let unreadable: Arc<Mutex<Vec<String>>> = Arc::default();
    let acked: Arc<Mutex<Vec<usize>>> = Arc::default();
    let writes = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    // Readers: every loaded key, over and over, through each old node.
    for (t, addr) in cluster.addrs().into_iter().enumerate() {
        let (stop, reads, unreadable) = (
            Arc::clone(&stop),
            Arc::clone(&reads),
            Arc::clone(&unreadable),
        );
        threads.push(std::thread::spawn(move || {
            let ids: Vec<usize> = (0..KEYS).collect();
            let mut offset = t * KEYS / 3;
            while !stop.load(Ordering::Relaxed) {
                let end = (offset + 5 * BATCH).min(KEYS);
                match missing(addr, "k", &ids[offset..end], SIZE) {
                    Ok(lost) => {
                        if !lost.is_empty() {
                            unreadable
                                .lock()
                                .unwrap()
                                .push(format!("via {addr}: {:?}", &lost[..lost.len().min(5)]));
                        }
                        reads.fetch_add((end - offset) as u64, Ordering::Relaxed);
                    }
                    Err(e) => unreadable.lock().unwrap().push(format!("via {addr}: {e}")),
                }
                offset = if end == KEYS { 0 } else { end };
            }
        }));
    }
    // A writer through every old node, one key at a time, recording acks.
    {
        let (stop, acked, writes, addrs) = (
            Arc::clone(&stop),
            Arc::clone(&acked),
            Arc::clone(&writes),
            cluster.addrs(),
        );
        threads.push(std::thread::spawn(move || {
            let mut cons: Vec<redis::Connection> = addrs.iter().map(|&a| connect_sync(a)).collect();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let con = &mut cons[i % 3];
                let ok: redis::RedisResult<()> = redis::cmd("SET")
                    .arg(format!("w{i}"))
                    .arg(value("w", i, SIZE))
                    .query(con);
                if ok.is_ok() {
                    acked.lock().unwrap().push(i);
                }
                writes.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    let rate = |what: &AtomicU64, over: Duration| {
        let before = what.load(Ordering::Relaxed);
        std::thread::sleep(over);
        (what.load(Ordering::Relaxed) - before) as f64 / over.as_secs_f64()
    };
    let (reads_before, writes_before) = (
        rate(&reads, Duration::from_secs(3)),
        rate(&writes, Duration::from_secs(2)),
    );

    let seed = cluster.member_addr(0);
    let joined = cluster.add(seed, &args());
    let new = cluster.node(joined).addr();
    let move_started = Instant::now();
    let (reads_during, writes_during) = (
        rate(&reads, Duration::from_secs(3)),
        rate(&writes, Duration::from_secs(2)),
    );
    cluster.wait_converged(4);
    let moved_in = move_started.elapsed();
    // Keep reading a little past the settle: the old copies go then.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("client thread");
    }
    eprintln!(
        "settled {moved_in:?} after the join; keys read per second before {reads_before:.0}, \
         during {reads_during:.0}; writes per second before {writes_before:.0}, during {writes_during:.0}"
    );
    let unreadable = unreadable.lock().unwrap();
    assert!(
        unreadable.is_empty(),
        "acknowledged keys unreadable during the move: {unreadable:?}"
    );

    // The move: a quarter of the replica-partitions, all to the new node.
    let received: Vec<u64> = cluster
        .addrs()
        .iter()
        .map(|&a| number(a, "handoff_partitions_received"))
        .collect();
    let total = 256 * N;
    let share = received[joined] as f64 / total as f64;
    eprintln!(
        "partitions received per node: {received:?} of {total} replica-partitions ({share:.3})"
    );
    assert_eq!(
        received.iter().sum::<u64>(),
        received[joined],
        "only the new node receives"
    );
    assert!(
        (share - 0.25).abs() <= 0.025,
        "the new node received {share:.3} of the replica-partitions"
    );

    // Every acknowledged write reads back through the new node too.
    let acked = acked.lock().unwrap().clone();
    let lost = missing(new, "w", &acked, SIZE).expect("read the writes");
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    let all: Vec<usize> = (0..KEYS).collect();
    let lost = missing(new, "k", &all, SIZE).expect("read the keys");
    assert!(lost.is_empty(), "{} loaded keys lost", lost.len());
    let keys = dbsize(new);
    assert!(keys >= (KEYS + acked.len()) as u64, "DBSIZE {keys}");
    wait_exactly_n_copies(&mut cluster, keys);
}

// Proves a leave: the leaving node's partitions, and only those, move to
// the others; it exits cleanly once done; every key stays readable and
// ends on exactly N of the three that stay.
#[test]
fn a_leave_moves_only_the_leavers_partitions_and_the_node_exits() {
    const KEYS: usize = 20_000;
    let mut cluster = TestCluster::start(4, &args());
    let addrs = cluster.addrs();
    load(addrs[0], "k", 0..KEYS, 32);
    let leaver = addrs[3];
    let leaver_name = name_of(leaver);
    let its_partitions: u64 = member_field(addrs[0], &leaver_name, "partitions_replica")
        .parse()
        .expect("partitions_replica");
    let mut con = connect_sync(leaver);
    let ok: String = redis::cmd("DYNAMO")
        .arg("LEAVE")
        .query(&mut con)
        .expect("DYNAMO LEAVE");
    assert_eq!(ok, "OK");
    let status = cluster.node_mut(3).wait_exit(SETTLE_MAX);
    assert!(
        status.is_some_and(|s| s.success()),
        "the leaver did not exit cleanly: {status:?}"
    );
    assert!(cluster.node(3).log_contains("left the cluster"));
    cluster.wait_converged(3);
    let received: u64 = addrs[..3]
        .iter()
        .map(|&a| number(a, "handoff_partitions_received"))
        .sum();
    assert_eq!(
        received, its_partitions,
        "the others received exactly the leaver's partitions"
    );
    let all: Vec<usize> = (0..KEYS).collect();
    for &addr in &addrs[..3] {
        let lost = missing(addr, "k", &all, 32).expect("read");
        assert!(lost.is_empty(), "{} keys lost through {addr}", lost.len());
    }
    wait_exactly_n_copies(&mut cluster, KEYS as u64);
}

// Proves the remove of a dead node: its partitions are copied again from
// the survivors, every key stays readable and ends on exactly N nodes;
// the removed id never shows again, and its old process, started again,
// refuses to serve and says why.
#[test]
fn a_removed_dead_node_is_rereplicated_and_never_comes_back() {
    const KEYS: usize = 20_000;
    let mut cluster = TestCluster::start(4, &args());
    let addrs = cluster.addrs();
    load(addrs[0], "k", 0..KEYS, 32);
    let dead_id = info_dynamo_field(addrs[3], "node_id").expect("node id");
    cluster.kill9(3);
    let mut con = connect_sync(addrs[0]);
    let ok: String = redis::cmd("DYNAMO")
        .arg("REMOVE")
        .arg(&dead_id)
        .query(&mut con)
        .expect("REMOVE");
    assert_eq!(ok, "OK");
    cluster.wait_converged(3);
    let all: Vec<usize> = (0..KEYS).collect();
    for &addr in &addrs[..3] {
        let lost = missing(addr, "k", &all, 32).expect("read");
        assert!(lost.is_empty(), "{} keys lost through {addr}", lost.len());
    }
    wait_exactly_n_copies(&mut cluster, KEYS as u64);

    // Its data directory does not know it was removed (it was dead): it
    // starts, every member refuses its links, a one-shot exchange tells it,
    // and it stops with the reason.
    let node = cluster.node_mut(3);
    let status = node
        .start_expecting_exit()
        .or_else(|| node.wait_exit(Duration::from_secs(30)));
    assert!(
        status.is_some_and(|s| !s.success()),
        "the removed node did not stop: {status:?}"
    );
    assert!(
        node.log_contains("was removed and cannot come back"),
        "{:?}",
        node.log_tail()
    );
    assert!(
        cluster
            .node(0)
            .log_contains("was removed from the cluster: its link is refused")
            || cluster
                .node(1)
                .log_contains("was removed from the cluster: its link is refused")
            || cluster
                .node(2)
                .log_contains("was removed from the cluster: its link is refused"),
        "no member logged the refusal"
    );
    // Started again, it now refuses at once: its own layout says so.
    let status = cluster.node_mut(3).start_expecting_exit();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the removed node started: {status:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        for &addr in &addrs[..3] {
            let rows = dynamo_members(addr).expect("members");
            assert_eq!(rows.len(), 3, "{rows:?}");
            assert!(
                rows.iter().all(|r| r.get("id") != Some(&dead_id)),
                "{rows:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// Proves a handoff survives the crash of a source and then of the
// receiver: the stream resumes from its saved cursor, nothing is lost,
// and records received twice are not counted twice (DBSIZE and each
// node's copies are exact).
#[test]
fn a_handoff_resumes_after_its_source_and_then_its_receiver_crash() {
    const KEYS: usize = 30_000;
    const SIZE: usize = 200;
    let mut cluster = TestCluster::start(3, &args());
    let addrs = cluster.addrs();
    load(addrs[0], "k", 0..KEYS, SIZE);
    let seed = cluster.member_addr(1);
    // A slow move (1 MiB/s), so that both crashes land in it.
    let mut slow = args();
    slow.extend(["--handoff-rate", "1"]);
    let joined = cluster.add(seed, &slow);
    let new = cluster.node(joined).addr();
    let received = |floor: u64| {
        let got = eventually(SETTLE_MAX, Duration::from_millis(50), || {
            let n = number(new, "handoff_keys_received");
            (n >= floor).then_some(n)
        });
        got.unwrap_or_else(|| panic!("the new node did not receive {floor} records"))
    };
    received(2_000);
    cluster.kill9(0);
    std::thread::sleep(Duration::from_millis(500));
    cluster.restart(0);
    let before = received(number(new, "handoff_keys_received") + 2_000);
    let done = number(new, "handoff_partitions_done");
    assert!(
        done < number(new, "handoff_partitions_to_receive"),
        "the move ended too soon"
    );
    cluster.kill9(joined);
    cluster.restart(joined);
    cluster.wait_converged(4);
    assert!(
        cluster.node(joined).log_contains("resumed from its cursor"),
        "no stream resumed: {:?}",
        cluster.node(joined).log_tail()
    );
    let after = number(cluster.node(joined).addr(), "handoff_keys_received");
    eprintln!("records received: {before} before the receiver's crash, {after} after its restart");
    let all: Vec<usize> = (0..KEYS).collect();
    for (_, addr) in cluster.running() {
        let lost = missing(addr, "k", &all, SIZE).expect("read");
        assert!(lost.is_empty(), "{} keys lost through {addr}", lost.len());
    }
    assert_eq!(dbsize(addrs[1]), KEYS as u64);
    wait_exactly_n_copies(&mut cluster, KEYS as u64);
}
