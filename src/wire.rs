//! Small building blocks shared by our binary formats (the record format,
//! the VGET context, later the peer codec): LEB128 varints and a reader that
//! never reads past its input. Pure: no I/O.

use bytes::BufMut;
use thiserror::Error;

/// What can go wrong reading one of our binary formats.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended in the middle of a field.
    #[error("input ends early: needed {needed} more bytes")]
    Truncated {
        /// Bytes missing.
        needed: usize,
    },
    /// A varint ran past ten bytes or past 64 bits.
    #[error("varint overflows 64 bits")]
    VarintOverflow,
    /// The format version byte is one this build does not read.
    #[error("unknown format version {found}")]
    UnknownVersion {
        /// The version byte found.
        found: u8,
    },
    /// A count is larger than the format allows.
    #[error("{what} count {count} exceeds {max}")]
    TooMany {
        /// Which count.
        what: &'static str,
        /// The count found.
        count: u64,
        /// The largest allowed.
        max: u64,
    },
    /// Bytes that do not form a valid value of the format.
    #[error("malformed {what}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
    },
    /// Bytes left over after a complete value.
    #[error("{extra} trailing bytes")]
    Trailing {
        /// How many bytes were left.
        extra: usize,
    },
    /// The bytes do not start with our protocol's magic: the other end
    /// speaks another protocol.
    #[error("bad magic: not the dynokv peer protocol")]
    BadMagic,
    /// A handshake in a peer protocol version this build does not speak.
    #[error("unsupported peer protocol version {found}")]
    UnsupportedProtocol {
        /// The version the other end speaks.
        found: u16,
    },
    /// A tag byte that names no variant.
    #[error("unknown {what} tag {found}")]
    UnknownTag {
        /// Which tag.
        what: &'static str,
        /// The byte found.
        found: u8,
    },
}

/// Appends `value` as an unsigned LEB128 varint (1 to 10 bytes).
pub fn put_varint(out: &mut impl BufMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// How many bytes [`put_varint`] writes for `value`.
pub fn varint_len(value: u64) -> usize {
    (64 - value.max(1).leading_zeros() as usize).div_ceil(7)
}

/// A cursor over an input slice; every read checks the bounds.
#[derive(Debug)]
pub struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading `input` from its first byte.
    pub fn new(input: &'a [u8]) -> Self {
        Self { input }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.input.len()
    }

    /// Reads one byte.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] at the end of the input.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&first, rest) = self
            .input
            .split_first()
            .ok_or(DecodeError::Truncated { needed: 1 })?;
        self.input = rest;
        Ok(first)
    }

    /// Reads an unsigned LEB128 varint.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] or [`DecodeError::VarintOverflow`].
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DecodeError::VarintOverflow);
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::VarintOverflow)
    }

    /// Reads a varint count and checks it against `max`.
    ///
    /// # Errors
    /// As [`Reader::varint`], or [`DecodeError::TooMany`] past `max`.
    pub fn count(&mut self, what: &'static str, max: usize) -> Result<usize, DecodeError> {
        let count = self.varint()?;
        match usize::try_from(count) {
            Ok(n) if n <= max => Ok(n),
            _ => Err(DecodeError::TooMany {
                what,
                count,
                max: max as u64,
            }),
        }
    }

    /// Reads exactly `len` bytes.
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] when fewer remain.
    pub fn bytes(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.input.len() {
            return Err(DecodeError::Truncated {
                needed: len - self.input.len(),
            });
        }
        let (head, rest) = self.input.split_at(len);
        self.input = rest;
        Ok(head)
    }

    /// Succeeds only when the whole input has been read.
    ///
    /// # Errors
    /// [`DecodeError::Trailing`] when bytes are left.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.input.len() {
            0 => Ok(()),
            extra => Err(DecodeError::Trailing { extra }),
        }
    }
}

/// Parses a decimal integer the way Redis's `string2ll` does: optional
/// minus, digits, no leading `+`, no spaces, no leading zeros.
pub fn parse_i64(text: &[u8]) -> Option<i64> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    if digits.is_empty()
        || digits.len() > 20
        || (digits.len() > 1 && digits[0] == b'0')
        || !digits.iter().all(u8::is_ascii_digit)
        || text == b"-0"
    {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_round_trips(value: u64) {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            prop_assert_eq!(out.len(), varint_len(value));
            let mut reader = Reader::new(&out);
            prop_assert_eq!(reader.varint(), Ok(value));
            prop_assert!(reader.finish().is_ok());
        }

        #[test]
        fn garbage_never_panics(input: Vec<u8>) {
            let mut reader = Reader::new(&input);
            while reader.varint().is_ok() {}
        }
    }

    #[test]
    fn varint_golden_bytes() {
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        let eleven = [0xff; 11];
        assert_eq!(
            Reader::new(&eleven).varint(),
            Err(DecodeError::VarintOverflow)
        );
    }
}
