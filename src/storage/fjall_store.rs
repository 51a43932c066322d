//! The fjall-backed store: one database per data directory with the
//! keyspaces `data` (storage key → record), `expiry` (the expiry index),
//! `hints` (records kept for replicas that were down) and `meta`, and beside them, in `stage/`, the store's write-ahead log
//! (see [`super::stage`] and [`super::stage_log`]).
//!
//! A batch is one entry of the active generation's log file, holding
//! every op of the batch (records, expiry-index entries, hints); then
//! its ops go into the active generation, where lookups find them. The
//! log entry is the batch's only write: it is there whole or not at all,
//! and nothing else can fail after it. A generation holding
//! [`STAGE_GENERATION_BYTES`], or whose log file reached
//! [`STAGE_LOG_BYTES_MAX`], is sealed, then sorted and ingested into the
//! keyspaces as tables by the store's ingest thread, and
//! its log file deleted; meanwhile the next generation takes writes, into
//! a file of its own. A scan merges what is staged for its range into what
//! it reads. Opening replays the log files, in order, and ingests what
//! they hold.
//!
//! fjall's own journal carries no batch: only `meta` entries (node id,
//! member list, saved key counts), each written alone and synced at once,
//! and the ingestions' bookkeeping.
//!
//! FLUSHALL does not use fjall's `Keyspace::clear`: fjall journals a
//! clear as a marker that recovery replays, unconditionally, whenever the
//! journal holding it is still on disk, which it stays while nothing is
//! written through the journal to the data keyspace (its tables come from
//! ingestions): every key ingested after a FLUSHALL vanished at the next
//! restart, and each restart replayed every flush again. Nor does it make
//! new keyspaces: each creation and deletion is a new version of fjall's
//! own metadata, and 1,000 flushes left 6,000 version files (3.9 GiB) that
//! the next open took 13 s to clean. Instead `clear` ingests
//! what is staged, then one table of tombstones for every stored key: as
//! atomic as any ingestion, nothing to replay, and O(keys) like Redis's
//! own FLUSHALL.
//!
//! # When the disk fails
//!
//! A failed write or sync turns the store's [`Health`] to failing, and
//! every write is refused from then on, before it touches the disk. A
//! batch whose log entry failed is cut off the log ([`StageLog::append`]):
//! nothing of a write the client was told failed can come back at a
//! restart. A batch that failed later (its generation's seal or
//! ingestion) is logged and staged: it succeeded, and the store fails
//! from the next write on.
//!
//! fjall 3 poisons its database for good after any failed journal write
//! or fsync, and after a failed flush or compaction in one of its worker
//! threads (which then exits); every later journal write answers
//! `Poisoned`, while reads and ingestions go on. A failed ingestion or
//! compaction leaves the files it began, which fjall deletes only when it
//! opens a directory. So [`FjallStore::recover`], once a probe file of
//! [`STORE_PROBE_BYTES`] is written and synced, reopens fjall if anything
//! of it failed (the staged generations and the log stay as they are:
//! fjall holds nothing of a batch that is not ingested), repairs the log,
//! and ingests everything staged into synced tables, which also heals a
//! log whose fsync failed (the kernel may have dropped its pages); then
//! writes resume. Reads wait while fjall reopens, and fail if it cannot reopen,
//! until a later probe reopens it.

use super::health::{Health, HealthReport};
use super::stage::{Generation, decode_log, encode_log, merge_scan, staged_range};
use super::stage_log::StageLog;
use super::{BatchOp, Doomed, Entries, Space, Store, StoreError};
use crate::clock::{Clock, SystemClock};
use crate::limits::{
    DATA_L0_TABLES_COMPACTED, DATA_L0_TABLES_STALL, INGEST_STALL_WAIT_MS, STAGE_GENERATION_BYTES,
    STAGE_IDLE, STAGE_IDLE_INGEST_BYTES_MIN, STAGE_LOG_BYTES_MAX, STORE_PROBE_BYTES,
};
use crate::task::WorkerStatus;
use bytes::Bytes;
use fjall::compaction::Leveled;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::io::Write;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Sealed generations queued for the ingest thread. One is sealed at a
/// time (the next waits for its ingestion), so one slot is
/// enough; a sender holds no lock, so if a checkpoint's ingestion races
/// it, its send waits for the thread without blocking anyone else.
const INGEST_QUEUE: usize = 1;

/// The `meta` key [`Shared::collect_tables`] writes (empty).
const COLLECT_KEY: &str = "collect";

/// How often an ingestion waiting for compaction looks at level 0.
const INGEST_STALL_POLL: Duration = Duration::from_millis(10);

/// The file a recovery probe writes in the log's directory (whose other
/// files the log leaves alone), then deletes.
const PROBE_FILE: &str = "probe.tmp";

/// Bounds of a range of keys.
type KeyRange<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The idle ingester's nice value: the lowest CPU priority, so that it
/// takes only CPU nobody else wants. Reads do not reach the store when
/// the record cache answers them, so the store cannot tell an idle node
/// from one busy serving reads: at full priority, an idle ingestion
/// during the GETs after a burst of SETs took GET P16 down to 0.29× of
/// redis-server in one run of three (docs/benchmarks.md, session 10).
const IDLE_INGEST_NICE: i32 = 19;

/// A [`Store`] on fjall: its state, shared with its two ingest threads,
/// and those threads, its workers (shown in `DYNAMO STATUS` as
/// `worker:ingest` and `worker:idle-ingest`, stopped and joined by
/// [`Store::close`] or, failing that, on drop).
pub struct FjallStore {
    shared: Arc<Shared>,
    /// Sealed generations on their way to the ingest thread; `None`
    /// stops it.
    to_ingest: mpsc::SyncSender<Option<Arc<Generation>>>,
    /// A send (a rendezvous) stops the idle ingester.
    stop_idle: mpsc::SyncSender<()>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    ingester: Arc<WorkerStatus>,
    idle_ingester: Arc<WorkerStatus>,
}

impl std::ops::Deref for FjallStore {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

impl Drop for FjallStore {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

/// fjall: the database and its keyspaces, replaced as a whole when the
/// store reopens it after a failure.
struct Engine {
    db: Database,
    data: Keyspace,
    expiry: Keyspace,
    hints: Keyspace,
    meta: Keyspace,
}

impl Engine {
    fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = Database::builder(dir).open().map_err(engine)?;
        let data = db.keyspace("data", data_options).map_err(engine)?;
        let [expiry, hints, meta] = ["expiry", "hints", "meta"]
            .map(|name| db.keyspace(name, KeyspaceCreateOptions::default));
        let (expiry, hints) = (expiry.map_err(engine)?, hints.map_err(engine)?);
        let meta = meta.map_err(engine)?;
        Ok(Self {
            db,
            data,
            expiry,
            hints,
            meta,
        })
    }

    fn space(&self, space: Space) -> &Keyspace {
        match space {
            Space::Data => &self.data,
            Space::Expiry => &self.expiry,
            Space::Hints => &self.hints,
        }
    }
}

/// The engine, held open: a reopen waits until no one holds it. A holder
/// must not ask for it again (a reopen waiting between the two would
/// block the second ask for good): functions that need it take it as an
/// argument.
struct EngineRef<'a>(RwLockReadGuard<'a, Option<Engine>>);

impl std::ops::Deref for EngineRef<'_> {
    type Target = Engine;

    fn deref(&self) -> &Engine {
        match self.0.as_ref() {
            Some(engine) => engine,
            None => unreachable!("an EngineRef is made only over an open engine"),
        }
    }
}

/// The fjall store's state.
pub struct Shared {
    dir: PathBuf,
    /// fjall; `None` only after a reopen failed, until one succeeds.
    engine: RwLock<Option<Engine>>,
    /// The staged generations' log files.
    log: StageLog,
    /// The generation taking writes. Held from a batch's log entry to its
    /// records being in the generation, so a generation's log file holds
    /// exactly its writes, in order.
    active: Mutex<Active>,
    /// The generation being ingested, at most one.
    sealed: RwLock<Option<Arc<Generation>>>,
    /// Held through an ingestion, through `clear` and through a recovery:
    /// one at a time.
    ingesting: Mutex<()>,
    /// Whether the store takes writes.
    health: Health,
    /// An fjall write failed since fjall was opened: it may be poisoned,
    /// or hold files of a failed ingestion, and a recovery reopens it.
    engine_failed: AtomicBool,
}

struct Active {
    generation: Generation,
    /// Batches applied since the store opened (the idle ingester's
    /// test).
    batches: u64,
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore").finish_non_exhaustive()
    }
}

/// fjall's error, by the I/O error under it when there is one (fjall
/// shows its errors in their debug form).
fn engine(error: fjall::Error) -> StoreError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return StoreError::Engine(format!("fjall: {io}"));
        }
        cause = current.source();
    }
    StoreError::Engine(error.to_string())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FjallStore {
    /// Opens or creates the store in `dir`, ingesting what the log holds,
    /// and starts its ingest thread.
    ///
    /// # Errors
    /// [`StoreError::Engine`] when fjall cannot open the directory (held by
    /// another process, unreadable, corrupt); [`StoreError::Corrupt`] for
    /// a log entry that does not decode; [`StoreError::StageLog`] when the
    /// log's files cannot be read or written.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let engine = Engine::open(dir)?;
        // A directory of a format this build does not read is refused
        // before its log (if it has one here) is touched.
        if let Some(format) = engine.meta.get("format").map_err(self::engine)? {
            super::readable_format(&format)?;
        }
        let stage_dir = dir.join("stage");
        let recovered = StageLog::recover(&stage_dir)?;
        let number = recovered.last_generation.map_or(0, |last| last + 1);
        let mut generation = Generation::new(number);
        for entry in &recovered.entries {
            replay_entry(entry, &mut generation)?;
        }
        // What the log held is in the keyspaces, synced, before its files
        // go.
        ingest_into(&engine, &generation)?;
        engine
            .db
            .persist(PersistMode::SyncAll)
            .map_err(self::engine)?;
        let shared = Shared {
            dir: dir.to_path_buf(),
            active: Mutex::new(Active {
                generation: Generation::new(number + 1),
                batches: 0,
            }),
            log: StageLog::create(&stage_dir, number + 1)?,
            engine: RwLock::new(Some(engine)),
            sealed: RwLock::new(None),
            ingesting: Mutex::new(()),
            health: Health::default(),
            engine_failed: AtomicBool::new(false),
        };
        let (to_ingest, sealed) = mpsc::sync_channel(INGEST_QUEUE);
        let (stop_idle, stopped) = mpsc::sync_channel(0);
        let store = Self {
            shared: Arc::new(shared),
            to_ingest,
            stop_idle,
            threads: Mutex::new(Vec::new()),
            ingester: Arc::new(WorkerStatus::new("ingest")),
            idle_ingester: Arc::new(WorkerStatus::new("idle-ingest")),
        };
        // Dropping `store` on an error below ends the threads started.
        let (ingesting, status) = (Arc::clone(&store.shared), Arc::clone(&store.ingester));
        store.spawn("dynokv-ingest", move || {
            ingesting.run_ingester(&sealed, &status);
            status.ended();
        })?;
        let (ingesting, status) = (Arc::clone(&store.shared), Arc::clone(&store.idle_ingester));
        store.spawn("dynokv-idle", move || {
            ingesting.run_idle_ingester(&stopped, &status);
            status.ended();
        })?;
        Ok(store)
    }

    fn spawn(&self, name: &str, run: impl FnOnce() + Send + 'static) -> Result<(), StoreError> {
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(run)
            .map_err(|error| StoreError::Engine(format!("cannot start {name}: {error}")))?;
        lock(&self.threads).push(thread);
        Ok(())
    }

    /// Stops the ingest threads and joins them (once; later calls find
    /// none). A write after this ingests what it seals itself.
    fn stop_workers(&self) {
        let threads = std::mem::take(&mut *lock(&self.threads));
        if threads.is_empty() {
            return;
        }
        // Either fails only if its thread already ended (it panicked).
        let _ = self.to_ingest.send(None);
        let _ = self.stop_idle.send(());
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("an ingest thread panicked");
            }
        }
    }
}

impl Shared {
    /// fjall, held open until the result is dropped.
    fn engine(&self) -> Result<EngineRef<'_>, StoreError> {
        let engine = self.engine.read().unwrap_or_else(PoisonError::into_inner);
        if engine.is_none() {
            return Err(StoreError::Engine(
                "fjall is closed: reopening it after a failed write failed; retried with \
                 every probe"
                    .into(),
            ));
        }
        Ok(EngineRef(engine))
    }

    /// Records a failed write: the store refuses writes until a recovery.
    /// Returns the error its caller reports.
    fn write_failed(&self, error: StoreError) -> StoreError {
        if matches!(error, StoreError::Engine(_)) {
            self.engine_failed.store(true, Ordering::Release);
        }
        let reason = match error {
            StoreError::Unwritable { reason } => reason,
            other => other.to_string(),
        };
        self.health.fail(&reason, SystemClock.now_ms());
        StoreError::Unwritable { reason }
    }

    fn sealed(&self) -> RwLockReadGuard<'_, Option<Arc<Generation>>> {
        self.sealed.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn sealed_mut(&self) -> RwLockWriteGuard<'_, Option<Arc<Generation>>> {
        self.sealed.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// What a staged generation holds for `key` in `space`: `None` if
    /// nothing, `Some(None)` if a delete.
    fn staged(&self, space: Space, key: &[u8]) -> Option<Option<Bytes>> {
        // The active generation first: a seal meanwhile moves it to
        // `sealed`, looked at next, and an ingestion finishing meanwhile
        // has put it in the keyspace, looked at last.
        if let Some(held) = lock(&self.active).generation.get(space, key) {
            return Some(held.cloned());
        }
        let sealed = self.sealed();
        sealed.as_ref()?.get(space, key).map(|held| held.cloned())
    }

    /// Seals the active generation unless it is empty or another is
    /// still being ingested; the next one logs into a file of its own.
    fn seal(&self, active: &mut Active) -> Result<Option<Arc<Generation>>, StoreError> {
        let mut sealed = self.sealed_mut();
        if sealed.is_some() || active.generation.is_empty() {
            return Ok(None);
        }
        let next = active.generation.successor();
        self.log.start(next.number)?;
        let generation = Arc::new(std::mem::replace(&mut active.generation, next));
        *sealed = Some(Arc::clone(&generation));
        Ok(Some(generation))
    }

    /// The ingest thread: ingests what writers seal, until it is told to
    /// stop (or the store is gone).
    fn run_ingester(
        &self,
        sealed: &mpsc::Receiver<Option<Arc<Generation>>>,
        status: &WorkerStatus,
    ) {
        while let Ok(Some(generation)) = sealed.recv() {
            match self.ingest(&generation) {
                Ok(()) => status.stepped(),
                Err(error) => status.failed_logged(self.write_failed(error)),
            }
        }
    }

    /// Tables in the data keyspace (0 while fjall is closed).
    fn table_count(&self) -> usize {
        self.engine().map_or(0, |engine| engine.data.table_count())
    }

    /// The idle ingester, at nice [`IDLE_INGEST_NICE`]: once no batch came
    /// for a whole [`STAGE_IDLE`], it seals and ingests the active
    /// generation if it holds [`STAGE_IDLE_INGEST_BYTES_MIN`], and has the
    /// files of compacted tables deleted; it ends when the store drops its
    /// sender. An idle node then holds little in memory and in
    /// its log, and a burst of writes after a pause does not pay for its
    /// predecessor's ingestion. It writes nothing while the store fails.
    /// Its steps are the idle ticks that ingested or collected.
    fn run_idle_ingester(&self, stop: &mpsc::Receiver<()>, status: &WorkerStatus) {
        lower_priority(IDLE_INGEST_NICE);
        let mut batches_seen = None;
        let mut tables_collected = self.table_count();
        while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(STAGE_IDLE) {
            // Idle: no batch since the last tick.
            let batches = lock(&self.active).batches;
            if batches_seen.replace(batches) != Some(batches) || self.health.is_failing() {
                continue;
            }
            let ingested = self.seal_idle().map(|generation| self.ingest(&generation));
            let tables = self.table_count();
            let collected = (tables != tables_collected).then(|| {
                tables_collected = tables;
                self.collect_tables()
            });
            match ingested
                .into_iter()
                .chain(collected)
                .collect::<Result<Vec<()>, _>>()
            {
                Ok(done) if done.is_empty() => {}
                Ok(_) => status.stepped(),
                Err(error) => status.failed_logged(self.write_failed(error)),
            }
        }
    }

    /// Deletes the files of tables a compaction replaced. fjall keeps them
    /// until its garbage watermark passes the compaction; ingestions move
    /// it, and so does a memtable rotation, but nothing else the store
    /// does, so without this a node that went idle after a burst kept its
    /// last compactions' inputs: twice the data on disk after 100,000
    /// SETs of 4000 bytes. A rotation of `meta` with one small write in
    /// it moves the watermark and drops the files.
    fn collect_tables(&self) -> Result<(), StoreError> {
        let engine = self.engine()?;
        engine.meta.insert(COLLECT_KEY, []).map_err(self::engine)?;
        engine.meta.rotate_memtable_and_wait().map_err(self::engine)
    }

    /// Ingests `generation`; a failed one stays sealed and writers retry
    /// it, and the store refuses writes until a recovery.
    fn ingest_logged(&self, generation: &Arc<Generation>) {
        if let Err(error) = self.ingest(generation) {
            self.write_failed(error);
        }
    }

    /// Seals the active generation of an idle store if it holds enough to
    /// be worth a table.
    fn seal_idle(&self) -> Option<Arc<Generation>> {
        let mut active = lock(&self.active);
        if active.generation.bytes() < STAGE_IDLE_INGEST_BYTES_MIN {
            return None;
        }
        self.seal(&mut active).unwrap_or_else(|error| {
            self.write_failed(error);
            None
        })
    }

    /// Ingests the sealed `generation` and deletes its log file, unless
    /// `clear` dropped it meanwhile. On failure it stays sealed (readable,
    /// its log kept) and the next ingestion takes it again.
    fn ingest(&self, generation: &Arc<Generation>) -> Result<(), StoreError> {
        let _turn = lock(&self.ingesting);
        let current = self.sealed().clone();
        if !current.is_some_and(|sealed| Arc::ptr_eq(&sealed, generation)) {
            return Ok(());
        }
        {
            let engine = self.engine()?;
            ingest_into(&engine, generation)?;
            // Synced before the log file that holds the same writes goes.
            engine
                .db
                .persist(PersistMode::SyncAll)
                .map_err(self::engine)?;
        }
        self.log.remove(generation.number)?;
        *self.sealed_mut() = None;
        Ok(())
    }

    /// Bytes the active generation holds.
    #[cfg(test)]
    fn active_bytes(&self) -> usize {
        lock(&self.active).generation.bytes()
    }

    /// What is staged for keys of `space` in `[from, until)`, each key's
    /// newest write, in key order (see [`staged_range`] for `limit`).
    fn staged_range(
        &self,
        space: Space,
        from: &[u8],
        until: Option<&[u8]>,
        limit: usize,
    ) -> Vec<(Vec<u8>, Option<Bytes>)> {
        let active = lock(&self.active);
        let sealed = self.sealed();
        let generations: Vec<&Generation> = std::iter::once(&active.generation)
            .chain(sealed.as_deref())
            .collect();
        staged_range(&generations, space, from, until, limit)
    }

    /// Up to `limit` entries of what `space` itself holds in `range`.
    fn scan_stored(
        &self,
        space: Space,
        range: KeyRange<'_>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let engine = self.engine()?;
        engine
            .space(space)
            .range::<&[u8], _>(range)
            .take(limit)
            .map(|guard| {
                let (k, v) = guard.into_inner().map_err(self::engine)?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// Ingests everything staged before the call (a checkpoint).
    fn ingest_staged(&self) -> Result<(), StoreError> {
        // At most: the generation being ingested, the active one, and one
        // sealed by a writer between the two; writes after the call began
        // need not be seen.
        for _ in 0..3 {
            let generation = {
                let mut active = lock(&self.active);
                let sealed = self.sealed().clone();
                match sealed {
                    Some(generation) => generation,
                    None => match self.seal(&mut active)? {
                        Some(generation) => generation,
                        None => return Ok(()),
                    },
                }
            };
            self.ingest(&generation)?;
        }
        Ok(())
    }

    /// While the store fails: a probe, then what the failure left to
    /// repair (see the module's header); the store takes writes again
    /// once it succeeds.
    fn recover(&self) -> Result<(), StoreError> {
        if !self.health.is_failing() {
            return Ok(());
        }
        // A failed probe is the failure going on: the reason stays the
        // write's that started it.
        if let Err(source) = probe(&self.dir.join("stage").join(PROBE_FILE), STORE_PROBE_BYTES) {
            tracing::debug!(error = %source, "the data directory still cannot take writes");
            return self.health.check();
        }
        match self.repair() {
            Ok(()) => {
                self.health.recovered(SystemClock.now_ms());
                Ok(())
            }
            Err(error) => Err(self.write_failed(error)),
        }
    }

    fn repair(&self) -> Result<(), StoreError> {
        {
            // No ingestion, and no write that got past the health check
            // before the failure, while fjall and the log are repaired.
            let _turn = lock(&self.ingesting);
            let _active = lock(&self.active);
            if self.engine_failed.load(Ordering::Acquire) || self.engine_poisoned()? {
                self.reopen_engine()?;
            }
            self.log.repair()?;
        }
        self.ingest_staged()
    }

    /// Whether fjall refuses writes for good (a persist answers
    /// `Poisoned` without writing anything then), or is closed.
    fn engine_poisoned(&self) -> Result<bool, StoreError> {
        let Ok(engine) = self.engine() else {
            return Ok(true);
        };
        match engine.db.persist(PersistMode::SyncAll) {
            Ok(()) => Ok(false),
            Err(fjall::Error::Poisoned) => Ok(true),
            Err(error) => Err(self::engine(error)),
        }
    }

    /// Closes fjall and opens it again: fjall recovers its journal as at
    /// a restart and deletes what failed writes left. The staged
    /// generations and the log are not touched: fjall held nothing of
    /// theirs. The caller keeps writes and ingestions out.
    fn reopen_engine(&self) -> Result<(), StoreError> {
        let mut slot = self.engine.write().unwrap_or_else(PoisonError::into_inner);
        let began = Instant::now();
        // fjall writes out what it still can, stops its workers and lets
        // go of the directory's lock.
        drop(slot.take());
        *slot = Some(Engine::open(&self.dir)?);
        self.engine_failed.store(false, Ordering::Release);
        tracing::info!(
            took_ms = began.elapsed().as_millis() as u64,
            "fjall reopened after a failed write"
        );
        Ok(())
    }

    /// The store's writes, minus what is checked before them: every
    /// error marks the store failing.
    fn apply_checked(
        &self,
        ops: &[BatchOp],
        to_ingest: &mpsc::SyncSender<Option<Arc<Generation>>>,
    ) -> Result<(), StoreError> {
        let mut active = lock(&self.active);
        // The batch's one write: a failed one is cut off the log, and
        // nothing else of the batch was done.
        let appended =
            self.log
                .append(|out| encode_log(ops, out))
                .map_err(|error| match error {
                    too_large @ StoreError::BatchTooLarge { .. } => too_large,
                    error => self.write_failed(error),
                })?;
        active.batches += 1;
        ops.iter().for_each(|op| active.generation.apply(op));
        // The batch is applied and logged: what fails from here on fails
        // the store, not the batch.
        let full = active.generation.bytes() >= STAGE_GENERATION_BYTES
            || appended.end >= STAGE_LOG_BYTES_MAX;
        let sealed = if full {
            self.seal(&mut active).unwrap_or_else(|error| {
                self.write_failed(error);
                None
            })
        } else {
            None
        };
        let overfull = active.generation.bytes() >= 2 * STAGE_GENERATION_BYTES;
        drop(active);
        // The ingest thread takes a sealed generation. Once a second one
        // is full, writers wait for that ingestion (so that memory stays
        // bounded), or retry it if it failed.
        let pending = match sealed {
            Some(generation) => to_ingest
                .send(Some(generation))
                .err()
                .and_then(|unsent| unsent.0),
            None if overfull => self.sealed().clone(),
            None => None,
        };
        if let Some(generation) = pending {
            self.ingest_logged(&generation);
        }
        Ok(())
    }

    fn checkpoint_checked(&self) -> Result<(), StoreError> {
        // Write the staged generations out as tables, so reopening has no
        // log to replay, and the memtables (only `meta`'s takes writes
        // now, but a directory written by an earlier build may have
        // replayed expiry entries into `expiry`'s), so that it has no
        // journal to replay either.
        self.ingest_staged()?;
        {
            let engine = self.engine()?;
            for keyspace in [&engine.data, &engine.expiry, &engine.hints, &engine.meta] {
                keyspace.rotate_memtable_and_wait().map_err(self::engine)?;
            }
        }
        self.log.sync()
    }

    /// See [`Store::clear`].
    fn clear_checked(&self, doomed: &Doomed<'_>) -> Result<(), StoreError> {
        self.ingest_staged()?;
        let _turn = lock(&self.ingesting);
        let active = lock(&self.active);
        if !active.generation.is_empty() || self.sealed().is_some() {
            return Err(StoreError::Engine(
                "FLUSHALL raced a write: staged writes remain".into(),
            ));
        }
        let engine = self.engine()?;
        for space in Space::ALL {
            let keyspace = engine.space(space);
            // The iterator reads a snapshot: the tombstones are streamed
            // into the ingestion, never held as a list of every key.
            let mut keys = keyspace
                .iter()
                .map(|guard| guard.key().map_err(self::engine))
                .filter(|key| key.as_ref().map_or(true, |k| doomed(space, k)))
                .peekable();
            if keys.peek().is_none() {
                continue;
            }
            let mut ingestion = keyspace.start_ingestion().map_err(self::engine)?;
            for key in keys {
                ingestion.write_tombstone(key?).map_err(self::engine)?;
            }
            ingestion.finish().map_err(self::engine)?;
        }
        Ok(())
    }
}

/// Writes `bytes` zeros to a new file at `path`, syncs it and deletes it:
/// whether the disk takes writes. The file is deleted on failure too.
fn probe(path: &Path, bytes: usize) -> std::io::Result<()> {
    let written = std::fs::File::create(path).and_then(|mut file| {
        static CHUNK: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(CHUNK.len());
            file.write_all(&CHUNK[..n])?;
            left -= n;
        }
        file.sync_all()
    });
    let removed = std::fs::remove_file(path);
    written?;
    removed
}

/// Applies the ops of one log entry to `generation`.
fn replay_entry(entry: &[u8], generation: &mut Generation) -> Result<(), StoreError> {
    let ops = decode_log(entry).map_err(|source| StoreError::Corrupt {
        key: b"stage log entry".to_vec(),
        source,
    })?;
    ops.iter().for_each(|op| generation.apply(op));
    Ok(())
}

/// Sets the calling thread's nice value (Linux keeps one per thread).
#[expect(unsafe_code, reason = "setpriority has no wrapper in std")]
fn lower_priority(nice: i32) {
    // SAFETY: setpriority reads its three integer arguments only; `who` 0
    // is the calling thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot lower the idle ingester's priority"
        );
    }
}

/// Writes `generation` into the data and expiry keyspaces as new tables.
/// The two ingestions are not one atomic change, nor need to be: the
/// generation's log file, which holds both, is deleted only after both,
/// and replaying it again writes the same values.
fn ingest_into(engine: &Engine, generation: &Generation) -> Result<(), StoreError> {
    if generation.is_empty() {
        return Ok(());
    }
    wait_for_compaction(&engine.data);
    for space in Space::ALL {
        let entries = generation.sorted(space);
        if entries.is_empty() {
            continue;
        }
        let mut ingestion = engine
            .space(space)
            .start_ingestion()
            .map_err(self::engine)?;
        for (key, value) in entries {
            match value {
                Some(value) => ingestion.write(key, &value[..]),
                None => ingestion.write_tombstone(key),
            }
            .map_err(self::engine)?;
        }
        ingestion.finish().map_err(self::engine)?;
    }
    Ok(())
}

/// Waits while `data`'s level 0 holds [`DATA_L0_TABLES_STALL`] tables, up
/// to [`INGEST_STALL_WAIT_MS`]. Writers wait behind the ingestion once the
/// next generation is full too.
fn wait_for_compaction(data: &Keyspace) {
    let deadline = Instant::now() + Duration::from_millis(INGEST_STALL_WAIT_MS);
    while data.l0_table_count() >= DATA_L0_TABLES_STALL {
        if Instant::now() >= deadline {
            tracing::warn!(
                tables = data.l0_table_count(),
                "ingesting with level 0 still full after {INGEST_STALL_WAIT_MS} ms"
            );
            return;
        }
        std::thread::sleep(INGEST_STALL_POLL);
    }
}

/// The data keyspace's options: its tables come from ingestions of
/// staged generations (see [`DATA_L0_TABLES_COMPACTED`]).
fn data_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default().compaction_strategy(Arc::new(
        Leveled::default().with_l0_threshold(DATA_L0_TABLES_COMPACTED),
    ))
}

impl Store for FjallStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(held) = self.staged(space, key) {
            return Ok(held.map(|value| value.to_vec()));
        }
        let engine = self.engine()?;
        Ok(engine
            .space(space)
            .get(key)
            .map_err(self::engine)?
            .map(|v| v.to_vec()))
    }

    fn apply(&self, ops: &[BatchOp]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.health.check()?;
        self.apply_checked(ops, &self.to_ingest)
    }

    /// While the store fails, a checkpoint tries a recovery first; if that
    /// fails too, it syncs the log if it can (every write acknowledged is
    /// in it, and the next open replays it) and reports the failure.
    fn checkpoint(&self) -> Result<(), StoreError> {
        if self.health.is_failing() && self.recover().is_err() {
            if let Err(error) = self.log.sync() {
                tracing::warn!(%error, "cannot sync the stage log");
            }
            return self.health.check();
        }
        self.checkpoint_checked()
            .map_err(|error| self.write_failed(error))
    }

    /// Ingests what is staged, so that no log file holds a write from
    /// before the flush, then writes one table of tombstones per keyspace
    /// covering every doomed key it holds (the caller keeps writes out
    /// meanwhile). See the module doc for why not fjall's `clear`.
    fn clear(&self, doomed: &Doomed<'_>) -> Result<(), StoreError> {
        self.health.check()?;
        self.clear_checked(doomed)
            .map_err(|error| self.write_failed(error))
    }

    /// Syncs the log (every batch is there, and nothing of a batch in
    /// fjall's journal), even while the store fails: what the log holds
    /// was acknowledged, and the disk may take a sync still.
    fn sync(&self) -> Result<(), StoreError> {
        self.log.sync().map_err(|error| self.write_failed(error))
    }

    fn scan(
        &self,
        space: Space,
        from: &[u8],
        until: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let range = (
            Bound::Included(from),
            until.map_or(Bound::Unbounded, Bound::Excluded),
        );
        let staged = self.staged_range(space, from, until, limit);
        if staged.is_empty() {
            return self.scan_stored(space, range, limit);
        }
        let stored = self.scan_stored(space, range, limit.saturating_add(staged.len()))?;
        Ok(merge_scan(staged, stored, limit))
    }

    fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let engine = self.engine()?;
        Ok(engine
            .meta
            .get(name)
            .map_err(self::engine)?
            .map(|v| v.to_vec()))
    }

    fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.health.check()?;
        let written = self.engine().and_then(|engine| {
            engine.meta.insert(name, value).map_err(self::engine)?;
            engine
                .db
                .persist(PersistMode::SyncAll)
                .map_err(self::engine)
        });
        written.map_err(|error| self.write_failed(error))
    }

    fn close(&self) -> Result<(), StoreError> {
        self.stop_workers();
        self.checkpoint()
    }

    fn workers(&self) -> Vec<Arc<WorkerStatus>> {
        vec![Arc::clone(&self.ingester), Arc::clone(&self.idle_ingester)]
    }

    fn disk_bytes(&self) -> u64 {
        let fjall = self
            .engine()
            .map_or(0, |engine| engine.db.disk_space().unwrap_or(0));
        fjall + self.log.disk_bytes()
    }

    fn health(&self) -> HealthReport {
        self.health.report()
    }

    fn recover(&self) -> Result<(), StoreError> {
        self.shared.recover()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = FjallStore::open(dir.path()).expect("open");
            store
                .apply(&[BatchOp::put(Space::Data, b"\0\0k".to_vec(), b"v".to_vec())])
                .expect("apply");
            store.sync().expect("sync");
            store.meta_put("node_id", b"12345678").expect("meta");
        }
        let store = FjallStore::open(dir.path()).expect("reopen");
        assert_eq!(
            store.get(Space::Data, b"\0\0k").expect("get"),
            Some(b"v".to_vec())
        );
        assert_eq!(
            store.meta_get("node_id").expect("meta"),
            Some(b"12345678".to_vec())
        );
        let all = store.scan(Space::Data, b"", None, 10).expect("scan");
        assert_eq!(all, vec![(b"\0\0k".to_vec(), b"v".to_vec())]);
        assert_eq!(
            store
                .scan(Space::Data, b"", Some(b"\0\0k"), 10)
                .expect("scan"),
            vec![]
        );
    }

    /// fjall, open.
    fn fjall(store: &FjallStore) -> EngineRef<'_> {
        store.engine().expect("fjall is open")
    }

    fn put(key: &[u8], value: &[u8]) -> BatchOp {
        BatchOp::put(Space::Data, key.to_vec(), value.to_vec())
    }

    fn expiry(key: &[u8]) -> BatchOp {
        BatchOp::put(Space::Expiry, key.to_vec(), Vec::new())
    }

    /// Entries in the log files of the store in `dir`.
    fn log_entries(dir: &Path) -> usize {
        let recovered = StageLog::recover(&dir.join("stage")).expect("read the log");
        recovered.entries.len()
    }

    fn refused(result: Result<(), StoreError>) -> String {
        match result {
            Err(StoreError::Unwritable { reason }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    // Proves a write whose log entry fails part way (a full disk, injected)
    // fails, turns the store to failing so that later writes are refused
    // untouched, leaves reads working, and comes back neither after a
    // recovery nor after a crash; a recovery lets writes in again.
    #[test]
    fn a_failed_log_write_refuses_writes_until_a_recovery_and_is_never_replayed() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = FjallStore::open(dir.path()).expect("open");
            store.apply(&[put(b"acked", b"1")]).expect("apply");
            store.log.fail_next_write(5);
            let reason = refused(store.apply(&[put(b"failed", b"2"), expiry(b"failed")]));
            assert!(reason.contains("stage log"), "{reason}");
            let health = store.health();
            assert_eq!(health.failing.map(|f| f.reason), Some(reason));
            assert_eq!(health.failures, 1);
            refused(store.apply(&[put(b"refused", b"3")]));
            refused(store.meta_put("members", b"m"));
            assert_eq!(log_entries(dir.path()), 1, "only the acknowledged write");
            assert_eq!(
                store.get(Space::Data, b"acked").expect("reads go on"),
                Some(b"1".to_vec())
            );
            assert_eq!(store.get(Space::Data, b"failed").expect("get"), None);
            assert_eq!(store.get(Space::Expiry, b"failed").expect("get"), None);
            store.recover().expect("the disk takes writes");
            assert_eq!(store.health().failing, None);
            assert_eq!(
                log_entries(dir.path()),
                0,
                "a recovery ingests what is staged"
            );
            store.apply(&[put(b"after", b"4")]).expect("writes resume");
            // Dropped without a checkpoint: a crash.
        }
        let store = FjallStore::open(dir.path()).expect("reopen");
        let all = store.scan(Space::Data, b"", None, 10).expect("scan");
        assert_eq!(
            all,
            vec![
                (b"acked".to_vec(), b"1".to_vec()),
                (b"after".to_vec(), b"4".to_vec())
            ]
        );
        assert_eq!(store.health(), HealthReport::default());
        assert_eq!(
            store.scan(Space::Expiry, b"", None, 10).expect("scan"),
            vec![]
        );
    }

    // Proves a directory of format 2 (its log in fjall keyspaces) is
    // refused at open with a message naming the format and what to do,
    // and left as it was: its log keyspace and its format unchanged.
    #[test]
    fn a_format_2_directory_is_refused_at_open_and_left_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write_format_2 = || {
            let db = Database::builder(dir.path()).open().expect("fjall");
            let log = db
                .keyspace("log-1", KeyspaceCreateOptions::default)
                .expect("log-1");
            let key = [3u64.to_be_bytes(), 0u64.to_be_bytes()].concat();
            log.insert(key, [1, 1, b'a', 1, 1, b'1']).expect("insert");
            let meta = db
                .keyspace("meta", KeyspaceCreateOptions::default)
                .expect("meta");
            meta.insert("format", 2u32.to_be_bytes()).expect("insert");
            db.persist(PersistMode::SyncAll).expect("persist");
        };
        write_format_2();
        match FjallStore::open(dir.path()) {
            Err(StoreError::Incompatible(message)) => {
                assert!(message.contains("data format 2,"), "{message}");
                assert!(message.contains("move the directory away"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(!dir.path().join("stage").exists(), "no log started");
        let db = Database::builder(dir.path()).open().expect("fjall");
        assert!(db.keyspace_exists("log-1"));
        let meta = db
            .keyspace("meta", KeyspaceCreateOptions::default)
            .expect("meta");
        assert_eq!(
            meta.get("format").expect("get").as_deref(),
            Some(&2u32.to_be_bytes()[..])
        );
    }

    /// Two batches, each a record and its expiry-index entry, logged and
    /// synced by a store dropped without a checkpoint (a crash); returns
    /// the log file that holds them.
    fn two_batches_logged(dir: &Path) -> PathBuf {
        let store = FjallStore::open(dir).expect("open");
        for key in [&b"k1"[..], b"k2"] {
            store.apply(&[put(key, b"v"), expiry(key)]).expect("apply");
        }
        store.sync().expect("sync");
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("stage"))
            .expect("stage")
            .map(|entry| entry.expect("entry").path())
            .collect();
        files.sort();
        files.pop().expect("the active log file")
    }

    // Proves replay takes whole log entries only, and a batch's record
    // and expiry-index entry (one entry) come back or vanish together:
    // the log as written replays both batches; a torn tail (the file cut
    // in the last entry's header or body) or a flipped byte in the last
    // entry replays the first batch alone, with its expiry entry.
    #[test]
    fn replay_takes_whole_entries_and_a_batch_s_data_and_expiry_together() {
        let keys = |store: &FjallStore, space| -> Vec<Vec<u8>> {
            let rows = store.scan(space, b"", None, 10).expect("scan");
            rows.into_iter().map(|(k, _)| k).collect()
        };
        type Damage = fn(&mut Vec<u8>);
        let cases: [(&str, Damage, &[&[u8]]); 5] = [
            ("intact", |_| {}, &[b"k1", b"k2"]),
            (
                "cut by one byte",
                |log| log.truncate(log.len() - 1),
                &[b"k1"],
            ),
            (
                "cut in the header",
                |log| log.truncate(log.len() - 15),
                &[b"k1"],
            ),
            (
                "flipped in the body",
                |log| *log.last_mut().expect("byte") ^= 0x40,
                &[b"k1"],
            ),
            (
                "flipped in the checksum",
                |log| {
                    let at = log.len() - 16;
                    log[at] ^= 1;
                },
                &[b"k1"],
            ),
        ];
        for (damage, apply_damage, expected) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = two_batches_logged(dir.path());
            let mut bytes = std::fs::read(&log).expect("read the log");
            apply_damage(&mut bytes);
            std::fs::write(&log, &bytes).expect("write the log");
            let store = FjallStore::open(dir.path()).expect("reopen");
            assert_eq!(keys(&store, Space::Data), expected, "{damage}: data");
            assert_eq!(keys(&store, Space::Expiry), expected, "{damage}: expiry");
        }
    }

    // Proves expiry-index entries are staged like records: readable and
    // scanned before any fjall write (fjall's journal and memtable hold
    // none), ingested as a table by a checkpoint, and replayed from the
    // log after a crash.
    #[test]
    fn expiry_entries_are_staged_logged_and_ingested() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = FjallStore::open(dir.path()).expect("open");
            store
                .apply(&[put(b"a", b"1"), expiry(b"a"), expiry(b"b")])
                .expect("apply");
            assert_eq!(fjall(&store).expiry.get(b"a").expect("get"), None);
            assert_eq!(
                store.get(Space::Expiry, b"a").expect("get"),
                Some(Vec::new())
            );
            store.checkpoint().expect("checkpoint");
            assert_eq!(log_entries(dir.path()), 0);
            assert_eq!(fjall(&store).expiry.table_count(), 1);
            // Staged over the ingested: a delete hides, a put adds.
            store
                .apply(&[BatchOp::delete(Space::Expiry, b"a".to_vec()), expiry(b"c")])
                .expect("apply");
            let scanned = store.scan(Space::Expiry, b"", None, 10).expect("scan");
            assert_eq!(
                scanned,
                vec![(b"b".to_vec(), vec![]), (b"c".to_vec(), vec![])]
            );
            assert_eq!(
                store.scan(Space::Expiry, b"", None, 1).expect("scan"),
                vec![(b"b".to_vec(), vec![])]
            );
            store.sync().expect("sync");
            // Dropped without a checkpoint: a crash.
        }
        let store = FjallStore::open(dir.path()).expect("reopen");
        let scanned = store.scan(Space::Expiry, b"", None, 10).expect("scan");
        assert_eq!(
            scanned,
            vec![(b"b".to_vec(), vec![]), (b"c".to_vec(), vec![])]
        );
    }

    // Proves a checkpoint of a failing store (a shutdown) tries a
    // recovery first, and reports the failure if that fails too.
    #[test]
    fn a_checkpoint_of_a_failing_store_recovers_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FjallStore::open(dir.path()).expect("open");
        store.log.fail_next_write(0);
        refused(store.apply(&[put(b"k", b"v")]));
        store
            .checkpoint()
            .expect("the disk takes writes: recovered");
        assert_eq!(store.health().failing, None);
        assert_eq!(store.health().failures, 1);
    }

    #[test]
    fn a_full_generation_is_ingested_as_a_table_and_its_log_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FjallStore::open(dir.path()).expect("open");
        let value = vec![7u8; 2048];
        let mut written = 0usize;
        while store.sealed().is_none() && fjall(&store).data.table_count() == 0 {
            assert!(
                written * value.len() <= STAGE_GENERATION_BYTES,
                "no seal at the limit"
            );
            store
                .apply(&[put(&(written as u32).to_be_bytes(), &value)])
                .expect("apply");
            written += 1;
        }
        assert!(written > 1000);
        // Sealed at the limit, counting each entry's key and overhead.
        assert!(
            written * (value.len() + 128) >= STAGE_GENERATION_BYTES,
            "sealed early"
        );
        // The ingest thread writes the table and clears the log.
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.sealed().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(fjall(&store).data.table_count(), 1);
        assert_eq!(
            log_entries(dir.path()),
            0,
            "the ingested generation's log is deleted"
        );
        store
            .apply(&[put(b"after", b"v")])
            .expect("apply after the seal");
        assert_eq!(fjall(&store).data.table_count(), 1);
        // Only the write after the seal is still logged and staged.
        assert_eq!(log_entries(dir.path()), 1);
        assert_eq!(fjall(&store).data.get(b"after").expect("get"), None);
        assert_eq!(
            store.get(Space::Data, b"after").expect("get"),
            Some(b"v".to_vec())
        );
        assert_eq!(
            fjall(&store)
                .data
                .get(0u32.to_be_bytes())
                .expect("get")
                .as_deref(),
            Some(&value[..])
        );
    }

    #[test]
    fn staged_writes_are_read_scanned_and_replayed_after_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = FjallStore::open(dir.path()).expect("open");
            store
                .apply(&[put(b"a", b"1"), put(b"b", b"1")])
                .expect("apply");
            store.checkpoint().expect("checkpoint");
            assert_eq!(log_entries(dir.path()), 0, "a checkpoint ingests all");
            store
                .apply(&[put(b"a", b"2"), BatchOp::delete(Space::Data, b"b".to_vec())])
                .expect("apply");
            store.apply(&[put(b"c", b"3")]).expect("apply");
            // Staged over the ingested values: reads see the staged ones.
            assert_eq!(
                store.get(Space::Data, b"a").expect("get"),
                Some(b"2".to_vec())
            );
            assert_eq!(store.get(Space::Data, b"b").expect("get"), None);
            assert_eq!(
                fjall(&store).data.get(b"b").expect("get").as_deref(),
                Some(&b"1"[..])
            );
            store.sync().expect("sync");
            // Dropped without a checkpoint: the log holds the last writes.
        }
        let store = FjallStore::open(dir.path()).expect("reopen");
        assert_eq!(log_entries(dir.path()), 0, "opening ingests the log");
        let all = store.scan(Space::Data, b"", None, 10).expect("scan");
        assert_eq!(
            all,
            vec![
                (b"a".to_vec(), b"2".to_vec()),
                (b"c".to_vec(), b"3".to_vec())
            ]
        );
    }

    #[test]
    fn a_scan_sees_staged_writes_and_clear_drops_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FjallStore::open(dir.path()).expect("open");
        store.apply(&[put(b"x", b"1")]).expect("apply");
        let all = store.scan(Space::Data, b"", None, 10).expect("scan");
        assert_eq!(all, vec![(b"x".to_vec(), b"1".to_vec())]);
        store.apply(&[put(b"y", b"1")]).expect("apply");
        store.clear(&|_, _| true).expect("clear");
        assert_eq!(store.get(Space::Data, b"y").expect("get"), None);
        assert_eq!(
            store.scan(Space::Data, b"", None, 10).expect("scan"),
            vec![]
        );
        drop(store);
        let store = FjallStore::open(dir.path()).expect("reopen");
        assert_eq!(store.get(Space::Data, b"y").expect("get"), None);
    }

    // Proves a clear removes only the doomed entries, staged or stored,
    // of each keyspace, and the rest survive a restart (FLUSHDB).
    #[test]
    fn a_clear_removes_only_doomed_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let expiry = |key: &[u8]| BatchOp::put(Space::Expiry, key.to_vec(), b"t".to_vec());
        let store = FjallStore::open(dir.path()).expect("open");
        store
            .apply(&[
                put(b"a1", b"1"),
                put(b"b1", b"1"),
                expiry(b"a1"),
                expiry(b"b1"),
            ])
            .expect("apply");
        store.checkpoint().expect("checkpoint");
        store
            .apply(&[put(b"a2", b"2"), put(b"b2", b"2")])
            .expect("apply");
        store.clear(&|_, key| key.starts_with(b"a")).expect("clear");
        let keys = |store: &FjallStore, space| -> Vec<Vec<u8>> {
            let rows = store.scan(space, b"", None, 10).expect("scan");
            rows.into_iter().map(|(k, _)| k).collect()
        };
        assert_eq!(keys(&store, Space::Data), [b"b1", b"b2"]);
        assert_eq!(keys(&store, Space::Expiry), [b"b1"]);
        store.checkpoint().expect("checkpoint");
        drop(store);
        let store = FjallStore::open(dir.path()).expect("reopen");
        assert_eq!(keys(&store, Space::Data), [b"b1", b"b2"]);
        assert_eq!(keys(&store, Space::Expiry), [b"b1"]);
    }

    // Proves writes after a FLUSHALL survive a clean restart (a checkpoint
    // ingests them, as SIGTERM does) and a crash (the log replays them),
    // the old data does not come back, and expiry entries behave alike:
    // with fjall's own clear, the replayed clear marker dropped them all.
    #[test]
    fn writes_after_a_clear_survive_a_clean_restart_and_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let expiry = |key: &[u8]| BatchOp::put(Space::Expiry, key.to_vec(), b"t".to_vec());
        let store = FjallStore::open(dir.path()).expect("open");
        store
            .apply(&[put(b"old", b"1"), expiry(b"old")])
            .expect("apply");
        store.checkpoint().expect("checkpoint");
        store.clear(&|_, _| true).expect("clear");
        store
            .apply(&[put(b"new", b"2"), expiry(b"new")])
            .expect("apply");
        store.checkpoint().expect("checkpoint (clean shutdown)");
        drop(store);
        for restart in ["clean", "crash"] {
            let store = FjallStore::open(dir.path()).expect("reopen");
            assert_eq!(
                store.scan(Space::Data, b"", None, 10).expect("scan"),
                vec![(b"new".to_vec(), b"2".to_vec())],
                "after a {restart} restart"
            );
            assert_eq!(
                store.scan(Space::Expiry, b"", None, 10).expect("scan"),
                vec![(b"new".to_vec(), b"t".to_vec())],
                "after a {restart} restart"
            );
            // Staged only (in the log), then dropped without a checkpoint.
            store.apply(&[put(b"new", b"2")]).expect("apply");
            store.sync().expect("sync");
        }
    }

    // Proves a restart replays no flush: after 200 clears the directory
    // holds its three keyspaces and opens with the last writes only.
    #[test]
    fn many_clears_leave_one_epoch_and_nothing_to_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FjallStore::open(dir.path()).expect("open");
        for round in 0..200u32 {
            store
                .apply(&[put(&round.to_be_bytes(), b"v")])
                .expect("apply");
            store.clear(&|_, _| true).expect("clear");
        }
        store.apply(&[put(b"last", b"v")]).expect("apply");
        store.checkpoint().expect("checkpoint");
        drop(store);
        let store = FjallStore::open(dir.path()).expect("reopen");
        let mut names: Vec<String> = fjall(&store)
            .db
            .list_keyspace_names()
            .iter()
            .map(|name| name.to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["data", "expiry", "hints", "meta"]);
        assert_eq!(
            store.scan(Space::Data, b"", None, 10).expect("scan"),
            vec![(b"last".to_vec(), b"v".to_vec())]
        );
    }

    #[test]
    fn level_0_holds_tables_up_to_the_compaction_threshold() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FjallStore::open(dir.path()).expect("open");
        let tables = 6;
        assert!(tables < usize::from(DATA_L0_TABLES_COMPACTED));
        // Each table holds the same two keys, as tables under writes
        // spread over the keys do: none can be moved down without merging.
        for i in 0..tables as u8 {
            let ops = [b"\0\0a", b"\0\0z"].map(|k| BatchOp::put(Space::Data, k.to_vec(), vec![i]));
            store.apply(&ops).expect("apply");
            store.checkpoint().expect("ingest");
        }
        // fjall's default (4) would have merged them by now. (The first
        // table may have moved down to the empty level 1 unmerged.)
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(fjall(&store).data.table_count(), tables);
    }

    #[test]
    fn a_hot_key_generation_is_sealed_by_its_log_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FjallStore::open(dir.path()).expect("open");
        let value = vec![7u8; 64 << 10];
        let writes = STAGE_LOG_BYTES_MAX / value.len() as u64 + 2;
        for _ in 0..writes {
            store.apply(&[put(b"hot", &value)]).expect("apply");
        }
        // One key: the generation holds 64 KiB, far below its limit.
        let deadline = Instant::now() + Duration::from_secs(10);
        while fjall(&store).data.table_count() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            fjall(&store).data.table_count(),
            1,
            "sealed by the log's length"
        );
    }

    /// How long a test waits for the idle ingester: it runs at nice 19,
    /// so other tests keeping both cores busy can hold it off for seconds.
    const IDLE_WAIT: Duration = Duration::from_secs(60);

    /// Nice values of this process's threads named `name`.
    fn nice_of_threads(name: &str) -> Vec<i64> {
        let tasks = std::fs::read_dir("/proc/self/task").expect("tasks");
        tasks
            .filter_map(|task| {
                let path = task.ok()?.path();
                let comm = std::fs::read_to_string(path.join("comm")).ok()?;
                let stat = std::fs::read_to_string(path.join("stat")).ok()?;
                // Fields after the parenthesised name: state is field 3,
                // nice field 19.
                let after_name = stat.rsplit_once(')')?.1;
                let nice = after_name.split_whitespace().nth(16)?.parse().ok()?;
                (comm.trim_end() == name).then_some(nice)
            })
            .collect()
    }

    #[test]
    fn an_idle_generation_is_ingested_at_the_lowest_priority() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FjallStore::open(dir.path()).expect("open");
        let value = vec![7u8; 2048];
        let mut written = 0u32;
        while store.active_bytes() < STAGE_IDLE_INGEST_BYTES_MIN {
            store
                .apply(&[put(&written.to_be_bytes(), &value)])
                .expect("apply");
            written += 1;
        }
        assert_eq!(fjall(&store).data.table_count(), 0);
        let deadline = Instant::now() + IDLE_WAIT;
        while (fjall(&store).data.table_count() == 0 || store.sealed().is_some())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(fjall(&store).data.table_count(), 1, "ingested once idle");
        assert_eq!(log_entries(dir.path()), 0, "its log file deleted");
        assert_eq!(
            store.get(Space::Data, &0u32.to_be_bytes()).expect("get"),
            Some(value)
        );
        let nice = nice_of_threads("dynokv-idle");
        assert!(!nice.is_empty(), "no idle ingester thread");
        assert!(
            nice.iter().all(|&n| n == i64::from(IDLE_INGEST_NICE)),
            "{nice:?}"
        );
        let lines = || store.workers().iter().map(|s| s.line()).collect::<Vec<_>>();
        // The step is counted once the tick's table collection is done too.
        let deadline = Instant::now() + IDLE_WAIT;
        while lines()[1].1.contains("steps=0") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            lines(),
            [
                ("ingest", "running,steps=0,failures=0".to_owned()),
                ("idle-ingest", "running,steps=1,failures=0".to_owned()),
            ]
        );
        // Closing stops and joins both workers; a write after it still
        // lands, and what it seals is ingested by the writer.
        store.close().expect("close");
        assert!(lines().iter().all(|(_, line)| line.starts_with("stopped,")));
        store
            .apply(&[put(b"after", b"close")])
            .expect("apply after close");
        assert_eq!(
            store.get(Space::Data, b"after").expect("get"),
            Some(b"close".to_vec())
        );
    }

    #[test]
    fn a_small_idle_generation_stays_staged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FjallStore::open(dir.path()).expect("open");
        store.apply(&[put(b"k", b"v")]).expect("apply");
        std::thread::sleep(STAGE_IDLE * 3);
        assert_eq!(fjall(&store).data.table_count(), 0);
        assert_eq!(log_entries(dir.path()), 1);
    }

    #[test]
    fn compacted_tables_files_are_deleted_once_idle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FjallStore::open(dir.path()).expect("open");
        for i in 0..=DATA_L0_TABLES_COMPACTED {
            let ops = [b"\0\0a", b"\0\0z"].map(|k| BatchOp::put(Space::Data, k.to_vec(), vec![i]));
            store.apply(&ops).expect("apply");
            store.checkpoint().expect("ingest");
        }
        let files = || {
            let tables =
                std::fs::read_dir(fjall(&store).data.path().join("tables")).expect("tables");
            tables.count()
        };
        // Level 0 reached its threshold: a compaction merges it, and the
        // idle ingester has its inputs' files deleted.
        let deadline = Instant::now() + IDLE_WAIT;
        while (fjall(&store).data.table_count() > usize::from(DATA_L0_TABLES_COMPACTED)
            || files() != fjall(&store).data.table_count())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(fjall(&store).data.table_count() <= usize::from(DATA_L0_TABLES_COMPACTED));
        assert_eq!(
            files(),
            fjall(&store).data.table_count(),
            "files of replaced tables kept"
        );
        assert_eq!(
            store.get(Space::Data, b"\0\0a").expect("get"),
            Some(vec![DATA_L0_TABLES_COMPACTED])
        );
    }
}
