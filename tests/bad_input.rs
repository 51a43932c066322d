//! Hostile and broken clients over raw TCP against a real `dynokv`
//! process: each gets Redis's protocol error or a clean close, never a
//! crash, while a well-behaved client on the same node keeps working.

// `allow-expect-in-tests` covers `#[test]` bodies only, not the helpers
// here or `#[tokio::test]` bodies; in a test, a failed expect is the
// failure report we want.
#![expect(
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::TestNode;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// How long a raw client waits for any one read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes read back from a misbehaving connection.
const COLLECT_BYTES_MAX: usize = 1 << 20;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

fn line(reader: &mut impl BufRead) -> std::io::Result<String> {
    let mut bytes = Vec::new();
    reader.read_until(b'\n', &mut bytes)?;
    if bytes.is_empty() {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    let text = String::from_utf8_lossy(&bytes);
    match text.strip_suffix("\r\n") {
        Some(text) => Ok(text.to_owned()),
        None => Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("reply line not ended by CRLF: {text:?}"),
        )),
    }
}

fn number(text: &str) -> std::io::Result<i64> {
    text.parse()
        .map_err(|_| std::io::Error::new(ErrorKind::InvalidData, format!("bad number {text:?}")))
}

/// Reads one RESP2 reply.
fn read_reply(reader: &mut impl BufRead) -> std::io::Result<Resp> {
    let header = line(reader)?;
    let (kind, rest) = header.split_at(header.len().min(1));
    Ok(match kind {
        "+" => Resp::Simple(rest.to_owned()),
        "-" => Resp::Error(rest.to_owned()),
        ":" => Resp::Int(number(rest)?),
        "$" => match number(rest)? {
            -1 => Resp::Bulk(None),
            n => {
                let mut body = vec![0; usize::try_from(n).unwrap_or(0) + 2];
                reader.read_exact(&mut body)?;
                body.truncate(body.len() - 2);
                Resp::Bulk(Some(body))
            }
        },
        "*" => match number(rest)? {
            -1 => Resp::Array(None),
            n => Resp::Array(Some(
                (0..n)
                    .map(|_| read_reply(reader))
                    .collect::<Result<_, _>>()?,
            )),
        },
        _ => {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("not a RESP2 reply: {header:?}"),
            ));
        }
    })
}

/// A blocking RESP2 client that sends commands as multibulk arrays.
struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn call(&mut self, args: &[&[u8]]) -> Resp {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg);
            request.extend_from_slice(b"\r\n");
        }
        self.reader
            .get_mut()
            .write_all(&request)
            .expect("well-behaved client write");
        read_reply(&mut self.reader).expect("well-behaved client reply")
    }

    /// A round of commands whose answers are known: SET, GET, a nil GET,
    /// and PING. `round` makes each round's value different.
    fn check(&mut self, round: &str) {
        let value = format!("value-{round}");
        assert_eq!(
            self.call(&[b"SET", b"good", value.as_bytes()]),
            Resp::Simple("OK".into()),
            "round {round}"
        );
        assert_eq!(
            self.call(&[b"GET", b"good"]),
            Resp::Bulk(Some(value.into_bytes())),
            "round {round}"
        );
        assert_eq!(
            self.call(&[b"GET", b"never-written"]),
            Resp::Bulk(None),
            "round {round}"
        );
        assert_eq!(self.call(&[b"PING"]), Resp::Simple("PONG".into()));
    }
}

/// How a misbehaving connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The server closed it (FIN).
    Closed,
    /// The server closed it with our bytes unread (RST).
    Reset,
    /// Still open when we gave up reading.
    Open,
}

/// Sends `bytes` on a fresh connection (write errors are expected once the
/// server gives up on us), optionally half-closes, then reads whatever
/// comes back until the connection ends or [`IO_TIMEOUT`] passes.
fn send_and_collect(addr: SocketAddr, bytes: &[u8], half_close: bool) -> (Vec<u8>, End) {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let _ = stream.write_all(bytes);
    if half_close {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let mut received = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return (received, End::Closed),
            Ok(n) => {
                received.extend_from_slice(&chunk[..n]);
                assert!(
                    received.len() <= COLLECT_BYTES_MAX,
                    "the server sent more than {COLLECT_BYTES_MAX} bytes"
                );
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (received, End::Open);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (received, End::Reset),
        }
    }
}

/// Asserts the connection was closed after at most one reply, which is
/// exactly `-ERR Protocol error: <expected>`; the reply may be lost only
/// when the server had to reset the connection over unread input.
fn assert_protocol_error_and_close(received: &[u8], end: &End, expected: &str) {
    let text = String::from_utf8_lossy(received);
    assert_ne!(*end, End::Open, "connection left open; got {text:?}");
    let wanted = format!("-ERR Protocol error: {expected}\r\n");
    let ok = text == wanted || (received.is_empty() && *end == End::Reset);
    assert!(
        ok,
        "wanted {wanted:?} then close, got {text:?} then {end:?}"
    );
}

/// A fixed-seed xorshift64*: reproducible garbage without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 56) as u8).collect()
    }
}

/// Starts a node, connects the well-behaved client and checks it.
fn node_with_good_client(extra_args: &[&str]) -> (TestNode, Client) {
    let node = TestNode::start(extra_args);
    let mut good = Client::connect(node.addr());
    good.check("before");
    (node, good)
}

/// The well-behaved client still works and the process is alive.
fn assert_node_healthy(node: &mut TestNode, good: &mut Client, round: &str) {
    good.check(round);
    assert!(node.is_running(), "the node process died");
    // A brand-new connection works too.
    let mut fresh = Client::connect(node.addr());
    assert_eq!(fresh.call(&[b"PING"]), Resp::Simple("PONG".into()));
    assert_eq!(
        fresh.call(&[b"GET", b"good"]),
        Resp::Bulk(Some(format!("value-{round}").into_bytes()))
    );
}

#[test]
fn oversized_bulk_length() {
    // Proves a bulk length past proto-max-bulk-len (and past any sane size) is refused with Redis's error and a close, not an allocation.
    let (mut node, mut good) = node_with_good_client(&[]);
    for request in [
        &b"*1\r\n$999999999999\r\n"[..],
        b"*1\r\n$536870913\r\n",
        b"*2\r\n$3\r\nGET\r\n$99999999999999999999999\r\n",
    ] {
        let (received, end) = send_and_collect(node.addr(), request, false);
        assert_protocol_error_and_close(&received, &end, "invalid bulk length");
        good.check("between");
    }
    assert_node_healthy(&mut node, &mut good, "after");
}

#[test]
fn negative_and_malformed_lengths() {
    // Proves negative, signed, non-numeric and lying bulk lengths each get Redis's protocol error and a close.
    let (mut node, mut good) = node_with_good_client(&[]);
    let cases: &[(&[u8], &str)] = &[
        (b"*1\r\n$-5\r\n", "invalid bulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$+4\r\nPING\r\n", "invalid bulk length"),
        (b"*1\r\n$abc\r\n", "invalid bulk length"),
        (b"*1\r\n$\r\n", "invalid bulk length"),
        // The body is longer than announced: the stream is out of step.
        (b"*1\r\n$2\r\nPING\r\n", "invalid bulk length"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*1\r\n:1\r\n", "expected '$', got ':'"),
    ];
    for (request, expected) in cases {
        let (received, end) = send_and_collect(node.addr(), request, false);
        assert_protocol_error_and_close(&received, &end, expected);
    }
    good.check("between");
    // Negative counts are empty requests, skipped as Redis does; the
    // connection stays usable.
    let mut quirky = Client::connect(node.addr());
    quirky
        .reader
        .get_mut()
        .write_all(b"*-5\r\n*0\r\n")
        .expect("write");
    assert_eq!(quirky.call(&[b"PING"]), Resp::Simple("PONG".into()));
    // A top-level `$-5` is an inline command named "$-5": unknown, not fatal.
    quirky
        .reader
        .get_mut()
        .write_all(b"$-5\r\n")
        .expect("write");
    let reply = read_reply(&mut quirky.reader).expect("reply");
    assert!(
        matches!(&reply, Resp::Error(text) if text.starts_with("ERR unknown command '$-5'")),
        "{reply:?}"
    );
    assert_eq!(quirky.call(&[b"PING"]), Resp::Simple("PONG".into()));
    assert_node_healthy(&mut node, &mut good, "after");
}

#[test]
fn random_garbage() {
    // Proves fixed-seed random bytes (inline and multibulk-shaped, 40 connections) only ever get RESP error replies and a close, and the node keeps serving.
    let (mut node, mut good) = node_with_good_client(&[]);
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let (mut errors, mut closed_early) = (0usize, 0usize);
    for round in 0..40 {
        let size = match round % 4 {
            0 => 64,
            1 => 4 * 1024,
            2 => 64 * 1024,
            _ => 256 * 1024,
        };
        let mut garbage = rng.bytes(size);
        if round % 2 == 1 {
            // Shaped like a request, so the multibulk scanner sees it.
            let mut shaped = b"*3\r\n".to_vec();
            if round % 3 == 0 {
                shaped.extend_from_slice(b"$3\r\nSET\r\n$");
            }
            shaped.append(&mut garbage);
            garbage = shaped;
        }
        let (received, end) = send_and_collect(node.addr(), &garbage, true);
        assert_ne!(
            end,
            End::Open,
            "round {round}: connection left open after EOF"
        );
        if end == End::Reset {
            closed_early += 1;
        }
        // Whatever came back is a sequence of complete error replies.
        let mut reader = BufReader::new(&received[..]);
        while !reader.fill_buf().expect("in memory").is_empty() {
            match read_reply(&mut reader) {
                Ok(Resp::Error(_)) => errors += 1,
                Ok(other) => panic!("round {round}: garbage got a non-error reply {other:?}"),
                // Only a reset may cut the last reply short.
                Err(e) => {
                    assert_eq!(end, End::Reset, "round {round}: malformed reply bytes: {e}");
                    break;
                }
            }
        }
        if round % 10 == 9 {
            good.check(&format!("garbage-{round}"));
        }
    }
    println!("random garbage: 40 connections, {errors} error replies, {closed_early} reset");
    assert!(errors > 0, "garbage never produced an error reply");
    assert_node_healthy(&mut node, &mut good, "after");
}

#[test]
fn a_megabyte_of_stars() {
    // Proves a 1 MiB run of '*' (a multibulk count that never ends) is cut off past 64 KiB with Redis's error or a reset, never buffered whole.
    let (mut node, mut good) = node_with_good_client(&[]);
    let stars = vec![b'*'; 1024 * 1024];
    let (received, end) = send_and_collect(node.addr(), &stars, false);
    assert_protocol_error_and_close(&received, &end, "too big mbulk count string");
    // Also a count line that is all digits and never ends.
    let mut digits = b"*".to_vec();
    digits.extend(std::iter::repeat_n(b'7', 100 * 1024));
    let (received, end) = send_and_collect(node.addr(), &digits, false);
    assert_protocol_error_and_close(&received, &end, "too big mbulk count string");
    // And a bulk count line that never ends.
    let mut bulk = b"*1\r\n$".to_vec();
    bulk.extend(std::iter::repeat_n(b'1', 100 * 1024));
    let (received, end) = send_and_collect(node.addr(), &bulk, false);
    assert_protocol_error_and_close(&received, &end, "too big bulk count string");
    assert_node_healthy(&mut node, &mut good, "after");
}

#[test]
fn disconnect_mid_frame() {
    // Proves clients that vanish halfway through a request (mid-header, mid-body, after announcing a 512 MB bulk) leave no trace: nothing is written and the node serves on.
    let (mut node, mut good) = node_with_good_client(&[]);
    let cases: &[&[u8]] = &[
        b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$10\r\nhal",
        b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$1",
        b"*3\r\n$3\r\nSET\r\n$4\r\nha",
        b"*3\r\n",
        b"SET half inline",
        // The largest bulk allowed, announced and never sent.
        b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$536870912\r\nonly a little",
    ];
    for case in cases {
        let mut stream = TcpStream::connect_timeout(&node.addr(), IO_TIMEOUT).expect("connect");
        stream.write_all(case).expect("write half a request");
        drop(stream);
        good.check("between");
    }
    // Several at once, each announcing the largest bulk.
    let streams: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = TcpStream::connect_timeout(&node.addr(), IO_TIMEOUT).expect("connect");
            stream
                .write_all(b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$536870912\r\nxx")
                .expect("write");
            stream
        })
        .collect();
    good.check("during");
    drop(streams);
    assert_eq!(good.call(&[b"GET", b"half"]), Resp::Bulk(None));
    // The server let go of every abandoned connection: only `good` is left.
    let clients =
        common::eventually(
            Duration::from_secs(10),
            Duration::from_millis(20),
            || match good.call(&[b"CLIENT", b"LIST"]) {
                Resp::Bulk(Some(list)) => {
                    let n = String::from_utf8_lossy(&list).lines().count();
                    (n == 1).then_some(n)
                }
                other => panic!("CLIENT LIST replied {other:?}"),
            },
        );
    assert_eq!(clients, Some(1), "abandoned connections were not closed");
    assert_node_healthy(&mut node, &mut good, "after");
}

#[test]
fn unterminated_inline_line() {
    // Proves an inline line that grows past 64 KiB without a newline gets Redis's "too big inline request" and a close.
    let (mut node, mut good) = node_with_good_client(&[]);
    let mut line = b"SET k ".to_vec();
    line.extend(std::iter::repeat_n(b'a', 70 * 1024));
    let (received, end) = send_and_collect(node.addr(), &line, false);
    assert_protocol_error_and_close(&received, &end, "too big inline request");
    // Just under the limit, then a newline: a normal (unknown) command.
    let mut near = Client::connect(node.addr());
    let mut line = b"NOSUCH ".to_vec();
    line.extend(std::iter::repeat_n(b'b', 60 * 1024));
    line.extend_from_slice(b"\r\n");
    near.reader.get_mut().write_all(&line).expect("write");
    let reply = read_reply(&mut near.reader).expect("reply");
    assert!(
        matches!(&reply, Resp::Error(text) if text.starts_with("ERR unknown command 'NOSUCH'")),
        "{reply:?}"
    );
    assert_eq!(near.call(&[b"PING"]), Resp::Simple("PONG".into()));
    assert_node_healthy(&mut node, &mut good, "after");
}

#[test]
fn two_million_element_array() {
    // Proves a multibulk count past the array bound (*2000000) is refused up front with Redis's error and a close.
    let (mut node, mut good) = node_with_good_client(&[]);
    let (received, end) = send_and_collect(node.addr(), b"*2000000\r\n", false);
    assert_protocol_error_and_close(&received, &end, "invalid multibulk length");
    let (received, end) = send_and_collect(node.addr(), b"*99999999999999999999999\r\n", false);
    assert_protocol_error_and_close(&received, &end, "invalid multibulk length");
    assert_node_healthy(&mut node, &mut good, "after");
}

#[test]
fn maxclients_refuses_the_third_connection() {
    // Proves --maxclients 2: a third connection gets "-ERR max number of clients reached" and is closed, and a slot frees when a client leaves.
    let node = TestNode::start(&["--maxclients", "2"]);
    let mut first = Client::connect(node.addr());
    first.check("first");
    let mut second = Client::connect(node.addr());
    assert_eq!(second.call(&[b"PING"]), Resp::Simple("PONG".into()));

    for _ in 0..3 {
        let (received, end) = send_and_collect(node.addr(), b"", false);
        assert_eq!(
            String::from_utf8_lossy(&received),
            "-ERR max number of clients reached\r\n"
        );
        assert_eq!(end, End::Closed);
    }
    // Sending a command does not change the answer.
    let (received, end) = send_and_collect(node.addr(), b"*1\r\n$4\r\nPING\r\n", false);
    assert!(
        received.starts_with(b"-ERR max number of clients reached\r\n"),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    assert_ne!(end, End::Open);
    // The refused connections did not take the admitted ones down.
    first.check("while full");
    assert_eq!(second.call(&[b"PING"]), Resp::Simple("PONG".into()));

    // When one client leaves, a new one gets in (once the server has
    // noticed the close).
    drop(second);
    let admitted = common::eventually(Duration::from_secs(10), Duration::from_millis(20), || {
        let mut stream = TcpStream::connect_timeout(&node.addr(), IO_TIMEOUT).ok()?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
        stream.write_all(b"*1\r\n$4\r\nPING\r\n").ok()?;
        let mut reader = BufReader::new(stream);
        match read_reply(&mut reader).ok()? {
            Resp::Simple(pong) if pong == "PONG" => Some(reader),
            _ => None,
        }
    });
    assert!(admitted.is_some(), "no slot freed after a client left");
    first.check("after");
}
