//! The handshake's proof of the cluster secret.
//!
//! Each side's Hello carries a fresh random nonce. The other side proves it
//! knows the cluster secret by answering with
//! `HMAC-SHA256(secret, nonce ‖ prover id as 8 bytes big-endian)`: binding
//! the prover's id stops a proof being reflected back or replayed under
//! another identity, and the fresh nonce stops it being replayed later. The
//! secret itself never crosses the wire.

use crate::version::NodeId;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Bytes in a proof (one SHA-256 output).
pub const PROOF_BYTES: usize = 32;

fn mac(secret: &[u8], nonce: &[u8; 16], prover: NodeId) -> HmacSha256 {
    // HMAC takes keys of any length (long ones are hashed first), so
    // `new_from_slice` cannot fail for it.
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        unreachable!("HMAC accepts keys of any length")
    };
    mac.update(nonce);
    mac.update(&prover.to_be_bytes());
    mac
}

/// The proof that `prover` knows `secret`, answering the challenge `nonce`.
pub fn proof(secret: &[u8], nonce: &[u8; 16], prover: NodeId) -> [u8; PROOF_BYTES] {
    mac(secret, nonce, prover).finalize().into_bytes().into()
}

/// Whether `proof` is [`proof`]`(secret, nonce, prover)`, compared in
/// constant time. A proof of the wrong length is refused.
pub fn verify(secret: &[u8], nonce: &[u8; 16], prover: NodeId, proof: &[u8]) -> bool {
    mac(secret, nonce, prover).verify_slice(proof).is_ok()
}

/// A fresh challenge for a handshake.
///
/// A fresh challenge for the handshake (see `crate::random`).
pub fn nonce() -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&crate::random::random_u64().to_be_bytes());
    out[8..].copy_from_slice(&crate::random::random_u64().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_rfc4231_case_2() {
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let tag: [u8; 32] = mac.finalize().into_bytes().into();
        #[rustfmt::skip]
        let expected = [
            0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e,
            0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75, 0xc7,
            0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83,
            0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43,
        ];
        assert_eq!(tag, expected);
    }

    #[test]
    fn proof_is_hmac_of_nonce_and_id() {
        let nonce = [7; 16];
        let mut mac = HmacSha256::new_from_slice(b"s3cret").unwrap();
        mac.update(&[7; 16]);
        mac.update(&[0, 0, 0, 0, 0, 0, 0x01, 0x02]);
        let expected: [u8; 32] = mac.finalize().into_bytes().into();
        assert_eq!(proof(b"s3cret", &nonce, 0x0102), expected);
    }

    #[test]
    fn proof_verifies_only_with_everything_right() {
        let nonce = nonce();
        let good = proof(b"s3cret", &nonce, 42);
        assert!(verify(b"s3cret", &nonce, 42, &good));
        assert!(!verify(b"other", &nonce, 42, &good));
        assert!(!verify(b"s3cret", &[0; 16], 42, &good));
        assert!(!verify(b"s3cret", &nonce, 43, &good));
        assert!(!verify(b"s3cret", &nonce, 42, &good[..31]));
        assert!(!verify(b"s3cret", &nonce, 42, &[]));
        let mut flipped = good;
        flipped[31] ^= 1;
        assert!(!verify(b"s3cret", &nonce, 42, &flipped));
    }

    #[test]
    fn nonces_differ() {
        let nonces: std::collections::HashSet<[u8; 16]> = (0..1000).map(|_| nonce()).collect();
        assert_eq!(nonces.len(), 1000);
    }
}
