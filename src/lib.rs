//! dynokv: a Redis-protocol drop-in server whose data lives in a
//! Dynamo-style cluster of equal nodes.
//!
//! # Layout
//!
//! | module | owns | must not reach into |
//! |---|---|---|
//! | [`config`] | the one typed config: flags, `DYNOKV_*` env, TOML | anything at run time |
//! | [`limits`] | every bound, named, units last | — |
//! | [`wire`] | varints and a bounds-checked reader for our binary formats; pure | I/O |
//! | [`version`] | dots, version vectors, DVV sets, the VGET context; pure | I/O, clocks, storage |
//! | [`storage`] | the `Store` trait, fjall and memory stores, the record format, fsync policy | RESP, quorums |
//! | [`replica`] | this node's copy of the data: read-modify-write of DVV sets under per-key locks | RESP, N/R/W |
//! | [`coordinator`] | the seam every client data command goes through; the only place that will know N/R/W | RESP |
//! | [`resp`] | RESP2/RESP3 framing, connections, the command table and handlers | fjall, DVV internals |
//! | [`node`] | wires the parts, owns the listener, background workers and shutdown | — |
//!
//! Data flows `resp` → `coordinator` → `replica` → `storage`; `version` is
//! the algebra all of them share.

pub mod clock;
pub mod config;
pub mod coordinator;
pub mod limits;
pub mod membership;
pub mod node;
pub mod peer;
pub mod replica;
pub mod resp;
pub mod ring;
pub mod storage;
pub mod version;
pub mod wire;
