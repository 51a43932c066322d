//! The causal context VGET hands out and VSET/VDEL take back.
//!
//! Clients treat it as opaque, but it has to survive copy and paste through
//! redis-cli, so it is printable: URL-safe base64 (no padding) of
//!
//! ```text
//! byte 0      format version (1)
//! varint      number of entries n
//! n times     varint node id, varint counter   (sorted by node id, counters > 0)
//! ```
//!
//! The empty string is the empty context (nothing seen).

use super::{NodeId, VersionVector};
use crate::limits::VECTOR_ENTRIES_MAX;
use crate::wire::{DecodeError, Reader, put_varint};
use thiserror::Error;

const CONTEXT_FORMAT_V1: u8 = 1;
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A context string a client sent back that we did not hand out.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ContextError {
    /// Not URL-safe base64.
    #[error("context is not base64url")]
    NotBase64,
    /// Decodes, but not to a context.
    #[error("bad context: {0}")]
    Decode(#[from] DecodeError),
}

/// Encodes a version vector as a context string.
pub fn encode_context(vector: &VersionVector) -> String {
    if vector.is_empty() {
        return String::new();
    }
    let mut raw = vec![CONTEXT_FORMAT_V1];
    put_varint(&mut raw, vector.entries().len() as u64);
    for &(node, counter) in vector.entries() {
        put_varint(&mut raw, node);
        put_varint(&mut raw, counter);
    }
    base64url_encode(&raw)
}

/// Decodes a context string; the empty string is the empty vector.
///
/// # Errors
/// [`ContextError`] for anything [`encode_context`] would not produce.
pub fn decode_context(text: &[u8]) -> Result<VersionVector, ContextError> {
    if text.is_empty() {
        return Ok(VersionVector::new());
    }
    let raw = base64url_decode(text).ok_or(ContextError::NotBase64)?;
    let mut reader = Reader::new(&raw);
    match reader.u8()? {
        CONTEXT_FORMAT_V1 => {}
        found => return Err(DecodeError::UnknownVersion { found }.into()),
    }
    let count = reader.count("context entry", VECTOR_ENTRIES_MAX)?;
    let mut entries: Vec<(NodeId, u64)> = Vec::with_capacity(count);
    for _ in 0..count {
        let node = reader.varint()?;
        let counter = reader.varint()?;
        let ordered = entries.last().is_none_or(|&(last, _)| last < node);
        if counter == 0 || !ordered {
            return Err(DecodeError::Malformed { what: "context" }.into());
        }
        entries.push((node, counter));
    }
    reader.finish()?;
    Ok(VersionVector::from_entries(entries))
}

fn base64url_encode(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len().div_ceil(3) * 4);
    for chunk in raw.chunks(3) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            let index = (bits >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

fn base64url_decode(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut bits = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let value = ALPHABET.iter().position(|&a| a == c)? as u32;
            bits |= value << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((bits >> (16 - 8 * i)) as u8);
        }
    }
    // Reject non-canonical text whose unused low bits are set, so one
    // context has exactly one spelling.
    (base64url_encode(&out).as_bytes() == text).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_context() {
        let vector = VersionVector::from_entries([(1, 3), (300, 1)]);
        // raw: 01 02 01 03 ac02 01
        assert_eq!(encode_context(&vector), "AQIBA6wCAQ");
        assert_eq!(decode_context(b"AQIBA6wCAQ"), Ok(vector));
        assert_eq!(encode_context(&VersionVector::new()), "");
        assert_eq!(decode_context(b""), Ok(VersionVector::new()));
    }

    #[test]
    fn rejects_foreign_contexts() {
        assert_eq!(decode_context(b"not base64!"), Err(ContextError::NotBase64));
        assert_eq!(decode_context(b"AQIBA6wCAR"), Err(ContextError::NotBase64));
        assert!(matches!(
            decode_context(b"AgA"),
            Err(ContextError::Decode(DecodeError::UnknownVersion {
                found: 2
            }))
        ));
        // counter 0 and unsorted nodes are not canonical
        assert!(decode_context(b"AQEBAA").is_err());
    }

    proptest! {
        #[test]
        fn context_round_trips(pairs in proptest::collection::vec((any::<u64>(), 1..u64::MAX), 0..20)) {
            let vector = VersionVector::from_entries(pairs);
            let text = encode_context(&vector);
            prop_assert!(text.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
            prop_assert_eq!(decode_context(text.as_bytes()), Ok(vector));
        }

        #[test]
        fn garbage_contexts_never_panic(text: Vec<u8>) {
            let _ = decode_context(&text);
        }
    }
}
