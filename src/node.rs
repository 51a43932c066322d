//! Wires the parts into a running node and owns its lifecycle: open the
//! store, build the coordinator, serve clients, run the background
//! workers, and on shutdown drain clients and flush the store.
//!
//! What a node runs on — store, network, clock, storage threads — is an
//! [`Environment`] it is given: [`Node::start`] uses the machine's, the
//! deterministic simulation (`tests/sim.rs`) simulated ones, and the code
//! in between is the same.

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::coordinator::{
    ClusterCoordinator, Coordinator, CoordinatorError, Healing, QuorumPolicy, Repair,
};
use crate::limits::{
    EXPIRE_REAP_BATCH_KEYS, EXPIRE_REAP_BATCHES_PER_TICK, EXPIRE_REAP_INTERVAL_MS,
    FSYNC_EVERYSEC_INTERVAL_MS, HANDOFF_START_GRACE_MS, PEER_REQUEST_TIMEOUT_MS, READY_WAIT_MS,
    SHUTDOWN_DRAIN_MS, STORAGE_IDLE_YIELDS, STORAGE_QUEUE_JOBS_MAX, STORAGE_THREADS,
    STORAGE_THREADS_FSYNC_ALWAYS, STORE_PROBE_INTERVAL_MS,
};
use crate::membership::detector::{DetectorConfig, DetectorError};
use crate::membership::failure::FailureDetection;
use crate::membership::layout::{Endpoint, Layout, LayoutError, Role};
use crate::membership::{Membership, SaveLayout};
use crate::net::{Listener, Network, Tcp};
use crate::peer::codec::decode_members;
use crate::peer::message::MemberInfo;
use crate::peer::transport::{Transport, TransportConfig};
use crate::replica::hints::HintLimits;
use crate::replica::{Replica, ReplicaService, ReplicaSettings};
use crate::resp::Server;
use crate::storage::{FjallStore, FsyncPolicy, StorageExecutor, Store, StoreError};
use crate::task::{WorkerBoard, WorkerStatus, Workers, every, stopped};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::sync::watch;

/// Why a node could not start or stop cleanly.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store failed to open, sync or flush.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The failure detector's settings are unusable.
    #[error(transparent)]
    Detector(#[from] DetectorError),
    /// This node's id was removed from the cluster (or it left): it
    /// must not serve again with this data directory.
    #[error("{0}")]
    Removed(LayoutError),
    /// The client port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// What a node runs on.
#[derive(Clone)]
pub struct Environment {
    /// The store its replica lives in.
    pub store: Arc<dyn Store>,
    /// Where its listeners and peer connections come from.
    pub network: Arc<dyn Network>,
    /// Wall-clock time (expiry).
    pub clock: Arc<dyn Clock>,
    /// Where store work runs.
    pub executor: Arc<StorageExecutor>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("network", &self.network)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// A node ready to serve: store open, ports bound.
pub struct Node {
    replica: Arc<Replica>,
    clock: Arc<dyn Clock>,
    executor: Arc<StorageExecutor>,
    coordinator: ClusterCoordinator,
    repairs: mpsc::Receiver<Repair>,
    transport: Arc<Transport>,
    membership: Arc<Membership>,
    failures: Arc<FailureDetection>,
    peer_listener: Box<dyn Listener>,
    seeds: Vec<String>,
    server: Server,
    shutdown: watch::Sender<bool>,
    /// Turns `true` once data commands are served (see [`open_when_reachable`]).
    ready: watch::Sender<bool>,
    /// The background workers' statuses, shared with `DYNAMO STATUS`.
    board: WorkerBoard,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The meta entry holding the layout (`membership::layout`'s bytes).
const LAYOUT_META: &str = "layout";

/// The meta entry holding the member list of data directories from before
/// layouts: read once, into a settled layout.
const MEMBERS_META: &str = "members";

/// The meta entry holding the last start's incarnation (u64, big-endian).
const INCARNATION_META: &str = "incarnation";

/// Signals a running node to stop.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    /// Asks the node to stop accepting, drain and exit.
    pub fn shutdown(&self) {
        let _ = self.0.send(true);
    }
}

async fn bind(
    network: &dyn Network,
    host: &str,
    port: u16,
) -> Result<Box<dyn Listener>, NodeError> {
    network
        .bind(host, port)
        .await
        .map_err(|source| NodeError::Bind {
            addr: format!("{host}:{port}"),
            source,
        })
}

impl Node {
    /// Opens the data directory (fjall) and binds the client and peer
    /// ports (TCP).
    ///
    /// # Errors
    /// [`NodeError`] for an unusable data directory or port.
    pub async fn start(config: Config) -> Result<Self, NodeError> {
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| NodeError::DataDir {
            path: dir.clone(),
            source,
        })?;
        // Opening recovers the journal: blocking work.
        let store = tokio::task::spawn_blocking(move || FjallStore::open(&dir))
            .await
            .map_err(|e| StoreError::Engine(format!("store open task: {e}")))??;
        let (threads, idle_yields) = match config.fsync {
            FsyncPolicy::Always => (STORAGE_THREADS_FSYNC_ALWAYS, 0),
            _ => (STORAGE_THREADS, STORAGE_IDLE_YIELDS),
        };
        let environment = Environment {
            store: Arc::new(store),
            network: Arc::new(Tcp),
            clock: Arc::new(SystemClock),
            executor: Arc::new(StorageExecutor::new(
                threads,
                STORAGE_QUEUE_JOBS_MAX,
                idle_yields,
            )),
        };
        Self::start_in(config, environment).await
    }

    /// Starts a node on `environment`: opens its replica in the store and
    /// binds the client and peer ports on its network.
    ///
    /// # Errors
    /// [`NodeError`] for an unusable store or port.
    pub async fn start_in(config: Config, environment: Environment) -> Result<Self, NodeError> {
        let Environment {
            store,
            network,
            clock,
            executor,
        } = environment;
        let settings = ReplicaSettings {
            partitions: config.partitions,
            fsync: config.fsync,
            siblings_max: config.siblings_max,
            cache_bytes: config.cache_bytes,
        };
        // The store's own workers (its ingestion) run on its threads.
        let store_workers = store.workers();
        let node_id = config.node_id;
        // Opening scans the keys: store work.
        let replica = executor
            .run(move || {
                if let Some(id) = node_id {
                    crate::storage::claim_node_id(store.as_ref(), id)?;
                }
                Replica::open(store, settings)
            })
            .await
            .map_err(|e| StoreError::Engine(format!("store open: {e}")))??;
        let replica = Arc::new(replica);
        let meta = replica.meta();
        let client_listener = bind(network.as_ref(), &config.bind, config.port).await?;
        let peer_listener = bind(network.as_ref(), &config.bind, config.peer_port).await?;
        let port_of = |l: &dyn Listener| l.local_addr().map(|a| a.port()).unwrap_or(0);
        let (port, peer_port) = (
            port_of(client_listener.as_ref()),
            port_of(peer_listener.as_ref()),
        );
        // A wildcard bind is no address to reach: advertise the host name.
        let host = match config.bind.as_str() {
            "0.0.0.0" | "::" | "[::]" => hostname().unwrap_or_else(|| config.bind.clone()),
            bind => bind.to_owned(),
        };
        // The default name is the client address, with the port bound.
        let default_name = format!("{}:{}", config.bind, config.port);
        let me = MemberInfo {
            id: meta.node_id,
            name: if config.node_name == default_name {
                format!("{host}:{port}")
            } else {
                config.node_name.clone()
            },
            client_addr: format!("{host}:{port}"),
            peer_addr: config
                .peer_advertise
                .clone()
                .unwrap_or_else(|| format!("{host}:{peer_port}")),
            weight: config.weight,
            zone: config.zone.clone(),
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let transport = Transport::new(
            TransportConfig {
                network,
                cluster: config.cluster_name.clone(),
                secret: config.cluster_secret.clone(),
                me: me.clone(),
                partitions: meta.partitions,
                request_timeout: Duration::from_millis(PEER_REQUEST_TIMEOUT_MS),
            },
            shutdown_rx.clone(),
        );
        let (saved, incarnation) = {
            let replica = Arc::clone(&replica);
            executor
                .run(move || saved_layout(&replica))
                .await
                .map_err(|e| StoreError::Engine(format!("meta read: {e}")))??
        };
        let save = save_layout(Arc::clone(&replica), Arc::clone(&executor));
        let membership = Membership::new(me, incarnation, save);
        // The layout saved by an earlier run: a restarted node knows its
        // cluster before any peer answers.
        membership.merge(&saved);
        // Known to the cluster, or founding one: with no seeds, or with its
        // own address among them (Cassandra's rule: a seed that lists
        // itself starts the cluster). A new node with seeds enters once a
        // seed has answered with a cluster (the membership worker).
        let founds = config.join.is_empty() || config.join.contains(&membership.me().peer_addr);
        if !saved.is_empty() || founds {
            membership.enter().map_err(NodeError::Removed)?;
        }
        let local = ReplicaService::new(
            Arc::clone(&replica),
            Arc::clone(&clock),
            Arc::clone(&executor),
        );
        let policy = QuorumPolicy {
            n: config.replicas,
            r: config.read_quorum,
            w: config.write_quorum,
        };
        let detector = DetectorConfig {
            threshold: config.phi_threshold,
            ..DetectorConfig::default()
        };
        // Seeded by the node id: distinct per node, and it leaves the
        // simulation's random sequence untouched.
        let failures = FailureDetection::new(detector, meta.node_id)?;
        let (coordinator, repairs) = ClusterCoordinator::new(
            local,
            Arc::clone(&transport),
            Arc::clone(&membership),
            Arc::clone(&failures),
            policy,
            Healing {
                sloppy_quorum: config.sloppy_quorum,
                read_repair: config.read_repair,
                hints: HintLimits {
                    window_ms: config.hint_window_secs.saturating_mul(1000),
                    max_bytes: config.hint_max_bytes,
                },
                hint_rate: config.hint_rate,
                handoff_rate: config.handoff_rate,
                aae_interval: Duration::from_secs(config.aae_interval_secs),
                aae_rate: config.aae_rate,
            },
        );
        transport.set_handler(Arc::new(coordinator.clone()));
        let seeds = config.join.clone();
        // A node alone (no seeds, no saved members) is ready before its
        // first client; the rest wait for `open_when_reachable`.
        let alone = seeds.is_empty() && membership.view().members.len() == 1;
        let (ready, ready_rx) = watch::channel(alone);
        let board = WorkerBoard::default();
        for status in store_workers {
            board.show(status);
        }
        let server = Server::new(
            client_listener,
            config,
            Arc::new(coordinator.clone()),
            board.clone(),
            shutdown_rx,
            ready_rx,
        )
        .map_err(|source| NodeError::Bind {
            addr: "client listener".into(),
            source,
        })?;
        Ok(Self {
            replica,
            clock,
            executor,
            coordinator,
            repairs,
            transport,
            membership,
            failures,
            peer_listener,
            seeds,
            server,
            shutdown,
            ready,
            board,
        })
    }

    /// The bound client address.
    ///
    /// # Errors
    /// The socket's error.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.server.local_addr()
    }

    /// The bound peer address.
    ///
    /// # Errors
    /// The socket's error.
    pub fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.peer_listener.local_addr()
    }

    /// A handle that stops the node.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Serves until shut down, then drains clients (bounded), stops the
    /// workers and peer connections, and flushes the store.
    ///
    /// # Errors
    /// The final flush's error.
    pub async fn run(self) -> Result<(), NodeError> {
        let Node {
            replica,
            clock,
            executor,
            coordinator,
            repairs,
            transport,
            membership,
            failures,
            peer_listener,
            seeds,
            server,
            shutdown,
            ready,
            board,
        } = self;
        let mut workers = Workers::new(board, shutdown.subscribe());
        if replica.fsync() == FsyncPolicy::Everysec {
            let (replica, executor) = (Arc::clone(&replica), Arc::clone(&executor));
            workers.spawn("everysec-sync", |status, shutdown| {
                everysec_sync(replica, executor, status, shutdown)
            });
        }
        {
            let (replica, executor) = (Arc::clone(&replica), Arc::clone(&executor));
            workers.spawn("expiry-reaper", |status, shutdown| {
                reap_expired(replica, executor, clock, status, shutdown)
            });
        }
        {
            let coordinator = coordinator.clone();
            workers.spawn("read-repair", |status, shutdown| {
                coordinator.run_repairs(repairs, status, shutdown)
            });
        }
        {
            let (replica, executor) = (Arc::clone(&replica), Arc::clone(&executor));
            workers.spawn("store-probe", |status, shutdown| {
                probe_store(replica, executor, status, shutdown)
            });
        }
        {
            let (membership, transport) = (Arc::clone(&membership), Arc::clone(&transport));
            let seeds = seeds.clone();
            workers.spawn("membership", |status, shutdown| {
                crate::membership::run(membership, transport, seeds, status, shutdown)
            });
        }
        {
            let (membership, transport) = (Arc::clone(&membership), Arc::clone(&transport));
            workers.spawn("failure-detector", |status, shutdown| {
                crate::membership::failure::run(failures, membership, transport, status, shutdown)
            });
        }
        {
            let coordinator = coordinator.clone();
            workers.spawn("handoff", |status, shutdown| {
                coordinator.run_handoff(status, shutdown)
            });
        }
        {
            let coordinator = coordinator.clone();
            workers.spawn("hints", |status, shutdown| {
                coordinator.run_hints(status, shutdown)
            });
        }
        {
            let coordinator = coordinator.clone();
            workers.spawn("aae", |status, shutdown| {
                coordinator.run_aae(status, shutdown)
            });
        }
        transport.serve(peer_listener);
        {
            let (coordinator, transport) = (coordinator.clone(), Arc::clone(&transport));
            let (membership, joining) = (Arc::clone(&membership), !seeds.is_empty());
            workers.spawn("readiness", |status, shutdown| {
                open_when_reachable(
                    coordinator,
                    transport,
                    membership,
                    joining,
                    ready,
                    status,
                    shutdown,
                )
            });
        }
        if !seeds.is_empty() && !membership.has_joined() {
            // A node joining a cluster must not serve alone, placing every
            // key on itself: clients wait until a seed answered.
            tracing::info!(?seeds, "waiting for a seed before serving clients");
            membership.joined(&mut shutdown.subscribe()).await;
        }
        // A node removed from the layout, or done leaving, stops serving.
        let serving = server.run(Duration::from_millis(SHUTDOWN_DRAIN_MS));
        tokio::pin!(serving);
        let removed = tokio::select! {
            biased;
            () = &mut serving => None,
            () = membership.removed() => {
                let removed = leave_or_removal(&membership, &coordinator).await;
                let _ = shutdown.send(true);
                serving.await;
                Some(removed)
            }
        };
        let _ = shutdown.send(true);
        workers.join().await;
        transport.join().await;
        match coordinator.close().await {
            Ok(()) => tracing::info!("store flushed; node stopped"),
            // A disk that cannot take writes is no reason to fail the
            // shutdown: what it could not flush is in the log.
            Err(CoordinatorError::Storage(StoreError::Unwritable { reason })) => {
                tracing::warn!(
                    %reason,
                    "node stopped without flushing its store, whose data directory cannot take \
                     writes: every write it acknowledged is in its log, which the next start \
                     replays; writes it refused were never acknowledged"
                );
            }
            Err(e) => return Err(StoreError::Engine(e.to_string()).into()),
        }
        match removed {
            Some(Some(error)) => Err(NodeError::Removed(error)),
            _ => Ok(()),
        }
    }
}

/// What a node found removed from the layout does before it stops. A
/// node that left (its data handed over, the layout settled) waits for
/// the readers still placing by the old layout, drops its copies and
/// stops cleanly (`None`); a node removed by an operator stops at once
/// with the error that says so.
async fn leave_or_removal(
    membership: &Membership,
    coordinator: &ClusterCoordinator,
) -> Option<LayoutError> {
    let me = membership.me().id;
    let tombstoned = membership.view().layout.get(me).is_some_and(|m| m.removed);
    if tombstoned {
        let error = LayoutError::Removed { id: me };
        tracing::error!(
            "this node was removed from the cluster (DYNAMO REMOVE); it stops: {error}"
        );
        return Some(error);
    }
    tracing::info!("this node left the cluster: its data is handed over; it stops");
    tokio::time::sleep(Duration::from_millis(HANDOFF_START_GRACE_MS)).await;
    let left = coordinator.hand_off_hints().await;
    if left > 0 {
        tracing::warn!(
            hints = left,
            "left with hints no replica took: read repair must bring those keys to their              replicas"
        );
    }
    if let Err(e) = coordinator.drop_all_data().await {
        tracing::warn!("cannot drop the data a node that left holds: {e}");
    }
    None
}

/// The layout a data directory holds (a member list from before layouts
/// becomes a settled layout), and this start's incarnation: one more than
/// the last start's, saved before the node serves, so that every start of
/// the directory has a larger one.
fn saved_layout(replica: &Replica) -> Result<(Layout, u64), StoreError> {
    let layout = match replica.meta_entry(LAYOUT_META)? {
        Some(bytes) => Layout::decode(&bytes)
            .map_err(|e| StoreError::Engine(format!("the saved layout is unreadable: {e}")))?,
        None => match replica
            .meta_entry(MEMBERS_META)?
            .as_deref()
            .map(decode_members)
        {
            Some(Ok(members)) => Layout::settled(members.into_iter().map(|m| {
                let endpoint = Endpoint {
                    incarnation: 0,
                    name: m.name,
                    peer_addr: m.peer_addr,
                    client_addr: m.client_addr,
                };
                let role = Role {
                    weight: m.weight,
                    zone: m.zone,
                };
                (m.id, endpoint, role)
            })),
            Some(Err(e)) => {
                tracing::warn!("saved member list unreadable, ignored: {e}");
                Layout::new()
            }
            None => Layout::new(),
        },
    };
    let last = match replica.meta_entry(INCARNATION_META)? {
        Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice()).map_or(0, u64::from_be_bytes),
        None => 0,
    };
    // Never below what the layout knows (a directory restored from an
    // older copy).
    let known = layout
        .get(replica.meta().node_id)
        .map_or(0, |m| m.endpoint.incarnation);
    let incarnation = last.max(known) + 1;
    replica.set_meta_entry(INCARNATION_META, &incarnation.to_be_bytes())?;
    Ok((layout, incarnation))
}

/// Saves the layout in the store when it changed since the last save that
/// succeeded. The membership worker reports a failure (once per change of
/// state, see `task::WorkerStatus`): a node whose disk is full tries every
/// membership round.
fn save_layout(replica: Arc<Replica>, executor: Arc<StorageExecutor>) -> SaveLayout {
    // The bytes the store holds, once a save succeeded. Held through a
    // save: saves run one at a time.
    let saved: Arc<tokio::sync::Mutex<Option<Vec<u8>>>> = Arc::default();
    Arc::new(move |bytes| {
        let (replica, executor, saved) = (
            Arc::clone(&replica),
            Arc::clone(&executor),
            Arc::clone(&saved),
        );
        Box::pin(async move {
            let mut saved = saved.lock().await;
            if saved.as_ref() == Some(&bytes) {
                return Ok(());
            }
            let written = bytes.clone();
            match executor
                .run(move || replica.set_meta_entry(LAYOUT_META, &written))
                .await
            {
                Ok(Ok(())) => {
                    *saved = Some(bytes);
                    Ok(())
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
    })
}

/// While the store cannot take writes: asks it every
/// [`STORE_PROBE_INTERVAL_MS`] to probe the disk and recover
/// ([`Replica::recover`]); the store logs when it does, and shows its
/// state as `store_status` (a probe that finds the disk still full is a
/// step done, not a failure of the worker).
async fn probe_store(
    replica: Arc<Replica>,
    executor: Arc<StorageExecutor>,
    status: Arc<WorkerStatus>,
    shutdown: watch::Receiver<bool>,
) {
    let period = Duration::from_millis(STORE_PROBE_INTERVAL_MS);
    every(period, &status, shutdown, || async {
        if replica.health().failing.is_none() {
            return Ok(());
        }
        let replica = Arc::clone(&replica);
        executor.run(move || replica.recover()).await.map(drop)
    })
    .await;
}

/// This machine's host name (containers: the name peers resolve).
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(name.trim().to_owned()).filter(|n| !n.is_empty())
}

/// Turns `ready` on once every partition has enough reachable replicas
/// for R and W ([`ClusterCoordinator::quorums_reachable`]), or after
/// [`READY_WAIT_MS`]: until then clients get LOADING, not the NOQUORUM a
/// restarted node would answer while its peers' links come back (a peer
/// redials within its backoff). A node alone is ready at once; a node
/// given seeds first waits for its view to hold another member.
async fn open_when_reachable(
    coordinator: ClusterCoordinator,
    transport: Arc<Transport>,
    membership: Arc<Membership>,
    joining: bool,
    ready: watch::Sender<bool>,
    status: Arc<WorkerStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    if joining {
        // Alone in its view, a joining node would count itself a quorum.
        membership.joined(&mut shutdown).await;
        if *shutdown.borrow() {
            return;
        }
    }
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_millis(READY_WAIT_MS);
    let (mut links, mut views) = (transport.link_changes(), membership.subscribe());
    let mut waiting = false;
    loop {
        links.borrow_and_update();
        views.borrow_and_update();
        if coordinator.quorums_reachable() {
            let view = membership.view();
            let linked: Vec<&str> = transport
                .reachable_peers()
                .iter()
                .filter_map(|id| view.get(*id).map(|m| m.name.as_str()))
                .collect();
            tracing::info!(
                after_ms = started.elapsed().as_millis() as u64,
                ?linked,
                "serving data commands: every partition has its R/W replicas reachable"
            );
            break;
        }
        if !waiting {
            waiting = true;
            tracing::info!(
                wait_ms_max = READY_WAIT_MS,
                "data commands answer LOADING until enough peers are linked for R and W"
            );
        }
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return,
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!(
                    after_ms = started.elapsed().as_millis() as u64,
                    linked = transport.reachable_peers().len(),
                    "serving data commands although some partitions lack R/W reachable replicas: \
                     the wait for peers ran out"
                );
                break;
            }
            _ = links.changed() => {}
            _ = views.changed() => {}
        }
    }
    status.stepped();
    let _ = ready.send(true);
}

/// Removes expired values from disk in bounded batches: wake every
/// interval, reap until nothing is due or the per-tick budget is spent.
async fn reap_expired(
    replica: Arc<Replica>,
    executor: Arc<StorageExecutor>,
    clock: Arc<dyn Clock>,
    status: Arc<WorkerStatus>,
    shutdown: watch::Receiver<bool>,
) {
    let period = Duration::from_millis(EXPIRE_REAP_INTERVAL_MS);
    every(period, &status, shutdown, || async {
        for _ in 0..EXPIRE_REAP_BATCHES_PER_TICK {
            let (replica, now) = (Arc::clone(&replica), clock.now_ms());
            let reaped = executor
                .run(move || replica.reap_expired(now, EXPIRE_REAP_BATCH_KEYS))
                .await
                .map_err(|e| e.to_string())?;
            match reaped {
                Ok(n) if n == EXPIRE_REAP_BATCH_KEYS => continue,
                Ok(_) => break,
                // The store's state (logged, `store_status`): the reaper
                // tries again next tick.
                Err(e) if e.is_unwritable() => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    })
    .await;
}

/// `--fsync everysec`: sync the store once a second until shutdown.
async fn everysec_sync(
    replica: Arc<Replica>,
    executor: Arc<StorageExecutor>,
    status: Arc<WorkerStatus>,
    shutdown: watch::Receiver<bool>,
) {
    let period = Duration::from_millis(FSYNC_EVERYSEC_INTERVAL_MS);
    every(period, &status, shutdown, || async {
        let replica = Arc::clone(&replica);
        match executor.run(move || replica.sync()).await {
            Ok(Ok(())) => Ok(()),
            // The store's state (logged, `store_status`).
            Ok(Err(e)) if e.is_unwritable() => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
}
