//! Fault scenarios on real node processes, judged by the history checker.
//!
//! Each test starts 3 `dynokv serve` processes (N = 3, R = W = 2 unless it
//! says otherwise), most of them behind the test-owned peer proxies of
//! `common::proxy`, runs several client threads that do `VGET` then
//! `VSET`/`VDEL` with the context read on a small key set through
//! different nodes, injects its faults while they run, heals, and hands
//! the recorded history and the final states to `common::history::check`.
//! Every scenario prints one checker line and asserts lost = 0, phantoms
//! = 0, nothing resurrected, converged. Where a fault takes the quorum
//! away (a minority side) the share of acknowledged operations is
//! printed, not asserted.
//!
//! Soak mode: `DYNOKV_CHAOS_SECS=600 cargo test --test faults --
//! --nocapture --test-threads=1` gives each scenario 600/7 s and repeats
//! its round (fresh keys, new fault timing from the seed) until that time
//! is spent. `DYNOKV_CHAOS_SEED=<n>` fixes the seed of the fault schedule
//! and the clients' choices (the processes' timing still varies).

mod common;

use common::history::{self, Client, History, Op, Report};
use common::{Rng, TestCluster};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Replicas per key (and nodes per cluster).
const N: usize = 3;
/// How long a client waits to connect and for a reply: above the peer
/// request timeout (2 s) twice over, so a forwarded write can finish.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on the nodes' views and replicas converging after the heal.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Scenarios in this file (the soak budget is shared among them).
const SCENARIOS: u64 = 7;
/// Most operations one client runs in a round.
const OPS_PER_CLIENT_MAX: usize = 3_000;
/// Pause after a failed operation, so a client without quorum does not spin.
const BACKOFF_AFTER_FAILURE: Duration = Duration::from_millis(20);
/// Counter keys of a round, incremented with INCRBY through every node.
const COUNTERS: usize = 8;
/// Share of client rounds that increment a counter, in percent.
const COUNTER_PERCENT: usize = 25;

/// The seed of this run: `DYNOKV_CHAOS_SEED`, or the clock.
fn base_seed() -> u64 {
    std::env::var("DYNOKV_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// Time each scenario may spend on rounds: none past the first unless
/// `DYNOKV_CHAOS_SECS` is set.
fn soak_budget() -> Duration {
    std::env::var("DYNOKV_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::ZERO, |s| Duration::from_secs(s / SCENARIOS))
}

/// One client of the workload.
#[derive(Debug, Clone, Copy)]
struct ClientSpec {
    node: usize,
    r: Option<usize>,
    w: Option<usize>,
}

fn clients_on(nodes: &[usize], per_node: usize) -> Vec<ClientSpec> {
    nodes
        .iter()
        .flat_map(|&node| {
            (0..per_node).map(move |_| ClientSpec {
                node,
                r: None,
                w: None,
            })
        })
        .collect()
}

/// What one round runs.
#[derive(Debug, Clone)]
struct Workload {
    clients: Vec<ClientSpec>,
    keys: usize,
    /// Clients stop after this long (or when the schedule stops them).
    duration: Duration,
}

/// What the fault schedule works with while clients run.
struct Run<'a> {
    cluster: &'a mut TestCluster,
    rng: Rng,
    history: &'a History,
    stop: &'a AtomicBool,
    /// Writes in flight through each node.
    in_flight: &'a [AtomicUsize],
    /// When the first fault began and when the last was healed (history
    /// time).
    fault_began: Option<Duration>,
    healed: Option<(Duration, Instant)>,
    notes: Vec<String>,
    /// Named groups of nodes whose availability is reported apart
    /// ("minority", "majority", ...).
    roles: Vec<(&'static str, Vec<usize>)>,
}

impl Run<'_> {
    /// Names a group of nodes for the availability report.
    fn role(&mut self, name: &'static str, nodes: &[usize]) {
        self.roles.push((name, nodes.to_vec()));
    }

    /// Sleeps until `secs` after the round began.
    fn at(&self, secs: f64) {
        let due = Duration::from_secs_f64(secs);
        let now = self.history.now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }

    fn fault_begins(&mut self) {
        if self.fault_began.is_none() {
            self.fault_began = Some(self.history.now());
        }
    }

    fn healed(&mut self) {
        self.healed = Some((self.history.now(), Instant::now()));
    }

    fn stop_clients(&self) {
        self.stop.store(true, Ordering::Release);
    }

    fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// Waits (at most `timeout`) until a write through `node` is in
    /// flight; whether one was.
    fn wait_write_in_flight(&self, node: usize, timeout: Duration) -> bool {
        common::eventually(timeout, Duration::from_millis(1), || {
            (self.in_flight[node].load(Ordering::Acquire) > 0).then_some(())
        })
        .is_some()
    }
}

/// What one round produced.
struct RoundResult {
    /// The round's seed (the schedule's first draw picks its victim).
    seed: u64,
    report: Report,
    ops: Vec<Op>,
    fin: history::Final,
    fault_window: Option<(Duration, Duration)>,
    roles: Vec<(&'static str, Vec<usize>)>,
}

/// Sets the flag when dropped, so clients stop even if the schedule panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// What every client thread of a round shares.
struct Shared<'a> {
    keys: &'a [String],
    /// Counter keys, and the next unused bit of each.
    counters: &'a [(String, AtomicU32)],
    seed: u64,
    stop: &'a AtomicBool,
    deadline: Instant,
    in_flight: &'a [AtomicUsize],
}

/// A fresh increment of counter `counter`: an even power of two no
/// other increment of that key used (`2^0` to `2^62`, so every
/// acknowledged one is one bit of the final value and a double count sets
/// an odd bit: `history::check_counters`); `None` once all are used.
fn fresh_increment(counter: &AtomicU32) -> Option<i64> {
    let bit = counter.fetch_add(2, Ordering::Relaxed);
    (bit <= 62).then(|| 1i64 << bit)
}

/// One client thread: in [`COUNTER_PERCENT`] of its rounds, INCRBY a
/// random counter key by a fresh power of two; otherwise VGET a random
/// key, then VSET (70%) or VDEL (15%) with the context read, or nothing
/// (15%). When the read fails (no quorum), half the time it writes anyway
/// with the last context it read for that key (or none): a failed write
/// may still be applied by the replicas it reached, and the checker must
/// cope with that.
fn client_loop(mut client: Client, spec: ClientSpec, id: usize, shared: &Shared<'_>) {
    let Shared {
        keys,
        counters,
        seed,
        stop,
        deadline,
        in_flight,
    } = *shared;
    let mut rng = Rng::new(seed ^ (id as u64).wrapping_mul(0x1000_0000_01B3));
    let mut seq = 0u64;
    let mut last_read: HashMap<&str, history::Read> = HashMap::new();
    for _ in 0..OPS_PER_CLIENT_MAX {
        if stop.load(Ordering::Acquire) || Instant::now() >= deadline {
            return;
        }
        if rng.below(100) < COUNTER_PERCENT {
            let (key, next) = &counters[rng.below(counters.len())];
            if let Some(by) = fresh_increment(next) {
                in_flight[spec.node].fetch_add(1, Ordering::AcqRel);
                let acked = client.incrby(key, by);
                in_flight[spec.node].fetch_sub(1, Ordering::AcqRel);
                if !acked {
                    std::thread::sleep(BACKOFF_AFTER_FAILURE);
                }
            }
            continue;
        }
        let key = keys[rng.below(keys.len())].as_str();
        let (context, values) = match client.vget(key, spec.r) {
            Some(read) => {
                last_read.insert(key, read.clone());
                read
            }
            None => {
                std::thread::sleep(BACKOFF_AFTER_FAILURE);
                if rng.below(2) == 0 {
                    continue;
                }
                last_read.get(key).cloned().unwrap_or_default()
            }
        };
        let roll = rng.below(100);
        if roll >= 85 {
            continue;
        }
        in_flight[spec.node].fetch_add(1, Ordering::AcqRel);
        let acked = if roll < 70 {
            seq += 1;
            let value = format!("{key}|c{id}|{seq}");
            client.vset(key, (&context, &values), &value, spec.w)
        } else {
            client.vdel(key, (&context, &values), spec.w)
        };
        in_flight[spec.node].fetch_sub(1, Ordering::AcqRel);
        if !acked {
            std::thread::sleep(BACKOFF_AFTER_FAILURE);
        }
    }
}

/// Runs one round: clients on `workload`, `faults` on this thread, then
/// heal everything, wait for the cluster, read the final states, check.
fn run_round(
    cluster: &mut TestCluster,
    label: &str,
    seed: u64,
    workload: &Workload,
    faults: &dyn Fn(&mut Run<'_>),
) -> RoundResult {
    let history_arc = Arc::new(History::new());
    let keys: Vec<String> = (0..workload.keys)
        .map(|k| format!("{label}:k{k}"))
        .collect();
    let counters: Vec<(String, AtomicU32)> = (0..COUNTERS)
        .map(|c| (format!("{label}:ctr{c}"), AtomicU32::new(0)))
        .collect();
    let addrs = cluster.addrs();
    let stop = AtomicBool::new(false);
    let in_flight: Vec<AtomicUsize> = (0..cluster.len()).map(|_| AtomicUsize::new(0)).collect();
    let deadline = Instant::now() + workload.duration;
    let shared = Shared {
        keys: &keys,
        counters: &counters,
        seed,
        stop: &stop,
        deadline,
        in_flight: &in_flight,
    };
    let (fault_began, healed, notes, roles) = std::thread::scope(|s| {
        let _stop_guard = StopOnDrop(&stop);
        for (id, spec) in workload.clients.iter().copied().enumerate() {
            let client = Client::new(
                Arc::clone(&history_arc),
                id,
                spec.node,
                addrs[spec.node],
                CLIENT_TIMEOUT,
            );
            let shared = &shared;
            s.spawn(move || client_loop(client, spec, id, shared));
        }
        let mut run = Run {
            cluster: &mut *cluster,
            rng: Rng::new(seed),
            history: &history_arc,
            stop: &stop,
            in_flight: &in_flight,
            fault_began: None,
            healed: None,
            notes: Vec::new(),
            roles: Vec::new(),
        };
        faults(&mut run);
        let out = (
            run.fault_began,
            run.healed,
            std::mem::take(&mut run.notes),
            std::mem::take(&mut run.roles),
        );
        // Let the clients run out their time (the guard stops them if the
        // schedule panicked), then the scope joins them.
        while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        out
    });
    // Whatever the schedule left broken is mended now.
    if let Some(net) = cluster.try_net() {
        net.heal_all();
    }
    for i in 0..cluster.len() {
        if cluster.node(i).is_paused() {
            cluster.resume(i);
        }
        if !cluster.node_mut(i).is_running() {
            cluster.restart(i);
        }
    }
    let healed_at = healed.map_or_else(Instant::now, |(_, at)| at);
    if let Err(e) = cluster.try_wait_converged(N, CONVERGE_TIMEOUT) {
        panic!("{label}: the members did not see each other again after the heal: {e}");
    }
    let all_keys: Vec<String> = keys
        .iter()
        .cloned()
        .chain(counters.iter().map(|(key, _)| key.clone()))
        .collect();
    let fin = history::read_final(&addrs, &all_keys, N, healed_at, CONVERGE_TIMEOUT);
    let ops = history_arc.ops();
    let report = history::check(&ops, &fin);
    let fault_window = fault_began.map(|b| (b, healed.map_or(history_arc.now(), |(h, _)| h)));
    eprintln!("{label} seed={seed}: {report}");
    for note in &notes {
        eprintln!("{label}: {note}");
    }
    RoundResult {
        seed,
        report,
        ops,
        fin,
        fault_window,
        roles,
    }
}

/// Acknowledged share of operations sent through each node, over the ops
/// invoked inside `window` (all ops when `None`).
fn availability_by_node(
    ops: &[Op],
    nodes: usize,
    window: Option<(Duration, Duration)>,
) -> Vec<(usize, usize, f64)> {
    (0..nodes)
        .map(|node| {
            let mine: Vec<&Op> = ops
                .iter()
                .filter(|op| op.node == node)
                .filter(|op| window.is_none_or(|(a, b)| op.invoked >= a && op.invoked < b))
                .collect();
            let acked = mine.iter().filter(|op| op.outcome.is_ok()).count();
            let share = if mine.is_empty() {
                f64::NAN
            } else {
                100.0 * acked as f64 / mine.len() as f64
            };
            (node, mine.len(), share)
        })
        .collect()
}

/// Operations and acknowledgements through a group of nodes.
#[derive(Debug, Default, Clone, Copy)]
struct Share {
    ops: usize,
    acked: usize,
    writes: usize,
    writes_acked: usize,
}

impl Share {
    fn add(&mut self, other: Share) {
        self.ops += other.ops;
        self.acked += other.acked;
        self.writes += other.writes;
        self.writes_acked += other.writes_acked;
    }
}

impl std::fmt::Display for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
        write!(
            f,
            "{:.1}% of {} ops acknowledged (writes {:.1}% of {})",
            pct(self.acked, self.ops),
            self.ops,
            pct(self.writes_acked, self.writes),
            self.writes
        )
    }
}

/// The share of `ops` through `nodes` invoked inside the fault window.
fn share_of(result: &RoundResult, nodes: &[usize]) -> Share {
    let mut share = Share::default();
    for op in &result.ops {
        let inside = result
            .fault_window
            .is_none_or(|(a, b)| op.invoked >= a && op.invoked < b);
        if !inside || !nodes.contains(&op.node) {
            continue;
        }
        share.ops += 1;
        share.acked += usize::from(op.outcome.is_ok());
        if op.call.is_write() {
            share.writes += 1;
            share.writes_acked += usize::from(op.outcome.is_ok());
        }
    }
    share
}

fn describe_availability(result: &RoundResult, nodes: usize) -> String {
    let mut parts = Vec::new();
    for (node, ops, share) in availability_by_node(&result.ops, nodes, result.fault_window) {
        if ops > 0 {
            parts.push(format!("node{node}={share:.0}% of {ops}"));
        }
    }
    for (role, members) in &result.roles {
        parts.push(format!(
            "[{role} {members:?}: {}]",
            share_of(result, members)
        ));
    }
    format!(
        "acknowledged during the fault window {:?}: {}",
        result.fault_window,
        parts.join(" ")
    )
}

/// Asserts the checker found nothing wrong.
fn assert_clean(label: &str, result: &RoundResult) {
    let r = &result.report;
    assert!(
        r.is_clean(),
        "{label}: the checker found problems: {r}\n{}\nfinal states: {:?}",
        r.problems.join("\n"),
        result.fin.states.get(&0)
    );
    assert_eq!(r.lost, 0, "{label}: lost writes");
    assert_eq!(r.phantoms, 0, "{label}: phantom values");
    assert!(r.converged, "{label}: not converged");
    assert!(r.ops > 0, "{label}: no operations ran");
}

/// Totals over a scenario's rounds.
#[derive(Debug, Default)]
struct Totals {
    rounds: u64,
    ops: usize,
    acknowledged: usize,
    writes: usize,
    writes_acknowledged: usize,
    lost: usize,
    max_converge_ms: u64,
    max_siblings: usize,
    /// Availability in the fault windows, per role.
    roles: BTreeMap<&'static str, Share>,
}

/// Runs `name`'s rounds on one cluster: one round, or as many as the soak
/// budget allows; `after` adds the scenario's own assertions per round.
fn scenario(
    name: &str,
    proxied: bool,
    args: &[&str],
    workload: &dyn Fn(&mut Rng) -> Workload,
    faults: &dyn Fn(&mut Run<'_>),
    after: &dyn Fn(&str, &RoundResult),
) {
    let seed = base_seed();
    eprintln!("{name}: DYNOKV_CHAOS_SEED={seed}");
    let mut cluster = if proxied {
        TestCluster::start_proxied(N, args)
    } else {
        TestCluster::start(N, args)
    };
    let budget = soak_budget();
    let started = Instant::now();
    let mut totals = Totals::default();
    loop {
        let round_seed = seed.wrapping_add(totals.rounds.wrapping_mul(0x9E37_79B9));
        let label = format!("{name}#{}", totals.rounds);
        let mut rng = Rng::new(round_seed);
        let load = workload(&mut rng);
        let result = run_round(&mut cluster, &label, round_seed, &load, faults);
        eprintln!("{label}: {}", describe_availability(&result, N));
        assert_clean(&label, &result);
        after(&label, &result);
        let r = &result.report;
        totals.rounds += 1;
        totals.ops += r.ops;
        totals.acknowledged += r.acknowledged;
        totals.writes += r.writes;
        totals.writes_acknowledged += r.writes_acknowledged;
        totals.lost += r.lost;
        totals.max_converge_ms = totals.max_converge_ms.max(r.converge_ms);
        totals.max_siblings = totals.max_siblings.max(r.max_siblings);
        for (role, members) in &result.roles {
            totals
                .roles
                .entry(role)
                .or_default()
                .add(share_of(&result, members));
        }
        if started.elapsed() >= budget {
            break;
        }
    }
    eprintln!(
        "SUMMARY {name}: rounds={} ops={} acknowledged={:.1}% writes_acknowledged={:.1}% \
         lost={} max_converge_ms={} max_siblings={}",
        totals.rounds,
        totals.ops,
        100.0 * totals.acknowledged as f64 / totals.ops.max(1) as f64,
        100.0 * totals.writes_acknowledged as f64 / totals.writes.max(1) as f64,
        totals.lost,
        totals.max_converge_ms,
        totals.max_siblings,
    );
    for (role, share) in &totals.roles {
        eprintln!("SUMMARY {name}: during the faults, {role}: {share}");
    }
}

fn nothing_more(_: &str, _: &RoundResult) {}

/// The other two nodes, in order.
fn others(victim: usize) -> [usize; 2] {
    match victim {
        0 => [1, 2],
        1 => [0, 2],
        _ => [0, 1],
    }
}

// Proves isolating one node (clients on the other two) loses nothing and the isolated node catches up.
#[test]
fn minority_partition_isolates_one_node() {
    scenario(
        "minority_partition",
        true,
        &[],
        &|rng| {
            let victim = rng.below(N);
            Workload {
                clients: clients_on(&others(victim), 2),
                keys: 6,
                duration: Duration::from_secs(5),
            }
        },
        &|run| {
            let victim = run.rng.below(N);
            let cut = run.rng.secs(0.8, 0.6);
            run.at(cut);
            run.fault_begins();
            run.cluster.net().isolate(victim);
            run.role("majority", &others(victim));
            run.note(format!("isolated node {victim} at {cut:.2}s"));
            run.at(cut + 2.5);
            run.cluster.net().rejoin(victim);
            run.healed();
        },
        &nothing_more,
    );
}

// Proves a {A,B}|{C} split with clients on both sides loses nothing; C's share is reported.
#[test]
fn majority_minority_split_with_clients_on_both_sides() {
    scenario(
        "majority_minority_split",
        true,
        &[],
        &|rng| {
            let minority = rng.below(N);
            let [a, b] = others(minority);
            let mut clients = clients_on(&[a, a, b], 1);
            clients.extend(clients_on(&[minority], 2));
            Workload {
                clients,
                keys: 6,
                duration: Duration::from_secs(5),
            }
        },
        &|run| {
            let minority = run.rng.below(N);
            let [a, b] = others(minority);
            let cut = run.rng.secs(0.8, 0.6);
            run.at(cut);
            run.fault_begins();
            run.cluster.net().partition(&[&[a, b], &[minority]]);
            run.role("majority", &[a, b]);
            run.role("minority", &[minority]);
            run.note(format!("split {{{a},{b}}} | {{{minority}}} at {cut:.2}s"));
            run.at(cut + 2.5);
            run.cluster.net().heal_all();
            run.healed();
        },
        &|label, result| {
            let window = availability_by_node(&result.ops, N, result.fault_window);
            // The majority side keeps its quorum: it must have written.
            let served: usize = window
                .iter()
                .filter(|(_, ops, share)| *ops > 0 && *share > 50.0)
                .count();
            assert!(
                served >= 1,
                "{label}: no node kept serving during the split: {window:?}"
            );
        },
    );
}

// Proves writes cut off mid-flight (coordinator isolated, links delayed 100 ms) lose no acked write.
#[test]
fn coordinator_isolated_mid_write() {
    scenario(
        "coordinator_isolated_mid_write",
        true,
        &[],
        &|rng| {
            let coordinator = rng.below(N);
            let mut clients = clients_on(&[coordinator], 4);
            clients.extend(clients_on(&[others(coordinator)[0]], 1));
            Workload {
                clients,
                keys: 5,
                duration: Duration::from_secs(5),
            }
        },
        &|run| {
            let coordinator = run.rng.below(N);
            run.cluster
                .net()
                .delay_node(coordinator, Duration::from_millis(100));
            let cut = run.rng.secs(1.5, 0.5);
            run.at(cut);
            // Cut while a write through the coordinator is on the wire.
            let mid_write = run.wait_write_in_flight(coordinator, Duration::from_secs(2));
            run.fault_begins();
            run.cluster.net().isolate(coordinator);
            run.role("isolated coordinator", &[coordinator]);
            run.role("others", &others(coordinator));
            let in_flight = run.in_flight[coordinator].load(Ordering::Acquire);
            run.note(format!(
                "isolated coordinator {coordinator} at {:.2}s with {in_flight} write(s) in \
                 flight through it (waited for one: {mid_write})",
                run.history.now().as_secs_f64()
            ));
            run.at(cut + 1.5);
            run.cluster.net().heal_all();
            run.healed();
        },
        &nothing_more,
    );
}

// Proves kill -9 of one node, then two at once, during writes (--fsync always) loses no acked write.
#[test]
fn kill9_during_writes_fsync_always() {
    scenario(
        "kill9_fsync_always",
        false,
        &["--fsync", "always"],
        &|_| Workload {
            clients: clients_on(&[0, 1, 2], 2),
            keys: 6,
            duration: Duration::from_secs(6),
        },
        &|run| {
            // First one node, then two at once: every acknowledged write
            // had W = 2 copies, so the second crash takes down a node
            // holding each of them and only its disk can bring it back.
            let first = run.rng.below(N);
            let at = run.rng.secs(1.2, 0.4);
            run.at(at);
            run.fault_begins();
            run.role("all nodes", &[0, 1, 2]);
            run.cluster.kill9(first);
            run.at(at + 1.2);
            run.cluster.restart(first);
            run.note(format!(
                "node {first} killed at {at:.2}s, restarted at {:.2}s",
                run.history.now().as_secs_f64()
            ));
            let spared = run.rng.below(N);
            let [a, b] = others(spared);
            let at = run.rng.secs(3.4, 0.4);
            run.at(at);
            run.cluster.kill9(a);
            run.cluster.kill9(b);
            run.at(at + 1.0);
            run.cluster.restart(a);
            run.cluster.restart(b);
            run.note(format!(
                "nodes {a} and {b} killed together at {at:.2}s, restarted at {:.2}s",
                run.history.now().as_secs_f64()
            ));
            run.healed();
        },
        &nothing_more,
    );
}

// Proves SIGSTOP of a node for 2.5 s under load (its clients hang, peers time out) loses nothing.
#[test]
fn pause_and_resume_a_node() {
    scenario(
        "pause_resume",
        false,
        &[],
        &|_| Workload {
            clients: clients_on(&[0, 1, 2], 2),
            keys: 6,
            duration: Duration::from_secs(5),
        },
        &|run| {
            let victim = run.rng.below(N);
            let at = run.rng.secs(0.8, 0.6);
            run.at(at);
            run.fault_begins();
            run.cluster.pause(victim);
            run.role("paused", &[victim]);
            run.role("others", &others(victim));
            run.at(at + 2.5);
            run.cluster.resume(victim);
            run.note(format!("node {victim} paused {at:.2}s .. {:.2}s", at + 2.5));
            run.healed();
        },
        &nothing_more,
    );
}

// Proves a link flapping both ways plus another flapping one way (delay 20 ms) loses nothing.
#[test]
fn flapping_links() {
    scenario(
        "flapping_links",
        true,
        &[],
        &|_| Workload {
            clients: clients_on(&[0, 1, 2], 2),
            keys: 6,
            duration: Duration::from_secs(5),
        },
        &|run| {
            let a = run.rng.below(N);
            let [b, c] = others(a);
            run.at(0.5);
            run.fault_begins();
            run.cluster.net().delay(b, c, Duration::from_millis(20));
            run.role("all nodes", &[0, 1, 2]);
            let both = run.cluster.net().flap(
                a,
                b,
                Duration::from_millis(300),
                Duration::from_millis(400),
                false,
            );
            let one_way = run.cluster.net().flap(
                b,
                c,
                Duration::from_millis(250),
                Duration::from_millis(600),
                true,
            );
            run.at(4.0);
            let (flips, one_way_flips) = (both.stop(), one_way.stop());
            run.cluster.net().heal_all();
            run.healed();
            run.note(format!(
                "link {a}-{b} cut {flips} times, {b}->{c} cut one way {one_way_flips} times; \
                 {} bytes dropped, {} connections refused",
                run.cluster.net().dropped_bytes(),
                run.cluster.net().refused()
            ));
        },
        &nothing_more,
    );
}

// Proves writes to the same keys on both sides of a split (R=W=1) come back as siblings, none lost.
#[test]
fn same_keys_on_both_sides_of_a_partition_become_siblings() {
    let one = ClientSpec {
        node: 0,
        r: Some(1),
        w: Some(1),
    };
    scenario(
        "siblings_across_partition",
        true,
        &[],
        &|rng| {
            let minority = rng.below(N);
            let [a, b] = others(minority);
            let on = |node| ClientSpec { node, ..one };
            Workload {
                clients: vec![on(a), on(b), on(minority), on(minority)],
                keys: 4,
                duration: Duration::from_secs(5),
            }
        },
        &|run| {
            let minority = run.rng.below(N);
            let [a, b] = others(minority);
            run.at(0.6);
            run.fault_begins();
            run.cluster.net().partition(&[&[a, b], &[minority]]);
            run.role("majority", &[a, b]);
            run.role("minority", &[minority]);
            run.at(3.0);
            // No writes after the heal: what each side wrote must meet.
            run.stop_clients();
            std::thread::sleep(CLIENT_TIMEOUT.min(Duration::from_millis(300)));
            run.cluster.net().heal_all();
            run.healed();
            run.note(format!(
                "split {{{a},{b}}} | {{{minority}}} 0.6s .. 3.0s, R=W=1"
            ));
        },
        &|label, result| {
            // The schedule's first draw named the minority node.
            let minority = Rng::new(result.seed).below(N);
            let writer: std::collections::HashMap<&str, usize> = result
                .ops
                .iter()
                .filter_map(|op| match &op.call {
                    history::Call::Set { value, .. } => Some((value.as_str(), op.node)),
                    _ => None,
                })
                .collect();
            // Keys whose final state holds values from both sides.
            let mut both_sides = 0;
            if let Some(states) = result.fin.states.get(&0) {
                for (key, (_, values)) in states {
                    let sides: std::collections::BTreeSet<bool> = values
                        .iter()
                        .filter_map(|v| writer.get(v.as_str()))
                        .map(|&node| node == minority)
                        .collect();
                    if sides.len() == 2 {
                        both_sides += 1;
                        eprintln!("{label}: {key} ends with siblings from both sides: {values:?}");
                    }
                }
            }
            assert!(
                both_sides >= 1,
                "{label}: no key ended with siblings from both sides of the split"
            );
            assert!(result.report.final_max_siblings >= 2);
        },
    );
}

// Proves the proxies do what they claim: cut/heal show in member views, one-way cut and delay act.
#[test]
fn proxy_link_faults_act_on_the_cluster() {
    let cluster = TestCluster::start_proxied(N, &[]);
    let net = cluster.net();
    let wait_up = |node: usize, expected: &[usize]| {
        let want: std::collections::BTreeSet<usize> = expected.iter().copied().collect();
        let mut last = None;
        let seen = common::eventually(Duration::from_secs(15), Duration::from_millis(50), || {
            let view = cluster.up_view(node).ok()?;
            let done = view == want;
            last = Some(view);
            done.then_some(())
        });
        assert!(
            seen.is_some(),
            "node {node} should see {want:?} up, last saw {last:?}"
        );
    };
    let vset_w = |node: usize, key: &str, w: usize| -> Result<(), String> {
        let mut con =
            common::try_connect_sync(cluster.node(node).addr()).map_err(|e| e.to_string())?;
        redis::cmd("VSET")
            .arg(key)
            .arg("")
            .arg("v")
            .arg("W")
            .arg(w)
            .query::<redis::Value>(&mut con)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    // Both ways: 0 and 1 lose each other, 2 still sees both.
    net.cut(0, 1);
    wait_up(0, &[0, 2]);
    wait_up(1, &[1, 2]);
    wait_up(2, &[0, 1, 2]);
    assert!(vset_w(0, "p:cut", 3).is_err(), "W=3 with a cut link");
    assert!(vset_w(0, "p:cut", 2).is_ok(), "W=2 with one link cut");
    net.heal(0, 1);
    for n in 0..N {
        wait_up(n, &[0, 1, 2]);
    }
    assert!(vset_w(0, "p:healed", 3).is_ok(), "W=3 after the heal");
    // One way: what 0 sends 2 vanishes; the connection stays up.
    net.cut_one_way(0, 2);
    let err = vset_w(0, "p:oneway", 3).expect_err("W=3 with 0->2 dropped");
    assert!(err.contains("NOQUORUM"), "{err}");
    assert!(net.dropped_bytes() > 0, "nothing was dropped");
    net.heal(0, 2);
    let healed = common::eventually(Duration::from_secs(15), Duration::from_millis(100), || {
        vset_w(0, "p:oneway-healed", 3).ok()
    });
    assert!(healed.is_some(), "W=3 never succeeded after healing 0->2");
    // Delay: a write that needs node 1 takes at least the delay.
    net.delay_node(1, Duration::from_millis(300));
    let started = Instant::now();
    vset_w(0, "p:delay", 3).unwrap_or_else(|e| panic!("W=3 with a delay: {e}"));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "delayed write took {took:?}"
    );
    net.heal_all();
    assert_eq!(net.unidentified(), 0, "connections with an unknown dialer");
    eprintln!(
        "proxy: {} links open, {} refused, {} bytes dropped, delayed write {took:?}",
        net.open_links(),
        net.refused(),
        net.dropped_bytes()
    );
}
