//! The data model every layer shares; pure, no I/O: a key's record (its
//! DVV set of siblings, their values and expiries, and the record's
//! bytes), what makes a value live, and the write ops with how each is
//! planned against a record. The peer protocol carries these, the replica
//! stores them, the coordinator routes them and the RESP face builds
//! them: all import them from here, not from each other.

pub mod ops;
pub mod record;
