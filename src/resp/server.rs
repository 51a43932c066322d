//! The client listener and what all connections share: config, the
//! coordinator, the client registry and the server counters.

use super::conn::serve_connection;
pub use super::shared::Shared;
use crate::config::Config;
use crate::coordinator::Coordinator;
use crate::net::Listener;
use crate::task::WorkerBoard;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub use super::stats::Stats;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

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
        let shared = Arc::new(Shared::new(
            config,
            coordinator,
            workers,
            port,
            shutdown,
            ready,
        ));
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
