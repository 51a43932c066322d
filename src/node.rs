//! Wires the parts into a running node and owns its lifecycle: open the
//! store, build the coordinator, serve clients, run the background
//! workers, and on shutdown drain clients and flush the store.

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::coordinator::{Coordinator, LocalCoordinator};
use crate::limits::{
    EXPIRE_REAP_BATCH_KEYS, EXPIRE_REAP_BATCHES_PER_TICK, EXPIRE_REAP_INTERVAL_MS,
    FSYNC_EVERYSEC_INTERVAL_MS, SHUTDOWN_DRAIN_MS,
};
use crate::replica::Replica;
use crate::resp::Server;
use crate::storage::{FjallStore, FsyncPolicy, StoreError};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinSet;

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
    /// The client port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A node ready to serve: store open, port bound.
pub struct Node {
    replica: Arc<Replica>,
    clock: Arc<dyn Clock>,
    coordinator: Arc<dyn Coordinator>,
    server: Server,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Signals a running node to stop.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    /// Asks the node to stop accepting, drain and exit.
    pub fn shutdown(&self) {
        let _ = self.0.send(true);
    }
}

impl Node {
    /// Opens the data directory and binds the client port.
    ///
    /// # Errors
    /// [`NodeError`] for an unusable data directory or port.
    pub async fn start(config: Config) -> Result<Self, NodeError> {
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| NodeError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let (partitions, fsync, siblings_max) =
            (config.partitions, config.fsync, config.siblings_max);
        // Opening recovers the journal and scans the keys: blocking work.
        let replica = tokio::task::spawn_blocking(move || {
            let store = Arc::new(FjallStore::open(&dir)?);
            Replica::open(store, partitions, fsync, siblings_max)
        })
        .await
        .map_err(|e| StoreError::Engine(format!("store open task: {e}")))??;
        let replica = Arc::new(replica);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let coordinator: Arc<dyn Coordinator> = Arc::new(LocalCoordinator::new(
            Arc::clone(&replica),
            Arc::clone(&clock),
        ));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let addr = format!("{}:{}", config.bind, config.port);
        let server = Server::bind(config, Arc::clone(&coordinator), shutdown_rx)
            .await
            .map_err(|source| NodeError::Bind { addr, source })?;
        Ok(Self {
            replica,
            clock,
            coordinator,
            server,
            shutdown,
        })
    }

    /// The bound client address.
    ///
    /// # Errors
    /// The socket's error.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.server.local_addr()
    }

    /// A handle that stops the node.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Serves until shut down, then drains clients (bounded) and flushes
    /// the store.
    ///
    /// # Errors
    /// The final flush's error.
    pub async fn run(self) -> Result<(), NodeError> {
        let Node {
            replica,
            clock,
            coordinator,
            server,
            shutdown,
        } = self;
        let mut workers = JoinSet::new();
        if replica.fsync() == FsyncPolicy::Everysec {
            workers.spawn(everysec_sync(Arc::clone(&replica), shutdown.subscribe()));
        }
        workers.spawn(reap_expired(
            Arc::clone(&replica),
            clock,
            shutdown.subscribe(),
        ));
        server.run(Duration::from_millis(SHUTDOWN_DRAIN_MS)).await;
        let _ = shutdown.send(true);
        while workers.join_next().await.is_some() {}
        coordinator
            .flush()
            .await
            .map_err(|e| StoreError::Engine(e.to_string()))?;
        tracing::info!("store flushed; node stopped");
        Ok(())
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here, not in a
    // caller's `select!`.
    let _ = shutdown.wait_for(|&s| s).await;
}

/// Removes expired values from disk in bounded batches: wake every
/// interval, reap until nothing is due or the per-tick budget is spent.
async fn reap_expired(
    replica: Arc<Replica>,
    clock: Arc<dyn Clock>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(EXPIRE_REAP_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stopped(&mut shutdown) => return,
            _ = tick.tick() => {}
        }
        for _ in 0..EXPIRE_REAP_BATCHES_PER_TICK {
            let (replica, now) = (Arc::clone(&replica), clock.now_ms());
            let reaped = tokio::task::spawn_blocking(move || {
                replica.reap_expired(now, EXPIRE_REAP_BATCH_KEYS)
            })
            .await;
            match reaped {
                Ok(Ok(n)) if n == EXPIRE_REAP_BATCH_KEYS => continue,
                Ok(Ok(_)) => break,
                Ok(Err(e)) => tracing::error!("expiry reaper: {e}"),
                Err(e) => tracing::error!("expiry reaper task: {e}"),
            }
            break;
        }
    }
}

/// `--fsync everysec`: sync the store once a second until shutdown.
async fn everysec_sync(replica: Arc<Replica>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(FSYNC_EVERYSEC_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = crate::node::stopped(&mut shutdown) => return,
            _ = tick.tick() => {
                let replica = Arc::clone(&replica);
                match tokio::task::spawn_blocking(move || replica.sync()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!("background sync failed: {e}"),
                    Err(e) => tracing::error!("background sync task failed: {e}"),
                }
            }
        }
    }
}
