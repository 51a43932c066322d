//! Replies and their RESP2/RESP3 encodings. The one place that knows how a
//! reply looks on the wire; handlers build [`Reply`] values.

use bytes::{BufMut, Bytes, BytesMut};

/// The protocol a connection speaks (HELLO switches it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2, the default.
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

/// One reply, independent of protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`
    Simple(&'static str),
    /// A simple string built at run time (e.g. TYPE's answer).
    Status(String),
    /// `-ERR ...`: the full text, prefix included (`ERR`, `NOAUTH`, ...).
    Error(String),
    /// `:n`
    Integer(i64),
    /// `$n` bulk.
    Bulk(Bytes),
    /// The null bulk (`$-1` / `_`).
    Nil,
    /// The null array (`*-1` / `_`), e.g. EXEC after a failed WATCH.
    NilArray,
    /// `*n`
    Array(Vec<Reply>),
    /// A map: `%n` under RESP3, a flat array under RESP2.
    Map(Vec<(Reply, Reply)>),
    /// A set: `~n` under RESP3, an array under RESP2.
    Set(Vec<Reply>),
    /// A double: `,x` under RESP3, a bulk string under RESP2.
    Double(f64),
    /// Verbatim text (`=n` under RESP3 with `txt:`), a bulk under RESP2.
    Verbatim(String),
    /// Already-encoded bytes, sent as they are (for rare exact replies).
    Raw(Bytes),
}

impl Reply {
    /// `+OK`.
    pub const OK: Reply = Reply::Simple("OK");

    /// An error reply with the given full text.
    pub fn error(text: impl Into<String>) -> Self {
        Reply::Error(text.into())
    }

    /// A bulk reply copied from a string.
    pub fn bulk(text: impl AsRef<[u8]>) -> Self {
        Reply::Bulk(Bytes::copy_from_slice(text.as_ref()))
    }

    /// Whether this reply is an error.
    pub fn is_error(&self) -> bool {
        match self {
            Reply::Error(_) => true,
            Reply::Raw(raw) => raw.first() == Some(&b'-'),
            _ => false,
        }
    }

    /// Appends the encoding of this reply under `protocol` to `out`.
    pub fn encode(&self, protocol: Protocol, out: &mut BytesMut) {
        let resp3 = protocol == Protocol::Resp3;
        match self {
            Reply::Simple(s) => line(out, b'+', s.as_bytes()),
            Reply::Status(s) => line(out, b'+', s.as_bytes()),
            Reply::Error(s) => line(out, b'-', s.as_bytes()),
            Reply::Integer(n) => line(out, b':', itoa(*n).as_bytes()),
            Reply::Bulk(b) => bulk(out, b'$', b),
            Reply::Nil if resp3 => out.put_slice(b"_\r\n"),
            Reply::Nil => out.put_slice(b"$-1\r\n"),
            Reply::NilArray if resp3 => out.put_slice(b"_\r\n"),
            Reply::NilArray => out.put_slice(b"*-1\r\n"),
            Reply::Array(items) => {
                line(out, b'*', itoa(items.len() as i64).as_bytes());
                for item in items {
                    item.encode(protocol, out);
                }
            }
            Reply::Map(pairs) => {
                let (marker, len) = if resp3 {
                    (b'%', pairs.len())
                } else {
                    (b'*', pairs.len() * 2)
                };
                line(out, marker, itoa(len as i64).as_bytes());
                for (k, v) in pairs {
                    k.encode(protocol, out);
                    v.encode(protocol, out);
                }
            }
            Reply::Set(items) => {
                line(
                    out,
                    if resp3 { b'~' } else { b'*' },
                    itoa(items.len() as i64).as_bytes(),
                );
                for item in items {
                    item.encode(protocol, out);
                }
            }
            Reply::Double(x) => {
                let text = format_double(*x);
                if resp3 {
                    line(out, b',', text.as_bytes());
                } else {
                    bulk(out, b'$', text.as_bytes());
                }
            }
            Reply::Verbatim(text) => {
                if resp3 {
                    let mut body = Vec::with_capacity(text.len() + 4);
                    body.extend_from_slice(b"txt:");
                    body.extend_from_slice(text.as_bytes());
                    bulk(out, b'=', &body);
                } else {
                    bulk(out, b'$', text.as_bytes());
                }
            }
            Reply::Raw(bytes) => out.put_slice(bytes),
        }
    }
}

fn line(out: &mut BytesMut, marker: u8, body: &[u8]) {
    out.reserve(body.len() + 3);
    out.put_u8(marker);
    out.put_slice(body);
    out.put_slice(b"\r\n");
}

fn bulk(out: &mut BytesMut, marker: u8, body: &[u8]) {
    line(out, marker, itoa(body.len() as i64).as_bytes());
    out.put_slice(body);
    out.put_slice(b"\r\n");
}

fn itoa(n: i64) -> String {
    n.to_string()
}

/// Formats a double the way Redis 7 does (`%.17g`, with `inf`/`-inf`/`nan`).
pub fn format_double(x: f64) -> String {
    if x.is_nan() {
        "nan".to_owned()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else if x == x.trunc() && x.abs() < 1e17 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// An argument as C's `%.*s` prints it (Redis's error formats): at most
/// `max` bytes, stopping at the first NUL.
pub fn c_str(arg: &[u8], max: usize) -> &[u8] {
    let end = arg.iter().position(|&b| b == 0).unwrap_or(arg.len());
    &arg[..end.min(max)]
}

/// An error reply built from client bytes, as Redis's `addReplyErrorFormat`
/// sends it: CR and LF become spaces, other bytes go out as they are (a
/// raw reply when they are not UTF-8).
pub fn error_from_bytes(mut text: Vec<u8>) -> Reply {
    for b in &mut text {
        if *b == b'\r' || *b == b'\n' {
            *b = b' ';
        }
    }
    match String::from_utf8(text) {
        Ok(text) => Reply::Error(text),
        Err(e) => {
            let mut raw = Vec::with_capacity(e.as_bytes().len() + 3);
            raw.push(b'-');
            raw.extend_from_slice(e.as_bytes());
            raw.extend_from_slice(b"\r\n");
            Reply::Raw(raw.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(reply: &Reply, protocol: Protocol) -> Vec<u8> {
        let mut out = BytesMut::new();
        reply.encode(protocol, &mut out);
        out.to_vec()
    }

    #[test]
    fn encodes_both_protocols() {
        let map = Reply::Map(vec![(Reply::bulk("a"), Reply::Integer(1))]);
        assert_eq!(enc(&map, Protocol::Resp2), b"*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(&map, Protocol::Resp3), b"%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(&Reply::Nil, Protocol::Resp2), b"$-1\r\n");
        assert_eq!(enc(&Reply::Nil, Protocol::Resp3), b"_\r\n");
        assert_eq!(enc(&Reply::NilArray, Protocol::Resp2), b"*-1\r\n");
        assert_eq!(enc(&Reply::error("ERR x"), Protocol::Resp3), b"-ERR x\r\n");
        assert_eq!(enc(&Reply::Double(1.5), Protocol::Resp3), b",1.5\r\n");
        assert_eq!(
            enc(&Reply::Verbatim("hi".into()), Protocol::Resp3),
            b"=6\r\ntxt:hi\r\n"
        );
    }
}
