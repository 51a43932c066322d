//! The client-facing counters INFO reports: connections, commands, bytes,
//! keyspace hits, and per command (calls, time, rejections, failures, a
//! latency histogram) and per error prefix, with Redis's field names.
//!
//! Commands are counted on the hot path, so every per-command counter is an
//! atomic in a slot found by the command's table entry; no lock is taken
//! unless a command fails (the error-prefix map) or INFO reads.

use super::table::{self, CommandMeta};
use crate::limits::{ERROR_PREFIXES_MAX, LATENCY_BUCKETS};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Samples kept for instantaneous_ops_per_sec (Redis keeps 16).
const OPS_SAMPLES: usize = 16;

/// Counters for INFO stats, commandstats, errorstats and latencystats.
#[derive(Debug)]
pub struct Stats {
    /// Connections accepted.
    pub connections_received: AtomicU64,
    /// Connections refused at maxclients.
    pub connections_rejected: AtomicU64,
    /// Commands executed.
    pub commands_processed: AtomicU64,
    /// Reads that found a value.
    pub keyspace_hits: AtomicU64,
    /// Reads that found none.
    pub keyspace_misses: AtomicU64,
    /// Bytes read from clients.
    pub net_input_bytes: AtomicU64,
    /// Bytes written to clients.
    pub net_output_bytes: AtomicU64,
    /// Replies that were errors.
    pub error_replies: AtomicU64,
    /// One slot per command table entry (subcommands included).
    commands: Vec<CommandSlot>,
    /// Error replies by prefix (`ERR`, `WRONGTYPE`, ...). Errors are off the
    /// hot path, and the set of prefixes is open, hence a map under a lock.
    errors: Mutex<BTreeMap<String, u64>>,
    /// Samples for instantaneous_ops_per_sec: (time, commands) pairs.
    ops_samples: Mutex<Vec<(Instant, u64)>>,
}

/// What one command has done since start (or CONFIG RESETSTAT).
#[derive(Debug)]
struct CommandSlot {
    calls: AtomicU64,
    usec: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    /// Call durations in the buckets of [`bucket_of`].
    latency: Box<[AtomicU64]>,
}

impl CommandSlot {
    fn new() -> Self {
        Self {
            calls: AtomicU64::new(0),
            usec: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latency: (0..LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn reset(&self) {
        for counter in [&self.calls, &self.usec, &self.rejected, &self.failed] {
            counter.store(0, Ordering::Relaxed);
        }
        for bucket in &self.latency {
            bucket.store(0, Ordering::Relaxed);
        }
    }
}

/// Every table entry, top-level commands then their subcommands, and the
/// slot of each by the entry's address: the address is what dispatch has
/// in hand, and hashing a pointer is cheaper than hashing a name.
static ENTRIES: LazyLock<(Vec<&'static CommandMeta>, HashMap<usize, usize>)> =
    LazyLock::new(|| {
        let entries: Vec<&'static CommandMeta> = table::COMMANDS
            .iter()
            .flat_map(|c| std::iter::once(c).chain(c.subcommands.iter()))
            .collect();
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, meta)| (std::ptr::from_ref(*meta) as usize, i))
            .collect();
        (entries, index)
    });

fn slot_index(meta: &'static CommandMeta) -> Option<usize> {
    ENTRIES.1.get(&(std::ptr::from_ref(meta) as usize)).copied()
}

/// Sub-buckets per power of two: the histogram keeps two significant bits,
/// so a reported percentile is at most 25% above the true value.
const SUB_BUCKETS: u64 = 4;

/// The bucket of a duration in nanoseconds: exact below 4 ns, then four
/// buckets per power of two (a small HDR histogram).
fn bucket_of(nanos: u64) -> usize {
    let bucket = if nanos < SUB_BUCKETS {
        nanos
    } else {
        let power = 63 - u64::from(nanos.leading_zeros()); // >= 2
        let sub = (nanos >> (power - 2)) & (SUB_BUCKETS - 1);
        SUB_BUCKETS * (power - 1) + sub
    };
    (bucket as usize).min(LATENCY_BUCKETS - 1)
}

/// The highest duration (ns) that falls in `bucket`, as HDR histograms
/// report a percentile.
fn bucket_high(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < SUB_BUCKETS {
        return bucket;
    }
    let power = bucket / SUB_BUCKETS + 1;
    let sub = bucket % SUB_BUCKETS;
    let low = (SUB_BUCKETS + sub) << (power - 2);
    low + (1 << (power - 2)) - 1
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            connections_received: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            commands_processed: AtomicU64::new(0),
            keyspace_hits: AtomicU64::new(0),
            keyspace_misses: AtomicU64::new(0),
            net_input_bytes: AtomicU64::new(0),
            net_output_bytes: AtomicU64::new(0),
            error_replies: AtomicU64::new(0),
            commands: (0..ENTRIES.0.len()).map(|_| CommandSlot::new()).collect(),
            errors: Mutex::new(BTreeMap::new()),
            ops_samples: Mutex::new(Vec::new()),
        }
    }
}

impl Stats {
    fn slot(&self, meta: &'static CommandMeta) -> Option<&CommandSlot> {
        self.commands.get(slot_index(meta)?)
    }

    /// Counts `calls` executions of `meta` that took `elapsed` in all, of
    /// which `failed` answered with an error.
    pub fn record_calls(
        &self,
        meta: &'static CommandMeta,
        calls: u64,
        elapsed: Duration,
        failed: u64,
    ) {
        self.commands_processed.fetch_add(calls, Ordering::Relaxed);
        let Some(slot) = self.slot(meta) else {
            debug_assert!(false, "{} has no stats slot", meta.name);
            return;
        };
        slot.calls.fetch_add(calls, Ordering::Relaxed);
        slot.usec
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        if failed > 0 {
            slot.failed.fetch_add(failed, Ordering::Relaxed);
        }
        // A batch shares its time evenly: each command waited on the one
        // coordinator call that served them all.
        let each = elapsed.as_nanos() as u64 / calls.max(1);
        slot.latency[bucket_of(each)].fetch_add(calls, Ordering::Relaxed);
    }

    /// Counts a command refused before it ran (arity, NOAUTH): Redis's
    /// `rejected_calls`.
    pub fn record_rejected(&self, meta: &'static CommandMeta) {
        if let Some(slot) = self.slot(meta) {
            slot.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts an error reply sent to a client, by its prefix as Redis takes
    /// it: the first word if a space comes within 32 bytes, else `ERR`.
    pub fn record_error(&self, text: &str) {
        self.error_replies.fetch_add(1, Ordering::Relaxed);
        let head = &text.as_bytes()[..text.len().min(32)];
        let prefix = match head.iter().position(|&b| b == b' ') {
            Some(end) => &text[..end],
            None => "ERR",
        };
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = errors.get_mut(prefix) {
            *count += 1;
        } else if errors.len() < ERROR_PREFIXES_MAX {
            errors.insert(prefix.to_owned(), 1);
        } else {
            // Clients choose error texts (an unknown command's name is
            // not one, but a script's error could be): keep the map bounded.
            *errors.entry("ERRORSTATS_OVERFLOW".to_owned()).or_insert(0) += 1;
        }
    }

    /// `# Commandstats` fields: one line per command that was called,
    /// rejected or failed.
    pub fn commandstats(&self) -> Vec<(String, String)> {
        ENTRIES
            .0
            .iter()
            .zip(&self.commands)
            .filter_map(|(meta, slot)| {
                let calls = slot.calls.load(Ordering::Relaxed);
                let rejected = slot.rejected.load(Ordering::Relaxed);
                let failed = slot.failed.load(Ordering::Relaxed);
                if calls == 0 && rejected == 0 && failed == 0 {
                    return None;
                }
                let usec = slot.usec.load(Ordering::Relaxed);
                let per_call = if calls == 0 {
                    0.0
                } else {
                    usec as f64 / calls as f64
                };
                Some((
                    format!("cmdstat_{}", meta.name),
                    format!(
                        "calls={calls},usec={usec},usec_per_call={per_call:.2},\
                         rejected_calls={rejected},failed_calls={failed}"
                    ),
                ))
            })
            .collect()
    }

    /// `# Latencystats` fields: p50, p99 and p99.9 of each called command,
    /// in microseconds.
    pub fn latencystats(&self) -> Vec<(String, String)> {
        ENTRIES
            .0
            .iter()
            .zip(&self.commands)
            .filter_map(|(meta, slot)| {
                let counts: Vec<u64> = slot
                    .latency
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed))
                    .collect();
                let total: u64 = counts.iter().sum();
                if total == 0 {
                    return None;
                }
                let mut text = String::new();
                for (label, quantile) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
                    let usec = percentile(&counts, total, quantile) as f64 / 1000.0;
                    let comma = if text.is_empty() { "" } else { "," };
                    let _ = write!(text, "{comma}{label}={usec:.3}");
                }
                Some((format!("latency_percentiles_usec_{}", meta.name), text))
            })
            .collect()
    }

    /// `# Errorstats` fields.
    pub fn errorstats(&self) -> Vec<(String, String)> {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(prefix, count)| (format!("errorstat_{prefix}"), format!("count={count}")))
            .collect()
    }

    /// Records a sample of the command counter (called every 100 ms).
    pub fn sample_ops(&self) {
        let mut samples = self
            .ops_samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        samples.push((
            Instant::now(),
            self.commands_processed.load(Ordering::Relaxed),
        ));
        if samples.len() > OPS_SAMPLES {
            samples.remove(0);
        }
    }

    /// Commands per second over the sampled window.
    pub fn ops_per_sec(&self) -> u64 {
        let samples = self
            .ops_samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match (samples.first(), samples.last()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                (b.1.saturating_sub(a.1) as f64 / (b.0 - a.0).as_secs_f64()).round() as u64
            }
            _ => 0,
        }
    }

    /// Zeroes the counters CONFIG RESETSTAT resets.
    pub fn reset(&self) {
        for counter in [
            &self.connections_received,
            &self.connections_rejected,
            &self.commands_processed,
            &self.keyspace_hits,
            &self.keyspace_misses,
            &self.net_input_bytes,
            &self.net_output_bytes,
            &self.error_replies,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        for slot in &self.commands {
            slot.reset();
        }
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// The smallest bucket bound below which `quantile` of the samples fall.
fn percentile(counts: &[u64], total: u64, quantile: f64) -> u64 {
    let rank = ((total as f64) * quantile).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (bucket, &count) in counts.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return bucket_high(bucket);
        }
    }
    bucket_high(counts.len() - 1)
}

/// This process's CPU time as `# CPU` shows it: system and user seconds of
/// the process and of its waited-for children (getrusage). Redis's
/// `*_main_thread` fields are left out: no one thread is the main one here.
pub fn cpu_fields() -> Vec<(&'static str, String)> {
    let (me, children) = (rusage(libc::RUSAGE_SELF), rusage(libc::RUSAGE_CHILDREN));
    let secs = |t: libc::timeval| format!("{}.{:06}", t.tv_sec, t.tv_usec);
    vec![
        ("used_cpu_sys", secs(me.ru_stime)),
        ("used_cpu_user", secs(me.ru_utime)),
        ("used_cpu_sys_children", secs(children.ru_stime)),
        ("used_cpu_user_children", secs(children.ru_utime)),
    ]
}

#[expect(unsafe_code, reason = "getrusage has no wrapper in std")]
fn rusage(who: libc::c_int) -> libc::rusage {
    // SAFETY: an all-zero rusage is a valid value of the plain C struct,
    // and getrusage writes only into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage for the whole call.
    if unsafe { libc::getrusage(who, &raw mut usage) } != 0 {
        tracing::debug!("getrusage failed: {}", std::io::Error::last_os_error());
    }
    usage
}

/// The `# Dynamo` section of INFO and DYNAMO STATUS: the coordinator's
/// report as `(field, value)` lines, the replica's first, then the
/// cluster's (one `peer_latency_us` line per connected peer).
pub fn dynamo_fields(info: &crate::coordinator::CoordinatorInfo) -> Vec<(&'static str, String)> {
    let replica = &info.replica;
    let failing = replica.health.failing.as_ref();
    let mut fields = vec![
        ("node_id", format!("{:016x}", replica.node_id)),
        ("partitions", replica.partitions.to_string()),
        ("fsync", replica.fsync.as_str().to_owned()),
        ("fsync_group_syncs", replica.fsync_group_syncs.to_string()),
        ("siblings_max", replica.siblings_max.to_string()),
        ("siblings_collapsed", replica.siblings_collapsed.to_string()),
        ("records_written", replica.records_written.to_string()),
        ("disk_bytes", replica.disk_bytes.to_string()),
        ("keys_held", replica.keys_held.to_string()),
        (
            "store_status",
            if failing.is_some() { "failing" } else { "ok" }.to_owned(),
        ),
        (
            "store_error",
            failing.map(|f| f.reason.clone()).unwrap_or_default(),
        ),
        (
            "store_failing_since",
            failing.map_or(0, |f| f.since_ms / 1000).to_string(),
        ),
        ("store_failures", replica.health.failures.to_string()),
        ("record_cache_bytes", replica.cache.bytes.to_string()),
        ("record_cache_hits", replica.cache.hits.to_string()),
        ("record_cache_misses", replica.cache.misses.to_string()),
        (
            "record_cache_complete_shards",
            replica.cache.complete_shards.to_string(),
        ),
    ];
    let cluster = &info.cluster;
    fields.extend([
        ("members", cluster.members.to_string()),
        ("members_up", cluster.members_up.to_string()),
        (
            "members_down",
            (cluster.members - cluster.members_up).to_string(),
        ),
        (
            "failure_detections",
            cluster.failures.detections.to_string(),
        ),
        (
            "failure_detection_last_ms",
            cluster.failures.last_detection_ms.to_string(),
        ),
        ("partitions_primary", cluster.partitions_primary.to_string()),
        ("partitions_replica", cluster.partitions_replica.to_string()),
        ("replicas_effective", cluster.replicas.to_string()),
        ("read_quorum_effective", cluster.read_quorum.to_string()),
        ("write_quorum_effective", cluster.write_quorum.to_string()),
        ("quorum_failures", cluster.quorum_failures.to_string()),
        ("read_repairs", cluster.read_repairs.to_string()),
        (
            "read_repairs_dropped",
            cluster.read_repairs_dropped.to_string(),
        ),
        ("writes_forwarded", cluster.writes_forwarded.to_string()),
    ]);
    let layout = &cluster.layout;
    let handoff = &cluster.handoff;
    fields.extend([
        ("layout_epoch", layout.epoch.to_string()),
        ("layout_digest", format!("{:016x}", layout.digest)),
        ("layout_settled", u8::from(layout.settled).to_string()),
        ("members_joining", layout.joining.to_string()),
        ("members_leaving", layout.leaving.to_string()),
        ("members_removed", layout.removed.to_string()),
        (
            "layout_waiting_to_settle",
            layout.waiting_to_settle.to_string(),
        ),
        (
            "handoff_partitions_to_receive",
            handoff.partitions_to_receive.to_string(),
        ),
        (
            "handoff_partitions_done",
            handoff.partitions_done.to_string(),
        ),
        ("handoff_streams_in", handoff.streams_in.to_string()),
        ("handoff_streams_out", handoff.streams_out.to_string()),
        ("handoff_stuck", handoff.stuck.to_string()),
        (
            "handoff_waiting_for_gossip",
            u8::from(handoff.waiting_for_gossip).to_string(),
        ),
        (
            "handoff_rate_bytes_per_s",
            format!("{:.0}", handoff.rate_bytes_per_s),
        ),
        (
            "handoff_eta_s",
            handoff.eta_s.map_or(String::new(), |s| format!("{s:.0}")),
        ),
        ("handoff_keys_received", handoff.keys_received.to_string()),
        ("handoff_bytes_received", handoff.bytes_received.to_string()),
        (
            "handoff_partitions_received",
            handoff.partitions_received.to_string(),
        ),
        ("handoff_batches_served", handoff.batches_served.to_string()),
        ("handoff_bytes_served", handoff.bytes_served.to_string()),
        ("handoff_busy_refusals", handoff.busy_refusals.to_string()),
        ("handoff_retries", handoff.retries.to_string()),
        (
            "handoff_partitions_dropped",
            handoff.partitions_dropped.to_string(),
        ),
    ]);
    let hints = &cluster.hints;
    let sum = |of: fn(&crate::coordinator::TargetHintsReport) -> u64| {
        hints.targets.iter().map(of).sum::<u64>().to_string()
    };
    let oldest = hints.targets.iter().filter_map(|t| t.oldest_age_ms).max();
    fields.extend([
        ("hints_held", hints.keys().to_string()),
        ("hints_bytes", sum(|t| t.bytes)),
        (
            "hints_oldest_age_s",
            oldest.map_or(0, |ms| ms / 1000).to_string(),
        ),
        ("hints_replayed", sum(|t| t.replayed)),
        ("hints_dropped", sum(|t| t.dropped)),
        ("hints_sent", hints.sent.to_string()),
        (
            "hints_targets",
            hints
                .targets
                .iter()
                .filter(|t| t.keys > 0)
                .count()
                .to_string(),
        ),
        ("write_tails_dropped", hints.write_tails_dropped.to_string()),
    ]);
    // One line per target with hints held or counted: `hints_target` =>
    // `name=n2,keys=10,bytes=2410,oldest_age_s=3,replayed=0,dropped=0,replaying=0`
    // (every item `k=v`, the shape Redis clients parse INFO values in).
    for target in &hints.targets {
        fields.push(("hints_target", hint_target_line(target)));
    }
    let aae = &cluster.aae;
    fields.extend([
        ("aae_enabled", u8::from(aae.enabled).to_string()),
        ("aae_exchanges", aae.exchanges.to_string()),
        ("aae_keys_repaired", aae.keys_repaired.to_string()),
        ("tombstones_reaped", aae.reaped.to_string()),
        ("aae_bytes", aae.bytes.to_string()),
        // -1 until a round reached every peer it meant to.
        (
            "aae_last_round_age_s",
            aae.last_round_age_ms
                .map_or(-1, |ms| (ms / 1000) as i64)
                .to_string(),
        ),
    ]);
    for (name, micros) in &cluster.peer_latency_us {
        fields.push(("peer_latency_us", format!("{name}={micros:.0}")));
    }
    fields
}

/// One target's hints as an INFO value.
fn hint_target_line(t: &crate::coordinator::TargetHintsReport) -> String {
    format!(
        "name={},keys={},bytes={},oldest_age_s={},replayed={},dropped={},replaying={}",
        t.name,
        t.keys,
        t.bytes,
        t.oldest_age_ms.map_or(0, |ms| ms / 1000),
        t.replayed,
        t.dropped,
        u8::from(t.replaying.is_some()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_hold_their_values() {
        let mut last = 0;
        for nanos in (0..5000).chain([1 << 20, (1 << 20) + 12345, 1 << 33]) {
            let bucket = bucket_of(nanos);
            assert!(bucket >= last, "{nanos}");
            last = bucket;
            assert!(bucket_high(bucket) >= nanos, "{nanos} above its bucket");
            if bucket > 0 {
                assert!(bucket_high(bucket - 1) < nanos, "{nanos} below its bucket");
            }
        }
    }

    #[test]
    fn percentiles_come_from_the_samples() {
        let stats = Stats::default();
        let get = table::lookup(b"get").expect("get in the table");
        for _ in 0..99 {
            stats.record_calls(get, 1, Duration::from_micros(10), 0);
        }
        stats.record_calls(get, 1, Duration::from_millis(5), 1);
        let latency = stats.latencystats();
        assert_eq!(latency.len(), 1);
        assert_eq!(latency[0].0, "latency_percentiles_usec_get");
        // 10 us lands in [8192, 10239] ns; 5 ms in [4194304, 5242879] ns.
        assert_eq!(latency[0].1, "p50=10.239,p99=10.239,p99.9=5242.879");
        let calls = stats.commandstats();
        assert_eq!(
            calls,
            vec![(
                "cmdstat_get".to_owned(),
                "calls=100,usec=5990,usec_per_call=59.90,rejected_calls=0,failed_calls=1"
                    .to_owned()
            )]
        );
    }

    #[test]
    fn errors_are_counted_by_prefix() {
        let stats = Stats::default();
        stats.record_error("ERR syntax error");
        stats.record_error("WRONGTYPE Operation against a key");
        stats.record_error("ERR x");
        stats.record_error("NOSPACEINTHEFIRSTTHIRTYTWOBYTESATALL");
        assert_eq!(
            stats.errorstats(),
            vec![
                ("errorstat_ERR".to_owned(), "count=3".to_owned()),
                ("errorstat_WRONGTYPE".to_owned(), "count=1".to_owned()),
            ]
        );
        assert_eq!(stats.error_replies.load(Ordering::Relaxed), 4);
    }
}
