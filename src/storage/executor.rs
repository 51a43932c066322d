//! The threads that touch the store. fjall is synchronous and may block on
//! disk, so async code never calls it directly: it hands a job to these
//! threads and awaits the result.
//!
//! Why not `spawn_blocking`: under many concurrent clients tokio's pool
//! grows a thread per waiting job and wakes one per job, and the context
//! switches cost more than the store work. A few dedicated threads that
//! drain the whole queue before sleeping wake once per burst instead.
//! The queue is bounded (callers wait for room), and every job's result
//! travels back on a oneshot channel.
//!
//! A thread whose queue runs dry yields the CPU up to `idle_yields` times
//! before it sleeps, and a job is queued without a wake-up while no
//! thread sleeps. Under steady load the next job usually arrives within
//! those yields, so neither side pays a futex call and the sleeping
//! thread's wake-up; on a VM a wake-up is several microseconds of
//! scheduler and IPI. An idle node pays the yields once, after its last
//! job. The node passes [`STORAGE_IDLE_YIELDS`](crate::limits::STORAGE_IDLE_YIELDS),
//! or 0 under `--fsync always`, whose large pool waits on the disk rather
//! than on its callers (the figures are at the limit).
//!
//! [`StorageExecutor::inline`] runs each job at once on the caller's
//! thread instead: for the in-memory store, whose jobs never block, and
//! in the deterministic simulation, where a job finishing on another
//! thread at a time of the OS's choosing would make runs diverge.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use tokio::sync::{Semaphore, oneshot};

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
    /// Threads waiting on `ready`: a job queued while none is needs no
    /// notification (the awake threads look at the queue before sleeping).
    sleepers: usize,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Yields of a thread whose queue ran dry before it sleeps.
    idle_yields: usize,
}

/// A small pool of storage threads with a bounded job queue.
pub struct StorageExecutor {
    shared: Arc<Shared>,
    room: Semaphore,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for StorageExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageExecutor")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

/// The job was dropped without a result: its thread panicked (a bug, and
/// logged) or the executor shut down.
#[derive(Debug, thiserror::Error)]
#[error("storage job did not complete")]
pub struct JobLost;

impl StorageExecutor {
    /// Starts `threads` storage threads with room for `queue_max` jobs;
    /// one whose queue runs dry yields `idle_yields` times before it
    /// sleeps (see the module's header).
    ///
    /// # Panics
    /// If the OS refuses to start a thread.
    pub fn new(threads: usize, queue_max: usize, idle_yields: usize) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            idle_yields,
        });
        let threads = (0..threads.max(1))
            .map(|i| {
                let shared = Arc::clone(&shared);
                #[expect(clippy::expect_used, reason = "no storage thread means no node")]
                std::thread::Builder::new()
                    .name(format!("dynokv-storage-{i}"))
                    .spawn(move || work(&shared))
                    .expect("cannot start a storage thread")
            })
            .collect();
        Self {
            shared,
            room: Semaphore::new(queue_max.max(1)),
            threads,
        }
    }

    /// An executor without threads: every job runs inside [`Self::run`].
    pub fn inline() -> Self {
        Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                ready: Condvar::new(),
                idle_yields: 0,
            }),
            room: Semaphore::new(1),
            threads: Vec::new(),
        }
    }

    /// Runs `job` on a storage thread (or, inline, right here) and
    /// returns its result.
    ///
    /// # Errors
    /// [`JobLost`] if the job panicked or the executor is shutting down.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, JobLost> {
        if self.threads.is_empty() {
            return run_caught(job);
        }
        let permit = self.room.acquire().await.map_err(|_| JobLost)?;
        let (tx, rx) = oneshot::channel();
        self.enqueue(Box::new(move || {
            let _ = tx.send(job());
        }))?;
        let result = rx.await.map_err(|_| JobLost);
        drop(permit);
        result
    }

    /// Queues `job` without waiting for room and without a result: for a
    /// caller that keeps at most a few such jobs queued at once (the
    /// local coordinator's combined job), and must not be cancelled
    /// between deciding to queue a job and queueing it.
    ///
    /// Inline, `job` runs before this returns.
    ///
    /// # Errors
    /// [`JobLost`] if the executor is shutting down (`job` is dropped).
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) -> Result<(), JobLost> {
        if self.threads.is_empty() {
            return run_caught(job);
        }
        self.enqueue(Box::new(job))
    }

    /// Puts `job` on the queue and wakes a sleeping storage thread, if
    /// any sleeps.
    fn enqueue(&self, job: Job) -> Result<(), JobLost> {
        let wake = {
            let mut queue = self
                .shared
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if queue.closed {
                return Err(JobLost);
            }
            queue.jobs.push_back(job);
            queue.sleepers > 0
        };
        if wake {
            self.shared.ready.notify_one();
        }
        Ok(())
    }
}

/// Runs `job` here; a panic (a bug) is logged and becomes [`JobLost`].
fn run_caught<T>(job: impl FnOnce() -> T) -> Result<T, JobLost> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).map_err(|_| {
        tracing::error!("a storage job panicked; its caller gets an error");
        JobLost
    })
}

/// A storage thread: take every queued job, run them, yield a few times
/// when none, then sleep.
fn work(shared: &Shared) {
    loop {
        let batch: Vec<Job> = {
            let mut queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            for _ in 0..shared.idle_yields {
                if !queue.jobs.is_empty() || queue.closed {
                    break;
                }
                drop(queue);
                std::thread::yield_now();
                queue = shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
            }
            while queue.jobs.is_empty() && !queue.closed {
                queue.sleepers += 1;
                queue = shared
                    .ready
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
                queue.sleepers -= 1;
            }
            if queue.jobs.is_empty() {
                return; // closed and drained
            }
            // Take a share, leaving the rest to the other threads.
            let take = queue.jobs.len().div_ceil(2).max(1);
            queue.jobs.drain(..take).collect()
        };
        for job in batch {
            let _ = run_caught(job);
        }
    }
}

impl Drop for StorageExecutor {
    fn drop(&mut self) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.shared.ready.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::STORAGE_IDLE_YIELDS;

    #[tokio::test]
    async fn runs_jobs_and_survives_a_panic() {
        let executor = StorageExecutor::new(2, 8, STORAGE_IDLE_YIELDS);
        assert_eq!(executor.run(|| 2 + 2).await.ok(), Some(4));
        assert!(executor.run(|| panic!("planted")).await.is_err());
        let results = futures_join(&executor).await;
        assert_eq!(results, (0..32).collect::<Vec<_>>());
        let inline = StorageExecutor::inline();
        let caller = std::thread::current().id();
        assert_eq!(
            inline
                .run(move || std::thread::current().id() == caller)
                .await
                .ok(),
            Some(true)
        );
        assert!(inline.run(|| panic!("planted")).await.is_err());
    }

    /// A job queued while every thread sleeps wakes one, and jobs queued
    /// from many tasks at once while threads yield or sleep all run: no
    /// job waits for a wake-up that skipping the notification lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_job_is_left_waiting() {
        let executor = Arc::new(StorageExecutor::new(3, 64, STORAGE_IDLE_YIELDS));
        for round in 0..20 {
            // Long enough for every thread to finish its yields and sleep.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let n = 1 + round * 10;
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..n {
                let executor = Arc::clone(&executor);
                tasks.spawn(async move { executor.run(move || i).await.ok() });
            }
            let answers = tokio::time::timeout(std::time::Duration::from_secs(10), async {
                let mut answers = Vec::new();
                while let Some(done) = tasks.join_next().await {
                    answers.push(done.ok().flatten());
                }
                answers
            })
            .await;
            let mut answers = answers.unwrap_or_default();
            answers.sort_unstable();
            assert_eq!(
                answers,
                (0..n).map(Some).collect::<Vec<_>>(),
                "round {round}"
            );
        }
    }

    async fn futures_join(executor: &StorageExecutor) -> Vec<usize> {
        let mut out = Vec::new();
        for i in 0..32 {
            out.push(executor.run(move || i).await.unwrap_or(usize::MAX));
        }
        out
    }
}
