//! Causality, pure: dots, version vectors and DVV sets (Preguiça et al.,
//! "Dotted Version Vectors"), plus the context encoding VGET hands out.
//!
//! A [`DvvSet`] is the state of one key: the version vector of everything the
//! holder has seen (its *context*) and the live siblings, each tagged with the
//! dot of the write that made it. Sibling values are generic; the storage
//! layer's record fills them with value-or-tombstone and timestamps.
//!
//! Owns no I/O, no clock and no node identity: callers pass them in.

mod context;
mod dvv;
#[cfg(test)]
mod laws;

pub use context::{ContextError, decode_context, encode_context};
pub use dvv::{Dot, DvvSet, NodeId, Siblings, Supersedes, VectorEntries, VersionVector};
