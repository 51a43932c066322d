//! The node-to-node protocol: messages, their bytes (codec, layout
//! documented there), the handshake's proof of the cluster secret, and
//! the transport (one multiplexed connection per peer pair).

pub mod auth;
pub mod codec;
pub mod message;
pub mod transport;
