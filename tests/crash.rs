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

use common::{TestNode, connect};
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
