//! Durability across process death: a node killed with SIGKILL keeps every
//! write it acknowledged (as `--fsync` promises), and a node stopped with
//! SIGTERM shuts down cleanly (exit 0, store flushed) and keeps everything
//! even with `--fsync no`, idle or under load.

// `allow-expect-in-tests` covers `#[test]` bodies only, not the helpers
// here or `#[tokio::test]` bodies; in a test, a failed expect is the
// failure report we want.
#![expect(
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::{TestCluster, TestNode, connect};
use redis::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Concurrent writers, each on its own connection.
const WRITERS: usize = 8;
/// Acknowledgements after which the node is killed.
const ACKS_BEFORE_KILL: usize = 3_000;
/// Most keys one writer attempts (a bound, never reached in practice: the
/// kill ends the writers first).
const WRITES_PER_WRITER_MAX: usize = 20_000;
/// Upper bound on the write phase.
const WRITE_PHASE_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on the wait for read repairs to bring every replica's count in
/// line after a restart.
const REPAIR_WAIT: Duration = Duration::from_secs(10);
/// Keys checked per MGET after the restart.
const CHECK_BATCH: usize = 500;

/// The value written to `key`: long enough to be a real record, and
/// unique, so a stale or crossed value cannot pass for the right one.
fn value_for(key: &str) -> String {
    format!("{key}|{}", "x".repeat(64))
}

/// What the write phase saw.
#[derive(Debug, Default)]
struct Outcome {
    /// Keys whose SET got +OK, in order of acknowledgement.
    acknowledged: Vec<String>,
    /// Keys whose SET was sent but got no reply (cut off by the kill).
    in_flight: Vec<String>,
}

/// One writer: SETs its own keys one at a time until a request fails,
/// recording each acknowledgement before counting it.
async fn writer(
    id: usize,
    url: String,
    outcome: Arc<Mutex<Outcome>>,
    acks: Arc<AtomicUsize>,
    killed: Arc<AtomicBool>,
    target_reached: Arc<Notify>,
) -> Result<usize, String> {
    let mut con = connect(&url).await;
    for i in 0..WRITES_PER_WRITER_MAX {
        let key = format!("w{id}:k{i}");
        let reply: Result<Value, _> = redis::cmd("SET")
            .arg(&key)
            .arg(value_for(&key))
            .query_async(&mut con)
            .await;
        match reply {
            Ok(Value::Okay) => {
                outcome
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .acknowledged
                    .push(key);
                if acks.fetch_add(1, Ordering::SeqCst) + 1 == ACKS_BEFORE_KILL {
                    target_reached.notify_one();
                }
            }
            Ok(other) => return Err(format!("writer {id}: SET {key} replied {other:?}")),
            Err(_) if killed.load(Ordering::SeqCst) => {
                // The node died under this request: it may or may not
                // have applied it, but it never acknowledged it.
                outcome
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .in_flight
                    .push(key);
                return Ok(i);
            }
            Err(e) => {
                return Err(format!(
                    "writer {id}: SET {key} failed before the kill: {e}"
                ));
            }
        }
    }
    Err(format!(
        "writer {id} wrote {WRITES_PER_WRITER_MAX} keys and the node was never killed"
    ))
}

/// Polls `INFO dynamo` until the node is stopped; returns the last
/// (`fsync_group_syncs`, `records_written`) seen.
async fn watch_syncs(url: String, killed: Arc<AtomicBool>) -> (u64, u64) {
    let mut con = connect(&url).await;
    let mut last = (0, 0);
    while !killed.load(Ordering::SeqCst) {
        let Ok(info) = redis::cmd("INFO")
            .arg("dynamo")
            .query_async::<String>(&mut con)
            .await
        else {
            break;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(syncs), Some(records)) = (field("fsync_group_syncs"), field("records_written"))
        {
            last = (syncs, records);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

/// Reads `keys` back in MGET batches; returns (found with the right value,
/// missing, wrong value) and samples of the failures.
async fn check_keys(
    con: &mut redis::aio::MultiplexedConnection,
    keys: &[String],
) -> (usize, Vec<String>, Vec<String>) {
    let (mut found, mut missing, mut wrong) = (0, Vec::new(), Vec::new());
    for chunk in keys.chunks(CHECK_BATCH) {
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(chunk)
            .query_async(con)
            .await
            .expect("MGET after restart");
        assert_eq!(values.len(), chunk.len());
        for (key, value) in chunk.iter().zip(values) {
            match value {
                Some(v) if v == value_for(key) => found += 1,
                Some(v) => wrong.push(format!("{key} = {v:?}")),
                None => missing.push(key.clone()),
            }
        }
    }
    (found, missing, wrong)
}

/// How the node is stopped under load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGKILL: a crash.
    Kill,
    /// SIGTERM: a graceful shutdown, which must exit 0.
    Term,
}

/// Writes from [`WRITERS`] connections, stops the node the moment the
/// [`ACKS_BEFORE_KILL`]th acknowledgement arrives (the other writers still
/// have requests in flight), restarts it, and checks every acknowledged key.
async fn crash_keeps_acknowledged_writes(fsync: &str, stop: Stop) {
    let mut node = TestNode::start(&["--fsync", fsync]);
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let acks = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let target_reached = Arc::new(Notify::new());
    let mut writers = tokio::task::JoinSet::new();
    for id in 0..WRITERS {
        writers.spawn(writer(
            id,
            node.url(),
            Arc::clone(&outcome),
            Arc::clone(&acks),
            Arc::clone(&killed),
            Arc::clone(&target_reached),
        ));
    }
    let monitor = tokio::spawn(watch_syncs(node.url(), Arc::clone(&killed)));
    let started = Instant::now();
    tokio::select! {
        () = target_reached.notified() => {}
        () = tokio::time::sleep(WRITE_PHASE_TIMEOUT) => panic!(
            "only {} acknowledgements in {WRITE_PHASE_TIMEOUT:?}",
            acks.load(Ordering::SeqCst)
        ),
        Some(done) = writers.join_next() => panic!(
            "a writer stopped before the kill: {done:?}"
        ),
    }
    // Mark first, so a writer that sees its connection die knows why.
    killed.store(true, Ordering::SeqCst);
    let acks_at_kill = acks.load(Ordering::SeqCst);
    // Blocking waits; let the writers run on the other worker meanwhile.
    tokio::task::block_in_place(|| match stop {
        Stop::Kill => node.kill9(),
        Stop::Term => {
            let status = node.terminate();
            assert!(status.success(), "SIGTERM under load exited {status:?}");
        }
    });
    let write_time = started.elapsed();

    let mut attempts_per_writer = Vec::new();
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(done) = writers.join_next().await {
            match done {
                Ok(Ok(n)) => attempts_per_writer.push(n),
                Ok(Err(e)) => panic!("{e}"),
                Err(e) => panic!("writer task failed: {e}"),
            }
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "writers did not notice the dead node in 60 s"
    );

    let (syncs, records) = tokio::time::timeout(Duration::from_secs(30), monitor)
        .await
        .expect("the INFO monitor did not stop")
        .expect("the INFO monitor panicked");
    println!(
        "fsync={fsync}: last INFO before the stop: {syncs} group-commit fsyncs for {records} records written"
    );
    if fsync == "always" {
        assert!(
            syncs > 0 && syncs <= records,
            "--fsync always ran {syncs} group syncs for {records} records"
        );
    }
    let outcome = std::mem::take(&mut *outcome.lock().unwrap_or_else(PoisonError::into_inner));
    let acknowledged = outcome.acknowledged;
    assert!(acknowledged.len() >= ACKS_BEFORE_KILL);
    assert!(acks_at_kill >= ACKS_BEFORE_KILL);

    tokio::task::block_in_place(|| node.restart());
    let mut con = connect(&node.url()).await;
    let (found, missing, wrong) = check_keys(&mut con, &acknowledged).await;
    let (in_flight_found, _, in_flight_wrong) = check_keys(&mut con, &outcome.in_flight).await;
    println!(
        "fsync={fsync}: {WRITERS} writers, {} acknowledged ({acks_at_kill} when {stop:?} was sent, \
         after {write_time:.2?}), {} in flight at the stop; after restart: {found} acknowledged \
         found, {} missing, {} wrong; {in_flight_found} of the in-flight writes were applied",
        acknowledged.len(),
        outcome.in_flight.len(),
        missing.len(),
        wrong.len(),
    );
    assert!(
        missing.is_empty() && wrong.is_empty(),
        "acknowledged writes lost after {stop:?} (fsync={fsync}): {} missing (first: {:?}), {} wrong (first: {:?})",
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>(),
        wrong.len(),
        wrong.iter().take(10).collect::<Vec<_>>(),
    );
    assert_eq!(found, acknowledged.len());
    assert!(in_flight_wrong.is_empty(), "{in_flight_wrong:?}");
    if stop == Stop::Term {
        // A graceful stop answers every command it executed before closing.
        assert_eq!(
            in_flight_found, 0,
            "SIGTERM applied writes it never acknowledged"
        );
    }
    // The kill landed while every writer was busy, not after some gave up.
    let mut per_writer: BTreeMap<usize, usize> = BTreeMap::new();
    for key in &acknowledged {
        let id: usize = key[1..key.find(':').unwrap_or(1)]
            .parse()
            .unwrap_or(usize::MAX);
        *per_writer.entry(id).or_default() += 1;
    }
    assert_eq!(
        per_writer.len(),
        WRITERS,
        "every writer got acknowledgements"
    );
    assert_eq!(attempts_per_writer.len(), WRITERS);
    // The node still takes writes after recovery.
    let reply: Value = redis::cmd("SET")
        .arg("after-restart")
        .arg("ok")
        .query_async(&mut con)
        .await
        .expect("SET after restart");
    assert_eq!(reply, Value::Okay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_keeps_every_acknowledged_write_fsync_always() {
    // Proves --fsync always loses no acknowledged write: 8 concurrent writers, SIGKILL at the 3,000th +OK with writes still in flight, restart, read every acknowledged key back.
    crash_keeps_acknowledged_writes("always", Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_keeps_every_acknowledged_write_fsync_everysec() {
    // Proves the everysec promise for a process crash (writes reach the OS before the reply): the same SIGKILL-mid-write run as for always.
    crash_keeps_acknowledged_writes("everysec", Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_zero_and_keeps_acknowledged_writes() {
    // Proves a graceful stop in the middle of 8 writers' traffic (--fsync no) exits 0 within the drain deadline and every +OK the clients saw survives the restart.
    crash_keeps_acknowledged_writes("no", Stop::Term).await;
}

#[tokio::test]
async fn sigterm_exits_zero_and_flushes_with_fsync_no() {
    // Proves SIGTERM is a graceful shutdown: with --fsync no and an idle client still connected, the node exits 0 and a restart finds every key written.
    let mut node = TestNode::start(&["--fsync", "no"]);
    let mut con = connect(&node.url()).await;
    let mut pipe = redis::pipe();
    let keys: Vec<String> = (0..2_000).map(|i| format!("term:{i}")).collect();
    for key in &keys {
        pipe.cmd("SET").arg(key).arg(value_for(key)).ignore();
    }
    pipe.query_async::<()>(&mut con)
        .await
        .expect("pipeline of SETs");
    let reply: Value = redis::cmd("MSET")
        .arg(&["m1", "one", "m2", "two"])
        .query_async(&mut con)
        .await
        .expect("MSET");
    assert_eq!(reply, Value::Okay);
    let reply: Value = redis::cmd("DEL")
        .arg("term:0")
        .query_async(&mut con)
        .await
        .expect("DEL");
    assert_eq!(reply, Value::Int(1));

    // The client stays connected (idle) across the shutdown.
    let stopping = Instant::now();
    let status = node.terminate();
    println!("SIGTERM: exit {status:?} after {:.2?}", stopping.elapsed());
    // On failure the node's log is printed as it is dropped.
    assert!(status.success(), "SIGTERM must exit 0, got {status:?}");
    assert!(
        node.log_tail()
            .iter()
            .any(|line| line.contains("store flushed")),
        "no flush logged"
    );
    drop(con);

    node.restart();
    let mut con = connect(&node.url()).await;
    let (found, missing, wrong) = check_keys(&mut con, &keys[1..]).await;
    println!(
        "fsync=no: {} keys written, after SIGTERM and restart {found} found, {} missing, {} wrong",
        keys.len() - 1,
        missing.len(),
        wrong.len()
    );
    assert!(
        missing.is_empty() && wrong.is_empty(),
        "missing {:?}, wrong {:?}",
        missing.iter().take(10).collect::<Vec<_>>(),
        wrong.iter().take(10).collect::<Vec<_>>()
    );
    let rest: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&["term:0", "m1", "m2"])
        .query_async(&mut con)
        .await
        .expect("MGET");
    assert_eq!(rest, vec![None, Some("one".into()), Some("two".into())]);
    // A second graceful stop of the recovered node is clean too.
    assert!(node.terminate().success());
}

#[tokio::test]
async fn kill9_after_ingested_generations_keeps_every_write() {
    // Proves the staged store's recovery: 48 MiB of SETs (about three
    // 16 MiB generations, each ingested as a table when full), then
    // overwrites and DELs of ingested keys, the last hundreds of them only
    // staged and logged, then SIGKILL: after the restart every key reads
    // back as last written. (Recovery that skips the logs fails it.)
    let mut node = TestNode::start(&["--fsync", "everysec"]);
    let mut con = connect(&node.url()).await;
    let keys: Vec<String> = (0..12_000).map(|i| format!("big:{i}")).collect();
    let big = |key: &str, round: usize| format!("{round}:{key}:{}", "x".repeat(4_000));
    for chunk in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("SET").arg(key).arg(big(key, 0)).ignore();
        }
        pipe.query_async::<()>(&mut con).await.expect("SETs");
    }
    let mut pipe = redis::pipe();
    for key in keys.iter().take(1_000) {
        pipe.cmd("SET").arg(key).arg(big(key, 1)).ignore();
    }
    pipe.cmd("DEL").arg(&keys[1_000..1_100]).ignore();
    pipe.query_async::<()>(&mut con)
        .await
        .expect("overwrites and DELs");
    drop(con);
    node.kill9();

    node.restart();
    let mut con = connect(&node.url()).await;
    let (mut found, mut wrong) = (0, Vec::new());
    for (first, chunk) in keys.chunks(CHECK_BATCH).enumerate() {
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(chunk)
            .query_async(&mut con)
            .await
            .expect("MGET after restart");
        for (i, (key, value)) in chunk.iter().zip(values).enumerate() {
            let expected = match first * CHECK_BATCH + i {
                0..1_000 => Some(big(key, 1)),
                1_000..1_100 => None,
                _ => Some(big(key, 0)),
            };
            if value == expected {
                found += 1;
            } else {
                wrong.push(key.clone());
            }
        }
    }
    println!(
        "after SIGKILL and restart: {found} of {} keys as last written",
        keys.len()
    );
    assert!(
        wrong.is_empty(),
        "{} wrong, first {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    let dbsize: usize = redis::cmd("DBSIZE")
        .query_async(&mut con)
        .await
        .expect("DBSIZE");
    assert_eq!(dbsize, keys.len() - 100);
}

/// `keys` and `expires` of `INFO keyspace`'s db0 line ((0, 0) without one).
async fn keyspace_db0(con: &mut redis::aio::MultiplexedConnection) -> (usize, usize) {
    let info: String = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(con)
        .await
        .expect("INFO keyspace");
    let Some(line) = info.lines().find_map(|line| line.strip_prefix("db0:")) else {
        return (0, 0);
    };
    let field = |name: &str| {
        line.split(',')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .expect("a count")
    };
    (field("keys"), field("expires"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_batch_keeps_each_expiry_with_its_record() {
    // Proves a batch's record and expiry-index entry are one log entry: pipelines of SET EX (each a store batch of both) run until a SIGKILL lands among them; after the restart every acknowledged key holds its value and a TTL, no in-flight key holds a value without one, and the index counted after the crash (INFO keyspace's expires) has exactly one entry per key.
    const PIPELINE: usize = 200;
    let mut node = TestNode::start(&["--fsync", "everysec"]);
    let acked = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (url, acked) = (node.url(), Arc::clone(&acked));
        tokio::spawn(async move {
            let mut con = connect(&url).await;
            for round in 0.. {
                let mut pipe = redis::pipe();
                for i in 0..PIPELINE {
                    let key = format!("ex:{}", round * PIPELINE + i);
                    pipe.cmd("SET")
                        .arg(&key)
                        .arg(value_for(&key))
                        .arg("EX")
                        .arg(100_000)
                        .ignore();
                }
                if pipe.query_async::<()>(&mut con).await.is_err() {
                    return round * PIPELINE;
                }
                acked.store((round + 1) * PIPELINE, Ordering::SeqCst);
            }
            unreachable!("the loop ends at the kill")
        })
    };
    let deadline = Instant::now() + WRITE_PHASE_TIMEOUT;
    while acked.load(Ordering::SeqCst) < 20 * PIPELINE {
        assert!(Instant::now() < deadline, "too few SETs acknowledged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::task::block_in_place(|| node.kill9());
    let acknowledged = writer.await.expect("the writer");
    // The pipeline in flight at the kill, and one more for good measure.
    let attempted = acknowledged + 2 * PIPELINE;

    tokio::task::block_in_place(|| node.restart());
    let mut con = connect(&node.url()).await;
    let (mut with_ttl, mut lost, mut bare) = (0, Vec::new(), Vec::new());
    for first in (0..attempted).step_by(CHECK_BATCH) {
        let keys: Vec<String> = (first..(first + CHECK_BATCH).min(attempted))
            .map(|i| format!("ex:{i}"))
            .collect();
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("GET").arg(key).cmd("TTL").arg(key);
        }
        let replies: Vec<(Option<String>, i64)> =
            pipe.query_async(&mut con).await.expect("GET and TTL");
        for (i, (key, (value, ttl))) in keys.iter().zip(replies).enumerate() {
            match (value, ttl > 0) {
                (Some(v), true) if v == value_for(key) => with_ttl += 1,
                (None, false) if first + i >= acknowledged => {}
                (value, _) if first + i < acknowledged && value.is_none() => lost.push(key.clone()),
                (value, _) => bare.push(format!("{key}: {value:?}, TTL {ttl}")),
            }
        }
    }
    let (keys, expires) = keyspace_db0(&mut con).await;
    println!(
        "SET EX pipelines: {acknowledged} acknowledged before SIGKILL; after the restart \
         {with_ttl} keys with a TTL, {} lost, {} without their expiry; INFO keys={keys} \
         expires={expires}",
        lost.len(),
        bare.len()
    );
    assert!(
        lost.is_empty(),
        "acknowledged keys lost: {:?}",
        &lost[..lost.len().min(10)]
    );
    assert!(
        bare.is_empty(),
        "records and expiries apart: {:?}",
        &bare[..bare.len().min(10)]
    );
    assert!(with_ttl >= acknowledged);
    assert_eq!((keys, expires), (with_ttl, with_ttl));
}

/// Keys in the scan of a node: SCAN to the end, bounded by pages.
async fn scan_count(con: &mut redis::aio::MultiplexedConnection) -> usize {
    let (mut cursor, mut keys) = (0u64, 0usize);
    for _ in 0..100_000 {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1_000)
            .query_async(con)
            .await
            .expect("SCAN");
        keys += page.len();
        cursor = next;
        if cursor == 0 {
            return keys;
        }
    }
    panic!("SCAN did not finish in 100,000 pages");
}

/// Writes `keys` with their [`value_for`] values in pipelines of 500.
async fn write_keys(con: &mut redis::aio::MultiplexedConnection, keys: &[String]) {
    for chunk in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("SET").arg(key).arg(value_for(key)).ignore();
        }
        pipe.query_async::<()>(con).await.expect("SETs");
    }
}

/// Through `url`: writes 200 keys, runs `flush` (FLUSHALL or FLUSHDB),
/// then writes `count` keys; returns (the flushed keys, the kept ones).
async fn write_around_flush(
    url: &str,
    flush: &str,
    round: usize,
    count: usize,
) -> (Vec<String>, Vec<String>) {
    let mut con = connect(url).await;
    let flushed: Vec<String> = (0..200).map(|i| format!("old:{round}:{i}")).collect();
    write_keys(&mut con, &flushed).await;
    let reply: Value = redis::cmd(flush)
        .query_async(&mut con)
        .await
        .expect("flush");
    assert_eq!(reply, Value::Okay);
    let keys: Vec<String> = (0..count).map(|i| format!("new:{round}:{i}")).collect();
    write_keys(&mut con, &keys).await;
    (flushed, keys)
}

/// After a restart: every key of `keys` reads back as written, none of
/// `flushed` does, and DBSIZE equals the keys SCAN returns (both `keys`
/// plus `extra`).
async fn check_after_flush(
    con: &mut redis::aio::MultiplexedConnection,
    keys: &[String],
    flushed: &[String],
    extra: usize,
    what: &str,
) {
    let (found, missing, wrong) = check_keys(con, keys).await;
    println!(
        "{what}: {found} of {} keys written after the flush found",
        keys.len()
    );
    assert!(
        missing.is_empty() && wrong.is_empty(),
        "{what}: {} missing (first {:?}), {} wrong (first {:?})",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        wrong.len(),
        wrong.iter().take(5).collect::<Vec<_>>()
    );
    let (_, flushed_found, _) = check_keys(con, flushed).await;
    assert_eq!(
        flushed_found.len(),
        flushed.len(),
        "{what}: a flushed key came back"
    );
    // DBSIZE and SCAN count each partition on one replica: in a cluster,
    // a replica whose copy of a write was cut off by the shutdown holds it
    // only once the reads above repaired it (queued, sent soon after), so
    // the counts are awaited, bounded.
    let want = keys.len() + extra;
    let deadline = Instant::now() + REPAIR_WAIT;
    loop {
        let dbsize: usize = redis::cmd("DBSIZE").query_async(con).await.expect("DBSIZE");
        let scanned = scan_count(con).await;
        if (dbsize, scanned) == (want, want) || Instant::now() >= deadline {
            assert_eq!((dbsize, scanned), (want, want), "{what}: DBSIZE and SCAN");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn writes_after_flushall_survive_sigterm_and_kill9() {
    // Proves the FLUSHALL-then-restart loss is gone: on one node, keys written after FLUSHALL or FLUSHDB (1 and 20,000 of them) all read back after a SIGTERM and after a kill -9, no flushed key returns, and DBSIZE equals SCAN's count. It failed with fjall's clear, whose replayed marker dropped every table ingested after it.
    let mut node = TestNode::start(&["--fsync", "everysec"]);
    for (round, (count, flush, stop)) in [
        (1, "FLUSHALL", Stop::Term),
        (1, "FLUSHDB", Stop::Kill),
        (20_000, "FLUSHDB", Stop::Term),
        (20_000, "FLUSHALL", Stop::Kill),
    ]
    .into_iter()
    .enumerate()
    {
        let what = format!("{count} keys after {flush}, then {stop:?}");
        let (flushed, keys) = write_around_flush(&node.url(), flush, round, count).await;
        match stop {
            Stop::Term => assert!(node.terminate().success(), "{what}: SIGTERM must exit 0"),
            Stop::Kill => node.kill9(),
        }
        node.restart();
        let mut con = connect(&node.url()).await;
        check_after_flush(&mut con, &keys, &flushed, 0, &what).await;
        // The next round starts from a flushed node.
        let reply: Value = redis::cmd("FLUSHALL")
            .query_async(&mut con)
            .await
            .expect("flush");
        assert_eq!(reply, Value::Okay);
    }
}

#[tokio::test]
async fn store_operations_after_flushall_survive_sigterm_and_kill9() {
    // Proves the operations that touch the store outside a plain SET (RENAME, COPY, expiry and its reaper, DEL) keep their effect across a SIGTERM and a kill -9 after a FLUSHALL: the renamed and copied keys are there, a reaped key stays gone, a TTL survives, and DBSIZE equals SCAN's count.
    let mut node = TestNode::start(&["--fsync", "always"]);
    for stop in [Stop::Term, Stop::Kill] {
        let mut con = connect(&node.url()).await;
        let reply: Value = redis::cmd("FLUSHALL")
            .query_async(&mut con)
            .await
            .expect("flush");
        assert_eq!(reply, Value::Okay);
        let keys: Vec<String> = (0..100).map(|i| format!("k:{i}")).collect();
        write_keys(&mut con, &keys).await;
        let mut pipe = redis::pipe();
        pipe.cmd("RENAME").arg("k:0").arg("renamed").ignore();
        pipe.cmd("COPY").arg("k:1").arg("copied").ignore();
        pipe.cmd("DEL").arg("k:2").ignore();
        pipe.cmd("PEXPIRE").arg("k:3").arg(50).ignore();
        pipe.cmd("EXPIRE").arg("k:4").arg(100_000).ignore();
        pipe.query_async::<()>(&mut con)
            .await
            .expect("store operations");
        // Let the reaper (or a read) remove k:3 before the stop.
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(con);
        match stop {
            Stop::Term => assert!(node.terminate().success(), "SIGTERM must exit 0"),
            Stop::Kill => node.kill9(),
        }
        node.restart();
        let mut con = connect(&node.url()).await;
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&["renamed", "copied", "k:0", "k:1", "k:2", "k:3", "k:4"])
            .query_async(&mut con)
            .await
            .expect("MGET");
        assert_eq!(
            values,
            vec![
                Some(value_for("k:0")),
                Some(value_for("k:1")),
                None,
                Some(value_for("k:1")),
                None,
                None,
                Some(value_for("k:4")),
            ],
            "after {stop:?}"
        );
        let ttl: i64 = redis::cmd("TTL")
            .arg("k:4")
            .query_async(&mut con)
            .await
            .expect("TTL");
        assert!(
            (99_000..=100_000).contains(&ttl),
            "TTL after {stop:?}: {ttl}"
        );
        let rest: Vec<String> = keys[5..].to_vec();
        check_after_flush(&mut con, &rest, &[], 4, &format!("after {stop:?}")).await;
    }
}

#[tokio::test]
async fn a_cluster_keeps_writes_after_flushall_across_full_restarts() {
    // Proves the FLUSHALL-then-restart loss is gone on a 3-node cluster: keys written after a FLUSHALL (1 and 20,000) read back through every node after all three are stopped with SIGTERM and started again, and again after all three are killed with kill -9; DBSIZE equals SCAN's count on every node.
    let mut cluster = TestCluster::start(3, &["--fsync", "everysec"]);
    for (round, (count, stop)) in [(1, Stop::Term), (20_000, Stop::Term), (20_000, Stop::Kill)]
        .into_iter()
        .enumerate()
    {
        let what = format!("cluster: {count} keys after FLUSHALL, then {stop:?} of all nodes");
        let (flushed, keys) =
            write_around_flush(&cluster.node(0).url(), "FLUSHALL", round, count).await;
        for i in 0..cluster.len() {
            match stop {
                Stop::Term => assert!(cluster.node_mut(i).terminate().success(), "{what}: exit 0"),
                Stop::Kill => cluster.kill9(i),
            }
        }
        for i in 0..cluster.len() {
            cluster.restart(i);
        }
        cluster.wait_converged(3);
        for i in 0..cluster.len() {
            let mut con = connect(&cluster.node(i).url()).await;
            check_after_flush(&mut con, &keys, &flushed, 0, &format!("{what}, node {i}")).await;
        }
        let mut con = connect(&cluster.node(0).url()).await;
        let reply: Value = redis::cmd("FLUSHALL")
            .query_async(&mut con)
            .await
            .expect("flush");
        assert_eq!(reply, Value::Okay);
    }
}

/// Keys per logical database in [`databases_survive_flushdb_move_and_copy`].
const KEYS_PER_DB: usize = 300;

/// What each logical database holds: key → value.
type Databases = BTreeMap<u8, BTreeMap<String, String>>;

/// Through `url` (a node of a cluster or a lone node): fills databases 0,
/// 1 and 2 with [`KEYS_PER_DB`] keys each, under names shared between
/// them and values that name the database; then MOVEs, COPYs ... DB,
/// FLUSHDBs database 1 and writes it again. Returns what each database
/// must hold.
async fn write_databases(url: &str) -> Databases {
    let mut model = Databases::new();
    let con = |db: u8| {
        let url = format!("{url}{db}");
        async move { connect(&url).await }
    };
    for db in 0..3u8 {
        let mut c = con(db).await;
        let mut pipe = redis::pipe();
        for i in 0..KEYS_PER_DB {
            let (key, value) = (format!("k:{i}"), format!("{db}:{i}"));
            pipe.cmd("SET").arg(&key).arg(&value).ignore();
            model.entry(db).or_default().insert(key, value);
        }
        pipe.query_async::<()>(&mut c).await.expect("SETs");
    }
    let mut zero = con(0).await;
    for i in 0..50 {
        let key = format!("k:{i}");
        let moved: i64 = redis::cmd("MOVE")
            .arg(&key)
            .arg(3)
            .query_async(&mut zero)
            .await
            .expect("MOVE");
        assert_eq!(moved, 1, "MOVE {key} 3");
        let value = model.entry(0).or_default().remove(&key).expect("model");
        model.entry(3).or_default().insert(key, value);
    }
    // A key the target database holds already is not moved.
    let kept: i64 = redis::cmd("MOVE")
        .arg("k:60")
        .arg(2)
        .query_async(&mut zero)
        .await
        .expect("MOVE");
    assert_eq!(kept, 0);
    let mut two = con(2).await;
    for i in 0..50 {
        let (key, copy) = (format!("k:{i}"), format!("copy:{i}"));
        let copied: i64 = redis::cmd("COPY")
            .arg(&key)
            .arg(&copy)
            .arg("DB")
            .arg(4)
            .query_async(&mut two)
            .await
            .expect("COPY");
        assert_eq!(copied, 1, "COPY {key} {copy} DB 4");
        let value = model[&2][&key].clone();
        model.entry(4).or_default().insert(copy, value);
    }
    let mut one = con(1).await;
    let reply: Value = redis::cmd("FLUSHDB")
        .query_async(&mut one)
        .await
        .expect("FLUSHDB");
    assert_eq!(reply, Value::Okay);
    let written_after: BTreeMap<String, String> = (0..KEYS_PER_DB / 2)
        .map(|i| (format!("after:{i}"), format!("1:after:{i}")))
        .collect();
    let mut pipe = redis::pipe();
    for (key, value) in &written_after {
        pipe.cmd("SET").arg(key).arg(value).ignore();
    }
    pipe.query_async::<()>(&mut one).await.expect("SETs");
    model.insert(1, written_after);
    model
}

/// Through `url`: every database holds exactly what `model` says (each
/// key's value, DBSIZE, SCAN's count, INFO keyspace).
async fn check_databases(url: &str, model: &Databases, what: &str) {
    let mut info_con = connect(url).await;
    let info: String = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(&mut info_con)
        .await
        .expect("INFO");
    // The databases written, and one never used.
    for db in [0, 1, 2, 3, 4, 15] {
        let empty = BTreeMap::new();
        let keys = model.get(&db).unwrap_or(&empty);
        let mut con = connect(&format!("{url}{db}")).await;
        for chunk in keys.iter().collect::<Vec<_>>().chunks(CHECK_BATCH) {
            let names: Vec<&String> = chunk.iter().map(|(k, _)| *k).collect();
            let values: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&names)
                .query_async(&mut con)
                .await
                .expect("MGET");
            for ((key, want), got) in chunk.iter().zip(values) {
                assert_eq!(got.as_ref(), Some(*want), "{what}: database {db}, {key}");
            }
        }
        let dbsize: usize = redis::cmd("DBSIZE")
            .query_async(&mut con)
            .await
            .expect("DBSIZE");
        let scanned = scan_count(&mut con).await;
        assert_eq!(
            (dbsize, scanned),
            (keys.len(), keys.len()),
            "{what}: database {db}'s DBSIZE and SCAN"
        );
        let line = format!("db{db}:keys={},", keys.len());
        assert_eq!(
            info.contains(&line),
            !keys.is_empty(),
            "{what}: INFO keyspace for database {db}: {info}"
        );
    }
}

#[tokio::test]
async fn databases_survive_flushdb_move_and_copy() {
    // Proves Redis's logical databases keep their keys apart through MOVE, COPY ... DB and a FLUSHDB of one database, on one node and on a 3-node cluster, across SIGTERM and kill -9 of every node: each database's keys and values, DBSIZE, SCAN and INFO keyspace are exactly the model's afterwards (and before, through every node).
    // 64 partitions: SCAN walks them all for every database checked.
    let args = ["--fsync", "everysec", "--partitions", "64"];
    let mut node = TestNode::start(&args);
    for stop in [Stop::Term, Stop::Kill] {
        let model = write_databases(&node.url()).await;
        check_databases(&node.url(), &model, "one node, before the stop").await;
        match stop {
            Stop::Term => assert!(node.terminate().success(), "SIGTERM must exit 0"),
            Stop::Kill => node.kill9(),
        }
        node.restart();
        check_databases(&node.url(), &model, &format!("one node after {stop:?}")).await;
        let mut con = connect(&node.url()).await;
        let reply: Value = redis::cmd("FLUSHALL")
            .query_async(&mut con)
            .await
            .expect("FLUSHALL");
        assert_eq!(reply, Value::Okay);
    }
    let mut cluster = TestCluster::start(3, &args);
    for stop in [Stop::Term, Stop::Kill] {
        let model = write_databases(&cluster.node(1).url()).await;
        for i in 0..cluster.len() {
            let what = format!("cluster, through node {i}");
            check_databases(&cluster.node(i).url(), &model, &what).await;
        }
        for i in 0..cluster.len() {
            match stop {
                Stop::Term => assert!(cluster.node_mut(i).terminate().success(), "exit 0"),
                Stop::Kill => cluster.kill9(i),
            }
        }
        for i in 0..cluster.len() {
            cluster.restart(i);
        }
        cluster.wait_converged(3);
        for i in 0..cluster.len() {
            let what = format!("cluster after {stop:?}, through node {i}");
            check_databases(&cluster.node(i).url(), &model, &what).await;
        }
        let mut con = connect(&cluster.node(0).url()).await;
        let reply: Value = redis::cmd("FLUSHALL")
            .query_async(&mut con)
            .await
            .expect("FLUSHALL");
        assert_eq!(reply, Value::Okay);
    }
}
