//! Connections between nodes: one multiplexed TCP connection per peer
//! pair, request ids, coalesced writes, per-request timeouts, bounded
//! in-flight requests, reconnect with backoff, and the handshake.
//!
//! Which side dials: the node with the smaller id dials the larger, so a
//! pair never races to open two connections; the larger waits to be
//! dialed (and until then reports the peer as not connected). A joining
//! node reaches its seeds with one-shot connections that only exchange
//! membership ([`Transport::exchange`]).
//!
//! A link's state is one fact both ends agree on (issue 17): the
//! handshake says whether a connection is the pair's link or an exchange
//! ([`Purpose`]), and only links enter the connection map. Each side holds
//! at most one link per peer: the dialer dials one at a time, and an
//! acceptor that registers a newer link from the same peer closes the one
//! it replaces, so the dialer of a superseded link hears it end and
//! redials (after [`PEER_BACKOFF_MIN_MS`]). A link removes its map entry
//! only while the entry is still its own (each carries a serial number,
//! also in the log lines), and a link that ends closes its socket, so the
//! other end sees it end too. Either both ends list the link or its
//! dialer is redialing.
//!
//! Handshake (each message a Hello frame, see `codec`):
//! 1. dialer → acceptor: version, cluster, member info, nonce D;
//! 2. acceptor → dialer: the same, nonce A, proof over D;
//! 3. dialer → acceptor: its Hello again with a proof over A.
//!
//! A proof is HMAC-SHA256 of the cluster secret over the challenger's
//! nonce and the prover's id (`auth`); without a secret proofs are empty
//! and a peer that sends one is refused, as is a peer that does not when
//! a secret is set. Either side refuses another protocol version or
//! cluster name, and logs why.

use super::auth;
use super::codec::{
    decode_frame, decode_hello, encode_frame, encode_hello, split_frame, split_hello,
};
use super::message::{
    Frame, Gossip, Hello, MemberInfo, PROTOCOL_VERSION, Purpose, Request, Response,
};
use crate::limits::{
    PEER_BACKOFF_MAX_MS, PEER_BACKOFF_MIN_MS, PEER_HANDSHAKE_TIMEOUT_MS, PEER_HEARTBEAT_MS,
    PEER_INFLIGHT_MAX, PEER_QUEUE_FRAMES, PEER_READ_BUFFER_BYTES, PEER_SERVE_CONCURRENCY,
    PEER_SILENCE_MAX_MS, PEER_WRITE_BYTES_MAX,
};
use crate::net::{Connection, Listener, Network, ReadHalf, WriteHalf};
use crate::task::BoxFuture;
use crate::task::stopped;
use crate::version::NodeId;
use crate::wire::DecodeError;
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Why a peer request failed.
#[derive(Debug, Error)]
pub enum PeerError {
    /// No live connection to the peer.
    #[error("node {0:016x} is not connected")]
    NotConnected(NodeId),
    /// No reply in time.
    #[error("request to node {node:016x} timed out after {ms} ms")]
    Timeout {
        /// The peer.
        node: NodeId,
        /// The timeout.
        ms: u64,
    },
    /// The connection closed before the reply.
    #[error("connection to node {0:016x} closed")]
    Closed(NodeId),
    /// A socket error.
    #[error("peer i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Bytes that are not our protocol.
    #[error("peer protocol: {0}")]
    Protocol(#[from] DecodeError),
    /// The handshake failed.
    #[error("handshake refused: {0}")]
    Refused(String),
}

/// Serves requests from peers.
pub trait Handler: Send + Sync + 'static {
    /// Answers requests from `from` that arrived together, one response
    /// per request, in order.
    fn handle(&self, from: NodeId, requests: Vec<Request>) -> BoxFuture<'_, Vec<Response>>;
}

/// What the transport needs to know.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Where connections come from.
    pub network: Arc<dyn Network>,
    /// Cluster name peers must share.
    pub cluster: String,
    /// Cluster secret peers must prove, if any.
    pub secret: Option<String>,
    /// This node.
    pub me: MemberInfo,
    /// Q: peers must have the same.
    pub partitions: u32,
    /// Per-request timeout.
    pub request_timeout: Duration,
}

/// Waiting requests by id. A fixed hasher: when a connection ends the
/// waiters are dropped (or told) in map order, and the simulation needs
/// that order to be the same in every run.
type Waiters = HashMap<u64, Waiter, BuildHasherDefault<DefaultHasher>>;

/// Who waits for a request's reply.
enum Waiter {
    /// A [`Pending`], through its channel.
    Reply(oneshot::Sender<Response>),
    /// No one: the outcome is handed to a callback (see [`Pending::watch`]).
    Watch(Watch),
}

/// What becomes of an answer no task waits for.
pub type Then = Box<dyn FnOnce(Result<Response, PeerError>) + Send>;

/// A request watched by the link itself, not by a task: told its reply
/// as it is read, or its failure when the link ends or the deadline
/// passes (the heartbeat looks, [`PEER_HEARTBEAT_MS`]).
struct Watch {
    deadline: Instant,
    /// The request timeout, for the error.
    timeout: Duration,
    then: Then,
    /// The request's in-flight slot, held until it is answered.
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Waiter {
    /// Hands the answer on.
    fn answer(self, answer: Result<Response, PeerError>) {
        match self {
            Self::Reply(tx) => {
                if let Ok(response) = answer {
                    let _ = tx.send(response);
                }
            }
            Self::Watch(watch) => (watch.then)(answer),
        }
    }
}

struct Conn {
    /// This transport's number for the connection: which link a log line
    /// or a map entry is about.
    serial: u64,
    peer: MemberInfo,
    outgoing: mpsc::Sender<Frame>,
    pending: Mutex<Waiters>,
    next_id: AtomicU64,
    inflight: Arc<Semaphore>,
    /// When bytes last arrived (see [`PEER_SILENCE_MAX_MS`]).
    heard: Mutex<Instant>,
    /// When the peer's last heartbeat (its keepalive ping) arrived.
    beat: Mutex<Option<Instant>>,
    /// Told when a newer link from the same peer took this one's place:
    /// the connection then closes, so its dialer hears it end.
    superseded: Notify,
}

impl Conn {
    fn pending(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fails every waiting request: the link ended. The callbacks run
    /// outside the lock.
    fn fail_pending(&self) {
        let waiters: Vec<Waiter> = self.pending().drain().map(|(_, w)| w).collect();
        for waiter in waiters {
            waiter.answer(Err(PeerError::Closed(self.peer.id)));
        }
    }

    /// Fails the watched requests whose deadline passed.
    fn expire_watches(&self, now: Instant) {
        let expired: Vec<Watch> = {
            let mut pending = self.pending();
            let ids: Vec<u64> = pending
                .iter()
                .filter(|(_, w)| matches!(w, Waiter::Watch(watch) if watch.deadline <= now))
                .map(|(id, _)| *id)
                .collect();
            ids.iter()
                .filter_map(|id| match pending.remove(id) {
                    Some(Waiter::Watch(watch)) => Some(watch),
                    _ => None,
                })
                .collect()
        };
        for watch in expired {
            let ms = watch.timeout.as_millis() as u64;
            (watch.then)(Err(PeerError::Timeout {
                node: self.peer.id,
                ms,
            }));
        }
    }
}

/// A request sent and not yet answered. Dropping it forgets the reply
/// (the peer still does the work).
pub struct Pending {
    conn: Arc<Conn>,
    id: u64,
    reply: Option<oneshot::Receiver<Response>>,
    sent: Instant,
    timeout: Duration,
    transport: Arc<Transport>,
    /// Held until answered; `None` once handed to a [`Watch`].
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Pending {
    /// Waits for the reply, up to the request timeout.
    ///
    /// # Errors
    /// [`PeerError::Timeout`] or [`PeerError::Closed`].
    pub async fn wait(self) -> Result<Response, PeerError> {
        let timeout = self.timeout;
        self.wait_up_to(timeout).await
    }

    /// Waits for the reply, up to `timeout`: for a request whose work
    /// grows with the data (a count or a flush of every key).
    ///
    /// # Errors
    /// [`PeerError::Timeout`] or [`PeerError::Closed`].
    pub async fn wait_up_to(self, timeout: Duration) -> Result<Response, PeerError> {
        let node = self.conn.peer.id;
        match tokio::time::timeout(timeout, self.answer()).await {
            Ok(answer) => answer,
            Err(_) => Err(PeerError::Timeout {
                node,
                ms: timeout.as_millis() as u64,
            }),
        }
    }

    /// Waits for the reply with no timeout of its own (the `Future` does
    /// the same): for a caller that waits for many replies under one
    /// deadline (one timer, not one per request; see
    /// [`Transport::request_timeout`]).
    ///
    /// # Errors
    /// [`PeerError::Closed`].
    pub async fn answer(self) -> Result<Response, PeerError> {
        self.await
    }

    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<Result<Response, PeerError>> {
        let node = self.conn.peer.id;
        let Some(reply) = self.reply.as_mut() else {
            return Poll::Ready(Err(PeerError::Closed(node)));
        };
        let answer = match std::pin::Pin::new(reply).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(response)) => {
                self.transport.record_latency(node, self.sent.elapsed());
                Ok(response)
            }
            Poll::Ready(Err(_)) => Err(PeerError::Closed(node)),
        };
        self.reply = None;
        Poll::Ready(answer)
    }

    /// Stops waiting, and has the link hand the answer to `then` as it
    /// comes: the reply, or the failure when the link ends or the
    /// request timeout passes (counted from when it was sent, looked at
    /// with each heartbeat). For an answer only its failure matters to:
    /// no task, timer or wake-up is spent on it. `then` runs on the
    /// link's read task (or this one, when the answer is already in):
    /// it must not block.
    pub fn watch(mut self, then: Then) {
        let answer = {
            let mut pending = self.conn.pending();
            match (pending.remove(&self.id), self.permit.take()) {
                (Some(Waiter::Reply(_)), Some(permit)) => {
                    let watch = Watch {
                        deadline: self.sent + self.timeout,
                        timeout: self.timeout,
                        then,
                        _permit: permit,
                    };
                    pending.insert(self.id, Waiter::Watch(watch));
                    return;
                }
                // Answered already (the reply waits in the channel), or
                // the link ended.
                _ => match self.reply.take().map(|mut rx| rx.try_recv()) {
                    Some(Ok(response)) => Ok(response),
                    _ => Err(PeerError::Closed(self.conn.peer.id)),
                },
            }
        };
        then(answer);
    }
}

impl std::future::Future for Pending {
    type Output = Result<Response, PeerError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.poll_answer(cx)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // A watched request's entry stays: its watch holds the permit.
        if self.permit.is_some() {
            self.conn.pending().remove(&self.id);
        }
    }
}

/// The batches of one link that carry copies (Replicate, Hint) being served, by
/// arrival number: a batch holding a flush waits for those that arrived
/// before it.
#[derive(Debug, Default)]
struct Batches {
    running: Mutex<std::collections::BTreeSet<u64>>,
    ended: Notify,
}

/// One batch being served; it ends when dropped (a task aborted or
/// panicking included).
struct Serving {
    batches: Arc<Batches>,
    seq: u64,
}

impl Serving {
    fn start(batches: &Arc<Batches>, seq: u64) -> Self {
        batches
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(seq);
        Self {
            batches: Arc::clone(batches),
            seq,
        }
    }

    /// Resolves once no batch that arrived before this one is served.
    async fn wait_for_earlier(&self) {
        loop {
            // Made before looking: a batch ending meanwhile wakes it.
            let ended = self.batches.ended.notified();
            let first = self
                .batches
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .first()
                .copied();
            if first.is_none_or(|first| first >= self.seq) {
                return;
            }
            ended.await;
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.batches
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.seq);
        self.batches.ended.notify_waiters();
    }
}

/// The request id of a heartbeat ping: never a pending request's (ids
/// count from 1), so its answer only counts as something heard.
const HEARTBEAT_ID: u64 = 0;

/// What a link heard from its peer (see [`Transport::heard`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    /// The peer.
    pub node: NodeId,
    /// Its last heartbeat's arrival.
    pub beat: Option<tokio::time::Instant>,
    /// The last arrival of anything.
    pub any: tokio::time::Instant,
}

/// This node's side of the peer protocol.
pub struct Transport {
    config: TransportConfig,
    conns: RwLock<HashMap<NodeId, Arc<Conn>>>,
    handler: OnceLock<Arc<dyn Handler>>,
    tasks: Mutex<JoinSet<()>>,
    /// Members this node dials, with their latest addresses: a dial loop
    /// reads its member's entry before each attempt (a restarted member
    /// may have moved) and ends when it is gone.
    dialing: Mutex<HashMap<NodeId, MemberInfo>>,
    /// Removed members: never dialed, their links closed and refused.
    expelled: RwLock<HashSet<NodeId>>,
    latency_us: Mutex<HashMap<NodeId, f64>>,
    shutdown: watch::Receiver<bool>,
    /// Serial of the next connection (see `Conn::serial`).
    next_serial: AtomicU64,
    /// Bumped whenever a link is registered or removed, or a peer marked
    /// down or up: readiness waits on it instead of polling.
    links: watch::Sender<u64>,
    /// Peers the failure detector marked down: not routed to, even while
    /// their link stays open (a frozen process keeps its sockets).
    down: RwLock<HashSet<NodeId>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("me", &self.config.me.name)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// A transport for `config`; serve nothing until [`Transport::set_handler`].
    pub fn new(config: TransportConfig, shutdown: watch::Receiver<bool>) -> Arc<Self> {
        Arc::new(Self {
            config,
            conns: RwLock::new(HashMap::new()),
            handler: OnceLock::new(),
            tasks: Mutex::new(JoinSet::new()),
            dialing: Mutex::new(HashMap::new()),
            expelled: RwLock::new(HashSet::new()),
            latency_us: Mutex::new(HashMap::new()),
            shutdown,
            next_serial: AtomicU64::new(1),
            links: watch::Sender::new(0),
            down: RwLock::new(HashSet::new()),
        })
    }

    /// Sets who serves peer requests (once).
    pub fn set_handler(&self, handler: Arc<dyn Handler>) {
        let _ = self.handler.set(handler);
    }

    /// This node's member info.
    pub fn me(&self) -> &MemberInfo {
        &self.config.me
    }

    /// How long a request may go unanswered before it counts as failed.
    pub fn request_timeout(&self) -> Duration {
        self.config.request_timeout
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        // Reap finished tasks so the set does not grow with reconnects.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    /// Waits for every connection and dialer task after shutdown.
    pub async fn join(&self) {
        let mut tasks =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        while tasks.join_next().await.is_some() {}
    }

    /// Accepts peers on `listener` until shutdown.
    pub fn serve(self: &Arc<Self>, listener: Box<dyn Listener>) {
        let transport = Arc::clone(self);
        self.spawn(async move {
            let mut shutdown = transport.shutdown.clone();
            loop {
                tokio::select! {
                    biased;
                    () = stopped(&mut shutdown) => return,
                    accepted = listener.accept() => match accepted {
                        Ok(connection) => {
                            let transport2 = Arc::clone(&transport);
                            let addr = connection.remote;
                            transport.spawn(async move {
                                if let Err(e) = transport2.accept(connection).await {
                                    tracing::warn!(%addr, "peer connection refused or failed: {e}");
                                }
                            });
                        }
                        Err(e) => {
                            tracing::warn!("peer accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        });
    }

    /// Keeps a connection to `member` if this node is the one that dials
    /// it (smaller id), reconnecting with backoff until shutdown or until
    /// it is expelled; a later call with new addresses is dialed there.
    pub fn maintain(self: &Arc<Self>, member: MemberInfo) {
        if member.id <= self.config.me.id || self.is_expelled(member.id) {
            return;
        }
        let id = member.id;
        if self
            .dialing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, member)
            .is_some()
        {
            return;
        }
        let transport = Arc::clone(self);
        self.spawn(async move {
            let mut shutdown = transport.shutdown.clone();
            let mut backoff = Duration::from_millis(PEER_BACKOFF_MIN_MS);
            loop {
                let Some(member) = transport
                    .dialing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&id)
                    .cloned()
                else {
                    return;
                };
                let attempt = async {
                    let (connection, peer) =
                        transport.dial(&member.peer_addr, Purpose::Link).await?;
                    if peer.id != member.id {
                        return Err(PeerError::Refused(format!(
                            "{} answered as node {:016x}, expected {:016x}",
                            member.peer_addr, peer.id, member.id
                        )));
                    }
                    Ok((connection, peer))
                };
                let connected = tokio::select! {
                    biased;
                    () = stopped(&mut shutdown) => return,
                    result = attempt => result,
                };
                match connected {
                    Ok((connection, peer)) => {
                        backoff = Duration::from_millis(PEER_BACKOFF_MIN_MS);
                        Arc::clone(&transport)
                            .run_conn(connection, peer, BytesMut::new(), Purpose::Link)
                            .await;
                    }
                    Err(e) => tracing::debug!(peer = %member.name, "connect failed: {e}"),
                }
                tokio::select! {
                    biased;
                    () = stopped(&mut shutdown) => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_millis(PEER_BACKOFF_MAX_MS));
            }
        });
    }

    /// Removes `node` for good (it was removed from the layout): its dial
    /// loop ends, its link closes, and its handshakes for a link are
    /// refused (a one-shot exchange is still answered, so that it can
    /// learn it was removed).
    pub fn expel(&self, node: NodeId) {
        if !self
            .expelled
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node)
        {
            return;
        }
        self.dialing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&node);
        if let Some(conn) = self.link(node) {
            tracing::info!(peer = %conn.peer.name, "link to a removed member closed");
            conn.superseded.notify_one();
        }
    }

    /// The link to `node`, if there is one.
    fn link(&self, node: NodeId) -> Option<Arc<Conn>> {
        self.conns
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .cloned()
    }

    fn is_expelled(&self, node: NodeId) -> bool {
        self.expelled
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&node)
    }

    /// One-shot gossip with a node at `addr` (a seed, or a member this
    /// node has no link to): returns its id and its gossip.
    ///
    /// # Errors
    /// Connection, handshake or protocol errors.
    pub async fn exchange(
        &self,
        addr: &str,
        gossip: Gossip,
    ) -> Result<(NodeId, Gossip), PeerError> {
        let (mut connection, peer) = self.dial(addr, Purpose::Exchange).await?;
        let mut out = BytesMut::new();
        encode_frame(
            &Frame::Request {
                id: 1,
                request: Request::Gossip(gossip),
            },
            &mut out,
        );
        connection.writer.write_all(&out).await?;
        let mut buf = BytesMut::new();
        let body = read_frame(
            &mut connection.reader,
            &mut buf,
            self.config.request_timeout,
        )
        .await?;
        match decode_frame(&body)? {
            Frame::Response {
                response: Response::Gossip(gossip),
                ..
            } => Ok((peer.id, gossip)),
            other => Err(PeerError::Refused(format!(
                "unexpected reply to a membership exchange: {other:?}"
            ))),
        }
    }

    /// Whether requests may be routed to `node`: it has a live link and
    /// the failure detector has not marked it down (always true for
    /// self).
    pub fn reachable(&self, node: NodeId) -> bool {
        node == self.config.me.id
            || (self
                .conns
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(&node)
                && !self.is_down(node))
    }

    /// The peers [`Transport::reachable`] now, in id order.
    pub fn reachable_peers(&self) -> Vec<NodeId> {
        let mut peers: Vec<NodeId> = self
            .conns
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .filter(|&node| !self.is_down(node))
            .collect();
        peers.sort_unstable();
        peers
    }

    fn is_down(&self, node: NodeId) -> bool {
        let down = self.down.read().unwrap_or_else(PoisonError::into_inner);
        !down.is_empty() && down.contains(&node)
    }

    /// Marks `node` down (not routed to) or up again: the failure
    /// detector's verdict (`crate::membership::failure`).
    pub fn mark_down(&self, node: NodeId, down: bool) {
        let changed = {
            let mut marked = self.down.write().unwrap_or_else(PoisonError::into_inner);
            if down {
                marked.insert(node)
            } else {
                marked.remove(&node)
            }
        };
        if changed {
            self.links.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// What the failure detector learns from, for each linked peer:
    /// when its last heartbeat arrived (if one did), and when anything
    /// last arrived.
    pub fn heard(&self) -> Vec<Heard> {
        self.conns
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(&node, conn)| Heard {
                node,
                beat: *conn.beat.lock().unwrap_or_else(PoisonError::into_inner),
                any: *conn.heard.lock().unwrap_or_else(PoisonError::into_inner),
            })
            .collect()
    }

    /// A receiver that sees a change whenever a link comes up or goes
    /// down, or a peer is marked down or up.
    pub fn link_changes(&self) -> watch::Receiver<u64> {
        self.links.subscribe()
    }

    /// Average request latency to each connected peer, in microseconds.
    pub fn latencies(&self) -> Vec<(NodeId, f64)> {
        let mut all: Vec<_> = self
            .latency_us
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        all.sort_by_key(|e| e.0);
        all
    }

    fn record_latency(&self, node: NodeId, elapsed: Duration) {
        let sample = elapsed.as_secs_f64() * 1e6;
        let mut all = self
            .latency_us
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let avg = all.entry(node).or_insert(sample);
        *avg = 0.9 * *avg + 0.1 * sample;
    }

    /// Sends `request` to `node` and returns a handle to await the reply.
    /// The request is on its way when this returns.
    ///
    /// # Errors
    /// [`PeerError::NotConnected`] at once when there is no connection;
    /// [`PeerError::Closed`] if it closes meanwhile.
    pub async fn send(
        self: &Arc<Self>,
        node: NodeId,
        request: Request,
    ) -> Result<Pending, PeerError> {
        let conn = self.link(node).ok_or(PeerError::NotConnected(node))?;
        let permit = Arc::clone(&conn.inflight)
            .acquire_owned()
            .await
            .map_err(|_| PeerError::Closed(node))?;
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.pending().insert(id, Waiter::Reply(tx));
        let pending = Pending {
            conn: Arc::clone(&conn),
            id,
            reply: Some(rx),
            sent: Instant::now(),
            timeout: self.config.request_timeout,
            transport: Arc::clone(self),
            permit: Some(permit),
        };
        conn.outgoing
            .send(Frame::Request { id, request })
            .await
            .map_err(|_| PeerError::Closed(node))?;
        Ok(pending)
    }

    /// Sends and waits.
    ///
    /// # Errors
    /// As [`Transport::send`] and [`Pending::wait`].
    pub async fn request(
        self: &Arc<Self>,
        node: NodeId,
        request: Request,
    ) -> Result<Response, PeerError> {
        self.send(node, request).await?.wait().await
    }

    /// Sends and waits up to `timeout`, for a request whose work grows
    /// with the receiver's data.
    ///
    /// # Errors
    /// As [`Transport::send`] and [`Pending::wait_up_to`].
    pub async fn request_up_to(
        self: &Arc<Self>,
        node: NodeId,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, PeerError> {
        self.send(node, request).await?.wait_up_to(timeout).await
    }

    fn hello(&self, nonce: [u8; 16], proof: Vec<u8>, purpose: Purpose) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            cluster: self.config.cluster.clone(),
            member: self.config.me.clone(),
            partitions: self.config.partitions,
            nonce,
            proof,
            purpose,
        }
    }

    fn make_proof(&self, nonce: &[u8; 16]) -> Vec<u8> {
        match &self.config.secret {
            Some(secret) => auth::proof(secret.as_bytes(), nonce, self.config.me.id).to_vec(),
            None => Vec::new(),
        }
    }

    /// Refuses a peer of another protocol version or cluster.
    fn check_identity(&self, hello: &Hello) -> Result<(), PeerError> {
        if hello.version != PROTOCOL_VERSION {
            return Err(PeerError::Refused(format!(
                "node {} speaks protocol version {}, this node {}",
                hello.member.name, hello.version, PROTOCOL_VERSION
            )));
        }
        if hello.cluster != self.config.cluster {
            return Err(PeerError::Refused(format!(
                "node {} belongs to cluster {:?}, this node to {:?}",
                hello.member.name, hello.cluster, self.config.cluster
            )));
        }
        if hello.partitions != self.config.partitions {
            return Err(PeerError::Refused(format!(
                "node {} has {} partitions, this node {}",
                hello.member.name, hello.partitions, self.config.partitions
            )));
        }
        Ok(())
    }

    /// Refuses a peer whose proof over our `nonce` is wrong or missing.
    fn check_proof(&self, hello: &Hello, nonce: &[u8; 16]) -> Result<(), PeerError> {
        let proven = match &self.config.secret {
            Some(secret) => auth::verify(secret.as_bytes(), nonce, hello.member.id, &hello.proof),
            None => hello.proof.is_empty(),
        };
        if proven {
            Ok(())
        } else {
            Err(PeerError::Refused(format!(
                "node {} ({}) failed the cluster secret check",
                hello.member.name, hello.member.peer_addr
            )))
        }
    }

    async fn dial(
        &self,
        addr: &str,
        purpose: Purpose,
    ) -> Result<(Connection, MemberInfo), PeerError> {
        let timeout = Duration::from_millis(PEER_HANDSHAKE_TIMEOUT_MS);
        let handshake = async {
            let mut connection = self.config.network.connect(addr).await?;
            let (reader, writer) = (&mut connection.reader, &mut connection.writer);
            let mut buf = BytesMut::new();
            let nonce = auth::nonce();
            send_hello(writer, &self.hello(nonce, Vec::new(), purpose)).await?;
            let theirs = decode_hello(&read_hello(reader, &mut buf, timeout).await?)?;
            self.check_identity(&theirs)?;
            self.check_proof(&theirs, &nonce)?;
            if theirs.purpose != purpose {
                return Err(PeerError::Refused(format!(
                    "node {} answered a {purpose:?} connection as a {:?}",
                    theirs.member.name, theirs.purpose
                )));
            }
            let proof = self.make_proof(&theirs.nonce);
            send_hello(writer, &self.hello(nonce, proof, purpose)).await?;
            Ok::<_, PeerError>((connection, theirs.member))
        };
        tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| PeerError::Refused(format!("handshake with {addr} timed out")))?
    }

    async fn accept(self: Arc<Self>, mut connection: Connection) -> Result<(), PeerError> {
        let timeout = Duration::from_millis(PEER_HANDSHAKE_TIMEOUT_MS);
        let handshake = async {
            let (reader, writer) = (&mut connection.reader, &mut connection.writer);
            let mut buf = BytesMut::new();
            let first = decode_hello(&read_hello(reader, &mut buf, timeout).await?)?;
            self.check_identity(&first)?;
            if first.purpose == Purpose::Link && self.is_expelled(first.member.id) {
                return Err(PeerError::Refused(format!(
                    "node {} ({:016x}, {}) was removed from the cluster: its link is refused; \
                     it must start again with a new data directory to rejoin",
                    first.member.name, first.member.id, first.member.peer_addr
                )));
            }
            // Only the smaller id dials the pair's link: a link from a
            // larger id (or from this node) would make two links of one.
            if first.purpose == Purpose::Link && first.member.id >= self.config.me.id {
                return Err(PeerError::Refused(format!(
                    "node {} ({:016x}) dialed a link, but the smaller id dials ({:016x})",
                    first.member.name, first.member.id, self.config.me.id
                )));
            }
            let nonce = auth::nonce();
            let proof = self.make_proof(&first.nonce);
            send_hello(writer, &self.hello(nonce, proof, first.purpose)).await?;
            // The dialer checks our proof first; one that hangs up here
            // refused it (its log says why), so say so here too.
            let second = match read_hello(reader, &mut buf, timeout).await {
                Ok(frame) => decode_hello(&frame)?,
                Err(PeerError::Io(e)) if is_hang_up(&e) => {
                    return Err(PeerError::Refused(format!(
                        "node {} ({}) hung up after checking our proof: \
                         probably another cluster secret (or none)",
                        first.member.name, first.member.peer_addr
                    )));
                }
                Err(e) => return Err(e),
            };
            if second.member.id != first.member.id || second.purpose != first.purpose {
                return Err(PeerError::Refused(
                    "peer changed identity or purpose mid-handshake".into(),
                ));
            }
            self.check_proof(&second, &nonce)?;
            Ok::<_, PeerError>((second.member, second.purpose, buf))
        };
        let (peer, purpose, leftover) = tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| PeerError::Refused("handshake timed out".into()))??;
        self.run_conn(connection, peer, leftover, purpose).await;
        Ok(())
    }

    /// Puts `conn` in the map as its peer's link, closing the link it
    /// replaces; a link that was its peer's before was superseded: its
    /// dialer gave it up (it dials one at a time), or a restarted peer
    /// dialed anew.
    fn register(&self, conn: &Arc<Conn>) {
        let previous = self
            .conns
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(conn.peer.id, Arc::clone(conn));
        match previous {
            None => tracing::info!(
                peer = %conn.peer.name,
                addr = %conn.peer.peer_addr,
                link = conn.serial,
                "peer connected"
            ),
            Some(old) => {
                tracing::info!(
                    peer = %conn.peer.name,
                    addr = %conn.peer.peer_addr,
                    link = conn.serial,
                    replaced = old.serial,
                    "peer link replaced by a newer one"
                );
                old.superseded.notify_one();
            }
        }
        self.links.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Removes `conn` from the map if it is still its peer's link (a
    /// superseded link must not remove its successor); returns whether it
    /// was.
    fn unregister(&self, conn: &Arc<Conn>) -> bool {
        let mut conns = self.conns.write().unwrap_or_else(PoisonError::into_inner);
        if !conns
            .get(&conn.peer.id)
            .is_some_and(|c| Arc::ptr_eq(c, conn))
        {
            return false;
        }
        conns.remove(&conn.peer.id);
        drop(conns);
        self.links.send_modify(|n| *n = n.wrapping_add(1));
        true
    }

    /// Serves one established connection until it closes, is superseded,
    /// or shutdown. A link is this pair's connection and carries our
    /// requests too; an exchange is only served.
    async fn run_conn(
        self: Arc<Self>,
        connection: Connection,
        peer: MemberInfo,
        mut buf: BytesMut,
        purpose: Purpose,
    ) {
        let Connection { reader, writer, .. } = connection;
        let (outgoing, frames) = mpsc::channel(PEER_QUEUE_FRAMES);
        let conn = Arc::new(Conn {
            serial: self.next_serial.fetch_add(1, Ordering::Relaxed),
            peer: peer.clone(),
            outgoing,
            pending: Mutex::new(Waiters::default()),
            next_id: AtomicU64::new(1),
            inflight: Arc::new(Semaphore::new(PEER_INFLIGHT_MAX)),
            heard: Mutex::new(Instant::now()),
            beat: Mutex::new(None),
            superseded: Notify::new(),
        });
        let link = purpose == Purpose::Link && peer.id != self.config.me.id;
        if link {
            self.register(&conn);
        }
        let mut tasks = JoinSet::new();
        tasks.spawn(write_loop(writer, frames));
        let served = Arc::new(Semaphore::new(PEER_SERVE_CONCURRENCY));
        let mut shutdown = self.shutdown.clone();
        let result = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => Ok(()),
            () = conn.superseded.notified() => Ok(()),
            () = keepalive(&conn, link) => Err(PeerError::Timeout {
                node: peer.id,
                ms: PEER_SILENCE_MAX_MS,
            }),
            r = self.read_loop(reader, &mut buf, &conn, &served, &mut tasks) => r,
        };
        if let Err(e) = &result {
            tracing::debug!(peer = %peer.name, link = conn.serial, ?purpose, "peer connection ended: {e}");
        }
        if link && self.unregister(&conn) {
            match result {
                Ok(()) => {
                    tracing::info!(peer = %peer.name, link = conn.serial, "peer disconnected")
                }
                Err(e) => {
                    tracing::info!(peer = %peer.name, link = conn.serial, "peer disconnected: {e}")
                }
            }
        }
        conn.fail_pending();
        tasks.shutdown().await;
    }

    async fn read_loop(
        &self,
        mut reader: ReadHalf,
        buf: &mut BytesMut,
        conn: &Arc<Conn>,
        served: &Arc<Semaphore>,
        tasks: &mut JoinSet<()>,
    ) -> Result<(), PeerError> {
        let earlier = Arc::new(Batches::default());
        let mut seq: u64 = 0;
        loop {
            // Requests that arrived together are served together: the
            // handler can batch their store work.
            let mut requests = Vec::new();
            while let Some(body) = split_frame(buf)? {
                match decode_frame(&body)? {
                    Frame::Response { id, response } => {
                        let waiter = conn.pending().remove(&id);
                        if let Some(waiter) = waiter {
                            waiter.answer(Ok(response));
                        }
                    }
                    Frame::Request {
                        id: HEARTBEAT_ID,
                        request: Request::Ping,
                    } => {
                        *conn.beat.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(Instant::now());
                        requests.push((HEARTBEAT_ID, Request::Ping));
                    }
                    Frame::Request { id, request } => requests.push((id, request)),
                }
            }
            if let Some(handler) = self.handler.get().cloned()
                && !requests.is_empty()
            {
                let permit = Arc::clone(served)
                    .acquire_owned()
                    .await
                    .map_err(|_| PeerError::Closed(conn.peer.id))?;
                let outgoing = conn.outgoing.clone();
                let from = conn.peer.id;
                // A flush must not overtake what the link carried before
                // it: a write's copy sent ahead of a FLUSHALL, still being
                // merged, would land after the clear and bring its key
                // back. Its batch waits for the batches before it (the
                // read loop goes on: their replies may need it).
                let flush = requests
                    .iter()
                    .any(|(_, r)| matches!(r, Request::Flush { .. }));
                // Only batches carrying copies (and the flush) are
                // tracked: nothing else can bring a flushed key back, and
                // reads pay nothing.
                let copies = flush
                    || requests.iter().any(|(_, r)| {
                        matches!(r, Request::Replicate { .. } | Request::Hint { .. })
                    });
                seq += 1;
                let serving = copies.then(|| Serving::start(&earlier, seq));
                while tasks.try_join_next().is_some() {}
                tasks.spawn(async move {
                    if let Some(serving) = serving.as_ref().filter(|_| flush) {
                        serving.wait_for_earlier().await;
                    }
                    let (ids, requests): (Vec<u64>, Vec<Request>) = requests.into_iter().unzip();
                    let responses = handler.handle(from, requests).await;
                    drop(serving);
                    for (id, response) in ids.into_iter().zip(responses) {
                        let _ = outgoing.send(Frame::Response { id, response }).await;
                    }
                    drop(permit);
                });
            }
            // Without room reserved, `read_buf` reads into whatever spare
            // capacity the last frame left (often one frame's worth), so
            // every frame cost a read and a batch of one.
            if buf.capacity() - buf.len() < PEER_READ_BUFFER_BYTES / 4 {
                buf.reserve(PEER_READ_BUFFER_BYTES);
            }
            if reader.read_buf(buf).await? == 0 {
                return Err(PeerError::Closed(conn.peer.id));
            }
            *conn.heard.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        }
    }
}

/// Sends the link's heartbeat, a ping every [`PEER_HEARTBEAT_MS`] busy
/// or idle, and returns once the peer has been silent too long. Both sides
/// run this: each hears the other's pings at the sender's steady rhythm,
/// which the failure detector learns, and a stalled connection is noticed
/// even by the side with nothing else to send ([`HEARTBEAT_ID`]). A full
/// queue skips the ping: the link is busy, and its frames are heard.
/// An exchange connection (one request, one reply, its dialer reading
/// nothing but that reply) gets no pings, only the silence bound; the
/// first ping goes one period after the link opens.
async fn keepalive(conn: &Conn, link: bool) {
    let period = Duration::from_millis(PEER_HEARTBEAT_MS);
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let silent = conn
            .heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed();
        if silent >= Duration::from_millis(PEER_SILENCE_MAX_MS) {
            return;
        }
        conn.expire_watches(Instant::now());
        if !link {
            continue;
        }
        let ping = Frame::Request {
            id: HEARTBEAT_ID,
            request: Request::Ping,
        };
        let _ = conn.outgoing.try_send(ping);
    }
}

/// Drains queued frames into as few socket writes as it can.
async fn write_loop(mut writer: WriteHalf, mut frames: mpsc::Receiver<Frame>) {
    let mut out = BytesMut::new();
    while let Some(frame) = frames.recv().await {
        encode_frame(&frame, &mut out);
        // Let the tasks already runnable (other clients' requests, other
        // handlers' replies) queue their frames first: woken by the first
        // frame, this task would otherwise run next and write it alone.
        tokio::task::yield_now().await;
        while out.len() < PEER_WRITE_BYTES_MAX {
            match frames.try_recv() {
                Ok(frame) => encode_frame(&frame, &mut out),
                Err(_) => break,
            }
        }
        if writer.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
}

/// Whether `e` is the other side closing the connection.
fn is_hang_up(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
    )
}

async fn send_hello(writer: &mut WriteHalf, hello: &Hello) -> Result<(), PeerError> {
    let mut out = BytesMut::new();
    encode_hello(hello, &mut out);
    writer.write_all(&out).await?;
    Ok(())
}

/// Reads a handshake frame: foreign bytes are refused as soon as the magic
/// is wrong, and a hello is capped far below a data frame.
async fn read_hello(
    reader: &mut ReadHalf,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<Bytes, PeerError> {
    read_with(reader, buf, timeout, split_hello).await
}

async fn read_frame(
    reader: &mut ReadHalf,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Result<Bytes, PeerError> {
    read_with(reader, buf, timeout, split_frame).await
}

async fn read_with(
    reader: &mut ReadHalf,
    buf: &mut BytesMut,
    timeout: Duration,
    split: fn(&mut BytesMut) -> Result<Option<Bytes>, DecodeError>,
) -> Result<Bytes, PeerError> {
    let read = async {
        loop {
            if let Some(body) = split(buf)? {
                return Ok(body);
            }
            if reader.read_buf(buf).await? == 0 {
                return Err(PeerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| PeerError::Refused("peer sent nothing in time".into()))?
}
