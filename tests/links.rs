//! Peer links between real processes on loopback (issue 17): that a
//! fresh cluster's links come up at once and stay up, that a node's death
//! costs the survivors nothing but their links to it, and that a
//! restarted node answers LOADING, never NOQUORUM, while it reaches its
//! peers. Each test starts its own nodes in temporary data directories
//! and kills every process it started (`common::TestNode` kills on drop).
//!
//! `DYNOKV_LINKS_RUNS=<k> cargo test --test links -- --nocapture` runs k
//! fresh clusters (default [`RUNS_DEFAULT`]) and prints the figures.

mod common;

use common::{TestCluster, TestNode, dynamo_members, eventually, try_connect_sync};
use redis::{Connection, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Fresh clusters `fresh_clusters_link_at_once_and_survive_a_kill` starts
/// unless `DYNOKV_LINKS_RUNS` says otherwise: few, so `cargo test` stays
/// fast; the 1-in-10 to 1-in-25 failures need hundreds.
const RUNS_DEFAULT: usize = 20;
/// How soon after its nodes start a cluster must have every link up on
/// both ends and take a W = 3 write through every node.
const LINKS_UP_MAX: Duration = Duration::from_secs(2);
/// How long a fresh cluster may take to settle its layout (the others
/// receive their partitions from the first node).
const SETTLE_MAX: Duration = Duration::from_secs(30);
/// How often the start-up checks are polled.
const POLL: Duration = Duration::from_millis(10);
/// How long after a kill the survivors' logs are watched for a link
/// between them going down (the issue saw it 25-60 ms after the kill).
const AFTER_KILL_WATCH: Duration = Duration::from_millis(300);
/// Fixed ports for nodes that must know each other's addresses before
/// any starts come from here: below the ephemeral range (32768 and up,
/// where port 0 binds land), so other tests' nodes never take them.
const LOW_PORTS: std::ops::Range<u16> = 20_000..32_000;
/// How long the restarted node is hammered at most.
const HAMMER_MAX: Duration = Duration::from_secs(15);
/// Successful commands after which the hammering stops.
const HAMMER_SUCCESSES: usize = 300;
/// How long a node stays down before its restart: long enough for its
/// peers' redial backoff to reach its maximum.
const DOWN_FOR: Duration = Duration::from_secs(4);

fn runs() -> usize {
    std::env::var("DYNOKV_LINKS_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RUNS_DEFAULT)
}

/// `k` ports in [`LOW_PORTS`] free on 127.0.0.1 right now: each is bound
/// (and all are held until every one is found), then released.
fn free_low_ports(k: usize, salt: usize) -> Vec<u16> {
    let span = (LOW_PORTS.end - LOW_PORTS.start) as usize;
    let start = (std::process::id() as usize * 7919 + salt * 131) % span;
    let mut held = Vec::new();
    for offset in 0..span {
        if held.len() == k {
            break;
        }
        let port = LOW_PORTS.start + ((start + offset) % span) as u16;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push((port, listener));
        }
    }
    assert_eq!(held.len(), k, "no {k} free ports in {LOW_PORTS:?}");
    held.into_iter().map(|(port, _)| port).collect()
}

/// Three nodes `n1..n3`, each started with `--join` to the other two (as
/// `dynokv dev` users and the reporter start them), on fixed
/// ports, all started before any is waited for.
fn start_joined_trio(salt: usize) -> Vec<TestNode> {
    let ports = free_low_ports(6, salt);
    let peer = |i: usize| format!("127.0.0.1:{}", ports[3 + i]);
    (0..3)
        .map(|i| {
            let name = format!("n{}", i + 1);
            let mut args = vec!["--node-name".to_owned(), name];
            for j in (0..3).filter(|&j| j != i) {
                args.extend(["--join".to_owned(), peer(j)]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            TestNode::start_loading_at((ports[i], ports[3 + i]), &args)
        })
        .collect()
}

/// Outcome of one command, as the tests judge it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Ok,
    Loading,
    NoQuorum(String),
    Other(String),
}

fn answer(result: redis::RedisResult<Value>) -> Answer {
    match result {
        Ok(Value::ServerError(e)) => classify(&format!("{e:?}")),
        Ok(_) => Answer::Ok,
        Err(e) => classify(&e.to_string()),
    }
}

fn classify(text: &str) -> Answer {
    // The `redis` crate shows a LOADING error as `BusyLoading: <text>`.
    if text.contains("LOADING") || text.starts_with("BusyLoading") {
        Answer::Loading
    } else if text.contains("NOQUORUM") {
        Answer::NoQuorum(text.to_owned())
    } else {
        Answer::Other(text.to_owned())
    }
}

/// `VSET key "" value W w` through `con`.
fn vset_w(con: &mut Connection, key: &str, value: &str, w: usize) -> Answer {
    answer(
        redis::cmd("VSET")
            .arg(key)
            .arg("")
            .arg(value)
            .arg("W")
            .arg(w)
            .query::<Value>(con),
    )
}

/// `VGET key R r` through `con`.
fn vget_r(con: &mut Connection, key: &str, r: usize) -> Answer {
    answer(
        redis::cmd("VGET")
            .arg(key)
            .arg("R")
            .arg(r)
            .query::<Value>(con),
    )
}

/// Whether `addr` lists every one of its members up.
fn all_up(addr: SocketAddr, members: usize) -> bool {
    dynamo_members(addr).is_ok_and(|rows| {
        rows.len() == members
            && rows
                .iter()
                .all(|r| r.get("status").map(String::as_str) == Some("up"))
    })
}

/// The lines of `node`'s log saying a link to one of `peers` went down.
fn disconnects(node: &TestNode, peers: &[String]) -> Vec<String> {
    node.log_tail()
        .into_iter()
        .filter(|line| {
            line.contains("peer disconnected")
                && peers.iter().any(|p| {
                    line.contains(&format!("peer={p} ")) || line.ends_with(&format!("peer={p}"))
                })
        })
        .collect()
}

/// What one fresh cluster did.
struct Fresh {
    /// From the last node's ready line until every link was up on both
    /// ends and a W = 3 write had succeeded through every node.
    ready: Duration,
    /// Links replaced by a newer one (logged; 0 expected).
    replaced: usize,
}

/// One fresh cluster: up and writable at W = 3 within [`LINKS_UP_MAX`],
/// no link between live nodes ever down, W = 2 through both survivors
/// the moment a node is killed.
fn fresh_cluster(run: usize) -> Result<Fresh, String> {
    let mut nodes = start_joined_trio(run);
    let names: Vec<String> = (1..=3).map(|i| format!("n{i}")).collect();
    let started = Instant::now();
    let mut cons: Vec<Option<Connection>> = (0..3).map(|_| None).collect();
    let mut written = [false; 3];
    let ready = loop {
        for i in 0..3 {
            if written[i] {
                continue;
            }
            if cons[i].is_none() {
                cons[i] = try_connect_sync(nodes[i].addr()).ok();
            }
            if let Some(con) = &mut cons[i] {
                match vset_w(con, &format!("start:{i}"), "v", 3) {
                    Answer::Ok => written[i] = true,
                    Answer::Other(e) if e.contains("os error") || e.contains("broken") => {
                        cons[i] = None;
                    }
                    _ => {}
                }
            }
        }
        if written.iter().all(|&w| w) && nodes.iter().all(|n| all_up(n.addr(), 3)) {
            break started.elapsed();
        }
        if started.elapsed() > LINKS_UP_MAX {
            let views: Vec<String> = nodes
                .iter()
                .map(|n| format!("{}: {:?}", n.addr(), dynamo_members(n.addr())))
                .collect();
            return Err(format!(
                "run {run}: not every link up and W=3 written through every node within \
                 {LINKS_UP_MAX:?} (written {written:?}); views:\n{}\nlogs:\n{}",
                views.join("\n"),
                nodes
                    .iter()
                    .map(|n| n.log_tail().join("\n"))
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            ));
        }
        std::thread::sleep(POLL);
    };
    for (i, node) in nodes.iter().enumerate() {
        let lost = disconnects(node, &names);
        if !lost.is_empty() {
            return Err(format!(
                "run {run}: n{} lost a link at start: {lost:?}",
                i + 1
            ));
        }
    }
    let replaced = nodes
        .iter()
        .flat_map(TestNode::log_tail)
        .filter(|l| l.contains("peer link replaced"))
        .count();
    // A new cluster's first node holds every partition until the others
    // have received theirs and the layout settles (docs/cluster.md,
    // "Membership"): the kill comes once it has.
    let settled = eventually(SETTLE_MAX, POLL, || {
        nodes
            .iter()
            .all(|n| {
                dynamo_members(n.addr()).is_ok_and(|rows| {
                    rows.len() == 3
                        && rows
                            .iter()
                            .all(|r| r.get("state").map(String::as_str) == Some("member"))
                })
            })
            .then_some(())
    });
    if settled.is_none() {
        return Err(format!(
            "run {run}: the layout did not settle in {SETTLE_MAX:?}"
        ));
    }
    // Kill one node; the other two must serve W = 2 and R = 2 at once.
    let victim = run % 3;
    nodes[victim].kill9();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    for &i in &survivors {
        let mut con = try_connect_sync(nodes[i].addr())
            .map_err(|e| format!("run {run}: connect n{}: {e}", i + 1))?;
        let key = format!("after-kill:{i}");
        let set = vset_w(&mut con, &key, "v", 2);
        let get = vget_r(&mut con, &key, 2);
        if set != Answer::Ok || get != Answer::Ok {
            return Err(format!(
                "run {run}: n{} after n{} died: VSET W 2 {set:?}, VGET R 2 {get:?}\n{}",
                i + 1,
                victim + 1,
                nodes[i].log_tail().join("\n")
            ));
        }
    }
    std::thread::sleep(AFTER_KILL_WATCH);
    for &i in &survivors {
        let others: Vec<String> = survivors
            .iter()
            .filter(|&&j| j != i)
            .map(|&j| names[j].clone())
            .collect();
        let lost = disconnects(&nodes[i], &others);
        if !lost.is_empty() {
            return Err(format!(
                "run {run}: n{} lost its link to a survivor when n{} died: {lost:?}",
                i + 1,
                victim + 1
            ));
        }
        if !survivors_up(&nodes[i], &others) {
            return Err(format!(
                "run {run}: n{} does not list the other survivor up",
                i + 1
            ));
        }
    }
    Ok(Fresh { ready, replaced })
}

/// Whether `node` lists every one of `up` as up.
fn survivors_up(node: &TestNode, up: &[String]) -> bool {
    dynamo_members(node.addr()).is_ok_and(|rows| {
        up.iter().all(|name| {
            rows.iter().any(|r| {
                r.get("name") == Some(name) && r.get("status").map(String::as_str) == Some("up")
            })
        })
    })
}

// Proves fresh 3-node clusters (each node --join the other two) have every link up on both ends and take W=3 through every node within 2 s, never log a link between live nodes down, and serve W=2/R=2 through both survivors the moment one is killed; DYNOKV_LINKS_RUNS clusters.
#[test]
fn fresh_clusters_link_at_once_and_survive_a_kill() {
    let runs = runs();
    let mut failures = Vec::new();
    let (mut times, mut replaced) = (Vec::new(), 0);
    let started = Instant::now();
    for run in 0..runs {
        match fresh_cluster(run) {
            Ok(fresh) => {
                times.push(fresh.ready);
                replaced += fresh.replaced;
            }
            Err(e) => {
                eprintln!("{e}");
                failures.push(run);
            }
        }
    }
    times.sort();
    let max = times.last().copied().unwrap_or_default();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    eprintln!(
        "{runs} fresh clusters in {:?}: {}/{runs} had every link up and W=3 through every node \
         within {LINKS_UP_MAX:?} (median {median:?}, max {max:?}), then W=2/R=2 at once through \
         both survivors of a kill -9 and no survivor-to-survivor disconnect; links replaced: \
         {replaced}; failed runs: {failures:?}",
        started.elapsed(),
        times.len(),
    );
    assert!(failures.is_empty(), "failed runs: {failures:?}");
}

/// Counts of what a restarted node answered.
#[derive(Debug, Default)]
struct Hammered {
    ok: usize,
    loading: usize,
    refused_connections: usize,
    first_ok_after: Option<Duration>,
}

/// Sends SET and GET to `addr` from the moment it accepts until
/// [`HAMMER_SUCCESSES`] succeeded or [`HAMMER_MAX`] passed; fails on any
/// answer other than success or LOADING.
fn hammer(addr: SocketAddr, round: usize) -> Result<Hammered, String> {
    let started = Instant::now();
    let mut seen = Hammered::default();
    let mut con: Option<Connection> = None;
    let mut i = 0usize;
    while seen.ok < HAMMER_SUCCESSES {
        if started.elapsed() > HAMMER_MAX {
            return Err(format!(
                "round {round}: only {} successes in {HAMMER_MAX:?}: {seen:?}",
                seen.ok
            ));
        }
        let Some(c) = &mut con else {
            match try_connect_sync(addr) {
                Ok(c) => con = Some(c),
                Err(_) => {
                    seen.refused_connections += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            continue;
        };
        i += 1;
        let key = format!("hammer:{round}:{}", i % 50);
        let result = if i.is_multiple_of(2) {
            redis::cmd("SET").arg(&key).arg(i).query::<Value>(c)
        } else {
            redis::cmd("GET").arg(&key).query::<Value>(c)
        };
        match answer(result) {
            Answer::Ok => {
                seen.ok += 1;
                seen.first_ok_after.get_or_insert(started.elapsed());
            }
            Answer::Loading => seen.loading += 1,
            Answer::NoQuorum(e) => {
                return Err(format!(
                    "round {round}: NOQUORUM from the restarted node after {:?}: {e} ({seen:?})",
                    started.elapsed()
                ));
            }
            Answer::Other(e) if e.contains("os error") || e.contains("broken pipe") => con = None,
            Answer::Other(e) => {
                return Err(format!("round {round}: unexpected answer {e} ({seen:?})"));
            }
        }
    }
    Ok(seen)
}

// Proves a restarted node of a 3-node cluster answers only success or LOADING, never NOQUORUM, from the first moment its port accepts (each node restarted in turn after 4 s down, hammered with SET/GET).
#[test]
fn restarted_node_answers_loading_never_noquorum() {
    let mut cluster = TestCluster::start(3, &[]);
    for round in 0..3 {
        cluster.kill9(round);
        std::thread::sleep(DOWN_FOR);
        cluster.node_mut(round).restart_loading();
        let seen = hammer(cluster.node(round).addr(), round)
            .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", cluster.node(round).log_tail().join("\n")));
        eprintln!(
            "round {round}: restarted node {round} answered LOADING {} times, then {} successes \
             (first after {:?}); connection attempts refused: {}",
            seen.loading, seen.ok, seen.first_ok_after, seen.refused_connections
        );
        assert!(
            cluster.node(round).log_contains("serving data commands"),
            "the node logs when it starts serving"
        );
        cluster.wait_converged(3);
    }
}
