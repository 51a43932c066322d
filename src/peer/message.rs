//! The messages nodes exchange. Bytes on the wire: see `codec`.

use crate::model::ops::WriteOp;
use crate::model::record::Record;
use crate::version::NodeId;
use bytes::Bytes;

/// The peer protocol version this build speaks (in the handshake).
pub const PROTOCOL_VERSION: u16 = 8;

/// The first bytes of every handshake.
pub const MAGIC: [u8; 4] = *b"DYKV";

/// What a node tells others about itself (and relays about others).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberInfo {
    /// Node id (random per data directory).
    pub id: NodeId,
    /// Human name (`--node-name`).
    pub name: String,
    /// Client (RESP) address, `host:port`.
    pub client_addr: String,
    /// Peer address, `host:port` (what others dial).
    pub peer_addr: String,
    /// Capacity weight.
    pub weight: f64,
    /// Failure zone.
    pub zone: Option<String>,
}

/// One side of a layout gossip exchange. The layout travels as its own
/// versioned bytes (`membership::layout`), decoded by membership.
#[derive(Debug, Clone, PartialEq)]
pub struct Gossip {
    /// The sender's layout epoch.
    pub epoch: u64,
    /// The sender's layout digest: equal digests, equal layouts.
    pub digest: u64,
    /// The fingerprint of the sender's target placement: what a handoff
    /// waits for every live member to have seen.
    pub target: u64,
    /// The sender's whole layout, when it is needed.
    pub layout: Option<Bytes>,
}

/// The first frame each side sends.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    /// Must be [`PROTOCOL_VERSION`].
    pub version: u16,
    /// Must match the receiver's cluster name.
    pub cluster: String,
    /// The sender.
    pub member: MemberInfo,
    /// The sender's Q: nodes of one cluster must agree on it.
    pub partitions: u32,
    /// A fresh random challenge the other side must answer.
    pub nonce: [u8; 16],
    /// The answer to the other side's challenge, when it was received
    /// first (the acceptor's Hello carries it); HMAC-SHA256 of the cluster
    /// secret over the other's nonce and this node's id. Empty without a
    /// secret.
    pub proof: Vec<u8>,
    /// What the dialer opens the connection for; the acceptor echoes it.
    pub purpose: Purpose,
}

/// What a connection is for, said in the handshake: the acceptor must
/// know before it serves a single frame whether the connection is the
/// pair's link or a one-shot exchange, or a short-lived exchange would
/// take the link's place in its connection map (issue 17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The pair's one link, dialed by the smaller id and kept open: it
    /// carries both nodes' requests.
    Link = 1,
    /// A one-shot membership exchange (a joining node and its seeds): one
    /// request, one reply, closed; never a link.
    Exchange = 2,
}

/// A request from one node to another.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Liveness and latency probe.
    Ping,
    /// Read this node's records of keys: a coordinator sends each
    /// replica one request per batch of keys (at most
    /// `PEER_BATCH_KEYS_MAX`), not one per key.
    Read {
        /// The keys.
        keys: Vec<Bytes>,
    },
    /// Merge records into this node's replica (replication, read repair,
    /// hinted handoff), all in one store batch; answered once durable per
    /// the receiver's fsync.
    Replicate {
        /// The keys and their records, each as stored (the storage
        /// format: encoded once for every replica sent to; the receiver
        /// decodes them).
        entries: Vec<(Bytes, Bytes)>,
    },
    /// Coordinate a write as a replica of the key (a non-replica forwards
    /// writes so that dots are always minted by replicas).
    Coordinate {
        /// The key.
        key: Bytes,
        /// The write.
        op: WriteOp,
        /// W for this write; 0 means the cluster default.
        w: u8,
        /// PW for this write: acknowledgements of real replicas, not
        /// fallbacks, it needs; 0 means the cluster default.
        pw: u8,
    },
    /// Up to `limit` records of a partition after a key.
    Scan {
        /// The partition.
        partition: u16,
        /// Start after this key (`None`: at the partition's start).
        after: Option<Bytes>,
        /// Most records to return.
        limit: u32,
    },
    /// Remove every key of a logical database on this node (FLUSHDB), or
    /// of every database (FLUSHALL).
    Flush {
        /// The database (`crate::db`); `None`: all of them.
        db: Option<u8>,
    },
    /// Count the live keys this node holds in these partitions (DBSIZE,
    /// INFO keyspace: each partition is counted on one replica).
    Count {
        /// The partitions.
        partitions: Vec<u16>,
    },
    /// Gossip the layout (docs/cluster.md, "The layout"): the sender's
    /// summary, and its layout when it knows the receiver's differs (or
    /// from a joining node, always); the reply is the receiver's gossip.
    Gossip(Gossip),
    /// Up to `limit` records of a partition after a key, for a handoff
    /// stream (the receiver pulls what it is to hold): as Scan, but each
    /// node serves at most `HANDOFF_STREAMS_OUT` streams at once and
    /// answers Busy past them.
    Fetch {
        /// The partition.
        partition: u16,
        /// Start after this key (`None`: at the partition's start).
        after: Option<Bytes>,
        /// Most records to return.
        limit: u32,
    },
    /// Which of these partitions this node holds any record of (a
    /// handoff's survey of its sources).
    Held {
        /// The partitions asked about.
        partitions: Vec<u16>,
    },
    /// Keep these records as hints for `target`, a replica of their keys
    /// that the sender could not reach (the sloppy quorum: this node is
    /// a fallback): merged into the hints already kept, answered Ack once
    /// durable per the receiver's fsync, or HintRefused past its hint
    /// window or cap (then none is kept).
    Hint {
        /// The replica the records are for.
        target: NodeId,
        /// The keys and their records, as stored.
        entries: Vec<(Bytes, Bytes)>,
    },
    /// Ping `target` on the sender's behalf: the sender suspects it and
    /// asks before marking it down (SWIM's indirect probe), so that a
    /// fault of its own link alone is not taken for a death.
    Probe {
        /// The suspect.
        target: NodeId,
    },
    /// The anti-entropy roots of these partitions (docs/cluster.md,
    /// "Anti-entropy"): answered by Hashes, one per partition.
    Roots {
        /// The partitions.
        partitions: Vec<u16>,
    },
    /// The anti-entropy segments of a partition: answered by Hashes, one
    /// per segment.
    Segments {
        /// The partition.
        partition: u16,
    },
    /// The keys of a partition's segments with their anti-entropy leaves:
    /// answered by Leaves.
    Leaves {
        /// The partition.
        partition: u16,
        /// The segments.
        segments: Vec<u16>,
    },
    /// Remove these dead records if still dead and unchanged (their
    /// leaves), unless this node keeps hints: then refused (Busy) and
    /// nothing removed. Answered by Hashes, one: how many were removed.
    /// With no entries, only the question of hints.
    Reap {
        /// `(key, leaf)`.
        entries: Vec<(Bytes, u64)>,
    },
}

/// A reply to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// To Ping.
    Pong,
    /// To Read: the records of the first keys asked, in order, each as
    /// stored (the storage format, passed on without decoding; the
    /// coordinator decodes them) or `None` where the node has none. At
    /// least one; fewer than asked when the answer reached
    /// `PEER_BATCH_BYTES_MAX`, and the sender asks again for the rest.
    Records {
        /// The encoded records.
        records: Vec<Option<Bytes>>,
    },
    /// To Replicate and Flush: done.
    Ack,
    /// To Coordinate: the records before and after, as the coordinating
    /// replica saw them; `current` is `None` when the write did not apply.
    /// Boxed: a record is large, and every response is as large as its
    /// largest variant.
    Written {
        /// Before.
        previous: Option<Box<Record>>,
        /// After.
        current: Option<Box<Record>>,
    },
    /// To Scan.
    Entries {
        /// `(key, record)` in key order.
        entries: Vec<(Bytes, Record)>,
    },
    /// To Count: each logical database with live keys in the partitions.
    Count {
        /// By database, in any order.
        dbs: Vec<DbCount>,
    },
    /// To Held: the partitions asked about that hold a record here.
    Held {
        /// The partitions.
        partitions: Vec<u16>,
    },
    /// To Probe: whether the suspect answered this node's ping in time.
    Probed {
        /// It answered.
        alive: bool,
    },
    /// To Gossip: the receiver's summary, and its layout when the
    /// sender's summary differs from it.
    Gossip(Gossip),
    /// To Roots and Segments.
    Hashes {
        /// In the order asked.
        hashes: Vec<u64>,
    },
    /// To Leaves: `(key, leaf)` in key order.
    Leaves {
        /// The keys and their leaves.
        leaves: Vec<(Bytes, u64)>,
    },
    /// The request failed on the receiver.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// For logs and clients.
        message: String,
    },
}

/// One logical database's keys in a [`Response::Count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbCount {
    /// The database (`crate::db`).
    pub db: u8,
    /// Live keys.
    pub keys: u64,
    /// Of those, keys with an expiry.
    pub expires: u64,
}

/// Why a request failed on the receiving node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Its store failed.
    Storage = 1,
    /// Not enough replicas answered the forwarded write.
    Quorum = 2,
    /// It is shutting down.
    ShuttingDown = 3,
    /// The request made no sense to it.
    BadRequest = 4,
    /// The write was refused: the value is not an integer.
    NotAnInteger = 5,
    /// The write was refused: the increment would overflow.
    Overflow = 6,
    /// The write was refused: the string would be too large.
    TooLarge = 7,
    /// The write was refused: a WATCHed key changed.
    WatchedKeyChanged = 8,
    /// The node serves as many handoff streams as it may: try later or
    /// another source.
    Busy = 9,
    /// The hints were not kept: the target's hint window has passed, or
    /// its hints are at the cap.
    HintRefused = 10,
    /// Its store refuses writes (a full disk): nothing of the request
    /// was applied, so another replica may take it.
    Unwritable = 11,
}

/// One frame after the handshake.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A request, with the sender's id for it.
    Request {
        /// Request id, unique per connection direction.
        id: u64,
        /// The request.
        request: Request,
    },
    /// The response to the request with this id.
    Response {
        /// The request's id.
        id: u64,
        /// The response.
        response: Response,
    },
}
