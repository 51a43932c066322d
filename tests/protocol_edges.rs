//! Protocol edges as Redis handles them, against a real node process: a
//! pipeline of 100,000 commands, QUIT in the middle of a pipeline, a
//! large argument, empty arguments, binary-safe keys and values.

// Test helpers outside #[test] functions fail loudly by design.
#![allow(clippy::expect_used)]

mod common;

use common::{TestNode, command};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn connect(node: &TestNode) -> TcpStream {
    let stream = TcpStream::connect(node.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    stream
}

/// Reads one reply line (simple replies only) or one bulk reply whole.
fn read_reply(reader: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line).expect("reply line");
    if line.first() == Some(&b'$') && line != b"$-1\r\n" {
        let len: usize = std::str::from_utf8(&line[1..line.len() - 2])
            .expect("utf8")
            .parse()
            .expect("len");
        let mut body = vec![0; len + 2];
        reader.read_exact(&mut body).expect("bulk body");
        line.extend_from_slice(&body);
    }
    line
}

// Proves a 100,000-command pipeline gets 100,000 replies in order, and the
// keys are all there afterwards (written by one thread, read by another).
#[test]
fn a_pipeline_of_100000_commands() {
    let node = TestNode::start(&[]);
    let stream = connect(&node);
    let mut writer = stream.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        let mut batch = Vec::new();
        for i in 0..100_000u32 {
            batch.extend_from_slice(&command(&[
                b"SET",
                format!("p:{i}").as_bytes(),
                &i.to_be_bytes(),
            ]));
            if batch.len() > 64 * 1024 {
                writer.write_all(&batch).expect("write");
                batch.clear();
            }
        }
        writer.write_all(&batch).expect("write");
        writer.write_all(&command(&[b"DBSIZE"])).expect("write");
    });
    let mut reader = BufReader::new(stream);
    for i in 0..100_000 {
        assert_eq!(read_reply(&mut reader), b"+OK\r\n", "reply {i}");
    }
    assert_eq!(read_reply(&mut reader), b":100000\r\n");
    sender.join().expect("sender");
}

// Proves QUIT in the middle of a pipeline answers what came before it and
// +OK, then closes without running what follows.
#[test]
fn quit_mid_pipeline() {
    let node = TestNode::start(&[]);
    let mut stream = connect(&node);
    let mut pipeline = command(&[b"SET", b"before", b"1"]);
    pipeline.extend(command(&[b"QUIT"]));
    pipeline.extend(command(&[b"SET", b"after", b"1"]));
    stream.write_all(&pipeline).expect("write");
    let mut all = Vec::new();
    stream.read_to_end(&mut all).expect("read until close");
    assert_eq!(all, b"+OK\r\n+OK\r\n");
    let mut check = BufReader::new(connect(&node));
    check
        .get_mut()
        .write_all(&command(&[b"EXISTS", b"before", b"after"]))
        .expect("write");
    assert_eq!(read_reply(&mut check), b":1\r\n");
}

// Proves large (8 MiB), empty and binary (NUL, invalid UTF-8) keys and
// values round-trip byte for byte.
#[test]
fn large_empty_and_binary_arguments() {
    let node = TestNode::start(&[]);
    let mut reader = BufReader::new(connect(&node));
    let large: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let cases: [(&[u8], &[u8]); 4] = [
        (b"large", &large),
        (b"", b"empty key"),
        (b"empty value", b""),
        (b"\x00\xff\xfe bin\r\nkey", b"\x00\x01\xc3\x28 value"),
    ];
    for (key, value) in cases {
        reader
            .get_mut()
            .write_all(&command(&[b"SET", key, value]))
            .expect("write");
        assert_eq!(read_reply(&mut reader), b"+OK\r\n");
        reader
            .get_mut()
            .write_all(&command(&[b"GET", key]))
            .expect("write");
        let mut expected = format!("${}\r\n", value.len()).into_bytes();
        expected.extend_from_slice(value);
        expected.extend_from_slice(b"\r\n");
        assert!(
            read_reply(&mut reader) == expected,
            "key {key:?} round-trips"
        );
    }
}
