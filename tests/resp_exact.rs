//! Byte-exact RESP tests: raw bytes in, exact bytes out, for every command
//! dynokv implements, its happy path and its errors, under RESP2 and RESP3.
//!
//! Each test runs its own real node in process (fjall store in a temporary
//! directory, TCP on a loopback port the OS picks) and talks to it over a
//! raw `TcpStream`. Every expected reply to a Redis command was first taken
//! from Redis 7.0.15 (`redis-server` on loopback, sent the same raw bytes),
//! so the bytes here are Redis's, not a guess. Where dynokv deliberately
//! differs (design.md §2: one database, its own INFO fields, its own
//! commands) the test says so in a comment. Replies that carry run-time
//! values (client ids, addresses, TIME, causal contexts) are checked for
//! their exact framing and their fixed parts.

// The helpers below are test code: a failed expectation is a test failure.
#![allow(clippy::expect_used)]

use dynokv::config::{Config, Settings};
use dynokv::node::{Node, NodeError, ShutdownHandle};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};

/// The longest any single write or reply may take.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection must stay silent to count as "no reply".
const QUIET: Duration = Duration::from_millis(300);
/// How long a node may take to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The password of the nodes started with `requirepass`.
const PASSWORD: &str = "secret";

const WRONGPASS: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";

// ---------------------------------------------------------------------------
// The node and the raw-bytes helpers.

/// One in-process node with its own port and data directory.
struct TestNode {
    addr: SocketAddr,
    stop: ShutdownHandle,
    task: JoinHandle<Result<(), NodeError>>,
    _dir: tempfile::TempDir,
}

async fn start_node() -> TestNode {
    start_node_with(Settings::default()).await
}

/// Starts a node on port 0 (peer port 0) in a fresh temporary directory,
/// with any other settings taken from `settings`.
async fn start_node_with(settings: Settings) -> TestNode {
    let dir = tempfile::tempdir().expect("temporary directory");
    let settings = Settings {
        port: Some(0),
        peer_port: Some(0),
        data_dir: Some(dir.path().into()),
        ..settings
    };
    let config = Config::resolve(settings, None).expect("config resolves");
    let node = Node::start(config).await.expect("node starts");
    let addr = node.local_addr().expect("node address");
    let stop = node.shutdown_handle();
    let task = tokio::spawn(node.run());
    TestNode {
        addr,
        stop,
        task,
        _dir: dir,
    }
}

async fn start_node_with_password() -> TestNode {
    start_node_with(Settings {
        requirepass: Some(PASSWORD.to_owned()),
        ..Settings::default()
    })
    .await
}

impl TestNode {
    async fn connect(&self) -> TcpStream {
        timeout(IO_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .expect("connect timed out")
            .expect("connect")
    }

    /// Stops the node and waits (bounded) for it to drain and flush.
    async fn stop(self) {
        self.stop.shutdown();
        timeout(STOP_TIMEOUT, self.task)
            .await
            .expect("node stops in time")
            .expect("node task does not panic")
            .expect("node stops cleanly");
    }
}

/// `bytes` as a readable string: printable ASCII as is, the rest escaped.
fn escaped(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect()
}

async fn send(stream: &mut TcpStream, request: &[u8]) {
    timeout(IO_TIMEOUT, stream.write_all(request))
        .await
        .expect("write timed out")
        .expect("write");
}

/// Reads exactly `expected.len()` bytes (bounded wait) and compares them.
async fn expect_bytes(stream: &mut TcpStream, expected: &[u8]) {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut got = vec![0; expected.len()];
    let mut filled = 0;
    while filled < got.len() {
        match timeout_at(deadline, stream.read(&mut got[filled..])).await {
            Ok(Ok(0)) => panic!(
                "connection closed early\n  expected: {}\n       got: {}",
                escaped(expected),
                escaped(&got[..filled])
            ),
            Ok(Ok(n)) => filled += n,
            Ok(Err(e)) => panic!(
                "read failed ({e})\n  expected: {}\n       got: {}",
                escaped(expected),
                escaped(&got[..filled])
            ),
            Err(_) => panic!(
                "no complete reply within {IO_TIMEOUT:?}\n  expected: {}\n       got: {}",
                escaped(expected),
                escaped(&got[..filled])
            ),
        }
    }
    assert!(
        got == expected,
        "reply differs\n  expected: {}\n       got: {}",
        escaped(expected),
        escaped(&got)
    );
}

/// Writes `request` and asserts the next bytes are exactly `expected`.
async fn roundtrip(stream: &mut TcpStream, request: &[u8], expected: &[u8]) {
    send(stream, request).await;
    expect_bytes(stream, expected).await;
}

/// Asserts the server closes the connection (read gives EOF, or a reset
/// when the server closed with our bytes unread) within the timeout.
async fn assert_closed(stream: &mut TcpStream) {
    let mut buf = [0; 512];
    match timeout(IO_TIMEOUT, stream.read(&mut buf)).await {
        Ok(Ok(0)) => {}
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionReset => {}
        Ok(Ok(n)) => panic!(
            "expected the server to close the connection; it sent {}",
            escaped(&buf[..n])
        ),
        Ok(Err(e)) => panic!("expected a clean close; read failed: {e}"),
        Err(_) => panic!("connection still open after {IO_TIMEOUT:?}"),
    }
}

/// Asserts the server neither replies nor closes for [`QUIET`].
async fn assert_quiet(stream: &mut TcpStream) {
    let mut buf = [0; 512];
    match timeout(QUIET, stream.read(&mut buf)).await {
        Err(_) => {}
        Ok(Ok(0)) => panic!("expected no reply; the server closed the connection"),
        Ok(Ok(n)) => panic!("expected no reply; got {}", escaped(&buf[..n])),
        Ok(Err(e)) => panic!("expected no reply; read failed: {e}"),
    }
}

async fn read_byte(stream: &mut TcpStream, out: &mut Vec<u8>) -> u8 {
    let byte = stream.read_u8().await.unwrap_or_else(|e| {
        panic!("reply cut short ({e}) after {}", escaped(out));
    });
    out.push(byte);
    byte
}

/// Reads one line up to CRLF into `out`; returns it without the CRLF.
async fn read_line(stream: &mut TcpStream, out: &mut Vec<u8>) -> Vec<u8> {
    let start = out.len();
    while !out[start..].ends_with(b"\r\n") {
        read_byte(stream, out).await;
    }
    out[start..out.len() - 2].to_vec()
}

fn parse_number(text: &[u8]) -> i64 {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not a number: {}", escaped(text)))
}

/// Reads one complete RESP2/RESP3 reply and returns its raw bytes.
async fn read_reply(stream: &mut TcpStream) -> Vec<u8> {
    let read = async {
        let mut out = Vec::new();
        let mut pending: i64 = 1;
        while pending > 0 {
            pending -= 1;
            let line = read_line(stream, &mut out).await;
            let (kind, rest) = line.split_first().expect("empty reply line");
            match kind {
                b'$' | b'=' | b'!' => {
                    let len = parse_number(rest);
                    for _ in 0..(len + 2).max(0) {
                        if len >= 0 {
                            read_byte(stream, &mut out).await;
                        }
                    }
                }
                b'*' | b'~' | b'>' => pending += parse_number(rest).max(0),
                b'%' | b'|' => pending += 2 * parse_number(rest).max(0),
                _ => {}
            }
        }
        out
    };
    timeout(IO_TIMEOUT, read)
        .await
        .expect("no complete reply in time")
}

/// Writes `request` and returns the raw bytes of the one reply.
async fn request(stream: &mut TcpStream, request: &[u8]) -> Vec<u8> {
    send(stream, request).await;
    read_reply(stream).await
}

/// The body of a `$n` bulk or `=n` verbatim reply (the `txt:` kept).
fn bulk_body(reply: &[u8]) -> &[u8] {
    let header_end = reply
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("bulk header");
    assert!(
        matches!(reply[0], b'$' | b'='),
        "not a bulk: {}",
        escaped(reply)
    );
    let len = parse_number(&reply[1..header_end]) as usize;
    let body = &reply[header_end + 2..];
    assert_eq!(
        body.len(),
        len + 2,
        "bulk length vs body: {}",
        escaped(reply)
    );
    assert!(body.ends_with(b"\r\n"), "bulk ends with CRLF");
    &body[..len]
}

/// The elements of a flat array of bulk strings (`*n` then `$` items).
fn bulk_items(reply: &[u8]) -> Vec<Vec<u8>> {
    let mut lines = reply.split(|&b| b == b'\n');
    let header = lines.next().expect("array header");
    assert_eq!(header[0], b'*', "not an array: {}", escaped(reply));
    let count = parse_number(&header[1..header.len() - 1]);
    let mut items = Vec::new();
    let mut rest = &reply[header.len() + 1..];
    for _ in 0..count {
        let line_end = rest.iter().position(|&b| b == b'\n').expect("item");
        let len = parse_number(&rest[1..line_end - 1]) as usize;
        items.push(rest[line_end + 1..line_end + 1 + len].to_vec());
        rest = &rest[line_end + 1 + len + 2..];
    }
    assert!(rest.is_empty(), "trailing bytes in {}", escaped(reply));
    items
}

/// CLIENT ID of this connection.
async fn client_id(stream: &mut TcpStream) -> i64 {
    let reply = request(stream, b"CLIENT ID\r\n").await;
    assert!(
        reply.starts_with(b":") && reply.ends_with(b"\r\n"),
        "{}",
        escaped(&reply)
    );
    parse_number(&reply[1..reply.len() - 2])
}

/// HELLO's reply as Redis 7.0.15 sends it. dynokv answers as that Redis
/// version on purpose (design.md §2), so clients see the same map.
fn hello_reply(proto: u8, id: i64) -> Vec<u8> {
    let header = if proto == 3 { "%7" } else { "*14" };
    format!(
        "{header}\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n\
         $5\r\nproto\r\n:{proto}\r\n$2\r\nid\r\n:{id}\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
         $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
    )
    .into_bytes()
}

/// Switches the connection to RESP3 and checks HELLO's exact reply.
async fn hello3(stream: &mut TcpStream) {
    let id = client_id(stream).await;
    roundtrip(stream, b"HELLO 3\r\n", &hello_reply(3, id)).await;
}

fn arity_error(command: &str) -> Vec<u8> {
    format!("-ERR wrong number of arguments for '{command}' command\r\n").into_bytes()
}

/// A RESP2 bulk string.
fn bulk(body: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
    out
}

// ---------------------------------------------------------------------------
// Connection commands.

// PING and ECHO answer exactly as Redis under RESP2 and RESP3, multibulk and
// inline, with Redis's arity errors: sent as raw bytes, compared byte for byte.
#[tokio::test]
async fn ping_and_echo() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(&mut c, b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n").await;
    roundtrip(&mut c, b"*2\r\n$4\r\nping\r\n$2\r\nhi\r\n", b"$2\r\nhi\r\n").await;
    roundtrip(
        &mut c,
        b"*3\r\n$4\r\nPING\r\n$1\r\na\r\n$1\r\nb\r\n",
        &arity_error("ping"),
    )
    .await;
    roundtrip(
        &mut c,
        b"PING\r\nPING hello\r\n",
        b"+PONG\r\n$5\r\nhello\r\n",
    )
    .await;
    roundtrip(&mut c, b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", b"$0\r\n\r\n").await;
    roundtrip(&mut c, b"ECHO hi\r\n", b"$2\r\nhi\r\n").await;
    roundtrip(&mut c, b"ECHO\r\n", &arity_error("echo")).await;
    roundtrip(&mut c, b"ECHO a b\r\n", &arity_error("echo")).await;
    // Binary-safe: CR, LF and NUL inside a bulk come back untouched.
    roundtrip(
        &mut c,
        b"*2\r\n$4\r\nECHO\r\n$5\r\na\r\n\x00b\r\n",
        b"$5\r\na\r\n\x00b\r\n",
    )
    .await;
    hello3(&mut c).await;
    roundtrip(
        &mut c,
        b"PING\r\nPING x\r\nECHO y\r\n",
        b"+PONG\r\n$1\r\nx\r\n$1\r\ny\r\n",
    )
    .await;
    roundtrip(&mut c, b"PING a b\r\n", &arity_error("ping")).await;
    drop(c);
    node.stop().await;
}

// Inline commands parse like Redis's sdssplitargs (quotes, escapes, blank
// lines skipped, LF-only line ends): each inline request's reply is
// compared with the bytes Redis 7.0.15 sent for the same input.
#[tokio::test]
async fn inline_commands_and_quoting() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(&mut c, b"\r\n\r\n\nPING\n", b"+PONG\r\n").await;
    roundtrip(&mut c, b"ECHO \"\"\r\n", b"$0\r\n\r\n").await;
    roundtrip(&mut c, b"ECHO \"a b\\x41\\n\"\r\n", b"$5\r\na bA\n\r\n").await;
    roundtrip(&mut c, b"ECHO 'it\\'s'\r\n", b"$4\r\nit's\r\n").await;
    roundtrip(&mut c, b"  ECHO\t  spaced   \r\n", b"$6\r\nspaced\r\n").await;
    roundtrip(
        &mut c,
        b"SET \"sp ace\" \"v\\r\\nx\"\r\nGET \"sp ace\"\r\n",
        b"+OK\r\n$4\r\nv\r\nx\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"foo \"a\\nb\" c\r\n",
        b"-ERR unknown command 'foo', with args beginning with: 'a b' 'c' \r\n",
    )
    .await;
    // Inline and multibulk requests mix freely in one write.
    roundtrip(
        &mut c,
        b"PING\r\n*2\r\n$4\r\nECHO\r\n$1\r\nx\r\nECHO y\r\n",
        b"+PONG\r\n$1\r\nx\r\n$1\r\ny\r\n",
    )
    .await;
    drop(c);
    node.stop().await;
}

// HELLO switches RESP2/RESP3 and answers Redis's map (id = CLIENT ID), with
// Redis's NOPROTO and option errors; checked byte for byte against the
// replies Redis 7.0.15 gave to the same requests.
#[tokio::test]
async fn hello_negotiates_the_protocol() {
    let node = start_node().await;
    let mut c = node.connect().await;
    let id = client_id(&mut c).await;
    roundtrip(&mut c, b"HELLO\r\n", &hello_reply(2, id)).await;
    roundtrip(&mut c, b"HELLO 2\r\n", &hello_reply(2, id)).await;
    roundtrip(&mut c, b"GET missing\r\n", b"$-1\r\n").await;
    roundtrip(&mut c, b"HELLO 3\r\n", &hello_reply(3, id)).await;
    roundtrip(&mut c, b"GET missing\r\n", b"_\r\n").await;
    // HELLO without a version keeps the current protocol.
    roundtrip(&mut c, b"HELLO\r\n", &hello_reply(3, id)).await;
    for (request, error) in [
        (
            &b"HELLO 4\r\n"[..],
            &b"-NOPROTO unsupported protocol version\r\n"[..],
        ),
        (b"HELLO 1\r\n", b"-NOPROTO unsupported protocol version\r\n"),
        (
            b"HELLO x\r\n",
            b"-ERR Protocol version is not an integer or out of range\r\n",
        ),
        (
            b"HELLO 3 foo\r\n",
            b"-ERR Syntax error in HELLO option 'foo'\r\n",
        ),
        (
            b"HELLO 3 AUTH default\r\n",
            b"-ERR Syntax error in HELLO option 'AUTH'\r\n",
        ),
        (
            b"HELLO 2 SETNAME\r\n",
            b"-ERR Syntax error in HELLO option 'SETNAME'\r\n",
        ),
        (
            b"HELLO 2 SETNAME \"a b\"\r\n",
            b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
        ),
    ] {
        roundtrip(&mut c, request, error).await;
    }
    // A failed HELLO changed nothing: still RESP3.
    roundtrip(&mut c, b"GET missing\r\n", b"_\r\n").await;
    roundtrip(&mut c, b"HELLO 2 SETNAME myname\r\n", &hello_reply(2, id)).await;
    roundtrip(&mut c, b"CLIENT GETNAME\r\n", b"$6\r\nmyname\r\n").await;
    // Without requirepass the default user is nopass: any password works.
    roundtrip(&mut c, b"HELLO 3 AUTH default pw\r\n", &hello_reply(3, id)).await;
    roundtrip(&mut c, b"HELLO 3 AUTH nouser pw\r\n", WRONGPASS).await;
    drop(c);
    node.stop().await;
}

// Every reply kind has Redis's RESP3 encoding after HELLO 3 (null `_`,
// map `%`, set `~`, verbatim `=`), checked against Redis 7.0.15's bytes.
#[tokio::test]
async fn resp3_encodings() {
    let node = start_node().await;
    let mut c = node.connect().await;
    hello3(&mut c).await;
    roundtrip(&mut c, b"MSET m1 a m2 b\r\n", b"+OK\r\n").await;
    roundtrip(
        &mut c,
        b"MGET m1 nokey m2\r\n",
        b"*3\r\n$1\r\na\r\n_\r\n$1\r\nb\r\n",
    )
    .await;
    roundtrip(&mut c, b"SET m3 x GET\r\n", b"_\r\n").await;
    roundtrip(&mut c, b"CLIENT GETNAME\r\n", b"_\r\n").await;
    roundtrip(
        &mut c,
        b"CONFIG GET maxmemory\r\n",
        b"%1\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n",
    )
    .await;
    roundtrip(&mut c, b"CONFIG GET nosuchparam\r\n", b"%0\r\n").await;
    roundtrip(&mut c, b"CLIENT LIST TYPE pubsub\r\n", b"=4\r\ntxt:\r\n").await;
    roundtrip(&mut c, b"INFO nosuchsection\r\n", b"=4\r\ntxt:\r\n").await;
    roundtrip(&mut c, b"COMMAND DOCS nosuch\r\n", b"%0\r\n").await;
    roundtrip(&mut c, b"COMMAND INFO nosuch\r\n", b"*1\r\n_\r\n").await;
    roundtrip(
        &mut c,
        b"MULTI\r\nGET nokey\r\nSET t x\r\nGET t\r\nEXEC\r\n",
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n_\r\n+OK\r\n$1\r\nx\r\n",
    )
    .await;
    drop(c);
    node.stop().await;
}

// AUTH and NOAUTH with `requirepass`: Redis's texts for wrong passwords,
// unknown users and unauthenticated commands (arity and unknown-command
// errors come before NOAUTH, as in Redis); all bytes from Redis 7.0.15
// started with --requirepass.
#[tokio::test]
async fn auth_and_noauth_with_requirepass() {
    let node = start_node_with_password().await;
    let mut c = node.connect().await;
    for request in [
        &b"PING\r\n"[..],
        b"GET k\r\n",
        b"SET k v\r\n",
        b"ECHO x\r\n",
        b"CLIENT ID\r\n",
        b"CLIENT SETNAME a\r\n",
        b"CLIENT HELP\r\n",
        b"CONFIG HELP\r\n",
        b"SELECT 0\r\n",
        b"COMMAND\r\n",
        b"COMMAND COUNT\r\n",
        b"MULTI\r\n",
        b"DISCARD\r\n",
        b"VGET k\r\n",
    ] {
        roundtrip(&mut c, request, NOAUTH).await;
    }
    roundtrip(
        &mut c,
        b"FOO bar\r\n",
        b"-ERR unknown command 'FOO', with args beginning with: 'bar' \r\n",
    )
    .await;
    roundtrip(&mut c, b"GET\r\n", &arity_error("get")).await;
    roundtrip(&mut c, b"AUTH\r\n", &arity_error("auth")).await;
    roundtrip(&mut c, b"AUTH a b c\r\n", b"-ERR syntax error\r\n").await;
    // A rejected EXEC is EXECABORT with the reason (Redis's rejectCommand).
    roundtrip(
        &mut c,
        b"EXEC\r\n",
        b"-EXECABORT Transaction discarded because of: NOAUTH Authentication required.\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"EXEC x\r\n",
        b"-EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command\r\n",
    )
    .await;
    roundtrip(&mut c, b"AUTH wrong\r\n", WRONGPASS).await;
    roundtrip(&mut c, b"AUTH default wrong\r\n", WRONGPASS).await;
    roundtrip(&mut c, b"AUTH nouser secret\r\n", WRONGPASS).await;
    roundtrip(&mut c, b"PING\r\n", NOAUTH).await;
    roundtrip(&mut c, b"AUTH secret\r\nPING\r\n", b"+OK\r\n+PONG\r\n").await;
    // A failed AUTH later does not log the client out.
    roundtrip(
        &mut c,
        b"AUTH wrong\r\nPING\r\n",
        &[WRONGPASS, b"+PONG\r\n"].concat(),
    )
    .await;
    roundtrip(&mut c, b"AUTH default secret\r\n", b"+OK\r\n").await;
    // In MULTI, AUTH is queued and its error lands in EXEC's array.
    roundtrip(
        &mut c,
        b"MULTI\r\nAUTH wrong\r\nPING\r\nEXEC\r\n",
        &[
            &b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n"[..],
            WRONGPASS,
            b"+PONG\r\n",
        ]
        .concat(),
    )
    .await;
    // RESET logs the client out again.
    roundtrip(&mut c, b"RESET\r\n", b"+RESET\r\n").await;
    roundtrip(&mut c, b"PING\r\n", NOAUTH).await;
    // QUIT works before AUTH.
    roundtrip(&mut c, b"QUIT\r\n", b"+OK\r\n").await;
    assert_closed(&mut c).await;
    node.stop().await;
}

// HELLO under requirepass: NOAUTH until HELLO ... AUTH authenticates and
// switches protocol in one step (Redis 7.0.15's exact texts and map).
#[tokio::test]
async fn hello_auth_with_requirepass() {
    let node = start_node_with_password().await;
    let mut c = node.connect().await;
    let hello_noauth: &[u8] = b"-NOAUTH HELLO must be called with the client already \
        authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to \
        authenticate the client and select the RESP protocol version at the same time\r\n";
    roundtrip(&mut c, b"HELLO\r\n", hello_noauth).await;
    roundtrip(&mut c, b"HELLO 3\r\n", hello_noauth).await;
    roundtrip(&mut c, b"HELLO 2 SETNAME x\r\n", hello_noauth).await;
    roundtrip(&mut c, b"HELLO 3 AUTH default wrong\r\n", WRONGPASS).await;
    roundtrip(&mut c, b"HELLO 3 AUTH nouser secret\r\n", WRONGPASS).await;
    roundtrip(
        &mut c,
        b"HELLO 4 AUTH default secret\r\n",
        b"-NOPROTO unsupported protocol version\r\n",
    )
    .await;
    roundtrip(&mut c, b"PING\r\n", NOAUTH).await;
    // CLIENT ID needs auth, so the id is read from the HELLO reply itself.
    send(&mut c, b"HELLO 3 AUTH default secret SETNAME me\r\n").await;
    let reply = read_reply(&mut c).await;
    let id = client_id(&mut c).await;
    assert_eq!(escaped(&reply), escaped(&hello_reply(3, id)));
    roundtrip(
        &mut c,
        b"GET nokey\r\nCLIENT GETNAME\r\n",
        b"_\r\n$2\r\nme\r\n",
    )
    .await;

    let mut d = node.connect().await;
    send(&mut d, b"HELLO 2 AUTH default secret\r\n").await;
    let reply = read_reply(&mut d).await;
    let id = client_id(&mut d).await;
    assert_eq!(escaped(&reply), escaped(&hello_reply(2, id)));
    roundtrip(&mut d, b"GET nokey\r\n", b"$-1\r\n").await;
    drop((c, d));
    node.stop().await;
}

// AUTH without requirepass: Redis's long error for the one-argument form,
// and the nopass default user accepting any password in the two-argument form.
#[tokio::test]
async fn auth_without_requirepass() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(
        &mut c,
        b"AUTH pw\r\n",
        b"-ERR AUTH <password> called without any password configured for the default \
          user. Are you sure your configuration is correct?\r\n",
    )
    .await;
    roundtrip(&mut c, b"AUTH default pw\r\n", b"+OK\r\n").await;
    roundtrip(&mut c, b"AUTH nouser pw\r\n", WRONGPASS).await;
    roundtrip(&mut c, b"AUTH a b c\r\n", b"-ERR syntax error\r\n").await;
    drop(c);
    node.stop().await;
}

// SELECT, QUIT and RESET reply as Redis (QUIT closes after +OK, RESET
// returns to RESP2 and database 0, clears the name and any MULTI).
// SELECT takes Redis's 16 databases; an index that is not a C int gets
// Redis's parse error first. Keys of one database are not another's.
#[tokio::test]
async fn select_quit_reset() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(&mut c, b"SELECT 0\r\n", b"+OK\r\n").await;
    for index in ["16", "-1"] {
        roundtrip(
            &mut c,
            format!("SELECT {index}\r\n").as_bytes(),
            b"-ERR DB index is out of range\r\n",
        )
        .await;
    }
    roundtrip(
        &mut c,
        b"SET k zero\r\nSELECT 15\r\nGET k\r\nSET k fifteen\r\nDBSIZE\r\nSELECT 0\r\nGET k\r\n",
        b"+OK\r\n+OK\r\n$-1\r\n+OK\r\n:1\r\n+OK\r\n$4\r\nzero\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"MOVE k 15\r\nMOVE k 3\r\nMOVE k 0\r\nMOVE k 16\r\nGET k\r\n\
          SELECT 3\r\nGET k\r\nMOVE k 0\r\nSELECT 0\r\n",
        b":0\r\n:1\r\n-ERR source and destination objects are the same\r\n\
          -ERR DB index is out of range\r\n$-1\r\n+OK\r\n$4\r\nzero\r\n:1\r\n+OK\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"SELECT 99999999999\r\n",
        b"-ERR value is out of range, value must between -2147483648 and 2147483647\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"SELECT x\r\n",
        b"-ERR value is not an integer or out of range\r\n",
    )
    .await;
    roundtrip(&mut c, b"SELECT\r\n", &arity_error("select")).await;
    roundtrip(&mut c, b"RESET x\r\n", &arity_error("reset")).await;
    hello3(&mut c).await;
    roundtrip(
        &mut c,
        b"CLIENT SETNAME n\r\nSELECT 15\r\nMULTI\r\nRESET\r\nGET k\r\nCLIENT GETNAME\r\nEXEC\r\n",
        b"+OK\r\n+OK\r\n+OK\r\n+RESET\r\n$4\r\nzero\r\n$-1\r\n-ERR EXEC without MULTI\r\n",
    )
    .await;
    roundtrip(&mut c, b"QUIT\r\nPING\r\n", b"+OK\r\n").await;
    assert_closed(&mut c).await;
    let mut d = node.connect().await;
    roundtrip(&mut d, b"QUIT extra\r\n", b"+OK\r\n").await;
    assert_closed(&mut d).await;
    node.stop().await;
}

// ---------------------------------------------------------------------------
// CLIENT.

// CLIENT SETNAME/GETNAME/ID/SETINFO: Redis's replies and errors byte for
// byte (SETINFO is Redis 7.2's, which dynokv has for redis-py and go-redis;
// its texts follow Redis 7.2's source since the reference 7.0.15 lacks it).
#[tokio::test]
async fn client_name_id_setinfo() {
    let node = start_node().await;
    let mut c = node.connect().await;
    let mut d = node.connect().await;
    let (a, b) = (client_id(&mut c).await, client_id(&mut d).await);
    assert!(a > 0 && b > 0 && a != b, "ids {a} and {b}");
    assert_eq!(client_id(&mut c).await, a, "CLIENT ID is stable");
    roundtrip(&mut c, b"CLIENT GETNAME\r\n", b"$-1\r\n").await;
    roundtrip(
        &mut c,
        b"CLIENT SETNAME foo\r\nCLIENT GETNAME\r\n",
        b"+OK\r\n$3\r\nfoo\r\n",
    )
    .await;
    roundtrip(&mut d, b"CLIENT GETNAME\r\n", b"$-1\r\n").await;
    roundtrip(
        &mut c,
        b"CLIENT SETNAME \"\"\r\nCLIENT GETNAME\r\n",
        b"+OK\r\n$-1\r\n",
    )
    .await;
    for (request, reply) in [
        (
            &b"CLIENT SETNAME \"a b\"\r\n"[..],
            &b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n"[..],
        ),
        (
            b"CLIENT SETNAME \"a\\nb\"\r\n",
            b"-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
        ),
        (
            b"CLIENT SETNAME\r\n",
            b"-ERR wrong number of arguments for 'client|setname' command\r\n",
        ),
        (
            b"CLIENT SETNAME a b\r\n",
            b"-ERR wrong number of arguments for 'client|setname' command\r\n",
        ),
        (
            b"CLIENT GETNAME x\r\n",
            b"-ERR wrong number of arguments for 'client|getname' command\r\n",
        ),
        (
            b"CLIENT ID x\r\n",
            b"-ERR wrong number of arguments for 'client|id' command\r\n",
        ),
        (b"CLIENT SETINFO lib-name mylib\r\n", b"+OK\r\n"),
        (b"CLIENT SETINFO LIB-VER 1.0\r\n", b"+OK\r\n"),
        (
            b"CLIENT SETINFO foo bar\r\n",
            b"-ERR Unrecognized option 'foo'\r\n",
        ),
        (
            b"CLIENT SETINFO lib-name \"a b\"\r\n",
            b"-ERR lib-name cannot contain spaces, newlines or special characters.\r\n",
        ),
        (
            b"CLIENT SETINFO LIB-VER \"a b\"\r\n",
            b"-ERR LIB-VER cannot contain spaces, newlines or special characters.\r\n",
        ),
        (
            b"CLIENT SETINFO lib-name\r\n",
            b"-ERR wrong number of arguments for 'client|setinfo' command\r\n",
        ),
    ] {
        roundtrip(&mut c, request, reply).await;
    }
    let info = request(&mut c, b"CLIENT INFO\r\n").await;
    let line = String::from_utf8(bulk_body(&info).to_vec()).expect("utf-8");
    assert!(
        line.ends_with(" lib-name=mylib lib-ver=1.0\n"),
        "SETINFO shows in CLIENT INFO: {line}"
    );
    drop((c, d));
    node.stop().await;
}

// CLIENT INFO and CLIENT LIST have Redis's framing (a bulk, or `=n txt:`
// verbatim under RESP3, one `\n`-terminated line per client) and Redis's
// fixed fields; the values that depend on the run (id, addresses) are
// checked against CLIENT ID and the socket. dynokv's counters (fd, qbuf,
// memory) differ from Redis's by nature.
#[tokio::test]
async fn client_info_and_list() {
    let node = start_node().await;
    let mut c = node.connect().await;
    let mut d = node.connect().await;
    let id = client_id(&mut c).await;
    let other = client_id(&mut d).await;
    let addr = c.local_addr().expect("local addr");
    let prefix = format!("id={id} addr={addr} laddr={} ", node.addr);

    let info = request(&mut c, b"CLIENT INFO\r\n").await;
    let line = String::from_utf8(bulk_body(&info).to_vec()).expect("utf-8");
    assert!(line.starts_with(&prefix), "{line}");
    assert!(
        line.ends_with('\n') && line.matches('\n').count() == 1,
        "{line}"
    );
    for field in [
        " name= ",
        " flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 ",
        " cmd=client|info user=default redir=-1 resp=2",
    ] {
        assert!(line.contains(field), "{field:?} in {line}");
    }

    hello3(&mut c).await;
    roundtrip(&mut c, b"CLIENT SETNAME me\r\n", b"+OK\r\n").await;
    let info = request(&mut c, b"CLIENT INFO\r\n").await;
    let body = bulk_body(&info);
    assert!(
        info.starts_with(b"="),
        "verbatim under RESP3: {}",
        escaped(&info)
    );
    let line = String::from_utf8(body.to_vec()).expect("utf-8");
    let line = line.strip_prefix("txt:").expect("txt: format");
    assert!(line.starts_with(&prefix), "{line}");
    assert!(
        line.contains(" name=me ") && line.contains(" resp=3"),
        "{line}"
    );

    let list = request(&mut d, b"CLIENT LIST\r\n").await;
    let text = String::from_utf8(bulk_body(&list).to_vec()).expect("utf-8");
    assert!(text.ends_with('\n'), "{text}");
    let ids: Vec<&str> = text
        .lines()
        .map(|l| l.split(' ').next().expect("id field"))
        .collect();
    assert!(
        ids.contains(&format!("id={id}").as_str()) && ids.contains(&format!("id={other}").as_str()),
        "{text}"
    );
    let list = request(&mut d, format!("CLIENT LIST ID {id}\r\n").as_bytes()).await;
    let text = String::from_utf8(bulk_body(&list).to_vec()).expect("utf-8");
    assert!(
        text.starts_with(&prefix) && text.matches('\n').count() == 1,
        "{text}"
    );
    assert!(
        text.contains(" name=me ") && text.contains(" cmd=client|info "),
        "{text}"
    );
    let list = request(&mut d, b"CLIENT LIST TYPE normal\r\n").await;
    assert_eq!(String::from_utf8_lossy(bulk_body(&list)).lines().count(), 2);
    for (request, reply) in [
        (&b"CLIENT LIST TYPE pubsub\r\n"[..], &b"$0\r\n\r\n"[..]),
        (b"CLIENT LIST ID 999999\r\n", b"$0\r\n\r\n"),
        (
            b"CLIENT LIST TYPE foo\r\n",
            b"-ERR Unknown client type 'foo'\r\n",
        ),
        (b"CLIENT LIST ID x\r\n", b"-ERR Invalid client ID\r\n"),
        // Redis takes any integer id; ids below 1 match no client.
        (b"CLIENT LIST ID 0\r\n", b"$0\r\n\r\n"),
        (b"CLIENT LIST ID -1\r\n", b"$0\r\n\r\n"),
        (b"CLIENT LIST ID 0 x\r\n", b"-ERR Invalid client ID\r\n"),
        (b"CLIENT LIST ID\r\n", b"-ERR syntax error\r\n"),
        (b"CLIENT LIST foo\r\n", b"-ERR syntax error\r\n"),
        (b"CLIENT LIST TYPE normal x\r\n", b"-ERR syntax error\r\n"),
        (
            b"CLIENT INFO x\r\n",
            b"-ERR wrong number of arguments for 'client|info' command\r\n",
        ),
    ] {
        roundtrip(&mut d, request, reply).await;
    }
    drop((c, d));
    node.stop().await;
}

// CLIENT KILL by address, ID, ADDR/LADDR filters and SKIPME replies as
// Redis (+OK / count / errors) and really closes the killed connection.
#[tokio::test]
async fn client_kill() {
    let node = start_node().await;
    let mut a = node.connect().await;
    let mut b = node.connect().await;
    let mut c = node.connect().await;
    let a_id = client_id(&mut a).await;
    let b_id = client_id(&mut b).await;
    roundtrip(&mut c, b"PING\r\n", b"+PONG\r\n").await;
    let c_addr = c.local_addr().expect("addr");
    let a_addr = a.local_addr().expect("addr");
    // SKIPME defaults to yes: a client does not kill itself by id.
    roundtrip(
        &mut a,
        format!("CLIENT KILL ID {a_id}\r\n").as_bytes(),
        b":0\r\n",
    )
    .await;
    roundtrip(
        &mut a,
        format!("CLIENT KILL ID {b_id}\r\n").as_bytes(),
        b":1\r\n",
    )
    .await;
    assert_closed(&mut b).await;
    roundtrip(
        &mut a,
        format!("CLIENT KILL {c_addr}\r\n").as_bytes(),
        b"+OK\r\n",
    )
    .await;
    assert_closed(&mut c).await;
    for (request, reply) in [
        (
            &b"CLIENT KILL 1.2.3.4:5\r\n"[..],
            &b"-ERR No such client\r\n"[..],
        ),
        (b"CLIENT KILL ID 999999\r\n", b":0\r\n"),
        (b"CLIENT KILL ID 1 ID 2\r\n", b":0\r\n"),
        (b"CLIENT KILL ADDR 1.1.1.1:1\r\n", b":0\r\n"),
        (b"CLIENT KILL LADDR 127.0.0.1:1\r\n", b":0\r\n"),
        (
            b"CLIENT KILL ID x\r\n",
            b"-ERR client-id should be greater than 0\r\n",
        ),
        (
            b"CLIENT KILL ID 0\r\n",
            b"-ERR client-id should be greater than 0\r\n",
        ),
        (b"CLIENT KILL foo bar\r\n", b"-ERR syntax error\r\n"),
        (
            b"CLIENT KILL ID 1 SKIPME maybe\r\n",
            b"-ERR syntax error\r\n",
        ),
        // Three arguments is the old `CLIENT KILL addr:port` form.
        (b"CLIENT KILL ID\r\n", b"-ERR No such client\r\n"),
        (
            b"CLIENT KILL\r\n",
            b"-ERR wrong number of arguments for 'client|kill' command\r\n",
        ),
    ] {
        roundtrip(&mut a, request, reply).await;
    }
    roundtrip(
        &mut a,
        format!("CLIENT KILL ADDR {a_addr}\r\n").as_bytes(),
        b":0\r\n",
    )
    .await;
    // SKIPME no: the reply is sent, then the connection closes.
    roundtrip(
        &mut a,
        format!("CLIENT KILL ADDR {a_addr} SKIPME no\r\n").as_bytes(),
        b":1\r\n",
    )
    .await;
    assert_closed(&mut a).await;
    node.stop().await;
}

// CLIENT with no or an unknown subcommand, and `CLIENT HELP`, reply as
// Redis: arity and unknown-subcommand texts byte for byte; HELP's header
// and trailer lines as Redis's (its body lists dynokv's subcommands, not
// Redis's hand-written text), HELP with arguments is an arity error,
// needs AUTH and is queued in MULTI like any subcommand.
#[tokio::test]
async fn client_errors_and_help() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(&mut c, b"CLIENT\r\n", &arity_error("client")).await;
    roundtrip(
        &mut c,
        b"CLIENT foo\r\n",
        b"-ERR unknown subcommand 'foo'. Try CLIENT HELP.\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"client foo bar\r\n",
        b"-ERR unknown subcommand 'foo'. Try CLIENT HELP.\r\n",
    )
    .await;
    for (request, container) in [
        (&b"CLIENT HELP\r\n"[..], "CLIENT"),
        (b"client help\r\n", "CLIENT"),
        (b"CONFIG HELP\r\n", "CONFIG"),
        (b"COMMAND HELP\r\n", "COMMAND"),
    ] {
        let reply = request_help(&mut c, request).await;
        assert_eq!(
            reply.first().map(String::as_str),
            Some(
                format!("{container} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:")
                    .as_str()
            )
        );
        assert_eq!(
            reply[reply.len() - 2..],
            ["HELP".to_owned(), "    Prints this help.".to_owned()]
        );
    }
    roundtrip(&mut c, b"CLIENT HELP x\r\n", &arity_error("client|help")).await;
    roundtrip(&mut c, b"CONFIG HELP x\r\n", &arity_error("config|help")).await;
    send(&mut c, b"MULTI\r\nCONFIG HELP\r\nEXEC\r\n").await;
    expect_bytes(&mut c, b"+OK\r\n+QUEUED\r\n*1\r\n").await;
    let help = request_help_reply(&mut c).await;
    assert_eq!(
        help.last().map(String::as_str),
        Some("    Prints this help.")
    );
    roundtrip(
        &mut c,
        b"MULTI\r\nCONFIG HELP x\r\nEXEC\r\n",
        b"+OK\r\n-ERR wrong number of arguments for 'config|help' command\r\n\
          -EXECABORT Transaction discarded because of previous errors.\r\n",
    )
    .await;
    drop(c);
    node.stop().await;
}

/// Sends a HELP request and returns its lines (an array of simple strings).
async fn request_help(stream: &mut TcpStream, request: &[u8]) -> Vec<String> {
    send(stream, request).await;
    request_help_reply(stream).await
}

async fn request_help_reply(stream: &mut TcpStream) -> Vec<String> {
    let reply = read_reply(stream).await;
    let text = String::from_utf8(reply.clone()).expect("utf-8");
    let mut lines = text.split("\r\n");
    let header = lines.next().expect("header");
    let count: usize = header
        .strip_prefix('*')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("HELP is an array: {}", escaped(&reply)));
    let items: Vec<String> = lines
        .take(count)
        .map(|l| {
            l.strip_prefix('+')
                .unwrap_or_else(|| panic!("simple string line {l:?}"))
                .to_owned()
        })
        .collect();
    assert_eq!(items.len(), count);
    items
}

// ---------------------------------------------------------------------------
// Server commands.

// COMMAND INFO / DOCS answer Redis 7.0.15's metadata byte for byte, under
// RESP2 and RESP3, for every plain Redis command dynokv implements, for
// `container|sub` names and unknown names (null); COMMAND COUNT, LIST and
// bare COMMAND agree with each other. dynokv lists only the commands it
// has, so COUNT/LIST/bare COMMAND are shorter than Redis's 240.
#[tokio::test]
async fn command_introspection() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(
        &mut c,
        b"COMMAND INFO get SET nosuch client|kill\r\n",
        COMMAND_INFO_GET_SET_NOSUCH_CLIENT_KILL_RESP2,
    )
    .await;
    roundtrip(
        &mut c,
        b"COMMAND INFO ping echo hello auth select quit reset dbsize time info get set \
          del unlink exists mget mset type multi exec discard\r\n",
        COMMAND_INFO_PLAIN_COMMANDS,
    )
    .await;
    roundtrip(
        &mut c,
        b"COMMAND INFO client|nosuch get|x\r\n",
        b"*2\r\n$-1\r\n$-1\r\n",
    )
    .await;
    roundtrip(&mut c, b"COMMAND DOCS get\r\n", COMMAND_DOCS_GET_RESP2).await;
    roundtrip(&mut c, b"COMMAND DOCS nosuch\r\n", b"*0\r\n").await;
    for (request, reply) in [
        (&b"COMMAND LIST x\r\n"[..], &b"-ERR syntax error\r\n"[..]),
        (
            b"COMMAND foo\r\n",
            b"-ERR unknown subcommand 'foo'. Try COMMAND HELP.\r\n",
        ),
        (
            b"COMMAND COUNT x\r\n",
            b"-ERR wrong number of arguments for 'command|count' command\r\n",
        ),
    ] {
        roundtrip(&mut c, request, reply).await;
    }

    // COUNT, LIST and bare COMMAND describe the same set of commands.
    let count = request(&mut c, b"COMMAND COUNT\r\n").await;
    assert!(count.starts_with(b":"), "{}", escaped(&count));
    let count = parse_number(&count[1..count.len() - 2]);
    let names = bulk_items(&request(&mut c, b"COMMAND LIST\r\n").await);
    assert_eq!(names.len() as i64, count);
    for name in ["get", "set", "vget", "vset", "vdel", "client", "command"] {
        assert!(names.iter().any(|n| n == name.as_bytes()), "{name} listed");
    }
    let all = request(&mut c, b"COMMAND\r\n").await;
    assert!(
        all.starts_with(format!("*{count}\r\n*10\r\n").as_bytes()),
        "{}",
        escaped(&all[..40.min(all.len())])
    );

    hello3(&mut c).await;
    roundtrip(
        &mut c,
        b"COMMAND INFO get SET nosuch client|kill\r\n",
        COMMAND_INFO_GET_SET_NOSUCH_CLIENT_KILL_RESP3,
    )
    .await;
    roundtrip(
        &mut c,
        b"COMMAND DOCS set nosuch client|id\r\n",
        COMMAND_DOCS_SET_CLIENT_ID_RESP3,
    )
    .await;
    drop(c);
    node.stop().await;
}

// CONFIG GET answers Redis's shape (pairs, a map under RESP3, globs, empty
// for unknown names) with Redis's values for the parameters Redis clients
// read; CONFIG RESETSTAT is +OK; errors byte for byte. dynokv has one
// database, so `databases` is 1 where Redis says 16.
#[tokio::test]
async fn config_get_and_resetstat() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(
        &mut c,
        b"CONFIG GET maxmemory\r\n",
        b"*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"CONFIG GET maxmemory-policy\r\n",
        b"*2\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n",
    )
    .await;
    // An exact name is echoed as the client spelled it; a glob shows the
    // parameter's own name; a parameter matched twice is listed once.
    roundtrip(
        &mut c,
        b"config get MAXCLIENTS\r\n",
        b"*2\r\n$10\r\nMAXCLIENTS\r\n$5\r\n10000\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"CONFIG GET maxclients maxclient? MAXCLIENTS\r\n",
        b"*2\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"CONFIG GET MaxClient?\r\n",
        b"*2\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"CONFIG GET save\r\n",
        b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n",
    )
    .await;
    let port = node.addr.port().to_string();
    roundtrip(
        &mut c,
        b"CONFIG GET port\r\n",
        &[&b"*2\r\n$4\r\nport\r\n"[..], &bulk(port.as_bytes())].concat(),
    )
    .await;
    // Deliberate difference: Redis has 16 databases.
    roundtrip(
        &mut c,
        b"CONFIG GET databases\r\n",
        b"*2\r\n$9\r\ndatabases\r\n$1\r\n1\r\n",
    )
    .await;
    roundtrip(&mut c, b"CONFIG GET nosuchparam\r\n", b"*0\r\n").await;
    // A glob: dynokv knows fewer maxmemory-* parameters than Redis, so only
    // the two it has are checked, and their order is not Redis's (Redis
    // walks a hash table).
    let items = bulk_items(&request(&mut c, b"CONFIG GET maxmemory*\r\n").await);
    for pair in [["maxmemory", "0"], ["maxmemory-policy", "noeviction"]] {
        assert!(
            items
                .chunks(2)
                .any(|p| p[0] == pair[0].as_bytes() && p[1] == pair[1].as_bytes()),
            "{pair:?} in CONFIG GET maxmemory*"
        );
    }
    for (request, reply) in [
        (&b"CONFIG RESETSTAT\r\n"[..], &b"+OK\r\n"[..]),
        (
            b"CONFIG RESETSTAT x\r\n",
            b"-ERR wrong number of arguments for 'config|resetstat' command\r\n",
        ),
        (
            b"CONFIG GET\r\n",
            b"-ERR wrong number of arguments for 'config|get' command\r\n",
        ),
        (
            b"CONFIG\r\n",
            b"-ERR wrong number of arguments for 'config' command\r\n",
        ),
        (
            b"CONFIG foo\r\n",
            b"-ERR unknown subcommand 'foo'. Try CONFIG HELP.\r\n",
        ),
    ] {
        roundtrip(&mut c, request, reply).await;
    }
    drop(c);
    node.stop().await;
}

// INFO, DBSIZE and TIME: Redis's framing (INFO a bulk/verbatim of
// `# Section\r\nkey:value\r\n` blocks, TIME two bulk integers), DBSIZE
// counting live keys, and Redis's exact bytes where the content is fixed.
// INFO carries dynokv's own field set (design.md §2), so only the fields
// Redis clients read are checked.
#[tokio::test]
async fn info_dbsize_time() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(&mut c, b"DBSIZE\r\n", b":0\r\n").await;
    roundtrip(&mut c, b"INFO keyspace\r\n", b"$12\r\n# Keyspace\r\n\r\n").await;
    roundtrip(&mut c, b"MSET a 1 b 2\r\nDBSIZE\r\n", b"+OK\r\n:2\r\n").await;
    roundtrip(
        &mut c,
        b"INFO keyspace\r\n",
        b"$44\r\n# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n\r\n",
    )
    .await;
    roundtrip(&mut c, b"DEL a\r\nDBSIZE\r\n", b":1\r\n:1\r\n").await;
    roundtrip(&mut c, b"INFO nosuchsection\r\n", b"$0\r\n\r\n").await;
    roundtrip(&mut c, b"INFO a b c d\r\n", b"$0\r\n\r\n").await;
    roundtrip(&mut c, b"DBSIZE x\r\n", &arity_error("dbsize")).await;
    roundtrip(&mut c, b"TIME x\r\n", &arity_error("time")).await;

    let info = request(&mut c, b"INFO\r\n").await;
    let text = String::from_utf8(bulk_body(&info).to_vec()).expect("utf-8");
    assert!(
        text.starts_with("# Server\r\nredis_version:7.0.15\r\n"),
        "{text}"
    );
    assert!(
        text.ends_with("\r\n") && !text.ends_with("\r\n\r\n"),
        "{text:?}"
    );
    for block in text.split("\r\n\r\n") {
        let mut lines = block.lines();
        let title = lines.next().expect("section title");
        assert!(title.starts_with("# "), "section title {title:?}");
        for line in lines {
            assert!(line.contains(':'), "key:value line {line:?} in {title}");
        }
    }
    for field in [
        "\r\nrole:master\r\n",
        "\r\nredis_mode:standalone\r\n",
        "\r\nconnected_clients:1\r\n",
    ] {
        assert!(text.contains(field), "{field:?} in INFO");
    }
    let replication = request(&mut c, b"INFO replication\r\n").await;
    assert!(
        bulk_body(&replication).starts_with(b"# Replication\r\nrole:master\r\n"),
        "{}",
        escaped(&replication)
    );

    let time = request(&mut c, b"TIME\r\n").await;
    let parts = bulk_items(&time);
    assert_eq!(parts.len(), 2, "{}", escaped(&time));
    let seconds = parse_number(&parts[0]);
    let micros = parse_number(&parts[1]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    assert!((seconds - now).abs() <= 5, "TIME {seconds} vs {now}");
    assert!((0..1_000_000).contains(&micros), "microseconds {micros}");

    hello3(&mut c).await;
    let info = request(&mut c, b"INFO server\r\n").await;
    assert!(
        info.starts_with(b"=") && bulk_body(&info).starts_with(b"txt:# Server\r\n"),
        "{}",
        escaped(&info)
    );
    drop(c);
    node.stop().await;
}

// ---------------------------------------------------------------------------
// Strings and keys.

// GET/SET/TYPE happy paths and nil vs empty, byte for byte as Redis.
#[tokio::test]
async fn get_set_type() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(&mut c, b"GET s1\r\n", b"$-1\r\n").await;
    roundtrip(&mut c, b"SET s1 v1\r\nGET s1\r\n", b"+OK\r\n$2\r\nv1\r\n").await;
    roundtrip(&mut c, b"SET s1 v2\r\nGET s1\r\n", b"+OK\r\n$2\r\nv2\r\n").await;
    roundtrip(
        &mut c,
        b"TYPE s1\r\nTYPE nokey\r\n",
        b"+string\r\n+none\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"SET empty \"\"\r\nGET empty\r\n",
        b"+OK\r\n$0\r\n\r\n",
    )
    .await;
    roundtrip(&mut c, b"TYPE empty\r\n", b"+string\r\n").await;
    roundtrip(
        &mut c,
        b"*3\r\n$3\r\nSET\r\n$3\r\nbin\r\n$4\r\n\x00\r\n\xff\r\n*2\r\n$3\r\nGET\r\n$3\r\nbin\r\n",
        b"+OK\r\n$4\r\n\x00\r\n\xff\r\n",
    )
    .await;
    roundtrip(&mut c, b"get S1\r\n", b"$-1\r\n").await;
    roundtrip(&mut c, b"GET\r\n", &arity_error("get")).await;
    roundtrip(&mut c, b"GET a b\r\n", &arity_error("get")).await;
    roundtrip(&mut c, b"SET s1\r\n", &arity_error("set")).await;
    roundtrip(&mut c, b"SET\r\n", &arity_error("set")).await;
    roundtrip(&mut c, b"TYPE\r\n", &arity_error("type")).await;
    roundtrip(&mut c, b"TYPE a b\r\n", &arity_error("type")).await;
    drop(c);
    node.stop().await;
}

// SET NX/XX/GET, alone and combined, reply as Redis 7 (+OK, nil when the
// condition fails, the old value with GET): exact bytes from Redis 7.0.15.
#[tokio::test]
async fn set_conditions_and_get() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(
        &mut c,
        b"SET k v NX\r\nSET k w NX\r\nGET k\r\nSET k x XX\r\nGET k\r\n",
        b"+OK\r\n$-1\r\n$1\r\nv\r\n+OK\r\n$1\r\nx\r\n",
    )
    .await;
    roundtrip(&mut c, b"SET none x XX\r\nGET none\r\n", b"$-1\r\n$-1\r\n").await;
    roundtrip(
        &mut c,
        b"SET g v NX GET\r\nSET g w NX GET\r\nSET g z XX GET\r\nSET gnone z XX GET\r\nGET g\r\n",
        b"$-1\r\n$1\r\nv\r\n$1\r\nv\r\n$-1\r\n$1\r\nz\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"SET g2 a\r\nSET g2 b GET\r\nGET g2\r\nSET g2 c get\r\n",
        b"+OK\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nb\r\n",
    )
    .await;
    roundtrip(&mut c, b"SET k v ex 100 nx\r\n", b"$-1\r\n").await;
    drop(c);
    node.stop().await;
}

// SET's expiry options (EX PX EXAT PXAT KEEPTTL) reply +OK and take effect
// as in Redis: an expired key reads as nil, KEEPTTL keeps the deadline,
// a plain SET clears it, a deadline in the past deletes the key. The
// replies were taken from Redis 7.0.15 with the same timings.
#[tokio::test]
async fn set_expiry_options() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(
        &mut c,
        b"SET a v EX 100\r\nSET a v PX 100000\r\nSET a v EXAT 99999999999\r\n\
          SET a v PXAT 99999999999999\r\nSET a v KEEPTTL\r\nGET a\r\n",
        b"+OK\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n$1\r\nv\r\n",
    )
    .await;
    let soon = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis()
        + 300;
    roundtrip(
        &mut c,
        format!(
            "SET ttl1 v PX 300\r\nSET ttl1 v2 KEEPTTL\r\nSET ttl2 v PX 300\r\nSET ttl2 v2\r\n\
             SET ttl3 v PXAT {soon}\r\nSET ttl4 v PX 1\r\n"
        )
        .as_bytes(),
        b"+OK\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    roundtrip(
        &mut c,
        b"GET ttl1\r\nGET ttl2\r\nGET ttl3\r\nGET ttl4\r\nEXISTS ttl4\r\nTYPE ttl4\r\n",
        b"$-1\r\n$2\r\nv2\r\n$-1\r\n$-1\r\n:0\r\n+none\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"SET old v EXAT 1\r\nGET old\r\nSET old2 a\r\nSET old2 b PXAT 1 GET\r\nGET old2\r\nEXISTS old2\r\n",
        b"+OK\r\n$-1\r\n+OK\r\n$1\r\na\r\n$-1\r\n:0\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"SET g1 a\r\nSET g1 b GET EX 100\r\nSET g1 c KEEPTTL GET\r\nGET g1\r\nSET g1 d NX GET\r\n",
        b"+OK\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nc\r\n",
    )
    .await;
    drop(c);
    node.stop().await;
}

// SET's option errors: Redis's syntax, integer and expire-time errors for
// every bad combination, byte for byte from Redis 7.0.15.
#[tokio::test]
async fn set_option_errors() {
    let node = start_node().await;
    let mut c = node.connect().await;
    let syntax: &[u8] = b"-ERR syntax error\r\n";
    let not_integer: &[u8] = b"-ERR value is not an integer or out of range\r\n";
    let bad_expire: &[u8] = b"-ERR invalid expire time in 'set' command\r\n";
    for (request, reply) in [
        (&b"SET k v EX 0\r\n"[..], bad_expire),
        (b"SET k v EX -1\r\n", bad_expire),
        (b"SET k v PX 0\r\n", bad_expire),
        (b"SET k v EXAT 0\r\n", bad_expire),
        (b"SET k v PXAT -5\r\n", bad_expire),
        (b"SET k v EX 9999999999999999\r\n", bad_expire),
        (b"SET k v PX 9223372036854775807\r\n", bad_expire),
        (b"SET k v EX x\r\n", not_integer),
        (b"SET k v EX 99999999999999999999\r\n", not_integer),
        (b"SET k v EX 01\r\n", not_integer),
        (b"SET k v EX +1\r\n", not_integer),
        (b"SET k v EX \" 1\"\r\n", not_integer),
        (b"SET k v EX\r\n", syntax),
        (b"SET k v EX 10 PX 10\r\n", syntax),
        (b"SET k v EX 10 KEEPTTL\r\n", syntax),
        (b"SET k v KEEPTTL EX 10\r\n", syntax),
        (b"SET k v NX XX\r\n", syntax),
        (b"SET k v XX NX\r\n", syntax),
        (b"SET k v FOO\r\n", syntax),
    ] {
        roundtrip(&mut c, request, reply).await;
    }
    // None of them wrote anything.
    roundtrip(&mut c, b"GET k\r\n", b"$-1\r\n").await;
    drop(c);
    node.stop().await;
}

// DEL, UNLINK and EXISTS count as Redis does (missing keys not counted,
// repeated keys counted once by DEL and each time by EXISTS), with Redis's
// arity errors; bytes from Redis 7.0.15.
#[tokio::test]
async fn del_unlink_exists() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(&mut c, b"DEL d1 d2 d3\r\n", b":0\r\n").await;
    roundtrip(
        &mut c,
        b"SET d1 a\r\nSET d2 b\r\nDEL d1 d2 d3 d1\r\nGET d1\r\n",
        b"+OK\r\n+OK\r\n:2\r\n$-1\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"SET d1 a\r\nUNLINK d1 d1\r\nGET d1\r\nUNLINK d1\r\n",
        b"+OK\r\n:1\r\n$-1\r\n:0\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"SET e1 a\r\nEXISTS e1 e1 e2\r\nEXISTS e2\r\n",
        b"+OK\r\n:2\r\n:0\r\n",
    )
    .await;
    roundtrip(&mut c, b"DEL\r\n", &arity_error("del")).await;
    roundtrip(&mut c, b"UNLINK\r\n", &arity_error("unlink")).await;
    roundtrip(&mut c, b"EXISTS\r\n", &arity_error("exists")).await;
    drop(c);
    node.stop().await;
}

// MGET and MSET: arrays with nils in place, last write of a repeated key
// wins, Redis's arity errors (odd MSET too); bytes from Redis 7.0.15.
#[tokio::test]
async fn mget_mset() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(
        &mut c,
        b"MSET m1 a m2 b\r\nMGET m1 m2 m3\r\n",
        b"+OK\r\n*3\r\n$1\r\na\r\n$1\r\nb\r\n$-1\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"MSET mx a mx b\r\nGET mx\r\n",
        b"+OK\r\n$1\r\nb\r\n",
    )
    .await;
    roundtrip(&mut c, b"MGET nokey\r\n", b"*1\r\n$-1\r\n").await;
    roundtrip(&mut c, b"MSET m1\r\n", &arity_error("mset")).await;
    roundtrip(&mut c, b"MSET m1 a m2\r\n", &arity_error("mset")).await;
    roundtrip(&mut c, b"MSET\r\n", &arity_error("mset")).await;
    roundtrip(&mut c, b"MGET\r\n", &arity_error("mget")).await;
    roundtrip(&mut c, b"GET m2\r\n", b"$1\r\nb\r\n").await;
    drop(c);
    node.stop().await;
}

// An unknown command gets Redis's exact text: the name as sent, up to 128
// bytes of arguments each quoted, newlines flattened; bytes from Redis 7.0.15.
#[tokio::test]
async fn unknown_command_text() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(
        &mut c,
        b"foo a b\r\n",
        b"-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"*1\r\n$3\r\nFOO\r\n",
        b"-ERR unknown command 'FOO', with args beginning with: \r\n",
    )
    .await;
    let long_arg = "a".repeat(200);
    roundtrip(
        &mut c,
        format!("foo {long_arg} b\r\n").as_bytes(),
        format!(
            "-ERR unknown command 'foo', with args beginning with: '{}' \r\n",
            "a".repeat(128)
        )
        .as_bytes(),
    )
    .await;
    let long_name = "f".repeat(200);
    roundtrip(
        &mut c,
        format!("{long_name}\r\n").as_bytes(),
        format!(
            "-ERR unknown command '{}', with args beginning with: \r\n",
            "f".repeat(128)
        )
        .as_bytes(),
    )
    .await;
    roundtrip(
        &mut c,
        b"foo a b c d e f g h i j k l m n o p q r s t u v w x y z aa bb cc dd ee ff gg hh\r\n",
        b"-ERR unknown command 'foo', with args beginning with: 'a' 'b' 'c' 'd' 'e' 'f' \
          'g' 'h' 'i' 'j' 'k' 'l' 'm' 'n' 'o' 'p' 'q' 'r' 's' 't' 'u' 'v' 'w' 'x' 'y' 'z' \
          'aa' 'bb' 'cc' 'dd' 'ee' \r\n",
    )
    .await;
    // The connection stays usable after an unknown command.
    roundtrip(&mut c, b"PING\r\n", b"+PONG\r\n").await;
    drop(c);
    node.stop().await;
}

// ---------------------------------------------------------------------------
// Transactions.

// MULTI/EXEC/DISCARD happy paths: +QUEUED for each command, EXEC's array of
// replies (errors of queued commands inside it), DISCARD dropping the
// queue; bytes from Redis 7.0.15.
#[tokio::test]
async fn multi_exec_discard() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(
        &mut c,
        b"MULTI\r\nSET t1 a\r\nGET t1\r\nPING\r\nEXEC\r\nGET t1\r\n",
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n$1\r\na\r\n+PONG\r\n$1\r\na\r\n",
    )
    .await;
    roundtrip(&mut c, b"MULTI\r\nEXEC\r\n", b"+OK\r\n*0\r\n").await;
    roundtrip(
        &mut c,
        b"MULTI\r\nSET t5 a\r\nDISCARD\r\nGET t5\r\n",
        b"+OK\r\n+QUEUED\r\n+OK\r\n$-1\r\n",
    )
    .await;
    // Run-time errors stay inside EXEC's array; the rest still runs.
    roundtrip(
        &mut c,
        b"MULTI\r\nSET t7 v EX 0\r\nSET t7 ok\r\nSET t9 b XX NX\r\nGET t7\r\nEXEC\r\n",
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*4\r\n\
          -ERR invalid expire time in 'set' command\r\n+OK\r\n-ERR syntax error\r\n$2\r\nok\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"MULTI\r\nCLIENT SETNAME foo\r\nCLIENT GETNAME\r\nCONFIG GET maxmemory\r\nEXEC\r\n",
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*3\r\n+OK\r\n$3\r\nfoo\r\n\
          *2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n",
    )
    .await;
    // HELLO inside EXEC switches the protocol for what follows.
    let id = client_id(&mut c).await;
    roundtrip(
        &mut c,
        b"MULTI\r\nSELECT 0\r\nHELLO 3\r\nEXEC\r\nGET nokey\r\n",
        &[
            &b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n"[..],
            &hello_reply(3, id),
            b"_\r\n",
        ]
        .concat(),
    )
    .await;
    roundtrip(&mut c, b"MULTI\r\nQUIT\r\n", b"+OK\r\n+OK\r\n").await;
    assert_closed(&mut c).await;
    node.stop().await;
}

// MULTI errors: EXECABORT after a queued unknown command, unknown
// subcommand or arity error; nested MULTI is an error that keeps the
// transaction; EXEC/DISCARD without MULTI; a rejected EXEC is EXECABORT
// with its reason; all bytes from Redis 7.0.15.
#[tokio::test]
async fn multi_errors() {
    let node = start_node().await;
    let mut c = node.connect().await;
    let abort: &[u8] = b"-EXECABORT Transaction discarded because of previous errors.\r\n";
    roundtrip(
        &mut c,
        b"MULTI\r\nSET t2 a\r\nFOO bar\r\nGET t2\r\nEXEC\r\nGET t2\r\n",
        &[
            &b"+OK\r\n+QUEUED\r\n-ERR unknown command 'FOO', with args beginning with: 'bar' \r\n\
               +QUEUED\r\n"[..],
            abort,
            b"$-1\r\n",
        ]
        .concat(),
    )
    .await;
    roundtrip(
        &mut c,
        b"MULTI\r\nSET t3 a\r\nGET\r\nEXEC\r\nGET t3\r\n",
        &[
            &b"+OK\r\n+QUEUED\r\n-ERR wrong number of arguments for 'get' command\r\n"[..],
            abort,
            b"$-1\r\n",
        ]
        .concat(),
    )
    .await;
    roundtrip(
        &mut c,
        b"MULTI\r\nSET t8 a\r\nCLIENT foo\r\nEXEC\r\n",
        &[
            &b"+OK\r\n+QUEUED\r\n-ERR unknown subcommand 'foo'. Try CLIENT HELP.\r\n"[..],
            abort,
        ]
        .concat(),
    )
    .await;
    for (request, error) in [
        (&b"MULTI\r\nDBSIZE x\r\nEXEC\r\n"[..], arity_error("dbsize")),
        (b"MULTI\r\nDISCARD x\r\nEXEC\r\n", arity_error("discard")),
        (b"MULTI\r\nMULTI x\r\nEXEC\r\n", arity_error("multi")),
    ] {
        roundtrip(&mut c, request, &[&b"+OK\r\n"[..], &error, abort].concat()).await;
    }
    roundtrip(
        &mut c,
        b"MULTI\r\nMULTI\r\nSET t4 a\r\nEXEC\r\n",
        b"+OK\r\n-ERR MULTI calls can not be nested\r\n+QUEUED\r\n*1\r\n+OK\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"EXEC\r\nDISCARD\r\nMULTI x\r\n",
        b"-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n\
          -ERR wrong number of arguments for 'multi' command\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"EXEC x\r\n",
        b"-EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command\r\n",
    )
    .await;
    // A rejected EXEC also ends the transaction it belonged to.
    roundtrip(
        &mut c,
        b"MULTI\r\nSET t6 a\r\nEXEC x\r\nEXEC\r\nGET t6\r\n",
        b"+OK\r\n+QUEUED\r\n\
          -EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command\r\n\
          -ERR EXEC without MULTI\r\n$-1\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"MULTI\r\nPING\r\nEXEC\r\nEXEC\r\n",
        b"+OK\r\n+QUEUED\r\n*1\r\n+PONG\r\n-ERR EXEC without MULTI\r\n",
    )
    .await;
    drop(c);
    node.stop().await;
}

// ---------------------------------------------------------------------------
// The Dynamo face (dynokv's own commands; design.md §2, no Redis reference).

/// Parses VGET's reply `*2 $ctx *n $v...` into the context and the values.
fn parse_vget(reply: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    assert!(
        reply.starts_with(b"*2\r\n$"),
        "VGET framing: {}",
        escaped(reply)
    );
    let rest = &reply[4..];
    let header_end = rest.windows(2).position(|w| w == b"\r\n").expect("header");
    let len = parse_number(&rest[1..header_end]) as usize;
    let context = rest[header_end + 2..header_end + 2 + len].to_vec();
    assert_eq!(&rest[header_end + 2 + len..header_end + 4 + len], b"\r\n");
    let values = bulk_items(&rest[header_end + 4 + len..]);
    assert!(
        context
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "context is base64url: {}",
        escaped(&context)
    );
    (context, values)
}

// VSET/VGET/VDEL keep siblings: `VSET k "" v` creates, two VSETs with the
// same old context make two siblings, a VSET with the merged context leaves
// one, VDEL with it leaves none; every reply's framing is exact and the
// context each write returns is the one VGET then shows (fed back verbatim).
#[tokio::test]
async fn vget_vset_vdel_siblings() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(&mut c, b"VGET k\r\n", b"*2\r\n$0\r\n\r\n*0\r\n").await;
    let first = bulk_body(&request(&mut c, b"VSET k \"\" a\r\n").await).to_vec();
    let (context, values) = parse_vget(&request(&mut c, b"VGET k\r\n").await);
    assert_eq!(
        (context.clone(), values),
        (first.clone(), vec![b"a".to_vec()])
    );
    roundtrip(&mut c, b"GET k\r\n", b"$1\r\na\r\n").await;

    // A second writer that also saw nothing: two siblings.
    let second = bulk_body(&request(&mut c, b"VSET k \"\" b\r\n").await).to_vec();
    assert_ne!(second, first);
    let (merged, mut values) = parse_vget(&request(&mut c, b"VGET k\r\n").await);
    assert_eq!(
        merged, second,
        "VGET shows the context the last write returned"
    );
    values.sort();
    assert_eq!(values, vec![b"a".to_vec(), b"b".to_vec()]);
    // Plain GET sees one value (the last writer).
    roundtrip(&mut c, b"GET k\r\n", b"$1\r\nb\r\n").await;

    // Writing with the merged context resolves them into one.
    let mut resolve = b"VSET k ".to_vec();
    resolve.extend_from_slice(&merged);
    resolve.extend_from_slice(b" c\r\n");
    let resolved = bulk_body(&request(&mut c, &resolve).await).to_vec();
    let (context, values) = parse_vget(&request(&mut c, b"VGET k\r\n").await);
    assert_eq!((context.clone(), values), (resolved, vec![b"c".to_vec()]));

    // VDEL with that context leaves no value; plain commands see no key.
    let mut delete = b"VDEL k ".to_vec();
    delete.extend_from_slice(&context);
    delete.extend_from_slice(b"\r\n");
    let deleted = bulk_body(&request(&mut c, &delete).await).to_vec();
    let (context, values) = parse_vget(&request(&mut c, b"VGET k\r\n").await);
    assert_eq!(context, deleted);
    assert!(values.is_empty());
    roundtrip(
        &mut c,
        b"GET k\r\nEXISTS k\r\nTYPE k\r\n",
        b"$-1\r\n:0\r\n+none\r\n",
    )
    .await;

    // Plain SET supersedes every sibling it knows; VGET sees it.
    let written = bulk_body(&request(&mut c, b"VSET p \"\" x\r\n").await).to_vec();
    assert_eq!(parse_vget(&request(&mut c, b"VGET p\r\n").await).0, written);
    roundtrip(&mut c, b"SET p z\r\n", b"+OK\r\n").await;
    let (_, values) = parse_vget(&request(&mut c, b"VGET p\r\n").await);
    assert_eq!(values, vec![b"z".to_vec()]);

    // R and W options (any case) give the same replies on one node.
    let (_, values) = parse_vget(&request(&mut c, b"VGET p R 1\r\n").await);
    assert_eq!(values, vec![b"z".to_vec()]);
    let (_, values) = parse_vget(&request(&mut c, b"vget p r 2\r\n").await);
    assert_eq!(values, vec![b"z".to_vec()]);
    // R and W past the member count are capped at it (design.md §2).
    let written = bulk_body(&request(&mut c, b"VSET w \"\" v W 1\r\n").await).to_vec();
    assert_eq!(parse_vget(&request(&mut c, b"VGET w\r\n").await).0, written);
    let written = bulk_body(&request(&mut c, b"VSET w2 \"\" v W 9\r\n").await).to_vec();
    let (context, values) = parse_vget(&request(&mut c, b"VGET w2 R 9\r\n").await);
    assert_eq!((context, values), (written, vec![b"v".to_vec()]));

    // Under RESP3 the reply is the same two-element array.
    hello3(&mut c).await;
    let (_, values) = parse_vget(&request(&mut c, b"VGET p\r\n").await);
    assert_eq!(values, vec![b"z".to_vec()]);
    roundtrip(&mut c, b"VGET nokey\r\n", b"*2\r\n$0\r\n\r\n*0\r\n").await;
    drop(c);
    node.stop().await;
}

// VGET/VSET/VDEL errors: Redis-style arity, syntax, integer and option
// errors, and a clear error for a context that is not ours; exact bytes.
#[tokio::test]
async fn vget_vset_vdel_errors() {
    let node = start_node().await;
    let mut c = node.connect().await;
    for (request, reply) in [
        (&b"VGET\r\n"[..], arity_error("vget")),
        (b"VGET a R\r\n", b"-ERR syntax error\r\n".to_vec()),
        (b"VGET a X 1\r\n", b"-ERR syntax error\r\n".to_vec()),
        (b"VGET a R 1 x\r\n", b"-ERR syntax error\r\n".to_vec()),
        (
            b"VGET a R 0\r\n",
            b"-ERR R must be a positive integer\r\n".to_vec(),
        ),
        (
            b"VGET a R x\r\n",
            b"-ERR value is not an integer or out of range\r\n".to_vec(),
        ),
        (b"VSET\r\n", arity_error("vset")),
        (b"VSET a\r\n", arity_error("vset")),
        (b"VSET a ctx\r\n", arity_error("vset")),
        (
            b"VSET a !!! v\r\n",
            b"-ERR invalid causal context: context is not base64url\r\n".to_vec(),
        ),
        (b"VSET a \"\" v W\r\n", b"-ERR syntax error\r\n".to_vec()),
        (b"VSET a \"\" v X 1\r\n", b"-ERR syntax error\r\n".to_vec()),
        (
            b"VSET a \"\" v W 0\r\n",
            b"-ERR W must be a positive integer\r\n".to_vec(),
        ),
        (
            b"VSET a \"\" v W x\r\n",
            b"-ERR value is not an integer or out of range\r\n".to_vec(),
        ),
        (b"VDEL\r\n", arity_error("vdel")),
        (b"VDEL a\r\n", arity_error("vdel")),
        (
            b"VDEL a !!!\r\n",
            b"-ERR invalid causal context: context is not base64url\r\n".to_vec(),
        ),
        (
            b"VDEL a \"\" W 0\r\n",
            b"-ERR W must be a positive integer\r\n".to_vec(),
        ),
        (b"VDEL a \"\" Q 1\r\n", b"-ERR syntax error\r\n".to_vec()),
    ] {
        roundtrip(&mut c, request, &reply).await;
    }
    // Nothing was written by the failed requests.
    roundtrip(
        &mut c,
        b"VGET a\r\nDBSIZE\r\n",
        b"*2\r\n$0\r\n\r\n*0\r\n:0\r\n",
    )
    .await;
    drop(c);
    node.stop().await;
}

// ---------------------------------------------------------------------------
// The protocol layer.

// Every malformed multibulk/inline request gets Redis's exact protocol
// error and the connection is closed, while the node keeps serving others;
// each case on its own connection, bytes from Redis 7.0.15.
#[tokio::test]
async fn protocol_errors_close_the_connection() {
    let node = start_node().await;
    let invalid_mbulk: &[u8] = b"-ERR Protocol error: invalid multibulk length\r\n";
    let invalid_bulk: &[u8] = b"-ERR Protocol error: invalid bulk length\r\n";
    let unbalanced: &[u8] = b"-ERR Protocol error: unbalanced quotes in request\r\n";
    for (request, reply) in [
        (&b"*x\r\n"[..], invalid_mbulk),
        (b"*1x\r\n", invalid_mbulk),
        (b"*\r\n", invalid_mbulk),
        (b"*+1\r\n$4\r\nPING\r\n", invalid_mbulk),
        (b"*01\r\n$4\r\nPING\r\n", invalid_mbulk),
        (b"*2147483648\r\n", invalid_mbulk),
        (b"*99999999999\r\n", invalid_mbulk),
        (
            b"*1\r\n:1\r\n",
            b"-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"*2\r\n$4\r\nECHO\r\nx\r\n",
            b"-ERR Protocol error: expected '$', got 'x'\r\n",
        ),
        (b"*1\r\n$-1\r\n", invalid_bulk),
        (b"*1\r\n$-0\r\n", invalid_bulk),
        (b"*1\r\n$x\r\n", invalid_bulk),
        (b"*1\r\n$\r\n", invalid_bulk),
        (b"*1\r\n$04\r\nPING\r\n", invalid_bulk),
        (b"*1\r\n$+4\r\nPING\r\n", invalid_bulk),
        // proto-max-bulk-len is 512 MB, as in Redis.
        (b"*1\r\n$536870913\r\n", invalid_bulk),
        (b"ECHO \"abc\r\n", unbalanced),
        (b"ECHO 'abc\r\n", unbalanced),
        (b"SET \"a\"b c\r\n", unbalanced),
        // Replies to the complete requests before the bad one are sent first.
        (
            b"PING\r\n*x\r\n",
            b"+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"ECHO \"a\"\r\nECHO 'a'x\r\n",
            b"$1\r\na\r\n-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
    ] {
        let mut c = node.connect().await;
        roundtrip(&mut c, request, reply).await;
        assert_closed(&mut c).await;
    }
    let mut c = node.connect().await;
    roundtrip(&mut c, b"PING\r\n", b"+PONG\r\n").await;
    drop(c);
    node.stop().await;
}

// Requests past the inline and count-string limits get Redis's "too big"
// protocol errors and a close, with exactly as many bytes as trigger them
// (64 KB + 1), so the server reads everything it is sent.
#[tokio::test]
async fn protocol_size_limits() {
    let node = start_node().await;
    const INLINE_MAX: usize = 64 * 1024;
    let stars = vec![b'*'; INLINE_MAX + 1];
    let inline = vec![b'a'; INLINE_MAX + 1];
    let mut count = b"*1\r\n$".to_vec();
    count.extend(std::iter::repeat_n(b'1', INLINE_MAX + 1));
    for (request, reply) in [
        (
            stars,
            &b"-ERR Protocol error: too big mbulk count string\r\n"[..],
        ),
        (inline, b"-ERR Protocol error: too big inline request\r\n"),
        (count, b"-ERR Protocol error: too big bulk count string\r\n"),
    ] {
        let mut c = node.connect().await;
        roundtrip(&mut c, &request, reply).await;
        assert_closed(&mut c).await;
    }
    // Exactly at the limit, without a line end: still waiting for more.
    let mut c = node.connect().await;
    send(&mut c, &vec![b'a'; INLINE_MAX]).await;
    assert_quiet(&mut c).await;
    // A bulk up to proto-max-bulk-len is accepted and waited for.
    let mut d = node.connect().await;
    send(&mut d, b"*1\r\n$536870912\r\n").await;
    assert_quiet(&mut d).await;
    drop((c, d));
    node.stop().await;
}

// dynokv bounds a request at ARRAY_LEN_MAX (1 Mi) arguments, a named limit
// (design.md §2); Redis 7.0.15 accepts up to INT_MAX and waits. Past the
// bound the reply is Redis's own error text and the connection closes.
#[tokio::test]
async fn multibulk_length_bound() {
    let node = start_node().await;
    let mut c = node.connect().await;
    // Deliberate difference: Redis waits for 1048577 arguments.
    roundtrip(
        &mut c,
        b"*1048577\r\n",
        b"-ERR Protocol error: invalid multibulk length\r\n",
    )
    .await;
    assert_closed(&mut c).await;
    let mut d = node.connect().await;
    send(&mut d, b"*1048576\r\n").await;
    assert_quiet(&mut d).await;
    drop(d);
    node.stop().await;
}

// A bulk whose announced length is wrong (the two bytes after it are not
// CRLF): Redis 7.0.15 trusts the length and skips two bytes unchecked,
// so `$1\r\nab\r\n` runs command "a" and `$4\r\nPINGxx` runs PING. dynokv
// rejects it as "invalid bulk length" and closes (frame.rs), a known
// difference kept out of the default run until it is decided.
#[tokio::test]
#[ignore = "dynokv deliberately rejects a bulk not followed by CRLF; Redis skips the two bytes"]
async fn bulk_length_trusted_as_redis_does() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(
        &mut c,
        b"*1\r\n$1\r\nab\r\n",
        b"-ERR unknown command 'a', with args beginning with: \r\n",
    )
    .await;
    roundtrip(&mut c, b"*1\r\n$4\r\nPINGxx", b"+PONG\r\n").await;
    drop(c);
    node.stop().await;
}

// Empty requests are ignored as in Redis: blank inline lines, `*0`, `*-1`
// and `*-2` produce no reply and the next command is answered normally.
#[tokio::test]
async fn empty_requests_are_ignored() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(&mut c, b"*-1\r\n*0\r\n*-2\r\nPING\r\n", b"+PONG\r\n").await;
    roundtrip(&mut c, b"\r\n\n  \r\n\t\r\nPING\r\n", b"+PONG\r\n").await;
    send(&mut c, b"\r\n*0\r\n").await;
    assert_quiet(&mut c).await;
    roundtrip(&mut c, b"ECHO x\r\n", b"$1\r\nx\r\n").await;
    drop(c);
    node.stop().await;
}

// A NUL byte in an inline request: Redis looks for the line end with
// strchr, which stops at the NUL, so the request stays incomplete (no
// reply) until the buffer passes the inline limit. Regression test for a
// parser loop that grew memory without bound on this input.
#[tokio::test]
async fn nul_byte_in_inline_request() {
    let node = start_node().await;
    let mut c = node.connect().await;
    send(&mut c, b"ECHO \x00\r\nPING\r\n").await;
    assert_quiet(&mut c).await;
    // Other clients are unaffected.
    let mut d = node.connect().await;
    roundtrip(&mut d, b"PING\r\n", b"+PONG\r\n").await;
    // Filling the buffer past 64 KB ends it with Redis's error.
    let sent = b"ECHO \x00\r\nPING\r\n".len();
    send(&mut c, &vec![b'a'; 64 * 1024 + 1 - sent]).await;
    expect_bytes(&mut c, b"-ERR Protocol error: too big inline request\r\n").await;
    assert_closed(&mut c).await;
    // NUL inside a multibulk argument is just a byte.
    roundtrip(
        &mut d,
        b"*2\r\n$4\r\nECHO\r\n$1\r\n\x00\r\n",
        b"$1\r\n\x00\r\n",
    )
    .await;
    drop(d);
    node.stop().await;
}

// Before AUTH, Redis's tighter limits apply (at most 10 arguments, bulks of
// at most 16 KB): past them, Redis's protocol errors and a close.
#[tokio::test]
async fn unauthenticated_protocol_limits() {
    let node = start_node_with_password().await;
    for (request, reply) in [
        (
            &b"*11\r\n"[..],
            &b"-ERR Protocol error: unauthenticated multibulk length\r\n"[..],
        ),
        (
            b"*1\r\n$16385\r\n",
            b"-ERR Protocol error: unauthenticated bulk length\r\n",
        ),
    ] {
        let mut c = node.connect().await;
        roundtrip(&mut c, request, reply).await;
        assert_closed(&mut c).await;
    }
    // At the limits the request is accepted (and waited for).
    for request in [&b"*10\r\n"[..], b"*1\r\n$16384\r\n"] {
        let mut c = node.connect().await;
        send(&mut c, request).await;
        assert_quiet(&mut c).await;
    }
    // After AUTH the normal limits apply.
    let mut c = node.connect().await;
    roundtrip(&mut c, b"AUTH secret\r\n", b"+OK\r\n").await;
    let mut args = b"*11\r\n$4\r\nECHO\r\n".to_vec();
    for _ in 0..10 {
        args.extend_from_slice(b"$1\r\nx\r\n");
    }
    roundtrip(&mut c, &args, &arity_error("echo")).await;
    drop(c);
    node.stop().await;
}

// Requests split at every byte, and many pipelined in one write, give the
// same exact replies, in order.
#[tokio::test]
async fn requests_in_pieces_and_pipelined() {
    let node = start_node().await;
    let mut c = node.connect().await;
    let whole = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\nGET k\r\n";
    for byte in whole {
        send(&mut c, &[*byte]).await;
        tokio::task::yield_now().await;
    }
    expect_bytes(&mut c, b"+OK\r\n$5\r\nhello\r\n").await;
    let mut pipeline = Vec::new();
    let mut expected = Vec::new();
    for i in 0..200 {
        pipeline.extend_from_slice(format!("SET p{i} v{i}\r\nGET p{i}\r\n").as_bytes());
        expected.extend_from_slice(b"+OK\r\n");
        expected.extend_from_slice(&bulk(format!("v{i}").as_bytes()));
    }
    roundtrip(&mut c, &pipeline, &expected).await;
    roundtrip(&mut c, b"DBSIZE\r\n", b":201\r\n").await;
    drop(c);
    node.stop().await;
}

// At maxclients a new connection gets Redis's exact refusal and is closed
// (checked against redis-server --maxclients 1).
#[tokio::test]
async fn maxclients_refusal() {
    let node = start_node_with(Settings {
        maxclients: Some(1),
        ..Settings::default()
    })
    .await;
    let mut c = node.connect().await;
    roundtrip(&mut c, b"PING\r\n", b"+PONG\r\n").await;
    let mut d = node.connect().await;
    expect_bytes(&mut d, b"-ERR max number of clients reached\r\n").await;
    assert_closed(&mut d).await;
    roundtrip(&mut c, b"PING\r\n", b"+PONG\r\n").await;
    drop(c);
    node.stop().await;
}
// ---------------------------------------------------------------------------
// Replies captured from Redis 7.0.15 (the same raw request sent to
// redis-server on loopback).

/// Redis 7.0.15's reply to `COMMAND INFO get SET nosuch client|kill`.
const COMMAND_INFO_GET_SET_NOSUCH_CLIENT_KILL_RESP2: &[u8] =
    b"*4\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n\
    :1\r\n:1\r\n*3\r\n+@read\r\n+@string\r\n+@fast\r\n*0\r\n*1\r\n\
    *6\r\n$5\r\nflags\r\n*2\r\n+RO\r\n+access\r\n$12\r\nbegin_search\r\n\
    *4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\n\
    index\r\n:1\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n\
    $4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n\
    $5\r\nlimit\r\n:0\r\n*0\r\n*10\r\n$3\r\nset\r\n:-3\r\n*2\r\n+write\r\n\
    +denyoom\r\n:1\r\n:1\r\n:1\r\n*3\r\n+@write\r\n+@string\r\n+@slow\r\n\
    *0\r\n*1\r\n*8\r\n$5\r\nnotes\r\n$48\r\nRW and ACCESS due to the optional `GET` argument\r\n\
    $5\r\nflags\r\n*4\r\n+RW\r\n+access\r\n+update\r\n+variable_flags\r\n\
    $12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\n\
    spec\r\n*2\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\n\
    type\r\n$5\r\nrange\r\n$4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n:0\r\n\
    $7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n*0\r\n$-1\r\n*10\r\n\
    $11\r\nclient|kill\r\n:-3\r\n*4\r\n+admin\r\n+noscript\r\n+loading\r\n\
    +stale\r\n:0\r\n:0\r\n:0\r\n*4\r\n+@admin\r\n+@slow\r\n+@dangerous\r\n\
    +@connection\r\n*0\r\n*0\r\n*0\r\n";

/// Redis 7.0.15's reply to `COMMAND INFO get SET nosuch client|kill` under RESP3.
const COMMAND_INFO_GET_SET_NOSUCH_CLIENT_KILL_RESP3: &[u8] =
    b"*4\r\n*10\r\n$3\r\nget\r\n:2\r\n~2\r\n+readonly\r\n+fast\r\n:1\r\n\
    :1\r\n:1\r\n~3\r\n+@read\r\n+@string\r\n+@fast\r\n~0\r\n~1\r\n\
    %3\r\n$5\r\nflags\r\n~2\r\n+RO\r\n+access\r\n$12\r\nbegin_search\r\n\
    %2\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n%1\r\n$5\r\n\
    index\r\n:1\r\n$9\r\nfind_keys\r\n%2\r\n$4\r\ntype\r\n$5\r\nrange\r\n\
    $4\r\nspec\r\n%3\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n\
    $5\r\nlimit\r\n:0\r\n~0\r\n*10\r\n$3\r\nset\r\n:-3\r\n~2\r\n+write\r\n\
    +denyoom\r\n:1\r\n:1\r\n:1\r\n~3\r\n+@write\r\n+@string\r\n+@slow\r\n\
    ~0\r\n~1\r\n%4\r\n$5\r\nnotes\r\n$48\r\nRW and ACCESS due to the optional `GET` argument\r\n\
    $5\r\nflags\r\n~4\r\n+RW\r\n+access\r\n+update\r\n+variable_flags\r\n\
    $12\r\nbegin_search\r\n%2\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\n\
    spec\r\n%1\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n%2\r\n$4\r\n\
    type\r\n$5\r\nrange\r\n$4\r\nspec\r\n%3\r\n$7\r\nlastkey\r\n:0\r\n\
    $7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n~0\r\n_\r\n*10\r\n\
    $11\r\nclient|kill\r\n:-3\r\n~4\r\n+admin\r\n+noscript\r\n+loading\r\n\
    +stale\r\n:0\r\n:0\r\n:0\r\n~4\r\n+@admin\r\n+@slow\r\n+@dangerous\r\n\
    +@connection\r\n~0\r\n~0\r\n~0\r\n";

/// Redis 7.0.15's reply to `COMMAND INFO ping echo hello auth select quit reset dbsize time info get set del unlink exists mget mset type multi exec discard`.
const COMMAND_INFO_PLAIN_COMMANDS: &[u8] =
    b"*21\r\n*10\r\n$4\r\nping\r\n:-1\r\n*1\r\n+fast\r\n:0\r\n:0\r\n\
    :0\r\n*2\r\n+@fast\r\n+@connection\r\n*2\r\n$25\r\nrequest_policy:all_shards\r\n\
    $29\r\nresponse_policy:all_succeeded\r\n*0\r\n*0\r\n*10\r\n$4\r\n\
    echo\r\n:2\r\n*3\r\n+loading\r\n+stale\r\n+fast\r\n:0\r\n:0\r\n\
    :0\r\n*2\r\n+@fast\r\n+@connection\r\n*0\r\n*0\r\n*0\r\n*10\r\n\
    $5\r\nhello\r\n:-1\r\n*6\r\n+noscript\r\n+loading\r\n+stale\r\n\
    +fast\r\n+no_auth\r\n+allow_busy\r\n:0\r\n:0\r\n:0\r\n*2\r\n+@fast\r\n\
    +@connection\r\n*0\r\n*0\r\n*0\r\n*10\r\n$4\r\nauth\r\n:-2\r\n\
    *6\r\n+noscript\r\n+loading\r\n+stale\r\n+fast\r\n+no_auth\r\n\
    +allow_busy\r\n:0\r\n:0\r\n:0\r\n*2\r\n+@fast\r\n+@connection\r\n\
    *0\r\n*0\r\n*0\r\n*10\r\n$6\r\nselect\r\n:2\r\n*3\r\n+loading\r\n\
    +stale\r\n+fast\r\n:0\r\n:0\r\n:0\r\n*2\r\n+@fast\r\n+@connection\r\n\
    *0\r\n*0\r\n*0\r\n*10\r\n$4\r\nquit\r\n:-1\r\n*6\r\n+noscript\r\n\
    +loading\r\n+stale\r\n+fast\r\n+no_auth\r\n+allow_busy\r\n:0\r\n\
    :0\r\n:0\r\n*2\r\n+@fast\r\n+@connection\r\n*0\r\n*0\r\n*0\r\n\
    *10\r\n$5\r\nreset\r\n:1\r\n*6\r\n+noscript\r\n+loading\r\n+stale\r\n\
    +fast\r\n+no_auth\r\n+allow_busy\r\n:0\r\n:0\r\n:0\r\n*2\r\n+@fast\r\n\
    +@connection\r\n*0\r\n*0\r\n*0\r\n*10\r\n$6\r\ndbsize\r\n:1\r\n\
    *2\r\n+readonly\r\n+fast\r\n:0\r\n:0\r\n:0\r\n*3\r\n+@keyspace\r\n\
    +@read\r\n+@fast\r\n*2\r\n$25\r\nrequest_policy:all_shards\r\n\
    $23\r\nresponse_policy:agg_sum\r\n*0\r\n*0\r\n*10\r\n$4\r\ntime\r\n\
    :1\r\n*3\r\n+loading\r\n+stale\r\n+fast\r\n:0\r\n:0\r\n:0\r\n\
    *1\r\n+@fast\r\n*1\r\n$23\r\nnondeterministic_output\r\n*0\r\n\
    *0\r\n*10\r\n$4\r\ninfo\r\n:-1\r\n*2\r\n+loading\r\n+stale\r\n\
    :0\r\n:0\r\n:0\r\n*2\r\n+@slow\r\n+@dangerous\r\n*3\r\n$23\r\n\
    nondeterministic_output\r\n$25\r\nrequest_policy:all_shards\r\n\
    $23\r\nresponse_policy:special\r\n*0\r\n*0\r\n*10\r\n$3\r\nget\r\n\
    :2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n*3\r\n+@read\r\n\
    +@string\r\n+@fast\r\n*0\r\n*1\r\n*6\r\n$5\r\nflags\r\n*2\r\n\
    +RO\r\n+access\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n\
    $5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:1\r\n$9\r\n\
    find_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n\
    *6\r\n$7\r\nlastkey\r\n:0\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n\
    :0\r\n*0\r\n*10\r\n$3\r\nset\r\n:-3\r\n*2\r\n+write\r\n+denyoom\r\n\
    :1\r\n:1\r\n:1\r\n*3\r\n+@write\r\n+@string\r\n+@slow\r\n*0\r\n\
    *1\r\n*8\r\n$5\r\nnotes\r\n$48\r\nRW and ACCESS due to the optional `GET` argument\r\n\
    $5\r\nflags\r\n*4\r\n+RW\r\n+access\r\n+update\r\n+variable_flags\r\n\
    $12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\n\
    spec\r\n*2\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\n\
    type\r\n$5\r\nrange\r\n$4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n:0\r\n\
    $7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n*0\r\n*10\r\n$3\r\n\
    del\r\n:-2\r\n*1\r\n+write\r\n:1\r\n:-1\r\n:1\r\n*3\r\n+@keyspace\r\n\
    +@write\r\n+@slow\r\n*2\r\n$26\r\nrequest_policy:multi_shard\r\n\
    $23\r\nresponse_policy:agg_sum\r\n*1\r\n*6\r\n$5\r\nflags\r\n\
    *2\r\n+RM\r\n+delete\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n\
    $5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:1\r\n$9\r\n\
    find_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n\
    *6\r\n$7\r\nlastkey\r\n:-1\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n\
    :0\r\n*0\r\n*10\r\n$6\r\nunlink\r\n:-2\r\n*2\r\n+write\r\n+fast\r\n\
    :1\r\n:-1\r\n:1\r\n*3\r\n+@keyspace\r\n+@write\r\n+@fast\r\n*2\r\n\
    $26\r\nrequest_policy:multi_shard\r\n$23\r\nresponse_policy:agg_sum\r\n\
    *1\r\n*6\r\n$5\r\nflags\r\n*2\r\n+RM\r\n+delete\r\n$12\r\nbegin_search\r\n\
    *4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\n\
    index\r\n:1\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n\
    $4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n:-1\r\n$7\r\nkeystep\r\n\
    :1\r\n$5\r\nlimit\r\n:0\r\n*0\r\n*10\r\n$6\r\nexists\r\n:-2\r\n\
    *2\r\n+readonly\r\n+fast\r\n:1\r\n:-1\r\n:1\r\n*3\r\n+@keyspace\r\n\
    +@read\r\n+@fast\r\n*2\r\n$26\r\nrequest_policy:multi_shard\r\n\
    $23\r\nresponse_policy:agg_sum\r\n*1\r\n*6\r\n$5\r\nflags\r\n\
    *1\r\n+RO\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\n\
    index\r\n$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n\
    *4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n*6\r\n$7\r\n\
    lastkey\r\n:-1\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n\
    *0\r\n*10\r\n$4\r\nmget\r\n:-2\r\n*2\r\n+readonly\r\n+fast\r\n\
    :1\r\n:-1\r\n:1\r\n*3\r\n+@read\r\n+@string\r\n+@fast\r\n*1\r\n\
    $26\r\nrequest_policy:multi_shard\r\n*1\r\n*6\r\n$5\r\nflags\r\n\
    *2\r\n+RO\r\n+access\r\n$12\r\nbegin_search\r\n*4\r\n$4\r\ntype\r\n\
    $5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\nindex\r\n:1\r\n$9\r\n\
    find_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n$4\r\nspec\r\n\
    *6\r\n$7\r\nlastkey\r\n:-1\r\n$7\r\nkeystep\r\n:1\r\n$5\r\nlimit\r\n\
    :0\r\n*0\r\n*10\r\n$4\r\nmset\r\n:-3\r\n*2\r\n+write\r\n+denyoom\r\n\
    :1\r\n:-1\r\n:2\r\n*3\r\n+@write\r\n+@string\r\n+@slow\r\n*2\r\n\
    $26\r\nrequest_policy:multi_shard\r\n$29\r\nresponse_policy:all_succeeded\r\n\
    *1\r\n*6\r\n$5\r\nflags\r\n*2\r\n+OW\r\n+update\r\n$12\r\nbegin_search\r\n\
    *4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n*2\r\n$5\r\n\
    index\r\n:1\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n$5\r\nrange\r\n\
    $4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n:-1\r\n$7\r\nkeystep\r\n\
    :2\r\n$5\r\nlimit\r\n:0\r\n*0\r\n*10\r\n$4\r\ntype\r\n:2\r\n*2\r\n\
    +readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n*3\r\n+@keyspace\r\n+@read\r\n\
    +@fast\r\n*0\r\n*1\r\n*6\r\n$5\r\nflags\r\n*1\r\n+RO\r\n$12\r\n\
    begin_search\r\n*4\r\n$4\r\ntype\r\n$5\r\nindex\r\n$4\r\nspec\r\n\
    *2\r\n$5\r\nindex\r\n:1\r\n$9\r\nfind_keys\r\n*4\r\n$4\r\ntype\r\n\
    $5\r\nrange\r\n$4\r\nspec\r\n*6\r\n$7\r\nlastkey\r\n:0\r\n$7\r\n\
    keystep\r\n:1\r\n$5\r\nlimit\r\n:0\r\n*0\r\n*10\r\n$5\r\nmulti\r\n\
    :1\r\n*5\r\n+noscript\r\n+loading\r\n+stale\r\n+fast\r\n+allow_busy\r\n\
    :0\r\n:0\r\n:0\r\n*2\r\n+@fast\r\n+@transaction\r\n*0\r\n*0\r\n\
    *0\r\n*10\r\n$4\r\nexec\r\n:1\r\n*4\r\n+noscript\r\n+loading\r\n\
    +stale\r\n+skip_slowlog\r\n:0\r\n:0\r\n:0\r\n*2\r\n+@slow\r\n\
    +@transaction\r\n*0\r\n*0\r\n*0\r\n*10\r\n$7\r\ndiscard\r\n:1\r\n\
    *5\r\n+noscript\r\n+loading\r\n+stale\r\n+fast\r\n+allow_busy\r\n\
    :0\r\n:0\r\n:0\r\n*2\r\n+@fast\r\n+@transaction\r\n*0\r\n*0\r\n\
    *0\r\n";

/// Redis 7.0.15's reply to `COMMAND DOCS get`.
const COMMAND_DOCS_GET_RESP2: &[u8] =
    b"*2\r\n$3\r\nget\r\n*10\r\n$7\r\nsummary\r\n$22\r\nGet the value of a key\r\n\
    $5\r\nsince\r\n$5\r\n1.0.0\r\n$5\r\ngroup\r\n$6\r\nstring\r\n\
    $10\r\ncomplexity\r\n$4\r\nO(1)\r\n$9\r\narguments\r\n*1\r\n*6\r\n\
    $4\r\nname\r\n$3\r\nkey\r\n$4\r\ntype\r\n$3\r\nkey\r\n$14\r\n\
    key_spec_index\r\n:0\r\n";

/// Redis 7.0.15's reply to `COMMAND DOCS set nosuch client|id` under RESP3.
const COMMAND_DOCS_SET_CLIENT_ID_RESP3: &[u8] =
    b"%2\r\n$3\r\nset\r\n%6\r\n$7\r\nsummary\r\n$29\r\nSet the string value of a key\r\n\
    $5\r\nsince\r\n$5\r\n1.0.0\r\n$5\r\ngroup\r\n$6\r\nstring\r\n\
    $10\r\ncomplexity\r\n$4\r\nO(1)\r\n$7\r\nhistory\r\n~4\r\n*2\r\n\
    $6\r\n2.6.12\r\n$44\r\nAdded the `EX`, `PX`, `NX` and `XX` options.\r\n\
    *2\r\n$5\r\n6.0.0\r\n$27\r\nAdded the `KEEPTTL` option.\r\n*2\r\n\
    $5\r\n6.2.0\r\n$42\r\nAdded the `GET`, `EXAT` and `PXAT` option.\r\n\
    *2\r\n$5\r\n7.0.0\r\n$55\r\nAllowed the `NX` and `GET` options to be used together.\r\n\
    $9\r\narguments\r\n*5\r\n%3\r\n$4\r\nname\r\n$3\r\nkey\r\n$4\r\n\
    type\r\n$3\r\nkey\r\n$14\r\nkey_spec_index\r\n:0\r\n%2\r\n$4\r\n\
    name\r\n$5\r\nvalue\r\n$4\r\ntype\r\n$6\r\nstring\r\n%5\r\n$4\r\n\
    name\r\n$9\r\ncondition\r\n$4\r\ntype\r\n$5\r\noneof\r\n$5\r\n\
    since\r\n$6\r\n2.6.12\r\n$5\r\nflags\r\n~1\r\n+optional\r\n$9\r\n\
    arguments\r\n*2\r\n%3\r\n$4\r\nname\r\n$2\r\nnx\r\n$4\r\ntype\r\n\
    $10\r\npure-token\r\n$5\r\ntoken\r\n$2\r\nNX\r\n%3\r\n$4\r\nname\r\n\
    $2\r\nxx\r\n$4\r\ntype\r\n$10\r\npure-token\r\n$5\r\ntoken\r\n\
    $2\r\nXX\r\n%5\r\n$4\r\nname\r\n$3\r\nget\r\n$4\r\ntype\r\n$10\r\n\
    pure-token\r\n$5\r\ntoken\r\n$3\r\nGET\r\n$5\r\nsince\r\n$5\r\n\
    6.2.0\r\n$5\r\nflags\r\n~1\r\n+optional\r\n%4\r\n$4\r\nname\r\n\
    $10\r\nexpiration\r\n$4\r\ntype\r\n$5\r\noneof\r\n$5\r\nflags\r\n\
    ~1\r\n+optional\r\n$9\r\narguments\r\n*5\r\n%4\r\n$4\r\nname\r\n\
    $7\r\nseconds\r\n$4\r\ntype\r\n$7\r\ninteger\r\n$5\r\ntoken\r\n\
    $2\r\nEX\r\n$5\r\nsince\r\n$6\r\n2.6.12\r\n%4\r\n$4\r\nname\r\n\
    $12\r\nmilliseconds\r\n$4\r\ntype\r\n$7\r\ninteger\r\n$5\r\ntoken\r\n\
    $2\r\nPX\r\n$5\r\nsince\r\n$6\r\n2.6.12\r\n%4\r\n$4\r\nname\r\n\
    $17\r\nunix-time-seconds\r\n$4\r\ntype\r\n$9\r\nunix-time\r\n\
    $5\r\ntoken\r\n$4\r\nEXAT\r\n$5\r\nsince\r\n$5\r\n6.2.0\r\n%4\r\n\
    $4\r\nname\r\n$22\r\nunix-time-milliseconds\r\n$4\r\ntype\r\n\
    $9\r\nunix-time\r\n$5\r\ntoken\r\n$4\r\nPXAT\r\n$5\r\nsince\r\n\
    $5\r\n6.2.0\r\n%4\r\n$4\r\nname\r\n$7\r\nkeepttl\r\n$4\r\ntype\r\n\
    $10\r\npure-token\r\n$5\r\ntoken\r\n$7\r\nKEEPTTL\r\n$5\r\nsince\r\n\
    $5\r\n6.0.0\r\n$9\r\nclient|id\r\n%4\r\n$7\r\nsummary\r\n$48\r\n\
    Returns the client ID for the current connection\r\n$5\r\nsince\r\n\
    $5\r\n5.0.0\r\n$5\r\ngroup\r\n$10\r\nconnection\r\n$10\r\ncomplexity\r\n\
    $4\r\nO(1)\r\n";

// ---------------------------------------------------------------------------
// Issue 17, part 5: INFO's sections, CLIENT's remaining subcommands, CONFIG
// timeout, COMMAND GETKEYSANDFLAGS, redacted secrets. Every fixed reply was
// taken from Redis 7.0.15 first.

/// The `# Title` lines of an INFO reply, in order.
fn info_titles(reply: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bulk_body(reply))
        .lines()
        .filter_map(|l| l.strip_prefix("# ").map(str::to_owned))
        .collect()
}

/// The value of `field` in an INFO reply.
fn info_field(reply: &[u8], field: &str) -> Option<String> {
    String::from_utf8_lossy(bulk_body(reply))
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")).map(str::to_owned))
}

// INFO picks sections as Redis 7.0 does: the default set (with Redis's
// CPU, Modules, Errorstats and Cluster, then dynokv's own Dynamo), ALL and
// EVERYTHING adding Commandstats and Latencystats, names in any case and
// in any mix, unknown names ignored; the fixed sections byte for byte.
#[tokio::test]
async fn info_sections_as_redis_selects_them() {
    let node = start_node().await;
    let mut c = node.connect().await;
    let default = [
        "Server",
        "Clients",
        "Memory",
        "Persistence",
        "Stats",
        "Replication",
        "CPU",
        "Modules",
        "Errorstats",
        "Cluster",
        "Keyspace",
        "Dynamo",
    ];
    let mut all = default.to_vec();
    all.insert(8, "Commandstats");
    all.insert(10, "Latencystats");
    for (request_bytes, titles) in [
        (&b"INFO\r\n"[..], &default[..]),
        (b"INFO default\r\n", &default[..]),
        (b"INFO server DEFAULT clients\r\n", &default[..]),
        (b"INFO all\r\n", &all[..]),
        (b"INFO everything\r\n", &all[..]),
        (b"INFO ALL commandstats\r\n", &all[..]),
        (
            b"INFO latencystats CPU nosuch\r\n",
            &["CPU", "Latencystats"][..],
        ),
    ] {
        let reply = request(&mut c, request_bytes).await;
        assert_eq!(info_titles(&reply), titles, "{}", escaped(request_bytes));
    }
    roundtrip(&mut c, b"INFO modules\r\n", b"$11\r\n# Modules\r\n\r\n").await;
    roundtrip(
        &mut c,
        b"INFO Cluster\r\n",
        b"$30\r\n# Cluster\r\ncluster_enabled:0\r\n\r\n",
    )
    .await;
    let cpu = request(&mut c, b"INFO cpu\r\n").await;
    for field in [
        "used_cpu_sys",
        "used_cpu_user",
        "used_cpu_sys_children",
        "used_cpu_user_children",
    ] {
        let value = info_field(&cpu, field).unwrap_or_else(|| panic!("{field} missing"));
        let (secs, micros) = value.split_once('.').expect("seconds.micros");
        assert!(
            secs.parse::<u64>().is_ok() && micros.len() == 6 && micros.parse::<u32>().is_ok(),
            "{field}:{value}"
        );
    }
    drop(c);
    node.stop().await;
}

// Commandstats, Errorstats and Latencystats count for real: calls, rejected
// calls (arity) and failed calls per command (subcommands by their
// `container|sub` name), error replies by prefix, and a latency line per
// called command; CONFIG RESETSTAT zeroes them.
#[tokio::test]
async fn command_and_error_stats_count_what_happened() {
    let node = start_node_with_password().await;
    let mut c = node.connect().await;
    roundtrip(&mut c, b"GET k\r\n", NOAUTH).await;
    roundtrip(
        &mut c,
        format!("AUTH {PASSWORD}\r\n").as_bytes(),
        b"+OK\r\n",
    )
    .await;
    roundtrip(&mut c, b"CONFIG RESETSTAT\r\n", b"+OK\r\n").await;
    roundtrip(
        &mut c,
        b"INFO errorstats\r\n",
        b"$14\r\n# Errorstats\r\n\r\n",
    )
    .await;
    roundtrip(&mut c, b"GET k\r\n", b"$-1\r\n").await;
    roundtrip(&mut c, b"GET k\r\n", b"$-1\r\n").await;
    roundtrip(&mut c, b"GET\r\n", &arity_error("get")).await;
    roundtrip(&mut c, b"SET k v NX XX\r\n", b"-ERR syntax error\r\n").await;
    roundtrip(
        &mut c,
        b"SET k notanumber\r\nINCR k\r\n",
        b"+OK\r\n-ERR value is not an integer or out of range\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"NOSUCH\r\n",
        b"-ERR unknown command 'NOSUCH', with args beginning with: \r\n",
    )
    .await;
    roundtrip(&mut c, b"AUTH default wrong\r\n", WRONGPASS).await;
    roundtrip(&mut c, b"CLIENT GETREDIR\r\n", b":-1\r\n").await;
    roundtrip(
        &mut c,
        b"INFO errorstats\r\n",
        b"$66\r\n# Errorstats\r\nerrorstat_ERR:count=4\r\nerrorstat_WRONGPASS:count=1\r\n\r\n",
    )
    .await;
    let stats = request(&mut c, b"INFO commandstats\r\n").await;
    let line = |name: &str| {
        info_field(&stats, &format!("cmdstat_{name}")).unwrap_or_else(|| {
            panic!("no cmdstat_{name} in {}", escaped(&stats));
        })
    };
    let check = |name: &str, calls: u64, rejected: u64, failed: u64| {
        let value = line(name);
        assert!(
            value.starts_with(&format!("calls={calls},usec=")),
            "{name}: {value}"
        );
        assert!(
            value.ends_with(&format!(",rejected_calls={rejected},failed_calls={failed}")),
            "{name}: {value}"
        );
        assert!(value.contains(",usec_per_call="), "{name}: {value}");
    };
    check("get", 2, 1, 0);
    check("set", 2, 0, 1);
    check("incr", 1, 0, 1);
    check("auth", 1, 0, 1);
    check("client|getredir", 1, 0, 0);
    check("config|resetstat", 1, 0, 0);
    assert!(info_field(&stats, "cmdstat_nosuch").is_none());
    let latency = request(&mut c, b"INFO latencystats\r\n").await;
    let get = info_field(&latency, "latency_percentiles_usec_get").expect("a GET latency line");
    let parts: Vec<&str> = get.split(',').collect();
    assert_eq!(parts.len(), 3, "{get}");
    for (part, label) in parts.iter().zip(["p50=", "p99=", "p99.9="]) {
        let value = part.strip_prefix(label).unwrap_or_else(|| panic!("{get}"));
        let usec: f64 = value.parse().unwrap_or_else(|_| panic!("{get}"));
        assert!(
            usec > 0.0 && value.split_once('.').is_some_and(|(_, d)| d.len() == 3),
            "{get}"
        );
    }
    roundtrip(&mut c, b"CONFIG RESETSTAT\r\n", b"+OK\r\n").await;
    roundtrip(
        &mut c,
        b"INFO errorstats\r\n",
        b"$14\r\n# Errorstats\r\n\r\n",
    )
    .await;
    let stats = request(&mut c, b"INFO commandstats\r\n").await;
    assert!(
        info_field(&stats, "cmdstat_get").is_none(),
        "{}",
        escaped(&stats)
    );
    drop(c);
    node.stop().await;
}

// CLIENT TRACKINGINFO, GETREDIR, UNBLOCK, NO-EVICT, TRACKING OFF and the
// errors of PAUSE, UNBLOCK, REPLY, NO-EVICT and TRACKING, as Redis 7.0.15
// sends them; TRACKING ON is refused with a clear error (no invalidation
// messages are ever sent here), and TRACKINGINFO then still says "off".
#[tokio::test]
async fn client_tracking_unblock_no_evict_and_errors() {
    let node = start_node().await;
    let mut c = node.connect().await;
    let id = client_id(&mut c).await;
    let cases: Vec<(Vec<u8>, &[u8])> = vec![
        (
            b"CLIENT TRACKINGINFO\r\n".to_vec(),
            b"*6\r\n$5\r\nflags\r\n*1\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n",
        ),
        (b"CLIENT GETREDIR\r\n".to_vec(), b":-1\r\n"),
        (b"CLIENT UNBLOCK 5\r\n".to_vec(), b":0\r\n"),
        (format!("CLIENT UNBLOCK {id} ERROR\r\n").into_bytes(), b":0\r\n"),
        (b"CLIENT UNBLOCK 5 timeout\r\n".to_vec(), b":0\r\n"),
        (
            b"CLIENT UNBLOCK 5 foo\r\n".to_vec(),
            b"-ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR\r\n",
        ),
        (
            b"CLIENT UNBLOCK x\r\n".to_vec(),
            b"-ERR value is not an integer or out of range\r\n",
        ),
        (
            b"CLIENT UNBLOCK 1 2 3\r\n".to_vec(),
            b"-ERR unknown subcommand or wrong number of arguments for 'UNBLOCK'. Try CLIENT HELP.\r\n",
        ),
        (b"CLIENT UNBLOCK\r\n".to_vec(), b"-ERR wrong number of arguments for 'client|unblock' command\r\n"),
        (b"CLIENT NO-EVICT on\r\n".to_vec(), b"+OK\r\n"),
        (b"CLIENT NO-EVICT OFF\r\n".to_vec(), b"+OK\r\n"),
        (b"CLIENT NO-EVICT maybe\r\n".to_vec(), b"-ERR syntax error\r\n"),
        (b"CLIENT REPLY maybe\r\n".to_vec(), b"-ERR syntax error\r\n"),
        (b"CLIENT PAUSE abc\r\n".to_vec(), b"-ERR timeout is not an integer or out of range\r\n"),
        (b"CLIENT PAUSE -1\r\n".to_vec(), b"-ERR timeout is negative\r\n"),
        (b"CLIENT PAUSE 10 foo\r\n".to_vec(), b"-ERR CLIENT PAUSE mode must be WRITE or ALL\r\n"),
        (b"CLIENT PAUSE abc foo\r\n".to_vec(), b"-ERR CLIENT PAUSE mode must be WRITE or ALL\r\n"),
        (
            b"CLIENT PAUSE 1 2 3\r\n".to_vec(),
            b"-ERR unknown subcommand or wrong number of arguments for 'PAUSE'. Try CLIENT HELP.\r\n",
        ),
        (b"CLIENT PAUSE 0\r\n".to_vec(), b"+OK\r\n"),
        (b"CLIENT UNPAUSE\r\n".to_vec(), b"+OK\r\n"),
        (b"CLIENT TRACKING off\r\n".to_vec(), b"+OK\r\n"),
        (
            b"CLIENT TRACKING off bcast prefix a optin optout noloop\r\n".to_vec(),
            b"+OK\r\n",
        ),
        (format!("CLIENT TRACKING off redirect {id}\r\n").into_bytes(), b"+OK\r\n"),
        (
            b"CLIENT TRACKING off redirect 999999\r\n".to_vec(),
            b"-ERR The client ID you want redirect to does not exist\r\n",
        ),
        (
            b"CLIENT TRACKING off redirect x\r\n".to_vec(),
            b"-ERR value is not an integer or out of range\r\n",
        ),
        (b"CLIENT TRACKING off prefix\r\n".to_vec(), b"-ERR syntax error\r\n"),
        (b"CLIENT TRACKING maybe\r\n".to_vec(), b"-ERR syntax error\r\n"),
        // Deliberate difference: Redis enables tracking and says +OK.
        (
            b"CLIENT TRACKING on\r\n".to_vec(),
            b"-ERR CLIENT TRACKING ON is not supported: this server sends no invalidation messages (client-side caching)\r\n",
        ),
        (b"CLIENT GETREDIR\r\n".to_vec(), b":-1\r\n"),
    ];
    for (request_bytes, expected) in &cases {
        roundtrip(&mut c, request_bytes, expected).await;
    }
    hello3(&mut c).await;
    roundtrip(
        &mut c,
        b"CLIENT TRACKINGINFO\r\n",
        b"%3\r\n$5\r\nflags\r\n~1\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n",
    )
    .await;
    drop(c);
    node.stop().await;
}

// CLIENT REPLY OFF sends nothing (not even errors) until ON; SKIP drops its
// own reply and the next command's; SKIP under OFF changes nothing. The
// byte stream is Redis 7.0.15's for the same requests.
#[tokio::test]
async fn client_reply_off_skip_on() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(
        &mut c,
        b"CLIENT REPLY OFF\r\nPING\r\nGET\r\nCLIENT REPLY SKIP\r\nPING\r\nCLIENT REPLY ON\r\nPING\r\n\
          CLIENT REPLY SKIP\r\nPING\r\nPING\r\nCLIENT REPLY SKIP\r\nCLIENT REPLY SKIP\r\nECHO a\r\nECHO b\r\n",
        b"+OK\r\n+PONG\r\n+PONG\r\n$1\r\nb\r\n",
    )
    .await;
    roundtrip(&mut c, b"CLIENT REPLY OFF\r\nSET k v\r\n", b"").await;
    assert_quiet(&mut c).await;
    roundtrip(
        &mut c,
        b"CLIENT REPLY ON\r\nGET k\r\n",
        b"+OK\r\n$1\r\nv\r\n",
    )
    .await;
    drop(c);
    node.stop().await;
}

// CLIENT PAUSE WRITE holds writers (and EXEC of a transaction that writes)
// for the pause, not readers; CLIENT UNPAUSE releases them at once; PAUSE
// ALL holds every command, PING included. Timed on a real clock with wide
// margins: "held" is at least 80% of the pause, "not held" well under it.
#[tokio::test]
async fn client_pause_holds_writers_for_the_pause() {
    let node = start_node().await;
    let mut admin = node.connect().await;
    let mut client = node.connect().await;
    const PAUSE_MS: u64 = 700;
    roundtrip(
        &mut admin,
        format!("CLIENT PAUSE {PAUSE_MS} WRITE\r\n").as_bytes(),
        b"+OK\r\n",
    )
    .await;
    let started = Instant::now();
    roundtrip(&mut client, b"GET k\r\n", b"$-1\r\n").await;
    assert!(
        started.elapsed() < Duration::from_millis(PAUSE_MS / 2),
        "a read was held"
    );
    roundtrip(&mut client, b"SET k v\r\n", b"+OK\r\n").await;
    assert!(
        started.elapsed() >= Duration::from_millis(PAUSE_MS * 8 / 10),
        "SET answered after {:?}",
        started.elapsed()
    );

    roundtrip(&mut admin, b"CLIENT PAUSE 60000 WRITE\r\n", b"+OK\r\n").await;
    roundtrip(&mut client, b"MULTI\r\nGET k\r\n", b"+OK\r\n+QUEUED\r\n").await;
    roundtrip(&mut client, b"EXEC\r\n", b"*1\r\n$1\r\nv\r\n").await;
    send(&mut client, b"MULTI\r\nDEL k\r\nEXEC\r\n").await;
    expect_bytes(&mut client, b"+OK\r\n").await;
    assert_quiet(&mut client).await;
    let unpaused = Instant::now();
    roundtrip(&mut admin, b"CLIENT UNPAUSE\r\n", b"+OK\r\n").await;
    expect_bytes(&mut client, b"+QUEUED\r\n*1\r\n:1\r\n").await;
    assert!(
        unpaused.elapsed() < Duration::from_secs(2),
        "UNPAUSE released late"
    );

    roundtrip(
        &mut admin,
        format!("CLIENT PAUSE {PAUSE_MS} ALL\r\n").as_bytes(),
        b"+OK\r\n",
    )
    .await;
    let started = Instant::now();
    roundtrip(&mut client, b"PING\r\n", b"+PONG\r\n").await;
    assert!(
        started.elapsed() >= Duration::from_millis(PAUSE_MS * 8 / 10),
        "PING not held"
    );
    drop((admin, client));
    node.stop().await;
}

// CONFIG SET timeout closes a client idle for longer than that many
// seconds, and only an idle one; 0 (the default) never closes. CONFIG GET
// and the CONFIG SET errors are Redis's.
#[tokio::test]
async fn config_timeout_closes_idle_clients() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(
        &mut c,
        b"CONFIG GET timeout\r\n",
        b"*2\r\n$7\r\ntimeout\r\n$1\r\n0\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"CONFIG SET timeout -1\r\n",
        b"-ERR CONFIG SET failed (possibly related to argument 'timeout') - argument must be between 0 and 2147483647 inclusive\r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"CONFIG SET timeout abc\r\n",
        b"-ERR CONFIG SET failed (possibly related to argument 'timeout') - argument couldn't be parsed into an integer\r\n",
    )
    .await;
    let mut idle = node.connect().await;
    roundtrip(&mut idle, b"PING\r\n", b"+PONG\r\n").await;
    roundtrip(&mut c, b"CONFIG SET timeout 1\r\n", b"+OK\r\n").await;
    roundtrip(
        &mut c,
        b"CONFIG GET timeout\r\n",
        b"*2\r\n$7\r\ntimeout\r\n$1\r\n1\r\n",
    )
    .await;
    // The busy client keeps talking every 300 ms for 2.4 s and stays open.
    let started = Instant::now();
    for _ in 0..8 {
        roundtrip(&mut c, b"PING\r\n", b"+PONG\r\n").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_closed(&mut idle).await;
    assert!(started.elapsed() < IO_TIMEOUT + Duration::from_secs(3));
    roundtrip(&mut c, b"CONFIG SET timeout 0\r\n", b"+OK\r\n").await;
    let mut kept = node.connect().await;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    roundtrip(&mut kept, b"PING\r\n", b"+PONG\r\n").await;
    drop((c, kept));
    node.stop().await;
}

// COMMAND GETKEYSANDFLAGS answers each key with its key spec's flags, as
// Redis 7.0.15 does (SET's depend on GET); COMMAND GETKEYS agrees.
#[tokio::test]
async fn command_getkeysandflags() {
    let node = start_node().await;
    let mut c = node.connect().await;
    let cases: [(&[u8], &[u8]); 9] = [
        (b"COMMAND GETKEYSANDFLAGS get a\r\n", b"*1\r\n*2\r\n$1\r\na\r\n*2\r\n+RO\r\n+access\r\n"),
        (b"COMMAND GETKEYSANDFLAGS set a b\r\n", b"*1\r\n*2\r\n$1\r\na\r\n*2\r\n+OW\r\n+update\r\n"),
        (
            b"COMMAND GETKEYSANDFLAGS set a b get\r\n",
            b"*1\r\n*2\r\n$1\r\na\r\n*3\r\n+RW\r\n+access\r\n+update\r\n",
        ),
        (
            b"COMMAND GETKEYSANDFLAGS rename a b\r\n",
            b"*2\r\n*2\r\n$1\r\na\r\n*3\r\n+RW\r\n+access\r\n+delete\r\n*2\r\n$1\r\nb\r\n*2\r\n+OW\r\n+update\r\n",
        ),
        (
            b"COMMAND GETKEYSANDFLAGS copy a b\r\n",
            b"*2\r\n*2\r\n$1\r\na\r\n*2\r\n+RO\r\n+access\r\n*2\r\n$1\r\nb\r\n*2\r\n+OW\r\n+update\r\n",
        ),
        (
            b"COMMAND GETKEYSANDFLAGS mset a b c d\r\n",
            b"*2\r\n*2\r\n$1\r\na\r\n*2\r\n+OW\r\n+update\r\n*2\r\n$1\r\nc\r\n*2\r\n+OW\r\n+update\r\n",
        ),
        (
            b"COMMAND GETKEYSANDFLAGS del a b\r\n",
            b"*2\r\n*2\r\n$1\r\na\r\n*2\r\n+RM\r\n+delete\r\n*2\r\n$1\r\nb\r\n*2\r\n+RM\r\n+delete\r\n",
        ),
        (
            b"COMMAND GETKEYSANDFLAGS ping\r\n",
            b"-ERR wrong number of arguments for 'command|getkeysandflags' command\r\n",
        ),
        (b"COMMAND GETKEYS mset a b c d\r\n", b"*2\r\n$1\r\na\r\n$1\r\nc\r\n"),
    ];
    for (request_bytes, expected) in cases {
        roundtrip(&mut c, request_bytes, expected).await;
    }
    drop(c);
    node.stop().await;
}

// An unknown command whose arguments Redis treats as secrets (ACL SETUSER
// rules, MIGRATE AUTH) is answered without them: `(redacted)` stands where
// Redis's slow log and MONITOR show it, the other arguments stay.
#[tokio::test]
async fn secrets_are_redacted_from_errors() {
    let node = start_node().await;
    let mut c = node.connect().await;
    roundtrip(
        &mut c,
        b"ACL SETUSER bob on >hunter2\r\n",
        b"-ERR unknown command 'ACL', with args beginning with: 'SETUSER' 'bob' '(redacted)' '(redacted)' \r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"MIGRATE h 1 k 0 5 AUTH hunter2\r\n",
        b"-ERR unknown command 'MIGRATE', with args beginning with: 'h' '1' 'k' '0' '5' 'AUTH' '(redacted)' \r\n",
    )
    .await;
    roundtrip(
        &mut c,
        b"ACL WHOAMI\r\n",
        b"-ERR unknown command 'ACL', with args beginning with: 'WHOAMI' \r\n",
    )
    .await;
    let list = request(&mut c, b"CLIENT LIST\r\n").await;
    assert!(
        !list.windows(7).any(|w| w == b"hunter2"),
        "{}",
        escaped(&list)
    );
    drop(c);
    node.stop().await;
}
