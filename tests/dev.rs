//! `dynokv dev` as a process: when one of its nodes exits on its own, dev
//! says which node and how it ended, stops the others and exits non-zero.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the nodes may take to start and dev to notice an exit.
const WAIT: Duration = Duration::from_secs(30);

/// A client port below 32768 whose peer port (+10000) is free too.
fn free_port_pair() -> u16 {
    let start = 12_000 + (std::process::id() % 5_000) as u16 * 2;
    (0..2_000u16)
        .map(|i| 12_000 + (start - 12_000 + i * 7) % 10_000)
        .find(|&p| {
            TcpListener::bind(("127.0.0.1", p)).is_ok()
                && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
        })
        .unwrap_or_else(|| panic!("no free port pair"))
}

#[test]
fn dev_stops_when_a_node_exits() {
    // Proves dev notices a node killed behind its back: it names node-2 and its signal, stops node-1, and exits non-zero within 30 s.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory: {e}"));
    let port = free_port_pair();
    let mut dev = Command::new(env!("CARGO_BIN_EXE_dynokv"))
        .args([
            "dev",
            "--nodes",
            "2",
            "--port",
            &port.to_string(),
            "--data-dir",
        ])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn dynokv dev: {e}"));
    let stdout = dev.stdout.take().unwrap_or_else(|| panic!("stdout"));
    let mut pids = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        // "node-N pid P client ..."
        if let Some(pid) = line
            .split_whitespace()
            .nth(2)
            .and_then(|p| p.parse::<u32>().ok())
        {
            pids.push(pid);
        }
        if line.contains("nodes running") {
            break;
        }
    }
    assert_eq!(pids.len(), 2, "dev printed {pids:?}");
    // Kill node-2 once it has started (its client port answers).
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port + 1)).is_err() {
        assert!(started.elapsed() < WAIT, "node-2 did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = Command::new("kill")
        .args(["-9", &pids[1].to_string()])
        .status();
    assert!(killed.is_ok_and(|s| s.success()), "kill -9 node-2");
    let status = loop {
        if let Some(status) = dev.try_wait().unwrap_or_else(|e| panic!("wait: {e}")) {
            break status;
        }
        if started.elapsed() > WAIT {
            let _ = dev.kill();
            let _ = Command::new("kill")
                .args(["-9", &pids[0].to_string()])
                .status();
            let _ = dev.wait();
            panic!("dev still running {WAIT:?} after node-2 was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut err) = dev.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    assert!(!status.success(), "dev exited with {status}");
    let expected = format!("node-2 (pid {}) exited: signal: 9 (SIGKILL)", pids[1]);
    assert!(
        stderr.contains(&expected),
        "stderr lacks {expected:?}:\n{stderr}"
    );
    // node-1 was stopped too: its process is gone.
    let alive = Command::new("kill")
        .args(["-0", &pids[0].to_string()])
        .status();
    assert!(!alive.is_ok_and(|s| s.success()), "node-1 still runs");
}
