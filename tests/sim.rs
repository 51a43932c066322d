//! Deterministic simulation: a cluster of dynokv nodes, clients and faults
//! on one thread under turmoil, all driven from one seed.
//!
//! Every run starts [`NODES`] nodes with `Node::start_in` — the code
//! `dynokv serve` runs — on an in-memory store (`MemoryStore`: a crash
//! keeps only what was synced), turmoil's simulated TCP and time, and
//! inline storage work (`StorageExecutor::inline`): nothing runs on
//! another thread, so the seed fixes everything — node ids, message
//! delays and losses, the fault schedule, the clients' choices. Nodes run
//! `--fsync always` with N = 3, R = W = 2.
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
//! every store for clears. Then
//! everything heals, a checker client reads every key through every node
//! until they agree, and `common::history::check_with` judges the
//! history: nothing acknowledged lost, no phantom values, nothing
//! resurrected, replicas converged, no acknowledged increment missing
//! from the counters and none counted that was not sent or twice, nothing
//! read after an acknowledged FLUSHALL that it had to clear. Then the
//! epilogue, on the quiet cluster: FLUSHALL, writes, one to three of their
//! replicas killed (or shut down) and started again, reads, and the same
//! judgement on the state it leaves.
//!
//! Links (issue 17): a prober asks every node `DYNAMO MEMBERS` every
//! [`LINK_PROBE_EVERY`]; once no fault has touched a pair of live nodes
//! for [`LINK_REPAIR_MAX`], both ends must list their link up. After the
//! last heal the run goes on until a probe past that bound has checked
//! every pair.
//!
//! `cargo test --test sim` runs [`SEEDS`] seeds on a few test threads. A
//! failing run prints its seed and the command that replays it exactly:
//! `DYNOKV_SIM_SEED=<seed> cargo test --test sim replay -- --nocapture`.
//! Soak: `DYNOKV_SIM_RUNS=<k> cargo test --release --test sim soak --
//! --nocapture` runs k seeds from `DYNOKV_SIM_FIRST` (default 0).

mod common;

use common::Rng;
use common::history::{self, Call, ClearsSeen, Final, History, Op, Outcome, Read, Report, Timing};
use dynokv::clock::Clock;
use dynokv::config::{Config, Settings};
use dynokv::coordinator::BoxFuture;
use dynokv::limits::{
    PEER_BACKOFF_MAX_MS, PEER_HEARTBEAT_MS, PEER_REQUEST_TIMEOUT_MS, PEER_SILENCE_MAX_MS,
};
use dynokv::model::record::{Record, decode_record};
use dynokv::net::{Connection, Listener, Network};
use dynokv::node::{Environment, Node};
use dynokv::ring::partition_of;
use dynokv::storage::{FsyncPolicy, MemoryStore, Space, StorageExecutor, Store, storage_key};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
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

fn node_config(i: usize, fsync: FsyncPolicy) -> Config {
    // Node 0 founds the cluster (its own address among its seeds); the
    // others join it.
    let seed = 0;
    let settings = Settings {
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
    fn set(&self, on: bool) {
        self.0.set(on);
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

/// Registers node `i`: each (re)start first drops what the store had not
/// synced, as a crash would, then runs the node on it. With a `stop`
/// switch, while it is on the node is shut down gracefully (it drains its
/// clients and syncs its store, as on SIGTERM) and stays down; then it
/// starts again ([`graceful_restarts`]).
fn add_node(
    sim: &mut turmoil::Sim<'_>,
    i: usize,
    store: Arc<MemoryStore>,
    fsync: FsyncPolicy,
    stop: Option<Switch>,
) {
    sim.host(node_name(i), move || {
        let (store, stop) = (Arc::clone(&store), stop.clone());
        async move {
            loop {
                // After a graceful stop this drops nothing: the node synced.
                store.crash();
                let environment = Environment {
                    store: Arc::clone(&store) as Arc<dyn Store>,
                    network: Arc::new(SimNet),
                    clock: Arc::new(SimClock),
                    executor: Arc::new(StorageExecutor::inline()),
                };
                let node = Node::start_in(node_config(i, fsync), environment).await?;
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
async fn workload(id: usize, seed: u64, history: Arc<History>, increments: Rc<Increments>) {
    let mut rng = Rng::new(seed ^ (id as u64).wrapping_mul(0x51_7cc1_b727_220a));
    let mut client = SimClient::new(id, id % NODES, history);
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
                    client.switch(rng.below(NODES));
                }
                continue;
            }
        }
        let key = key(rng.below(KEYS));
        let Some(read) = client.vget(&key, None).await else {
            client.switch(rng.below(NODES));
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
            client.switch(rng.below(NODES));
        }
    }
}

/// Why the replicas (read straight from each node's store) do not hold
/// the same record of some key, if they do not: every key is on no node
/// or on exactly N, all with the same DVV set.
fn replicas_differ(stores: &[Arc<MemoryStore>], keys: &[String]) -> Option<String> {
    for key in keys {
        let skey = storage_key(partition_of(key.as_bytes(), PARTITIONS), key.as_bytes());
        let held: Vec<(usize, Record)> = stores
            .iter()
            .enumerate()
            .filter_map(|(node, store)| {
                let bytes = store.get(Space::Data, &skey).ok().flatten()?;
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

/// After the heal: reads every key through every node until the nodes
/// agree (see `history::judge_round`) and so do the replicas' stores
/// ([`replicas_differ`]), at most [`CONVERGE_MAX`].
async fn final_reads(history: Arc<History>, stores: Vec<Arc<MemoryStore>>) -> Final {
    let healed = tokio::time::Instant::now();
    let keys: Vec<String> = (0..KEYS)
        .map(key)
        .chain((0..COUNTERS).map(counter))
        .collect();
    let mut clients: Vec<SimClient> = (0..NODES)
        .map(|node| SimClient::new(usize::MAX, node, Arc::clone(&history)))
        .collect();
    loop {
        let mut reads: HashMap<(usize, String, usize), Option<Read>> = HashMap::new();
        for (node, client) in clients.iter_mut().enumerate() {
            for key in &keys {
                for r in [N, 1] {
                    reads.insert((node, key.clone(), r), client.vget(key, Some(r)).await);
                }
            }
        }
        let (states, mut divergence) = history::judge_round(&keys, NODES, N, |node, key, r| {
            reads.remove(&(node, key.to_owned(), r)).flatten()
        });
        if divergence.is_none() {
            divergence = replicas_differ(&stores, &keys);
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
/// answer), asked from `at` until `end`.
#[derive(Debug)]
struct Probe {
    at: Duration,
    end: Duration,
    up: Vec<Option<BTreeSet<usize>>>,
}

/// The node indexes a `DYNAMO MEMBERS` reply lists as up.
fn listed_up(reply: &redis::Value) -> Option<BTreeSet<usize>> {
    let redis::Value::Array(rows) = reply else {
        return None;
    };
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let mut up = BTreeSet::new();
    for row in rows {
        let redis::Value::Array(flat) = row else {
            return None;
        };
        let field = |name: &str| {
            flat.chunks(2)
                .find(|kv| kv.len() == 2 && text(&kv[0]).as_deref() == Some(name))
                .and_then(|kv| text(&kv[1]))
        };
        let node = field("name")?.strip_prefix('n')?.parse().ok()?;
        if field("status").as_deref() == Some("up") {
            up.insert(node);
        }
    }
    Some(up)
}

/// Asks every node for its links every [`LINK_PROBE_EVERY`] until `stop`.
async fn probe_links(probes: Rc<RefCell<Vec<Probe>>>, stop: Rc<Cell<bool>>) {
    let history = Arc::new(History::new());
    let mut clients: Vec<SimClient> = (0..NODES)
        .map(|node| SimClient::new(usize::MAX, node, Arc::clone(&history)))
        .collect();
    while !stop.get() {
        let at = turmoil::sim_elapsed().unwrap_or_default();
        let mut up = Vec::with_capacity(NODES);
        for client in &mut clients {
            let asked =
                tokio::time::timeout(LINK_PROBE_TIMEOUT, client.send(&[b"DYNAMO", b"MEMBERS"]))
                    .await;
            up.push(match asked {
                Ok(Exchange::Replied(Ok(reply))) => listed_up(&reply),
                Ok(_) => None,
                Err(_) => {
                    client.con = None;
                    None
                }
            });
        }
        let end = turmoil::sim_elapsed().unwrap_or_default();
        probes.borrow_mut().push(Probe { at, end, up });
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

/// Every fault injected, by index.
#[derive(Debug, Default)]
struct Disturbances(Vec<Disturbance>);

impl Disturbances {
    fn injected(&mut self, fault: &Fault, at: Duration) {
        let pairs = match fault {
            Fault::Partition(a, b) => a
                .iter()
                .flat_map(|&x| b.iter().map(move |&y| (x.min(y), x.max(y))))
                .collect(),
            Fault::Crash(i) | Fault::Restart(i) => (0..NODES)
                .filter(|j| j != i)
                .map(|j| (j.min(*i), j.max(*i)))
                .collect(),
            Fault::Hold(a, b) | Fault::Lossy(a, b) => vec![(*a.min(b), *a.max(b))],
        };
        self.0.push(Disturbance {
            injected: at,
            healed: None,
            pairs,
        });
    }

    fn healed(&mut self, fault_index: usize, at: Duration) {
        self.0[fault_index].healed = Some(at);
    }

    /// The last heal of any fault.
    fn last_heal(&self) -> Duration {
        self.0
            .iter()
            .filter_map(|f| f.healed)
            .max()
            .unwrap_or_default()
    }

    /// Whether no fault touched `pair` from [`LINK_REPAIR_MAX`] before
    /// `at` until `end`.
    fn settled(&self, pair: (usize, usize), at: Duration, end: Duration) -> bool {
        self.0.iter().all(|f| {
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
        for x in 0..NODES {
            for y in x + 1..NODES {
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

fn pick_fault(rng: &mut Rng, crashed: usize, graceful: bool) -> Fault {
    let node = |rng: &mut Rng| rng.below(NODES);
    let pair = |rng: &mut Rng| {
        let a = node(rng);
        (a, (a + 1 + rng.below(NODES - 1)) % NODES)
    };
    match rng.below(4) {
        0 => {
            // A minority of 1 or 2 against the rest.
            let mut all: Vec<usize> = (0..NODES).collect();
            let mut side = Vec::new();
            for _ in 0..=rng.below(2) {
                side.push(all.remove(rng.below(all.len())));
            }
            Fault::Partition(side, all)
        }
        1 if crashed < 2 => Fault::Crash(node(rng)),
        // A graceful shutdown, when on, takes half the held links' share,
        // so kills stay as frequent as without it.
        2 if graceful && crashed < 2 && rng.chance(50) => Fault::Restart(node(rng)),
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

/// What the stores' clears say against the FLUSHALLs recorded: every
/// acknowledged FLUSHALL cleared every node while it ran (it answers only
/// once every member did), and every clear fell in the window the checker
/// allows a FLUSHALL ([`LATE`] past an unacknowledged one's completion) —
/// the bound the checker's flush rules assume, checked.
fn flush_problems(ops: &[Op], clears: &[(usize, Duration)]) -> Vec<String> {
    let flushes: Vec<&Op> = ops
        .iter()
        .filter(|op| op.call == Call::FlushAll && op.outcome.maybe_applied())
        .collect();
    let mut problems = Vec::new();
    for flush in flushes.iter().filter(|op| op.outcome.is_ok()) {
        for node in 0..NODES {
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
async fn flusher(seed: u64, history: Arc<History>) {
    let mut rng = Rng::new(seed ^ 0x0f1a_5a11_d00d_f00d);
    let mut client = SimClient::new(CLIENTS, rng.below(NODES), history);
    client.timeout = FLUSH_TIMEOUT;
    let start = tokio::time::Instant::now();
    let mut acked = 0;
    while acked < FLUSHES_ACKED {
        tokio::time::sleep(rng.millis(FLUSH_GAP_MIN_MS, FLUSH_GAP_MAX_MS)).await;
        if start.elapsed() >= FLUSH_WINDOW {
            break;
        }
        client.switch(rng.below(NODES));
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
) {
    let id = CLIENTS + 1;
    let mut rng = Rng::new(seed ^ 0x0e91_1096_e0f0_ab1e);
    let mut client = SimClient::new(id, rng.below(NODES), history);
    client.timeout = FLUSH_TIMEOUT;
    for _ in 0..EPILOGUE_FLUSH_TRIES {
        if client.flushall().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        client.switch(rng.below(NODES));
    }
    client.timeout = CLIENT_TIMEOUT;
    let mut keys: Vec<String> = (0..KEYS).map(key).collect();
    let mut chosen = Vec::new();
    for round in 0..EPILOGUE_KEYS {
        let key = keys.remove(rng.below(keys.len()));
        client.switch(rng.below(NODES));
        if let Some(read) = client.vget(&key, None).await {
            client
                .vset(&key, &read, format!("{key}-c{id}-{round}"))
                .await;
        }
        chosen.push(key);
    }
    for i in 0..COUNTERS {
        if let Some(by) = increments.take(i) {
            client.switch(rng.below(NODES));
            client.incrby(&counter(i), by).await;
        }
    }
    *written.borrow_mut() = Some(chosen.clone());
    while !restarted.get() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for node in 0..NODES {
        client.switch(node);
        for key in &chosen {
            client.vget(key, None).await;
        }
    }
}

/// The nodes whose stores hold `key`.
fn holders(stores: &[Arc<MemoryStore>], key: &str) -> Vec<usize> {
    let skey = storage_key(partition_of(key.as_bytes(), PARTITIONS), key.as_bytes());
    (0..stores.len())
        .filter(|&node| {
            stores[node]
                .get(Space::Data, &skey)
                .ok()
                .flatten()
                .is_some()
        })
        .collect()
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
}

/// A simulation of [`NODES`] nodes for `seed`, syncing as `fsync` says:
/// their stores, and the switches that stop them gracefully (flipped only
/// if `graceful`).
fn cluster(
    seed: u64,
    fsync: FsyncPolicy,
    graceful: bool,
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
    let stores: Vec<Arc<MemoryStore>> = (0..NODES).map(|_| Arc::default()).collect();
    let stops: Vec<Switch> = (0..NODES).map(|_| Switch::default()).collect();
    for (i, store) in stores.iter().enumerate() {
        let stop = graceful.then(|| stops[i].clone());
        add_node(&mut sim, i, Arc::clone(store), fsync, stop);
    }
    (sim, stores, stops)
}

/// Runs the simulation for `seed`, the nodes syncing as `fsync` says.
fn run(seed: u64, fsync: FsyncPolicy) -> Run {
    let graceful = graceful_restarts();
    let (mut sim, stores, stops) = cluster(seed, fsync, graceful);
    let mut rng = Rng::new(seed);
    let history = Arc::new(History::new());
    let (probes, probing_stop): (Rc<RefCell<Vec<Probe>>>, Rc<Cell<bool>>) = Default::default();
    {
        let (probes, stop) = (Rc::clone(&probes), Rc::clone(&probing_stop));
        sim.client("links", async move {
            tokio::time::sleep(WARMUP).await;
            probe_links(probes, stop).await;
            Ok(())
        });
    }
    let mut disturbances = Disturbances::default();
    let done = Rc::new(Cell::new(0usize));
    let increments = Rc::new(Increments::default());
    for id in 0..CLIENTS {
        let (history, done) = (Arc::clone(&history), Rc::clone(&done));
        let increments = Rc::clone(&increments);
        sim.client(format!("client{id}"), async move {
            tokio::time::sleep(WARMUP).await;
            workload(id, seed, history, increments).await;
            done.set(done.get() + 1);
            Ok(())
        });
    }
    {
        let (history, done) = (Arc::clone(&history), Rc::clone(&done));
        sim.client("flusher", async move {
            tokio::time::sleep(WARMUP).await;
            flusher(seed, history).await;
            done.set(done.get() + 1);
            Ok(())
        });
    }
    let mut clears = Clears::default();
    let step = |sim: &mut turmoil::Sim<'_>, clears: &mut Clears| {
        if let Err(e) = sim.step() {
            panic!("seed {seed}: simulation failed: {e}");
        }
        clears.watch(&stores, sim.elapsed());
    };
    // Faults while the clients run.
    let mut active: Vec<(Fault, Duration, usize)> = Vec::new();
    let mut next_fault = WARMUP + rng.millis(200, 800);
    let mut faults = 0;
    // When a node was crashed or shut down.
    let mut downs = Vec::new();
    while sim.elapsed() < WARMUP + CHAOS {
        let now = sim.elapsed();
        let (due, kept): (Vec<_>, Vec<_>) =
            active.into_iter().partition(|(_, until, _)| *until <= now);
        active = kept;
        for (fault, _, index) in &due {
            heal(&mut sim, &stops, fault);
            disturbances.healed(*index, now);
        }
        if now >= next_fault {
            let down = |f: &Fault| match f {
                Fault::Crash(i) | Fault::Restart(i) => Some(*i),
                _ => None,
            };
            let crashed = active.iter().filter(|(f, _, _)| down(f).is_some()).count();
            let fault = pick_fault(&mut rng, crashed, graceful);
            let busy =
                down(&fault).is_some() && active.iter().any(|(f, _, _)| down(f) == down(&fault));
            if !busy {
                if down(&fault).is_some() {
                    downs.push(now);
                }
                inject(&mut sim, &stops, &fault);
                disturbances.injected(&fault, now);
                active.push((fault, now + rng.millis(FAULT_MIN_MS, FAULT_MAX_MS), faults));
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
    // The links are checked until a probe past this bound; the epilogue's
    // own fault leaves the links of its nodes unchecked (the bound after
    // it would add LINK_REPAIR_MAX of simulated time to every run).
    let settled_at = disturbances.last_heal() + LINK_REPAIR_MAX;
    // The clients and the flusher finish on a healed cluster, and the
    // workload is judged on the state they left.
    while done.get() < CLIENTS + 1 {
        step(&mut sim, &mut clears);
    }
    let fin = final_state(&mut sim, &stores, &mut clears, &step);
    let workload_ops = history.ops();
    let timing = |clears: &Clears| Timing {
        late: Some(LATE),
        clears: Some(ClearsSeen {
            at: clears.seen.clone(),
            write_quorum: W,
        }),
    };
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
        let done = Rc::clone(&done);
        sim.client("epilogue", async move {
            epilogue(seed, history, increments, written, restarted).await;
            done.set(done.get() + 1);
            Ok(())
        });
    }
    while written.borrow().is_none() {
        step(&mut sim, &mut clears);
    }
    let first = written.borrow().iter().flatten().next().cloned();
    let mut victims = first.map_or_else(Vec::new, |key| holders(&stores, &key));
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
        disturbances.injected(&fault, sim.elapsed());
        down.push((fault, faults));
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
    let epilogue_fin = final_state(&mut sim, &stores, &mut clears, &step);
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
        && let Some(silent) = last.up.iter().position(Option::is_none)
    {
        links.push(format!(
            "at {:?}: n{silent} did not answer DYNAMO MEMBERS after every fault healed",
            last.at
        ));
    }
    Run {
        flush_problems: flush_problems(&ops, &clears.seen),
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

/// Reads every key through every node until they agree ([`final_reads`]),
/// stepping `sim` meanwhile.
fn final_state(
    sim: &mut turmoil::Sim<'_>,
    stores: &[Arc<MemoryStore>],
    clears: &mut Clears,
    step: &impl Fn(&mut turmoil::Sim<'_>, &mut Clears),
) -> Final {
    let slot: Rc<RefCell<Option<Final>>> = Rc::default();
    {
        let (history, slot) = (Arc::new(History::new()), Rc::clone(&slot));
        let stores = stores.to_vec();
        sim.client(
            format!("checker{}", sim.elapsed().as_millis()),
            async move {
                let fin = final_reads(history, stores).await;
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

/// The command that replays `seed`.
fn replay_command(seed: u64) -> String {
    format!("DYNOKV_SIM_SEED={seed} cargo test --test sim replay -- --exact --nocapture")
}

/// `DYNOKV_SIM_SEED=<seed>`: runs that one seed in this process, prints
/// every operation and the checker's line, fails if the checker does.
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
    let run = run(seed, fsync);
    for op in &run.ops {
        println!("{op:?}");
    }
    let epilogue = &run.epilogue_report;
    println!(
        "sim seed={seed} faults={} sim_ms={} link_checks={} link_problems={} clears={} \
         flush_problems={} flush_sequences={} {} epilogue={} epilogue_flushes={} \
         epilogue_flushes_acked={} \
         epilogue_lost={} epilogue_incr_lost={} epilogue_phantoms={} epilogue_resurrected={} \
         epilogue_stale_after_flush={} epilogue_converged={} epilogue_converge_ms={}",
        run.faults,
        run.sim_ms,
        run.link_checks,
        run.links.len(),
        run.clears,
        run.flush_problems.len(),
        run.flush_sequences,
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
    let problems = run.report.problems.iter().chain(&run.links);
    for problem in problems
        .chain(&run.flush_problems)
        .cloned()
        .chain(epilogue_problems)
    {
        println!("  {problem}");
    }
    assert!(
        run.report.is_clean()
            && epilogue.is_clean()
            && run.links.is_empty()
            && run.flush_problems.is_empty(),
        "seed {seed} failed: {} epilogue: {} link problems: {} flush problems: {}\nreplay: {}",
        run.report,
        epilogue,
        run.links.len(),
        run.flush_problems.len(),
        replay_command(seed)
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
    run_child_with(seed, FsyncPolicy::Always)
}

fn run_child_with(seed: u64, fsync: FsyncPolicy) -> Child {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("own test binary: {e}"));
    let mut child = std::process::Command::new(exe)
        .args(["replay", "--exact", "--nocapture", "--test-threads=1"])
        .env("DYNOKV_SIM_SEED", seed.to_string())
        .env("DYNOKV_SIM_FSYNC", fsync.as_str())
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

/// Runs `seeds`, each in its own process, `workers` at a time, printing
/// one line each and a summary; fails listing every seed that failed and
/// how to replay it.
fn run_seeds(seeds: Vec<u64>, workers: usize) {
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let children = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| {
                while let Some(&seed) =
                    seeds.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    let child = run_child(seed);
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
    let mut failed: Vec<u64> = children
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.seed)
        .collect();
    failed.sort_unstable();
    let wall = started.elapsed().as_secs_f64();
    println!(
        "sim summary: seeds={runs} nodes={NODES} clients={CLIENTS} faults={faults} ops={ops} \
         acknowledged={acked} ({:.1}%) converge_ms(median/max)={}/{} max_siblings={siblings} \
         simulated={:.0}s wall={wall:.1}s seeds/min={:.1} simulated-nodes*seeds/min={:.0} \
         client-ops/s={:.0} incrs={} incrs_acked={} execs_acked={}/{} execs_aborted={} \
         incr_lost={} incr_phantoms={} counter_siblings(max)={} flushes={} flushes_acked={} \
         clears={} flushed={} incr_flushed={} stale_after_flush={} revived_across_flush={} \
         lost={} phantoms={} resurrected={} flush_sequences={} (in {} seeds) \
         epilogue_flushes={} epilogue_flushes_acked={} epilogue_lost={} epilogue_incr_lost={} \
         epilogue_stale_after_flush={} epilogue_resurrected={} epilogues_converged={}",
        100.0 * acked as f64 / ops.max(1) as f64,
        converge_ms.get(converge_ms.len() / 2).copied().unwrap_or(0),
        converge_ms.last().copied().unwrap_or(0),
        sim_ms as f64 / 1000.0,
        runs as f64 * 60.0 / wall,
        (runs * NODES as u64) as f64 * 60.0 / wall,
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
    );
    let replays: Vec<String> = failed.iter().map(|&s| replay_command(s)).collect();
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
    run_seeds((0..SEEDS).filter(|s| s % SHARDS == k).collect(), 1);
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

/// `DYNOKV_SIM_RUNS=<k>`: k seeds from `DYNOKV_SIM_FIRST` (soak).
#[test]
fn soak() {
    let (Some(runs), None) = (env_u64("DYNOKV_SIM_RUNS"), env_u64("DYNOKV_SIM_SEED")) else {
        return;
    };
    let first = env_u64("DYNOKV_SIM_FIRST").unwrap_or(0);
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    run_seeds((first..first + runs).collect(), workers);
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
        .map(|seed| run_child_with(seed, FsyncPolicy::No))
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
    assert!(
        children
            .iter()
            .all(|c| c.passed == (lost_in(c) + incr_lost_in(c) == 0 && !diverged(c))),
        "a seed failed without reporting a lost write or increment or replicas that diverged"
    );
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
    let (mut sim, stores, _stops) = cluster(1, FsyncPolicy::Always, false);
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
            let replicas = holders(&stores, "k");
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
        add_node(&mut sim, i, Arc::default(), FsyncPolicy::Everysec, None);
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
        "detector: {} seeds, {QUIET_NODES} nodes, 1-{} ms latency, a {PAUSE:?} pause each: \
         false down marks in {}",
        seeds.len(),
        JITTER_MAX.as_millis(),
        false_marks.len()
    );
    assert!(
        false_marks.is_empty(),
        "down marks (seed, per node): {false_marks:?}"
    );
}

// Proves 200 ms of jitter and a 1 s pause of one node cause no false down
// marks over 100 seeds (half here, half in `..._odd_seeds`), and, with a
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
