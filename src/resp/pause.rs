//! CLIENT PAUSE and UNPAUSE: holding this node's client commands until a
//! deadline passes or a client unpauses, as Redis 7 holds them.
//!
//! Every command asks [`Pause::wait`] before it runs (after its arity and
//! AUTH checks, before MULTI queues it, as Redis's `processCommand`), so the
//! question must be cheap when nothing is paused: one atomic load. The
//! deadline lives in a watch channel that waiters sleep on.

use std::sync::atomic::{AtomicU8, Ordering};
use tokio::sync::watch;
use tokio::time::Instant;

/// What a pause holds. Ordered: a pause for ALL overrides one for WRITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PauseKind {
    /// Commands that write (or may replicate), and EXEC of a transaction
    /// holding one.
    Write = 1,
    /// Every client command.
    All = 2,
}

/// The node's pause state.
#[derive(Debug)]
pub struct Pause {
    /// 0 when nothing is paused, else a [`PauseKind`] as u8: the fast path.
    kind: AtomicU8,
    /// The pause in force and its end; changed under the channel's lock,
    /// which also keeps `kind` in step.
    state: watch::Sender<Option<(PauseKind, Instant)>>,
}

impl Default for Pause {
    fn default() -> Self {
        Self {
            kind: AtomicU8::new(0),
            state: watch::Sender::new(None),
        }
    }
}

impl Pause {
    /// Pauses `kind` of commands until `until`. As Redis's `pauseClients`,
    /// a pause already in force keeps the stronger kind and the later end.
    pub fn pause(&self, kind: PauseKind, until: Instant) {
        self.state.send_modify(|state| {
            let merged = match *state {
                Some((k, u)) => (k.max(kind), u.max(until)),
                None => (kind, until),
            };
            *state = Some(merged);
            self.kind.store(merged.0 as u8, Ordering::SeqCst);
        });
    }

    /// Ends any pause now and releases the waiting clients.
    pub fn unpause(&self) {
        self.state.send_modify(|state| {
            *state = None;
            self.kind.store(0, Ordering::SeqCst);
        });
    }

    /// Whether any pause may be in force (one atomic load): the connection
    /// then sends the replies it holds before a command may wait, as Redis
    /// has sent them by the time it postpones a client.
    pub fn active(&self) -> bool {
        self.kind.load(Ordering::SeqCst) != 0
    }

    /// Whether a command (writing or not) would be held now; may be stale
    /// by a deadline that just passed, which [`Pause::wait`] then clears.
    pub fn holds(&self, writes: bool) -> bool {
        match self.kind.load(Ordering::SeqCst) {
            0 => false,
            k if k == PauseKind::Write as u8 => writes,
            _ => true,
        }
    }

    /// Returns once a command that `writes` (or not) may run.
    pub async fn wait(&self, writes: bool) {
        while self.holds(writes) {
            let mut changes = self.state.subscribe();
            let Some((_, until)) = *changes.borrow_and_update() else {
                return;
            };
            if Instant::now() >= until {
                self.expire();
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep_until(until) => {}
                _ = changes.changed() => {}
            }
        }
    }

    /// Clears a pause whose deadline passed.
    fn expire(&self) {
        self.state.send_if_modified(|state| match *state {
            Some((_, until)) if Instant::now() >= until => {
                *state = None;
                self.kind.store(0, Ordering::SeqCst);
                true
            }
            _ => false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Proves a WRITE pause lets reads through and holds a writer until
    /// its deadline, by timing both on a real clock.
    #[tokio::test]
    async fn a_write_pause_holds_writers_until_its_deadline() {
        let pause = Pause::default();
        let start = Instant::now();
        pause.pause(PauseKind::Write, start + Duration::from_millis(200));
        pause.wait(false).await;
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "a read waited"
        );
        pause.wait(true).await;
        assert!(start.elapsed() >= Duration::from_millis(200));
        assert!(!pause.holds(true));
    }

    /// Proves a second, weaker and shorter pause does not shorten the first.
    #[tokio::test]
    async fn the_stronger_kind_and_the_later_end_win() {
        let pause = Pause::default();
        let start = Instant::now();
        pause.pause(PauseKind::All, start + Duration::from_millis(300));
        pause.pause(PauseKind::Write, start + Duration::from_millis(100));
        pause.wait(false).await;
        assert!(start.elapsed() >= Duration::from_millis(300));
    }

    /// Proves UNPAUSE releases a waiter long before the pause's deadline.
    #[tokio::test]
    async fn unpause_releases_waiters() {
        let pause = std::sync::Arc::new(Pause::default());
        let start = Instant::now();
        pause.pause(PauseKind::All, start + Duration::from_secs(3600));
        let waiter = tokio::spawn({
            let pause = std::sync::Arc::clone(&pause);
            async move { pause.wait(false).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        pause.unpause();
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("released in time")
            .expect("waiter ends");
    }
}
