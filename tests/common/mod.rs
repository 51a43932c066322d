//! The harness for tests that run real `dynokv` processes on loopback.
//!
//! A [`TestNode`] owns one node process and its temporary data directory.
//! It starts the binary Cargo built for this package with `--port 0
//! --peer-port 0`, reads the bound port from the `dynokv ready addr=...` log
//! line, and drains the process's stderr on a thread so the pipe never fills
//! (the last lines are kept and printed when a test fails). Every wait is
//! bounded; dropping a node kills its process, so a panicking test leaks
//! nothing.
//!
//! A [`TestCluster`] is K such nodes joined into one cluster: node 1 is the
//! seed, the others `--join` its peer address. Its nodes keep their ports
//! across restarts (other members know them by their peer address).
//!
//! Faults: [`TestNode::kill9`] and [`TestNode::restart`] (a crash and
//! recovery), [`TestNode::pause`] and [`TestNode::resume`] (SIGSTOP and
//! SIGCONT: the process is frozen, its sockets stay open), and, for a
//! cluster started with [`TestCluster::start_proxied`], link faults
//! between chosen nodes through the test-owned proxies of [`proxy::Net`]
//! (cut both ways or one way, heal, isolate, partition, delay, flap).
//! [`history`] records what clients did and checks it after the faults.

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

pub mod history;
pub mod proxy;
pub mod replicas;
pub mod tmpfs;

/// Sends `signal` (`-STOP`, `-TERM`, ...) to process `pid` with `kill`.
fn kill(signal: &str, pid: &str) -> Result<(), String> {
    let sent = Command::new("kill")
        .args([signal, pid])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match sent {
        Ok(status) if status.success() => Ok(()),
        other => Err(format!("`kill {signal} {pid}` failed: {other:?}")),
    }
}

/// Reproducible choices for fault schedules and clients, from a seed.
#[derive(Debug, Clone)]
pub struct Rng(dynokv::random::SplitMix64);

impl Rng {
    /// A generator whose choices are a function of `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(dynokv::random::SplitMix64::new(seed))
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True `percent` times in 100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// `lo` to `hi` ms.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next_u64() % (hi - lo).max(1))
    }

    /// `base` plus up to `spread` seconds.
    pub fn secs(&mut self, base: f64, spread: f64) -> f64 {
        base + spread * (self.next_u64() % 1000) as f64 / 1000.0
    }
}

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
/// The ready line's peer address field: `peer=127.0.0.1:PORT`.
const PEER_MARKER: &str = "peer=";

/// The last lines a node wrote to stderr, shared with its drain thread.
type Log = Arc<Mutex<VecDeque<String>>>;

/// One `dynokv serve` process with its own data directory.
pub struct TestNode {
    /// `None` while no process runs (after `kill9` or `terminate`).
    child: Option<Child>,
    drain: Option<JoinHandle<()>>,
    addr: SocketAddr,
    /// The peer port's address, from the ready line.
    peer_addr: Option<SocketAddr>,
    /// Client and peer ports every new process binds; `None`: free ports.
    fixed_ports: Option<(u16, u16)>,
    data_dir: tempfile::TempDir,
    /// A data directory the test owns, used instead of `data_dir`.
    data_path: Option<std::path::PathBuf>,
    extra_args: Vec<String>,
    log: Log,
    /// Processes started for this node so far (1 after `start`).
    generation: u32,
    /// The process is stopped with SIGSTOP.
    paused: bool,
}

impl std::fmt::Debug for TestNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNode")
            .field("addr", &self.addr)
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("data_dir", &self.data_dir())
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
        let node = Self::start_loading(extra_args);
        node.wait_serving();
        node
    }

    /// As [`TestNode::start`], but returns once the node logged its ready
    /// line, without waiting until it serves data commands (it may still
    /// answer LOADING while it waits for its peers).
    ///
    /// # Panics
    /// As [`TestNode::start`].
    pub fn start_loading(extra_args: &[&str]) -> TestNode {
        Self::start_loading_with(extra_args, None, None)
    }

    /// As [`TestNode::start_loading`], binding these client and peer ports
    /// (for nodes that must know each other's addresses before any runs).
    ///
    /// # Panics
    /// As [`TestNode::start`], or if a port is taken.
    pub fn start_loading_at(ports: (u16, u16), extra_args: &[&str]) -> TestNode {
        Self::start_loading_with(extra_args, Some(ports), None)
    }

    /// As [`TestNode::start`], on a data directory the test owns (a
    /// file system it mounted, say), which must outlive the node.
    ///
    /// # Panics
    /// As [`TestNode::start`].
    pub fn start_in(data_dir: &std::path::Path, extra_args: &[&str]) -> TestNode {
        let node = Self::start_loading_with(extra_args, None, Some(data_dir.to_path_buf()));
        node.wait_serving();
        node
    }

    fn start_loading_with(
        extra_args: &[&str],
        fixed_ports: Option<(u16, u16)>,
        data_path: Option<std::path::PathBuf>,
    ) -> TestNode {
        let data_dir = tempfile::Builder::new()
            .prefix("dynokv-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary data directory: {e}"));
        let mut node = TestNode {
            child: None,
            drain: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            peer_addr: None,
            fixed_ports,
            data_dir,
            data_path,
            extra_args: extra_args.iter().map(|&a| a.to_owned()).collect(),
            log: Arc::new(Mutex::new(VecDeque::new())),
            generation: 0,
            paused: false,
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

    /// The node's peer address (what `--join` takes).
    ///
    /// # Panics
    /// If the ready line did not carry it.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
            .unwrap_or_else(|| panic!("node {} logged no peer= address", self.addr))
    }

    /// Makes every later process of this node bind the ports the current
    /// one bound, so peers that know its address find it after a restart.
    pub fn keep_ports(&mut self) {
        self.fixed_ports = Some((self.addr.port(), self.peer_addr().port()));
    }

    /// Whether any log line (of any of its processes) contains `needle`.
    pub fn log_contains(&self, needle: &str) -> bool {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|line| line.contains(needle))
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
        self.data_path
            .as_deref()
            .unwrap_or_else(|| self.data_dir.path())
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
        // SIGKILL (it ends a stopped process too); an error means it has
        // already exited, which wait shows.
        let _ = child.kill();
        self.paused = false;
        self.reap(child, KILL_TIMEOUT, "SIGKILL");
    }

    /// Freezes the process with SIGSTOP: it runs no code, its sockets stay
    /// open (peers and clients see silence, not a closed connection).
    ///
    /// # Panics
    /// If no process runs, it is paused already, or `kill` fails.
    pub fn pause(&mut self) {
        assert!(!self.paused, "pause: node {} is paused already", self.addr);
        self.signal("-STOP");
        self.paused = true;
    }

    /// Lets a paused process run again (SIGCONT).
    ///
    /// # Panics
    /// If no process runs, it is not paused, or `kill` fails.
    pub fn resume(&mut self) {
        assert!(self.paused, "resume: node {} is not paused", self.addr);
        self.signal("-CONT");
        self.paused = false;
    }

    /// Whether the process is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Sends `signal` (`-STOP`, `-CONT`, ...) to the process with `kill`.
    fn signal(&mut self, signal: &str) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("kill {signal}: node {} is not running", self.addr))
            .to_string();
        if let Err(e) = kill(signal, &pid) {
            panic!("{e}");
        }
    }

    /// Sends SIGTERM and waits (bounded) for the node to drain, flush and
    /// exit; returns its exit status.
    ///
    /// # Panics
    /// If no process runs, `kill` cannot be run, or the node does not exit
    /// in [`TERMINATE_TIMEOUT`] (it is then killed).
    pub fn terminate(&mut self) -> ExitStatus {
        if self.paused {
            self.resume();
        }
        let child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("terminate: node {} is not running", self.addr));
        let pid = child.id().to_string();
        if let Err(e) = kill("-TERM", &pid) {
            self.child = Some(child);
            panic!("terminate: {e}");
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
        self.restart_loading();
        self.wait_serving();
    }

    /// Adds `args` to those the next start passes.
    pub fn add_args(&mut self, args: &[&str]) {
        self.extra_args.extend(args.iter().map(|&a| a.to_owned()));
    }

    /// As [`TestNode::restart`], but returns at the ready line, while the
    /// node may still answer LOADING.
    ///
    /// # Panics
    /// As [`TestNode::start`].
    pub fn restart_loading(&mut self) {
        if self.child.is_some() {
            self.kill9();
        }
        self.spawn();
    }

    /// Waits (at most [`START_TIMEOUT`]) until the node answers PING with
    /// something other than LOADING: a restarted cluster node refuses data
    /// commands until it has reached enough peers (docs/cluster.md), and a
    /// joining node holds clients until a seed answered. Raw RESP, so that
    /// no client library retries or hides the error.
    ///
    /// # Panics
    /// If it still answers LOADING, or nothing, after [`START_TIMEOUT`].
    pub fn wait_serving(&self) {
        let addr = self.addr;
        let mut last = String::new();
        let served = eventually(START_TIMEOUT, SERVING_POLL, || match raw_ping(addr) {
            Ok(reply) if !reply.starts_with("-LOADING") => Some(()),
            Ok(reply) => {
                last = reply;
                None
            }
            Err(e) => {
                last = e.to_string();
                None
            }
        });
        if served.is_none() {
            panic!(
                "node {addr} did not serve within {START_TIMEOUT:?}; last answer to PING: {last}"
            );
        }
    }

    /// Starts a process on this node's data directory that is expected to
    /// refuse to start: waits (bounded by [`START_TIMEOUT`]) for it to exit
    /// and returns its status, or `None` if it became ready instead (it is
    /// then running).
    ///
    /// # Panics
    /// If a process runs already, or it neither exits nor gets ready.
    pub fn start_expecting_exit(&mut self) -> Option<ExitStatus> {
        if self.child.is_some() {
            self.kill9();
        }
        let ready_rx = self.launch();
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok((addr, peer_addr)) = ready_rx.try_recv() {
                self.addr = addr;
                self.peer_addr = peer_addr;
                return None;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                self.join_drain();
                return Some(status);
            }
            std::thread::sleep(POLL);
        }
        panic!(
            "node {} neither exited nor got ready in {START_TIMEOUT:?}",
            self.addr
        );
    }

    /// Waits (at most `timeout`) for the running process to exit on its
    /// own; returns its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.child.as_mut()?.try_wait().ok().flatten();
            if let Some(status) = status {
                self.child = None;
                self.join_drain();
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Spawns a process on this node's data directory and waits for its
    /// ready line.
    fn spawn(&mut self) {
        let ready_rx = self.launch();
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok((addr, peer_addr)) => {
                self.addr = addr;
                self.peer_addr = peer_addr;
            }
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

    /// Spawns a process on this node's data directory, with a thread that
    /// drains its log; returns where its ready line will arrive.
    fn launch(&mut self) -> mpsc::Receiver<(SocketAddr, Option<SocketAddr>)> {
        assert!(self.child.is_none(), "spawn: a process is already running");
        self.generation += 1;
        let mut command = Command::new(env!("CARGO_BIN_EXE_dynokv"));
        // Settings come from the arguments alone, not the test's environment.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("DYNOKV_") {
                command.env_remove(name);
            }
        }
        let (port, peer_port) = self.fixed_ports.unwrap_or((0, 0));
        command
            .arg("serve")
            .args(["--port", &port.to_string()])
            .args(["--peer-port", &peer_port.to_string()])
            .arg("--data-dir")
            .arg(self.data_dir())
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
        ready_rx
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
            // SIGKILL ends a SIGSTOPped process as well.
            let _ = child.kill();
            let _ = wait_bounded(&mut child, KILL_TIMEOUT);
            self.join_drain();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- last stderr lines of dynokv node {} (data dir {}) ---\n{}\n--- end ---",
                self.addr,
                self.data_dir().display(),
                self.log_tail().join("\n")
            );
        }
    }
}

/// How often [`TestNode::wait_serving`] asks.
const SERVING_POLL: Duration = Duration::from_millis(20);
/// How long one PING of [`raw_ping`] may take.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends PING over a fresh connection and returns the first line of the
/// reply (`+PONG`, `-LOADING ...`).
///
/// # Errors
/// Connect, write or read errors, a timeout included.
pub fn raw_ping(addr: SocketAddr) -> std::io::Result<String> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, PING_TIMEOUT)?;
    stream.set_read_timeout(Some(PING_TIMEOUT))?;
    stream.set_write_timeout(Some(PING_TIMEOUT))?;
    stream.write_all(b"*1\r\n$4\r\nPING\r\n")?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line.trim_end().to_owned())
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
    ready: &mpsc::SyncSender<(SocketAddr, Option<SocketAddr>)>,
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

/// The client address in a ready line, if `line` is one, and the peer
/// address (its `peer=` field) if it has one.
fn ready_addr(line: &str) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let rest = &line[line.find(READY_MARKER)? + READY_MARKER.len()..];
    let mut fields = rest.split_whitespace();
    let addr = fields.next()?.parse().ok()?;
    let peer = fields
        .find_map(|field| field.strip_prefix(PEER_MARKER))
        .and_then(|a| a.parse().ok());
    Some((addr, peer))
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

/// A blocking `redis` connection to `addr` with [`CLIENT_TIMEOUT`]s (for
/// connecting and for every reply).
///
/// # Panics
/// If the connection fails.
pub fn connect_sync(addr: SocketAddr) -> redis::Connection {
    try_connect_sync(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"))
}

/// As [`connect_sync`], returning the error.
///
/// # Errors
/// The client's error.
pub fn try_connect_sync(addr: SocketAddr) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let con = client.get_connection_with_timeout(CLIENT_TIMEOUT)?;
    con.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    con.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    Ok(con)
}

/// One member row of `DYNAMO MEMBERS`: field name → value (`id`, `name`,
/// `client_addr`, `peer_addr`, `status`, `partitions_primary`, ...).
pub type MemberRow = std::collections::BTreeMap<String, String>;

/// The text of a string-like reply.
fn value_text(value: &redis::Value) -> Option<String> {
    match value {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// `DYNAMO MEMBERS` as the node at `addr` sees it.
///
/// # Errors
/// A connection or command error, or a reply of another shape.
pub fn dynamo_members(addr: SocketAddr) -> Result<Vec<MemberRow>, String> {
    let mut con = try_connect_sync(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let reply: redis::Value = redis::cmd("DYNAMO")
        .arg("MEMBERS")
        .query(&mut con)
        .map_err(|e| format!("DYNAMO MEMBERS on {addr}: {e}"))?;
    let redis::Value::Array(rows) = reply else {
        return Err(format!("DYNAMO MEMBERS on {addr} replied {reply:?}"));
    };
    rows.iter()
        .map(|row| {
            let pairs: Vec<(&redis::Value, &redis::Value)> = match row {
                redis::Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
                redis::Value::Array(flat) if flat.len() % 2 == 0 => {
                    flat.chunks(2).map(|c| (&c[0], &c[1])).collect()
                }
                other => return Err(format!("member row {other:?}")),
            };
            pairs
                .into_iter()
                .map(|(k, v)| match (value_text(k), value_text(v)) {
                    (Some(k), Some(v)) => Ok((k, v)),
                    _ => Err(format!("member field {k:?} = {v:?}")),
                })
                .collect()
        })
        .collect()
}

/// One field of `INFO dynamo` on the node at `addr`.
///
/// # Errors
/// A connection or command error, or no such field.
pub fn info_dynamo_field(addr: SocketAddr, field: &str) -> Result<String, String> {
    let mut con = try_connect_sync(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let info: String = redis::cmd("INFO")
        .arg("dynamo")
        .query(&mut con)
        .map_err(|e| format!("INFO dynamo on {addr}: {e}"))?;
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| format!("no {field} in INFO dynamo of {addr}:\n{info}"))
}

/// How long a cluster may take to agree on its members, all up.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a cluster's views are polled while waiting.
const CONVERGE_POLL: Duration = Duration::from_millis(100);

/// K `dynokv serve` processes joined into one cluster on loopback. Node
/// `0` is the seed; nodes `1..K` `--join` its peer address. Every node
/// keeps its ports and data directory across [`TestCluster::kill9`] and
/// [`TestCluster::restart`]; dropping the cluster kills every process.
///
/// A cluster from [`TestCluster::start_proxied`] puts a test-owned proxy
/// in front of every node's peer port ([`proxy::Net`]): node `i`
/// advertises its proxy's address, so all peer traffic to it crosses the
/// proxy, and [`TestCluster::net`] cuts, heals and delays links.
#[derive(Debug)]
pub struct TestCluster {
    nodes: Vec<TestNode>,
    /// The proxies, for a proxied cluster. Dropped after the nodes.
    net: Option<proxy::Net>,
}

impl TestCluster {
    /// Starts `k` nodes, each with `extra_args` (N/R/W, cluster name, ...),
    /// and waits (at most [`CONVERGE_TIMEOUT`]) until every node lists all
    /// `k` members as up.
    ///
    /// # Panics
    /// If a node does not start or the cluster does not converge in time.
    pub fn start(k: usize, extra_args: &[&str]) -> TestCluster {
        Self::start_with(k, extra_args, None)
    }

    /// As [`TestCluster::start`], with a proxy in front of every node's
    /// peer port (see [`proxy`]), so [`TestCluster::net`] can cut, heal and
    /// delay the links between nodes.
    ///
    /// # Panics
    /// As [`TestCluster::start`], or if a proxy cannot bind.
    pub fn start_proxied(k: usize, extra_args: &[&str]) -> TestCluster {
        Self::start_with(k, extra_args, Some(proxy::Net::new()))
    }

    fn start_with(k: usize, extra_args: &[&str], net: Option<proxy::Net>) -> TestCluster {
        assert!(k >= 1, "a cluster needs a node");
        let mut cluster = TestCluster {
            nodes: Vec::new(),
            net,
        };
        cluster.spawn_node(extra_args);
        let seed = cluster.member_addr(0);
        for _ in 1..k {
            cluster.add(seed, extra_args);
        }
        cluster.wait_converged(k);
        cluster
    }

    /// Starts one more node with `extra_args` that `--join`s `seed`, keeps
    /// its ports, and returns its index. Does not wait for convergence. In
    /// a proxied cluster the new node gets a proxy too, and `seed` should
    /// be a [`TestCluster::member_addr`].
    ///
    /// # Panics
    /// As [`TestNode::start`].
    pub fn add(&mut self, seed: SocketAddr, extra_args: &[&str]) -> usize {
        let seed = seed.to_string();
        let mut args: Vec<&str> = extra_args.to_vec();
        args.extend(["--join", &seed]);
        self.spawn_node(&args)
    }

    /// As [`TestCluster::add`], with its data in `data_dir`, a directory
    /// the test owns (a file system it mounted, say), which must outlive
    /// the cluster. Not for a proxied cluster.
    ///
    /// # Panics
    /// As [`TestNode::start`], or if the cluster is proxied.
    pub fn add_in(
        &mut self,
        seed: SocketAddr,
        data_dir: &std::path::Path,
        extra_args: &[&str],
    ) -> usize {
        assert!(self.net.is_none(), "add_in: a proxied cluster");
        let seed = seed.to_string();
        let mut args: Vec<&str> = extra_args.to_vec();
        args.extend(["--join", &seed]);
        let mut node = TestNode::start_in(data_dir, &args);
        node.keep_ports();
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Starts a node (behind a new proxy in a proxied cluster), keeps its
    /// ports, and returns its index.
    fn spawn_node(&mut self, args: &[&str]) -> usize {
        let mut node = match &self.net {
            Some(net) => {
                let i = net.add_node();
                assert_eq!(i, self.nodes.len(), "proxy and node indexes disagree");
                let advertise = net.proxy_addr(i).to_string();
                let mut args = args.to_vec();
                args.extend(["--peer-advertise", &advertise]);
                // Its peers reach it only through the proxy, which needs
                // its peer port: wait for serving once that is set.
                let node = TestNode::start_loading(&args);
                net.set_upstream(i, node.peer_addr());
                node.wait_serving();
                node
            }
            None => TestNode::start(args),
        };
        node.keep_ports();
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The network of a proxied cluster: cut, heal, delay links.
    ///
    /// # Panics
    /// If the cluster was not started with [`TestCluster::start_proxied`].
    pub fn net(&self) -> &proxy::Net {
        self.net
            .as_ref()
            .unwrap_or_else(|| panic!("net: the cluster was not started with start_proxied"))
    }

    /// The network, if the cluster is proxied.
    pub fn try_net(&self) -> Option<&proxy::Net> {
        self.net.as_ref()
    }

    /// The peer address members know node `i` by (what `DYNAMO MEMBERS`
    /// lists and `--join` takes): its proxy in a proxied cluster, else its
    /// peer port.
    pub fn member_addr(&self, i: usize) -> SocketAddr {
        match &self.net {
            Some(net) => net.proxy_addr(i),
            None => self.nodes[i].peer_addr(),
        }
    }

    /// Client addresses of every node, by index (they keep their ports).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(TestNode::addr).collect()
    }

    /// Freezes node `i` (SIGSTOP).
    ///
    /// # Panics
    /// As [`TestNode::pause`].
    pub fn pause(&mut self, i: usize) {
        self.nodes[i].pause();
    }

    /// Lets node `i` run again (SIGCONT).
    ///
    /// # Panics
    /// As [`TestNode::resume`].
    pub fn resume(&mut self, i: usize) {
        self.nodes[i].resume();
    }

    /// Nodes in the cluster (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Node `i` (0-based; 0 is the seed).
    pub fn node(&self, i: usize) -> &TestNode {
        &self.nodes[i]
    }

    /// Node `i`, mutably.
    pub fn node_mut(&mut self, i: usize) -> &mut TestNode {
        &mut self.nodes[i]
    }

    /// Client addresses of the running nodes, by index.
    pub fn running(&mut self) -> Vec<(usize, SocketAddr)> {
        self.nodes
            .iter_mut()
            .enumerate()
            .filter_map(|(i, n)| n.is_running().then(|| (i, n.addr())))
            .collect()
    }

    /// SIGKILLs node `i` (a crash: nothing flushed).
    ///
    /// # Panics
    /// As [`TestNode::kill9`].
    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].kill9();
    }

    /// Starts node `i` again on its data directory and ports (SIGKILLing
    /// it first if it runs), and waits until it is ready (not until it has
    /// rejoined: see [`TestCluster::wait_converged`]).
    ///
    /// # Panics
    /// As [`TestNode::restart`].
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].restart();
    }

    /// Waits (at most [`CONVERGE_TIMEOUT`]) until every running node lists
    /// exactly `members` members and sees every running node up and every
    /// stopped node down.
    ///
    /// # Panics
    /// If that does not happen in time; the message has each view.
    pub fn wait_converged(&mut self, members: usize) {
        let running = self.running().len();
        match self.try_wait_converged(members, CONVERGE_TIMEOUT) {
            Ok(took) => eprintln!("cluster of {members} ({running} running) converged in {took:?}"),
            Err(e) => panic!("{e}"),
        }
    }

    /// As [`TestCluster::wait_converged`], bounded by `timeout`; returns
    /// how long it took, or the last views.
    ///
    /// # Errors
    /// The views, when they did not converge in time.
    pub fn try_wait_converged(
        &mut self,
        members: usize,
        timeout: Duration,
    ) -> Result<Duration, String> {
        let running: Vec<(usize, SocketAddr)> = self.running();
        let up_peers: std::collections::BTreeSet<String> = running
            .iter()
            .map(|&(i, _)| self.member_addr(i).to_string())
            .collect();
        let mut last = String::new();
        let started = Instant::now();
        let done = eventually(timeout, CONVERGE_POLL, || {
            let mut report = String::new();
            let mut ok = true;
            for &(i, addr) in &running {
                match dynamo_members(addr) {
                    Ok(rows) => {
                        let agrees = rows.len() == members
                            && rows.iter().all(|row| {
                                let peer = row.get("peer_addr").map_or("", String::as_str);
                                let expected = if up_peers.contains(peer) {
                                    "up"
                                } else {
                                    "down"
                                };
                                // Settled: every member is placed for reads
                                // (no join or leave still moving data).
                                row.get("status").map(String::as_str) == Some(expected)
                                    && row.get("state").map(String::as_str) == Some("member")
                            });
                        ok &= agrees;
                        let view: Vec<String> = rows
                            .iter()
                            .map(|r| {
                                format!(
                                    "{}={}/{}",
                                    r.get("peer_addr").map_or("?", String::as_str),
                                    r.get("status").map_or("?", String::as_str),
                                    r.get("state").map_or("?", String::as_str)
                                )
                            })
                            .collect();
                        report.push_str(&format!("node {i} ({addr}): {}\n", view.join(" ")));
                    }
                    Err(e) => {
                        ok = false;
                        report.push_str(&format!("node {i} ({addr}): {e}\n"));
                    }
                }
            }
            last = report;
            ok.then_some(())
        });
        match done {
            Some(()) => Ok(started.elapsed()),
            None => Err(format!(
                "the cluster did not converge to {members} members ({} running: up {up_peers:?}) \
                 within {timeout:?}; last views:\n{last}",
                running.len()
            )),
        }
    }

    /// Which nodes node `i` lists as up, by index (members this cluster
    /// does not know are left out).
    ///
    /// # Errors
    /// As [`dynamo_members`].
    pub fn up_view(&self, i: usize) -> Result<std::collections::BTreeSet<usize>, String> {
        let rows = dynamo_members(self.nodes[i].addr())?;
        let by_addr: std::collections::BTreeMap<String, usize> = (0..self.nodes.len())
            .map(|j| (self.member_addr(j).to_string(), j))
            .collect();
        Ok(rows
            .iter()
            .filter(|row| row.get("status").map(String::as_str) == Some("up"))
            .filter_map(|row| by_addr.get(row.get("peer_addr")?).copied())
            .collect())
    }
}

/// `args` as a RESP multibulk request, for tests that speak raw bytes.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A field of `CLIENT INFO` on `con` (`addr`, `resp`, ...): what the
/// server thinks of this connection.
pub async fn client_info_field(con: &mut redis::aio::MultiplexedConnection, field: &str) -> String {
    let info: String = redis::cmd("CLIENT")
        .arg("INFO")
        .query_async(con)
        .await
        .unwrap_or_else(|e| panic!("CLIENT INFO: {e}"));
    let prefix = format!("{field}=");
    info.split_whitespace()
        .find_map(|f| f.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {field}= in CLIENT INFO: {info}"))
        .to_owned()
}
