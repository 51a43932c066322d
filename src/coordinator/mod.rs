//! The seam every client data command goes through.
//!
//! A [`Coordinator`] turns a client's intent ([`WriteOp`], a read of some
//! keys, a scan) into versioned reads and writes. This is the only layer
//! that knows N, R and W; it reaches this node's copy of the data through
//! the replica's service (`replica::ReplicaService`), and a node alone is
//! a cluster of one. RESP handlers never touch the replica or the store
//! directly.

mod answers;
mod batches;
mod cluster;
mod quorum;

use crate::model::ops::{OpError, WriteOp};
pub use crate::replica::{DbKeys, KeyCounts, ReplicaReport};
pub use cluster::{ClusterCoordinator, Healing, QuorumPolicy, Repair};

use crate::model::record::Record;
use crate::replica::{ServiceError, Written};
use crate::storage::{HealthReport, StoreError};
use crate::version::NodeId;
use bytes::Bytes;
use thiserror::Error;

pub use crate::task::BoxFuture;

/// Why a coordinated operation failed.
#[derive(Debug, Error)]
pub enum CoordinatorError {
    /// The local store failed.
    #[error("storage error: {0}")]
    Storage(#[from] StoreError),
    /// Fewer replicas answered than the quorum requires.
    #[error(
        "NOQUORUM {operation} needed {required} of {contacted} replicas, {succeeded} succeeded"
    )]
    QuorumFailed {
        /// `read` or `write`.
        operation: &'static str,
        /// R or W.
        required: usize,
        /// Replicas that answered in time.
        succeeded: usize,
        /// Replicas asked.
        contacted: usize,
    },
    /// The replica a write was forwarded to coordinated it and missed its
    /// quorum; its own words (`NOQUORUM ...`), so that clients see the
    /// same error whichever node they asked.
    #[error("{0}")]
    RemoteQuorumFailed(String),
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// Another node failed the request.
    #[error("peer error: {0}")]
    Remote(String),
    /// A write could not be applied to the current value.
    #[error(transparent)]
    Rejected(#[from] OpError),
    /// A layout change was refused or not saved (`DYNAMO LEAVE|REMOVE|WEIGHT`).
    #[error(transparent)]
    Layout(#[from] crate::membership::ChangeError),
    /// No member has this name or id.
    #[error("no member named {0:?} (a name or a 16-digit hex id, as DYNAMO MEMBERS shows)")]
    UnknownMember(String),
}

impl From<ServiceError> for CoordinatorError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Store(e) => Self::Storage(e),
            ServiceError::Stopped => Self::ShuttingDown,
        }
    }
}

/// Per-request read options (`VGET key R n`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// R for this request; `None` uses the cluster default.
    pub r: Option<usize>,
}

/// Per-request write options (`VSET ... W n`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// W for this request; `None` uses the cluster default.
    pub w: Option<usize>,
    /// PW for this request: acknowledgements of real replicas, not
    /// fallbacks, it needs; `None` uses the cluster default.
    pub pw: Option<usize>,
    /// If any write of the batch does not apply, write none (MSETNX).
    /// Holds on one node; across nodes it is best effort (docs/semantics.md).
    pub all_or_nothing: bool,
}

/// A member as `DYNAMO MEMBERS` shows it.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    /// Who.
    pub info: crate::peer::message::MemberInfo,
    /// Reachable from this node now: linked, and not marked down.
    pub up: bool,
    /// What the failure detector thinks of it (`None` for this node).
    pub health: Option<crate::membership::failure::PeerHealth>,
    /// Partitions it holds as first replica.
    pub primary: usize,
    /// Partitions it holds as any replica.
    pub replica: usize,
    /// Its state in the layout.
    pub state: crate::membership::layout::MemberState,
    /// Its incarnation (raised at each of its starts).
    pub incarnation: u64,
}

/// A layout change an operator asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum LayoutCommand {
    /// `DYNAMO LEAVE`: this node hands its data over and exits.
    Leave,
    /// `DYNAMO REMOVE member`: a dead member's data is re-replicated from
    /// the survivors, and its id never comes back.
    Remove(String),
    /// `DYNAMO WEIGHT member w`.
    Weight(String, f64),
}

/// The handoff's numbers (docs/cluster.md, "Handoff").
#[derive(Debug, Clone, Default)]
pub struct HandoffReport {
    /// Partitions the current target gives this node to receive.
    pub partitions_to_receive: usize,
    /// Of those, received.
    pub partitions_done: usize,
    /// Streams receiving now.
    pub streams_in: usize,
    /// Batches being served now.
    pub streams_out: usize,
    /// Streams that failed several batches in a row.
    pub stuck: usize,
    /// Partitions to receive, but not every member has gossiped the new
    /// target yet.
    pub waiting_for_gossip: bool,
    /// Bytes per second received since the current handoff began.
    pub rate_bytes_per_s: f64,
    /// Seconds left at the pace so far, once a partition is in.
    pub eta_s: Option<f64>,
    /// Records received since start (a record received twice counts twice).
    pub keys_received: u64,
    /// Their bytes.
    pub bytes_received: u64,
    /// Partitions received whole since start.
    pub partitions_received: u64,
    /// Batches served to other nodes' streams.
    pub batches_served: u64,
    /// Their bytes.
    pub bytes_served: u64,
    /// Batches refused because the node served as many as it may.
    pub busy_refusals: u64,
    /// Failed batches (each retried from its cursor).
    pub retries: u64,
    /// Partitions whose old copies were dropped.
    pub partitions_dropped: u64,
}

/// The hints this node keeps as a fallback (docs/cluster.md, "Sloppy
/// quorum and hinted handoff").
#[derive(Debug, Clone, Default)]
pub struct HintsReport {
    /// By target replica.
    pub targets: Vec<TargetHintsReport>,
    /// Copies this node's writes handed to fallbacks, acknowledged, in
    /// keys.
    pub sent: u64,
    /// Write tails not started (too many at once): replicas that fail
    /// those writes get no hint.
    pub write_tails_dropped: u64,
}

/// The hints kept for one target.
#[derive(Debug, Clone, Default)]
pub struct TargetHintsReport {
    /// The target's id.
    pub id: NodeId,
    /// Its name (its id in hex when it is not a member).
    pub name: String,
    /// Keys hinted.
    pub keys: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Age of the oldest hint held (the window's start), if any.
    pub oldest_age_ms: Option<u64>,
    /// Handed over since start.
    pub replayed: u64,
    /// Refused (window or cap) since start, in keys.
    pub dropped: u64,
    /// While its hints are being replayed: how many there were when the
    /// replay began.
    pub replaying: Option<u64>,
}

impl HintsReport {
    /// Keys hinted, over every target.
    pub fn keys(&self) -> u64 {
        self.targets.iter().map(|t| t.keys).sum()
    }
}

/// The layout as this node holds it.
#[derive(Debug, Clone, Default)]
pub struct LayoutReport {
    /// Its epoch.
    pub epoch: u64,
    /// Its digest.
    pub digest: u64,
    /// Whether reads follow the target: nothing is moving.
    pub settled: bool,
    /// Members joining (receiving, not read from yet).
    pub joining: usize,
    /// Members leaving (read from, giving their data away).
    pub leaving: usize,
    /// Removed ids kept as tombstones.
    pub removed: usize,
    /// Target members that have not synced the target yet.
    pub waiting_to_settle: usize,
}

/// What a coordinator reports for `INFO dynamo` and `DYNAMO STATUS`, as
/// values: the RESP face renders them.
#[derive(Debug, Clone)]
pub struct CoordinatorInfo {
    /// This node's copy of the data.
    pub replica: ReplicaReport,
    /// The cluster as this node sees it.
    pub cluster: ClusterReport,
}

/// The cluster as this node sees it.
#[derive(Debug, Clone)]
pub struct ClusterReport {
    /// Members in this node's view.
    pub members: usize,
    /// Of those, reachable now (this node included).
    pub members_up: usize,
    /// Partitions this node holds as first replica.
    pub partitions_primary: usize,
    /// Partitions it holds as any replica.
    pub partitions_replica: usize,
    /// N as the ring has it (capped at the members).
    pub replicas: usize,
    /// R and W, capped at N.
    pub read_quorum: usize,
    /// W.
    pub write_quorum: usize,
    /// Reads and writes that missed their quorum.
    pub quorum_failures: u64,
    /// Read repairs sent.
    pub read_repairs: u64,
    /// Read repairs dropped (queue full).
    pub read_repairs_dropped: u64,
    /// Writes forwarded to a replica.
    pub writes_forwarded: u64,
    /// The failure detector's totals.
    pub failures: crate::membership::failure::DetectionCounts,
    /// Average request latency to each connected peer, by name, in µs.
    pub peer_latency_us: Vec<(String, f64)>,
    /// The layout.
    pub layout: LayoutReport,
    /// The handoff.
    pub handoff: HandoffReport,
    /// The hints kept here.
    pub hints: HintsReport,
    /// Anti-entropy.
    pub aae: AaeReport,
}

/// Anti-entropy's counters (docs/cluster.md, "Anti-entropy").
#[derive(Debug, Clone, Default)]
pub struct AaeReport {
    /// Whether the worker runs (`--aae-interval` above 0).
    pub enabled: bool,
    /// Exchanges begun since start.
    pub exchanges: u64,
    /// Keys whose records were exchanged because they differed.
    pub keys_repaired: u64,
    /// Dead records (tombstones) removed here.
    pub reaped: u64,
    /// Record bytes fetched and sent.
    pub bytes: u64,
    /// How long ago the last round that reached every peer it meant to
    /// ended: every shared partition was compared then.
    pub last_round_age_ms: Option<u64>,
    /// The last exchange with each peer this node asks.
    pub peers: Vec<PeerAaeReport>,
}

/// The last exchange with one peer.
#[derive(Debug, Clone, Default)]
pub struct PeerAaeReport {
    /// Its id.
    pub id: crate::version::NodeId,
    /// Its name.
    pub name: String,
    /// How long ago it began.
    pub last_age_ms: Option<u64>,
    /// Partitions both replicate.
    pub partitions: usize,
    /// Of those, partitions whose roots differed twice.
    pub differing: usize,
    /// Keys repaired.
    pub keys_repaired: u64,
    /// Why it stopped short, if it did.
    pub error: Option<String>,
}

/// One key's outcome of [`Coordinator::write_each`].
pub type KeyWritten = Result<Written, CoordinatorError>;

/// What RESP handlers call for data.
pub trait Coordinator: Send + Sync + 'static {
    /// Reads the merged records of `keys`, in order (`None` for a key never
    /// written).
    fn read(
        &self,
        keys: Vec<Bytes>,
        options: ReadOptions,
    ) -> BoxFuture<'_, Result<Vec<Option<Record>>, CoordinatorError>>;

    /// Applies writes, each planned against its key's current record; all
    /// or none are applied on this node. Each key's outcome is its own: a
    /// key that misses its quorum fails alone (a pipeline of SETs answers
    /// each as Redis does); the outer error fails them all (this node's
    /// store, a quorum read before a read-modify-write).
    fn write_each(
        &self,
        writes: Vec<(Bytes, WriteOp)>,
        options: WriteOptions,
    ) -> BoxFuture<'_, Result<Vec<KeyWritten>, CoordinatorError>>;

    /// [`Coordinator::write_each`], failed as a whole by the first key
    /// that failed (one command's keys: MSET, DEL k1 k2 ...).
    fn write(
        &self,
        writes: Vec<(Bytes, WriteOp)>,
        options: WriteOptions,
    ) -> BoxFuture<'_, Result<Vec<Written>, CoordinatorError>> {
        Box::pin(async move {
            self.write_each(writes, options)
                .await?
                .into_iter()
                .collect()
        })
    }

    /// Q, the number of partitions keys are spread over.
    fn partitions(&self) -> u32;

    /// Up to `limit` records of `partition` whose keys sort after `after`
    /// (from the partition's start for `None`), in key order. Deleted and
    /// expired records are included: callers filter.
    fn scan_partition(
        &self,
        partition: u16,
        after: Option<Bytes>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(Bytes, Record)>, CoordinatorError>>;

    /// Sets the sibling bound (CONFIG SET siblings-max).
    fn set_siblings_max(&self, max: usize);

    /// Turns read repair on or off (CONFIG SET read-repair).
    fn set_read_repair(&self, on: bool);

    /// Keys holding a live value, and how many of them expire, per
    /// logical database.
    fn key_counts(&self) -> BoxFuture<'_, Result<KeyCounts, CoordinatorError>>;

    /// Removes every key of logical database `db` (FLUSHDB), or of all of
    /// them (`None`: FLUSHALL).
    fn flush(&self, db: Option<u8>) -> BoxFuture<'_, Result<(), CoordinatorError>>;

    /// Now, in ms since the Unix epoch, by the node's clock.
    fn now_ms(&self) -> u64;

    /// Lines for `INFO dynamo`.
    fn info(&self) -> CoordinatorInfo;

    /// The members this node knows, with whether each is reachable and
    /// how many partitions it holds as first replica and as any replica.
    fn members(&self) -> Vec<MemberStatus>;

    /// Every partition's preference list (replicas first), by member name.
    fn ring(&self) -> Vec<Vec<String>>;

    /// Makes an operator's layout change on this node and saves it before
    /// answering; gossip spreads it.
    fn change_layout(&self, command: LayoutCommand) -> BoxFuture<'_, Result<(), CoordinatorError>>;

    /// Shuts this node's store down cleanly (node shutdown): every write
    /// durable, and cheap to reopen.
    fn close(&self) -> BoxFuture<'_, Result<(), CoordinatorError>>;

    /// Whether this node's store takes writes, and its last failure
    /// (INFO persistence).
    fn store_health(&self) -> HealthReport;
}
