//! Every bound the node enforces, in one place, units last.
//!
//! A limit that can be changed at run time has its default here and its live
//! value in [`crate::config::Config`]; the rest are fixed by the code.

/// Default for `--maxclients`: concurrent client connections (Redis's default).
pub const CLIENTS_MAX_DEFAULT: usize = 10_000;

/// Largest bulk string a client may send (Redis `proto-max-bulk-len`).
pub const BULK_BYTES_MAX_DEFAULT: usize = 512 * 1024 * 1024;

/// Most elements in one request array (Redis rejects counts past this).
pub const ARRAY_LEN_MAX: usize = 1024 * 1024;

/// Longest inline command line, and longest `*`/`$` header line
/// (Redis `PROTO_INLINE_MAX_SIZE`).
pub const INLINE_BYTES_MAX: usize = 64 * 1024;

/// Largest key, in bytes. fjall caps keys at 64 KiB and we prefix each key
/// with its partition id, so stay well inside that.
pub const KEY_BYTES_MAX: usize = 60 * 1024;

/// Largest key below the RESP face: a client key with its logical
/// database's prefix (`crate::db`, 2 bytes).
pub const NAMESPACED_KEY_BYTES_MAX: usize = KEY_BYTES_MAX + 2;

/// How long a peer may take to answer a request that walks its whole
/// store: a count of its keys (DBSIZE and INFO keyspace in a cluster scan
/// the partitions each node counts) or a FLUSHALL (a tombstone per key).
/// [`PEER_REQUEST_TIMEOUT_MS`] is for batches of keys; on a node holding
/// millions of keys these take seconds (issue 17's crash test saw DBSIZE
/// time out after 2 s on 20,000 keys, in a debug build under load).
pub const PEER_WHOLE_STORE_TIMEOUT_MS: u64 = 60_000;

/// Times RENAME or MOVE reads its source again when the source changed
/// between the read and its conditional delete (a racing writer or MOVE);
/// a bound, far above what contention between a few clients needs.
pub const MOVE_ATTEMPTS_MAX: usize = 64;

/// Largest value (Redis's string limit).
pub const VALUE_BYTES_MAX: usize = 512 * 1024 * 1024;

/// Default bound on live siblings per key; past it the oldest collapse
/// last-writer-wins (docs/semantics.md).
pub const SIBLINGS_MAX_DEFAULT: usize = 64;

/// Most entries a decoded version vector may carry. A vector has one entry
/// per node that ever coordinated a write to the key, so this is far above
/// any real cluster and only guards decoding of hostile input.
pub const VECTOR_ENTRIES_MAX: usize = 4096;

/// Default number of partitions (Q) for a new data directory; a power of two.
pub const PARTITIONS_DEFAULT: u32 = 4096;

/// Largest Q: partition ids are stored as two big-endian bytes.
pub const PARTITIONS_MAX: u32 = 1 << 16;

/// Most bytes reserved at once for a bulk string still arriving; the
/// buffer grows in such steps as the bytes come.
pub const BULK_RESERVE_STEP_BYTES: usize = 1024 * 1024;

/// Bytes read from a client socket per read call, at least.
pub const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Replies buffered for one client before they are written even though
/// more pipelined commands are waiting (keeps memory bounded per client).
pub const REPLY_BUFFER_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Pipelined commands taken from a client's buffer per round; replies to
/// a round are sent together.
pub const PIPELINE_BATCH_COMMANDS_MAX: usize = 1024;

/// MONITOR lines queued for one monitoring client and not yet taken into
/// its output. A monitor that falls this far behind is disconnected, as
/// Redis disconnects a client past its `client-output-buffer-limit`
/// (Redis's pubsub class has a 32 MB hard limit; its normal class, which
/// monitors belong to, has none, which we cannot afford). One line larger
/// than this is still taken into an empty queue, so a single large
/// command does not cut off a monitor that keeps up.
pub const MONITOR_QUEUE_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Commands queued between MULTI and EXEC on one connection.
pub const MULTI_QUEUE_LEN_MAX: usize = 100_000;

/// Per-key lock stripes in the local replica (read-modify-write of a key
/// holds one stripe). A storage job holds the stripes of all its keys
/// (about [`STORAGE_JOB_KEYS_MAX`]) through its commit: with 1024 stripes
/// two jobs of 16 keys share one 22% of the time, and one waits for the
/// other; with 8192, 3%, for 32 KiB of locks.
pub const KEY_LOCK_STRIPES: usize = 8192;

/// How long a graceful shutdown waits for in-flight commands, in milliseconds.
pub const SHUTDOWN_DRAIN_MS: u64 = 5_000;

/// Interval of the background sync under `--fsync everysec`, in milliseconds.
pub const FSYNC_EVERYSEC_INTERVAL_MS: u64 = 1_000;

/// Expired keys the reaper removes per batch (one store batch, one lock set).
pub const EXPIRE_REAP_BATCH_KEYS: usize = 1000;

/// Batches the reaper may run back to back before it yields until its next
/// tick; bounds the work one tick does (20k keys).
pub const EXPIRE_REAP_BATCHES_PER_TICK: usize = 20;

/// How often the expiry reaper wakes, in milliseconds.
pub const EXPIRE_REAP_INTERVAL_MS: u64 = 100;

/// Records read per step when a command walks a partition (KEYS, SCAN,
/// RANDOMKEY).
pub const PARTITION_PAGE_RECORDS: usize = 1024;

/// Records read per step when a node walks its whole store at open
/// (counting keys, loading the record cache).
pub const STORE_WALK_PAGE_RECORDS: usize = 1024;

/// Most records one SCAN call reads from a single partition before it
/// returns a cursor inside that partition (only huge partitions need one).
pub const SCAN_PARTITION_RECORDS_MAX: usize = 10_000;

/// Default time a peer request may take before it counts as failed, in ms.
pub const PEER_REQUEST_TIMEOUT_MS: u64 = 2_000;

/// Requests one node may have in flight to one peer; past it new requests
/// wait (backpressure) rather than queue without bound.
pub const PEER_INFLIGHT_MAX: usize = 1024;

/// Frames queued for one peer connection's writer.
pub const PEER_QUEUE_FRAMES: usize = 4096;

/// Most bytes the writer coalesces into one socket write.
pub const PEER_WRITE_BYTES_MAX: usize = 1024 * 1024;

/// Bytes read from a peer socket per read call, at least: room for many
/// frames, so requests that arrived together are served as one batch.
pub const PEER_READ_BUFFER_BYTES: usize = 64 * 1024;

/// Requests from one peer served at once on this node.
pub const PEER_SERVE_CONCURRENCY: usize = 256;

/// First and longest wait between reconnect attempts to a peer, in ms.
pub const PEER_BACKOFF_MIN_MS: u64 = 50;
/// See [`PEER_BACKOFF_MIN_MS`].
pub const PEER_BACKOFF_MAX_MS: u64 = 2_000;

/// How long a handshake may take, in ms.
pub const PEER_HANDSHAKE_TIMEOUT_MS: u64 = 3_000;
/// Each side of a link pings the other this often, busy or idle: the
/// heartbeat the failure detector learns the link's rhythm from (docs/cluster.md,
/// "Failure detection").
pub const PEER_HEARTBEAT_MS: u64 = DETECTOR_HEARTBEAT_INTERVAL_MS;
/// A peer connection with nothing received for this long (pings
/// unanswered) is taken for dead and reopened: a connection can stall
/// without closing (a peer frozen, a flow dropped along the way), and
/// reopening is the only way to find out.
pub const PEER_SILENCE_MAX_MS: u64 = 5_000;

/// Longest a starting node answers data commands with LOADING while it
/// waits for links to enough replicas of every partition for R and W, in
/// ms; past it, it serves anyway (its peers may be down for good). A peer
/// that was dialing the node while it was down retries within
/// [`PEER_BACKOFF_MAX_MS`] and its handshake takes at most
/// [`PEER_HANDSHAKE_TIMEOUT_MS`], so links to live peers come within it.
pub const READY_WAIT_MS: u64 = PEER_BACKOFF_MAX_MS + PEER_HANDSHAKE_TIMEOUT_MS;

/// Membership exchange period, in ms (each tick: one random peer).
pub const MEMBERSHIP_EXCHANGE_MS: u64 = 500;

/// Read repairs waiting to be sent; past it repairs are dropped and
/// counted (anti-entropy catches what they would have fixed).
pub const READ_REPAIR_QUEUE_LEN: usize = 4096;

/// Largest peer frame, in bytes, after its 4-byte length prefix: one
/// record can hold a 512 MiB value plus its versions, so leave headroom
/// over [`VALUE_BYTES_MAX`]. A longer length is refused before buffering.
pub const PEER_FRAME_BYTES_MAX: usize = 600 * 1024 * 1024;

/// Largest handshake (Hello) frame, in bytes, after its length prefix: a
/// peer that has not yet proved itself may not make us buffer more.
pub const PEER_HELLO_BYTES_MAX: usize = 64 * 1024;

/// Most keys a coordinator puts in one peer Read or Replicate request: a
/// client's batch (a pipeline run, an MGET) goes to each replica as one
/// request per this many keys, not one per key.
pub const PEER_BATCH_KEYS_MAX: usize = 256;

/// Record bytes past which a batch is cut: a Replicate request carries no
/// more once past it, and an answer to Read stops short there (the
/// coordinator asks again for the rest). Each holds at least one record,
/// so a single larger record still travels, alone.
pub const PEER_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Most elements in one list of a peer message (scan entries, members);
/// decoding a longer count is refused before allocating.
pub const PEER_LIST_LEN_MAX: usize = 1 << 20;

/// Reads whose slower replicas are still being listened to for read
/// repair after the client got its answer; past it those are dropped.
pub const READ_TAILS_MAX: usize = 1024;

/// Storage threads (they run fjall work for async code).
pub const STORAGE_THREADS: usize = 4;

/// Storage threads under `--fsync always`, where each write waits for a
/// sync: more threads let more writers share one (group commit).
pub const STORAGE_THREADS_FSYNC_ALWAYS: usize = 32;

/// Keys' worth of concurrent callers' reads, writes and merges one
/// combined storage job takes (whole callers, at least one); the rest go
/// to another job that another storage thread can run meanwhile.
pub const STORAGE_JOB_KEYS_MAX: usize = 16;

/// Times a storage thread with nothing to do yields the CPU, looking at
/// its queue after each, before it sleeps. Under steady load the next job
/// comes within them and no wake-up is paid: measured on the 3-node
/// cluster (`benches/ab.sh`, SET -P 1), 30 gave +19% requests/s (+20%
/// again in 6 alternating-order rounds) and -7% CPU per SET against
/// sleeping at once; 10 and 100 did no better.
/// Under `--fsync always` threads sleep at once: there its 32 threads
/// yielding cost 18% more CPU per SET for no more requests/s (2 rounds
/// of `ab.sh` with `--fsync always`, SET -P 1: 70.6 against 83.5 µs).
pub const STORAGE_IDLE_YIELDS: usize = 30;

/// Storage jobs queued at once; past it callers wait for room.
pub const STORAGE_QUEUE_JOBS_MAX: usize = 4096;

/// Bytes of data-keyspace writes staged in memory (and logged) before
/// they are sorted and ingested into the data keyspace as a level-0
/// table (see `storage::stage`). Staging instead of fjall's memtable took
/// 19-28% less node CPU per SET at P16 (benches/ab.sh, 1,000,000 SETs,
/// 5 of 5 rounds in each of two runs; docs/benchmarks.md). Writers wait for an ingestion once a
/// second generation is this full, so staging holds at most about twice
/// this, in records the record cache mostly shares.
pub const STAGE_GENERATION_BYTES: usize = 16 << 20;

/// A generation holding at least [`STAGE_IDLE_INGEST_BYTES_MIN`] is
/// sealed and ingested, at the lowest CPU priority, once no write came
/// for this long (between one and two of these), so that an idle node
/// holds little in memory and in its log, and a burst of writes after a
/// pause starts with an empty generation instead of paying for its
/// predecessor's ingestion.
pub const STAGE_IDLE: std::time::Duration = std::time::Duration::from_millis(500);

/// The least an idle generation holds to be ingested: below it, the
/// level-0 table it would make costs more than holding it.
pub const STAGE_IDLE_INGEST_BYTES_MIN: usize = STAGE_GENERATION_BYTES / 4;

/// Bytes of a generation's log file at which it is sealed even if it
/// holds less than [`STAGE_GENERATION_BYTES`]: overwrites of a few hot
/// keys keep a generation small while its log grows with every write, and
/// opening a data directory replays the whole log.
pub const STAGE_LOG_BYTES_MAX: u64 = 64 << 20;

/// Tables ingested into level 0 of the data keyspace before they are
/// compacted into level 1 (fjall's default is 4). A compaction rewrites
/// the keys of level 1 that the tables overlap, and under writes spread
/// over the keyspace that is all of them: 16 tables a compaction instead
/// of 4 is a quarter of the rewriting. Measured with fjall's memtable
/// flushing at 8 MiB: 4 cost 3% more CPU per SET at P16 than fjall's
/// defaults, 16 cost 13% less (400,000 SETs, 3 rounds each). Reads of
/// keys missing from the record cache check each level-0 table's filter.
pub const DATA_L0_TABLES_COMPACTED: u8 = 16;

/// Level-0 tables of the data keyspace past which an ingestion waits for
/// compaction ([`INGEST_STALL_WAIT_MS`] at most). Ingestions bypass
/// fjall's own write stalls (from 20 level-0 tables, stop at 30); this
/// keeps writes that outrun compaction from piling up tables every read
/// of an uncached key must check.
pub const DATA_L0_TABLES_STALL: usize = 30;

/// Longest an ingestion waits for level 0 to shrink below
/// [`DATA_L0_TABLES_STALL`] before it goes ahead, in milliseconds.
pub const INGEST_STALL_WAIT_MS: u64 = 10_000;

/// How often a node whose store cannot take writes (a full disk, an I/O
/// error: `storage::Health`) probes whether it can again, in
/// milliseconds. Each probe writes and syncs [`STORE_PROBE_BYTES`]; the
/// first that succeeds repairs the store and writes resume, so writes
/// come back within about this long of the disk (Redis retries its
/// failed AOF write about as often, from its once-a-second cron).
pub const STORE_PROBE_INTERVAL_MS: u64 = 1_000;

/// Bytes a store probe writes and syncs before the store takes writes
/// again: room for a write of a common size and for what reopening fjall
/// writes, so that writes do not resume on a disk that has a few blocks
/// free and fail again at once.
pub const STORE_PROBE_BYTES: usize = 1024 * 1024;

/// Default budget of the record cache (`--cache-mb`), in bytes.
pub const RECORD_CACHE_BYTES_DEFAULT: usize = 64 << 20;

/// Independently locked parts of the record cache: concurrent readers
/// and writers rarely meet on one lock.
pub const RECORD_CACHE_SHARDS: usize = 64;

/// What a cache entry costs beyond its key and value (the map slot, with
/// the key inline up to 30 bytes, the value's handle and allocator
/// rounding), counted against the cache's budget.
pub const RECORD_CACHE_ENTRY_OVERHEAD_BYTES: usize = 64;

/// How long the allocator (mimalloc) keeps freed memory before it returns
/// it to the OS, unless `MIMALLOC_PURGE_DELAY` says otherwise. mimalloc's
/// 1 s returned each flushed memtable's memory, and the next memtable
/// faulted it back in, huge page by huge page, each zeroed by the kernel:
/// 0.037 page faults per SET at P16 over three nodes, 4% of their CPU in
/// the kernel clearing pages. At 10 s it is 0.0005 per SET, and 5% less
/// CPU per SET at P16, 4% at P1 (benches/ab.sh; docs/benchmarks.md).
/// Never purging (-1) did no better than 10 s, and keeps a burst's memory
/// for good.
pub const ALLOCATOR_PURGE_DELAY_MS: i64 = 10_000;

/// Distinct error prefixes INFO errorstats keeps (Redis's
/// `ERROR_STATS_NUMBER`); errors past them count as `ERRORSTATS_OVERFLOW`.
pub const ERROR_PREFIXES_MAX: usize = 128;

/// Buckets of each command's latency histogram: four per power of two of
/// nanoseconds, so the last one starts near 2^40 ns (18 minutes).
pub const LATENCY_BUCKETS: usize = 160;

/// How often a node sends each peer a heartbeat on their link, in ms
/// (docs/cluster.md, "Membership changes and failure detection"). The
/// failure detector never expects a peer more often than this: it is the
/// floor of the mean interval it learns, and the interval it assumes
/// before it has learned one.
pub const DETECTOR_HEARTBEAT_INTERVAL_MS: u64 = 1_000;

/// Default phi past which a peer is suspected (Cassandra's
/// `phi_convict_threshold`): phi 8 means the silence so far would happen
/// by chance once in 10^8 heartbeats of the learned distribution.
/// Cassandra advises 10-12 on noisy clouds.
pub const DETECTOR_PHI_THRESHOLD_DEFAULT: f64 = 8.0;

/// Heartbeat intervals the detector remembers per peer (a ring buffer):
/// 100 s of history at one heartbeat a second, long enough for a steady
/// estimate and short enough to follow a network that changed within a
/// couple of minutes (Cassandra keeps 1,000, Akka 1,000).
pub const DETECTOR_WINDOW_SAMPLES: usize = 100;

/// Intervals a peer's window must hold before its own mean and standard
/// deviation are used; until then the detector assumes
/// [`DETECTOR_HEARTBEAT_INTERVAL_MS`] with [`DETECTOR_BOOTSTRAP_STD_DEV_MS`].
pub const DETECTOR_SAMPLES_MIN: usize = 4;

/// The standard deviation assumed before [`DETECTOR_SAMPLES_MIN`]
/// intervals are known, in ms: a fifth of the heartbeat interval, a
/// little more lenient than the learned floor while a link is new (Akka's
/// `first-heartbeat-estimate` takes a quarter, which with the probe
/// deadline below would put a detection in a node's first seconds at
/// 3.1 s, past the 3 s the design asks for).
pub const DETECTOR_BOOTSTRAP_STD_DEV_MS: u64 = 200;

/// Floor of the learned standard deviation, in ms. Heartbeats on an idle
/// loopback arrive almost exactly on time, and a standard deviation near 0
/// would suspect a peer 1 ms late. With the 1 s mean floor, 150 ms puts
/// suspicion 1.8 s after the last heartbeat, so suspicion plus the probe
/// deadline ([`DETECTOR_PROBE_DEADLINE_MS`]) stays under the 3 s in which
/// a dead peer must be marked down.
pub const DETECTOR_STD_DEV_MIN_MS: u64 = 150;

/// Longest interval admitted into the window, in ms; longer ones are
/// clamped to it (Cassandra's `fd_max_interval_ms`, 2 s). A peer that was
/// paused for 30 s would otherwise raise the learned mean and deviation so
/// much that its next real death took tens of seconds to notice.
pub const DETECTOR_INTERVAL_MAX_MS: u64 = 2 * DETECTOR_HEARTBEAT_INTERVAL_MS;

/// Arrivals sooner than this after the last one taken as a sample only
/// refresh the peer's last-heard time, in ms. Under load every frame is
/// evidence of life, but a window of 1 ms intervals would make the first
/// idle second look like a death; sampling at most every half heartbeat
/// keeps the window about heartbeats.
pub const DETECTOR_SAMPLE_GAP_MIN_MS: u64 = DETECTOR_HEARTBEAT_INTERVAL_MS / 2;

/// Other members asked to probe a suspect before it is marked down (SWIM's
/// indirect probe, k = 2): a link that lost its way in one direction is
/// not a death if another member still reaches the peer.
pub const DETECTOR_INDIRECT_PROBES: usize = 2;

/// How long a suspect has for a heartbeat or an indirect probe's ack
/// before it is marked down, in ms. A helper should give up its own probe
/// sooner (half of this), so its answer arrives in time. With the
/// learned floor this marks a dead peer down 1.8 + 0.7 s after its last
/// heartbeat (2.1 + 0.7 s while its link is new), plus one tick; a 1 s
/// pause (a 2 s gap) ends before the deadline, and so does one lost
/// heartbeat between two late by the most jitter allowed (a 2.4 s gap:
/// at 0.6 s, the property test `single_losses_never_mark_down` found
/// one marked down 3 ms before its next heartbeat).
pub const DETECTOR_PROBE_DEADLINE_MS: u64 = 700;

/// How long a suspect vouched for by an indirect probe stays up before it
/// is suspected again while its direct heartbeats stay missing, in ms: one
/// new round of probes per heartbeat interval, not one per detector tick.
pub const DETECTOR_REPROBE_AFTER_MS: u64 = DETECTOR_HEARTBEAT_INTERVAL_MS;

/// How long a helper waits for the suspect's answer to its ping, in ms:
/// half the deadline, so that its answer reaches the asking node in time.
pub const DETECTOR_PROBE_PING_MS: u64 = DETECTOR_PROBE_DEADLINE_MS / 2;

/// How often the failure-detection worker feeds the detector what the
/// links heard and ticks it, in ms: a detection is late by at most this.
pub const DETECTOR_TICK_MS: u64 = 100;

/// Probe acks waiting for the failure-detection worker. Each suspicion
/// asks [`DETECTOR_INDIRECT_PROBES`] helpers, so this holds the acks of
/// 32 suspects at once; one dropped past it only lets the deadline run.
pub const DETECTOR_ACKS_QUEUE: usize = 32 * DETECTOR_INDIRECT_PROBES;

/// Members (tombstones included) a layout may hold before a join is
/// refused. Far above any cluster this design is for (a full mesh of
/// links), and it bounds what every node keeps and gossips.
pub const LAYOUT_MEMBERS_MAX: usize = 1024;

/// Members a decoded layout may carry. Larger than [`LAYOUT_MEMBERS_MAX`]:
/// concurrent joins at different nodes can merge past the join limit, and
/// a layout every node must accept may not be refused; this only guards
/// decoding of hostile input.
pub const LAYOUT_DECODE_MEMBERS_MAX: usize = 64 * 1024;

/// Longest name or address in a layout, in bytes (a DNS name is at most
/// 253; room for a port and more).
pub const LAYOUT_TEXT_BYTES_MAX: usize = 1024;

/// Handoff streams a node receives at once (docs/cluster.md, "Handoff"):
/// each pulls one partition from one source.
pub const HANDOFF_STREAMS_IN: usize = 2;

/// Handoff streams a node serves at once; a `Fetch` past them is answered
/// Busy, and the receiver tries another source or waits.
pub const HANDOFF_STREAMS_OUT: usize = 2;

/// Records per handoff batch (one `Fetch` and its merge, and the cursor
/// saved after it).
pub const HANDOFF_BATCH_KEYS: u32 = 512;

/// Default handoff throttle, in bytes per second per node received
/// (`--handoff-rate`): a move must not starve the clients.
pub const HANDOFF_RATE_DEFAULT: u64 = 32 * 1024 * 1024;

/// How often, at most, a handoff saves its cursors: each save syncs the
/// store first (a cursor on disk never passes records that are not), and
/// a sync per batch made a move sync-bound. A crash of the receiver costs
/// the batches since the last save, fetched again (merge is idempotent).
pub const HANDOFF_CURSOR_SAVE_MS: u64 = 1_000;

/// How long one handoff batch may take (the sender's scan, the transfer
/// and the merge) before the stream counts as stuck: it is dropped, its
/// slot freed, and retried from its cursor.
pub const HANDOFF_BATCH_DEADLINE_MS: u64 = 10_000;

/// How often the handoff worker looks at the layout when nothing wakes it,
/// and how long a failed stream waits before it is retried.
pub const HANDOFF_TICK_MS: u64 = 200;

/// How long after every live member has gossiped the new target a handoff
/// waits before streaming: writes a coordinator placed by the old layout
/// are still in flight for at most a request timeout.
pub const HANDOFF_START_GRACE_MS: u64 = PEER_REQUEST_TIMEOUT_MS;

/// Default hint window (`--hint-window`, seconds): how long after a
/// target's first hint a fallback still keeps new ones (Cassandra's
/// `max_hint_window`, 3 h).
pub const HINT_WINDOW_SECS_DEFAULT: u64 = 3 * 60 * 60;

/// Default cap on the hint bytes one fallback keeps per target
/// (`--hint-max-bytes`): past it, new hints are dropped and counted
/// (Cassandra added such a cap after unbounded growth, CASSANDRA-17142).
pub const HINT_BYTES_MAX_DEFAULT: u64 = 256 << 20;

/// Default hint replay throttle in KiB per second per node sending
/// (`--hint-rate`; Cassandra's `hinted_handoff_throttle`, 1024 KiB/s).
pub const HINT_RATE_KIB_DEFAULT: u64 = 1024;

/// Hints per replay batch (one Replicate request).
pub const HINT_REPLAY_BATCH_KEYS: usize = 256;

/// How often the hint replay looks for targets that are up and hinted.
pub const HINT_REPLAY_TICK_MS: u64 = 500;

/// Write tails (a write's replies after its quorum, which hint the
/// replicas that fail) kept at once; past it a write gets no tail, and
/// `write_tails_dropped` counts it.
pub const WRITE_TAILS_MAX: usize = 4096;

/// Anti-entropy segments per partition (`replica::tree`): Q × this × 8
/// bytes of memory per node (1 MiB at the default Q), and about
/// keys ÷ (Q × this) keys listed per differing segment in an exchange.
pub const AAE_SEGMENTS: usize = 32;

/// Seconds between a node's anti-entropy rounds, by default
/// (`--aae-interval`; 0 turns anti-entropy off).
pub const AAE_INTERVAL_SECS_DEFAULT: u64 = 60;

/// Anti-entropy's throttle by default: KiB per second of records a node
/// sends and fetches in exchanges (`--aae-rate`).
pub const AAE_RATE_KIB_DEFAULT: u64 = 1024;

/// How long an exchange waits before comparing the roots that differed
/// a second time: writes in flight land meanwhile, and a difference they
/// made is not repaired.
pub const AAE_RECHECK_MS: u64 = 1_000;

/// Most keys one exchange repairs: the rest wait for the next round.
pub const AAE_KEYS_PER_EXCHANGE_MAX: usize = 10_000;

/// Most partitions one exchange looks into past their roots.
pub const AAE_PARTITIONS_PER_EXCHANGE_MAX: usize = 256;

/// Most dead records a node's reaping round removes: the rest wait for
/// the next round.
pub const REAP_KEYS_PER_ROUND_MAX: usize = 100_000;
