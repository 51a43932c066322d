//! MONITOR against a real `dynokv` process: a raw connection monitors, and
//! its bytes are checked exactly (the forms were first taken from
//! `redis-server` 7.0.15 sent the same commands), while the `redis` crate
//! and raw connections run commands. Only the time stamp and the client
//! ports vary between runs; the helpers check the stamp's form and the
//! tests compute the ports.

#![expect(
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

mod common;

use common::{TestNode, client_info_field, command, connect};
use redis::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// The longest any one read or write may take.
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a connection must stay silent to count as "nothing came".
const QUIET: Duration = Duration::from_millis(300);

const KEYSPACE_ERROR: &[u8] = b"-ERR Replica can't interact with the keyspace\r\n";

/// A raw RESP connection that reads line by line.
struct Raw {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no CRLF (long lines arrive
    /// in many reads; each is searched once).
    searched: usize,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let stream = timeout(IO_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        Raw {
            stream,
            buffer: Vec::new(),
            searched: 0,
        }
    }

    /// This connection's address as the node sees it.
    fn addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    async fn send(&mut self, bytes: &[u8]) {
        timeout(IO_TIMEOUT, self.stream.write_all(bytes))
            .await
            .expect("write in time")
            .expect("write");
    }

    /// Reads more bytes; false at EOF (or a reset: the node closed).
    async fn fill(&mut self) -> bool {
        let mut chunk = vec![0; 256 * 1024];
        match timeout(IO_TIMEOUT, self.stream.read(&mut chunk))
            .await
            .expect("bytes in time")
        {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next line, without its CRLF.
    async fn line(&mut self) -> Vec<u8> {
        loop {
            let from = self.searched.saturating_sub(1);
            if let Some(at) = self.buffer[from..].windows(2).position(|w| w == b"\r\n") {
                let end = from + at;
                let line = self.buffer[..end].to_vec();
                self.buffer.drain(..end + 2);
                self.searched = 0;
                return line;
            }
            self.searched = self.buffer.len();
            assert!(self.fill().await, "closed before a full line");
        }
    }

    /// The next whole reply, raw (aggregates read element by element).
    async fn reply(&mut self) -> Vec<u8> {
        let mut raw = Vec::new();
        let mut pending = 1_usize;
        while pending > 0 {
            pending -= 1;
            let line = self.line().await;
            raw.extend_from_slice(&line);
            raw.extend_from_slice(b"\r\n");
            let count = || -> usize {
                std::str::from_utf8(&line[1..])
                    .ok()
                    .and_then(|n| n.parse::<i64>().ok())
                    .map_or(0, |n| usize::try_from(n).unwrap_or(0))
            };
            match line.first() {
                Some(b'*' | b'~') => pending += count(),
                Some(b'%') => pending += 2 * count(),
                Some(b'$' | b'=') if !line.starts_with(b"$-") => {
                    let body = count() + 2;
                    while self.buffer.len() < body {
                        assert!(self.fill().await, "closed inside a bulk string");
                    }
                    raw.extend(self.buffer.drain(..body));
                    self.searched = 0;
                }
                _ => {}
            }
        }
        raw
    }

    /// Reads exactly `expected` next.
    async fn expect(&mut self, expected: &[u8]) {
        while self.buffer.len() < expected.len() {
            assert!(
                self.fill().await,
                "closed; wanted {:?}",
                String::from_utf8_lossy(expected)
            );
        }
        let got: Vec<u8> = self.buffer.drain(..expected.len()).collect();
        self.searched = 0;
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected)
        );
    }

    /// Sends `args` as one command and reads exactly `reply`.
    async fn roundtrip(&mut self, args: &[&[u8]], reply: &[u8]) {
        self.send(&command(args)).await;
        self.expect(reply).await;
    }

    /// Nothing arrives for [`QUIET`].
    async fn assert_quiet(&mut self) {
        assert!(self.buffer.is_empty(), "unexpected {:?}", self.buffer);
        let mut byte = [0; 1];
        if let Ok(read) = timeout(QUIET, self.stream.read(&mut byte)).await {
            panic!("expected silence, got {read:?} {byte:?}");
        }
    }

    /// The next MONITOR line, its stamp checked and cut off.
    async fn monitor_line(&mut self) -> String {
        unstamp(&self.line().await)
    }
}

/// A MONITOR line less its `+<secs>.<micros> ` stamp, which must be now
/// give or take a minute, with six digits of microseconds.
fn unstamp(line: &[u8]) -> String {
    let text = String::from_utf8(line.to_vec()).expect("a MONITOR line is ASCII");
    let (stamp, rest) = text
        .strip_prefix('+')
        .and_then(|t| t.split_once(' '))
        .unwrap_or_else(|| panic!("not a MONITOR line: {text:?}"));
    let (secs, micros) = stamp
        .split_once('.')
        .unwrap_or_else(|| panic!("bad stamp in {text:?}"));
    assert!(
        micros.len() == 6 && micros.bytes().all(|b| b.is_ascii_digit()),
        "{text:?}"
    );
    let secs: u64 = secs.parse().expect("seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!(secs.abs_diff(now) < 60, "stamp {secs} is not now ({now})");
    rest.to_owned()
}

/// Proves a monitor gets one exact line per command another client ran:
/// binary arguments escaped as Redis escapes them, each command of a
/// pipelined GET/SET batch (the batched path) its own line, MULTI/EXEC in
/// execution order, secrets redacted, and admin or refused commands left
/// out; by running them through the `redis` crate and a raw connection.
#[tokio::test]
async fn monitor_shows_each_command_of_other_clients_exactly() {
    let node = TestNode::start(&[]);
    let mut client = connect(&node.url()).await;
    let client_at = client_info_field(&mut client, "addr").await;
    let mut raw = Raw::connect(node.addr()).await;
    let raw_at = raw.addr();
    let mut monitor = Raw::connect(node.addr()).await;
    monitor.roundtrip(&[b"MONITOR"], b"+OK\r\n").await;

    let binary: &[u8] = b"a\r\n\t\x07\x08\"\\\x00\xff \xc3\xa9~";
    let set: Value = redis::cmd("SET")
        .arg("k")
        .arg(binary)
        .query_async(&mut client)
        .await
        .expect("SET");
    assert_eq!(set, Value::Okay);
    // A pipeline of plain SETs, then one of plain GETs: the `redis` crate
    // writes each in one piece, so the node runs each as one batch.
    let () = redis::pipe()
        .cmd("SET")
        .arg("p1")
        .arg("1")
        .ignore()
        .cmd("SET")
        .arg("p2")
        .arg("two words")
        .ignore()
        .query_async(&mut client)
        .await
        .expect("SET pipeline");
    let got: (String, String) = redis::pipe()
        .cmd("GET")
        .arg("p1")
        .cmd("GET")
        .arg("p2")
        .query_async(&mut client)
        .await
        .expect("GET pipeline");
    assert_eq!(got, ("1".to_owned(), "two words".to_owned()));
    // The same batch from a raw connection, in one write, lowercase.
    let mut batch = Vec::new();
    for args in [
        &[&b"get"[..], b"p1"][..],
        &[b"get", b"nokey"],
        &[b"set", b"p3", b"3"],
        &[b"set", b"p4", b"\x01"],
    ] {
        batch.extend(command(args));
    }
    raw.send(&batch).await;
    raw.expect(b"$1\r\n1\r\n$-1\r\n+OK\r\n+OK\r\n").await;
    // Secrets: AUTH fails (no password is set) but ran, so it is shown.
    for args in [
        &[&b"AUTH"[..], b"hunter2"][..],
        &[b"AUTH", b"default", b"hunter2"],
        &[b"HELLO", b"2", b"AUTH", b"default", b"hunter2"],
        // Not shown: an admin command, an unknown one, one with bad arity.
        &[b"CONFIG", b"GET", b"timeout"],
        &[b"NOSUCH", b"x"],
        &[b"GET"],
    ] {
        raw.send(&command(args)).await;
        raw.reply().await;
    }
    // A transaction: its commands are shown when EXEC runs them.
    let (x,): (i64,) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("counter")
        .query_async(&mut client)
        .await
        .expect("MULTI/EXEC");
    assert_eq!(x, 1);
    // The line names the database the command ran in (SELECT's new one).
    raw.roundtrip(&[b"SELECT", b"9"], b"+OK\r\n").await;
    raw.roundtrip(&[b"ECHO", b"done"], b"$4\r\ndone\r\n").await;

    let mut lines = Vec::new();
    loop {
        let line = monitor.monitor_line().await;
        let last = line.ends_with("\"ECHO\" \"done\"");
        lines.push(line);
        if last {
            break;
        }
    }
    let c = &client_at;
    let r = &raw_at;
    let expected = vec![
        format!(r#"[0 {c}] "SET" "k" "a\r\n\t\a\b\"\\\x00\xff \xc3\xa9~""#),
        format!(r#"[0 {c}] "SET" "p1" "1""#),
        format!(r#"[0 {c}] "SET" "p2" "two words""#),
        format!(r#"[0 {c}] "GET" "p1""#),
        format!(r#"[0 {c}] "GET" "p2""#),
        format!(r#"[0 {r}] "get" "p1""#),
        format!(r#"[0 {r}] "get" "nokey""#),
        format!(r#"[0 {r}] "set" "p3" "3""#),
        format!(r#"[0 {r}] "set" "p4" "\x01""#),
        format!(r#"[0 {r}] "AUTH" "(redacted)""#),
        format!(r#"[0 {r}] "AUTH" "(redacted)" "(redacted)""#),
        format!(r#"[0 {r}] "HELLO" "2" "AUTH" "(redacted)" "(redacted)""#),
        format!(r#"[0 {c}] "MULTI""#),
        format!(r#"[0 {c}] "INCR" "counter""#),
        format!(r#"[0 {c}] "EXEC""#),
        format!(r#"[9 {r}] "SELECT" "9""#),
        format!(r#"[9 {r}] "ECHO" "done""#),
    ];
    assert_eq!(lines, expected);
    monitor.assert_quiet().await;
}

/// Proves a monitoring client is held to Redis 7's rules: commands that
/// touch keys are refused with Redis's text (alone or in EXEC), others
/// run and are shown to it after their reply, a second MONITOR gets no
/// reply, MONITOR in a transaction is refused at EXEC, CLIENT LIST flags
/// it `O`, CLIENT REPLY OFF holds its lines, RESET ends monitor mode
/// (shown to the other monitors), and QUIT closes without a line; by raw
/// exchanges with two monitors.
#[tokio::test]
async fn a_monitor_is_limited_as_in_redis_and_reset_ends_it() {
    let node = TestNode::start(&[]);
    let mut other = Raw::connect(node.addr()).await;
    other.roundtrip(&[b"SET", b"a", b"1"], b"+OK\r\n").await;
    let other_at = other.addr();
    let mut monitor = Raw::connect(node.addr()).await;
    let me = monitor.addr();
    let mut second = Raw::connect(node.addr()).await;
    monitor.roundtrip(&[b"MONITOR"], b"+OK\r\n").await;
    second.roundtrip(&[b"MONITOR"], b"+OK\r\n").await;

    monitor.roundtrip(&[b"GET", b"a"], KEYSPACE_ERROR).await;
    monitor
        .roundtrip(&[b"SET", b"a", b"2"], KEYSPACE_ERROR)
        .await;
    monitor.roundtrip(&[b"PING"], b"+PONG\r\n").await;
    assert_eq!(monitor.monitor_line().await, format!(r#"[0 {me}] "PING""#));
    assert_eq!(second.monitor_line().await, format!(r#"[0 {me}] "PING""#));
    // A second MONITOR: no reply at all (the next bytes are ECHO's).
    monitor.send(&command(&[b"MONITOR"])).await;
    monitor.roundtrip(&[b"ECHO", b"e"], b"$1\r\ne\r\n").await;
    assert_eq!(
        monitor.monitor_line().await,
        format!(r#"[0 {me}] "ECHO" "e""#)
    );
    assert_eq!(
        second.monitor_line().await,
        format!(r#"[0 {me}] "ECHO" "e""#)
    );
    // In a transaction: a key command fails it; EXEC then aborts.
    monitor.roundtrip(&[b"MULTI"], b"+OK\r\n").await;
    assert_eq!(monitor.monitor_line().await, format!(r#"[0 {me}] "MULTI""#));
    monitor.roundtrip(&[b"GET", b"a"], KEYSPACE_ERROR).await;
    monitor.roundtrip(&[b"PING"], b"+QUEUED\r\n").await;
    monitor
        .roundtrip(
            &[b"EXEC"],
            b"-EXECABORT Transaction discarded because of previous errors.\r\n",
        )
        .await;
    assert_eq!(monitor.monitor_line().await, format!(r#"[0 {me}] "EXEC""#));
    assert_eq!(second.monitor_line().await, format!(r#"[0 {me}] "MULTI""#));
    assert_eq!(second.monitor_line().await, format!(r#"[0 {me}] "EXEC""#));

    // CLIENT LIST (admin: not shown) flags the monitors O.
    other.send(&command(&[b"CLIENT", b"LIST"])).await;
    let list = String::from_utf8(other.reply().await).expect("CLIENT LIST is text");
    let flagged: Vec<&str> = list.lines().filter(|l| l.contains(" flags=O ")).collect();
    assert_eq!(flagged.len(), 2, "{list}");
    assert!(
        flagged.iter().any(|l| l.contains(&format!("addr={me} "))),
        "{list}"
    );

    // MONITOR inside MULTI is refused when EXEC runs it, as in Redis.
    other.roundtrip(&[b"MULTI"], b"+OK\r\n").await;
    other.roundtrip(&[b"MONITOR"], b"+QUEUED\r\n").await;
    other
        .roundtrip(
            &[b"EXEC"],
            b"*1\r\n-ERR MONITOR isn't allowed for DENY BLOCKING client\r\n",
        )
        .await;
    for mon in [&mut monitor, &mut second] {
        assert_eq!(
            mon.monitor_line().await,
            format!(r#"[0 {other_at}] "MULTI""#)
        );
        assert_eq!(
            mon.monitor_line().await,
            format!(r#"[0 {other_at}] "EXEC""#)
        );
    }

    // CLIENT REPLY OFF holds the lines too, as Redis's replies hold them.
    // It has no reply: the other monitor's line says when it ran, and
    // only then may the other client's SET come.
    monitor.send(&command(&[b"CLIENT", b"REPLY", b"OFF"])).await;
    assert_eq!(
        second.monitor_line().await,
        format!(r#"[0 {me}] "CLIENT" "REPLY" "OFF""#)
    );
    other.roundtrip(&[b"SET", b"a", b"2"], b"+OK\r\n").await;
    monitor
        .roundtrip(&[b"CLIENT", b"REPLY", b"ON"], b"+OK\r\n")
        .await;
    assert_eq!(
        monitor.monitor_line().await,
        format!(r#"[0 {me}] "CLIENT" "REPLY" "ON""#)
    );
    for line in [
        format!(r#"[0 {other_at}] "SET" "a" "2""#),
        format!(r#"[0 {me}] "CLIENT" "REPLY" "ON""#),
    ] {
        assert_eq!(second.monitor_line().await, line);
    }

    // RESET leaves monitor mode; the other monitor sees it.
    monitor.roundtrip(&[b"RESET"], b"+RESET\r\n").await;
    assert_eq!(second.monitor_line().await, format!(r#"[0 {me}] "RESET""#));
    other.roundtrip(&[b"SET", b"a", b"3"], b"+OK\r\n").await;
    assert_eq!(
        second.monitor_line().await,
        format!(r#"[0 {other_at}] "SET" "a" "3""#)
    );
    monitor.roundtrip(&[b"GET", b"a"], b"$1\r\n3\r\n").await;
    monitor.assert_quiet().await;
    assert_eq!(
        second.monitor_line().await,
        format!(r#"[0 {me}] "GET" "a""#)
    );

    // QUIT: +OK, then the connection closes without its own line.
    second.roundtrip(&[b"QUIT"], b"+OK\r\n").await;
    assert!(!second.fill().await, "QUIT closes the connection");
}

/// Proves a monitor that stops reading is disconnected once it falls past
/// its bound, without holding up the client whose commands it was shown
/// or a monitor that keeps up; by ECHOing 4 MiB of NULs (16 MiB lines)
/// with one monitor reading each line and one reading nothing.
#[tokio::test]
async fn a_monitor_that_stops_reading_is_disconnected() {
    let node = TestNode::start(&[]);
    let mut client = connect(&node.url()).await;
    let mut slow = Raw::connect(node.addr()).await;
    let mut fast = Raw::connect(node.addr()).await;
    slow.roundtrip(&[b"MONITOR"], b"+OK\r\n").await;
    fast.roundtrip(&[b"MONITOR"], b"+OK\r\n").await;

    let payload = vec![0_u8; 4 * 1024 * 1024];
    // 16 lines of 16 MiB: far past the 32 MiB bound plus socket buffers.
    let mut slow_gone = false;
    for i in 0..16 {
        let echoed: Vec<u8> = redis::cmd("ECHO")
            .arg(&payload)
            .query_async(&mut client)
            .await
            .expect("ECHO is not held up by the monitors");
        assert_eq!(echoed.len(), payload.len());
        let line = fast.line().await;
        assert!(line.ends_with(b"\\x00\\x00\""), "line {i}");
        assert!(line.len() > 4 * payload.len(), "line {i}");
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut client)
            .await
            .expect("CLIENT LIST");
        let monitors = list.lines().filter(|l| l.contains(" flags=O ")).count();
        if monitors == 1 {
            slow_gone = true;
            break;
        }
        assert_eq!(monitors, 2, "{list}");
    }
    assert!(
        slow_gone,
        "the monitor that reads nothing is still attached"
    );
    // The slow monitor's socket ends (after what the kernel had buffered).
    let mut received = 0_usize;
    while slow.fill().await {
        received += slow.buffer.len();
        slow.buffer.clear();
    }
    assert!(received > 0, "it got lines until it fell behind");
    // The one that kept up is still served.
    fast.roundtrip(&[b"PING"], b"+PONG\r\n").await;
}
