//! Async plumbing every layer shares: the boxed future that lets async
//! methods sit behind trait objects, and the wait for the node's shutdown
//! signal. Here, at the bottom, so that no layer imports it from one
//! above (the coordinator, the node).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::watch;

/// A boxed future, so async methods can sit behind `dyn Trait`
/// (`dyn Coordinator`, the peer `Handler`, the `Network`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Resolves once `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here, not in a
    // caller's `select!`.
    let _ = shutdown.wait_for(|&s| s).await;
}

/// Runs `step` every `period` until `shutdown`: the one shape of the
/// node's periodic workers (the everysec syncer, the expiry reaper, the
/// store probe). A step in progress finishes before shutdown is seen; a
/// step that overruns its period delays the next one rather than
/// bunching them up.
pub async fn every<F, Fut>(period: Duration, mut shutdown: watch::Receiver<bool>, mut step: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => return,
            _ = tick.tick() => step().await,
        }
    }
}
