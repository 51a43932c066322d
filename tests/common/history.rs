//! The history checker: what clients did while faults were injected, and
//! whether the cluster kept every acknowledged write.
//!
//! # Recording
//!
//! Clients ([`Client`]) run `VGET`, `VSET` and `VDEL` and record each
//! operation in a shared [`History`]: who ran it, through which node, on
//! which key, what it sent (the value, the context, and the values the
//! context was read with) and how it ended:
//!
//! - **ok**: a reply (a read's context and values, or a write's context);
//! - **failed**: an error reply (`NOQUORUM`, ...) — a failed write may still
//!   have been applied by the replicas that took it — or no connection at
//!   all (`sent: false`: certainly not applied);
//! - **unknown**: no reply (timeout, connection lost): applied or not.
//!
//! Every value written is unique (it names its key, client and sequence
//! number), so a value identifies the one write that made it.
//!
//! # What is checked
//!
//! After the faults heal and the cluster quiesces, [`read_final`] reads
//! every key through every node with `VGET key R <N>` (a full merge, which
//! also queues read repair) until each node's own replica (`VGET key R 1`)
//! agrees with the merged state, and [`check`] then judges the history
//! against those final states:
//!
//! - **lost**: an acknowledged `VSET` whose value is missing on some node
//!   although no write superseded it. A write *supersedes* value `v` when
//!   its context came from a `VGET` that listed `v` (the first write that
//!   removes `v` from any replica must have been planned from a state that
//!   held `v`, so this is the only way `v` can go legitimately). A
//!   superseding write may be acknowledged, failed or unknown (a failed
//!   write may have been applied), with one sharpening: a failed or
//!   unknown `VSET` whose own value was never observed by any read was
//!   never applied, so it supersedes nothing; failed `VDEL`s cannot be
//!   observed and are given the benefit of the doubt (counted as
//!   `excused_by_unacked_del`).
//! - **phantoms**: a value read (during the run or at the end) that no
//!   `VSET` of that key ever sent.
//! - **resurrected**: a value on some node at the end although an
//!   acknowledged write (a `VSET`, or a `VDEL`: "a delete stays deleted
//!   unless rewritten") superseded it.
//! - **converged**: every node returned the same context and sibling set
//!   for every key, and every node's own replica holds exactly that.
//!
//! Counter keys — those of [`Call::Incr`] (`INCRBY`) and [`Call::Exec`]
//! (a WATCH transaction that adds to what its GET read) operations — hold
//! sums, not written values; [`check_counters`] judges them by their bits:
//! every acknowledged increment counted by a final sibling (`incr_lost`),
//! no value counting an increment that was not sent or twice
//! (`incr_phantoms`).
//!
//! # FLUSHALL
//!
//! A [`Call::FlushAll`] clears every node, each at its own moment: its
//! coordinator clears its own store, then asks the other members one by
//! one, and answers OK only once every member answered that it had
//! cleared (docs/semantics.md, "Keyspace walks, FLUSHALL"). Nothing orders
//! those clears with writes coordinated elsewhere, nor with copies of
//! earlier writes still on their way between nodes (a write's replication
//! to the replicas past W, a read repair). So ([`check_with`]):
//!
//! - a missing acknowledged value or increment is excused (`flushed`,
//!   `incr_flushed`) only if some node may have been cleared after its
//!   write began: within an acknowledged FLUSHALL's run, or up to
//!   [`Timing::late`] after an unacknowledged one returned (it may have
//!   reached any nodes, or none) — or, when the recorder watched the
//!   stores ([`Timing::clears`]), if at least W nodes were seen cleared
//!   after it began. A write that began after every such moment must
//!   survive like any other (`lost`): the bug of issue 17 lost exactly
//!   those, at the next restart. A write concurrent with a FLUSHALL may
//!   go either way.
//! - **stale after flush** (must be 0): a value (or a counter value
//!   counting an increment) read after an acknowledged FLUSHALL returned,
//!   or present at the end, although every operation that may have sent a
//!   copy of it (its write; any write of its key, whose record may hold it
//!   as a sibling; a read that returned it; an unanswered read of the key)
//!   ended more than [`Timing::late`] before the FLUSHALL began: every
//!   copy had landed, and every node was cleared after. A value with a
//!   copy that may still have been on its way may come back: a copy that
//!   lands on a node after the node cleared is kept and read repair
//!   spreads it (`tests/sim.rs`,
//!   `an_acknowledged_flushall_fences_out_copies_in_flight`).
//!   Without a bound on late messages, nothing is stale.
//! - a value an acknowledged write superseded that is present at the end
//!   is not counted resurrected (`revived_across_flush` instead) if a
//!   clear may have removed every superseding record after that write
//!   while a copy of the value was still on its way.
//!
//! # Replica-only state
//!
//! Reads merge what R replicas hold and repair the rest, so the judgement
//! above sees what clients can observe, not where the data is: a write
//! that reached one replica only passes it. [`check_replicas`] judges the
//! replicas' own copies instead, read straight from their stores (the
//! simulation does, with read repair off and once every hint was
//! replayed): the same rules, with a [`Final`] whose "nodes" are replica
//! ranks (rank r: each key's r-th replica), so an acknowledged write must
//! be on all N replicas of its key — present, or superseded by a write
//! applied, or excused by a clear as above. A write that some replicas
//! (not all) lack is further excused ([`Gaps`]) only if some node was seen
//! cleared after it began (a clear takes a fallback's hints, a replica's
//! copy, and a coordinator's unsent copies), or if it is on at least
//! [`Gaps::held_min`] replicas and [`Gaps::crashed`] says a crash may
//! have lost the copies it lacks; these count as `clear_gaps` and
//! `crash_gaps` (acknowledged operations, each once), not as lost.
//!
//! [`Report`] prints as one line: `ops=… acknowledged=… failed=… unknown=…
//! lost=… phantoms=… max_siblings=… converge_ms=…` and a few more fields.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `VGET key [R r]`.
    Get {
        /// The read quorum override.
        r: Option<usize>,
    },
    /// `VSET key context value [W w]`.
    Set {
        /// The context sent.
        context: Vec<u8>,
        /// The values the `VGET` that returned `context` listed.
        covers: Vec<String>,
        /// The value written (unique in the history).
        value: String,
        /// The write quorum override.
        w: Option<usize>,
    },
    /// `VDEL key context [W w]`.
    Del {
        /// The context sent.
        context: Vec<u8>,
        /// The values the `VGET` that returned `context` listed.
        covers: Vec<String>,
        /// The write quorum override.
        w: Option<usize>,
    },
    /// `INCRBY key by` on a counter key: `by` is a power of two no other
    /// increment of that key uses (see [`check_counters`]).
    Incr {
        /// The increment.
        by: i64,
    },
    /// `WATCH key`, `GET key`, `MULTI`, `SET key <read + by>`, `EXEC` on a
    /// counter key: a read-modify-write by transaction. `by` as for
    /// [`Call::Incr`].
    Exec {
        /// The increment the transaction adds to the value it read.
        by: i64,
        /// The value its GET returned (nil as 0); `None` if it got none
        /// (then no EXEC was sent).
        read: Option<i64>,
    },
    /// `FLUSHALL`: every node clears its store, one after another (the
    /// op's key is empty). See [`check_with`] for what it guarantees.
    FlushAll,
}

impl Call {
    /// The values this call's context covers (none for a read).
    pub fn covers(&self) -> &[String] {
        match self {
            Call::Get { .. } | Call::Incr { .. } | Call::Exec { .. } | Call::FlushAll => &[],
            Call::Set { covers, .. } | Call::Del { covers, .. } => covers,
        }
    }

    /// Whether it writes a key (FLUSHALL is counted apart).
    pub fn is_write(&self) -> bool {
        !matches!(self, Call::Get { .. } | Call::FlushAll)
    }

    /// The increment of a counter operation.
    pub fn increment(&self) -> Option<i64> {
        match self {
            Call::Incr { by } | Call::Exec { by, .. } => Some(*by),
            _ => None,
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A read's reply: the context and the sibling values.
    Read {
        /// The context returned.
        context: Vec<u8>,
        /// The live values, as returned.
        values: Vec<String>,
    },
    /// A write's acknowledgement, with the new context.
    Written {
        /// The context returned.
        context: Vec<u8>,
    },
    /// A counter operation's acknowledgement: INCRBY's reply, or the value
    /// a successful EXEC wrote.
    Counted(i64),
    /// EXEC's null reply: a watched key changed, nothing was written.
    Aborted,
    /// An acknowledgement without a value: FLUSHALL's `OK`.
    Done,
    /// An error reply (`sent`), or no connection to send it on.
    Failed {
        /// The error.
        error: String,
        /// Whether the request reached the node (if so, a write may still
        /// have been applied).
        sent: bool,
    },
    /// No reply: it may or may not have been applied.
    Unknown(String),
}

impl Outcome {
    /// Whether the node acknowledged it.
    pub fn is_ok(&self) -> bool {
        matches!(
            self,
            Outcome::Read { .. } | Outcome::Written { .. } | Outcome::Counted(_) | Outcome::Done
        )
    }

    /// Whether the request may have been applied: not refused before it
    /// reached a node, nor aborted.
    pub fn maybe_applied(&self) -> bool {
        !matches!(self, Outcome::Failed { sent: false, .. } | Outcome::Aborted)
    }
}

/// One operation: invocation and outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The client that ran it.
    pub client: usize,
    /// The node it was sent to (index in the cluster).
    pub node: usize,
    /// The key.
    pub key: String,
    /// What was asked.
    pub call: Call,
    /// How it ended.
    pub outcome: Outcome,
    /// When it was invoked, since the history began.
    pub invoked: Duration,
    /// When its outcome was known, since the history began.
    pub completed: Duration,
}

/// The operations of one run, shared by its clients.
#[derive(Debug)]
pub struct History {
    started: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history starting now.
    pub fn new() -> History {
        History {
            started: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }

    /// Time since the history began.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Appends an operation.
    pub fn record(&self, op: Op) {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(op);
    }

    /// A copy of every operation so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A blocking client that records every operation it runs in a
/// [`History`]. After a request without a reply it drops its connection
/// (a late reply must not be taken for the next one's).
pub struct Client {
    history: Arc<History>,
    id: usize,
    node: usize,
    addr: SocketAddr,
    timeout: Duration,
    con: Option<redis::Connection>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("node", &self.node)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A read's context and values.
pub type Read = (Vec<u8>, Vec<String>);

impl Client {
    /// Client `id` of `history`, talking to node `node` at `addr`; each
    /// connect and each reply waits at most `timeout`.
    pub fn new(
        history: Arc<History>,
        id: usize,
        node: usize,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Client {
        Client {
            history,
            id,
            node,
            addr,
            timeout,
            con: None,
        }
    }

    /// The node this client talks to.
    pub fn node(&self) -> usize {
        self.node
    }

    /// `VGET key [R r]`, recorded; the reply when there was one.
    pub fn vget(&mut self, key: &str, r: Option<usize>) -> Option<Read> {
        let mut cmd = redis::cmd("VGET");
        cmd.arg(key);
        if let Some(r) = r {
            cmd.arg("R").arg(r);
        }
        self.run(key, Call::Get { r }, &cmd, parse_read)
            .map(|outcome| match outcome {
                Outcome::Read { context, values } => (context, values),
                _ => unreachable!("parse_read returns reads"),
            })
    }

    /// `VSET key context value [W w]`, recorded; whether it was
    /// acknowledged. `covers`: the values the read of `context` listed.
    pub fn vset(
        &mut self,
        key: &str,
        (context, covers): (&[u8], &[String]),
        value: &str,
        w: Option<usize>,
    ) -> bool {
        let mut cmd = redis::cmd("VSET");
        cmd.arg(key).arg(context).arg(value);
        if let Some(w) = w {
            cmd.arg("W").arg(w);
        }
        let call = Call::Set {
            context: context.to_vec(),
            covers: covers.to_vec(),
            value: value.to_owned(),
            w,
        };
        self.run(key, call, &cmd, parse_written).is_some()
    }

    /// `VDEL key context [W w]`, recorded; whether it was acknowledged.
    pub fn vdel(
        &mut self,
        key: &str,
        (context, covers): (&[u8], &[String]),
        w: Option<usize>,
    ) -> bool {
        let mut cmd = redis::cmd("VDEL");
        cmd.arg(key).arg(context);
        if let Some(w) = w {
            cmd.arg("W").arg(w);
        }
        let call = Call::Del {
            context: context.to_vec(),
            covers: covers.to_vec(),
            w,
        };
        self.run(key, call, &cmd, parse_written).is_some()
    }

    /// `INCRBY key by` on a counter key, recorded; whether it was
    /// acknowledged. `by`: a power of two no other increment of `key` uses.
    pub fn incrby(&mut self, key: &str, by: i64) -> bool {
        let mut cmd = redis::cmd("INCRBY");
        cmd.arg(key).arg(by);
        self.run(key, Call::Incr { by }, &cmd, parse_counted)
            .is_some()
    }

    /// Runs `cmd`, records it, and returns the parsed reply if it was ok.
    fn run(
        &mut self,
        key: &str,
        call: Call,
        cmd: &redis::Cmd,
        parse: fn(redis::Value) -> Result<Outcome, String>,
    ) -> Option<Outcome> {
        let invoked = self.history.now();
        let outcome = match self.connection() {
            Err(error) => Outcome::Failed { error, sent: false },
            Ok(con) => match cmd.query::<redis::Value>(con) {
                Ok(reply) => match parse(reply) {
                    Ok(outcome) => outcome,
                    Err(error) => Outcome::Failed { error, sent: true },
                },
                Err(e) if e.code().is_some() => Outcome::Failed {
                    error: e.to_string(),
                    sent: true,
                },
                Err(e) => {
                    self.con = None;
                    Outcome::Unknown(e.to_string())
                }
            },
        };
        let completed = self.history.now();
        let ok = outcome.is_ok().then(|| outcome.clone());
        self.history.record(Op {
            client: self.id,
            node: self.node,
            key: key.to_owned(),
            call,
            outcome,
            invoked,
            completed,
        });
        ok
    }

    fn connection(&mut self) -> Result<&mut redis::Connection, String> {
        if self.con.is_none() {
            let client = redis::Client::open(format!("redis://{}/", self.addr))
                .map_err(|e| format!("client for {}: {e}", self.addr))?;
            let con = client
                .get_connection_with_timeout(self.timeout)
                .map_err(|e| format!("connect {}: {e}", self.addr))?;
            con.set_read_timeout(Some(self.timeout))
                .and_then(|()| con.set_write_timeout(Some(self.timeout)))
                .map_err(|e| format!("timeouts on {}: {e}", self.addr))?;
            self.con = Some(con);
        }
        self.con.as_mut().ok_or_else(|| "no connection".to_owned())
    }
}

/// The text of a bulk string.
fn text(value: &redis::Value) -> Option<String> {
    match value {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// INCRBY's reply: the counter's new value.
pub fn parse_counted(reply: redis::Value) -> Result<Outcome, String> {
    match reply {
        redis::Value::Int(v) => Ok(Outcome::Counted(v)),
        other => Err(format!("{BAD_REPLY} to INCRBY: {other:?}")),
    }
}

/// Marks replies of an unexpected shape (a bug, counted apart).
pub const BAD_REPLY: &str = "unexpected reply";

pub fn parse_read(reply: redis::Value) -> Result<Outcome, String> {
    if let redis::Value::Array(parts) = &reply
        && let [
            redis::Value::BulkString(context),
            redis::Value::Array(values),
        ] = parts.as_slice()
    {
        let values: Option<Vec<String>> = values.iter().map(text).collect();
        if let Some(values) = values {
            return Ok(Outcome::Read {
                context: context.clone(),
                values,
            });
        }
    }
    Err(format!("{BAD_REPLY} to VGET: {reply:?}"))
}

pub fn parse_written(reply: redis::Value) -> Result<Outcome, String> {
    match reply {
        redis::Value::BulkString(context) => Ok(Outcome::Written { context }),
        other => Err(format!("{BAD_REPLY} to a write: {other:?}")),
    }
}

/// One key's state as a node returned it: context and sorted values.
pub type KeyState = (Vec<u8>, Vec<String>);

/// The states read after the faults healed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Final {
    /// Node → key → the merged state it returned (`VGET key R N`);
    /// a key missing: that read never succeeded.
    pub states: BTreeMap<usize, BTreeMap<String, KeyState>>,
    /// Every node returned the same state for every key, and every node's
    /// own replica (`VGET key R 1`) held it.
    pub converged: bool,
    /// Time from the heal until that was seen (or until giving up).
    pub converge_ms: u64,
    /// Why it did not converge, when it did not.
    pub divergence: Option<String>,
}

/// Reads every key of `keys` through every node of `addrs` (index =
/// node) until the nodes agree and every node's replica holds the merged
/// state, at most `timeout`; `healed` is when the faults ended (the
/// convergence time counts from it). `n`: the replica count for `R n`.
pub fn read_final(
    addrs: &[SocketAddr],
    keys: &[String],
    n: usize,
    healed: Instant,
    timeout: Duration,
) -> Final {
    let deadline = Instant::now() + timeout;
    let client_timeout = Duration::from_secs(5);
    let scratch = Arc::new(History::new());
    let mut clients: Vec<Client> = addrs
        .iter()
        .enumerate()
        .map(|(i, &addr)| Client::new(Arc::clone(&scratch), usize::MAX, i, addr, client_timeout))
        .collect();
    loop {
        let (states, divergence) = judge_round(keys, addrs.len(), n, |node, key, r| {
            clients[node].vget(key, Some(r))
        });
        let converged = divergence.is_none();
        if converged || Instant::now() >= deadline {
            return Final {
                states,
                converged,
                converge_ms: healed.elapsed().as_millis() as u64,
                divergence,
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Node → key → the state that node returned.
pub type States = BTreeMap<usize, BTreeMap<String, KeyState>>;

/// One round of final reads: every key through every node of `nodes`
/// with `VGET key R n` (the merge), then, if they all agree, with
/// `VGET key R 1` (the copy a node reaches first: its own when it is a
/// replica) — read repair is asynchronous, so the merge agreeing is not
/// yet the copies agreeing. `vget(node, key, r)` runs one read. Returns
/// the merged states and why the round does not show convergence (`None`:
/// it does).
pub fn judge_round(
    keys: &[String],
    nodes: usize,
    n: usize,
    mut vget: impl FnMut(usize, &str, usize) -> Option<Read>,
) -> (States, Option<String>) {
    let mut read = |node: usize, key: &str, r: usize| {
        vget(node, key, r).map(|(c, mut v)| {
            v.sort();
            (c, v)
        })
    };
    let mut states = States::new();
    let mut divergence = None;
    for key in keys {
        let mut merged_states: Vec<Option<KeyState>> = Vec::new();
        for node in 0..nodes {
            let state = read(node, key, n);
            if let Some(state) = &state {
                states
                    .entry(node)
                    .or_default()
                    .insert(key.clone(), state.clone());
            }
            merged_states.push(state);
        }
        if divergence.is_some() {
            continue;
        }
        if merged_states.iter().any(Option::is_none) {
            divergence = Some(format!("{key}: a VGET R {n} failed"));
        } else if merged_states.windows(2).any(|w| w[0] != w[1]) {
            divergence = Some(format!("{key}: nodes disagree: {merged_states:?}"));
        }
    }
    if divergence.is_none() {
        'keys: for key in keys {
            for node in 0..nodes {
                let own = read(node, key, 1);
                let merged = states.get(&node).and_then(|s| s.get(key));
                if own.as_ref() != merged {
                    divergence = Some(format!(
                        "{key}: node {node} holds {own:?}, the merge is {merged:?}"
                    ));
                    break 'keys;
                }
            }
        }
    }
    (states, divergence)
}

/// What the checker found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Operations recorded.
    pub ops: usize,
    /// Operations acknowledged (reads and writes).
    pub acknowledged: usize,
    /// Operations that failed (error reply or no connection).
    pub failed: usize,
    /// Operations without a reply.
    pub unknown: usize,
    /// Writes recorded, and of them acknowledged.
    pub writes: usize,
    /// Writes acknowledged.
    pub writes_acknowledged: usize,
    /// Acknowledged values missing on some node and not superseded.
    pub lost: usize,
    /// Values read that no VSET of that key sent.
    pub phantoms: usize,
    /// Values present at the end although an acknowledged write
    /// superseded them.
    pub resurrected: usize,
    /// Replies of an unexpected shape.
    pub bad_replies: usize,
    /// Acknowledged values that are gone only because an unacknowledged
    /// VDEL (which may or may not have applied) covered them.
    pub excused_by_unacked_del: usize,
    /// Acknowledged values superseded by a later write.
    pub superseded: usize,
    /// Most sibling values any read returned.
    pub max_siblings: usize,
    /// Most sibling values in a final state.
    pub final_max_siblings: usize,
    /// Counter operations (INCRBY and WATCH transactions) recorded.
    pub incrs: usize,
    /// Counter operations acknowledged.
    pub incrs_acked: usize,
    /// WATCH transactions recorded.
    pub execs: usize,
    /// WATCH transactions whose EXEC wrote.
    pub execs_acked: usize,
    /// WATCH transactions whose EXEC aborted.
    pub execs_aborted: usize,
    /// Acknowledged increments counted by no final sibling.
    pub incr_lost: usize,
    /// Counter values that are not a sum of distinct increments sent.
    pub incr_phantoms: usize,
    /// Most siblings in a final state of a counter key.
    pub counter_siblings: usize,
    /// FLUSHALLs recorded.
    pub flushes: usize,
    /// FLUSHALLs acknowledged.
    pub flushes_acked: usize,
    /// Acknowledged values missing, neither superseded nor lost: a
    /// FLUSHALL may have cleared a node after they were written.
    pub flushed: usize,
    /// Acknowledged increments counted by no final sibling, excused the
    /// same way.
    pub incr_flushed: usize,
    /// Values (and counter values) read after an acknowledged FLUSHALL
    /// returned although every copy of them had landed before it began.
    pub stale_after_flush: usize,
    /// Values superseded by an acknowledged write and present at the end,
    /// excused because a FLUSHALL may have cleared the superseding record
    /// while a copy of the value was still on its way.
    pub revived_across_flush: usize,
    /// The replica check only ([`check_replicas`]): acknowledged writes
    /// and increments some replicas lack, excused by a crash
    /// ([`Gaps::crashed`]); each operation once.
    pub crash_gaps: usize,
    /// The same, excused by a clear seen after they began (and not by a
    /// crash).
    pub clear_gaps: usize,
    /// The excused gaps, named (capped as `problems`).
    pub gaps: Vec<String>,
    /// Whether the nodes converged.
    pub converged: bool,
    /// Time to converge after the heal.
    pub converge_ms: u64,
    /// One line per problem found (capped).
    pub problems: Vec<String>,
}

/// Problems listed in a report at most.
const PROBLEMS_LISTED: usize = 20;

impl Report {
    /// The share of operations acknowledged, in percent.
    pub fn availability(&self) -> f64 {
        if self.ops == 0 {
            100.0
        } else {
            100.0 * self.acknowledged as f64 / self.ops as f64
        }
    }

    /// The share of writes acknowledged, in percent.
    pub fn write_availability(&self) -> f64 {
        if self.writes == 0 {
            100.0
        } else {
            100.0 * self.writes_acknowledged as f64 / self.writes as f64
        }
    }

    /// Whether nothing was lost, invented or resurrected, and the nodes
    /// converged.
    pub fn is_clean(&self) -> bool {
        self.lost == 0
            && self.phantoms == 0
            && self.incr_lost == 0
            && self.incr_phantoms == 0
            && self.resurrected == 0
            && self.stale_after_flush == 0
            && self.bad_replies == 0
            && self.converged
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < PROBLEMS_LISTED {
            self.problems.push(text);
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ops={} acknowledged={} failed={} unknown={} lost={} (must be 0) phantoms={} \
             max_siblings={} converge_ms={} resurrected={} converged={} writes_acked={}/{} \
             superseded={} excused_by_unacked_del={} incrs={} incrs_acked={} execs={} \
             execs_acked={} execs_aborted={} incr_lost={} (must be 0) incr_phantoms={} \
             counter_siblings={} flushes={} flushes_acked={} flushed={} incr_flushed={} \
             stale_after_flush={} (must be 0) revived_across_flush={}",
            self.ops,
            self.acknowledged,
            self.failed,
            self.unknown,
            self.lost,
            self.phantoms,
            self.max_siblings,
            self.converge_ms,
            self.resurrected,
            self.converged,
            self.writes_acknowledged,
            self.writes,
            self.superseded,
            self.excused_by_unacked_del,
            self.incrs,
            self.incrs_acked,
            self.execs,
            self.execs_acked,
            self.execs_aborted,
            self.incr_lost,
            self.incr_phantoms,
            self.counter_siblings,
            self.flushes,
            self.flushes_acked,
            self.flushed,
            self.incr_flushed,
            self.stale_after_flush,
            self.revived_across_flush,
        )
    }
}

/// Judges `ops` against the final states (see the module docs), with no
/// bound on how late a message may arrive ([`Timing::default`]).
pub fn check(ops: &[Op], fin: &Final) -> Report {
    check_with(ops, fin, &Timing::default())
}

/// What the checker may assume about time beyond what the history shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timing {
    /// How long after an operation completed a message it caused may still
    /// reach a node and act there: a request held on a slow link, a read
    /// repair queued by a read's tail, the rest of a FLUSHALL's fan-out
    /// its client stopped waiting for. `None`: no bound, so an
    /// unacknowledged FLUSHALL may take effect at any later time, and a
    /// copy of a value may land on a node any time after it was sent.
    pub late: Option<Duration>,
    /// The clears the recorder saw, if it watched the stores (the
    /// simulation does): then what clears excuse is judged from them, not
    /// from what the FLUSHALLs recorded might have done; those still say
    /// what must be gone after an acknowledged one.
    pub clears: Option<ClearsSeen>,
}

impl Timing {
    /// The latest time a message caused by an operation that completed at
    /// `completed` may act (`None`: no bound).
    fn latest(&self, completed: Duration) -> Option<Duration> {
        self.late.map(|late| completed + late)
    }
}

/// Every clear of a node's store a recorder saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClearsSeen {
    /// (node, when) of each clear, each time no earlier than the clear (the
    /// simulation looks between steps and gives a clear the time its step
    /// ended): a write that began at or after it reached that node after
    /// the clear.
    pub at: Vec<(usize, Duration)>,
    /// W: the nodes that hold a write when it is acknowledged (a write's
    /// own `W` overrides it). Clears remove a write from every node that
    /// held it only if at least this many nodes were cleared after it
    /// began.
    pub write_quorum: usize,
}

/// When some node may have been cleared: from a FLUSHALL's invocation
/// until its completion when acknowledged (every node answered it had
/// cleared), and until [`Timing::late`] after its completion otherwise (a
/// failed or unknown one may have reached any node, or none); or exactly
/// when a clear was seen.
#[derive(Debug, Clone, Copy)]
struct ClearWindow {
    from: Duration,
    /// `None`: no end.
    until: Option<Duration>,
}

/// What the checker knows of the clears: when they may have happened, and
/// the clears seen if any.
struct Clearing<'a> {
    windows: Vec<ClearWindow>,
    seen: Option<&'a ClearsSeen>,
}

impl<'a> Clearing<'a> {
    fn new(ops: &[Op], timing: &'a Timing) -> Self {
        let windows = match &timing.clears {
            Some(seen) => seen
                .at
                .iter()
                .map(|&(_, at)| ClearWindow {
                    from: at,
                    until: Some(at),
                })
                .collect(),
            None => ops
                .iter()
                .filter(|op| op.call == Call::FlushAll && op.outcome.maybe_applied())
                .map(|op| ClearWindow {
                    from: op.invoked,
                    until: if op.outcome.is_ok() {
                        Some(op.completed)
                    } else {
                        timing.latest(op.completed)
                    },
                })
                .collect(),
        };
        Clearing {
            windows,
            seen: timing.clears.as_ref(),
        }
    }

    /// Whether clears after `t` may have removed a write that began at
    /// `t` from every node that held it: some node may have been cleared
    /// after `t`, and, when the clears were seen, at least its write
    /// quorum (`w`, or [`ClearsSeen::write_quorum`]) of distinct nodes were.
    fn after(&self, t: Duration, w: Option<usize>) -> bool {
        match self.seen {
            Some(seen) => {
                let nodes: BTreeSet<usize> = seen
                    .at
                    .iter()
                    .filter(|&&(_, at)| at > t)
                    .map(|&(node, _)| node)
                    .collect();
                !nodes.is_empty() && nodes.len() >= w.unwrap_or(seen.write_quorum)
            }
            None => self
                .windows
                .iter()
                .any(|w| w.until.is_none_or(|until| until > t)),
        }
    }
}

/// A write's own quorum override.
fn write_quorum(call: &Call) -> Option<usize> {
    match call {
        Call::Set { w, .. } | Call::Del { w, .. } => *w,
        _ => None,
    }
}

/// Whether `op`, an operation on `value`'s key, may have sent a copy of
/// `value` to some node. A write sends its coordinator's whole record,
/// which holds whatever live siblings that replica had (an INCRBY and a
/// WATCH transaction also merge a quorum read into it); a read repairs
/// with its merge, which lists every live value, so an answered read
/// carries only what it returned and an unanswered one anything; a WATCH
/// transaction's GET may have run whatever became of its EXEC.
fn may_carry(op: &Op, value: &str) -> bool {
    match (&op.call, &op.outcome) {
        (Call::FlushAll, _) => false,
        (Call::Exec { .. }, _) => true,
        (_, Outcome::Failed { sent: false, .. }) => false,
        (Call::Get { .. }, Outcome::Read { values, .. }) => values.iter().any(|v| v == value),
        _ => true,
    }
}

/// Whether a copy of `value` (of the key of every op in `on_key`) may
/// have outlived the acknowledged FLUSHALL `flush`: some operation that
/// may carry it began before the flush returned and completed less than
/// [`Timing::late`] before it began, so a copy may have landed on a node
/// after that node cleared. Otherwise every copy had landed before the
/// flush began, and every node cleared it.
fn may_outlive(on_key: &[&Op], value: &str, flush: &Op, timing: &Timing) -> bool {
    on_key.iter().any(|op| {
        op.invoked <= flush.completed
            && timing
                .latest(op.completed)
                .is_none_or(|t| t >= flush.invoked)
            && may_carry(op, value)
    })
}

/// Judges `ops` against the final states (see the module docs), assuming
/// `timing`.
pub fn check_with(ops: &[Op], fin: &Final, timing: &Timing) -> Report {
    judge(ops, fin, timing, None)
}

/// What the replica check ([`check_replicas`]) may excuse beyond the
/// history: copies a crash may have lost.
pub struct Gaps<'a> {
    /// The fewest replicas a write excused by [`Gaps::crashed`] must still
    /// be on: W. Its coordinator's copy and W - 1 acknowledgements were
    /// durable, a fallback's hint among them (replayed since); a crash
    /// loses only the copies not yet sent.
    pub held_min: usize,
    /// Whether a crash may have lost the copies of the acknowledged
    /// operation `op` that some replicas lack, given the ranks that hold
    /// it: which crash, if one may have.
    pub crashed: &'a dyn Fn(&Op, &[usize]) -> Option<String>,
}

/// Why a gap is excused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Gap {
    /// A crash, named.
    Crash(String),
    Clear,
}

impl Gaps<'_> {
    /// Whether acknowledged `op`, held by the ranks `holding` (not by
    /// every rank), may lack the others, and why.
    fn excuse(&self, op: &Op, holding: &[usize], clearing: &Clearing<'_>) -> Option<Gap> {
        if holding.is_empty() {
            return None; // gone everywhere: the rules of `check_with` alone
        }
        // A clear first: it is the excuse the history already grants, so
        // `crash_gaps` counts only what needs the crash.
        if clearing.after(op.invoked, Some(1)) {
            return Some(Gap::Clear);
        }
        if holding.len() < self.held_min {
            return None;
        }
        (self.crashed)(op, holding).map(Gap::Crash)
    }
}

/// The operations a replica check excused, by index in the history.
#[derive(Debug, Default)]
struct Excused {
    crash: BTreeSet<usize>,
    clear: BTreeSet<usize>,
}

impl Excused {
    fn note(&mut self, report: &mut Report, i: usize, gap: Gap, what: String) {
        let (fresh, why) = match gap {
            Gap::Crash(crash) => (self.crash.insert(i), crash),
            Gap::Clear => (self.clear.insert(i), "a clear since it began".to_owned()),
        };
        if fresh && report.gaps.len() < PROBLEMS_LISTED {
            report.gaps.push(format!("{what}: {why}"));
        }
    }

    fn count(&self, report: &mut Report) {
        report.crash_gaps = self.crash.len();
        report.clear_gaps = self.clear.difference(&self.crash).count();
    }
}

/// The replica check: judges `ops` against the replicas' own copies —
/// `replicas`' "nodes" are replica ranks, rank r holding each key's state
/// on its r-th replica, read from its store — with every rule of
/// [`check_with`]; an acknowledged write or increment that some ranks
/// lack (not all) is excused only by `gaps` (see the module docs).
pub fn check_replicas(ops: &[Op], replicas: &Final, timing: &Timing, gaps: &Gaps<'_>) -> Report {
    judge(ops, replicas, timing, Some(gaps))
}

/// [`check_with`], and with `gaps` the replica check's excuses.
fn judge(ops: &[Op], fin: &Final, timing: &Timing, gaps: Option<&Gaps<'_>>) -> Report {
    let mut excused = Excused::default();
    let mut report = Report {
        ops: ops.len(),
        converged: fin.converged,
        converge_ms: fin.converge_ms,
        ..Report::default()
    };
    if let Some(why) = &fin.divergence {
        report.problem(format!("not converged: {why}"));
    }
    // Value → (key, index of the op that wrote it).
    let mut written: HashMap<&str, (&str, usize)> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        match &op.outcome {
            Outcome::Read { .. }
            | Outcome::Written { .. }
            | Outcome::Counted(_)
            | Outcome::Done => report.acknowledged += 1,
            Outcome::Aborted => {}
            Outcome::Failed { error, .. } => {
                report.failed += 1;
                if error.starts_with(BAD_REPLY) {
                    report.bad_replies += 1;
                    report.problem(format!("bad reply: {op:?}"));
                }
            }
            Outcome::Unknown(_) => report.unknown += 1,
        }
        if op.call.is_write() {
            report.writes += 1;
            if op.outcome.is_ok() {
                report.writes_acknowledged += 1;
            }
        }
        if op.call == Call::FlushAll {
            report.flushes += 1;
            if op.outcome.is_ok() {
                report.flushes_acked += 1;
            }
        }
        if let Call::Set { value, .. } = &op.call {
            written.insert(value, (&op.key, i));
        }
    }
    // Counter keys hold sums, not written values: `check_counters` judges them.
    let counters: BTreeSet<&str> = ops
        .iter()
        .filter(|op| op.call.increment().is_some())
        .map(|op| op.key.as_str())
        .collect();
    // Every value observed, by key: reads during the run and at the end.
    let mut observed: HashSet<(&str, &str)> = HashSet::new();
    let mut phantoms: BTreeSet<(&str, &str)> = BTreeSet::new();
    for op in ops.iter().filter(|op| !counters.contains(op.key.as_str())) {
        if let Outcome::Read { values, .. } = &op.outcome {
            report.max_siblings = report.max_siblings.max(values.len());
            for v in values {
                observed.insert((&op.key, v));
            }
        }
    }
    for states in fin.states.values() {
        for (key, (_, values)) in states {
            if counters.contains(key.as_str()) {
                continue;
            }
            report.max_siblings = report.max_siblings.max(values.len());
            report.final_max_siblings = report.final_max_siblings.max(values.len());
            for v in values {
                observed.insert((key, v));
            }
        }
    }
    for &(key, value) in &observed {
        if written.get(value).is_none_or(|&(k, _)| k != key) {
            phantoms.insert((key, value));
        }
    }
    report.phantoms = phantoms.len();
    for (key, value) in &phantoms {
        report.problem(format!(
            "phantom: {key} read {value:?}, which no VSET of {key} sent"
        ));
    }
    // Who supersedes each value: writes whose context's read listed it.
    // A failed or unknown VSET whose value nobody ever saw was not applied.
    // Acknowledged ones by the latest invocation among them.
    let mut by_acked: HashMap<&str, Duration> = HashMap::new();
    // The acknowledged writes superseding each value, by index.
    let mut acked_by: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_applied: HashSet<&str> = HashSet::new();
    let mut by_unacked_del: HashSet<&str> = HashSet::new();
    for (i, op) in ops.iter().enumerate() {
        let acked = op.outcome.is_ok();
        let sent = !matches!(op.outcome, Outcome::Failed { sent: false, .. });
        let applied = match &op.call {
            Call::Get { .. } | Call::Incr { .. } | Call::Exec { .. } | Call::FlushAll => false,
            Call::Set { value, .. } => {
                acked || (sent && observed.contains(&(op.key.as_str(), value.as_str())))
            }
            Call::Del { .. } => sent,
        };
        for v in op.call.covers() {
            if acked {
                let latest = by_acked.entry(v).or_default();
                *latest = (*latest).max(op.invoked);
                acked_by.entry(v).or_default().push(i);
            }
            if applied {
                by_applied.insert(v);
                if !acked && matches!(op.call, Call::Del { .. }) {
                    by_unacked_del.insert(v);
                }
            }
        }
    }
    let clearing = Clearing::new(ops, timing);
    let mut on_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.call != Call::FlushAll) {
        on_key.entry(&op.key).or_default().push(op);
    }
    // Lost: acknowledged, missing somewhere, superseded by nothing applied,
    // and no FLUSHALL may have cleared a node after it was sent.
    for (i, op) in ops.iter().enumerate() {
        let (Call::Set { value, .. }, true) = (&op.call, op.outcome.is_ok()) else {
            continue;
        };
        let missing: Vec<usize> = fin
            .states
            .iter()
            .filter(|(_, states)| {
                states
                    .get(&op.key)
                    .is_none_or(|(_, values)| !values.contains(value))
            })
            .map(|(&node, _)| node)
            .collect();
        let everywhere_missing = fin.states.is_empty();
        if missing.is_empty() && !everywhere_missing {
            continue;
        }
        if by_applied.contains(value.as_str()) {
            report.superseded += 1;
            if !by_acked.contains_key(value.as_str()) && by_unacked_del.contains(value.as_str()) {
                report.excused_by_unacked_del += 1;
            }
            continue;
        }
        if clearing.after(op.invoked, write_quorum(&op.call)) {
            report.flushed += 1;
            continue;
        }
        if let Some(gaps) = gaps {
            let holding = holders(fin, &missing);
            if let Some(gap) = gaps.excuse(op, &holding, &clearing) {
                let what = format!(
                    "{} = {value:?} (acknowledged by node {} at {:?}) is on {holding:?} only",
                    op.key, op.node, op.completed
                );
                excused.note(&mut report, i, gap, what);
                continue;
            }
        }
        report.lost += 1;
        report.problem(format!(
            "lost: {} = {value:?} (acknowledged by node {} at {:?}) is missing on nodes \
             {missing:?}; no write superseded it and no FLUSHALL may have followed it",
            op.key, op.node, op.completed
        ));
    }
    // Resurrected: superseded by an acknowledged write, yet present —
    // unless a FLUSHALL may have cleared every superseding record while a
    // copy of the value was still on its way to some node.
    let mut revived: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (node, states) in &fin.states {
        for (key, on_key) in &on_key {
            let Some((_, values)) = states.get(*key) else {
                continue;
            };
            for v in values {
                let Some(&superseded_at) = by_acked.get(v.as_str()) else {
                    continue;
                };
                let carried_until = on_key
                    .iter()
                    .filter(|op| may_carry(op, v))
                    .map(|op| op.completed)
                    .max()
                    .map(|last| timing.latest(last));
                let revivable = clearing.after(superseded_at, None)
                    && clearing.windows.iter().any(|w| {
                        w.until.is_none_or(|until| until > superseded_at)
                            && carried_until.is_some_and(|c| c.is_none_or(|c| c >= w.from))
                    });
                if revivable {
                    revived.insert((key, v));
                    continue;
                }
                // On a replica that some acknowledged superseding write
                // did not reach: excused only if each such write is.
                if let Some(gaps) = gaps {
                    let lacking: Vec<usize> = fin
                        .states
                        .iter()
                        .filter(|(_, s)| s.get(*key).is_none_or(|(_, vs)| !vs.contains(v)))
                        .map(|(&n, _)| n)
                        .collect();
                    let superseders = acked_by.get(v.as_str()).map_or(&[][..], Vec::as_slice);
                    let each: Option<Vec<Gap>> = superseders
                        .iter()
                        .map(|&s| gaps.excuse(&ops[s], &lacking, &clearing))
                        .collect();
                    if let Some(each) = each {
                        for (&s, gap) in superseders.iter().zip(each) {
                            let what = format!(
                                "{key} = {v:?} is still on node {node}, which {:?} of \
                                 client {} (acknowledged at {:?}) superseding it did not reach",
                                ops[s].call, ops[s].client, ops[s].completed
                            );
                            excused.note(&mut report, s, gap, what);
                        }
                        continue;
                    }
                }
                report.resurrected += 1;
                report.problem(format!(
                    "resurrected: {key} = {v:?} on node {node}, though an acknowledged write \
                     superseded it"
                ));
            }
        }
    }
    report.revived_across_flush = revived.len();
    // Stale after a flush: a value every copy of which had landed before an
    // acknowledged FLUSHALL began, read after it returned.
    let mut stale: BTreeSet<(&str, &str)> = BTreeSet::new();
    for flush in ops
        .iter()
        .filter(|op| op.call == Call::FlushAll && op.outcome.is_ok())
    {
        let reads_after = ops.iter().filter_map(|op| match &op.outcome {
            Outcome::Read { values, .. } if op.invoked > flush.completed => Some((
                op.key.as_str(),
                values,
                format!("a read at {:?}", op.invoked),
            )),
            _ => None,
        });
        let finals = fin.states.iter().flat_map(|(node, states)| {
            states.iter().map(move |(key, (_, values))| {
                (key.as_str(), values, format!("node {node}'s final state"))
            })
        });
        for (key, values, seen) in reads_after.chain(finals) {
            if counters.contains(key) {
                continue;
            }
            for v in values {
                let Some(&(_, writer)) = written.get(v.as_str()) else {
                    continue; // a phantom, reported as such
                };
                if ops[writer].invoked > flush.completed
                    || stale.contains(&(key, v.as_str()))
                    || may_outlive(on_key.get(key).map_or(&[], Vec::as_slice), v, flush, timing)
                {
                    continue;
                }
                stale.insert((key, v));
                report.problem(format!(
                    "stale after FLUSHALL: {key} = {v:?} in {seen}, though the FLUSHALL \
                     acknowledged at {:?} (invoked at {:?}) cleared every node after every copy \
                     of it had landed",
                    flush.completed, flush.invoked
                ));
            }
        }
    }
    report.stale_after_flush = stale.len();
    let judged = Judged {
        clearing: &clearing,
        on_key: &on_key,
        timing,
        gaps,
    };
    check_counters(ops, fin, &judged, &mut excused, &mut report);
    excused.count(&mut report);
    report
}

/// The nodes (ranks) of `fin` not in `missing`.
fn holders(fin: &Final, missing: &[usize]) -> Vec<usize> {
    fin.states
        .keys()
        .copied()
        .filter(|n| !missing.contains(n))
        .collect()
}

/// What [`judge`] hands [`check_counters`].
struct Judged<'a> {
    clearing: &'a Clearing<'a>,
    on_key: &'a BTreeMap<&'a str, Vec<&'a Op>>,
    timing: &'a Timing,
    gaps: Option<&'a Gaps<'a>>,
}

/// Judges the counter keys (those of [`Call::Incr`] and [`Call::Exec`]
/// operations). Each increment of a key is a power of two no other
/// increment of that key uses, so a value names the increments it
/// counts: its set bits. The workload uses only even bits, so an
/// increment counted twice (`2^i + 2^i = 2^(i+1)`) sets an odd bit no one
/// sent.
///
/// - **lost** (`incr_lost`): an acknowledged increment whose bit is set
///   in no final sibling of its key on some node. Nothing legitimately
///   removes one: an INCRBY adds to the value it computed from, and a
///   transaction's SET writes the value it read plus its own increment.
/// - **phantoms** (`incr_phantoms`): a value (an INCRBY reply, a
///   transaction's read, a final sibling) that is not a sum of distinct
///   increments that may have reached that key — an unsent or aborted
///   one, a double count, a non-integer — and an INCRBY reply without its
///   own increment.
///
/// Failed and unknown increments may or may not be counted.
fn check_counters(
    ops: &[Op],
    fin: &Final,
    judged: &Judged<'_>,
    excused: &mut Excused,
    report: &mut Report,
) {
    let Judged {
        clearing,
        on_key,
        timing,
        gaps,
    } = *judged;
    let mut sent: BTreeMap<&str, i64> = BTreeMap::new();
    for op in ops {
        let Some(by) = op.call.increment() else {
            continue;
        };
        report.incrs += 1;
        if op.outcome.is_ok() {
            report.incrs_acked += 1;
        }
        if let Call::Exec { .. } = op.call {
            report.execs += 1;
            match op.outcome {
                Outcome::Counted(_) => report.execs_acked += 1,
                Outcome::Aborted => report.execs_aborted += 1,
                _ => {}
            }
        }
        if op.outcome.maybe_applied() {
            *sent.entry(&op.key).or_default() |= by;
        }
    }
    // (key, value) → where it was seen; judged once each.
    let mut seen: BTreeMap<(&str, String), String> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let value = match (&op.call, &op.outcome) {
            (Call::Incr { by }, Outcome::Counted(v)) => {
                if v & by == 0 {
                    report.incr_phantoms += 1;
                    report.problem(format!(
                        "INCRBY {} {by} answered {v}, which lacks its own increment (op {i})",
                        op.key
                    ));
                }
                *v
            }
            (Call::Exec { read: Some(r), .. }, _) => *r,
            _ => continue,
        };
        seen.entry((&op.key, value.to_string()))
            .or_insert_with(|| format!("op {i}"));
    }
    for (node, states) in &fin.states {
        for (key, (_, values)) in states {
            if !sent.contains_key(key.as_str()) {
                continue;
            }
            report.counter_siblings = report.counter_siblings.max(values.len());
            for v in values {
                seen.entry((key, v.clone()))
                    .or_insert_with(|| format!("the final state on node {node}"));
            }
        }
    }
    for ((key, value), at) in &seen {
        let allowed = sent.get(key).copied().unwrap_or(0);
        let unsent = value.parse::<i64>().map(|v| v & !allowed);
        if unsent.as_ref().is_ok_and(|bits| *bits == 0) {
            continue;
        }
        report.incr_phantoms += 1;
        report.problem(format!(
            "counter phantom: {key} = {value:?} in {at} is not a sum of distinct increments \
             sent to {key} (bits no one sent: {unsent:?})"
        ));
    }
    for (i, op) in ops.iter().enumerate() {
        let (Some(by), true) = (op.call.increment(), op.outcome.is_ok()) else {
            continue;
        };
        let missing: Vec<usize> = fin
            .states
            .iter()
            .filter(|(_, states)| {
                states.get(&op.key).is_none_or(|(_, values)| {
                    !values
                        .iter()
                        .any(|v| v.parse::<i64>().is_ok_and(|v| v & by != 0))
                })
            })
            .map(|(&node, _)| node)
            .collect();
        if missing.is_empty() && !fin.states.is_empty() {
            continue;
        }
        if clearing.after(op.invoked, None) {
            report.incr_flushed += 1;
            continue;
        }
        if let Some(gaps) = gaps {
            let holding = holders(fin, &missing);
            if let Some(gap) = gaps.excuse(op, &holding, clearing) {
                let what = format!(
                    "{:?} of {} (acknowledged by node {} at {:?}) is counted on {holding:?} only",
                    op.call, op.key, op.node, op.completed
                );
                excused.note(report, i, gap, what);
                continue;
            }
        }
        report.incr_lost += 1;
        report.problem(format!(
            "lost increment: {:?} of {} (acknowledged by node {} at {:?}, client {}) is \
             counted by no sibling on nodes {missing:?} and no FLUSHALL may have followed it",
            op.call, op.key, op.node, op.completed, op.client
        ));
    }
    // Stale after a flush: a value counting an increment every copy of
    // which had landed before an acknowledged FLUSHALL began (no counter
    // operation on the key ran across it), read after it returned.
    let mut stale: BTreeSet<(&str, String)> = BTreeSet::new();
    for flush in ops
        .iter()
        .filter(|op| op.call == Call::FlushAll && op.outcome.is_ok())
    {
        for (&key, on_key) in on_key.iter().filter(|(key, _)| sent.contains_key(*key)) {
            if may_outlive(on_key, "", flush, timing) {
                continue;
            }
            let before: i64 = on_key
                .iter()
                .filter(|op| op.invoked <= flush.completed)
                .filter_map(|op| op.call.increment())
                .fold(0, |bits, by| bits | by);
            let after = on_key.iter().filter_map(|op| {
                let value = match (&op.call, &op.outcome) {
                    _ if op.invoked <= flush.completed => return None,
                    (Call::Incr { .. }, Outcome::Counted(v)) => *v,
                    (Call::Exec { read: Some(r), .. }, _) => *r,
                    _ => return None,
                };
                Some((value.to_string(), format!("a reply at {:?}", op.invoked)))
            });
            let finals = fin.states.iter().flat_map(|(node, states)| {
                states.get(key).into_iter().flat_map(move |(_, values)| {
                    values
                        .iter()
                        .map(move |v| (v.clone(), format!("node {node}'s final state")))
                })
            });
            for (value, seen) in after.chain(finals) {
                let old = value.parse::<i64>().map_or(0, |v| v & before);
                if old == 0 || !stale.insert((key, value.clone())) {
                    continue;
                }
                report.problem(format!(
                    "stale after FLUSHALL: {key} = {value} in {seen} counts increments \
                     ({old:#x}) from before the FLUSHALL acknowledged at {:?} (invoked at {:?}), \
                     which cleared every node after every copy of them had landed",
                    flush.completed, flush.invoked
                ));
            }
        }
    }
    report.stale_after_flush += stale.len();
}
