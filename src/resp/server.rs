//! The client listener and what all connections share: config, the
//! coordinator, the client registry and the server counters.

use super::conn::{ClientInfo, serve_connection};
use crate::config::Config;
use crate::coordinator::Coordinator;
use crate::net::Listener;
use crate::task::WorkerBoard;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::monitor::Monitors;
use super::pause::Pause;
pub use super::stats::Stats;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

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

/// The RESP listener and its connections.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    listener: Box<dyn Listener>,
}

impl Server {
    /// Serves clients on `listener`; commands without Redis's `loading`
    /// flag are refused with LOADING until `ready` turns `true`.
    ///
    /// # Errors
    /// The listener's address cannot be read.
    pub fn new(
        listener: Box<dyn Listener>,
        config: Config,
        coordinator: Arc<dyn Coordinator>,
        workers: WorkerBoard,
        shutdown: watch::Receiver<bool>,
        ready: watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        let port = listener.local_addr()?.port();
        let idle_timeout_secs = watch::Sender::new(config.timeout_secs);
        let shared = Arc::new(Shared {
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
        });
        Ok(Self { shared, listener })
    }

    /// The shared state (tests, INFO).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The bound client address.
    ///
    /// # Errors
    /// The socket's error.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts clients until shutdown, then lets every connection finish
    /// the commands it has read (up to `drain`), and returns.
    pub async fn run(self, drain: Duration) {
        let Server { shared, listener } = self;
        let maxclients = shared.config().maxclients;
        let slots = Arc::new(Semaphore::new(maxclients));
        let mut connections = JoinSet::new();
        let mut shutdown = shared.shutdown();
        let mut sampler = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                biased;
                () = crate::task::stopped(&mut shutdown) => break,
                _ = sampler.tick() => shared.stats.sample_ops(),
                Some(done) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(e) = done && e.is_panic() {
                        tracing::error!("connection task panicked: {e}");
                    }
                }
                accepted = listener.accept() => {
                    let mut connection = match accepted {
                        Ok(connection) => connection,
                        Err(e) => {
                            // Out of file descriptors and the like: back off
                            // instead of spinning.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    shared.stats.connections_received.fetch_add(1, Ordering::Relaxed);
                    let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                        shared.stats.connections_rejected.fetch_add(1, Ordering::Relaxed);
                        connections.spawn(async move {
                            let _ = connection.writer.write_all(b"-ERR max number of clients reached\r\n").await;
                        });
                        continue;
                    };
                    let shared = Arc::clone(&shared);
                    connections.spawn(async move {
                        serve_connection(shared, connection).await;
                        drop(permit);
                    });
                }
            }
        }
        drop(listener);
        tracing::info!(
            connections = connections.len(),
            "draining client connections"
        );
        if tokio::time::timeout(drain, async {
            while connections.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("drain deadline passed; closing remaining connections");
            connections.shutdown().await;
        }
    }
}

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
