//! When writes become durable: the `--fsync` policy and group commit.

use super::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::{Condvar, Mutex, PoisonError};

/// `--fsync`: when an acknowledged write is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// A write is acknowledged only after it is synced; concurrent writers
    /// share one sync (group commit).
    Always,
    /// A background worker syncs once a second; a crash of the machine
    /// loses at most about a second of writes (a crash of the process
    /// alone loses nothing: every write reaches the OS before the reply).
    #[default]
    Everysec,
    /// Never sync explicitly; the OS writes back when it likes.
    No,
}

impl FsyncPolicy {
    /// The name used in flags, CONFIG GET and INFO.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Everysec => "everysec",
            Self::No => "no",
        }
    }
}

/// Group commit: writers that finished applying wait for one sync that
/// started after their write; whoever finds no sync running runs it.
/// Under load one fsync acknowledges every write applied before it began.
#[derive(Debug, Default)]
pub struct GroupCommit {
    state: Mutex<CommitState>,
    synced: Condvar,
}

#[derive(Debug, Default)]
struct CommitState {
    /// Writes applied and waiting, counted from start.
    applied: u64,
    /// Every write up to this count is durable.
    durable: u64,
    syncing: bool,
    /// Number of syncs run, for INFO.
    syncs: u64,
}

impl GroupCommit {
    /// Blocks until a write that `store.apply` already returned for is
    /// durable. Call from a blocking thread, after `apply`.
    ///
    /// # Errors
    /// The sync's error; every writer waiting on that sync gets it too
    /// (as a fresh attempt, since a failed sync proves nothing).
    pub fn wait_durable(&self, store: &dyn Store) -> Result<(), StoreError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.applied += 1;
        let mine = state.applied;
        loop {
            if state.durable >= mine {
                return Ok(());
            }
            if state.syncing {
                state = self
                    .synced
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Lead a sync covering everything applied so far.
            state.syncing = true;
            let target = state.applied;
            drop(state);
            let result = store.sync();
            state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.syncing = false;
            state.syncs += 1;
            if result.is_ok() {
                state.durable = state.durable.max(target);
            }
            self.synced.notify_all();
            result?;
        }
    }

    /// How many syncs group commit has run.
    pub fn syncs(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .syncs
    }
}
