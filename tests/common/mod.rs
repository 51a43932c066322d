//! The harness for tests that run real `dynokv` processes on loopback.
//!
//! A [`TestNode`] owns one node process and its temporary data directory.
//! It starts the binary Cargo built for this package with `--port 0
//! --peer-port 0`, reads the bound port from the `dynokv ready addr=...` log
//! line, and drains the process's stderr on a thread so the pipe never fills
//! (the last lines are kept and printed when a test fails). Every wait is
//! bounded; dropping a node kills its process, so a panicking test leaks
//! nothing.

#![allow(
    dead_code,
    reason = "each test crate compiles this module and uses a different part of it"
)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a node may take to log that it is ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGKILL.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a node may take to exit after SIGTERM (its own drain deadline
/// is 5 s, then it flushes the store).
pub const TERMINATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Log lines kept per node for diagnostics.
const LOG_LINES_KEPT: usize = 200;
/// Longest log line kept, in bytes; the rest is cut.
const LOG_LINE_BYTES_MAX: usize = 4096;
/// How often exit is polled.
const POLL: Duration = Duration::from_millis(10);

/// The marker of the ready line: `dynokv ready addr=127.0.0.1:PORT ...`.
const READY_MARKER: &str = "dynokv ready addr=";

/// The last lines a node wrote to stderr, shared with its drain thread.
type Log = Arc<Mutex<VecDeque<String>>>;

/// One `dynokv serve` process with its own data directory.
pub struct TestNode {
    /// `None` while no process runs (after `kill9` or `terminate`).
    child: Option<Child>,
    drain: Option<JoinHandle<()>>,
    addr: SocketAddr,
    data_dir: tempfile::TempDir,
    extra_args: Vec<String>,
    log: Log,
    /// Processes started for this node so far (1 after `start`).
    generation: u32,
}

impl std::fmt::Debug for TestNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNode")
            .field("addr", &self.addr)
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("data_dir", &self.data_dir.path())
            .finish_non_exhaustive()
    }
}

impl TestNode {
    /// Starts a node on free ports with a fresh temporary data directory,
    /// passing `extra_args` after the harness's own flags, and waits (at
    /// most [`START_TIMEOUT`]) until it is ready.
    ///
    /// # Panics
    /// If the process cannot be spawned, exits, or is not ready in time;
    /// the message carries its log.
    pub fn start(extra_args: &[&str]) -> TestNode {
        let data_dir = tempfile::Builder::new()
            .prefix("dynokv-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary data directory: {e}"));
        let mut node = TestNode {
            child: None,
            drain: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            extra_args: extra_args.iter().map(|&a| a.to_owned()).collect(),
            log: Arc::new(Mutex::new(VecDeque::new())),
            generation: 0,
        };
        node.spawn();
        node
    }

    /// The node's client address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's client port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A `redis://` URL for RESP2 clients.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// A `redis://` URL that makes the `redis` crate speak RESP3.
    pub fn url_resp3(&self) -> String {
        format!("redis://{}/?protocol=resp3", self.addr)
    }

    /// The data directory (kept across restarts).
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// The process id, while a process runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The last lines the node (all its processes so far) wrote to stderr.
    pub fn log_tail(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Kills the process with SIGKILL and waits (bounded) until it is gone.
    /// Nothing is flushed: this is a crash.
    ///
    /// # Panics
    /// If no process runs or it does not exit in [`KILL_TIMEOUT`].
    pub fn kill9(&mut self) {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("kill9: node {} is not running", self.addr));
        // SIGKILL; an error means it has already exited, which wait shows.
        let _ = child.kill();
        self.reap(child, KILL_TIMEOUT, "SIGKILL");
    }

    /// Sends SIGTERM and waits (bounded) for the node to drain, flush and
    /// exit; returns its exit status.
    ///
    /// # Panics
    /// If no process runs, `kill` cannot be run, or the node does not exit
    /// in [`TERMINATE_TIMEOUT`] (it is then killed).
    pub fn terminate(&mut self) -> ExitStatus {
        let child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("terminate: node {} is not running", self.addr));
        let pid = child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match sent {
            Ok(status) if status.success() => {}
            other => {
                self.child = Some(child);
                panic!("terminate: `kill -TERM {pid}` failed: {other:?}");
            }
        }
        self.reap(child, TERMINATE_TIMEOUT, "SIGTERM")
    }

    /// Starts a new process on the same data directory with the same
    /// arguments (the port may change: read [`TestNode::addr`] again) and
    /// waits until it is ready. A process still running is SIGKILLed first,
    /// so `restart` alone is a crash-and-recover.
    ///
    /// # Panics
    /// As [`TestNode::start`].
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.kill9();
        }
        self.spawn();
    }

    /// Spawns a process on this node's data directory and waits for its
    /// ready line.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "spawn: a process is already running");
        self.generation += 1;
        let mut command = Command::new(env!("CARGO_BIN_EXE_dynokv"));
        // Settings come from the arguments alone, not the test's environment.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("DYNOKV_") {
                command.env_remove(name);
            }
        }
        command
            .arg("serve")
            .args(["--port", "0", "--peer-port", "0"])
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", env!("CARGO_BIN_EXE_dynokv")));
        let Some(stderr) = child.stderr.take() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("spawned node has no stderr pipe");
        };
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let log = Arc::clone(&self.log);
        let generation = self.generation;
        let drain = std::thread::Builder::new()
            .name(format!("dynokv-stderr-{}", child.id()))
            .spawn(move || drain_stderr(stderr, &log, generation, &ready_tx));
        let drain = match drain {
            Ok(handle) => handle,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("cannot start the stderr drain thread: {e}");
            }
        };
        self.child = Some(child);
        self.drain = Some(drain);
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => self.addr = addr,
            Err(e) => {
                // Stop it before reporting, so Drop has nothing left to do.
                let status = self.child.take().map(|mut child| {
                    let _ = child.kill();
                    wait_bounded(&mut child, KILL_TIMEOUT)
                });
                self.join_drain();
                // Drop prints the log while this panic unwinds.
                panic!("node did not become ready in {START_TIMEOUT:?} ({e}); exit: {status:?}");
            }
        }
    }

    /// Waits for `child` to exit, bounded by `timeout`; past it the child
    /// is SIGKILLed and the test fails.
    fn reap(&mut self, mut child: Child, timeout: Duration, what: &str) -> ExitStatus {
        match wait_bounded(&mut child, timeout) {
            Some(status) => {
                self.join_drain();
                status
            }
            None => {
                let _ = child.kill();
                let status = wait_bounded(&mut child, KILL_TIMEOUT);
                self.join_drain();
                panic!(
                    "node {} did not exit within {timeout:?} of {what} (then killed: {status:?})",
                    self.addr
                );
            }
        }
    }

    /// Joins the drain thread of an exited process (its stderr reaches EOF
    /// when the process is gone), bounded.
    fn join_drain(&mut self) {
        let Some(handle) = self.drain.take() else {
            return;
        };
        let deadline = Instant::now() + KILL_TIMEOUT;
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        if handle.is_finished() {
            let _ = handle.join();
        }
        // Otherwise leave it detached: it ends when the pipe closes.
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = wait_bounded(&mut child, KILL_TIMEOUT);
            self.join_drain();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- last stderr lines of dynokv node {} (data dir {}) ---\n{}\n--- end ---",
                self.addr,
                self.data_dir.path().display(),
                self.log_tail().join("\n")
            );
        }
    }
}

/// Polls `child` until it exits or `timeout` passes.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Reads the node's stderr to EOF, keeping the last lines in `log` and
/// sending the address from the first ready line.
fn drain_stderr(
    stderr: ChildStderr,
    log: &Log,
    generation: u32,
    ready: &mpsc::SyncSender<SocketAddr>,
) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut announced = false;
    loop {
        line.clear();
        // Bound a single line's memory; the rest of an overlong line is
        // skipped up to its newline.
        match (&mut reader)
            .take(LOG_LINE_BYTES_MAX as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') && line.len() == LOG_LINE_BYTES_MAX {
            let mut rest = Vec::new();
            if matches!(reader.read_until(b'\n', &mut rest), Ok(0) | Err(_)) {
                return;
            }
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        if !announced && let Some(addr) = ready_addr(&text) {
            announced = true;
            let _ = ready.try_send(addr);
        }
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() == LOG_LINES_KEPT {
            log.pop_front();
        }
        log.push_back(format!("[{generation}] {text}"));
    }
}

/// The address in a ready line, if `line` is one.
fn ready_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(READY_MARKER)? + READY_MARKER.len()..];
    let addr = rest.split_whitespace().next()?;
    addr.parse().ok()
}

/// Runs `attempt` until it returns `Some` or `timeout` passes, pausing
/// `interval` between tries; returns the last outcome.
pub fn eventually<T>(
    timeout: Duration,
    interval: Duration,
    mut attempt: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = attempt() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(interval);
    }
}

/// How long a client waits to connect, and for any one reply. The `redis`
/// crate's defaults (1 s, 500 ms) are too tight for debug builds sharing
/// two cores with other tests.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// A multiplexed `redis` connection to `url` with [`CLIENT_TIMEOUT`]s.
///
/// # Panics
/// If the URL is bad or the connection fails.
pub async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).unwrap_or_else(|e| panic!("bad url {url}: {e}"));
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CLIENT_TIMEOUT))
        .set_response_timeout(Some(CLIENT_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}
