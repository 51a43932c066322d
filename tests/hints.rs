//! The sloppy quorum and hinted handoff on real processes (issue 21's
//! "Done when"; docs/cluster.md, "Sloppy quorum and hinted handoff"):
//! two of a key's three replicas killed in a cluster of five, with the
//! sloppy quorum on (every write succeeds) and off (exactly the keys that
//! lost two replicas fail); the replay after they come back, timed
//! against hinted bytes ÷ `--hint-rate`; fallbacks stopped (SIGTERM and
//! kill -9) while they hold hints, and a target killed mid-replay; the cap
//! on hint bytes, with read repair filling the gap; the hint window; the
//! remove of a dead target, whose hints go to the replicas that take its
//! place; a replica whose disk fills.
//!
//! What a replica holds is checked in its own store, not through a read
//! that could repair it: the nodes are stopped (SIGTERM) and each data
//! directory is opened with [`FjallStore`], and every acknowledged key
//! must be on the replicas `DYNAMO RING` names for its partition.

// `allow-expect-in-tests` covers `#[test]` bodies only, not the helpers
// here; in a test, a failed expect is the failure report we want.
#![expect(
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::replicas::{
    BATCH, Placement, Send, assert_on_every_replica, copies_missing, pairs, terminate_all,
    write_all,
};
use common::{TestCluster, connect_sync, dynamo_members, eventually, info_dynamo_field};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Q for these clusters: every node holds a fair share of partitions,
/// and a handoff (the remove test) is quick.
const Q_ARG: &str = "64";
/// How long hints may take to be stored, counted or replayed when no
/// throttle is measured.
const SETTLE: Duration = Duration::from_secs(60);
/// How often counters are polled.
const POLL: Duration = Duration::from_millis(100);

/// The flags every node of these clusters gets, then `more`.
fn args<'a>(more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--partitions", Q_ARG];
    args.extend(more);
    args
}

/// An `INFO dynamo` number of the node at `addr`.
fn number(addr: SocketAddr, field: &str) -> u64 {
    let text = info_dynamo_field(addr, field).unwrap_or_else(|e| panic!("{e}"));
    text.parse()
        .unwrap_or_else(|e| panic!("{field} = {text:?}: {e}"))
}

/// `field` of each running node, by index (stopped nodes left out).
fn numbers(cluster: &mut TestCluster, field: &str) -> BTreeMap<usize, u64> {
    cluster
        .running()
        .into_iter()
        .map(|(i, addr)| (i, number(addr, field)))
        .collect()
}

/// As [`numbers`], `None` while a node does not answer (restarting).
fn try_numbers(cluster: &mut TestCluster, field: &str) -> Option<BTreeMap<usize, u64>> {
    cluster
        .running()
        .into_iter()
        .map(|(i, addr)| {
            let text = info_dynamo_field(addr, field).ok()?;
            Some((i, text.parse().ok()?))
        })
        .collect()
}

/// Kills `target` (the last of a cluster of four) with -9, waits until
/// the others see it down, and writes `keys` pairs of `value_bytes`
/// through the other three, pipelined, each acknowledged. Returns their
/// addresses, the pairs, and how many keys have `target` among their
/// replicas: one hint each.
fn write_with_one_down(
    cluster: &mut TestCluster,
    placement: &Placement,
    target: usize,
    keys: usize,
    value_bytes: usize,
) -> (Vec<SocketAddr>, Vec<(String, String)>, u64) {
    cluster.kill9(target);
    cluster.wait_converged(4);
    let live: Vec<SocketAddr> = (0..3).map(|i| cluster.node(i).addr()).collect();
    let data = pairs("k", keys, value_bytes);
    let replies = write_all(&live, &data, Send::Pipelined);
    assert!(replies.iter().all(Result::is_ok), "a write failed");
    let hinted = data
        .iter()
        .filter(|(k, _)| placement.down(k, &[target]) == 1)
        .count() as u64;
    (live, data, hinted)
}

/// Waits until the running nodes' `hints_held` add up to `total`.
fn wait_hints_held(cluster: &mut TestCluster, total: u64, within: Duration) -> Duration {
    let started = Instant::now();
    let mut last = BTreeMap::new();
    let done = eventually(within, POLL, || {
        last = try_numbers(cluster, "hints_held")?;
        (last.values().sum::<u64>() == total).then_some(())
    });
    assert!(
        done.is_some(),
        "hints held {last:?}, not {total} in all, after {within:?}"
    );
    started.elapsed()
}

/// `dynokv admin hints` through the node at `addr`: its rows as
/// `(kept by, for, keys)`, and the whole output.
fn admin_hints(addr: SocketAddr) -> (Vec<(String, String, u64)>, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dynokv"))
        .args(["admin", "--host", "127.0.0.1", "--port"])
        .arg(addr.port().to_string())
        .arg("hints")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run dynokv admin hints");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "dynokv admin hints failed: {}\n{text}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let rows = text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let keys = fields.get(2)?.parse().ok()?;
            Some((fields[0].to_owned(), fields[1].to_owned(), keys))
        })
        .collect();
    (rows, text)
}

/// The member name of each node, by index (`DYNAMO MEMBERS` at `at`).
fn names(cluster: &TestCluster, at: usize) -> Vec<String> {
    let rows = dynamo_members(cluster.node(at).addr()).unwrap_or_else(|e| panic!("{e}"));
    cluster
        .addrs()
        .iter()
        .map(|a| {
            rows.iter()
                .find(|r| r["client_addr"] == a.to_string())
                .map(|r| r["name"].clone())
                .unwrap_or_else(|| panic!("no member at {a}: {rows:?}"))
        })
        .collect()
}

// Proves the sloppy quorum's first "Done when" line and the replay's:
// with two of five nodes killed (N = 3, W = 2), every one of 10,000 SETs
// succeeds, each missing copy is one hint on a live fallback, a write
// asking PW 2 fails where two replicas are down and passes where one is
// (10 keys each); restarted, the
// two receive every hint within (hinted bytes ÷ --hint-rate) + 20% + 5 s,
// and every key is then on all three of its replicas' own stores (read
// repair is off, and nothing reads the keys).
#[test]
fn two_of_three_replicas_down_every_write_succeeds_and_the_replay_fills_them_in_time() {
    // Fixed by the issue.
    const KEYS: usize = 10_000;
    // With the rate below, about 4,000 hints of some 150 bytes per
    // fallback take several seconds to replay.
    const VALUE_BYTES: usize = 100;
    const RATE_KIB: u64 = 64;
    let rate = RATE_KIB.to_string();
    let mut cluster = TestCluster::start(5, &args(&["--read-repair", "off", "--hint-rate", &rate]));
    let placement = Placement::of(&cluster, 0);
    let down = [3, 4];
    for &i in &down {
        cluster.kill9(i);
    }
    cluster.wait_converged(5);
    let live: Vec<SocketAddr> = (0..3).map(|i| cluster.node(i).addr()).collect();

    // PW counts real replicas only: per request, 2 of them fail where two
    // replicas are down and pass elsewhere.
    let candidates = pairs("pw", 400, VALUE_BYTES);
    let mut con = connect_sync(live[0]);
    let (mut refused, mut taken) = (Vec::new(), Vec::new());
    for (key, value) in &candidates {
        let two_down = placement.down(key, &down) == 2;
        if (two_down && refused.len() >= 10) || (!two_down && taken.len() >= 10) {
            continue;
        }
        let reply: redis::RedisResult<String> = redis::cmd("VSET")
            .arg(key)
            .arg("")
            .arg(value)
            .arg("PW")
            .arg(2)
            .query(&mut con);
        if two_down {
            let e = reply.expect_err("PW 2 with one real replica up");
            assert_eq!(e.code(), Some("NOQUORUM"), "{e}");
            refused.push(key.clone());
        } else {
            reply.unwrap_or_else(|e| panic!("VSET {key} PW 2: {e}"));
            taken.push(key.clone());
        }
    }
    assert_eq!((refused.len(), taken.len()), (10, 10));
    let pw_written: Vec<&String> = refused.iter().chain(&taken).collect();

    let data = pairs("k", KEYS, VALUE_BYTES);
    let started = Instant::now();
    let replies = write_all(&live, &data, Send::Pipelined);
    let wrote_in = started.elapsed();
    let failed: Vec<(&String, &redis::RedisError)> = data
        .iter()
        .zip(&replies)
        .filter_map(|((k, _), r)| Some((k, r.as_ref().err()?)))
        .collect();
    let two_down = data
        .iter()
        .filter(|(k, _)| placement.down(k, &down) == 2)
        .count();
    eprintln!(
        "{KEYS} SETs through 3 live nodes of 5 in {wrote_in:?}: {} failed; \
         {two_down} keys had two replicas down",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} writes failed, first: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(two_down > 1000, "only {two_down} keys lost two replicas");

    // Each copy meant for a dead replica is one hint on one fallback.
    let expected: u64 = data
        .iter()
        .map(|(k, _)| k)
        .chain(pw_written.iter().copied())
        .map(|k| placement.down(k, &down) as u64)
        .sum();
    wait_hints_held(&mut cluster, expected, SETTLE);
    let bytes = numbers(&mut cluster, "hints_bytes");
    let held = numbers(&mut cluster, "hints_held");
    let tails_dropped = numbers(&mut cluster, "write_tails_dropped");
    assert!(tails_dropped.values().all(|&n| n == 0), "{tails_dropped:?}");
    let total_bytes: u64 = bytes.values().sum();
    let most_bytes = bytes.values().copied().max().unwrap_or(0);
    let rate_bytes = RATE_KIB * 1024;

    // Both come back; the clock runs from their restart until no node
    // holds a hint.
    let restarted = Instant::now();
    for &i in &down {
        cluster.node_mut(i).restart_loading();
    }
    // The bound, with the bytes of the node that holds the most:
    // each node replays its own hints at --hint-rate, all at once.
    let bound = Duration::from_secs_f64(most_bytes as f64 / rate_bytes as f64 * 1.2 + 5.0);
    let loose = Duration::from_secs_f64(total_bytes as f64 / rate_bytes as f64 * 1.2 + 5.0);
    let mut last = BTreeMap::new();
    let done = eventually(loose + Duration::from_secs(30), POLL, || {
        last = try_numbers(&mut cluster, "hints_held")?;
        (last.len() == 5 && last.values().all(|&n| n == 0)).then_some(())
    });
    let took = restarted.elapsed();
    eprintln!(
        "replay: hints held {held:?} (keys, by node) = {expected}; hinted bytes {bytes:?} = \
         {total_bytes}; rate {rate_bytes} B/s ({RATE_KIB} KiB/s); bound with the most bytes \
         on one node ({most_bytes}) {bound:.1?}, with all hinted bytes {loose:.1?}; \
         every node held 0 hints {took:.1?} after the restart"
    );
    assert!(done.is_some(), "hints still held after {took:?}: {last:?}");
    assert!(took <= bound, "the replay took {took:?}, over {bound:?}");
    let replayed: u64 = numbers(&mut cluster, "hints_replayed").values().sum();
    assert_eq!(replayed, expected, "hints replayed");

    // On every replica's own store, not through a read.
    terminate_all(&mut cluster);
    assert_on_every_replica(&cluster, &placement, &data);
}

// Proves the sloppy quorum off: with two of five nodes killed (N = 3,
// W = 2), exactly the keys with two replicas down get -NOQUORUM out of a
// 10,000-key run, and each OK is true: its key is on at least W of its
// replicas' own stores before anything was replayed. Hints are still
// kept.
#[test]
fn two_of_three_replicas_down_with_the_sloppy_quorum_off_fails_exactly_the_affected_keys() {
    const KEYS: usize = 10_000;
    let mut cluster = TestCluster::start(5, &args(&["--sloppy-quorum", "off"]));
    let placement = Placement::of(&cluster, 0);
    let down = [3, 4];
    for &i in &down {
        cluster.kill9(i);
    }
    cluster.wait_converged(5);
    let live: Vec<SocketAddr> = (0..3).map(|i| cluster.node(i).addr()).collect();
    let data = pairs("k", KEYS, 32);
    let started = Instant::now();
    // Two connections per live node: one at a time is slower.
    let replies = write_all(&[&live[..], &live[..]].concat(), &data, Send::OneByOne);
    let wrote_in = started.elapsed();
    let mut wrong = Vec::new();
    let (mut refused, mut acked) = (0, Vec::new());
    for ((key, value), reply) in data.iter().zip(&replies) {
        let affected = placement.down(key, &down) == 2;
        match (affected, reply) {
            (false, Ok(())) => acked.push((key.clone(), value.clone())),
            (true, Err(e)) if e.code() == Some("NOQUORUM") => refused += 1,
            _ => wrong.push(format!("{key} (two down: {affected}): {reply:?}")),
        }
    }
    eprintln!(
        "{KEYS} SETs with the sloppy quorum off in {wrote_in:?}: {} OK, {refused} NOQUORUM, \
         {} otherwise",
        acked.len(),
        wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "{} replies are not what the placement says (a false OK, or a failure of a key with \
         two replicas up), first: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    assert!(refused > 1000, "only {refused} keys lost two replicas");
    let held: u64 = numbers(&mut cluster, "hints_held").values().sum();
    assert!(held > 0, "no hints kept with the sloppy quorum off");

    // Each OK had W real replicas: on the live nodes' own stores now.
    terminate_all(&mut cluster);
    let (missing, checked) = copies_missing(&cluster, &placement, &acked);
    let short: Vec<&(String, Vec<usize>)> = missing
        .iter()
        .filter(|(key, lacking)| placement.replicas(key).len() - lacking.len() < 2)
        .collect();
    assert!(
        short.is_empty(),
        "{} acknowledged keys are on fewer than W = 2 replicas (key, replicas lacking it): {:?}",
        short.len(),
        &short[..short.len().min(10)]
    );
    eprintln!(
        "store check: {} acknowledged keys ({checked} copies checked) each on at least 2 \
         replicas; {held} hints kept",
        acked.len()
    );
}

// Proves the issue's pipelined reading of "-NOQUORUM for the affected
// keys": a pipelined run of SETs, some of whose keys lost two replicas
// (sloppy quorum off), fails those and only those. A run of SETs is one
// coordinator call (`resp::handlers::plan::Batch`); each key's outcome is
// its own (`Coordinator::write_each`). Before that, one key without its
// quorum failed the call, and 424 of 1,000 SETs answered NOQUORUM that
// had reached W replicas.
#[test]
fn a_pipelined_run_fails_only_its_keys_without_a_quorum() {
    let mut cluster = TestCluster::start(4, &args(&["--sloppy-quorum", "off"]));
    let placement = Placement::of(&cluster, 0);
    let down = [2, 3];
    for &i in &down {
        cluster.kill9(i);
    }
    cluster.wait_converged(4);
    let live: Vec<SocketAddr> = (0..2).map(|i| cluster.node(i).addr()).collect();
    let data = pairs("k", 2 * BATCH, 32);
    let replies = write_all(&live, &data, Send::Pipelined);
    let wrong: Vec<String> = data
        .iter()
        .zip(&replies)
        .filter(|((key, _), reply)| {
            let affected = placement.down(key, &down) == 2;
            match reply {
                Ok(()) => affected,
                Err(e) => !affected || e.code() != Some("NOQUORUM"),
            }
        })
        .map(|((key, _), reply)| format!("{key}: {reply:?}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} pipelined SETs answered otherwise than their own quorum, first: {:?}",
        wrong.len(),
        data.len(),
        &wrong[..wrong.len().min(5)]
    );
}

// Proves hints are durable and their replay loses nothing to crashes: a
// fallback stopped by SIGTERM, then by kill -9, holds the same hints
// (keys and bytes) once restarted; `dynokv admin hints` lists every
// holder's hints for the dead target, and a progress bar while it
// replays; the target killed -9 mid-replay (at 32 KiB/s) and restarted
// gets every hint, and every key is then on all three of its replicas'
// own stores (read repair off, no reads).
#[test]
fn hints_survive_their_fallbacks_restarts_and_a_target_killed_mid_replay_loses_nothing() {
    const KEYS: usize = 3_000;
    const VALUE_BYTES: usize = 200;
    let mut cluster = TestCluster::start(4, &args(&["--read-repair", "off", "--hint-rate", "32"]));
    let placement = Placement::of(&cluster, 0);
    let names = names(&cluster, 0);
    let target = 3;
    let (live, data, expected) =
        write_with_one_down(&mut cluster, &placement, target, KEYS, VALUE_BYTES);
    wait_hints_held(&mut cluster, expected, SETTLE);
    let held = numbers(&mut cluster, "hints_held");
    let bytes = numbers(&mut cluster, "hints_bytes");
    eprintln!("hints for the dead node: {held:?} keys, {bytes:?} bytes");
    for (&i, &n) in held.iter().filter(|(_, n)| **n > 0) {
        let line = info_dynamo_field(cluster.node(i).addr(), "hints_target").expect("a line");
        let head = format!("name={},keys={n},bytes={},", names[target], bytes[&i]);
        assert!(line.starts_with(&head), "node {i}: hints_target:{line}");
        assert!(line.ends_with(",dropped=0,replaying=0"), "node {i}: {line}");
    }

    // Every holder's row: its hints for the dead node.
    let (mut rows, text) = admin_hints(live[0]);
    eprintln!("dynokv admin hints:\n{text}");
    rows.sort();
    let mut holders: Vec<(String, String, u64)> = held
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(&i, &n)| (names[i].clone(), names[target].clone(), n))
        .collect();
    holders.sort();
    assert!(holders.len() >= 2, "hints on {holders:?}");
    assert_eq!(rows, holders, "dynokv admin hints:\n{text}");

    // The holder of the most hints, stopped both ways, keeps them.
    let (&fallback, _) = held.iter().max_by_key(|(_, n)| **n).expect("a holder");
    let kept = |cluster: &mut TestCluster| {
        let addr = cluster.node(fallback).addr();
        (number(addr, "hints_held"), number(addr, "hints_bytes"))
    };
    let before = kept(&mut cluster);
    let status = cluster.node_mut(fallback).terminate();
    assert!(status.success(), "SIGTERM: {status}");
    cluster.restart(fallback);
    assert_eq!(kept(&mut cluster), before, "hints after a SIGTERM");
    cluster.kill9(fallback);
    cluster.restart(fallback);
    assert_eq!(kept(&mut cluster), before, "hints after a kill -9");
    cluster.wait_converged(4);

    // The target comes back and is killed while the hints stream to it.
    cluster.restart(target);
    let mut last = 0;
    let begun = eventually(SETTLE, Duration::from_millis(20), || {
        last = try_numbers(&mut cluster, "hints_held")?.values().sum();
        (last <= expected * 3 / 4).then_some(())
    });
    assert!(
        begun.is_some(),
        "the replay did not start: {last} of {expected} held"
    );
    let (_, text) = admin_hints(live[0]);
    eprintln!("dynokv admin hints while replaying:\n{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("[#") && l.contains(&names[target])),
        "no progress bar:\n{text}"
    );
    cluster.kill9(target);
    let left: u64 = numbers(&mut cluster, "hints_held").values().sum();
    eprintln!("the target was killed with {left} of {expected} hints left");
    assert!(left > 0, "the replay ended before the kill");
    cluster.restart(target);
    let took = wait_hints_held(&mut cluster, 0, SETTLE);
    eprintln!("the rest was replayed in {took:?} after its restart");

    terminate_all(&mut cluster);
    assert_on_every_replica(&cluster, &placement, &data);
}

// Proves the cap on hint bytes: with --hint-max-bytes 64 KiB and a
// replica down, every write still succeeds (W = 2 real replicas), no
// node keeps more than the cap for it, and the hints past it are counted
// as dropped; once it is back and its hints replayed, one read of every
// key (read repair on) brings it the rest, so every key is on all three
// of its replicas' own stores.
#[test]
fn past_the_hint_cap_drops_are_counted_and_read_repair_restores_the_target() {
    const KEYS: usize = 3_000;
    const VALUE_BYTES: usize = 200;
    const CAP: u64 = 64 * 1024;
    let cap = CAP.to_string();
    let mut cluster = TestCluster::start(4, &args(&["--hint-max-bytes", &cap]));
    let placement = Placement::of(&cluster, 0);
    let target = 3;
    let (live, data, hinted) =
        write_with_one_down(&mut cluster, &placement, target, KEYS, VALUE_BYTES);

    // Settled: the writes' tails hand on what failed within the request
    // timeout.
    let mut last = (BTreeMap::new(), BTreeMap::new());
    let settled = eventually(SETTLE, Duration::from_secs(1), || {
        let now = (
            numbers(&mut cluster, "hints_held"),
            numbers(&mut cluster, "hints_dropped"),
        );
        let same = now == last;
        last = now;
        same.then_some(())
    });
    assert!(settled.is_some(), "hint counts never settled: {last:?}");
    let (held, dropped) = last;
    let bytes = numbers(&mut cluster, "hints_bytes");
    eprintln!(
        "cap {CAP} bytes: {hinted} keys to hint; held {held:?}, bytes {bytes:?}, dropped {dropped:?}"
    );
    assert!(
        bytes.values().all(|&b| b <= CAP),
        "hint bytes past the cap: {bytes:?}"
    );
    assert!(dropped.values().sum::<u64>() > 0, "nothing dropped");
    assert!(held.values().sum::<u64>() < hinted, "every hint kept");

    cluster.restart(target);
    wait_hints_held(&mut cluster, 0, SETTLE);
    let mut con = connect_sync(live[0]);
    for chunk in data.chunks(BATCH) {
        let keys: Vec<&String> = chunk.iter().map(|(k, _)| k).collect();
        let got: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut con).expect("MGET");
        for ((key, value), got) in chunk.iter().zip(got) {
            assert_eq!(got.as_ref(), Some(value), "{key}");
        }
    }
    // Repairs are sent one after the other, after the reads answered:
    // wait until they stop. (Those still queued at a SIGTERM are lost:
    // the peer links close on the same signal that makes the repair
    // worker drain its queue, so the drain's requests all fail.)
    let mut repairs = 0;
    let sent = eventually(SETTLE, Duration::from_secs(1), || {
        let now = numbers(&mut cluster, "read_repairs").values().sum();
        let same = now == repairs;
        repairs = now;
        same.then_some(())
    });
    assert!(sent.is_some(), "read repairs never stopped: {repairs}");
    let repairs_dropped: u64 = numbers(&mut cluster, "read_repairs_dropped").values().sum();
    eprintln!("read repairs sent: {repairs} (dropped {repairs_dropped})");
    assert_eq!(repairs_dropped, 0);
    terminate_all(&mut cluster);
    assert_on_every_replica(&cluster, &placement, &data);
}

// Proves the hint window and a hint that outlives its target: with
// --hint-window 3 and a replica down, writes more than 3 s after its
// first hint are not hinted (counted as dropped) while the hints of
// before stay; `DYNAMO REMOVE` of the dead replica then hands its hints
// to the replicas that took its place (replayed, not dropped), and once
// the layout settles every key is on all three of its new replicas' own
// stores.
#[test]
fn past_the_window_hints_are_dropped_and_a_removed_targets_hints_go_to_its_successors() {
    const KEYS: usize = 1_000;
    const WINDOW: Duration = Duration::from_secs(3);
    let mut cluster = TestCluster::start(4, &args(&["--hint-window", "3"]));
    let placement = Placement::of(&cluster, 0);
    let target = 3;
    let target_id = info_dynamo_field(cluster.node(target).addr(), "node_id").expect("node id");
    cluster.kill9(target);
    cluster.wait_converged(4);
    let live: Vec<SocketAddr> = (0..3).map(|i| cluster.node(i).addr()).collect();
    let hinted = |pairs: &[(String, String)]| {
        pairs
            .iter()
            .filter(|(k, _)| placement.down(k, &[target]) == 1)
            .count() as u64
    };
    let early = pairs("a", KEYS, 32);
    let window_began = Instant::now();
    assert!(
        write_all(&live, &early, Send::Pipelined)
            .iter()
            .all(Result::is_ok)
    );
    wait_hints_held(&mut cluster, hinted(&early), SETTLE);

    std::thread::sleep(WINDOW.saturating_sub(window_began.elapsed()) + Duration::from_millis(500));
    let late = pairs("b", KEYS, 32);
    assert!(
        write_all(&live, &late, Send::Pipelined)
            .iter()
            .all(Result::is_ok)
    );
    let mut dropped = 0;
    let counted = eventually(SETTLE, POLL, || {
        dropped = numbers(&mut cluster, "hints_dropped").values().sum();
        (dropped >= hinted(&late)).then_some(())
    });
    // Each refused copy counted once: by the fallback that refused it
    // (a refusal is not passed on to the next fallback).
    assert!(
        counted.is_some() && dropped == hinted(&late),
        "{dropped} dropped, not {}",
        hinted(&late)
    );
    let held: u64 = numbers(&mut cluster, "hints_held").values().sum();
    eprintln!(
        "window {WINDOW:?}: {held} hints held (of {}), {dropped} dropped after it (of {} to hint)",
        hinted(&early),
        hinted(&late)
    );
    assert_eq!(held, hinted(&early), "hints kept past the window");
    let oldest = numbers(&mut cluster, "hints_oldest_age_s");
    assert!(
        oldest.values().any(|&age| age >= WINDOW.as_secs()),
        "hints_oldest_age_s {oldest:?}"
    );

    let mut con = connect_sync(live[0]);
    let ok: String = redis::cmd("DYNAMO")
        .arg("REMOVE")
        .arg(&target_id)
        .query(&mut con)
        .expect("DYNAMO REMOVE");
    assert_eq!(ok, "OK");
    let took = wait_hints_held(&mut cluster, 0, SETTLE);
    let replayed: u64 = numbers(&mut cluster, "hints_replayed").values().sum();
    let dropped_after: u64 = numbers(&mut cluster, "hints_dropped").values().sum();
    eprintln!("removed: its {held} hints gone in {took:?}, {replayed} replayed to its successors");
    assert_eq!(dropped_after, dropped, "hints dropped by the remove");
    assert!(replayed >= held, "{replayed} replayed of {held} held");
    cluster.wait_converged(3);
    let all: Vec<(String, String)> = early.iter().chain(&late).cloned().collect();
    for chunk in all.chunks(BATCH) {
        let keys: Vec<&String> = chunk.iter().map(|(k, _)| k).collect();
        let got: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut con).expect("MGET");
        for ((key, value), got) in chunk.iter().zip(got) {
            assert_eq!(got.as_ref(), Some(value), "{key}");
        }
    }
    let settled = Placement::settled(&cluster, 0);
    terminate_all(&mut cluster);
    assert_on_every_replica(&cluster, &settled, &all);
}

/// `count` keys `{prefix}{i}` with values of `size` bytes as
/// incompressible as random bytes written as hex (so that a disk fills
/// with what is written), each starting with its key.
fn random_pairs(prefix: &str, range: std::ops::Range<usize>, size: usize) -> Vec<(String, String)> {
    range
        .map(|i| {
            let key = format!("{prefix}{i}");
            let mut rng = common::Rng::new(i as u64);
            let mut value = format!("{key}|");
            while value.len() < size {
                value.push_str(&format!("{:016x}", rng.next_u64()));
            }
            value.truncate(size);
            (key, value)
        })
        .collect()
}

/// `store_status` of `DYNAMO STATUS` at `addr` (`ok`, `failing`).
fn store_status(addr: SocketAddr) -> String {
    let mut con = connect_sync(addr);
    let flat: Vec<String> = redis::cmd("DYNAMO")
        .arg("STATUS")
        .query(&mut con)
        .expect("DYNAMO STATUS");
    flat.chunks(2)
        .find(|pair| pair[0] == "store_status")
        .map(|pair| pair[1].clone())
        .expect("store_status in DYNAMO STATUS")
}

// Proves a replica whose disk is full gets hints, not silence: in a
// cluster of four whose fourth node's data directory is a 40 MiB tmpfs,
// writes through the other three (forwarded to the full node too, which
// refuses them unapplied, so the next replica coordinates) go on being
// acknowledged once its disk is full, its failed copies are kept as hints by fallbacks, which keep
// them (nothing deleted, nothing counted replayed) while it cannot store
// them; once the tmpfs grows to 256 MiB the hints are handed over, and
// every key is on all three of its replicas' own stores. Needs root or
// CAP_SYS_ADMIN (it mounts a tmpfs): without, it says SKIPPED and passes.
#[test]
fn a_replica_with_a_full_disk_gets_its_writes_as_hints_once_it_grows() {
    const VALUE_BYTES: usize = 16 * 1024;
    const ROUND: usize = 256;
    const ROUNDS_MAX: usize = 40;
    let tmpfs = match common::tmpfs::Tmpfs::mount("40m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            eprintln!(
                "SKIPPED a_replica_with_a_full_disk_gets_its_writes_as_hints_once_it_grows: it \
                 mounts a tmpfs, which needs root or CAP_SYS_ADMIN ({why})"
            );
            return;
        }
    };
    // Declared after `tmpfs`, so dropped (its processes killed) first.
    let mut cluster = TestCluster::start(3, &args(&[]));
    let seed = cluster.member_addr(0);
    let full = cluster.add_in(seed, &tmpfs.path().join("data"), &args(&[]));
    cluster.wait_converged(4);
    let placement = Placement::of(&cluster, 0);
    let full_addr = cluster.node(full).addr();
    // Through every node but the full one: a write a non-replica
    // forwards to the full node, first in its key's preference list, is
    // refused there unapplied (Unwritable) and goes to the next replica.
    let healthy: Vec<SocketAddr> = (0..full).map(|i| cluster.node(i).addr()).collect();

    let mut data: Vec<(String, String)> = Vec::new();
    let mut filled_after = None;
    for round in 0..ROUNDS_MAX {
        let more = random_pairs("k", round * ROUND..(round + 1) * ROUND, VALUE_BYTES);
        let replies = write_all(&healthy, &more, Send::Pipelined);
        let failed: Vec<&redis::RedisError> =
            replies.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(
            failed.is_empty(),
            "round {round}: {} writes failed, first: {:?}",
            failed.len(),
            failed.first()
        );
        data.extend(more);
        if filled_after.is_some() {
            break;
        }
        if store_status(full_addr) == "failing" {
            // One more round, all of it past the full disk.
            filled_after = Some(data.len());
        }
    }
    let filled_after = filled_after.expect("the tmpfs never filled");
    let held: u64 = numbers(&mut cluster, "hints_held").values().sum();
    eprintln!(
        "the fourth node's disk was full after {filled_after} writes of {VALUE_BYTES} bytes; \
         {} writes in all, each acknowledged; {held} hints held for it",
        data.len()
    );
    assert!(
        held >= ROUND as u64 / 2,
        "only {held} hints for the full replica"
    );

    // It is up and reachable, so the hints worker tries: none is deleted
    // unless the target acknowledged it stored (a full tmpfs now and then
    // takes a small batch, once its store freed a few blocks).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(store_status(full_addr), "failing");
    let still: u64 = numbers(&mut cluster, "hints_held").values().sum();
    let replayed: u64 = numbers(&mut cluster, "hints_replayed").values().sum();
    assert!(
        still + replayed >= held,
        "hints held {held}, then {still}, {replayed} replayed: one was deleted unreplayed"
    );

    tmpfs.resize("256m");
    let took = wait_hints_held(&mut cluster, 0, SETTLE);
    eprintln!("the disk grew; its {still} hints were handed over in {took:?}");
    assert_eq!(store_status(full_addr), "ok");
    terminate_all(&mut cluster);
    assert_on_every_replica(&cluster, &placement, &data);
}
