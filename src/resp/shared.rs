//! What all connections share: the config, the coordinator, the client
//! registry, the server counters, CLIENT PAUSE, the MONITOR clients and
//! the node's background workers.

use super::monitor::Monitors;
use super::pause::Pause;
use super::session::ClientInfo;
use super::stats::Stats;
use crate::config::Config;
use crate::coordinator::Coordinator;
use crate::task::WorkerBoard;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;
use tokio::sync::watch;

/// State shared by every connection.
pub struct Shared {
    /// The configuration (CONFIG SET changes the run-time settable parts).
    pub config: RwLock<Config>,
    /// Where data commands go.
    pub coordinator: Arc<dyn Coordinator>,
    /// The node's background workers, for `DYNAMO STATUS`.
    pub workers: WorkerBoard,
    /// Connected clients by id.
    pub clients: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
    /// Server counters.
    pub stats: Stats,
    /// CLIENT PAUSE's state.
    pub pause: Pause,
    /// The MONITOR clients and their queued lines.
    pub monitors: Arc<Monitors>,
    /// CONFIG `timeout` in seconds (0: never). A watch, so that a client
    /// already waiting for input hears CONFIG SET, and one waiting with no
    /// timeout holds no timer.
    pub idle_timeout_secs: watch::Sender<u64>,
    /// When the server started.
    pub started: Instant,
    /// A random id for this run (INFO run_id).
    pub run_id: String,
    /// The TCP port actually bound (differs from config when it was 0).
    pub port: u16,
    next_client_id: AtomicU64,
    shutdown: watch::Receiver<bool>,
    /// Turns `true` once the node can serve data commands; until then
    /// they are refused with LOADING (see `node`).
    ready: watch::Receiver<bool>,
    /// `ready` was seen `true`: it never turns back, and every command
    /// asks (an atomic load, not the watch's lock).
    ready_seen: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The state of a node's client face listening on `port`.
    pub fn new(
        config: Config,
        coordinator: Arc<dyn Coordinator>,
        workers: WorkerBoard,
        port: u16,
        shutdown: watch::Receiver<bool>,
        ready: watch::Receiver<bool>,
    ) -> Self {
        let idle_timeout_secs = watch::Sender::new(config.timeout_secs);
        Self {
            config: RwLock::new(config),
            coordinator,
            workers,
            clients: Mutex::new(BTreeMap::new()),
            stats: Stats::default(),
            pause: Pause::default(),
            monitors: Arc::default(),
            idle_timeout_secs,
            started: Instant::now(),
            run_id: run_id(),
            port,
            next_client_id: AtomicU64::new(0),
            shutdown,
            ready,
            ready_seen: AtomicBool::new(false),
        }
    }

    /// A snapshot of the config.
    pub fn config(&self) -> Config {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A receiver that changes to `true` when the node shuts down.
    pub fn shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// Whether data commands are still refused with LOADING: the node has
    /// not yet reached its peers (Redis's `server.loading`).
    pub fn loading(&self) -> bool {
        if self.ready_seen.load(Ordering::Relaxed) {
            return false;
        }
        let ready = *self.ready.borrow();
        if ready {
            self.ready_seen.store(true, Ordering::Relaxed);
        }
        !ready
    }

    /// Allocates the next client id (from 1, as Redis).
    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Number of connected clients.
    pub fn client_count(&self) -> usize {
        self.clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A random id for this run (INFO run_id), 40 hex digits as Redis's.
fn run_id() -> String {
    let (a, b, c) = (
        crate::random::random_u64(),
        crate::random::random_u64(),
        crate::random::random_u64(),
    );
    let mut id = format!("{a:016x}{b:016x}{c:016x}");
    id.truncate(40);
    id
}
