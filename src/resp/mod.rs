//! The Redis face of the node.
