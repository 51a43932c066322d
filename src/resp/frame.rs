//! Request framing: RESP multibulk arrays (decoded by the redis-protocol
//! crate) and inline commands (our own parser; redis-protocol has none).
//!
//! redis-protocol decodes any RESP value, nested to any depth, and waits
//! for however many bytes a header announces. A server must not, so a
//! small scanner walks the headers first: it enforces our limits, answers
//! malformed input with Redis's exact protocol errors, and remembers how
//! far it got, so a large request arriving in pieces is scanned once.
//! Only a complete, checked request reaches redis-protocol.

use crate::limits::{ARRAY_LEN_MAX, BULK_RESERVE_STEP_BYTES, INLINE_BYTES_MAX};
use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;

pub use crate::wire::parse_i64;

/// Longest bulk an unauthenticated client may send (Redis's rule: only a
/// small AUTH fits before a password is given).
const UNAUTHENTICATED_BULK_BYTES_MAX: usize = 16 * 1024;
/// Most arguments an unauthenticated client may send in one request.
const UNAUTHENTICATED_ARRAY_LEN_MAX: usize = 10;

/// What the parser found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A command: name and arguments.
    Command(Vec<Bytes>),
    /// More bytes are needed.
    Incomplete,
    /// The stream is broken: reply with this error (`ERR Protocol error: ...`
    /// text without the leading `-`) and close the connection.
    Error(String),
}

/// Parses requests from a connection's read buffer.
#[derive(Debug)]
pub struct RequestParser {
    bulk_bytes_max: usize,
    /// Progress through a multibulk request not fully received yet.
    partial: Option<Partial>,
}

#[derive(Debug, Clone, Copy)]
struct Partial {
    /// Elements announced.
    count: usize,
    /// Elements whose header and body were checked and are present.
    done: usize,
    /// Offset of the next element's header.
    offset: usize,
}

fn protocol_error(what: &str) -> Parsed {
    Parsed::Error(format!("ERR Protocol error: {what}"))
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| p + from)
}

impl RequestParser {
    /// A parser enforcing `bulk_bytes_max` (`proto-max-bulk-len`).
    pub fn new(bulk_bytes_max: usize) -> Self {
        Self {
            bulk_bytes_max,
            partial: None,
        }
    }

    /// Takes the next complete request off the front of `buf`. Empty
    /// requests (blank inline lines, `*0`, `*-1`) are skipped silently.
    /// `authenticated` applies Redis's tighter limits before AUTH.
    pub fn next(&mut self, buf: &mut BytesMut, authenticated: bool) -> Parsed {
        loop {
            let parsed = match buf.first() {
                None => return Parsed::Incomplete,
                Some(b'*') => self.multibulk(buf, authenticated),
                Some(_) => inline(buf),
            };
            match parsed {
                Parsed::Command(args) if args.is_empty() => continue,
                other => return other,
            }
        }
    }

    fn multibulk(&mut self, buf: &mut BytesMut, authenticated: bool) -> Parsed {
        let mut state = match self.partial {
            Some(state) => state,
            None => {
                let Some(end) = find_crlf(buf, 1) else {
                    return if buf.len() > INLINE_BYTES_MAX {
                        protocol_error("too big mbulk count string")
                    } else {
                        Parsed::Incomplete
                    };
                };
                let count = match parse_i64(&buf[1..end]) {
                    Some(n) if n > ARRAY_LEN_MAX as i64 => {
                        return protocol_error("invalid multibulk length");
                    }
                    Some(n) if n > UNAUTHENTICATED_ARRAY_LEN_MAX as i64 && !authenticated => {
                        return protocol_error("unauthenticated multibulk length");
                    }
                    Some(n) if n <= 0 => {
                        let _ = buf.split_to(end + 2);
                        return Parsed::Command(Vec::new());
                    }
                    Some(n) => n as usize,
                    None => return protocol_error("invalid multibulk length"),
                };
                Partial {
                    count,
                    done: 0,
                    offset: end + 2,
                }
            }
        };
        while state.done < state.count {
            let Some(end) = find_crlf(buf, state.offset) else {
                self.partial = Some(state);
                return if buf.len() - state.offset > INLINE_BYTES_MAX {
                    protocol_error("too big bulk count string")
                } else {
                    Parsed::Incomplete
                };
            };
            match buf[state.offset] {
                b'$' => {}
                other => {
                    return protocol_error(&format!("expected '$', got '{}'", char::from(other)));
                }
            }
            let len = match parse_i64(&buf[state.offset + 1..end]) {
                Some(n) if n < 0 || n as u64 > self.bulk_bytes_max as u64 => {
                    return protocol_error("invalid bulk length");
                }
                Some(n) if n as u64 > UNAUTHENTICATED_BULK_BYTES_MAX as u64 && !authenticated => {
                    return protocol_error("unauthenticated bulk length");
                }
                Some(n) => n as usize,
                None => return protocol_error("invalid bulk length"),
            };
            let body_end = end + 2 + len;
            if buf.len() < body_end + 2 {
                // Grow toward a large bulk in bounded steps as it arrives,
                // not on the announcement alone: a client that announces
                // 512 MiB and sends nothing must not cost 512 MiB.
                buf.reserve((body_end + 2 - buf.len()).min(BULK_RESERVE_STEP_BYTES));
                self.partial = Some(state);
                return Parsed::Incomplete;
            }
            if &buf[body_end..body_end + 2] != b"\r\n" {
                // Redis skips the two bytes after a bulk unchecked; we
                // refuse instead (stricter, deliberate): a client whose
                // bulk is not followed by CRLF lied about its length and
                // is out of sync.
                return protocol_error("invalid bulk length");
            }
            state.done += 1;
            state.offset = body_end + 2;
        }
        self.partial = None;
        self.decode_checked(buf, state.offset)
    }

    /// Hands a request the scanner has fully checked to redis-protocol.
    fn decode_checked(&self, buf: &mut BytesMut, len: usize) -> Parsed {
        match decode_bytes_mut(buf) {
            Ok(Some((BytesFrame::Array(frames), used, _))) if used == len => {
                let mut args = Vec::with_capacity(frames.len());
                for frame in frames {
                    match frame {
                        BytesFrame::BulkString(bytes) => args.push(bytes),
                        _ => return protocol_error("expected bulk string"),
                    }
                }
                Parsed::Command(args)
            }
            // The scanner accepted exactly what redis-protocol accepts for
            // arrays of bulk strings; anything else is a bug in one of them.
            other => {
                debug_assert!(false, "scanner and decoder disagree: {other:?}");
                protocol_error("malformed request")
            }
        }
    }
}

/// Parses one inline command line (`PING\r\n`, `SET "a b" c\n`).
fn inline(buf: &mut BytesMut) -> Parsed {
    // Redis finds the line end with strchr, which stops at a NUL byte: a
    // NUL before the newline leaves the request incomplete until the
    // buffer passes the inline limit.
    let Some(newline) = buf
        .iter()
        .take_while(|&&b| b != 0)
        .position(|&b| b == b'\n')
    else {
        return if buf.len() > INLINE_BYTES_MAX {
            protocol_error("too big inline request")
        } else {
            Parsed::Incomplete
        };
    };
    let line = buf.split_to(newline + 1);
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match split_args(line) {
        Some(args) => Parsed::Command(args),
        None => protocol_error("unbalanced quotes in request"),
    }
}

/// Splits a line into arguments as Redis's `sdssplitargs` does: spaces
/// separate; "double quotes" take \n \r \t \b \a \\ \" and \xHH escapes;
/// 'single quotes' take \'; a closing quote must end the argument.
/// Returns `None` for unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    // sdssplitargs works on a C string: a NUL ends the line. (Without this
    // an unquoted NUL would end an empty argument without advancing.)
    let line = &line[..line.iter().position(|&b| b == 0).unwrap_or(line.len())];
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            return Some(args);
        }
        let mut arg = Vec::new();
        let (mut in_double, mut in_single) = (false, false);
        loop {
            let c = line.get(i).copied();
            if in_double {
                match c {
                    None => return None,
                    Some(b'\\')
                        if line.get(i + 1) == Some(&b'x') && hex_pair(line, i + 2).is_some() =>
                    {
                        arg.push(hex_pair(line, i + 2)?);
                        i += 3;
                    }
                    Some(b'\\') if i + 1 < line.len() => {
                        i += 1;
                        arg.push(match line[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            other => other,
                        });
                    }
                    Some(b'"') => {
                        // The closing quote must be followed by a space or the end.
                        if line.get(i + 1).is_some_and(|n| !n.is_ascii_whitespace()) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => arg.push(other),
                }
            } else if in_single {
                match c {
                    None => return None,
                    Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                        i += 1;
                        arg.push(b'\'');
                    }
                    Some(b'\'') => {
                        if line.get(i + 1).is_some_and(|n| !n.is_ascii_whitespace()) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => arg.push(other),
                }
            } else {
                match c {
                    None => break,
                    Some(b' ' | b'\n' | b'\r' | b'\t' | 0) => break,
                    Some(b'"') => in_double = true,
                    Some(b'\'') => in_single = true,
                    Some(other) => arg.push(other),
                }
            }
            i += 1;
        }
        args.push(Bytes::from(arg));
    }
}

fn hex_pair(line: &[u8], at: usize) -> Option<u8> {
    let hi = char::from(*line.get(at)?).to_digit(16)?;
    let lo = char::from(*line.get(at + 1)?).to_digit(16)?;
    Some((hi * 16 + lo) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Vec<Parsed> {
        let mut buf = BytesMut::from(input);
        let mut parser = RequestParser::new(1024);
        let mut out = Vec::new();
        loop {
            match parser.next(&mut buf, true) {
                Parsed::Incomplete => return out,
                e @ Parsed::Error(_) => {
                    out.push(e);
                    return out;
                }
                cmd => out.push(cmd),
            }
        }
    }

    fn cmd(args: &[&str]) -> Parsed {
        Parsed::Command(
            args.iter()
                .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                .collect(),
        )
    }

    #[test]
    fn inline_commands() {
        assert_eq!(parse_all(b"PING\r\n"), vec![cmd(&["PING"])]);
        assert_eq!(parse_all(b"\r\n\r\nPING\n"), vec![cmd(&["PING"])]);
        assert_eq!(
            parse_all(b"SET \"a b\" 'c d'\r\n"),
            vec![cmd(&["SET", "a b", "c d"])]
        );
        assert_eq!(
            parse_all(b"SET k \"x\\ny\\x41\\\"\"\r\n"),
            vec![cmd(&["SET", "k", "x\nyA\""])]
        );
        assert_eq!(parse_all(b"ECHO 'it\\'s'\n"), vec![cmd(&["ECHO", "it's"])]);
        assert_eq!(parse_all(b"ECHO \"\"\n"), vec![cmd(&["ECHO", ""])]);
        assert_eq!(
            parse_all(b"SET \"a\"b c\r\n"),
            vec![Parsed::Error(
                "ERR Protocol error: unbalanced quotes in request".into()
            )]
        );
        assert_eq!(
            parse_all(b"ECHO \"abc\r\n"),
            vec![Parsed::Error(
                "ERR Protocol error: unbalanced quotes in request".into()
            )]
        );
        assert_eq!(parse_all(b"PING"), vec![]);
    }

    #[test]
    fn multibulk_commands() {
        assert_eq!(
            parse_all(b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n"),
            vec![cmd(&["ECHO", ""]), cmd(&["PING"])]
        );
        let err = |t: &str| vec![Parsed::Error(format!("ERR Protocol error: {t}"))];
        assert_eq!(parse_all(b"*x\r\n"), err("invalid multibulk length"));
        assert_eq!(parse_all(b"*1\r\n:1\r\n"), err("expected '$', got ':'"));
        assert_eq!(parse_all(b"*1\r\n$-1\r\n"), err("invalid bulk length"));
        assert_eq!(parse_all(b"*1\r\n$2000\r\n"), err("invalid bulk length"));
        assert_eq!(parse_all(b"*1\r\n$1\r\nab\r\n"), err("invalid bulk length"));
        assert_eq!(
            parse_all(b"*99999999999\r\n"),
            err("invalid multibulk length")
        );
        assert_eq!(
            parse_all(&[b'*'; 70_000]),
            err("too big mbulk count string")
        );
    }

    #[test]
    fn requests_arriving_in_pieces() {
        let whole = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let mut parser = RequestParser::new(1024);
        let mut buf = BytesMut::new();
        for (i, byte) in whole.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            let parsed = parser.next(&mut buf, true);
            if i + 1 < whole.len() {
                assert_eq!(parsed, Parsed::Incomplete, "after {} bytes", i + 1);
            } else {
                assert_eq!(parsed, cmd(&["SET", "k", "hello"]));
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn unauthenticated_limits() {
        let mut parser = RequestParser::new(1 << 20);
        let mut buf = BytesMut::from(&b"*11\r\n"[..]);
        assert_eq!(
            parser.next(&mut buf, false),
            Parsed::Error("ERR Protocol error: unauthenticated multibulk length".into())
        );
    }

    #[test]
    fn integers_like_redis() {
        assert_eq!(parse_i64(b"42"), Some(42));
        assert_eq!(parse_i64(b"-7"), Some(-7));
        for bad in [
            &b""[..],
            b"+1",
            b"01",
            b" 1",
            b"-0",
            b"1.0",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
    }
}
