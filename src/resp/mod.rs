//! The Redis face of the node: framing, connections, the command table and
//! the command handlers. Knows RESP and nothing of peers or storage; every
//! data command goes through the [`crate::coordinator::Coordinator`].
//!
//! From the bottom up (a module uses only those above it in this list):
//! - `frame`: request parsing (multibulk via redis-protocol, inline).
//! - `reply`: replies and their RESP2/RESP3 bytes.
//! - `glob`: Redis's glob patterns (KEYS, SCAN MATCH, CONFIG GET).
//! - `table`: command metadata (arity, flags, keys, docs) as Redis 7 has it.
//! - `registry`: which commands we run, looked up by name.
//! - `stats`: the counters INFO reports (commands, errors, latency).
//! - `pause`: CLIENT PAUSE: which commands wait, until when.
//! - `monitor`: MONITOR: the line for each command run, queued for each
//!   monitoring client, bounded.
//! - `session`: a client's identity and session (database, MULTI, WATCH).
//! - `shared`: what all connections share (config, coordinator, clients).
//! - `handlers`: the commands, grouped as Redis groups them.
//! - `command`: the path every command takes: checks, MULTI, dispatch.
//! - `conn`: one client connection: read, execute in order, write once.
//! - `server`: the listener and its connections.

pub mod command;
pub mod conn;
pub mod frame;
pub mod glob;
mod handlers;
pub mod monitor;
pub mod pause;
pub mod registry;
pub mod reply;
pub mod server;
pub mod session;
pub mod shared;
pub mod stats;
pub mod table;

pub use reply::{Protocol, Reply};
pub use server::{Server, Shared};
