//! The Redis face of the node: framing, connections, the command table and
//! the command handlers. Knows RESP and nothing of peers or storage; every
//! data command goes through the [`crate::coordinator::Coordinator`].
//!
//! - `frame`: request parsing (multibulk via redis-protocol, inline).
//! - `reply`: replies and their RESP2/RESP3 bytes.
//! - `table`: command metadata (arity, flags, keys, docs) as Redis 7 has it.
//! - `command`: which commands we run; dispatch from name to handler.
//! - `server`: the listener, shared state, client registry.
//! - `pause`: CLIENT PAUSE: which commands wait, until when.
//! - `monitor`: MONITOR: the line for each command run, queued for each
//!   monitoring client, bounded.
//! - `stats`: the counters INFO reports (commands, errors, latency).
//! - `conn`: one client connection: read, execute in order, write once.
//! - `handlers`: the commands, grouped as Redis groups them.

pub mod command;
pub mod conn;
pub mod frame;
pub mod glob;
mod handlers;
pub mod monitor;
pub mod pause;
pub mod reply;
pub mod server;
pub mod stats;
pub mod table;

pub use reply::{Protocol, Reply};
pub use server::{Server, Shared};
