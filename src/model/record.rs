//! The versioned record stored for each key, and its byte format.
//!
//! A record is a [`DvvSet`] whose siblings carry a value or a tombstone, the
//! coordinator's wall-clock time of the write (for last-writer-wins among
//! siblings) and an optional expire-at. Layout, format version 1:
//!
//! ```text
//! byte 0        format version (1)
//! varint        context entries n
//! n times       varint node id, varint counter          (sorted by node id)
//! varint        siblings m
//! m times       varint dot node, varint dot counter     (sorted by dot)
//!               varint timestamp (ms since the Unix epoch)
//!               byte flags: bit 0 tombstone, bit 1 has expire-at (others 0)
//!               [varint expire-at (ms since the Unix epoch)]   if bit 1
//!               [varint value length, value bytes]             unless bit 0
//! ```
//!
//! A later format bumps byte 0 and keeps a decoder for every older one, so a
//! data directory written by an older release stays readable.

use crate::limits::{VALUE_BYTES_MAX, VECTOR_ENTRIES_MAX};
use crate::version::{Dot, DvvSet, Siblings, VectorEntries, VersionVector};
use crate::wire::{DecodeError, Reader, put_varint, varint_len};
use bytes::{BufMut, Bytes};

/// The record format this build writes.
pub const RECORD_FORMAT_V1: u8 = 1;

/// Most siblings a decoded record may hold; far above `siblings_max`, only
/// a guard against corrupt or hostile bytes.
const RECORD_SIBLINGS_MAX: usize = 1 << 16;

const FLAG_TOMBSTONE: u8 = 1;
const FLAG_EXPIRES: u8 = 2;

/// What a sibling holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A value written by SET, VSET and the like.
    Value(Bytes),
    /// A delete (DEL, VDEL): kept so it can supersede older versions.
    Tombstone,
}

/// One version of a key's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sibling {
    /// Value or tombstone.
    pub content: Content,
    /// Coordinator's clock at the write, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// When the value stops being visible, ms since the Unix epoch.
    pub expire_at_ms: Option<u64>,
}

impl Sibling {
    /// A value without expiry.
    pub fn value(value: Bytes, timestamp_ms: u64) -> Self {
        Self {
            content: Content::Value(value),
            timestamp_ms,
            expire_at_ms: None,
        }
    }

    /// A tombstone.
    pub fn tombstone(timestamp_ms: u64) -> Self {
        Self {
            content: Content::Tombstone,
            timestamp_ms,
            expire_at_ms: None,
        }
    }

    /// The value, if this sibling holds one that has not expired at `now_ms`.
    pub fn live_value(&self, now_ms: u64) -> Option<&Bytes> {
        match &self.content {
            Content::Value(v) if self.expire_at_ms.is_none_or(|at| at > now_ms) => Some(v),
            _ => None,
        }
    }
}

/// A key's versioned state as stored and replicated.
pub type Record = DvvSet<Sibling>;

/// The order "last writer wins" uses among siblings: timestamp, then dot.
pub fn lww_order(dot: &Dot, sibling: &Sibling) -> (u64, Dot) {
    (sibling.timestamp_ms, *dot)
}

/// The value plain GET returns: the live sibling with the greatest
/// (timestamp, dot), if that sibling is a live value (docs/semantics.md, "Versions").
pub fn winner_value(record: &Record, now_ms: u64) -> Option<&Bytes> {
    let (_, sibling) = record.winner(lww_order)?;
    sibling.live_value(now_ms)
}

/// Whether any sibling holds a value visible at `now_ms`.
pub fn is_live(record: &Record, now_ms: u64) -> bool {
    record
        .siblings()
        .iter()
        .any(|(_, s)| s.live_value(now_ms).is_some())
}

/// Encodes a record in the current format.
pub fn encode_record(record: &Record) -> Vec<u8> {
    // Exactly as long as needed, so the bytes can become a `Bytes`
    // without another allocation.
    let mut out = Vec::with_capacity(encoded_len(record));
    encode_record_into(record, &mut out);
    out
}

/// Appends a record in the current format to `out`.
pub fn encode_record_into(record: &Record, out: &mut impl BufMut) {
    out.put_u8(RECORD_FORMAT_V1);
    let context = record.context().entries();
    put_varint(out, context.len() as u64);
    for &(node, counter) in context {
        put_varint(out, node);
        put_varint(out, counter);
    }
    put_varint(out, record.siblings().len() as u64);
    for (dot, sibling) in record.siblings() {
        put_varint(out, dot.node);
        put_varint(out, dot.counter);
        put_varint(out, sibling.timestamp_ms);
        let mut flags = 0;
        if matches!(sibling.content, Content::Tombstone) {
            flags |= FLAG_TOMBSTONE;
        }
        if sibling.expire_at_ms.is_some() {
            flags |= FLAG_EXPIRES;
        }
        out.put_u8(flags);
        if let Some(at) = sibling.expire_at_ms {
            put_varint(out, at);
        }
        if let Content::Value(value) = &sibling.content {
            put_varint(out, value.len() as u64);
            out.put_slice(value);
        }
    }
}

/// The length of [`encode_record`]'s bytes for `record`.
pub fn encoded_len(record: &Record) -> usize {
    let context = record.context().entries();
    let mut len = 1 + varint_len(context.len() as u64);
    for &(node, counter) in context {
        len += varint_len(node) + varint_len(counter);
    }
    len += varint_len(record.siblings().len() as u64);
    for (dot, sibling) in record.siblings() {
        len += varint_len(dot.node) + varint_len(dot.counter) + varint_len(sibling.timestamp_ms);
        len += 1 + sibling.expire_at_ms.map_or(0, varint_len);
        if let Content::Value(value) = &sibling.content {
            len += varint_len(value.len() as u64) + value.len();
        }
    }
    len
}

/// Decodes a record written by this or an older release.
///
/// # Errors
/// [`DecodeError`] for bytes no release wrote; the caller treats that as
/// corruption.
pub fn decode_record(bytes: &[u8]) -> Result<Record, DecodeError> {
    decode_with(bytes, Bytes::copy_from_slice)
}

/// [`decode_record`] for bytes already shared: the values are slices of
/// `bytes`, not copies.
///
/// # Errors
/// As [`decode_record`].
pub fn decode_record_shared(bytes: &Bytes) -> Result<Record, DecodeError> {
    decode_with(bytes, |value| bytes.slice_ref(value))
}

fn decode_with(bytes: &[u8], value: impl Fn(&[u8]) -> Bytes) -> Result<Record, DecodeError> {
    let mut reader = Reader::new(bytes);
    match reader.u8()? {
        RECORD_FORMAT_V1 => {}
        found => return Err(DecodeError::UnknownVersion { found }),
    }
    let entries = reader.count("context entry", VECTOR_ENTRIES_MAX)?;
    let mut context = VectorEntries::with_capacity(entries);
    for _ in 0..entries {
        context.push((reader.varint()?, reader.varint()?));
    }
    let count = reader.count("sibling", RECORD_SIBLINGS_MAX)?;
    let mut siblings = Siblings::with_capacity(count.min(64));
    for _ in 0..count {
        let dot = Dot {
            node: reader.varint()?,
            counter: reader.varint()?,
        };
        let timestamp_ms = reader.varint()?;
        let flags = reader.u8()?;
        if flags & !(FLAG_TOMBSTONE | FLAG_EXPIRES) != 0 {
            return Err(DecodeError::Malformed {
                what: "sibling flags",
            });
        }
        let expire_at_ms = if flags & FLAG_EXPIRES != 0 {
            Some(reader.varint()?)
        } else {
            None
        };
        let content = if flags & FLAG_TOMBSTONE != 0 {
            Content::Tombstone
        } else {
            let len = reader.count("value byte", VALUE_BYTES_MAX)?;
            Content::Value(value(reader.bytes(len)?))
        };
        siblings.push((
            dot,
            Sibling {
                content,
                timestamp_ms,
                expire_at_ms,
            },
        ));
    }
    reader.finish()?;
    // Written sorted and without zeros; anything else is normalised.
    let context = VersionVector::from_sorted(context).unwrap_or_else(VersionVector::from_entries);
    DvvSet::from_parts(context, siblings).ok_or(DecodeError::Malformed { what: "record" })
}

/// The record the golden tests pin (here and in the peer codec): two
/// siblings, one expiring value and one tombstone.
#[cfg(test)]
pub(crate) fn sample() -> Record {
    let mut record = Record::new();
    let mut first = Sibling::value(Bytes::from_static(b"hi"), 1000);
    first.expire_at_ms = Some(5000);
    record.update(&VersionVector::new(), 7, first);
    record.update(&VersionVector::new(), 9, Sibling::tombstone(1001));
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_record_bytes() {
        let bytes = encode_record(&sample());
        #[rustfmt::skip]
        let golden: &[u8] = &[
            1,                      // format version
            2, 7, 1, 9, 1,          // context {7:1, 9:1}
            2,                      // two siblings
            7, 1, 0xe8, 0x07, 2, 0x88, 0x27, 2, b'h', b'i', // (7,1) ts 1000, expires 5000, "hi"
            9, 1, 0xe9, 0x07, 1,    // (9,1) ts 1001, tombstone
        ];
        assert_eq!(bytes, golden);
        assert_eq!(decode_record(golden), Ok(sample()));
    }

    #[test]
    fn an_unsorted_context_is_read_as_its_sorted_form() {
        #[rustfmt::skip]
        let unsorted: &[u8] = &[1, 3, 9, 1, 7, 1, 8, 0, 0];
        let record = decode_record(unsorted).expect("decode");
        assert_eq!(record.context().entries(), &[(7, 1), (9, 1)]);
    }

    #[test]
    fn a_record_of_four_writers_and_one_sibling_is_held_inline() {
        let mut record = Record::new();
        for node in 1..=4 {
            let context = record.context().clone();
            record.update(
                &context,
                node,
                Sibling::value(Bytes::from_static(b"v"), node),
            );
        }
        let bytes = Bytes::from(encode_record(&record));
        let decoded = decode_record_shared(&bytes).expect("decode");
        assert_eq!(decoded, record);
        assert!(decoded.is_inline());
        // Two siblings do take the heap, and still decode.
        record.update(&VersionVector::new(), 1, Sibling::tombstone(9));
        let decoded = decode_record_shared(&Bytes::from(encode_record(&record))).expect("decode");
        assert_eq!(decoded, record);
        assert!(!decoded.is_inline());
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(
            decode_record(&[2]),
            Err(DecodeError::UnknownVersion { found: 2 })
        );
        // a sibling whose dot the context does not cover
        assert_eq!(
            decode_record(&[1, 0, 1, 7, 1, 0, 1]),
            Err(DecodeError::Malformed { what: "record" })
        );
        let mut bytes = encode_record(&sample());
        bytes.push(0);
        assert_eq!(
            decode_record(&bytes),
            Err(DecodeError::Trailing { extra: 1 })
        );
    }

    #[test]
    fn winner_is_greatest_timestamp_then_dot() {
        let record = sample();
        // the tombstone is newer, so GET sees nothing
        assert_eq!(winner_value(&record, 0), None);
        assert!(is_live(&record, 4999));
        assert!(!is_live(&record, 5000));
    }

    proptest::proptest! {
        #[test]
        fn garbage_records_never_panic(bytes: Vec<u8>) {
            let _ = decode_record(&bytes);
        }
    }
}
