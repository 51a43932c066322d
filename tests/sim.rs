//! Deterministic simulation: a cluster of dynokv nodes, clients and faults
//! on one thread under turmoil, all driven from one seed.
//!
//! Every run starts [`NODES`] nodes with `Node::start_in` — the code
//! `dynokv serve` runs — on an in-memory store (`MemoryStore`: a crash
//! keeps only what was synced), turmoil's simulated TCP and time, and
//! inline storage work (`StorageExecutor::inline`): nothing runs on
//! another thread, so the seed fixes everything — node ids, message
//! delays and losses, the fault schedule, the clients' choices. Nodes run
//! `--fsync always` with N = 3, R = W = 2, the sloppy quorum on, and read
//! repair off until the replica check has looked (below).
//!
//! [`CLIENTS`] clients speak RESP to the nodes: `VGET`, then `VSET` or
//! `VDEL` with the context read, on a few keys, through changing nodes,
//! and record every operation in a `common::history::History`; on
//! [`COUNTERS`] other keys they add unique powers of two with `INCRBY` or
//! a WATCH transaction (WATCH, GET, MULTI, SET, EXEC); a flusher sends
//! FLUSHALL early on. Meanwhile the fault driver partitions the nodes
//! (minority and majority sides), kills and restarts them (and, with
//! `DYNOKV_SIM_GRACEFUL=1`, shuts them down gracefully and starts them
//! again), holds links (delay) and makes links drop messages, and watches
//! every store for clears. Then everything heals but one node, the
//! straggler, crashed as the faults end and started again once the
//! clients are done: their last writes of its keys, which nothing later
//! supersedes, reach it only as hints.
//!
//! The replica check (issue 21): once the layout settled, no write's tail
//! can still hand a copy to a fallback ([`LATE`] after the last
//! operation) and no member's store holds a hint, each key's replicas are
//! read straight from their stores, before any read could repair them,
//! and `common::history::check_replicas` judges the history against them
//! ([`Replicas`]): every acknowledged write and increment must be on all N
//! replicas of its key (present, or superseded by a write applied, or
//! excused by a clear), unless its coordinator may have crashed before
//! its tail handed the missing copies to a fallback — then on W at least
//! (`crash_gaps`; [`Replicas::crash_may_explain`]). Then `CONFIG SET
//! read-repair yes` on every member (the final reads need it for writes
//! that failed after reaching one replica).
//!
//! Then a checker client reads every key through every node until they
//! agree, and `common::history::check_with` judges the history: nothing
//! acknowledged lost, no phantom values, nothing resurrected, replicas
//! converged, no acknowledged increment missing from the counters and
//! none counted that was not sent or twice, nothing read after an
//! acknowledged FLUSHALL that it had to clear. Then the epilogue, on the
//! quiet cluster: FLUSHALL, writes, one to three of their replicas killed
//! (or shut down) and started again, reads, and the same judgement on the
//! state it leaves.
//!
//! Planted bugs (`DYNOKV_SIM_PLANT`, [`PlantKind`]): a replica that
//! acknowledges replicated writes without storing them, and fallbacks
//! that drop the hints they acknowledge. Two tests run each over
//! [`PLANT_SEEDS`] seeds: the replica check must see it, the final reads
//! (which merge and repair) find nothing wrong.
//!
//! Links (issue 17): a prober asks every node `DYNAMO MEMBERS` every
//! [`LINK_PROBE_EVERY`]; once no fault has touched a pair of live nodes
//! for [`LINK_REPAIR_MAX`], both ends must list their link up. After the
//! last heal the run goes on until a probe past that bound has checked
//! every pair.
//!
//! Membership changes (`joins_leaves_and_removes_under_faults`): the same
//! run with a sixth host, [`JOINER`], and three changes during the faults,
//! drawn from the seed ([`Plan`]) after the flusher's window. The joiner
//! starts with `--join n0`; a client sends `DYNAMO LEAVE` to one member
//! (never n0, the joiner's seed), whose `Node::run` must then return `Ok`
//! (its host ends; no crash touches it once it was asked to leave);
//! another member is crashed for good and a client sends `DYNAMO REMOVE
//! n<i>` to a live one. The clients and the faults begin only once the
//! first layout of the five has settled, so that the leave and the remove
//! are of members. The clients take up the joiner once it answers and
//! drop the leaver and the removed node; one node at most is down from a
//! crash fault while the removed one is down for good (W = 2 tolerates one
//! replica lost for good). After the heal every remaining member must
//! list the same members, all `member`, within [`SETTLE_MAX`]; the leaver
//! must have stopped with an empty store; from then on the replica check,
//! the final reads and their copies check (exactly N copies among the
//! remaining members), the epilogue, the links and the judgement cover
//! the remaining members only (a write's possible coordinators in the
//! replica check are the replicas of every layout a member listed);
//! and at the end no member lists the removed node's name or id. For the
//! checker the removed node's crash counts as a clear of its store: a
//! write held by it and by a node a failed FLUSHALL cleared may be gone
//! from every member. [`REMOVE_CRASH_SEEDS`], where the node that took a
//! `DYNAMO REMOVE` crashes right after, run as their own test.
//!
//! `cargo test --test sim` runs [`SEEDS`] seeds on a few test threads, and
//! [`CHANGE_SEEDS`] with membership changes. A failing run prints its seed
//! and the command that replays it exactly:
//! `DYNOKV_SIM_SEED=<seed> cargo test --test sim replay -- --nocapture`
//! (with `DYNOKV_SIM_CHANGES=1` for a run with membership changes,
//! `DYNOKV_SIM_PLANT=<bug>` for one with a planted bug;
//! `DYNOKV_SIM_LOG=info`, or any `RUST_LOG`-style filter, prints the
//! nodes' log with simulated times). Soak: `DYNOKV_SIM_RUNS=<k> cargo test
//! --release --test sim soak -- --nocapture` runs k seeds from
//! `DYNOKV_SIM_FIRST` (default 0).

mod common;

use common::Rng;
use common::history::{self, Call, ClearsSeen, Final, History, Op, Outcome, Read, Report, Timing};
use dynokv::clock::Clock;
use dynokv::config::{Config, Settings, Toggle};
use dynokv::coordinator::BoxFuture;
use dynokv::limits::{
    PEER_BACKOFF_MAX_MS, PEER_HEARTBEAT_MS, PEER_REQUEST_TIMEOUT_MS, PEER_SILENCE_MAX_MS,
};
use dynokv::model::record::{Record, decode_record};
use dynokv::net::{Connection, Listener, Network};
use dynokv::node::{Environment, Node};
use dynokv::ring::{Placed, Ring, partition_of};
use dynokv::storage::{
    BatchOp, Doomed, Entries, FsyncPolicy, MemoryStore, Space, StorageExecutor, Store, StoreError,
    storage_key,
};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Nodes per simulated cluster.
const NODES: usize = 5;
/// Replicas per key.
const N: usize = 3;
/// Write quorum.
const W: usize = 2;
/// Clients per run.
const CLIENTS: usize = 4;
/// Keys the clients share.
const KEYS: usize = 6;
/// Rounds per client: a read then a write, or a counter increment.
const ROUNDS: usize = 30;
/// Counter keys (INCRBY and WATCH transactions), apart from the [`KEYS`].
const COUNTERS: usize = 3;
/// Share of rounds that increment a counter, in percent.
const COUNTER_PERCENT: usize = 35;
/// Share of those that do it by WATCH transaction, in percent.
const WATCHED_PERCENT: usize = 30;
/// Seeds `cargo test` runs, split over [`SHARDS`] tests.
const SEEDS: u64 = 100;
/// Seeds run under `--fsync no`, where loss is expected.
const NO_SYNC_SEEDS: u64 = 12;
/// Tests the seeds are split over (they run in parallel).
const SHARDS: u64 = 4;
/// Q: small, so a node starts fast.
const PARTITIONS: u32 = 256;
/// Client port and peer port of every node.
const PORT: u16 = 6379;
/// See [`PORT`].
const PEER_PORT: u16 = 7379;
/// Simulated time for the membership to form before clients start.
const WARMUP: Duration = Duration::from_secs(2);
/// How long faults are injected (the clients run meanwhile).
const CHAOS: Duration = Duration::from_secs(5);
/// A client waits this long for a reply before it counts as unknown.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// After the heal, how long the nodes get to converge.
const CONVERGE_MAX: Duration = Duration::from_secs(60);
/// Simulated time per step: each step polls every host once, so this
/// sets the cost of a simulated second (message delays are whole ticks).
const TICK: Duration = Duration::from_millis(4);
/// How often the link prober asks every node for its links.
const LINK_PROBE_EVERY: Duration = Duration::from_millis(250);
/// How long the prober waits for one node's answer.
const LINK_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// How soon after the last fault touching a pair heals both ends must list
/// their link up: a link that stalled in the fault is found dead after
/// [`PEER_SILENCE_MAX_MS`] (noticed at a ping tick, every
/// [`PEER_HEARTBEAT_MS`]) and redialed within [`PEER_BACKOFF_MAX_MS`];
/// one second more for the handshake and the probe itself.
const LINK_REPAIR_MAX: Duration =
    Duration::from_millis(PEER_SILENCE_MAX_MS + PEER_HEARTBEAT_MS + PEER_BACKOFF_MAX_MS + 1_000);
/// A fault lasts this long at least, in milliseconds.
const FAULT_MIN_MS: u64 = 300;
/// A fault lasts this long at most, in milliseconds: a held link delivers
/// what it held at most this late.
const FAULT_MAX_MS: u64 = 2_500;
/// How long into the faults the flusher sends FLUSHALLs.
const FLUSH_WINDOW: Duration = Duration::from_millis(1_500);
/// Acknowledged FLUSHALLs after which the flusher stops.
const FLUSHES_ACKED: usize = 1;
/// The flusher waits this long before each FLUSHALL, at least, in
/// milliseconds.
const FLUSH_GAP_MIN_MS: u64 = 200;
/// See [`FLUSH_GAP_MIN_MS`].
const FLUSH_GAP_MAX_MS: u64 = 800;
/// How long a FLUSHALL's client waits for the reply: past the longest
/// fan-out (the coordinator asks the other nodes one by one, each for up
/// to a peer request timeout).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after an operation completed a message it caused may still act
/// on a node (the checker's `Timing::late`, and the quiet time before the
/// epilogue): a read listens to slow replicas for a peer request timeout
/// and queues their repairs, a queued repair waits for the one before it
/// (a request timeout), a held link delivers what it held when the fault
/// heals ([`FAULT_MAX_MS`]), and a second of margin. The stores' clears
/// are checked against it (`flush_problems`).
const LATE: Duration = Duration::from_millis(2 * PEER_REQUEST_TIMEOUT_MS + FAULT_MAX_MS + 1_000);
/// Keys the epilogue writes after its FLUSHALL.
const EPILOGUE_KEYS: usize = 3;
/// FLUSHALLs the epilogue tries until one is acknowledged (links may
/// still be coming back after the heal).
const EPILOGUE_FLUSH_TRIES: usize = 10;
/// How often a node's host looks at its [`Switch`].
const SWITCH_POLL: Duration = Duration::from_millis(10);
/// Sim time per run at most (turmoil fails the run past it).
const RUN_MAX: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------
// The simulated environment: turmoil's TCP as a `Network`, its time as a
// `Clock`.

#[derive(Debug)]
struct SimNet;

struct SimListener(turmoil::net::TcpListener);

impl std::fmt::Debug for SimListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SimListener")
            .field(&self.0.local_addr())
            .finish()
    }
}

fn sim_connection(stream: turmoil::net::TcpStream) -> io::Result<Connection> {
    let (local, remote) = (stream.local_addr()?, stream.peer_addr()?);
    let (reader, writer) = stream.into_split();
    Ok(Connection {
        reader: Box::new(reader),
        writer: Box::new(writer),
        local,
        remote,
    })
}

impl Listener for SimListener {
    fn accept(&self) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move { sim_connection(self.0.accept().await?.0) })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Network for SimNet {
    fn bind<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = turmoil::net::TcpListener::bind((host, port)).await?;
            Ok(Box::new(SimListener(listener)) as Box<dyn Listener>)
        })
    }

    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<Connection>> {
        Box::pin(async move { sim_connection(turmoil::net::TcpStream::connect(addr).await?) })
    }
}

/// Wall-clock time in the simulation: a fixed epoch plus simulated time.
#[derive(Debug)]
struct SimClock;

/// The simulation's epoch (2026-01-01), fixed so runs repeat.
const EPOCH_MS: u64 = 1_767_225_600_000;

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        EPOCH_MS + turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64
    }
}

fn node_name(i: usize) -> String {
    format!("n{i}")
}

/// Node `i`'s config: syncing as `fsync` says, reading with read repair
/// as `read_repair` says, without a record cache if `uncached`, and
/// without anti-entropy.
fn node_config(i: usize, fsync: FsyncPolicy, read_repair: bool, uncached: bool) -> Config {
    // Node 0 founds the cluster (its own address among its seeds); the
    // others join it.
    let seed = 0;
    let settings = Settings {
        read_repair: Some(if read_repair { Toggle::On } else { Toggle::Off }),
        // Off unless anti-entropy is what the run proves: the replica
        // check proves that hints alone bring every acknowledged write to
        // its replicas, and an exchange would hide a hint never delivered.
        aae_interval: Some(if anti_entropy() {
            AAE_SIM_INTERVAL_SECS
        } else {
            0
        }),
        hint_max_bytes: anti_entropy().then_some(0),
        cache_mb: uncached.then_some(0),
        bind: Some("0.0.0.0".into()),
        port: Some(PORT),
        peer_port: Some(PEER_PORT),
        peer_advertise: Some(format!("{}:{PEER_PORT}", node_name(i))),
        node_name: Some(node_name(i)),
        join: vec![format!("{}:{PEER_PORT}", node_name(seed))],
        fsync: Some(fsync),
        replicas: Some(N),
        read_quorum: Some(2),
        write_quorum: Some(W),
        partitions: Some(PARTITIONS),
        ..Settings::default()
    };
    Config::resolve(settings, None).unwrap_or_else(|e| panic!("sim config: {e}"))
}

/// A switch the fault driver flips between steps and a node's host polls.
#[derive(Debug, Clone, Default)]
struct Switch(Rc<Cell<bool>>);

impl Switch {
    /// A switch that is on.
    fn on() -> Self {
        Self(Rc::new(Cell::new(true)))
    }

    fn set(&self, on: bool) {
        self.0.set(on);
    }

    fn get(&self) -> bool {
        self.0.get()
    }

    /// Waits until the switch is `on`, looking every [`SWITCH_POLL`].
    async fn wait_for(&self, on: bool) {
        while self.0.get() != on {
            tokio::time::sleep(SWITCH_POLL).await;
        }
    }
}

/// `DYNOKV_SIM_GRACEFUL=1` adds graceful shutdowns to the faults (half the
/// held links' share) and to the epilogue (half its stops). Off by
/// default: the node's shutdown wakes its tasks through a
/// `tokio::sync::watch`, whose waiters tokio files under one of eight
/// slots drawn from its own random generator, which turmoil seeds only
/// under `--cfg tokio_unstable`; so the tasks stop in a different order
/// from run to run and a seed no longer replays exactly.
fn graceful_restarts() -> bool {
    std::env::var("DYNOKV_SIM_GRACEFUL").as_deref() == Ok("1")
}

/// `DYNOKV_SIM_AAE=1` proves anti-entropy alone (issue 22): the nodes
/// keep no hints (`--hint-max-bytes 0`) and exchange every
/// [`AAE_SIM_INTERVAL_SECS`]; read repair stays off until the replica
/// check, which then waits until every key's replicas hold the same
/// record (at most [`HINTS_MAX`]) before it looks. Tombstones are reaped
/// meanwhile, so the checker's resurrection rules see a deleted key that
/// comes back. Off by default: the replica check then proves hints alone.
fn anti_entropy() -> bool {
    std::env::var("DYNOKV_SIM_AAE").as_deref() == Ok("1")
}

/// Seconds between anti-entropy rounds under [`anti_entropy`].
const AAE_SIM_INTERVAL_SECS: u64 = 2;

/// How one node's host runs.
#[derive(Debug, Clone)]
struct Host {
    store: Arc<MemoryStore>,
    fsync: FsyncPolicy,
    /// While on, the node is shut down gracefully ([`add_node`]).
    stop: Option<Switch>,
    /// The node starts once it is on ([`add_node`]).
    start: Option<Switch>,
    /// Read repair at each (re)start: on while this is (a node restarted
    /// after `CONFIG SET read-repair yes` comes up repairing too).
    read_repair: Switch,
    /// A bug planted in this node's store, if any ([`Planted`]).
    plant: Option<Plant>,
}

impl Host {
    /// A node on `store` syncing as `fsync` says, with read repair on,
    /// started at once, never stopped gracefully, no bug planted.
    fn plain(store: Arc<MemoryStore>, fsync: FsyncPolicy) -> Self {
        Self {
            store,
            fsync,
            stop: None,
            start: None,
            read_repair: Switch::on(),
            plant: None,
        }
    }
}

/// Registers node `i` as `host` says: each (re)start first drops what the
/// store had not synced, as a crash would, then runs the node on it. With
/// a `stop` switch, while it is on the node is shut down gracefully (it
/// drains its clients and syncs its store, as on SIGTERM) and stays down;
/// then it starts again ([`graceful_restarts`]). With a `start` switch the
/// node first waits for it to be on (a node that joins a running cluster
/// when the fault driver says); a restart after that starts at once.
fn add_node(sim: &mut turmoil::Sim<'_>, i: usize, host: Host) {
    sim.host(node_name(i), move || {
        let Host {
            store,
            fsync,
            stop,
            start,
            read_repair,
            plant,
        } = host.clone();
        async move {
            if let Some(start) = &start {
                start.wait_for(true).await;
            }
            let uncached = plant.as_ref().is_some_and(Plant::uncached);
            let used: Arc<dyn Store> = match &plant {
                Some(plant) => Arc::new(Planted::new(Arc::clone(&store), plant.clone())),
                None => Arc::clone(&store) as Arc<dyn Store>,
            };
            loop {
                // After a graceful stop this drops nothing: the node synced.
                store.crash();
                let environment = Environment {
                    store: Arc::clone(&used),
                    network: Arc::new(SimNet),
                    clock: Arc::new(SimClock),
                    executor: Arc::new(StorageExecutor::inline()),
                };
                let config = node_config(i, fsync, read_repair.get(), uncached);
                let node = Node::start_in(config, environment).await?;
                let shutdown = node.shutdown_handle();
                let run = node.run();
                tokio::pin!(run);
                let Some(stop) = &stop else {
                    return Ok(run.await?);
                };
                tokio::select! {
                    biased;
                    ended = &mut run => {
                        ended?;
                        return Ok(());
                    }
                    () = stop.wait_for(true) => {}
                }
                shutdown.shutdown();
                run.await?;
                stop.wait_for(false).await;
            }
        }
    });
}

// ---------------------------------------------------------------------
// Planted bugs (`DYNOKV_SIM_PLANT`): stores that lose what the node was
// told they keep, to show the replica check sees what reads do not.

/// The node whose store drops replicated writes under
/// [`PlantKind::UnstoredReplication`].
const PLANTED_NODE: usize = 1;
/// Under [`PlantKind::UnstoredReplication`], one replicated write in this
/// many is dropped.
const PLANTED_DROP_EVERY: usize = 3;
/// Seeds each planted bug is run with.
const PLANT_SEEDS: u64 = 12;

/// A bug planted in the nodes' stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlantKind {
    /// [`PLANTED_NODE`] acknowledges a replicated write without storing
    /// it, one in [`PLANTED_DROP_EVERY`]: a record bringing a dot the
    /// store had not seen, minted by another node (a coordinator's copy,
    /// or a hint replayed), is not put. Its record cache is off, so its
    /// reads do not see the dropped write either: a replica that
    /// acknowledges without storing.
    UnstoredReplication,
    /// Every node drops the hints it is asked to keep (its hint records;
    /// a target's window entry is kept): a fallback acknowledges a hint
    /// that is never delivered.
    LostHints,
}

impl PlantKind {
    /// The bug `DYNOKV_SIM_PLANT` names, if any.
    fn from_env() -> Option<Self> {
        match std::env::var("DYNOKV_SIM_PLANT").as_deref() {
            Ok("unstored-replication") => Some(Self::UnstoredReplication),
            Ok("lost-hints") => Some(Self::LostHints),
            _ => None,
        }
    }

    /// Its name in `DYNOKV_SIM_PLANT`.
    fn name(self) -> &'static str {
        match self {
            Self::UnstoredReplication => "unstored-replication",
            Self::LostHints => "lost-hints",
        }
    }

    /// Whether node `i` carries it.
    fn on(self, i: usize) -> bool {
        self == Self::LostHints || i == PLANTED_NODE
    }
}

/// A planted bug, shared by the stores that carry it.
#[derive(Debug, Clone)]
struct Plant {
    kind: PlantKind,
    /// On while the workload runs and until the replica check has looked;
    /// off from then on, so that the final reads, with read repair, meet
    /// sound stores and judge what the bug left.
    armed: Arc<AtomicBool>,
    /// Puts dropped, for the checker line.
    dropped: Arc<AtomicUsize>,
}

impl Plant {
    fn new(kind: PlantKind) -> Self {
        Self {
            kind,
            armed: Arc::new(AtomicBool::new(true)),
            dropped: Arc::default(),
        }
    }

    /// Whether the node's record cache is off: a replica that does not
    /// store a write must not serve it from its cache either.
    fn uncached(&self) -> bool {
        self.kind == PlantKind::UnstoredReplication
    }
}

/// A [`MemoryStore`] with a [`Plant`]: drops some puts, passes the rest on.
#[derive(Debug)]
struct Planted {
    store: Arc<MemoryStore>,
    plant: Plant,
    /// Replicated writes seen (for [`PLANTED_DROP_EVERY`]).
    replicated: AtomicUsize,
}

impl Planted {
    fn new(store: Arc<MemoryStore>, plant: Plant) -> Self {
        Self {
            store,
            plant,
            replicated: AtomicUsize::new(0),
        }
    }

    /// Whether the plant drops `op`.
    fn drops(&self, op: &BatchOp) -> bool {
        let Some(value) = &op.value else {
            return false;
        };
        if !self.plant.armed.load(Ordering::Relaxed) {
            return false;
        }
        match self.plant.kind {
            PlantKind::LostHints => {
                op.space == Space::Hints
                    && dynokv::replica::hints::split_hint_key(&op.key).is_some()
            }
            PlantKind::UnstoredReplication => {
                op.space == Space::Data
                    && self.replicated(&op.key, value)
                    && self
                        .replicated
                        .fetch_add(1, Ordering::Relaxed)
                        .is_multiple_of(PLANTED_DROP_EVERY)
            }
        }
    }

    /// Whether `value`, a record put at `key`, brings a write this node
    /// neither coordinated nor had: a dot the stored record has not seen,
    /// none of them minted by this node.
    fn replicated(&self, key: &[u8], value: &[u8]) -> bool {
        let Ok(incoming) = decode_record(value) else {
            return false;
        };
        let stored = self
            .store
            .get(Space::Data, key)
            .ok()
            .flatten()
            .and_then(|bytes| decode_record(&bytes).ok())
            .unwrap_or_default();
        let mine = self
            .store
            .meta_get("dot_id")
            .ok()
            .flatten()
            .and_then(|id| <[u8; 8]>::try_from(id.as_slice()).ok())
            .map(u64::from_be_bytes);
        let mut new = incoming
            .siblings()
            .iter()
            .map(|(dot, _)| *dot)
            .filter(|&dot| !stored.context().covers(dot))
            .peekable();
        new.peek().is_some() && new.all(|dot| Some(dot.node) != mine)
    }
}

impl Store for Planted {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(space, key)
    }

    fn apply(&self, ops: &[BatchOp]) -> Result<(), StoreError> {
        let kept: Vec<BatchOp> = ops.iter().filter(|op| !self.drops(op)).cloned().collect();
        let dropped = ops.len() - kept.len();
        self.plant.dropped.fetch_add(dropped, Ordering::Relaxed);
        self.store.apply(&kept)
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.store.sync()
    }

    fn scan(
        &self,
        space: Space,
        from: &[u8],
        until: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.store.scan(space, from, until, limit)
    }

    fn clear(&self, doomed: &Doomed<'_>) -> Result<(), StoreError> {
        self.store.clear(doomed)
    }

    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.meta_get(name)
    }

    fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.store.meta_put(name, value)
    }

    fn disk_bytes(&self) -> u64 {
        self.store.disk_bytes()
    }
}

// ---------------------------------------------------------------------
// A RESP client over simulated TCP that records into the history.

/// A reply: a value, or the error text of an error reply.
type Reply = Result<redis::Value, String>;

/// Parses one RESP2 reply from the front of `buf`, if complete.
fn parse_reply(buf: &[u8]) -> Option<(Reply, usize)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[1..end]).ok()?;
    let rest = end + 2;
    match buf.first()? {
        b'+' => Some((Ok(redis::Value::SimpleString(line.into())), rest)),
        b'-' => Some((Err(line.into()), rest)),
        b':' => Some((Ok(redis::Value::Int(line.parse().ok()?)), rest)),
        b'$' => {
            let len: i64 = line.parse().ok()?;
            if len < 0 {
                return Some((Ok(redis::Value::Nil), rest));
            }
            let stop = rest + len as usize;
            (buf.len() >= stop + 2).then(|| {
                (
                    Ok(redis::Value::BulkString(buf[rest..stop].to_vec())),
                    stop + 2,
                )
            })
        }
        b'*' => {
            let len: i64 = line.parse().ok()?;
            if len < 0 {
                return Some((Ok(redis::Value::Nil), rest)); // EXEC aborted
            }
            let mut at = rest;
            let mut items = Vec::new();
            let mut error = None;
            for _ in 0..len {
                let (item, used) = parse_reply(&buf[at..])?;
                // An error inside an array (a command EXEC ran) fails the
                // reply, once the whole array is consumed.
                match item {
                    Ok(item) => items.push(item),
                    Err(e) => error = error.or(Some(e)),
                }
                at += used;
            }
            Some((error.map_or(Ok(redis::Value::Array(items)), Err), at))
        }
        _ => Some((Err(format!("unparsable reply {buf:?}")), buf.len())),
    }
}

struct SimClient {
    id: usize,
    node: usize,
    history: Arc<History>,
    /// How long it waits to connect, and for each reply.
    timeout: Duration,
    con: Option<(turmoil::net::TcpStream, Vec<u8>)>,
}

#[derive(Debug)]
enum Exchange {
    /// No connection: certainly not applied.
    NotSent(String),
    /// No reply in time or the connection broke.
    NoReply(String),
    Replied(Reply),
}

impl SimClient {
    fn new(id: usize, node: usize, history: Arc<History>) -> Self {
        Self {
            id,
            node,
            history,
            timeout: CLIENT_TIMEOUT,
            con: None,
        }
    }

    /// Simulated time since the run began: the fault driver's clock too,
    /// so operations and the stores' clears it watches share one clock.
    fn now(&self) -> Duration {
        turmoil::sim_elapsed().unwrap_or_default()
    }

    async fn send(&mut self, args: &[&[u8]]) -> Exchange {
        if self.con.is_none() {
            let addr = (node_name(self.node), PORT);
            match tokio::time::timeout(self.timeout, turmoil::net::TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => self.con = Some((stream, Vec::new())),
                Ok(Err(e)) => return Exchange::NotSent(format!("connect: {e}")),
                Err(_) => return Exchange::NotSent("connect timed out".into()),
            }
        }
        let Some((stream, buf)) = self.con.as_mut() else {
            return Exchange::NotSent("no connection".into());
        };
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        let exchange = async {
            stream.write_all(&out).await?;
            loop {
                if let Some((reply, used)) = parse_reply(buf) {
                    buf.drain(..used);
                    return Ok(reply);
                }
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(reply)) => Exchange::Replied(reply),
            Ok(Err(e)) => {
                self.con = None;
                Exchange::NoReply(e.to_string())
            }
            Err(_) => {
                self.con = None;
                Exchange::NoReply("timed out".into())
            }
        }
    }

    /// Runs one command and records it; the outcome.
    async fn run(
        &mut self,
        key: &str,
        call: Call,
        args: &[&[u8]],
        parse: fn(redis::Value) -> Result<Outcome, String>,
    ) -> Outcome {
        let invoked = self.now();
        let outcome = match self.send(args).await {
            Exchange::NotSent(error) => Outcome::Failed { error, sent: false },
            Exchange::NoReply(e) => Outcome::Unknown(e),
            Exchange::Replied(Err(error)) => Outcome::Failed { error, sent: true },
            Exchange::Replied(Ok(value)) => {
                parse(value).unwrap_or_else(|error| Outcome::Failed { error, sent: true })
            }
        };
        self.history.record(Op {
            client: self.id,
            node: self.node,
            key: key.to_owned(),
            call,
            outcome: outcome.clone(),
            invoked,
            completed: self.now(),
        });
        outcome
    }

    async fn vget(&mut self, key: &str, r: Option<usize>) -> Option<Read> {
        let r_text = r.map(|r| r.to_string());
        let mut args: Vec<&[u8]> = vec![b"VGET", key.as_bytes()];
        if let Some(r) = &r_text {
            args.extend([b"R".as_slice(), r.as_bytes()]);
        }
        match self
            .run(key, Call::Get { r }, &args, history::parse_read)
            .await
        {
            Outcome::Read { context, values } => Some((context, values)),
            _ => None,
        }
    }

    async fn vset(&mut self, key: &str, (context, covers): &Read, value: String) -> Outcome {
        let args: Vec<&[u8]> = vec![b"VSET", key.as_bytes(), context, value.as_bytes()];
        let call = Call::Set {
            context: context.clone(),
            covers: covers.clone(),
            value: value.clone(),
            w: None,
        };
        self.run(key, call, &args, history::parse_written).await
    }

    async fn vdel(&mut self, key: &str, (context, covers): &Read) -> Outcome {
        let args: Vec<&[u8]> = vec![b"VDEL", key.as_bytes(), context];
        let call = Call::Del {
            context: context.clone(),
            covers: covers.clone(),
            w: None,
        };
        self.run(key, call, &args, history::parse_written).await
    }

    /// `INCRBY key by`, recorded.
    async fn incrby(&mut self, key: &str, by: i64) -> Outcome {
        let by_text = by.to_string();
        let args: Vec<&[u8]> = vec![b"INCRBY", key.as_bytes(), by_text.as_bytes()];
        self.run(key, Call::Incr { by }, &args, |reply| match reply {
            redis::Value::Int(v) => Ok(Outcome::Counted(v)),
            other => Err(format!("unexpected reply to INCRBY: {other:?}")),
        })
        .await
    }

    /// `FLUSHALL`, recorded (with an empty key).
    async fn flushall(&mut self) -> Outcome {
        self.run("", Call::FlushAll, &[b"FLUSHALL"], |reply| match reply {
            redis::Value::SimpleString(ok) if ok == "OK" => Ok(Outcome::Done),
            other => Err(format!(
                "{}: FLUSHALL answered {other:?}",
                history::BAD_REPLY
            )),
        })
        .await
    }

    /// `WATCH key`, `GET key`, `MULTI`, `SET key <read + by>`, `EXEC`,
    /// recorded as one operation from WATCH to EXEC's reply.
    async fn watched_incr(&mut self, key: &str, by: i64) -> Outcome {
        let invoked = self.now();
        let (read, outcome) = self.watched_incr_steps(key, by).await;
        if !outcome.is_ok() && !matches!(outcome, Outcome::Aborted) {
            // A session left inside WATCH or MULTI must not leak into the
            // next command: a new connection starts clean.
            self.con = None;
        }
        self.history.record(Op {
            client: self.id,
            node: self.node,
            key: key.to_owned(),
            call: Call::Exec { by, read },
            outcome: outcome.clone(),
            invoked,
            completed: self.now(),
        });
        outcome
    }

    async fn watched_incr_steps(&mut self, key: &str, by: i64) -> (Option<i64>, Outcome) {
        let k = key.as_bytes();
        // Before EXEC nothing is written, whatever happens.
        let not_sent = |error: String| Outcome::Failed { error, sent: false };
        let step = |exchange: Exchange| match exchange {
            Exchange::Replied(Ok(value)) => Ok(value),
            Exchange::Replied(Err(e)) | Exchange::NotSent(e) | Exchange::NoReply(e) => Err(e),
        };
        if let Err(e) = step(self.send(&[b"WATCH", k]).await) {
            return (None, not_sent(e));
        }
        let read = match step(self.send(&[b"GET", k]).await) {
            Ok(redis::Value::Nil) => 0,
            Ok(redis::Value::BulkString(v)) => match String::from_utf8_lossy(&v).parse::<i64>() {
                Ok(v) => v,
                Err(_) => {
                    let e = format!("{}: GET {key} answered {v:?}", history::BAD_REPLY);
                    return (None, not_sent(e));
                }
            },
            Ok(other) => {
                return (
                    None,
                    not_sent(format!(
                        "{}: GET {key} answered {other:?}",
                        history::BAD_REPLY
                    )),
                );
            }
            Err(e) => return (None, not_sent(e)),
        };
        let Some(value) = read.checked_add(by) else {
            return (
                Some(read),
                not_sent(format!("{}: {read} + {by} overflows", history::BAD_REPLY)),
            );
        };
        let value = value.to_string();
        for args in [&[b"MULTI".as_slice()][..], &[b"SET", k, value.as_bytes()]] {
            if let Err(e) = step(self.send(args).await) {
                return (Some(read), not_sent(e));
            }
        }
        let outcome = match self.send(&[b"EXEC"]).await {
            Exchange::NotSent(error) => not_sent(error),
            Exchange::NoReply(e) => Outcome::Unknown(e),
            Exchange::Replied(Err(error)) => Outcome::Failed { error, sent: true },
            Exchange::Replied(Ok(redis::Value::Nil)) => Outcome::Aborted,
            Exchange::Replied(Ok(redis::Value::Array(_))) => Outcome::Counted(read + by),
            Exchange::Replied(Ok(other)) => Outcome::Failed {
                error: format!("unexpected reply to EXEC: {other:?}"),
                sent: true,
            },
        };
        (Some(read), outcome)
    }

    /// Talks to another node from the next command on.
    fn switch(&mut self, node: usize) {
        if node != self.node {
            self.node = node;
            self.con = None;
        }
    }
}

fn key(i: usize) -> String {
    format!("key{i}")
}

/// The nodes the clients pick from, in order: all [`NODES`] in a run
/// without membership changes; in one with them the fault driver adds the
/// joiner once it answers and takes out a node once it is asked to leave
/// or crashed for good (see [`Changes`]). Shared by the clients and the
/// driver (one thread).
#[derive(Debug, Clone)]
struct Serving(Rc<RefCell<Vec<usize>>>);

impl Serving {
    fn new(nodes: impl IntoIterator<Item = usize>) -> Self {
        Self(Rc::new(RefCell::new(nodes.into_iter().collect())))
    }

    /// A node drawn from `rng`: over the [`NODES`] of a run without
    /// changes, the same draw as `rng.below(NODES)`, so those runs repeat
    /// as before the list existed.
    fn pick(&self, rng: &mut Rng) -> usize {
        let nodes = self.0.borrow();
        nodes[rng.below(nodes.len())]
    }

    /// The `i`th node, counted around the list.
    fn nth(&self, i: usize) -> usize {
        let nodes = self.0.borrow();
        nodes[i % nodes.len()]
    }

    fn nodes(&self) -> Vec<usize> {
        self.0.borrow().clone()
    }

    fn add(&self, node: usize) {
        let mut nodes = self.0.borrow_mut();
        if !nodes.contains(&node) {
            nodes.push(node);
        }
    }

    fn remove(&self, node: usize) {
        self.0.borrow_mut().retain(|&n| n != node);
    }
}

fn counter(i: usize) -> String {
    format!("ctr{i}")
}

/// The next unused increment of each counter key, shared by the clients:
/// even powers of two, `2^0` to `2^62` (their sum fits an i64), so each
/// acknowledged increment is one bit of the final value and a double count
/// sets an odd bit (see `history::check_counters`).
#[derive(Debug, Default)]
struct Increments(RefCell<[u32; COUNTERS]>);

impl Increments {
    /// A fresh increment for counter `i`, if it has one left.
    fn take(&self, i: usize) -> Option<i64> {
        let mut next = self.0.borrow_mut();
        let bit = next[i];
        (bit <= 62).then(|| {
            next[i] += 2;
            1i64 << bit
        })
    }
}

/// One client's workload: read a key, then write or delete it with the
/// context read; or add to a counter key with INCRBY or a WATCH
/// transaction; on a failure, try another node.
async fn workload(
    id: usize,
    seed: u64,
    history: Arc<History>,
    increments: Rc<Increments>,
    serving: Serving,
) {
    let mut rng = Rng::new(seed ^ (id as u64).wrapping_mul(0x51_7cc1_b727_220a));
    let mut client = SimClient::new(id, serving.nth(id), history);
    for round in 0..ROUNDS {
        tokio::time::sleep(rng.millis(0, 100)).await;
        if rng.chance(COUNTER_PERCENT) {
            let i = rng.below(COUNTERS);
            let watched = rng.chance(WATCHED_PERCENT);
            if let Some(by) = increments.take(i) {
                let outcome = if watched {
                    client.watched_incr(&counter(i), by).await
                } else {
                    client.incrby(&counter(i), by).await
                };
                let aborted = matches!(outcome, Outcome::Aborted);
                if (!outcome.is_ok() && !aborted) || rng.chance(10) {
                    client.switch(serving.pick(&mut rng));
                }
                continue;
            }
        }
        let key = key(rng.below(KEYS));
        let Some(read) = client.vget(&key, None).await else {
            client.switch(serving.pick(&mut rng));
            continue;
        };
        let outcome = if rng.chance(15) {
            client.vdel(&key, &read).await
        } else {
            client
                .vset(&key, &read, format!("{key}-c{id}-{round}"))
                .await
        };
        if !outcome.is_ok() || rng.chance(10) {
            client.switch(serving.pick(&mut rng));
        }
    }
}

/// Why the replicas (read straight from the stores of the nodes
/// `members`) do not hold the same record of some key, if they do not:
/// every key is on no member or on exactly N, all with the same DVV set.
/// (A node that left or was removed is not a member: what its store
/// still holds is no replica.)
fn replicas_differ(
    stores: &[Arc<MemoryStore>],
    members: &[usize],
    keys: &[String],
) -> Option<String> {
    for key in keys {
        let skey = storage_key(partition_of(key.as_bytes(), PARTITIONS), key.as_bytes());
        let held: Vec<(usize, Record)> = members
            .iter()
            .filter_map(|&node| {
                let bytes = stores[node].get(Space::Data, &skey).ok().flatten()?;
                Some((node, decode_record(&bytes).ok()?))
            })
            .collect();
        let nodes: Vec<usize> = held.iter().map(|(node, _)| *node).collect();
        if !held.is_empty() && held.len() != N {
            return Some(format!("{key} is stored on nodes {nodes:?}, not on {N}"));
        }
        if held.windows(2).any(|w| w[0].1 != w[1].1) {
            return Some(format!("{key}: the replicas on nodes {nodes:?} differ"));
        }
    }
    None
}

/// After the heal: reads every key through every node of `members` until
/// they agree (see `history::judge_round`) and so do the replicas' stores
/// ([`replicas_differ`]), at most [`CONVERGE_MAX`].
async fn final_reads(
    history: Arc<History>,
    stores: Vec<Arc<MemoryStore>>,
    members: Vec<usize>,
) -> Final {
    let healed = tokio::time::Instant::now();
    let keys: Vec<String> = (0..KEYS)
        .map(key)
        .chain((0..COUNTERS).map(counter))
        .collect();
    let mut clients: Vec<SimClient> = members
        .iter()
        .map(|&node| SimClient::new(usize::MAX, node, Arc::clone(&history)))
        .collect();
    loop {
        // Keyed by the position in `members`, as `judge_round` counts.
        let mut reads: HashMap<(usize, String, usize), Option<Read>> = HashMap::new();
        for (at, client) in clients.iter_mut().enumerate() {
            for key in &keys {
                for r in [N, 1] {
                    reads.insert((at, key.clone(), r), client.vget(key, Some(r)).await);
                }
            }
        }
        let (states, mut divergence) =
            history::judge_round(&keys, members.len(), N, |at, key, r| {
                reads.remove(&(at, key.to_owned(), r)).flatten()
            });
        // The checker names nodes: positions back to node numbers.
        let states = states
            .into_iter()
            .map(|(at, keys)| (members[at], keys))
            .collect();
        if members.iter().enumerate().any(|(at, &node)| at != node) {
            divergence = divergence.map(|d| format!("{d} (nodes counted in {members:?})"));
        }
        if divergence.is_none() {
            divergence = replicas_differ(&stores, &members, &keys);
        }
        let converged = divergence.is_none();
        if converged || healed.elapsed() >= CONVERGE_MAX {
            return Final {
                states,
                converged,
                converge_ms: healed.elapsed().as_millis() as u64,
                divergence,
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------
// Links: who lists whom up.

/// One prober round: which nodes each node listed up (`None`: it did not
/// answer), asked from `at` until `end`; and the layout each listed.
#[derive(Debug)]
struct Probe {
    at: Duration,
    end: Duration,
    up: Vec<Option<BTreeSet<usize>>>,
    layouts: Vec<Option<Listed>>,
}

/// The layout a node listed in `DYNAMO MEMBERS`: its members, whether
/// every one was `member` (settled), and its current members (`member` or
/// `leaving`: those placed for reads, whose replicas coordinate writes).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    members: BTreeSet<usize>,
    settled: bool,
    current: BTreeSet<usize>,
}

impl Listed {
    fn of(reply: &redis::Value) -> Option<Self> {
        let rows = member_rows(reply)?;
        let state = |r: &MemberRow| r.get("state").cloned().unwrap_or_default();
        Some(Self {
            members: rows.iter().filter_map(row_node).collect(),
            settled: rows.iter().all(|r| state(r) == "member"),
            current: rows
                .iter()
                .filter(|r| matches!(state(r).as_str(), "member" | "leaving"))
                .filter_map(row_node)
                .collect(),
        })
    }
}

/// Until when some node may have placed data by another layout than the
/// settled one of `members`: the end of the last probe in which a node
/// listed another one (or of the first probe, since what came before it
/// was not seen).
fn other_layouts_until(probes: &[Probe], members: &[usize]) -> Duration {
    let members: BTreeSet<usize> = members.iter().copied().collect();
    let settled = Listed {
        current: members.clone(),
        members,
        settled: true,
    };
    let other = probes
        .iter()
        .filter(|p| p.layouts.iter().flatten().any(|l| *l != settled))
        .map(|p| p.end);
    other
        .chain(probes.first().map(|p| p.end))
        .max()
        .unwrap_or(Duration::MAX)
}

/// One row of a `DYNAMO MEMBERS` reply: field → value.
type MemberRow = HashMap<String, String>;

/// The rows of a `DYNAMO MEMBERS` reply (`None`: not such a reply).
fn member_rows(reply: &redis::Value) -> Option<Vec<MemberRow>> {
    let redis::Value::Array(rows) = reply else {
        return None;
    };
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    rows.iter()
        .map(|row| {
            let redis::Value::Array(flat) = row else {
                return None;
            };
            flat.chunks(2)
                .filter(|kv| kv.len() == 2)
                .map(|kv| Some((text(&kv[0])?, text(&kv[1])?)))
                .collect()
        })
        .collect()
}

/// The node a row is about (`n<i>`).
fn row_node(row: &MemberRow) -> Option<usize> {
    row.get("name")?.strip_prefix('n')?.parse().ok()
}

/// The node indexes a `DYNAMO MEMBERS` reply lists as up.
fn listed_up(reply: &redis::Value) -> Option<BTreeSet<usize>> {
    let mut up = BTreeSet::new();
    for row in member_rows(reply)? {
        let node = row_node(&row)?;
        if row.get("status").map(String::as_str) == Some("up") {
            up.insert(node);
        }
    }
    Some(up)
}

/// Asks each of the `hosts` nodes that is in `asked` for its links every
/// [`LINK_PROBE_EVERY`] until `stop` (a node not asked counts as one that
/// did not answer: a node that left or was removed is not asked, or each
/// round would wait [`LINK_PROBE_TIMEOUT`] for it).
async fn probe_links(
    probes: Rc<RefCell<Vec<Probe>>>,
    stop: Rc<Cell<bool>>,
    hosts: usize,
    asked: Serving,
) {
    let history = Arc::new(History::new());
    let mut clients: Vec<SimClient> = (0..hosts)
        .map(|node| SimClient::new(usize::MAX, node, Arc::clone(&history)))
        .collect();
    while !stop.get() {
        let at = turmoil::sim_elapsed().unwrap_or_default();
        let mut up = Vec::with_capacity(hosts);
        let mut layouts = Vec::with_capacity(hosts);
        let nodes = asked.nodes();
        for (node, client) in clients.iter_mut().enumerate() {
            if !nodes.contains(&node) {
                up.push(None);
                layouts.push(None);
                continue;
            }
            let asked =
                tokio::time::timeout(LINK_PROBE_TIMEOUT, client.send(&[b"DYNAMO", b"MEMBERS"]))
                    .await;
            let reply = match asked {
                Ok(Exchange::Replied(Ok(reply))) => Some(reply),
                Ok(_) => None,
                Err(_) => {
                    client.con = None;
                    None
                }
            };
            up.push(reply.as_ref().and_then(listed_up));
            layouts.push(reply.as_ref().and_then(Listed::of));
        }
        let end = turmoil::sim_elapsed().unwrap_or_default();
        probes.borrow_mut().push(Probe {
            at,
            end,
            up,
            layouts,
        });
        tokio::time::sleep(LINK_PROBE_EVERY).await;
    }
}

/// A fault's time in force and the pairs of nodes it touched.
#[derive(Debug)]
struct Disturbance {
    injected: Duration,
    healed: Option<Duration>,
    pairs: Vec<(usize, usize)>,
}

/// Every fault injected, by index, among `hosts` nodes.
#[derive(Debug)]
struct Disturbances {
    hosts: usize,
    all: Vec<Disturbance>,
}

impl Disturbances {
    fn new(hosts: usize) -> Self {
        Self {
            hosts,
            all: Vec::new(),
        }
    }

    /// Every pair of node `i` with another.
    fn pairs_of(&self, i: usize) -> Vec<(usize, usize)> {
        (0..self.hosts)
            .filter(|&j| j != i)
            .map(|j| (j.min(i), j.max(i)))
            .collect()
    }

    /// A fault injected at `at`; its index.
    fn injected(&mut self, fault: &Fault, at: Duration) -> usize {
        let pairs = match fault {
            Fault::Partition(a, b) => a
                .iter()
                .flat_map(|&x| b.iter().map(move |&y| (x.min(y), x.max(y))))
                .collect(),
            Fault::Crash(i) | Fault::Restart(i) => self.pairs_of(*i),
            Fault::Hold(a, b) | Fault::Lossy(a, b) => vec![(*a.min(b), *a.max(b))],
        };
        self.all.push(Disturbance {
            injected: at,
            healed: None,
            pairs,
        });
        self.all.len() - 1
    }

    /// A membership change of node `i` from `at` (its links come and go
    /// with it: unchecked until [`Self::healed`], if ever); its index.
    fn changed(&mut self, i: usize, at: Duration) -> usize {
        let pairs = self.pairs_of(i);
        self.all.push(Disturbance {
            injected: at,
            healed: None,
            pairs,
        });
        self.all.len() - 1
    }

    fn healed(&mut self, fault_index: usize, at: Duration) {
        self.all[fault_index].healed = Some(at);
    }

    /// The last heal of any fault.
    fn last_heal(&self) -> Duration {
        self.all
            .iter()
            .filter_map(|f| f.healed)
            .max()
            .unwrap_or_default()
    }

    /// Whether no fault touched `pair` from [`LINK_REPAIR_MAX`] before
    /// `at` until `end`.
    fn settled(&self, pair: (usize, usize), at: Duration, end: Duration) -> bool {
        self.all.iter().all(|f| {
            !f.pairs.contains(&pair)
                || f.injected > end
                || f.healed.is_some_and(|h| h + LINK_REPAIR_MAX <= at)
        })
    }
}

/// Pairs whose ends disagree, or both list down, although no fault has
/// touched them for [`LINK_REPAIR_MAX`]; and how many pair checks held.
fn link_problems(probes: &[Probe], disturbances: &Disturbances) -> (Vec<String>, usize) {
    let (mut problems, mut checked) = (Vec::new(), 0);
    for probe in probes {
        let hosts = probe.up.len();
        for x in 0..hosts {
            for y in x + 1..hosts {
                let (Some(xs), Some(ys)) = (&probe.up[x], &probe.up[y]) else {
                    continue;
                };
                if !disturbances.settled((x, y), probe.at, probe.end) {
                    continue;
                }
                checked += 1;
                if !(xs.contains(&y) && ys.contains(&x)) {
                    problems.push(format!(
                        "at {:?}: n{x} lists n{y} {}, n{y} lists n{x} {}, {LINK_REPAIR_MAX:?} \
                         after the last fault touching them",
                        probe.at,
                        if xs.contains(&y) { "up" } else { "down" },
                        if ys.contains(&x) { "up" } else { "down" },
                    ));
                }
            }
        }
    }
    (problems, checked)
}

// ---------------------------------------------------------------------
// The fault driver.

/// A fault in force, and how to undo it.
#[derive(Debug, Clone)]
enum Fault {
    /// Links between the two sides cut.
    Partition(Vec<usize>, Vec<usize>),
    /// A node's software stopped; restarted on heal.
    Crash(usize),
    /// A node shut down gracefully (drained and synced); started on heal.
    Restart(usize),
    /// Messages on a link held back, delivered on heal (a long delay).
    Hold(usize, usize),
    /// A link that drops messages at random.
    Lossy(usize, usize),
}

fn inject(sim: &mut turmoil::Sim<'_>, stops: &[Switch], fault: &Fault) {
    match fault {
        Fault::Partition(a, b) => {
            for &x in a {
                for &y in b {
                    sim.partition(node_name(x), node_name(y));
                }
            }
        }
        Fault::Crash(i) => sim.crash(node_name(*i)),
        Fault::Restart(i) => stops[*i].set(true),
        Fault::Hold(a, b) => sim.hold(node_name(*a), node_name(*b)),
        Fault::Lossy(a, b) => sim.set_link_fail_rate(node_name(*a), node_name(*b), 0.05),
    }
}

fn heal(sim: &mut turmoil::Sim<'_>, stops: &[Switch], fault: &Fault) {
    match fault {
        Fault::Partition(a, b) => {
            for &x in a {
                for &y in b {
                    sim.repair(node_name(x), node_name(y));
                }
            }
        }
        Fault::Crash(i) => sim.bounce(node_name(*i)),
        Fault::Restart(i) => stops[*i].set(false),
        Fault::Hold(a, b) => sim.release(node_name(*a), node_name(*b)),
        Fault::Lossy(a, b) => {
            sim.set_link_fail_rate(node_name(*a), node_name(*b), 0.0);
            sim.repair(node_name(*a), node_name(*b));
        }
    }
}

/// A fault among `nodes` (the live members), the crash or shutdown of one
/// of `crashable` (a node that leaves or was removed is not), while
/// `crashed` nodes are down. Over the [`NODES`] of a run without
/// membership changes it draws what it always drew.
fn pick_fault(
    rng: &mut Rng,
    nodes: &[usize],
    crashable: &[usize],
    crashed: usize,
    graceful: bool,
) -> Fault {
    let one_of = |rng: &mut Rng, from: &[usize]| from[rng.below(from.len())];
    let pair = |rng: &mut Rng| {
        let a = rng.below(nodes.len());
        (
            nodes[a],
            nodes[(a + 1 + rng.below(nodes.len() - 1)) % nodes.len()],
        )
    };
    let can_crash = crashed < 2 && !crashable.is_empty();
    match rng.below(4) {
        0 => {
            // A minority of 1 or 2 against the rest.
            let mut all = nodes.to_vec();
            let mut side = Vec::new();
            for _ in 0..=rng.below(2) {
                side.push(all.remove(rng.below(all.len())));
            }
            Fault::Partition(side, all)
        }
        1 if can_crash => Fault::Crash(one_of(rng, crashable)),
        // A graceful shutdown, when on, takes half the held links' share,
        // so kills stay as frequent as without it.
        2 if graceful && can_crash && rng.chance(50) => Fault::Restart(one_of(rng, crashable)),
        2 => {
            let (a, b) = pair(rng);
            Fault::Hold(a, b)
        }
        _ => {
            let (a, b) = pair(rng);
            Fault::Lossy(a, b)
        }
    }
}

/// Every time a node's store was cleared, as the fault driver saw it
/// between steps: a node's FLUSHALL empties its store and records a new
/// dot id in one step (`Replica::flush_all`, inline store work), so a new
/// dot id is a clear. Each is timed at the end of its step, so no earlier
/// than the clear.
#[derive(Debug, Default)]
struct Clears {
    /// Each node's dot id as last seen (`None` before the node made one).
    dot_ids: Vec<Option<Vec<u8>>>,
    /// (node, when) of every clear seen.
    seen: Vec<(usize, Duration)>,
}

impl Clears {
    fn watch(&mut self, stores: &[Arc<MemoryStore>], at: Duration) {
        self.dot_ids.resize(stores.len(), None);
        for (node, store) in stores.iter().enumerate() {
            let dot_id = store.meta_get("dot_id").ok().flatten();
            let last = &mut self.dot_ids[node];
            if last.is_some() && dot_id != *last {
                self.seen.push((node, at));
            }
            *last = dot_id;
        }
    }
}

/// When a node was a member: from, until (in a run without membership
/// changes every node is one throughout).
type Span = (usize, Duration, Duration);

/// Every node of `hosts` a member throughout.
fn always(hosts: usize) -> Vec<Span> {
    (0..hosts)
        .map(|i| (i, Duration::ZERO, Duration::MAX))
        .collect()
}

/// What the stores' clears say against the FLUSHALLs recorded: every
/// acknowledged FLUSHALL cleared every node that was a member while it ran
/// (per `spans`; it answers only once every member did), and every clear
/// fell in the window the checker allows a FLUSHALL ([`LATE`] past an
/// unacknowledged one's completion) — the bound the checker's flush rules
/// assume, checked.
fn flush_problems(ops: &[Op], clears: &[(usize, Duration)], spans: &[Span]) -> Vec<String> {
    let flushes: Vec<&Op> = ops
        .iter()
        .filter(|op| op.call == Call::FlushAll && op.outcome.maybe_applied())
        .collect();
    let mut problems = Vec::new();
    for flush in flushes.iter().filter(|op| op.outcome.is_ok()) {
        let members = spans
            .iter()
            .filter(|&&(_, from, until)| from <= flush.invoked && flush.completed <= until);
        for &(node, _, _) in members {
            let cleared = clears
                .iter()
                .any(|&(n, at)| n == node && at >= flush.invoked && at <= flush.completed + TICK);
            if !cleared {
                problems.push(format!(
                    "FLUSHALL acknowledged by n{} at {:?} (invoked at {:?}), but n{node}'s \
                     store was not cleared meanwhile",
                    flush.node, flush.completed, flush.invoked
                ));
            }
        }
    }
    for &(node, at) in clears {
        let explained = flushes.iter().any(|flush| {
            let until = if flush.outcome.is_ok() {
                flush.completed + TICK
            } else {
                flush.completed + LATE
            };
            at >= flush.invoked && at <= until
        });
        if !explained {
            problems.push(format!(
                "n{node}'s store was cleared at {at:?}, outside every FLUSHALL's window"
            ));
        }
    }
    problems
}

/// The flusher, in the first [`FLUSH_WINDOW`] of the faults: a FLUSHALL
/// through a random node every [`FLUSH_GAP_MIN_MS`]–[`FLUSH_GAP_MAX_MS`],
/// until [`FLUSHES_ACKED`] were acknowledged (one fails whenever a node is
/// down or cut off from its coordinator, which is most of the time). A
/// flush excuses the loss of what was written before it, so the faults
/// after the window meet writes the checker holds to account. It waits
/// for the coordinator's whole fan-out ([`FLUSH_TIMEOUT`]), so an
/// unacknowledged FLUSHALL has sent all its requests by the time it is
/// recorded.
async fn flusher(seed: u64, history: Arc<History>, serving: Serving) {
    let mut rng = Rng::new(seed ^ 0x0f1a_5a11_d00d_f00d);
    let mut client = SimClient::new(CLIENTS, serving.pick(&mut rng), history);
    client.timeout = FLUSH_TIMEOUT;
    let start = tokio::time::Instant::now();
    let mut acked = 0;
    while acked < FLUSHES_ACKED {
        tokio::time::sleep(rng.millis(FLUSH_GAP_MIN_MS, FLUSH_GAP_MAX_MS)).await;
        if start.elapsed() >= FLUSH_WINDOW {
            break;
        }
        client.switch(serving.pick(&mut rng));
        if client.flushall().await.is_ok() {
            acked += 1;
        }
    }
}

/// What the epilogue wrote, once it has.
type Written = Rc<RefCell<Option<Vec<String>>>>;

/// The epilogue's client, on a quiet healed cluster: FLUSHALL (again until
/// acknowledged, at most [`EPILOGUE_FLUSH_TRIES`] times), then a new value
/// for [`EPILOGUE_KEYS`] keys and an increment of every counter. It puts
/// its keys in `written`; the fault driver then crashes or gracefully
/// restarts one, two or all three replicas of the first one, and once
/// `restarted` is set the epilogue reads its keys back through every node.
async fn epilogue(
    seed: u64,
    history: Arc<History>,
    increments: Rc<Increments>,
    written: Written,
    restarted: Rc<Cell<bool>>,
    serving: Serving,
) {
    let id = CLIENTS + 1;
    let mut rng = Rng::new(seed ^ 0x0e91_1096_e0f0_ab1e);
    let mut client = SimClient::new(id, serving.pick(&mut rng), history);
    client.timeout = FLUSH_TIMEOUT;
    for _ in 0..EPILOGUE_FLUSH_TRIES {
        if client.flushall().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        client.switch(serving.pick(&mut rng));
    }
    client.timeout = CLIENT_TIMEOUT;
    let mut keys: Vec<String> = (0..KEYS).map(key).collect();
    let mut chosen = Vec::new();
    for round in 0..EPILOGUE_KEYS {
        let key = keys.remove(rng.below(keys.len()));
        client.switch(serving.pick(&mut rng));
        if let Some(read) = client.vget(&key, None).await {
            client
                .vset(&key, &read, format!("{key}-c{id}-{round}"))
                .await;
        }
        chosen.push(key);
    }
    for i in 0..COUNTERS {
        if let Some(by) = increments.take(i) {
            client.switch(serving.pick(&mut rng));
            client.incrby(&counter(i), by).await;
        }
    }
    *written.borrow_mut() = Some(chosen.clone());
    while !restarted.get() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for node in serving.nodes() {
        client.switch(node);
        for key in &chosen {
            client.vget(key, None).await;
        }
    }
}

/// The nodes of `members` whose stores hold `key`.
fn holders(stores: &[Arc<MemoryStore>], members: &[usize], key: &str) -> Vec<usize> {
    let skey = storage_key(partition_of(key.as_bytes(), PARTITIONS), key.as_bytes());
    members
        .iter()
        .copied()
        .filter(|&node| {
            stores[node]
                .get(Space::Data, &skey)
                .ok()
                .flatten()
                .is_some()
        })
        .collect()
}

// ---------------------------------------------------------------------
// The replica check (issue 21): each replica's own store, after hint
// replay, with read repair off.

/// How long after the clients' last operation (and [`LATE`]) the hints
/// may take to be replayed: a target's link comes back within
/// [`LINK_REPAIR_MAX`], and the hints worker looks every 0.5 s.
const HINTS_MAX: Duration = Duration::from_secs(60);
/// How long after a node took a layout a probe round may first list it:
/// a round asks every node in turn, each for up to [`LINK_PROBE_TIMEOUT`],
/// every [`LINK_PROBE_EVERY`].
const LAYOUT_SEEN_LAG: Duration = Duration::from_millis(
    LINK_PROBE_EVERY.as_millis() as u64
        + (NODES as u64 + 1) * LINK_PROBE_TIMEOUT.as_millis() as u64,
);
/// `CONFIG SET read-repair yes` is sent to a node this many times at
/// most, until it answers OK.
const CONFIG_TRIES: usize = 10;

/// The keys of the workload: the [`KEYS`] and the [`COUNTERS`].
fn workload_keys() -> Vec<String> {
    (0..KEYS)
        .map(key)
        .chain((0..COUNTERS).map(counter))
        .collect()
}

/// The hint records each store of `members` holds, where any: (node,
/// count). A target's window entry is no hint.
fn hints_held(stores: &[Arc<MemoryStore>], members: &[usize]) -> Vec<(usize, usize)> {
    members
        .iter()
        .map(|&node| {
            let held = stores[node]
                .scan(Space::Hints, b"", None, usize::MAX)
                .unwrap_or_default()
                .iter()
                .filter(|(key, _)| dynokv::replica::hints::split_hint_key(key).is_some())
                .count();
            (node, held)
        })
        .filter(|&(_, held)| held > 0)
        .collect()
}

/// Steps `sim` until `quiet` has passed, no member's store holds a hint,
/// and none holds a key it is no replica of (old copies go a grace after
/// the settle); what is still held [`HINTS_MAX`] after `quiet`, if so.
fn wait_replay(
    sim: &mut turmoil::Sim<'_>,
    stores: &[Arc<MemoryStore>],
    replicas: &Replicas,
    quiet: Duration,
    clears: &mut Clears,
    step: &impl Fn(&mut turmoil::Sim<'_>, &mut Clears),
) -> Result<(), String> {
    let until = quiet.max(sim.elapsed()) + HINTS_MAX;
    loop {
        let now = sim.elapsed();
        if now >= quiet {
            let held = hints_held(stores, &replicas.members);
            let misplaced = replicas.misplaced(stores);
            let diverging = if anti_entropy() {
                replicas.diverging(stores)
            } else {
                Vec::new()
            };
            if held.is_empty() && misplaced.is_empty() && diverging.is_empty() {
                return Ok(());
            }
            if now >= until {
                return Err(format!(
                    "at {now:?}, {HINTS_MAX:?} after every write's tail: hints (node, records) \
                     still held: {held:?}; records on nodes that are no replica: {misplaced:?}; \
                     keys whose replicas differ (anti-entropy runs): {} {:?}",
                    diverging.len(),
                    &diverging[..diverging.len().min(5)]
                ));
            }
        }
        step(sim, clears);
    }
}

/// Sends `CONFIG SET read-repair yes` to every node of `members` until
/// each answers OK ([`CONFIG_TRIES`] times at most), stepping `sim`.
fn set_read_repair(
    sim: &mut turmoil::Sim<'_>,
    members: &[usize],
    clears: &mut Clears,
    step: &impl Fn(&mut turmoil::Sim<'_>, &mut Clears),
) -> Result<(), String> {
    let slot: Rc<RefCell<Option<Result<(), String>>>> = Rc::default();
    {
        let (slot, members) = (Rc::clone(&slot), members.to_vec());
        sim.client(format!("repair{}", sim.elapsed().as_millis()), async move {
            let history = Arc::new(History::new());
            let mut answer = Ok(());
            'nodes: for node in members {
                let mut client = SimClient::new(usize::MAX, node, Arc::clone(&history));
                let mut last = String::new();
                for _ in 0..CONFIG_TRIES {
                    let args: [&[u8]; 4] = [b"CONFIG", b"SET", b"read-repair", b"yes"];
                    match client.send(&args).await {
                        Exchange::Replied(Ok(redis::Value::SimpleString(ok))) if ok == "OK" => {
                            continue 'nodes;
                        }
                        other => last = format!("{other:?}"),
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                answer = Err(format!("CONFIG SET read-repair yes on n{node}: {last}"));
                break;
            }
            *slot.borrow_mut() = Some(answer);
            Ok(())
        });
    }
    while slot.borrow().is_none() {
        step(sim, clears);
    }
    slot.take().unwrap_or_else(|| Err("no answer".into()))
}

/// Where each workload key's replicas are, computed as the nodes place
/// them (weighted HRW over the members' ids, all of weight 1, no zones:
/// `dynokv::ring::Ring`), from the node ids in the stores.
#[derive(Debug)]
struct Replicas {
    /// The members.
    members: Vec<usize>,
    /// Key → its replicas under the members' layout, by rank.
    ranked: HashMap<String, Vec<usize>>,
    /// Each set of current members a node listed, from when a probe
    /// first saw it, with the replicas it places each key on: the
    /// coordinators of a write begun before `other_layouts_until`.
    seen: Vec<(Duration, HashMap<String, Vec<usize>>)>,
    /// Until when a node may have placed data by another layout.
    other_layouts_until: Duration,
}

impl Replicas {
    /// The replicas among `members`, by rank; and those of every set of
    /// current members a node listed in `probes` (the joins at the start,
    /// the membership changes), for the writes begun before the layout
    /// settled (`other_layouts_until`).
    fn new(stores: &[Arc<MemoryStore>], members: &[usize], probes: &[Probe]) -> Self {
        let keys = workload_keys();
        let ranked = replicas_among(stores, members, &keys);
        let mut first_seen: BTreeMap<&BTreeSet<usize>, Duration> = BTreeMap::new();
        for probe in probes {
            for listed in probe.layouts.iter().flatten() {
                first_seen.entry(&listed.current).or_insert(probe.at);
            }
        }
        let seen = first_seen
            .into_iter()
            .map(|(current, at)| {
                let nodes: Vec<usize> = current.iter().copied().collect();
                (at, replicas_among(stores, &nodes, &keys))
            })
            .collect();
        Self {
            members: members.to_vec(),
            ranked,
            seen,
            other_layouts_until: other_layouts_until(probes, members),
        }
    }

    /// Each key's replicas by rank, for the replica check's reports.
    fn legend(&self) -> String {
        let ranked: BTreeMap<&String, &Vec<usize>> = self.ranked.iter().collect();
        let keys: Vec<String> = ranked
            .into_iter()
            .map(|(key, nodes)| format!("{key}={nodes:?}"))
            .collect();
        keys.join(" ")
    }

    /// Records on a member that is no replica of their key: old copies
    /// not dropped yet (a grace after the settle), or a placement this
    /// test computes wrongly.
    fn misplaced(&self, stores: &[Arc<MemoryStore>]) -> Vec<String> {
        let mut found = Vec::new();
        for (key, replicas) in &self.ranked {
            let skey = storage_key(partition_of(key.as_bytes(), PARTITIONS), key.as_bytes());
            for &node in self.members.iter().filter(|n| !replicas.contains(n)) {
                if stores[node]
                    .get(Space::Data, &skey)
                    .ok()
                    .flatten()
                    .is_some()
                {
                    found.push(format!("{key} on n{node}, not one of {replicas:?}"));
                }
            }
        }
        found
    }

    /// Keys whose replicas do not all hold the same record, as
    /// anti-entropy sees them: their leaves (the causal context; no
    /// record is leaf 0).
    fn diverging(&self, stores: &[Arc<MemoryStore>]) -> Vec<String> {
        self.ranked
            .iter()
            .filter(|(key, replicas)| {
                let skey = storage_key(partition_of(key.as_bytes(), PARTITIONS), key.as_bytes());
                let mut leaves = replicas.iter().map(|&node| {
                    let record = stores[node]
                        .get(Space::Data, &skey)
                        .ok()
                        .flatten()
                        .and_then(|bytes| decode_record(&bytes).ok());
                    dynokv::replica::tree::leaf(&skey, record.as_ref())
                });
                let first = leaves.next();
                leaves.any(|other| Some(other) != first)
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// The replicas' states as the checker's [`Final`], whose "nodes" are
    /// ranks: rank r holds each key's record on its r-th replica (no
    /// record: no value), its live values at `now_ms` (the context is left
    /// empty: nothing compares it).
    fn states(&self, stores: &[Arc<MemoryStore>], now_ms: u64) -> Final {
        let mut states: history::States = history::States::new();
        for (key, replicas) in &self.ranked {
            let skey = storage_key(partition_of(key.as_bytes(), PARTITIONS), key.as_bytes());
            for (rank, &node) in replicas.iter().enumerate() {
                let record = stores[node]
                    .get(Space::Data, &skey)
                    .ok()
                    .flatten()
                    .and_then(|bytes| decode_record(&bytes).ok());
                let mut values: Vec<String> = record
                    .iter()
                    .flat_map(|r| r.siblings().iter())
                    .filter_map(|(_, sibling)| sibling.live_value(now_ms))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect();
                values.sort();
                states
                    .entry(rank)
                    .or_default()
                    .insert(key.clone(), (Vec::new(), values));
            }
        }
        Final {
            states,
            converged: true,
            converge_ms: 0,
            divergence: None,
        }
    }

    /// Whether a crash in `crashes` may have lost the copies of `op`
    /// (acknowledged) that the replicas of its key lack, given the ranks
    /// `holding` it: one of its possible coordinators crashed (or was shut
    /// down) between its invocation and [`LATE`] after its reply — before
    /// its tail could hand them to a fallback — and, if it is a replica of
    /// the members' layout, holds it (a coordinator's copy is durable
    /// before it replies). Its possible coordinators are the node it was
    /// sent to, for a blind write sent to a replica; else its replicas;
    /// and, if it began before the layout settled, its replicas under any
    /// set of current members a node listed by then.
    fn crash_may_explain(
        &self,
        crashes: &[(usize, Duration)],
        op: &Op,
        holding: &[usize],
    ) -> Option<String> {
        let ranked = self.ranked.get(&op.key)?;
        let other = op.invoked <= self.other_layouts_until;
        // A blind write (VSET, VDEL) sent to a replica is coordinated by
        // it; one sent elsewhere, and a read-modify-write, by a replica
        // the node it was sent to picked.
        let blind = matches!(op.call, Call::Set { .. } | Call::Del { .. });
        let coordinator = (blind && !other && ranked.contains(&op.node)).then_some(op.node);
        // A layout a node held when it coordinated the write was listed
        // by the probe round that asked it next.
        let listed_by = op.completed + LAYOUT_SEEN_LAG;
        let possible = |node: usize| match coordinator {
            Some(coordinator) => node == coordinator,
            None => {
                ranked.contains(&node)
                    || (other
                        && self.seen.iter().any(|(at, placed)| {
                            *at <= listed_by
                                && placed.get(&op.key).is_some_and(|r| r.contains(&node))
                        }))
            }
        };
        let until = op.completed + LATE;
        let crashed: Vec<String> = crashes
            .iter()
            .filter(|&&(node, at)| {
                at >= op.invoked
                    && at <= until
                    && possible(node)
                    && match ranked.iter().position(|&n| n == node) {
                        Some(rank) => holding.contains(&rank),
                        None => true,
                    }
            })
            .map(|(node, at)| format!("n{node} at {at:?}"))
            .collect();
        (!crashed.is_empty())
            .then(|| format!("crashed: {} (replicas {ranked:?})", crashed.join(", ")))
    }
}

/// Each of `keys`' replicas among `nodes`, by rank, as the nodes place
/// them; a node whose store has no id yet (never started) is left out.
fn replicas_among(
    stores: &[Arc<MemoryStore>],
    nodes: &[usize],
    keys: &[String],
) -> HashMap<String, Vec<usize>> {
    let ids: Vec<(usize, u64)> = nodes
        .iter()
        .filter_map(|&node| {
            let id = stores[node].meta_get("node_id").ok().flatten()?;
            Some((
                node,
                u64::from_be_bytes(<[u8; 8]>::try_from(id.as_slice()).ok()?),
            ))
        })
        .collect();
    let placed = ids
        .iter()
        .map(|&(_, id)| Placed {
            id,
            weight: 1.0,
            zone: None,
        })
        .collect();
    let ring = Ring::new(placed, PARTITIONS, N);
    keys.iter()
        .map(|key| {
            let partition = partition_of(key.as_bytes(), PARTITIONS);
            let replicas = ring
                .replicas_of(partition)
                .iter()
                .filter_map(|id| ids.iter().find(|(_, i)| i == id).map(|&(node, _)| node))
                .collect();
            (key.clone(), replicas)
        })
        .collect()
}

// ---------------------------------------------------------------------
// Membership changes during the faults
// (`joins_leaves_and_removes_under_faults`).

/// Seeds `joins_leaves_and_removes_under_faults` runs (but the
/// [`REMOVE_CRASH_SEEDS`], run apart).
const CHANGE_SEEDS: u64 = 20;
/// Seeds in which the node that answered `DYNAMO REMOVE` crashes soon
/// after: they lost the acknowledged remove while a change was saved only
/// by the membership worker's next round (the dead node stayed a member,
/// the layout never settled); a change is now saved before it is
/// acknowledged. Run by
/// `an_acknowledged_remove_survives_a_crash_of_the_node_that_took_it`.
const REMOVE_CRASH_SEEDS: [u64; 4] = [15, 22, 25, 36];
/// The node that joins a run with membership changes: a host of its own
/// after the [`NODES`] that form the cluster, started during the faults.
const JOINER: usize = NODES;
/// How long the members may take to list the same members, all settled:
/// the five's first layout before the faults, the remaining members'
/// after the heal; and how long the node that left may take to stop after
/// that.
const SETTLE_MAX: Duration = Duration::from_secs(60);
/// How often the members are asked whether the layout settled.
const SETTLE_POLL: Duration = Duration::from_millis(200);
/// How long the members must still list the same settled layout at the
/// end of the run (nothing may bring the removed node back).
const SETTLED_RECHECK_MAX: Duration = Duration::from_secs(5);
/// LEAVEs or REMOVEs sent until one is acknowledged.
const CHANGE_TRIES: usize = 20;
/// The wait between two of them.
const CHANGE_RETRY: Duration = Duration::from_millis(250);

/// A run's membership changes, drawn from its seed (apart from the
/// faults' and the clients' draws, so those stay what they were), at
/// simulated times during the faults.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// When the [`JOINER`] starts, with `--join n0`.
    join_at: Duration,
    /// The node sent `DYNAMO LEAVE`, and when.
    leaver: usize,
    leave_at: Duration,
    /// The node crashed for good and removed, and when it is crashed.
    removed: usize,
    remove_at: Duration,
    /// How long after the crash the REMOVE is sent (an operator's delay).
    remove_delay: Duration,
}

impl Plan {
    /// The changes of `seed`, whose faults begin at `chaos`.
    fn draw(seed: u64, chaos: Duration) -> Self {
        let mut rng = Rng::new(seed ^ 0x6d65_6d62_6572_7321);
        // Never n0: it is the joiner's only seed. Two distinct nodes, so
        // that one replica of a partition at most is lost for good (the
        // leaver hands its copies over before it goes), which W = 2
        // tolerates.
        let leaver = 1 + rng.below(NODES - 1);
        let removed = 1 + (leaver + rng.below(NODES - 2)) % (NODES - 1);
        // After the flusher's window: a handoff stream is a copy in flight,
        // which an acknowledged FLUSHALL does not fence out (its known
        // limit, docs/semantics.md); the changes are judged apart from it.
        let window = (CHAOS - FLUSH_WINDOW - Duration::from_millis(500)).as_millis() as u64;
        let at = |rng: &mut Rng| chaos + FLUSH_WINDOW + rng.millis(0, window);
        Self {
            join_at: at(&mut rng),
            leaver,
            leave_at: at(&mut rng),
            removed,
            remove_at: at(&mut rng),
            remove_delay: rng.millis(0, 1_000),
        }
    }

    /// The members once every change is done.
    fn remaining(&self) -> Vec<usize> {
        (0..=JOINER)
            .filter(|&i| i != self.leaver && i != self.removed)
            .collect()
    }
}

/// A reply the LEAVE's or the REMOVE's client leaves once it is done:
/// acknowledged, or why not.
type Asked = Rc<RefCell<Option<Result<(), String>>>>;

/// Where a run's membership changes are, as the fault driver makes them.
#[derive(Debug)]
struct Changes {
    plan: Plan,
    /// The [`JOINER`]'s host starts once this is on.
    joiner: Switch,
    /// The nodes the clients use, and those the prober asks.
    serving: Serving,
    probed: Serving,
    /// The prober's rounds.
    probes: Rc<RefCell<Vec<Probe>>>,
    /// When a probe first found the joiner answering (clients use it
    /// from then on).
    joined: Option<Duration>,
    /// The joiner's links, unchecked until it answers.
    join_disturbance: usize,
    /// When the LEAVE was sent.
    leave_begun: Option<Duration>,
    /// When the leaver's host ended (`Node::run` returned `Ok`).
    left: Option<Duration>,
    /// When the removed node was crashed for good.
    removed_at: Option<Duration>,
    leave_reply: Asked,
    remove_reply: Asked,
    /// The removed node's id, as a member listed it before the remove.
    removed_id: Rc<RefCell<Option<String>>>,
    /// When every remaining member listed the same settled layout.
    settled: Option<Duration>,
    /// What went wrong with the changes themselves.
    problems: Vec<String>,
}

impl Changes {
    fn new(
        plan: Plan,
        joiner: Switch,
        (serving, probed): (Serving, Serving),
        probes: Rc<RefCell<Vec<Probe>>>,
        disturbances: &mut Disturbances,
    ) -> Self {
        Self {
            plan,
            joiner,
            serving,
            probed,
            probes,
            joined: None,
            join_disturbance: disturbances.changed(JOINER, Duration::ZERO),
            leave_begun: None,
            left: None,
            removed_at: None,
            leave_reply: Rc::default(),
            remove_reply: Rc::default(),
            removed_id: Rc::default(),
            settled: None,
            problems: Vec::new(),
        }
    }

    /// The nodes faults may touch at `now`: the members whose host runs.
    fn nodes(&self, now: Duration) -> Vec<usize> {
        let plan = &self.plan;
        (0..=JOINER)
            .filter(|&i| i != JOINER || now >= plan.join_at)
            .filter(|&i| i != plan.removed || self.removed_at.is_none())
            .filter(|&i| i != plan.leaver || self.left.is_none())
            .collect()
    }

    /// Of those, the ones a crash or shutdown may hit: not the leaver once
    /// asked to leave (a crash would be healed by starting it again).
    fn crashable(&self, now: Duration) -> Vec<usize> {
        let mut nodes = self.nodes(now);
        if self.leave_begun.is_some() {
            nodes.retain(|&i| i != self.plan.leaver);
        }
        nodes
    }

    /// Nodes down for good: they count against the crashes at once.
    fn down_for_good(&self) -> usize {
        usize::from(self.removed_at.is_some())
    }

    fn begun(&self) -> bool {
        self.leave_begun.is_some() && self.removed_at.is_some()
    }

    fn answered(&self) -> bool {
        self.leave_reply.borrow().is_some() && self.remove_reply.borrow().is_some()
    }

    /// When each node was a member (for the FLUSHALLs' clears): the
    /// joiner from its start, the removed node until its crash, the
    /// leaver until its host ended.
    fn spans(&self) -> Vec<Span> {
        (0..=JOINER)
            .map(|i| {
                let from = if i == JOINER {
                    self.plan.join_at
                } else {
                    Duration::ZERO
                };
                let until = if i == self.plan.removed {
                    self.removed_at
                } else if i == self.plan.leaver {
                    self.left
                } else {
                    None
                };
                (i, from, until.unwrap_or(Duration::MAX))
            })
            .collect()
    }

    /// One driver step at `now`: the joiner starts once due, and enters
    /// the clients' nodes once a probe found it answering; the leave
    /// begins (and the remove: the crash for good, then the REMOVE) once
    /// due and the node is not down from a fault, whose heal would start
    /// it again; the leaver's end is noted. `downed`: the nodes a fault
    /// keeps down.
    fn drive(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        seed: u64,
        downed: &[usize],
        disturbances: &mut Disturbances,
    ) {
        let (plan, now, serving) = (self.plan, sim.elapsed(), self.serving.clone());
        if now >= plan.join_at {
            self.joiner.set(true);
        }
        if self.joined.is_none()
            && self
                .probes
                .borrow()
                .last()
                .is_some_and(|p| p.up.get(JOINER).is_some_and(Option::is_some))
        {
            self.joined = Some(now);
            serving.add(JOINER);
            // It serves: it has joined, and its links are held to the
            // same bound as any other from here on.
            disturbances.healed(self.join_disturbance, now);
        }
        if self.leave_begun.is_none() && now >= plan.leave_at && !downed.contains(&plan.leaver) {
            self.leave_begun = Some(now);
            // Clients already talking to it go on until they switch.
            serving.remove(plan.leaver);
            disturbances.changed(plan.leaver, now);
            let reply = Rc::clone(&self.leave_reply);
            sim.client("leave", async move {
                *reply.borrow_mut() = Some(ask_leave(plan.leaver).await);
                Ok(())
            });
        }
        if self.leave_begun.is_some() && self.left.is_none() {
            self.note_left(sim);
        }
        if self.removed_at.is_none() && now >= plan.remove_at && !downed.contains(&plan.removed) {
            sim.crash(node_name(plan.removed));
            self.removed_at = Some(now);
            serving.remove(plan.removed);
            self.probed.remove(plan.removed);
            disturbances.changed(plan.removed, now);
            let (reply, id) = (Rc::clone(&self.remove_reply), Rc::clone(&self.removed_id));
            let serving = serving.clone();
            sim.client("remove", async move {
                tokio::time::sleep(plan.remove_delay).await;
                *reply.borrow_mut() = Some(ask_remove(seed, plan.removed, serving, id).await);
                Ok(())
            });
        }
    }

    /// Notes when the leaver's host ended (then it is not asked by the
    /// prober any more).
    fn note_left(&mut self, sim: &mut turmoil::Sim<'_>) {
        if !sim.is_host_running(node_name(self.plan.leaver)) {
            self.left = Some(sim.elapsed());
            self.probed.remove(self.plan.leaver);
        }
    }

    /// The changes' part of the checker's line.
    fn line(&self) -> String {
        let at =
            |t: Option<Duration>| t.map_or("never".to_owned(), |t| format!("{}", t.as_millis()));
        let plan = &self.plan;
        format!(
            "changes=join:n{JOINER}@{},leave:n{}@{},remove:n{}@{} joined_ms={} left_ms={} \
             settled_ms={} change_problems={}",
            plan.join_at.as_millis(),
            plan.leaver,
            at(self.leave_begun),
            plan.removed,
            at(self.removed_at),
            at(self.joined),
            at(self.left),
            at(self.settled),
            self.problems.len(),
        )
    }
}

/// The row the client's node lists for member `name`, if any.
async fn member_row(client: &mut SimClient, name: &str) -> Result<Option<MemberRow>, String> {
    match client.send(&[b"DYNAMO", b"MEMBERS"]).await {
        Exchange::Replied(Ok(reply)) => {
            let rows = member_rows(&reply).ok_or_else(|| format!("not members: {reply:?}"))?;
            Ok(rows
                .into_iter()
                .find(|r| r.get("name").map(String::as_str) == Some(name)))
        }
        other => Err(format!("{other:?}")),
    }
}

/// Sends `DYNAMO LEAVE` to `node` until acknowledged, at most
/// [`CHANGE_TRIES`] times. A LEAVE whose reply was lost may have been
/// applied: the node listing itself `leaving` acknowledges it too.
async fn ask_leave(node: usize) -> Result<(), String> {
    let mut client = SimClient::new(usize::MAX, node, Arc::new(History::new()));
    let mut last = String::new();
    for _ in 0..CHANGE_TRIES {
        match client.send(&[b"DYNAMO", b"LEAVE"]).await {
            Exchange::Replied(Ok(_)) => return Ok(()),
            other => last = format!("{other:?}"),
        }
        if let Ok(Some(row)) = member_row(&mut client, &node_name(node)).await
            && row.get("state").map(String::as_str) == Some("leaving")
        {
            return Ok(());
        }
        tokio::time::sleep(CHANGE_RETRY).await;
    }
    Err(format!("DYNAMO LEAVE to n{node} not acknowledged: {last}"))
}

/// Sends `DYNAMO REMOVE n<removed>` to a node of `serving` (another each
/// try) until acknowledged, at most [`CHANGE_TRIES`] times; first takes
/// the removed node's id from a member's `DYNAMO MEMBERS` into `id`.
async fn ask_remove(
    seed: u64,
    removed: usize,
    serving: Serving,
    id: Rc<RefCell<Option<String>>>,
) -> Result<(), String> {
    let mut rng = Rng::new(seed ^ 0x7265_6d6f_7665_6421);
    let name = node_name(removed);
    let mut client = SimClient::new(usize::MAX, serving.pick(&mut rng), Arc::new(History::new()));
    let mut last = String::new();
    for _ in 0..CHANGE_TRIES {
        if id.borrow().is_none() {
            match member_row(&mut client, &name).await {
                Ok(row) => *id.borrow_mut() = row.and_then(|r| r.get("id").cloned()),
                Err(e) => last = e,
            }
        }
        if id.borrow().is_some() {
            match client.send(&[b"DYNAMO", b"REMOVE", name.as_bytes()]).await {
                Exchange::Replied(Ok(_)) => return Ok(()),
                other => last = format!("{other:?}"),
            }
        }
        tokio::time::sleep(CHANGE_RETRY).await;
        client.switch(serving.pick(&mut rng));
    }
    Err(format!("DYNAMO REMOVE {name} not acknowledged: {last}"))
}

/// Asks every node of `remaining` for its members every [`SETTLE_POLL`]
/// until each lists exactly `remaining`, every one `member`, and none
/// lists the removed id `gone`; at most `max`. Why not, if not.
async fn settle(remaining: Vec<usize>, gone: Option<String>, max: Duration) -> Result<(), String> {
    let start = tokio::time::Instant::now();
    let history = Arc::new(History::new());
    let mut clients: Vec<SimClient> = remaining
        .iter()
        .map(|&node| SimClient::new(usize::MAX, node, Arc::clone(&history)))
        .collect();
    let want: BTreeSet<String> = remaining.iter().map(|&i| node_name(i)).collect();
    loop {
        let mut unsettled = None;
        for client in &mut clients {
            let seen = match client.send(&[b"DYNAMO", b"MEMBERS"]).await {
                Exchange::Replied(Ok(reply)) => member_rows(&reply),
                _ => None,
            };
            let ok = seen.as_ref().is_some_and(|rows| {
                let names: BTreeSet<String> =
                    rows.iter().filter_map(|r| r.get("name").cloned()).collect();
                names == want
                    && rows.len() == want.len()
                    && rows
                        .iter()
                        .all(|r| r.get("state").map(String::as_str) == Some("member"))
                    && rows
                        .iter()
                        .all(|r| gone.as_ref().is_none_or(|g| r.get("id") != Some(g)))
            });
            if !ok {
                let rows: Vec<String> = seen
                    .iter()
                    .flatten()
                    .map(|r| {
                        format!(
                            "{}({}/{}/{})",
                            r.get("name").map_or("?", String::as_str),
                            r.get("id").map_or("?", String::as_str),
                            r.get("state").map_or("?", String::as_str),
                            r.get("status").map_or("?", String::as_str),
                        )
                    })
                    .collect();
                unsettled = Some(format!("n{} lists {rows:?}", client.node));
                break;
            }
        }
        let Some(unsettled) = unsettled else {
            return Ok(());
        };
        if start.elapsed() >= max {
            return Err(format!(
                "no settled layout of {want:?} within {max:?}: {unsettled}"
            ));
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

/// Runs [`settle`] in a client of `sim` until it answers, stepping `sim`.
fn wait_settled(
    sim: &mut turmoil::Sim<'_>,
    remaining: Vec<usize>,
    gone: Option<String>,
    max: Duration,
    clears: &mut Clears,
    step: &impl Fn(&mut turmoil::Sim<'_>, &mut Clears),
) -> Result<(), String> {
    let slot: Rc<RefCell<Option<Result<(), String>>>> = Rc::default();
    {
        let slot = Rc::clone(&slot);
        sim.client(format!("settle{}", sim.elapsed().as_millis()), async move {
            *slot.borrow_mut() = Some(settle(remaining, gone, max).await);
            Ok(())
        });
    }
    while slot.borrow().is_none() {
        step(sim, clears);
    }
    slot.take().unwrap_or_else(|| Err("no answer".into()))
}

/// What one run did.
#[derive(Debug)]
struct Run {
    ops: Vec<Op>,
    report: Report,
    faults: usize,
    sim_ms: u64,
    /// Links not up on both ends although settled ([`link_problems`]).
    links: Vec<String>,
    /// Pair checks made.
    link_checks: usize,
    /// Stores cleared, as watched ([`Clears`]).
    clears: usize,
    /// Clears that do not fit the FLUSHALLs recorded ([`flush_problems`]).
    flush_problems: Vec<String>,
    /// The whole history judged on the state the epilogue left (`report`
    /// judges the workload on the state before it).
    epilogue_report: Report,
    /// The epilogue's fault: how the replicas stopped, and which.
    epilogue: String,
    /// Acknowledged FLUSHALLs of the workload followed by a write, a crash
    /// or shutdown, and a read ([`flush_sequences`]).
    flush_sequences: usize,
    /// The membership changes, in a run with them.
    changes: Option<Changes>,
    /// The replica check: the workload judged on the replicas' own
    /// stores after hint replay, read repair off ([`history::check_replicas`]).
    replica_report: Report,
    /// What kept the replica check from its judgement: hints never
    /// replayed, a record on a node that is no replica of its key, read
    /// repair not turned back on.
    replica_problems: Vec<String>,
    /// Each key's replicas by rank: the replica check's "nodes".
    replica_ranks: String,
    /// Until when a node listed another layout than the members' settled
    /// one (the joins at the start, the changes), simulated.
    layout_settled_ms: u64,
    /// From the clients' end until the replica check looked (simulated):
    /// the settle, the tails, the hint replay.
    hints_ms: u64,
    /// Puts the planted bug dropped, in a run with one.
    plant_dropped: Option<usize>,
}

/// A simulation for `seed` of the [`NODES`] that form the cluster and,
/// with a `joiner` switch, of the [`JOINER`], which starts once it is on;
/// syncing as `fsync` says: their stores, and the switches that stop them
/// gracefully (flipped only if `graceful`).
fn cluster(
    seed: u64,
    fsync: FsyncPolicy,
    graceful: bool,
    joiner: Option<&Switch>,
    read_repair: &Switch,
    plant: Option<&Plant>,
) -> (turmoil::Sim<'static>, Vec<Arc<MemoryStore>>, Vec<Switch>) {
    dynokv::random::seed_thread(seed);
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .simulation_duration(RUN_MAX)
        .tick_duration(TICK)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(10))
        .tcp_capacity(1 << 16)
        .build();
    let hosts = NODES + usize::from(joiner.is_some());
    let stores: Vec<Arc<MemoryStore>> = (0..hosts).map(|_| Arc::default()).collect();
    let stops: Vec<Switch> = (0..hosts).map(|_| Switch::default()).collect();
    for (i, store) in stores.iter().enumerate() {
        let host = Host {
            stop: graceful.then(|| stops[i].clone()),
            start: joiner.filter(|_| i == JOINER).cloned(),
            read_repair: read_repair.clone(),
            plant: plant.filter(|p| p.kind.on(i)).cloned(),
            ..Host::plain(Arc::clone(store), fsync)
        };
        add_node(&mut sim, i, host);
    }
    (sim, stores, stops)
}

/// Runs the simulation for `seed`, the nodes syncing as `fsync` says; with
/// `changes`, a node joins, one leaves and one is removed during the
/// faults ([`Plan`]).
fn run(seed: u64, fsync: FsyncPolicy, changes: bool, plant: Option<PlantKind>) -> Run {
    let graceful = graceful_restarts();
    let joiner = changes.then(Switch::default);
    // Off during the workload, the heal and the hint replay: the replica
    // check sees what writes and hints alone left on the replicas.
    let read_repair = Switch::default();
    let plant = plant.map(Plant::new);
    let (mut sim, stores, stops) = cluster(
        seed,
        fsync,
        graceful,
        joiner.as_ref(),
        &read_repair,
        plant.as_ref(),
    );
    let hosts = stores.len();
    let mut clears = Clears::default();
    let step = |sim: &mut turmoil::Sim<'_>, clears: &mut Clears| {
        if let Err(e) = sim.step() {
            panic!("seed {seed}: simulation failed: {e}");
        }
        clears.watch(&stores, sim.elapsed());
    };
    // When the clients and the faults begin. A leave or a remove is of a
    // member: with changes, they begin once the five nodes' first layout
    // has settled (every one a member), which takes longer than WARMUP.
    let (chaos, delay) = if changes {
        let nodes = (0..NODES).collect();
        if let Err(e) = wait_settled(&mut sim, nodes, None, SETTLE_MAX, &mut clears, &step) {
            panic!("seed {seed}: the first layout did not settle: {e}");
        }
        (sim.elapsed(), Duration::ZERO)
    } else {
        (WARMUP, WARMUP)
    };
    let serving = Serving::new(0..NODES);
    let mut rng = Rng::new(seed);
    let history = Arc::new(History::new());
    let (probes, probing_stop): (Rc<RefCell<Vec<Probe>>>, Rc<Cell<bool>>) = Default::default();
    // The nodes the prober asks: every host but, with changes, one that
    // left or was removed.
    let probed = Serving::new(0..hosts);
    {
        let (probes, stop) = (Rc::clone(&probes), Rc::clone(&probing_stop));
        let probed = probed.clone();
        sim.client("links", async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            probe_links(probes, stop, hosts, probed).await;
            Ok(())
        });
    }
    let mut disturbances = Disturbances::new(hosts);
    let mut changes = joiner.map(|joiner| {
        let plan = Plan::draw(seed, chaos);
        let nodes = (serving.clone(), probed.clone());
        Changes::new(plan, joiner, nodes, Rc::clone(&probes), &mut disturbances)
    });
    let done = Rc::new(Cell::new(0usize));
    let increments = Rc::new(Increments::default());
    for id in 0..CLIENTS {
        let (history, done) = (Arc::clone(&history), Rc::clone(&done));
        let (increments, serving) = (Rc::clone(&increments), serving.clone());
        sim.client(format!("client{id}"), async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            workload(id, seed, history, increments, serving).await;
            done.set(done.get() + 1);
            Ok(())
        });
    }
    {
        let (history, done) = (Arc::clone(&history), Rc::clone(&done));
        let serving = serving.clone();
        sim.client("flusher", async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            flusher(seed, history, serving).await;
            done.set(done.get() + 1);
            Ok(())
        });
    }
    let down = |f: &Fault| match f {
        Fault::Crash(i) | Fault::Restart(i) => Some(*i),
        _ => None,
    };
    // Faults while the clients run.
    let mut active: Vec<(Fault, Duration, usize)> = Vec::new();
    let mut next_fault = chaos + rng.millis(200, 800);
    let mut faults = 0;
    // When a node was crashed or shut down, and which.
    let mut downs = Vec::new();
    let mut crashes: Vec<(usize, Duration)> = Vec::new();
    while sim.elapsed() < chaos + CHAOS {
        let now = sim.elapsed();
        let (due, kept): (Vec<_>, Vec<_>) =
            active.into_iter().partition(|(_, until, _)| *until <= now);
        active = kept;
        for (fault, _, index) in &due {
            heal(&mut sim, &stops, fault);
            disturbances.healed(*index, now);
        }
        if let Some(changes) = &mut changes {
            let downed: Vec<usize> = active.iter().filter_map(|(f, _, _)| down(f)).collect();
            changes.drive(&mut sim, seed, &downed, &mut disturbances);
        }
        if now >= next_fault {
            let crashed = active.iter().filter(|(f, _, _)| down(f).is_some()).count()
                + changes.as_ref().map_or(0, Changes::down_for_good);
            let (nodes, crashable) = match &changes {
                Some(changes) => (changes.nodes(now), changes.crashable(now)),
                None => ((0..NODES).collect(), (0..NODES).collect()),
            };
            let fault = pick_fault(&mut rng, &nodes, &crashable, crashed, graceful);
            let busy =
                down(&fault).is_some() && active.iter().any(|(f, _, _)| down(f) == down(&fault));
            if !busy {
                if let Some(i) = down(&fault) {
                    downs.push(now);
                    crashes.push((i, now));
                }
                inject(&mut sim, &stops, &fault);
                let index = disturbances.injected(&fault, now);
                active.push((fault, now + rng.millis(FAULT_MIN_MS, FAULT_MAX_MS), index));
                faults += 1;
            }
            next_fault = now + rng.millis(200, 800);
        }
        step(&mut sim, &mut clears);
    }
    let now = sim.elapsed();
    for (fault, _, index) in &active {
        heal(&mut sim, &stops, fault);
        disturbances.healed(*index, now);
    }
    // One node, the straggler, is crashed as the faults end and stays down
    // until the clients are done: their last writes of the keys it holds,
    // which nothing later supersedes, reach it only as hints, and the
    // replica check sees whether those are delivered. With changes, never
    // the leaver nor the removed node, whose ends are their own.
    let straggler = {
        let mut nodes = match &changes {
            Some(changes) => changes.crashable(now),
            None => (0..NODES).collect(),
        };
        if let Some(changes) = &changes {
            nodes.retain(|&i| i != changes.plan.leaver && i != changes.plan.removed);
        }
        let mut rng = Rng::new(seed ^ 0x5772_6167_676c_6572);
        nodes[rng.below(nodes.len())]
    };
    let straggling = Fault::Crash(straggler);
    inject(&mut sim, &stops, &straggling);
    let straggling_index = disturbances.injected(&straggling, now);
    downs.push(now);
    crashes.push((straggler, now));
    faults += 1;
    // The clients and the flusher finish on a healed cluster (but the
    // straggler), and the workload is judged on the state they left; a
    // change a fault put off begins now, and its LEAVE or REMOVE is
    // answered.
    while done.get() < CLIENTS + 1
        || changes
            .as_ref()
            .is_some_and(|c| !c.begun() || !c.answered())
    {
        if let Some(changes) = &mut changes {
            changes.drive(&mut sim, seed, &[straggler], &mut disturbances);
        }
        step(&mut sim, &mut clears);
    }
    let clients_done = sim.elapsed();
    heal(&mut sim, &stops, &straggling);
    disturbances.healed(straggling_index, clients_done);
    // With changes: the members that remain must settle, the leaver must
    // have stopped with its data dropped, and only the remaining members
    // are read and judged from here on.
    let mut members: Vec<usize> = (0..NODES).collect();
    if let Some(changes) = &mut changes {
        for reply in [&changes.leave_reply, &changes.remove_reply] {
            if let Some(Err(e)) = &*reply.borrow() {
                changes.problems.push(e.clone());
            }
        }
        members = changes.plan.remaining();
        let gone = changes.removed_id.borrow().clone();
        match wait_settled(
            &mut sim,
            members.clone(),
            gone,
            SETTLE_MAX,
            &mut clears,
            &step,
        ) {
            Ok(()) => changes.settled = Some(sim.elapsed()),
            Err(e) => changes.problems.push(e),
        }
        // It stops once the settle reached it and a grace passed.
        let leaver = changes.plan.leaver;
        let until = sim.elapsed() + SETTLE_MAX;
        while changes.left.is_none() && sim.elapsed() < until {
            step(&mut sim, &mut clears);
            changes.note_left(&mut sim);
        }
        if changes.left.is_none() {
            changes.problems.push(format!(
                "n{leaver} still runs {SETTLE_MAX:?} after the layout settled"
            ));
        } else if let Ok(held) = stores[leaver].scan(Space::Data, b"", None, 1)
            && !held.is_empty()
        {
            changes
                .problems
                .push(format!("n{leaver} left, but its store still holds data"));
        }
        serving.0.replace(members.clone());
    }
    // The links are checked until a probe past this bound; the epilogue's
    // own fault leaves the links of its nodes unchecked (the bound after
    // it would add LINK_REPAIR_MAX of simulated time to every run).
    let settled_at = disturbances.last_heal() + LINK_REPAIR_MAX;
    let workload_ops = history.ops();
    // The node removed is gone for good from its crash on, as if its
    // store were cleared then: a write acknowledged by it and one node a
    // FLUSHALL cleared afterwards (one that failed, reaching a few nodes)
    // may be gone from every member, and the checker must see both.
    let lost_for_good: Vec<(usize, Duration)> = changes
        .iter()
        .filter_map(|c| Some((c.plan.removed, c.removed_at?)))
        .collect();
    crashes.extend(&lost_for_good);
    let timing = |clears: &Clears| Timing {
        late: Some(LATE),
        clears: Some(ClearsSeen {
            at: clears.seen.iter().chain(&lost_for_good).copied().collect(),
            write_quorum: W,
        }),
    };
    // The replica check, before any read could repair: once no write's
    // tail can still hand a copy to a fallback (LATE after the last
    // operation) and every hint was replayed, each replica's own store.
    let mut replica_problems = Vec::new();
    let workload_end = workload_ops.iter().map(|op| op.completed).max();
    let quiet = workload_end.unwrap_or_default() + LATE;
    // The replicas hold what the layout gives them only once it settled:
    // the joins' handoff may still be under way, or have waited for the
    // straggler (a run with changes waited for this above).
    if changes.is_none()
        && let Err(e) = wait_settled(
            &mut sim,
            members.clone(),
            None,
            SETTLE_MAX,
            &mut clears,
            &step,
        )
    {
        replica_problems.push(e);
    }
    let replicas = Replicas::new(&stores, &members, &probes.borrow());
    if let Err(e) = wait_replay(&mut sim, &stores, &replicas, quiet, &mut clears, &step) {
        replica_problems.push(e);
    }
    let hints_ms = (sim.elapsed() - clients_done).as_millis() as u64;
    let now_ms = EPOCH_MS + sim.elapsed().as_millis() as u64;
    let replica_fin = replicas.states(&stores, now_ms);
    let crashed = |op: &Op, holding: &[usize]| replicas.crash_may_explain(&crashes, op, holding);
    let gaps = history::Gaps {
        held_min: W,
        crashed: &crashed,
    };
    let replica_report =
        history::check_replicas(&workload_ops, &replica_fin, &timing(&clears), &gaps);
    let replica_ranks = replicas.legend();
    let layout_settled_ms = replicas.other_layouts_until.as_millis() as u64;
    // From here on the stores are sound again and reads repair: the final
    // reads need it for writes that failed after reaching one replica.
    if let Some(plant) = &plant {
        plant.armed.store(false, Ordering::Relaxed);
    }
    read_repair.set(true);
    if let Err(e) = set_read_repair(&mut sim, &members, &mut clears, &step) {
        replica_problems.push(e);
    }
    let fin = final_state(&mut sim, &stores, &members, &mut clears, &step);
    let report = history::check_with(&workload_ops, &fin, &timing(&clears));
    let flush_sequences = flush_sequences(&workload_ops, &downs);
    // The epilogue, once every copy the workload and those reads sent has
    // landed: FLUSHALL, writes, one to three of their replicas crashed or
    // shut down, reads; judged on the state it leaves.
    let quiet = sim.elapsed() + LATE;
    while sim.elapsed() < quiet {
        step(&mut sim, &mut clears);
    }
    let (written, restarted): (Written, Rc<Cell<bool>>) = Default::default();
    {
        let (history, increments) = (Arc::clone(&history), Rc::clone(&increments));
        let (written, restarted) = (Rc::clone(&written), Rc::clone(&restarted));
        let (done, serving) = (Rc::clone(&done), serving.clone());
        sim.client("epilogue", async move {
            epilogue(seed, history, increments, written, restarted, serving).await;
            done.set(done.get() + 1);
            Ok(())
        });
    }
    while written.borrow().is_none() {
        step(&mut sim, &mut clears);
    }
    let first = written.borrow().iter().flatten().next().cloned();
    let mut victims = first.map_or_else(Vec::new, |key| holders(&stores, &members, &key));
    // One, two or all of its replicas at once: with all of them down, only
    // what they kept across the stop can bring the key back.
    victims.truncate(1 + rng.below(N));
    let shutdown = graceful && rng.chance(50);
    let epilogue_fault = format!("{}{victims:?}", if shutdown { "restart" } else { "crash" });
    let mut down = Vec::new();
    for &i in &victims {
        let fault = if shutdown {
            Fault::Restart(i)
        } else {
            Fault::Crash(i)
        };
        inject(&mut sim, &stops, &fault);
        let index = disturbances.injected(&fault, sim.elapsed());
        down.push((fault, index));
        faults += 1;
    }
    let up_at = sim.elapsed() + rng.millis(FAULT_MIN_MS, FAULT_MAX_MS / 2);
    while sim.elapsed() < up_at {
        step(&mut sim, &mut clears);
    }
    for (fault, index) in &down {
        heal(&mut sim, &stops, fault);
        disturbances.healed(*index, sim.elapsed());
    }
    restarted.set(true);
    while done.get() < CLIENTS + 2 {
        step(&mut sim, &mut clears);
    }
    let epilogue_fin = final_state(&mut sim, &stores, &members, &mut clears, &step);
    let ops = history.ops();
    let epilogue_report = history::check_with(&ops, &epilogue_fin, &timing(&clears));
    // Links: run on until a probe round that began past the bound after
    // the last heal of the faults while the clients ran has finished.
    while !probes.borrow().iter().any(|p| p.at >= settled_at) {
        step(&mut sim, &mut clears);
    }
    probing_stop.set(true);
    let (mut links, link_checks) = link_problems(&probes.borrow(), &disturbances);
    if let Some(last) = probes.borrow().iter().rev().find(|p| p.at >= settled_at)
        && let Some(silent) = members.iter().find(|&&i| last.up[i].is_none())
    {
        links.push(format!(
            "at {:?}: n{silent} did not answer DYNAMO MEMBERS after every fault healed",
            last.at
        ));
    }
    // At the very end, after the epilogue's stops: still the same settled
    // members, and the removed id nowhere.
    if let Some(changes) = &mut changes {
        let gone = changes.removed_id.borrow().clone();
        let again = wait_settled(
            &mut sim,
            members.clone(),
            gone,
            SETTLED_RECHECK_MAX,
            &mut clears,
            &step,
        );
        if let Err(e) = again {
            changes.problems.push(format!("at the end: {e}"));
        }
    }
    let spans = changes
        .as_ref()
        .map_or_else(|| always(hosts), Changes::spans);
    Run {
        replica_report,
        replica_ranks,
        layout_settled_ms,
        replica_problems,
        hints_ms,
        plant_dropped: plant.map(|p| p.dropped.load(Ordering::Relaxed)),
        flush_problems: flush_problems(&ops, &clears.seen, &spans),
        clears: clears.seen.len(),
        ops,
        report,
        epilogue_report,
        faults,
        sim_ms: sim.elapsed().as_millis() as u64,
        links,
        link_checks,
        epilogue: epilogue_fault,
        flush_sequences,
        changes,
    }
}

/// How many acknowledged FLUSHALLs of `ops` were followed by an
/// acknowledged write, then a node crashed or shut down (at one of
/// `downs`), then an acknowledged read or increment.
fn flush_sequences(ops: &[Op], downs: &[Duration]) -> usize {
    let acked_read = |op: &&Op| matches!(op.outcome, Outcome::Read { .. } | Outcome::Counted(_));
    ops.iter()
        .filter(|f| f.call == Call::FlushAll && f.outcome.is_ok())
        .filter(|f| {
            ops.iter()
                .filter(|w| w.call.is_write() && w.outcome.is_ok() && w.invoked > f.completed)
                .any(|w| {
                    downs.iter().any(|&down| {
                        down > w.completed
                            && ops.iter().filter(acked_read).any(|r| r.invoked > down)
                    })
                })
        })
        .count()
}

/// Reads every key through every node of `members` until they agree
/// ([`final_reads`]), stepping `sim` meanwhile.
fn final_state(
    sim: &mut turmoil::Sim<'_>,
    stores: &[Arc<MemoryStore>],
    members: &[usize],
    clears: &mut Clears,
    step: &impl Fn(&mut turmoil::Sim<'_>, &mut Clears),
) -> Final {
    let slot: Rc<RefCell<Option<Final>>> = Rc::default();
    {
        let (history, slot) = (Arc::new(History::new()), Rc::clone(&slot));
        let (stores, members) = (stores.to_vec(), members.to_vec());
        sim.client(
            format!("checker{}", sim.elapsed().as_millis()),
            async move {
                let fin = final_reads(history, stores, members).await;
                *slot.borrow_mut() = Some(fin);
                Ok(())
            },
        );
    }
    while slot.borrow().is_none() {
        step(sim, clears);
    }
    slot.take().unwrap_or_default()
}

/// The command that replays `seed` (a run with membership changes if
/// `changes`, with a planted bug if `plant`).
fn replay_command(seed: u64, changes: bool, plant: Option<PlantKind>) -> String {
    let changes = if changes { "DYNOKV_SIM_CHANGES=1 " } else { "" };
    let plant = plant.map_or(String::new(), |p| format!("DYNOKV_SIM_PLANT={} ", p.name()));
    format!(
        "{changes}{plant}DYNOKV_SIM_SEED={seed} cargo test --test sim replay -- --exact \
         --nocapture"
    )
}

/// Whether this process runs a seed with membership changes
/// (`DYNOKV_SIM_CHANGES=1`).
fn with_changes() -> bool {
    std::env::var("DYNOKV_SIM_CHANGES").as_deref() == Ok("1")
}

/// Simulated time in the log lines of [`log_nodes`].
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let at = turmoil::sim_elapsed().unwrap_or_default();
        write!(w, "{:>9.3}s", at.as_secs_f64())
    }
}

/// `DYNOKV_SIM_LOG=<filter>` (as `RUST_LOG`, e.g. `info` or
/// `dynokv=debug`): the nodes' log on the test's output, each line with
/// its simulated time and its host (turmoil's `node` span).
fn log_nodes() {
    let Ok(filter) = std::env::var("DYNOKV_SIM_LOG") else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_timer(SimTime)
        .with_ansi(false)
        .with_test_writer()
        .try_init();
}

/// `DYNOKV_SIM_SEED=<seed>`: runs that one seed in this process, prints
/// every operation and the checker's line, fails if the checker does;
/// with `DYNOKV_SIM_CHANGES=1` the run with membership changes
/// (`joins_leaves_and_removes_under_faults`), with `DYNOKV_SIM_LOG` the
/// nodes' log ([`log_nodes`]).
/// The other tests run each seed through this, in a process of its own:
/// tokio numbers tasks process-wide and a crashed host's tasks are dropped
/// in an order that depends on those numbers, so two simulations sharing
/// a process could disturb each other's replay.
#[test]
fn replay() {
    let Some(seed) = env_u64("DYNOKV_SIM_SEED") else {
        return;
    };
    // Only `fsync_no_loses_writes_and_the_checker_sees_it` asks for
    // another policy than the nodes' promise of durable acknowledgements.
    let fsync = match std::env::var("DYNOKV_SIM_FSYNC").as_deref() {
        Ok("no") => FsyncPolicy::No,
        _ => FsyncPolicy::Always,
    };
    log_nodes();
    let changes = with_changes();
    let plant = PlantKind::from_env();
    let run = run(seed, fsync, changes, plant);
    for op in &run.ops {
        println!("{op:?}");
    }
    let (change_line, change_problems) = run
        .changes
        .as_ref()
        .map(|c| (format!(" {}", c.line()), c.problems.clone()))
        .unwrap_or_default();
    let epilogue = &run.epilogue_report;
    let replicas = &run.replica_report;
    let plant_line = match (plant, run.plant_dropped) {
        (Some(kind), Some(dropped)) => format!(" plant={} plant_dropped={dropped}", kind.name()),
        _ => String::new(),
    };
    println!(
        "sim seed={seed} faults={} sim_ms={} link_checks={} link_problems={} clears={} \
         flush_problems={} flush_sequences={} layout_settled_ms={} hints_ms={} replica_lost={} \
         replica_incr_lost={} \
         replica_resurrected={} replica_phantoms={} replica_stale={} crash_gaps={} \
         clear_gaps={} replica_problems={} {} epilogue={} epilogue_flushes={} \
         epilogue_flushes_acked={} \
         epilogue_lost={} epilogue_incr_lost={} epilogue_phantoms={} epilogue_resurrected={} \
         epilogue_stale_after_flush={} epilogue_converged={} epilogue_converge_ms={}{change_line}\
         {plant_line}",
        run.faults,
        run.sim_ms,
        run.link_checks,
        run.links.len(),
        run.clears,
        run.flush_problems.len(),
        run.flush_sequences,
        run.layout_settled_ms,
        run.hints_ms,
        replicas.lost,
        replicas.incr_lost,
        replicas.resurrected,
        replicas.phantoms + replicas.incr_phantoms,
        replicas.stale_after_flush,
        replicas.crash_gaps,
        replicas.clear_gaps,
        run.replica_problems.len(),
        run.report,
        run.epilogue,
        epilogue.flushes - run.report.flushes,
        epilogue.flushes_acked - run.report.flushes_acked,
        epilogue.lost,
        epilogue.incr_lost,
        epilogue.phantoms,
        epilogue.resurrected,
        epilogue.stale_after_flush,
        epilogue.converged,
        epilogue.converge_ms,
    );
    let epilogue_problems = epilogue.problems.iter().map(|p| format!("epilogue: {p}"));
    let membership_problems = change_problems.iter().map(|p| format!("membership: {p}"));
    let replica_problems = (replicas.problems.iter())
        .chain(&run.replica_problems)
        .map(|p| format!("replicas: {p}"));
    let gaps = replicas
        .gaps
        .iter()
        .map(|g| format!("replicas, excused: {g}"));
    if !replicas.problems.is_empty() || !replicas.gaps.is_empty() {
        println!(
            "  replicas by rank (the replica check's \"nodes\"): {}",
            run.replica_ranks
        );
    }
    let problems = run.report.problems.iter().chain(&run.links);
    for problem in problems
        .chain(&run.flush_problems)
        .cloned()
        .chain(epilogue_problems)
        .chain(membership_problems)
        .chain(replica_problems)
        .chain(gaps)
    {
        println!("  {problem}");
    }
    assert!(
        run.report.is_clean()
            && epilogue.is_clean()
            && replicas.is_clean()
            && run.replica_problems.is_empty()
            && run.links.is_empty()
            && run.flush_problems.is_empty()
            && change_problems.is_empty(),
        "seed {seed} failed: {} epilogue: {} replicas: {} replica problems: {} link problems: \
         {} flush problems: {} membership problems: {}\nreplay: {}",
        run.report,
        epilogue,
        replicas,
        run.replica_problems.len(),
        run.links.len(),
        run.flush_problems.len(),
        change_problems.len(),
        replay_command(seed, changes, plant)
    );
}

/// A seed run in its own process (see [`replay`]).
struct Child {
    seed: u64,
    passed: bool,
    /// Every operation, as printed.
    ops: Vec<String>,
    /// The checker's line.
    line: String,
    output: String,
}

impl Child {
    /// A number from the checker's line (`name=<n>`).
    fn field(&self, name: &str) -> u64 {
        self.line
            .split_whitespace()
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// A seed's process may run this long (debug build, loaded machine).
const CHILD_MAX: Duration = Duration::from_secs(300);

fn run_child(seed: u64) -> Child {
    run_child_with(seed, FsyncPolicy::Always, false, None)
}

/// `seed` in a process of its own, syncing as `fsync` says, with
/// membership changes if `changes`, with `plant` planted.
fn run_child_with(seed: u64, fsync: FsyncPolicy, changes: bool, plant: Option<PlantKind>) -> Child {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("own test binary: {e}"));
    let mut child = std::process::Command::new(exe)
        .args(["replay", "--exact", "--nocapture", "--test-threads=1"])
        .env("DYNOKV_SIM_SEED", seed.to_string())
        .env("DYNOKV_SIM_FSYNC", fsync.as_str())
        .env("DYNOKV_SIM_CHANGES", if changes { "1" } else { "0" })
        .env("DYNOKV_SIM_PLANT", plant.map_or("none", PlantKind::name))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start seed {seed}: {e}"));
    // Drain both pipes on threads so a chatty child never blocks.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + CHILD_MAX;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let (stdout, stderr) = (
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("sim seed="))
        .unwrap_or("")
        .to_owned();
    Child {
        seed,
        passed: status.is_some_and(|s| s.success()) && !line.is_empty(),
        ops: stdout
            .lines()
            .filter(|l| l.starts_with("Op {"))
            .map(str::to_owned)
            .collect(),
        line,
        output: format!("{stdout}\n{stderr}"),
    }
}

/// Runs `seeds`, each in its own process, `workers` at a time, with
/// membership changes if `changes`, printing one line each and a summary;
/// fails listing every seed that failed and how to replay it.
fn run_seeds(seeds: Vec<u64>, workers: usize, changes: bool) {
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let children = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| {
                while let Some(&seed) =
                    seeds.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    let child = run_child_with(seed, FsyncPolicy::Always, changes, None);
                    if child.passed {
                        println!("{}", child.line);
                    } else {
                        let tail: Vec<&str> = child.output.lines().rev().take(40).collect();
                        eprintln!("seed {seed} FAILED:");
                        for line in tail.iter().rev() {
                            eprintln!("  {line}");
                        }
                    }
                    children
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(child);
                }
            });
        }
    });
    let children = children
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let sum = |name: &str| children.iter().map(|c| c.field(name)).sum::<u64>();
    let (runs, ops, acked, sim_ms, faults) = (
        children.len() as u64,
        sum("ops"),
        sum("acknowledged"),
        sum("sim_ms"),
        sum("faults"),
    );
    let most = |name: &str| children.iter().map(|c| c.field(name)).max().unwrap_or(0);
    let siblings = most("max_siblings");
    let mut converge_ms: Vec<u64> = children.iter().map(|c| c.field("converge_ms")).collect();
    converge_ms.sort_unstable();
    let mut hints_ms: Vec<u64> = children.iter().map(|c| c.field("hints_ms")).collect();
    hints_ms.sort_unstable();
    let mut settled_ms: Vec<u64> = children
        .iter()
        .map(|c| c.field("layout_settled_ms"))
        .collect();
    settled_ms.sort_unstable();
    let mut failed: Vec<u64> = children
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.seed)
        .collect();
    failed.sort_unstable();
    let wall = started.elapsed().as_secs_f64();
    // Hosts: the joiner too, in runs with membership changes.
    let nodes = NODES + usize::from(changes);
    println!(
        "sim summary: seeds={runs} nodes={nodes} clients={CLIENTS} faults={faults} ops={ops} \
         acknowledged={acked} ({:.1}%) converge_ms(median/max)={}/{} max_siblings={siblings} \
         simulated={:.0}s wall={wall:.1}s seeds/min={:.1} simulated-nodes*seeds/min={:.0} \
         client-ops/s={:.0} incrs={} incrs_acked={} execs_acked={}/{} execs_aborted={} \
         incr_lost={} incr_phantoms={} counter_siblings(max)={} flushes={} flushes_acked={} \
         clears={} flushed={} incr_flushed={} stale_after_flush={} revived_across_flush={} \
         lost={} phantoms={} resurrected={} flush_sequences={} (in {} seeds) \
         epilogue_flushes={} epilogue_flushes_acked={} epilogue_lost={} epilogue_incr_lost={} \
         epilogue_stale_after_flush={} epilogue_resurrected={} epilogues_converged={} \
         replica_lost={} replica_incr_lost={} replica_resurrected={} replica_phantoms={} \
         replica_stale={} replica_problems={} crash_gaps={} (in {} seeds) clear_gaps={} \
         hints_ms(median/max)={}/{} layout_settled_ms(median/max)={}/{}",
        100.0 * acked as f64 / ops.max(1) as f64,
        converge_ms.get(converge_ms.len() / 2).copied().unwrap_or(0),
        converge_ms.last().copied().unwrap_or(0),
        sim_ms as f64 / 1000.0,
        runs as f64 * 60.0 / wall,
        (runs * nodes as u64) as f64 * 60.0 / wall,
        ops as f64 / wall,
        sum("incrs"),
        sum("incrs_acked"),
        sum("execs_acked"),
        sum("execs"),
        sum("execs_aborted"),
        sum("incr_lost"),
        sum("incr_phantoms"),
        most("counter_siblings"),
        sum("flushes"),
        sum("flushes_acked"),
        sum("clears"),
        sum("flushed"),
        sum("incr_flushed"),
        sum("stale_after_flush"),
        sum("revived_across_flush"),
        sum("lost"),
        sum("phantoms"),
        sum("resurrected"),
        sum("flush_sequences"),
        children
            .iter()
            .filter(|c| c.field("flush_sequences") > 0)
            .count(),
        sum("epilogue_flushes"),
        sum("epilogue_flushes_acked"),
        sum("epilogue_lost"),
        sum("epilogue_incr_lost"),
        sum("epilogue_stale_after_flush"),
        sum("epilogue_resurrected"),
        children
            .iter()
            .filter(|c| c.line.contains("epilogue_converged=true"))
            .count(),
        sum("replica_lost"),
        sum("replica_incr_lost"),
        sum("replica_resurrected"),
        sum("replica_phantoms"),
        sum("replica_stale"),
        sum("replica_problems"),
        sum("crash_gaps"),
        children
            .iter()
            .filter(|c| c.field("crash_gaps") > 0)
            .count(),
        sum("clear_gaps"),
        hints_ms.get(hints_ms.len() / 2).copied().unwrap_or(0),
        hints_ms.last().copied().unwrap_or(0),
        settled_ms.get(settled_ms.len() / 2).copied().unwrap_or(0),
        settled_ms.last().copied().unwrap_or(0),
    );
    let replays: Vec<String> = failed
        .iter()
        .map(|&s| replay_command(s, changes, None))
        .collect();
    assert!(
        failed.is_empty(),
        "seeds failed: {failed:?}\n{}",
        replays.join("\n")
    );
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn shard(k: u64) {
    if env_u64("DYNOKV_SIM_SEED").is_some() {
        return; // this process is one seed's run
    }
    run_seeds((0..SEEDS).filter(|s| s % SHARDS == k).collect(), 1, false);
}

#[test]
fn seeds_shard_0() {
    shard(0);
}

#[test]
fn seeds_shard_1() {
    shard(1);
}

#[test]
fn seeds_shard_2() {
    shard(2);
}

#[test]
fn seeds_shard_3() {
    shard(3);
}

// Proves membership changes under the faults lose nothing: in each seed
// a sixth node joins, a member leaves (and its process ends cleanly) and
// another is crashed for good and removed, while the clients and the
// faults go on; the remaining members settle, every key ends on exactly N
// of them, and the history checker finds nothing lost (see the module
// docs).
#[test]
fn joins_leaves_and_removes_under_faults() {
    if env_u64("DYNOKV_SIM_SEED").is_some() {
        return;
    }
    let seeds = (0..CHANGE_SEEDS).filter(|s| !REMOVE_CRASH_SEEDS.contains(s));
    run_seeds(seeds.collect(), 1, true);
}

// Proves an acknowledged `DYNAMO REMOVE` survives a crash of the node
// that took it: in each of these seeds a crash fault hits that node soon
// after it answered OK. Before the fix it came back with the layout it had
// saved before, no node ever learned the remove, the dead node stayed a
// member (listed `down`) and the layout never settled.
#[test]
fn an_acknowledged_remove_survives_a_crash_of_the_node_that_took_it() {
    if env_u64("DYNOKV_SIM_SEED").is_some() {
        return;
    }
    run_seeds(REMOVE_CRASH_SEEDS.to_vec(), 1, true);
}

/// `DYNOKV_SIM_RUNS=<k>`: k seeds from `DYNOKV_SIM_FIRST` (soak; with
/// `DYNOKV_SIM_CHANGES=1`, runs with membership changes).
#[test]
fn soak() {
    let (Some(runs), None) = (env_u64("DYNOKV_SIM_RUNS"), env_u64("DYNOKV_SIM_SEED")) else {
        return;
    };
    let first = env_u64("DYNOKV_SIM_FIRST").unwrap_or(0);
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    run_seeds((first..first + runs).collect(), workers, with_changes());
}

/// The same seed twice gives the same run, operation for operation; another
/// seed another run.
#[test]
fn a_seed_replays_exactly() {
    if env_u64("DYNOKV_SIM_SEED").is_some() || graceful_restarts() {
        return; // a seed's run, or graceful shutdowns, which do not replay
    }
    let (a, b, c) = (run_child(7), run_child(7), run_child(8));
    assert!(a.passed && b.passed && c.passed, "{}", a.output);
    assert!(
        a.ops.len() > 50,
        "too few operations to compare: {}",
        a.ops.len()
    );
    if let Some(i) = (0..a.ops.len().min(b.ops.len())).find(|&i| a.ops[i] != b.ops[i]) {
        panic!(
            "seed 7 ran differently twice, first at op {i}:\n{}\n{}",
            a.ops[i], b.ops[i]
        );
    }
    assert_eq!(a.ops.len(), b.ops.len(), "seed 7 ran differently twice");
    assert_eq!(a.line, b.line);
    assert_ne!(a.ops, c.ops, "seeds 7 and 8 ran the same");
}

/// The bed can fail: with `--fsync no` a crash loses what a node
/// acknowledged (the memory store keeps only what was synced), and over
/// a few seeds the checker must report lost writes and lost increments.
/// With `--fsync always` the same seeds lose nothing (`seeds_shard_*`).
#[test]
fn fsync_no_loses_writes_and_the_checker_sees_it() {
    if env_u64("DYNOKV_SIM_SEED").is_some() {
        return;
    }
    let children: Vec<Child> = (0..NO_SYNC_SEEDS)
        .map(|seed| run_child_with(seed, FsyncPolicy::No, false, None))
        .collect();
    // Lost by the workload, or by the epilogue's writes after its FLUSHALL.
    let lost_in = |c: &Child| c.field("lost") + c.field("epilogue_lost");
    let incr_lost_in = |c: &Child| c.field("incr_lost") + c.field("epilogue_incr_lost");
    let lost: u64 = children.iter().map(lost_in).sum();
    let incr_lost: u64 = children.iter().map(incr_lost_in).sum();
    let failed: Vec<u64> = children
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.seed)
        .collect();
    println!(
        "fsync no: {NO_SYNC_SEEDS} seeds, lost={lost}, incr_lost={incr_lost}, failed seeds \
         {failed:?}"
    );
    assert!(
        lost > 0,
        "no seed lost a write under --fsync no: the bed cannot see loss"
    );
    assert!(
        incr_lost > 0,
        "no seed lost an increment under --fsync no: the counter check cannot see loss"
    );
    // A node that lost unsynced writes in a crash mints their dots again
    // for other values, and replicas holding one dot with two values never
    // agree: under --fsync no, replicas that never converged are a loss
    // the checker saw too (the dot id is not renewed at an unclean start
    // yet: issue 22's "no key amnesia").
    let diverged = |c: &Child| {
        c.line
            .split_whitespace()
            .any(|f| f == "converged=false" || f == "epilogue_converged=false")
    };
    // The replica check sees the same losses on the replicas (and a write
    // the crash took from one replica while others kept it).
    let replica_lost_in = |c: &Child| {
        c.field("replica_lost") + c.field("replica_incr_lost") + c.field("replica_resurrected")
    };
    assert!(
        children.iter().all(|c| c.passed
            == (lost_in(c) + incr_lost_in(c) + replica_lost_in(c) == 0 && !diverged(c))),
        "a seed failed without reporting a lost write or increment or replicas that diverged"
    );
}

/// Runs [`PLANT_SEEDS`] seeds with `kind` planted and asserts that the
/// replica check reports a loss in one of them at least, and that every
/// seed fails by the replica check alone: the judgement of the final
/// reads (read repair back on) finds nothing wrong, as without the plant
/// (the same seeds pass in `seeds_shard_*`).
fn the_replica_check_sees(kind: PlantKind) {
    let children: Vec<Child> = (0..PLANT_SEEDS)
        .map(|seed| run_child_with(seed, FsyncPolicy::Always, false, Some(kind)))
        .collect();
    let sum = |c: &Child, fields: &[&str]| fields.iter().map(|f| c.field(f)).sum::<u64>();
    let seen = |c: &Child| {
        sum(
            c,
            &["replica_lost", "replica_incr_lost", "replica_resurrected"],
        )
    };
    let judged_otherwise = |c: &Child| {
        let must_be_zero = [
            "lost",
            "incr_lost",
            "phantoms",
            "incr_phantoms",
            "resurrected",
            "stale_after_flush",
            "epilogue_lost",
            "epilogue_incr_lost",
            "epilogue_phantoms",
            "epilogue_resurrected",
            "epilogue_stale_after_flush",
            "link_problems",
            "flush_problems",
            "replica_problems",
        ];
        sum(c, &must_be_zero)
            + u64::from(!c.line.contains(" converged=true"))
            + u64::from(!c.line.contains("epilogue_converged=true"))
    };
    for c in &children {
        println!("{}", c.line);
    }
    let failed: Vec<u64> = children
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.seed)
        .collect();
    println!(
        "plant {}: {PLANT_SEEDS} seeds, failed {failed:?}, replica_lost={} replica_incr_lost={} \
         replica_resurrected={}, the final reads' judgement: lost={} incr_lost={} resurrected={}",
        kind.name(),
        children
            .iter()
            .map(|c| c.field("replica_lost"))
            .sum::<u64>(),
        children
            .iter()
            .map(|c| c.field("replica_incr_lost"))
            .sum::<u64>(),
        children
            .iter()
            .map(|c| c.field("replica_resurrected"))
            .sum::<u64>(),
        children.iter().map(|c| c.field("lost")).sum::<u64>(),
        children.iter().map(|c| c.field("incr_lost")).sum::<u64>(),
        children.iter().map(|c| c.field("resurrected")).sum::<u64>(),
    );
    assert!(
        children.iter().any(|c| seen(c) > 0),
        "no seed's replica check saw the planted {}",
        kind.name()
    );
    for c in &children {
        assert!(
            !c.line.is_empty() && judged_otherwise(c) == 0,
            "seed {} failed otherwise than by the replica check:\n{}",
            c.seed,
            c.output
        );
        assert_eq!(c.passed, seen(c) == 0, "seed {}: {}", c.seed, c.line);
    }
}

/// A replica that acknowledges a replicated write without storing it
/// (one in [`PLANTED_DROP_EVERY`], on [`PLANTED_NODE`]) is seen by the
/// replica check, not by the final reads, which merge and repair it.
#[test]
fn a_replica_that_acks_without_storing_is_seen_by_the_replica_check() {
    if env_u64("DYNOKV_SIM_SEED").is_some() {
        return;
    }
    the_replica_check_sees(PlantKind::UnstoredReplication);
}

/// Hints a fallback acknowledges and never keeps (every node drops its
/// hint records) are seen by the replica check, not by the final reads.
#[test]
fn a_hint_never_delivered_is_seen_by_the_replica_check() {
    if env_u64("DYNOKV_SIM_SEED").is_some() {
        return;
    }
    the_replica_check_sees(PlantKind::LostHints);
}

/// The known limit docs/semantics.md states for FLUSHALL, as a test of
/// what should hold: a write acknowledged before an acknowledged FLUSHALL
/// stays cleared. It does not yet (ignored; `cargo test --test sim --
/// --ignored` shows it): a copy of the write still on its way to a
/// replica when the FLUSHALL cleared that replica lands afterwards, and
/// reads bring the value back everywhere. Key `k` is written through one
/// of its replicas while that replica's link to the third is held, so the
/// write is acknowledged by two replicas and the third's copy waits on
/// the link; FLUSHALL through the second replica reaches every node and is
/// acknowledged; then the link is released, and `k` is read.
#[test]
#[ignore = "known limit: a copy in flight outlives an acknowledged FLUSHALL (docs/semantics.md)"]
fn an_acknowledged_flushall_fences_out_copies_in_flight() {
    if env_u64("DYNOKV_SIM_SEED").is_some() {
        return;
    }
    let (mut sim, stores, _stops) =
        cluster(1, FsyncPolicy::Always, false, None, &Switch::on(), None);
    let history = Arc::new(History::new());
    /// What the scenario saw: `k`'s replicas, the write's and the
    /// FLUSHALL's outcomes, and the values read after.
    struct Seen {
        replicas: Vec<usize>,
        written: Outcome,
        flushed: Outcome,
        after: Vec<String>,
    }
    let found: Rc<RefCell<Option<Seen>>> = Rc::default();
    {
        let (history, found) = (Arc::clone(&history), Rc::clone(&found));
        sim.client("scenario", async move {
            tokio::time::sleep(WARMUP).await;
            let mut client = SimClient::new(0, 0, history);
            client.timeout = FLUSH_TIMEOUT;
            let first = client.vget("k", None).await.unwrap_or_default();
            client.vset("k", &first, "k-first".into()).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let members: Vec<usize> = (0..NODES).collect();
            let replicas = holders(&stores, &members, "k");
            let [a, b, c] = replicas[..] else {
                panic!("k is on {replicas:?}");
            };
            // a coordinates (a blind write is coordinated by the replica it
            // reaches); its copy to c waits on the held link.
            turmoil::hold(node_name(a), node_name(c));
            client.switch(a);
            let read = client.vget("k", None).await.unwrap_or_default();
            let written = client.vset("k", &read, "k-before-flush".into()).await;
            client.switch(b);
            let flushed = client.flushall().await;
            turmoil::release(node_name(a), node_name(c));
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = client.vget("k", Some(N)).await.unwrap_or_default();
            *found.borrow_mut() = Some(Seen {
                replicas,
                written,
                flushed,
                after: after.1,
            });
            Ok(())
        });
    }
    while found.borrow().is_none() {
        if let Err(e) = sim.step() {
            panic!("simulation failed: {e}");
        }
    }
    let Some(Seen {
        replicas,
        written,
        flushed,
        after,
    }) = found.take()
    else {
        unreachable!("the loop ends once the scenario reported");
    };
    for op in history.ops() {
        println!("{op:?}");
    }
    assert!(
        written.is_ok(),
        "the write was not acknowledged: {written:?}"
    );
    assert_eq!(flushed, Outcome::Done, "FLUSHALL was not acknowledged");
    assert!(
        after.is_empty(),
        "replicas {replicas:?}: the value written before the acknowledged FLUSHALL came back: \
         {after:?}"
    );
}

// ---------------------------------------------------------------------
// The failure detector on a quiet cluster: no false down marks.

/// Nodes of a detector run.
const QUIET_NODES: usize = 3;
/// Simulated time a detector run lasts before the nodes are asked.
const QUIET_RUN: Duration = Duration::from_secs(20);
/// Most message latency in a detector run (the least is 1 ms): up to
/// 200 ms of jitter on every message, heartbeats included.
const JITTER_MAX: Duration = Duration::from_millis(200);
/// A lost TCP segment is sent again after the retransmission timeout
/// (200 ms or more on Linux), and the segments behind it wait: on a link
/// with 1% loss (issue 20) carrying at most 10 messages a second each way
/// (heartbeats, gossip, probes: fewer in a quiet run), that is a stall of
/// [`LOSS_STALL_MS`] about every [`LOSS_EVERY`] per link. turmoil's own
/// message loss drops a TCP message for good (a broken stream, not a
/// loss), so the runs model loss as these stalls.
const LOSS_EVERY: Duration = Duration::from_secs(10);
/// How long a loss stalls a link: one retransmission timeout, 200-400 ms.
const LOSS_STALL_MS: (u64, u64) = (200, 400);
/// How long one node is cut off in each detector run (every link to it
/// held, then released in a burst): a 1 s pause, as a stalled process or
/// a stop-the-world collection would make.
const PAUSE: Duration = Duration::from_secs(1);
/// A pause the detector must call a death: the run that proves the
/// test can fail.
const LONG_PAUSE: Duration = Duration::from_secs(4);

/// Runs `seed` on a quiet cluster whose messages take 1-200 ms, one
/// node cut off for `pause` at a random time; returns each node's
/// `failure_detections` (down marks since it started) after the run.
fn detections(seed: u64, pause: Duration) -> Vec<u64> {
    dynokv::random::seed_thread(seed);
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .simulation_duration(QUIET_RUN + CONVERGE_MAX)
        .tick_duration(TICK)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(JITTER_MAX)
        .tcp_capacity(1 << 16)
        .build();
    for i in 0..QUIET_NODES {
        add_node(
            &mut sim,
            i,
            Host::plain(Arc::default(), FsyncPolicy::Everysec),
        );
    }
    let counts: Rc<RefCell<Option<Vec<u64>>>> = Rc::default();
    {
        let counts = Rc::clone(&counts);
        sim.client("observer", async move {
            tokio::time::sleep(QUIET_RUN).await;
            let history = Arc::new(History::new());
            let mut seen = Vec::new();
            for node in 0..QUIET_NODES {
                let mut client = SimClient::new(usize::MAX, node, Arc::clone(&history));
                let reply = client.send(&[b"INFO", b"dynamo"]).await;
                let Exchange::Replied(Ok(redis::Value::BulkString(text))) = reply else {
                    panic!("seed {seed}: INFO dynamo on n{node}: {reply:?}");
                };
                let text = String::from_utf8_lossy(&text).into_owned();
                let count = text
                    .lines()
                    .find_map(|l| l.strip_prefix("failure_detections:"))
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or_else(|| panic!("seed {seed}: no failure_detections in {text}"));
                seen.push(count);
            }
            *counts.borrow_mut() = Some(seen);
            Ok(())
        });
    }
    let mut rng = Rng::new(seed);
    let paused = rng.below(QUIET_NODES);
    let from = WARMUP + rng.millis(2_000, 12_000);
    let links = |sim: &mut turmoil::Sim<'_>, hold: bool| {
        for other in (0..QUIET_NODES).filter(|&o| o != paused) {
            let (a, b) = (node_name(paused), node_name(other));
            if hold {
                sim.hold(a, b);
            } else {
                sim.release(a, b);
            }
        }
    };
    let mut held = None;
    // Loss stalls, per pair of nodes: until when each is held. Pairs with
    // the paused node are left alone while it is cut off.
    let pairs: Vec<(usize, usize)> = (0..QUIET_NODES)
        .flat_map(|a| ((a + 1)..QUIET_NODES).map(move |b| (a, b)))
        .collect();
    let mut stalled: Vec<Option<Duration>> = vec![None; pairs.len()];
    let stall_chance = TICK.as_secs_f64() / LOSS_EVERY.as_secs_f64();
    while counts.borrow().is_none() {
        let now = sim.elapsed();
        match held {
            None if now >= from => {
                links(&mut sim, true);
                held = Some(true);
            }
            Some(true) if now >= from + pause => {
                links(&mut sim, false);
                held = Some(false);
            }
            _ => {}
        }
        let pausing = now + Duration::from_millis(LOSS_STALL_MS.1) >= from && held != Some(false);
        for (i, &(a, b)) in pairs.iter().enumerate() {
            let touches_pause = a == paused || b == paused;
            match stalled[i] {
                Some(until) if now >= until => {
                    sim.release(node_name(a), node_name(b));
                    stalled[i] = None;
                }
                None if !(touches_pause && pausing)
                    && (rng.next_u64() as f64 / u64::MAX as f64) < stall_chance =>
                {
                    sim.hold(node_name(a), node_name(b));
                    stalled[i] = Some(now + rng.millis(LOSS_STALL_MS.0, LOSS_STALL_MS.1));
                }
                _ => {}
            }
        }
        if let Err(e) = sim.step() {
            panic!("seed {seed}: simulation failed: {e}");
        }
    }
    counts.take().unwrap_or_default()
}

/// Seeds `first..SEEDS` stepping by 2: no node marks another down.
fn no_false_down_marks(first: u64) {
    let seeds: Vec<u64> = (first..SEEDS).step_by(2).collect();
    let mut false_marks = Vec::new();
    for &seed in &seeds {
        let counts = detections(seed, PAUSE);
        if counts.iter().any(|&n| n > 0) {
            false_marks.push((seed, counts));
        }
    }
    println!(
        "detector: {} seeds, {QUIET_NODES} nodes, 1-{} ms latency, a {}-{} ms stall per link \
         about every {LOSS_EVERY:?} (1% loss), a {PAUSE:?} pause each: false down marks in {}",
        seeds.len(),
        JITTER_MAX.as_millis(),
        LOSS_STALL_MS.0,
        LOSS_STALL_MS.1,
        false_marks.len()
    );
    assert!(
        false_marks.is_empty(),
        "down marks (seed, per node): {false_marks:?}"
    );
}

// Proves 200 ms of jitter, 1% loss (as retransmission stalls) and a 1 s
// pause of one node cause no false down marks over 100 seeds (half here, half in `..._odd_seeds`), and, with a
// 4 s pause, that the same run does mark the paused node down: the check
// can fail.
#[test]
fn jitter_and_a_1s_pause_mark_no_node_down() {
    if env_u64("DYNOKV_SIM_SEED").is_some() {
        return;
    }
    let counts = detections(1, LONG_PAUSE);
    assert!(
        counts.iter().filter(|&&n| n > 0).count() >= QUIET_NODES - 1,
        "a {LONG_PAUSE:?} pause marked no one down: {counts:?}"
    );
    no_false_down_marks(0);
}

#[test]
fn jitter_and_a_1s_pause_mark_no_node_down_odd_seeds() {
    if env_u64("DYNOKV_SIM_SEED").is_some() {
        return;
    }
    no_false_down_marks(1);
}
