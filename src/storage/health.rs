//! Whether the store can take writes: its health, kept in one place.
//!
//! A failed write or sync (a full disk, an I/O error) turns the store
//! from ok to failing, with the reason and the time. While it fails,
//! every write is refused with [`StoreError::Unwritable`] before it
//! touches the disk (Redis refuses writes with `-MISCONF` while it cannot
//! persist), reads go on, and the node asks the store to recover every
//! [`STORE_PROBE_INTERVAL_MS`]: a probe write, then whatever the failure
//! left to repair (`FjallStore::recover`). The first recovery that
//! succeeds turns it back to ok.
//!
//! Each change of state is logged once, here: not each refused write, and
//! not each failed probe.
//!
//! [`STORE_PROBE_INTERVAL_MS`]: crate::limits::STORE_PROBE_INTERVAL_MS

use super::StoreError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A period during which the store could not take writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The latest failed write's or probe's error.
    pub reason: String,
    /// When writes started failing, in ms since the Unix epoch.
    pub since_ms: u64,
}

/// The store's health as INFO persistence and DYNAMO STATUS show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthReport {
    /// `Some` while the store cannot take writes.
    pub failing: Option<Failure>,
    /// The latest failure, current or over (kept after a recovery, as
    /// Redis keeps its last write status).
    pub last_failure: Option<Failure>,
    /// How many times the store went from ok to failing since it opened.
    pub failures: u64,
}

/// The store's health: ok, or failing since a time for a reason.
#[derive(Debug, Default)]
pub struct Health {
    /// `report.failing.is_some()`, read without the lock: every write
    /// checks it.
    failing: AtomicBool,
    report: Mutex<HealthReport>,
}

impl Health {
    fn lock(&self) -> MutexGuard<'_, HealthReport> {
        self.report.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether writes are refused now.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Passes while the store takes writes.
    ///
    /// # Errors
    /// [`StoreError::Unwritable`] with the failure's reason while it fails.
    pub fn check(&self) -> Result<(), StoreError> {
        if !self.is_failing() {
            return Ok(());
        }
        match &self.lock().failing {
            Some(failure) => Err(StoreError::Unwritable {
                reason: failure.reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records a failed write (or probe) at `now_ms`. The first failure
    /// after a time of health starts a failing period and is logged;
    /// later ones only replace its reason. Returns whether this one
    /// started the period.
    pub fn fail(&self, reason: &str, now_ms: u64) -> bool {
        let mut report = self.lock();
        if let Some(failure) = &mut report.failing {
            if failure.reason != reason {
                tracing::debug!(%reason, "the data directory still cannot take writes");
                failure.reason = reason.to_owned();
            }
            report.last_failure = report.failing.clone();
            return false;
        }
        let failure = Failure {
            reason: reason.to_owned(),
            since_ms: now_ms,
        };
        report.failing = Some(failure.clone());
        report.last_failure = Some(failure);
        report.failures += 1;
        self.failing.store(true, Ordering::Release);
        tracing::error!(
            %reason,
            "the data directory cannot take writes: writes are refused (MISCONF) until a probe \
             write succeeds; reads go on"
        );
        true
    }

    /// Records that the store takes writes again at `now_ms`: ends the
    /// failing period, logged, and returns it (`None` if there was none).
    pub fn recovered(&self, now_ms: u64) -> Option<Failure> {
        let mut report = self.lock();
        let ended = report.failing.take()?;
        self.failing.store(false, Ordering::Release);
        tracing::info!(
            after_ms = now_ms.saturating_sub(ended.since_ms),
            reason = %ended.reason,
            "the data directory takes writes again: writes resume"
        );
        Some(ended)
    }

    /// The health now.
    pub fn report(&self) -> HealthReport {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the state machine: ok until a failure, which starts one
    // period (counted once however many writes fail in it) and refuses
    // writes with its latest reason; a recovery ends it, keeps it as the
    // last failure, and a second failure starts a new period.
    #[test]
    fn a_failure_starts_a_period_that_a_recovery_ends() {
        let health = Health::default();
        assert!(health.check().is_ok());
        assert_eq!(health.report(), HealthReport::default());
        assert_eq!(health.recovered(5), None, "nothing to recover from");

        assert!(health.fail("disk full", 1_000));
        assert!(health.is_failing());
        assert!(!health.fail("disk full", 1_500), "the same period");
        assert!(!health.fail("still full", 2_000));
        match health.check() {
            Err(StoreError::Unwritable { reason }) => assert_eq!(reason, "still full"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        let failing = Failure {
            reason: "still full".into(),
            since_ms: 1_000,
        };
        assert_eq!(
            health.report(),
            HealthReport {
                failing: Some(failing.clone()),
                last_failure: Some(failing.clone()),
                failures: 1,
            }
        );

        assert_eq!(health.recovered(3_000), Some(failing.clone()));
        assert!(!health.is_failing());
        assert!(health.check().is_ok());
        assert_eq!(health.recovered(3_100), None, "recovered once");
        let report = health.report();
        assert_eq!((report.failing, report.last_failure), (None, Some(failing)));

        assert!(health.fail("I/O error", 4_000));
        let report = health.report();
        assert_eq!(report.failures, 2);
        assert_eq!(report.failing.map(|f| f.since_ms), Some(4_000));
    }
}
