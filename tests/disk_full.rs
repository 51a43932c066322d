//! A full disk, for real: a node whose data directory is a small tmpfs
//! takes writes until the tmpfs is full, then refuses every write with
//! `-MISCONF` while it serves reads and shows the failure in INFO
//! persistence and DYNAMO STATUS, logging it once; once the tmpfs grows
//! (`mount -o remount,size=`), writes resume by themselves; SIGTERM exits
//! 0; after a restart every acknowledged write is there and no refused
//! one is. In a cluster of three whose third node's disk fills, the
//! other two keep acknowledging writes (W = 2), counting the third as a
//! failed replica, without a log line about it; the third answers MISCONF
//! to writes it coordinates and serves reads, and takes writes again
//! once its disk grows.
//!
//! Mounting a tmpfs needs root (or CAP_SYS_ADMIN). Without it the test
//! says why on stderr and passes without running (CI may run
//! unprivileged; docs/testing.md).

// `allow-expect-in-tests` covers `#[test]` bodies only, not the helpers
// here; in a test, a failed expect is the failure report we want.
#![expect(
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::tmpfs::Tmpfs;
use common::{TestNode, connect_sync, dynamo_members, eventually};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The tmpfs's size while it fills: a few staged generations (16 MiB
/// each) and their tables.
const FULL_SIZE: &str = "40m";
/// Its size once it grows.
const GROWN_SIZE: &str = "256m";
/// Concurrent writers, each on its own connection.
const WRITERS: usize = 4;
/// Bytes of each value: 40 MiB fills after about 10,000 of them.
const VALUE_BYTES: usize = 4096;
/// Most writes one writer attempts before the disk must have filled.
const WRITES_PER_WRITER_MAX: usize = 20_000;
/// Writes refused on purpose once the disk is full.
const REFUSED_MORE: usize = 20;
/// Writes after the recovery.
const WRITES_AFTER: usize = 200;
/// How long writes may take to resume after the tmpfs grows: a probe
/// runs every second, and a recovery ingests what is staged.
const RESUME_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the node is left failing before its log is read: several
/// probes and membership rounds, each of which used to log a line.
const FAILING_FOR: Duration = Duration::from_millis(3_500);
/// Keys checked per MGET after the restart.
const CHECK_BATCH: usize = 200;
/// How long a cluster may take to see all its members up.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

/// The value written to `key`: unique, and as incompressible as random
/// bytes written as hex, so that tables take the room their data does.
fn value_for(key: &str) -> String {
    let mut state = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut value = format!("{key}|");
    while value.len() < VALUE_BYTES {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        value.push_str(&format!("{:016x}", z ^ (z >> 31)));
    }
    value.truncate(VALUE_BYTES);
    value
}

/// What the writers saw.
#[derive(Debug, Default)]
struct Outcome {
    /// Keys whose SET got +OK.
    acknowledged: Vec<String>,
    /// Keys whose SET got -MISCONF.
    refused: Vec<String>,
}

/// SETs `key` once; records it as acknowledged or refused. Returns
/// whether it was refused; any other answer fails the test.
fn set(con: &mut redis::Connection, key: &str, outcome: &Mutex<Outcome>) -> bool {
    let reply: redis::RedisResult<()> = redis::cmd("SET").arg(key).arg(value_for(key)).query(con);
    let mut outcome = outcome.lock().unwrap_or_else(PoisonError::into_inner);
    match reply {
        Ok(()) => {
            outcome.acknowledged.push(key.to_owned());
            false
        }
        Err(e) if e.code() == Some("MISCONF") => {
            let text = e.to_string();
            assert!(
                text.contains("dynokv cannot write to its data directory")
                    && text.contains("writes are refused until it can"),
                "MISCONF in other words: {text}"
            );
            outcome.refused.push(key.to_owned());
            true
        }
        Err(e) => panic!("SET {key}: neither OK nor MISCONF: {e}"),
    }
}

/// One writer: SETs its own keys until a write is refused or another
/// writer saw one.
fn writer(node: std::net::SocketAddr, id: usize, outcome: &Mutex<Outcome>, full: &AtomicBool) {
    let mut con = connect_sync(node);
    for i in 0..WRITES_PER_WRITER_MAX {
        if full.load(Ordering::SeqCst) {
            return;
        }
        if set(&mut con, &format!("w{id}:{i}"), outcome) {
            full.store(true, Ordering::SeqCst);
            return;
        }
    }
    panic!("writer {id} wrote {WRITES_PER_WRITER_MAX} keys and the disk never filled");
}

/// The fields of `INFO persistence`.
fn info_persistence(con: &mut redis::Connection) -> std::collections::BTreeMap<String, String> {
    let info: String = redis::cmd("INFO")
        .arg("persistence")
        .query(con)
        .expect("INFO persistence");
    info.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// A field of `DYNAMO STATUS` (a map; a flat array in RESP2).
fn dynamo_status(con: &mut redis::Connection, field: &str) -> String {
    let flat: Vec<String> = redis::cmd("DYNAMO")
        .arg("STATUS")
        .query(con)
        .expect("DYNAMO STATUS");
    flat.chunks(2)
        .find(|pair| pair[0] == field)
        .map(|pair| pair[1].clone())
        .unwrap_or_else(|| panic!("DYNAMO STATUS has no {field}"))
}

/// Log lines of `node` containing `needle`.
fn log_lines(node: &TestNode, needle: &str) -> usize {
    node.log_tail()
        .iter()
        .filter(|line| line.contains(needle))
        .count()
}

/// The health's log lines (`storage::health`).
const FAILING_LINE: &str = "the data directory cannot take writes";
const RESUMED_LINE: &str = "the data directory takes writes again";

/// A tmpfs of [`FULL_SIZE`], or `None` (and why, on stderr) when the
/// test may not mount one.
fn tmpfs_or_skip(test: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(FULL_SIZE) {
        Ok(tmpfs) => Some(tmpfs),
        Err(why) => {
            eprintln!(
                "SKIPPED {test}: it mounts a tmpfs, which needs root or CAP_SYS_ADMIN ({why})"
            );
            None
        }
    }
}

/// Reads `keys` through `con`: those missing, and those with another
/// value than [`value_for`]'s.
fn check_values(con: &mut redis::Connection, keys: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut missing, mut wrong) = (Vec::new(), Vec::new());
    for chunk in keys.chunks(CHECK_BATCH) {
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query(con).expect("MGET");
        for (key, value) in chunk.iter().zip(values) {
            match value {
                Some(v) if v == value_for(key) => {}
                Some(_) => wrong.push(key.clone()),
                None => missing.push(key.clone()),
            }
        }
    }
    (missing, wrong)
}

#[test]
fn a_full_disk_refuses_writes_until_it_grows_and_loses_nothing() {
    let Some(tmpfs) = tmpfs_or_skip("a_full_disk_refuses_writes_until_it_grows_and_loses_nothing")
    else {
        return;
    };
    let data_dir = tmpfs.path().join("data");
    // Dropped before `tmpfs`: the process is gone before the unmount.
    let mut node = TestNode::start_in(&data_dir, &["--fsync", "always"]);
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let full = Arc::new(AtomicBool::new(false));

    // Fill the disk.
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| {
            let (outcome, full, addr) = (Arc::clone(&outcome), Arc::clone(&full), node.addr());
            std::thread::spawn(move || writer(addr, id, &outcome, &full))
        })
        .collect();
    for writer in writers {
        writer.join().expect("a writer failed");
    }
    let (acked_full, refused_full) = {
        let outcome = outcome.lock().unwrap_or_else(PoisonError::into_inner);
        (outcome.acknowledged.len(), outcome.refused.len())
    };
    eprintln!("disk full after {acked_full} acknowledged writes; {refused_full} refused");
    assert!(acked_full > 1000, "full after only {acked_full} writes");

    // While it is full: writes refused, reads served, the failure shown.
    let mut con = connect_sync(node.addr());
    for i in 0..REFUSED_MORE {
        assert!(
            set(&mut con, &format!("refused:{i}"), &outcome),
            "a write got through to a full disk"
        );
    }
    let first = outcome
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .acknowledged[0]
        .clone();
    let read: Option<String> = redis::cmd("GET").arg(&first).query(&mut con).expect("GET");
    assert_eq!(read, Some(value_for(&first)), "reads go on");
    let info = info_persistence(&mut con);
    assert_eq!(info["aof_last_write_status"], "err", "{info:?}");
    assert!(
        info["aof_last_write_error"].contains("No space left on device"),
        "{info:?}"
    );
    assert_ne!(info["aof_last_write_error_time"], "0", "{info:?}");
    assert_eq!(dynamo_status(&mut con, "store_status"), "failing");
    assert!(dynamo_status(&mut con, "store_error").contains("No space left on device"));
    std::thread::sleep(FAILING_FOR);
    assert_eq!(
        log_lines(&node, FAILING_LINE),
        1,
        "the failure is logged once: {:#?}",
        node.log_tail()
    );
    assert!(
        log_lines(&node, "cannot save the member list") <= 1,
        "{:#?}",
        node.log_tail()
    );

    // Grow the disk: writes resume by themselves.
    tmpfs.resize(GROWN_SIZE);
    let mut attempt = 0;
    let resumed = eventually(RESUME_TIMEOUT, Duration::from_millis(100), || {
        attempt += 1;
        (!set(&mut con, &format!("resume:{attempt}"), &outcome)).then_some(())
    });
    assert!(
        resumed.is_some(),
        "writes still refused {RESUME_TIMEOUT:?} after the disk grew: {:#?}",
        node.log_tail()
    );
    eprintln!("writes resumed after {attempt} attempts, 100 ms apart");
    for i in 0..WRITES_AFTER {
        assert!(
            !set(&mut con, &format!("after:{i}"), &outcome),
            "refused after the recovery"
        );
    }
    let info = info_persistence(&mut con);
    assert_eq!(info["aof_last_write_status"], "ok", "{info:?}");
    assert!(
        info["aof_last_write_error"].contains("No space left on device"),
        "the last failure is kept: {info:?}"
    );
    assert_eq!(dynamo_status(&mut con, "store_status"), "ok");
    assert_eq!(dynamo_status(&mut con, "store_failures"), "1");
    assert_eq!(log_lines(&node, RESUMED_LINE), 1, "{:#?}", node.log_tail());
    drop(con);

    // A clean stop, a restart, and the check.
    let status = node.terminate();
    assert!(
        status.success(),
        "SIGTERM: {status:?}: {:#?}",
        node.log_tail()
    );
    node.restart();
    let outcome = outcome.lock().unwrap_or_else(PoisonError::into_inner);
    let mut con = connect_sync(node.addr());
    let (missing, wrong) = check_values(&mut con, &outcome.acknowledged);
    let mut back = Vec::new();
    for chunk in outcome.refused.chunks(CHECK_BATCH) {
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(chunk)
            .query(&mut con)
            .expect("MGET after the restart");
        back.extend(
            chunk
                .iter()
                .zip(values)
                .filter(|(_, v)| v.is_some())
                .map(|(k, _)| k.clone()),
        );
    }
    eprintln!(
        "after the restart: {} acknowledged writes checked, {} refused ones",
        outcome.acknowledged.len(),
        outcome.refused.len()
    );
    assert!(
        missing.is_empty() && wrong.is_empty(),
        "acknowledged writes lost: {} missing (first {:?}), {} wrong (first {:?})",
        missing.len(),
        missing.first(),
        wrong.len(),
        wrong.first()
    );
    assert!(back.is_empty(), "refused writes came back: {back:?}");
}

/// Writes through `con` until `failing` answers `store_status:failing` in
/// DYNAMO STATUS, each write acknowledged; returns the keys.
fn write_until_failing(
    con: &mut redis::Connection,
    failing: &mut redis::Connection,
) -> Vec<String> {
    let outcome = Mutex::new(Outcome::default());
    for i in 0..WRITES_PER_WRITER_MAX * WRITERS {
        if i % 100 == 0 && dynamo_status(failing, "store_status") == "failing" {
            break;
        }
        assert!(
            !set(con, &format!("c:{i}"), &outcome),
            "a write through a healthy node was refused"
        );
    }
    let outcome = outcome.into_inner().unwrap_or_else(PoisonError::into_inner);
    assert!(outcome.refused.is_empty());
    outcome.acknowledged
}

#[test]
fn a_cluster_node_with_a_full_disk_fails_cleanly_and_comes_back() {
    let Some(tmpfs) = tmpfs_or_skip("a_cluster_node_with_a_full_disk_fails_cleanly_and_comes_back")
    else {
        return;
    };
    // N = 3 on three nodes: every node is a replica of every key; W = 2.
    let first = TestNode::start(&["--fsync", "always"]);
    let seed = first.peer_addr().to_string();
    let second = TestNode::start(&["--fsync", "always", "--join", &seed]);
    // Dropped before `tmpfs`.
    let full = TestNode::start_in(
        &tmpfs.path().join("data"),
        &["--fsync", "always", "--join", &seed],
    );
    let nodes = [&first, &second, &full];
    let converged = eventually(CONVERGE_TIMEOUT, Duration::from_millis(100), || {
        nodes
            .iter()
            .all(|node| {
                dynamo_members(node.addr()).is_ok_and(|rows| {
                    rows.len() == 3
                        && rows
                            .iter()
                            .all(|r| r.get("status").is_some_and(|s| s == "up"))
                })
            })
            .then_some(())
    });
    assert!(converged.is_some(), "the cluster did not converge");

    // Writes through the first node fill the third's disk, and go on.
    let mut con = connect_sync(first.addr());
    let mut at_full = connect_sync(full.addr());
    let mut acknowledged = write_until_failing(&mut con, &mut at_full);
    eprintln!(
        "the third node's disk is full after {} writes",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() > 1000,
        "full after {} writes",
        acknowledged.len()
    );
    let outcome = Mutex::new(Outcome::default());
    for i in 0..REFUSED_MORE {
        assert!(
            !set(&mut con, &format!("more:{i}"), &outcome),
            "W = 2 of the two healthy nodes"
        );
        assert!(
            set(&mut at_full, &format!("refused:{i}"), &outcome),
            "the full node coordinated a write"
        );
    }
    let read: Option<String> = redis::cmd("GET")
        .arg(&acknowledged[0])
        .query(&mut at_full)
        .expect("GET through the full node");
    assert_eq!(read, Some(value_for(&acknowledged[0])));
    std::thread::sleep(FAILING_FOR);
    assert_eq!(log_lines(&full, FAILING_LINE), 1, "{:#?}", full.log_tail());
    assert_eq!(
        log_lines(&full, "storage failure"),
        0,
        "{:#?}",
        full.log_tail()
    );
    for node in [&first, &second] {
        assert_eq!(
            log_lines(node, "storage") + log_lines(node, "cannot take writes"),
            0,
            "a healthy node logged the other's failure: {:#?}",
            node.log_tail()
        );
    }

    // The disk grows: the third node coordinates writes again.
    tmpfs.resize(GROWN_SIZE);
    let mut attempt = 0;
    let resumed = eventually(RESUME_TIMEOUT, Duration::from_millis(100), || {
        attempt += 1;
        (!set(&mut at_full, &format!("resume:{attempt}"), &outcome)).then_some(())
    });
    assert!(resumed.is_some(), "{:#?}", full.log_tail());
    assert_eq!(log_lines(&full, RESUMED_LINE), 1, "{:#?}", full.log_tail());
    let outcome = outcome.into_inner().unwrap_or_else(PoisonError::into_inner);
    acknowledged.extend(outcome.acknowledged);
    let (absent, _) = check_values(&mut con, &outcome.refused);
    assert_eq!(absent, outcome.refused, "a refused write is somewhere");
    let (missing, wrong) = check_values(&mut at_full, &acknowledged);
    assert!(
        missing.is_empty() && wrong.is_empty(),
        "read through the recovered node: {} missing (first {:?}), {} wrong (first {:?})",
        missing.len(),
        missing.first(),
        wrong.len(),
        wrong.first()
    );
}
