//! Async plumbing every layer shares: the boxed future that lets async
//! methods sit behind trait objects, the wait for the node's shutdown
//! signal, and the one shape of a background worker ([`Workers`]). Here,
//! at the bottom, so that no layer imports it from one above (the
//! coordinator, the node).

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A boxed future, so async methods can sit behind `dyn Trait`
/// (`dyn Coordinator`, the peer `Handler`, the `Network`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Resolves once `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here, not in a
    // caller's `select!`.
    let _ = shutdown.wait_for(|&s| s).await;
}

/// What `DYNAMO STATUS` shows of one background worker: whether it runs,
/// the steps it made (a tick, a repair sent, a membership round), and
/// its failures. A worker reports through it; the first failure after
/// a success, and the first success after failures, are logged: a
/// worker that fails every tick logs once per change of state.
#[derive(Debug)]
pub struct WorkerStatus {
    name: &'static str,
    running: AtomicBool,
    steps: AtomicU64,
    failures: AtomicU64,
    /// The last failure while the worker is failing, and whether its
    /// first failure was logged here.
    failing: Mutex<Option<(String, bool)>>,
}

impl WorkerStatus {
    /// A running worker's status. [`Workers::spawn`] makes one for each
    /// task it starts; a lower layer that runs a worker on a thread of
    /// its own (the store's ingestion) makes its own and shows it with
    /// [`WorkerBoard::show`].
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            running: AtomicBool::new(true),
            steps: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            failing: Mutex::new(None),
        }
    }

    /// A step went well.
    pub fn stepped(&self) {
        self.steps.fetch_add(1, Ordering::Relaxed);
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, true)) = failing.take() {
            tracing::info!(worker = self.name, "works again");
        }
    }

    /// A step failed with `error`; the worker goes on.
    pub fn failed(&self, error: impl Display) {
        self.record_failure(error, true);
    }

    /// A step failed with an `error` that was logged where it happened
    /// (the store's health logs a failed ingestion, once per change of
    /// state): shown on the status line, not logged twice.
    pub fn failed_logged(&self, error: impl Display) {
        self.record_failure(error, false);
    }

    fn record_failure(&self, error: impl Display, log: bool) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let error = error.to_string();
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        let logged = match &*failing {
            Some((_, logged)) => *logged,
            None if log => {
                tracing::error!(
                    worker = self.name,
                    "failing: {error}; logged again when it works"
                );
                true
            }
            None => false,
        };
        *failing = Some((error, logged));
    }

    /// The worker returned (after the shutdown signal, or its owner's
    /// close).
    pub fn ended(&self) {
        self.running.store(false, Ordering::Relaxed);
    }

    /// The worker's name and its status line, as `DYNAMO STATUS` shows
    /// them: `running,steps=120,failures=0` with `,failing=<error>` while
    /// it fails.
    pub fn line(&self) -> (&'static str, String) {
        let state = if self.running.load(Ordering::Relaxed) {
            "running"
        } else {
            "stopped"
        };
        let mut line = format!(
            "{state},steps={},failures={}",
            self.steps.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed)
        );
        if let Some((error, _)) = &*self.failing.lock().unwrap_or_else(PoisonError::into_inner) {
            line.push_str(",failing=");
            line.push_str(error);
        }
        (self.name, line)
    }
}

/// The statuses of the node's workers, for `DYNAMO STATUS`; a clone
/// shares them.
#[derive(Debug, Clone, Default)]
pub struct WorkerBoard(Arc<Mutex<Vec<Arc<WorkerStatus>>>>);

impl WorkerBoard {
    /// Shows `status` on the board, after those shown before.
    pub fn show(&self, status: Arc<WorkerStatus>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(status);
    }

    /// Each worker's name and status line, in the order they started.
    pub fn lines(&self) -> Vec<(&'static str, String)> {
        let statuses = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        statuses.iter().map(|s| s.line()).collect()
    }
}

/// The node's background workers, in one shape: each is named, owned
/// here, handed the shutdown signal and its [`WorkerStatus`], and joined
/// by [`Workers::join`] once the signal is sent.
#[derive(Debug)]
pub struct Workers {
    set: JoinSet<()>,
    board: WorkerBoard,
    shutdown: watch::Receiver<bool>,
}

impl Workers {
    /// Workers stopped by `shutdown`, shown on `board`.
    pub fn new(board: WorkerBoard, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            set: JoinSet::new(),
            board,
            shutdown,
        }
    }

    /// Starts the worker `name`: `work` gets its status and the shutdown
    /// signal, and must return soon after the signal.
    pub fn spawn<W, Fut>(&mut self, name: &'static str, work: W)
    where
        W: FnOnce(Arc<WorkerStatus>, watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let status = Arc::new(WorkerStatus::new(name));
        self.board.show(Arc::clone(&status));
        let work = work(Arc::clone(&status), self.shutdown.clone());
        self.set.spawn(async move {
            work.await;
            status.ended();
        });
    }

    /// Waits for every worker to return (after the shutdown signal).
    pub async fn join(mut self) {
        while let Some(joined) = self.set.join_next().await {
            if let Err(e) = joined {
                tracing::error!("a background worker panicked: {e}");
            }
        }
    }
}

/// Runs `step` every `period` until `shutdown`: the shape of the node's
/// periodic workers (the everysec syncer, the expiry reaper, the store
/// probe). Each step's outcome goes to `status`. A step in progress
/// finishes before shutdown is seen; a step that overruns its period
/// delays the next one rather than bunching them up.
pub async fn every<F, Fut, E>(
    period: Duration,
    status: &WorkerStatus,
    mut shutdown: watch::Receiver<bool>,
    mut step: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return,
            _ = tick.tick() => match step().await {
                Ok(()) => status.stepped(),
                Err(e) => status.failed(e),
            },
        }
    }
}
