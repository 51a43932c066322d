//! dynokv: a Redis-protocol drop-in server whose data lives in a
//! Dynamo-style cluster of equal nodes.
//!
//! # Layout
//!
//! | module | owns | must not reach into |
//! |---|---|---|
//! | [`config`] | the one typed config: flags, `DYNOKV_*` env, TOML | anything at run time |
//! | [`limits`] | every bound, named, units last | — |
//! | [`clock`] | wall-clock time as a value (tests control it) | — |
//! | [`random`] | random ids and nonces without a dependency | — |
//! | [`db`] | Redis's logical databases as a key prefix below the RESP face; pure | I/O |
//! | [`task`] | the boxed future and the wait for the shutdown signal | — |
//! | [`wire`] | varints and a bounds-checked reader for our binary formats; pure | I/O |
//! | [`version`] | dots, version vectors, DVV sets, the VGET context; pure | I/O, clocks, storage |
//! | [`ring`] | key → partition → preference list (weighted HRW, zones); pure | I/O, membership internals |
//! | [`model`] | the record (DVV set of siblings) and its bytes, liveness, the write ops and their planning; pure | I/O, storage, peers |
//! | [`storage`] | the `Store` trait, fjall and memory stores, fsync policy, whether the store takes writes (its health, probes and recovery after a failed write), the storage threads, the record cache | RESP, quorums |
//! | [`replica`] | this node's copy of the data: read-modify-write of DVV sets under per-key locks, the expiry index and reaper, key counts, record-cache coherence; its async front (`ReplicaService`) | RESP, N/R/W |
//! | [`net`] | the network as a value: listeners and split connections, real TCP or simulated | what flows over it |
//! | [`peer`] | the node-to-node protocol: messages, codec (layout documented), handshake proof, transport | storage, RESP |
//! | [`membership`] | the layout as this node holds it: founding, joining, operator changes saved before they are acknowledged, the gossip that converges it; `failure`, the failure-detection worker over the links' heartbeats; pure cores: `detector` (phi accrual, indirect probe), `layout` (versioned layout, merge, digest, bytes, read/write placement) | placement math, I/O in `detector` and `layout` |
//! | [`coordinator`] | the seam every client data command goes through; the only place that knows N/R/W; the handoff of partitions when the layout changes | RESP, fjall |
//! | [`resp`] | RESP2/RESP3 framing, connections, the command table and handlers | fjall, DVV internals, peers |
//! | [`node`] | wires the parts on an `Environment` (store, network, clock, storage threads), owns the listeners, background workers and shutdown | — |
//!
//! Data flows `resp` → `coordinator` → `replica` → `storage`, and between
//! nodes `coordinator` → `peer` → the other node's `coordinator`; `version`
//! is the algebra all of them share. docs/architecture.md follows a write
//! through them.

pub mod clock;
pub mod config;
pub mod coordinator;
pub mod db;
pub mod limits;
pub mod membership;
pub mod model;
pub mod net;
pub mod node;
pub mod peer;
pub mod random;
pub mod replica;
pub mod resp;
pub mod ring;
pub mod storage;
pub mod task;
pub mod version;
pub mod wire;
