//! Link faults between real node processes without root: a test-owned TCP
//! proxy in front of every node's peer port.
//!
//! # Design
//!
//! A [`Net`] owns one proxy per node, listening on `127.0.0.1:P_i`. Node
//! `i` is started with `--peer-advertise 127.0.0.1:P_i`, so every member
//! dials node `i` at its proxy, and the proxy forwards to the node's real
//! peer port (its *upstream*, set once the node logged it). Every peer
//! connection to node `i`, whoever opened it, therefore passes through
//! proxy `i`.
//!
//! A connection between two nodes is dialed by one of them (the smaller
//! node id; a joining node also dials its seed once) and carries traffic
//! both ways. To apply per-pair, per-direction rules the proxy must know
//! who dialed: it reads the dialer's first frame — the handshake Hello,
//! which the dialer always sends first — decodes it with the node's own
//! codec (`dynokv::peer::codec`), and maps the Hello's advertised peer
//! address (the dialer's own proxy address) back to a node index. Then it
//! connects upstream, replays the bytes it read and pumps both directions.
//! A connection whose dialer is not one of this `Net`'s nodes is closed.
//!
//! Rules are kept per *ordered* pair `(from, to)`: "bytes sent by node
//! `from` to node `to`". On a connection dialed by `d` and accepted by
//! `a`, bytes from the dialer obey `(d, a)` and bytes back obey `(a, d)`.
//! Each direction is a reader thread and a writer thread joined by a
//! bounded channel of timestamped chunks; the writer applies the rule at
//! the moment a chunk is due, so rule changes act on bytes in flight too.
//!
//! | fault | how |
//! |---|---|
//! | [`Net::cut`] `(a, b)` | drop both directions, close every open connection between `a` and `b`, and close new ones as soon as their dialer is known (the dialer sees a refused handshake and backs off) |
//! | [`Net::cut_one_way`] `(from, to)` | discard the bytes `from` sends `to` (the connection stays open: requests vanish, or replies do) |
//! | [`Net::heal`] `(a, b)` | clear both directions' drops; connections that lost bytes are closed, since a stream with a hole in it is no TCP stream |
//! | [`Net::isolate`] `(x)` | cut `x` from every other node (a minority partition of one) |
//! | [`Net::partition`] `(groups)` | cut every pair of nodes in different groups, e.g. `{0,1} \| {2}` |
//! | [`Net::delay`] `(from, to, d)` | hold each chunk `from` sends `to` for `d` before forwarding (order kept) |
//! | [`Net::flap`] `(a, b, down, up)` | a thread that cuts and heals the link over and over until stopped |
//! | [`Net::heal_all`] | every rule cleared, damaged connections closed |
//!
//! Everything binds loopback only. Dropping a `Net` closes its listeners
//! and every proxied connection; threads are bounded by their sockets.

use bytes::BytesMut;
use dynokv::peer::codec::{decode_hello, split_hello};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the proxy waits for a dialer's Hello.
const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(3);
/// Most bytes read while looking for the Hello.
const IDENTIFY_BYTES_MAX: usize = 64 * 1024;
/// How long connecting upstream may take.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Chunks queued per direction before the reader waits.
const QUEUE_CHUNKS: usize = 256;
/// Bytes read at once.
const CHUNK_BYTES: usize = 16 * 1024;

/// What happens to the bytes one node sends another.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Rule {
    /// Discard them.
    drop: bool,
    /// Hold each chunk this long first.
    delay: Duration,
}

/// One proxied connection.
#[derive(Debug)]
struct Link {
    /// The node that dialed.
    dialer: usize,
    /// The node whose proxy accepted it.
    acceptor: usize,
    client: TcpStream,
    upstream: TcpStream,
    /// Some bytes were discarded: the stream is damaged.
    poisoned: AtomicBool,
    /// Pump threads that have finished (4 when the link is gone).
    finished: AtomicUsize,
}

impl Link {
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }

    fn between(&self, a: usize, b: usize) -> bool {
        (self.dialer, self.acceptor) == (a, b) || (self.dialer, self.acceptor) == (b, a)
    }

    fn gone(&self) -> bool {
        self.finished.load(Ordering::Acquire) >= 4
    }
}

#[derive(Debug)]
struct Proxy {
    listen: SocketAddr,
    upstream: Mutex<Option<SocketAddr>>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Inner {
    proxies: Mutex<Vec<Arc<Proxy>>>,
    rules: Mutex<HashMap<(usize, usize), Rule>>,
    links: Mutex<Vec<Arc<Link>>>,
    stopped: AtomicBool,
    /// Connections closed because the dialer was not recognised.
    unidentified: AtomicU64,
    /// Connections refused because their pair was cut.
    refused: AtomicU64,
    /// Bytes discarded by drop rules.
    dropped_bytes: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn rule(&self, from: usize, to: usize) -> Rule {
        lock(&self.rules)
            .get(&(from, to))
            .copied()
            .unwrap_or_default()
    }

    fn update(&self, from: usize, to: usize, change: impl FnOnce(&mut Rule)) {
        let mut rules = lock(&self.rules);
        let rule = rules.entry((from, to)).or_default();
        change(rule);
        if *rule == Rule::default() {
            rules.remove(&(from, to));
        }
    }

    fn index_of(&self, advertised: &str) -> Option<usize> {
        lock(&self.proxies)
            .iter()
            .position(|p| p.listen.to_string() == advertised)
    }

    fn cut(&self, a: usize, b: usize) {
        assert_ne!(a, b, "cut: a node has no link to itself");
        self.update(a, b, |r| r.drop = true);
        self.update(b, a, |r| r.drop = true);
        self.close_links(a, b, false);
    }

    fn cut_one_way(&self, from: usize, to: usize) {
        assert_ne!(from, to, "cut_one_way: a node has no link to itself");
        self.update(from, to, |r| r.drop = true);
    }

    fn heal(&self, a: usize, b: usize) {
        self.update(a, b, |r| r.drop = false);
        self.update(b, a, |r| r.drop = false);
        self.close_links(a, b, true);
    }

    /// Closes links between `a` and `b` (any if `only_poisoned` is false).
    fn close_links(&self, a: usize, b: usize, only_poisoned: bool) {
        let mut links = lock(&self.links);
        links.retain(|l| !l.gone());
        for link in links.iter().filter(|l| l.between(a, b)) {
            if !only_poisoned || link.poisoned.load(Ordering::Acquire) {
                link.close();
            }
        }
    }
}

/// The proxies of one test's cluster and the rules between its nodes.
#[derive(Debug)]
pub struct Net {
    inner: Arc<Inner>,
}

impl Default for Net {
    fn default() -> Self {
        Self::new()
    }
}

impl Net {
    /// A network with no proxies yet.
    pub fn new() -> Net {
        Net {
            inner: Arc::new(Inner::default()),
        }
    }

    /// Binds the proxy of the next node on a free loopback port and returns
    /// its index (0, 1, ...); point it at the node with [`Net::set_upstream`].
    ///
    /// # Panics
    /// If no port can be bound or the accept thread cannot start.
    pub fn add_node(&self) -> usize {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("proxy: cannot bind a loopback port: {e}"));
        let listen = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("proxy: no local address: {e}"));
        let proxy = Arc::new(Proxy {
            listen,
            upstream: Mutex::new(None),
            accept: Mutex::new(None),
        });
        let index = {
            let mut proxies = lock(&self.inner.proxies);
            proxies.push(Arc::clone(&proxy));
            proxies.len() - 1
        };
        let inner = Arc::clone(&self.inner);
        let accept_proxy = Arc::clone(&proxy);
        let handle = std::thread::Builder::new()
            .name(format!("proxy-accept-{index}"))
            .spawn(move || accept_loop(&inner, index, &accept_proxy, &listener))
            .unwrap_or_else(|e| panic!("proxy: cannot start the accept thread: {e}"));
        *lock(&proxy.accept) = Some(handle);
        index
    }

    /// The address node `i` advertises (`--peer-advertise`): its proxy.
    pub fn proxy_addr(&self, i: usize) -> SocketAddr {
        lock(&self.inner.proxies)[i].listen
    }

    /// Where proxy `i` forwards to: node `i`'s real peer port.
    pub fn set_upstream(&self, i: usize, upstream: SocketAddr) {
        *lock(&lock(&self.inner.proxies)[i].upstream) = Some(upstream);
    }

    /// Nodes with a proxy.
    pub fn len(&self) -> usize {
        lock(&self.inner.proxies).len()
    }

    /// Whether no proxy exists yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cuts the link between `a` and `b` both ways: open connections are
    /// closed and new ones refused until [`Net::heal`].
    pub fn cut(&self, a: usize, b: usize) {
        self.inner.cut(a, b);
    }

    /// Discards what `from` sends `to`; the other direction still flows.
    pub fn cut_one_way(&self, from: usize, to: usize) {
        self.inner.cut_one_way(from, to);
    }

    /// Heals the link between `a` and `b` both ways (delays stay):
    /// connections that lost bytes are closed, so the nodes redial.
    pub fn heal(&self, a: usize, b: usize) {
        self.inner.heal(a, b);
    }

    /// Cuts node `x` from every other node.
    pub fn isolate(&self, x: usize) {
        for y in (0..self.len()).filter(|&y| y != x) {
            self.cut(x, y);
        }
    }

    /// Heals every link of node `x`.
    pub fn rejoin(&self, x: usize) {
        for y in (0..self.len()).filter(|&y| y != x) {
            self.heal(x, y);
        }
    }

    /// Cuts every pair of nodes that are in different `groups` (nodes in
    /// no group are left alone).
    pub fn partition(&self, groups: &[&[usize]]) {
        for (g, group) in groups.iter().enumerate() {
            for other in &groups[g + 1..] {
                for &a in *group {
                    for &b in *other {
                        self.cut(a, b);
                    }
                }
            }
        }
    }

    /// Holds every chunk `from` sends `to` for `delay` (zero: no delay).
    pub fn delay(&self, from: usize, to: usize, delay: Duration) {
        self.inner.update(from, to, |r| r.delay = delay);
    }

    /// Delays every link of node `x`, both ways.
    pub fn delay_node(&self, x: usize, delay: Duration) {
        for y in (0..self.len()).filter(|&y| y != x) {
            self.delay(x, y, delay);
            self.delay(y, x, delay);
        }
    }

    /// Clears every rule; connections that lost bytes are closed.
    pub fn heal_all(&self) {
        let pairs: Vec<(usize, usize)> = lock(&self.inner.rules).keys().copied().collect();
        lock(&self.inner.rules).clear();
        for (a, b) in pairs {
            self.inner.close_links(a, b, true);
        }
    }

    /// Whether any rule is in force.
    pub fn is_healed(&self) -> bool {
        lock(&self.inner.rules).is_empty()
    }

    /// Starts a thread that cuts the link `a`–`b` (both ways, or only
    /// `a`→`b` when `one_way`) for `down`, heals it for `up`, and so on
    /// until the returned [`Flapper`] is stopped or dropped (which heals).
    ///
    /// # Panics
    /// If the thread cannot start.
    pub fn flap(&self, a: usize, b: usize, down: Duration, up: Duration, one_way: bool) -> Flapper {
        let stop = Arc::new(AtomicBool::new(false));
        let flips = Arc::new(AtomicU64::new(0));
        let net = Arc::clone(&self.inner);
        let (stop2, flips2) = (Arc::clone(&stop), Arc::clone(&flips));
        let handle = std::thread::Builder::new()
            .name(format!("flap-{a}-{b}"))
            .spawn(move || {
                while !stop2.load(Ordering::Acquire) && !net.stopped.load(Ordering::Acquire) {
                    if one_way {
                        net.cut_one_way(a, b);
                    } else {
                        net.cut(a, b);
                    }
                    flips2.fetch_add(1, Ordering::Relaxed);
                    sleep_unless(&stop2, down);
                    net.heal(a, b);
                    sleep_unless(&stop2, up);
                }
                net.heal(a, b);
            })
            .unwrap_or_else(|e| panic!("cannot start the flapping thread: {e}"));
        Flapper {
            stop,
            flips,
            handle: Some(handle),
        }
    }

    /// Connections closed because the dialer was unknown (should be 0).
    pub fn unidentified(&self) -> u64 {
        self.inner.unidentified.load(Ordering::Relaxed)
    }

    /// Connections refused because their link was cut.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Bytes discarded by drop rules so far.
    pub fn dropped_bytes(&self) -> u64 {
        self.inner.dropped_bytes.load(Ordering::Relaxed)
    }

    /// Proxied connections open now.
    pub fn open_links(&self) -> usize {
        let mut links = lock(&self.inner.links);
        links.retain(|l| !l.gone());
        links.len()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.inner.stopped.store(true, Ordering::Release);
        for link in lock(&self.inner.links).drain(..) {
            link.close();
        }
        let proxies: Vec<Arc<Proxy>> = lock(&self.inner.proxies).clone();
        for proxy in proxies {
            // Wake the blocking accept so it sees `stopped`.
            let _ = TcpStream::connect_timeout(&proxy.listen, Duration::from_secs(1));
            if let Some(handle) = lock(&proxy.accept).take() {
                let deadline = Instant::now() + Duration::from_secs(2);
                while !handle.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if handle.is_finished() {
                    let _ = handle.join();
                }
            }
        }
    }
}

/// A link flapping on its own thread; stopping (or dropping) it heals.
#[derive(Debug)]
pub struct Flapper {
    stop: Arc<AtomicBool>,
    flips: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Flapper {
    /// Stops flapping, heals the link and returns how many cuts were made.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.flips.load(Ordering::Relaxed)
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Flapper {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Sleeps `d`, waking early when `stop` is set.
fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let deadline = Instant::now() + d;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
    }
}

fn accept_loop(inner: &Arc<Inner>, index: usize, proxy: &Arc<Proxy>, listener: &TcpListener) {
    loop {
        let accepted = listener.accept();
        if inner.stopped.load(Ordering::Acquire) {
            return;
        }
        match accepted {
            Ok((stream, _)) => {
                let (inner, proxy) = (Arc::clone(inner), Arc::clone(proxy));
                let spawned = std::thread::Builder::new()
                    .name(format!("proxy-conn-{index}"))
                    .spawn(move || serve(&inner, index, &proxy, stream));
                if let Err(e) = spawned {
                    eprintln!("proxy {index}: cannot start a connection thread: {e}");
                }
            }
            Err(e) => {
                eprintln!("proxy {index}: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Reads the dialer's Hello; returns the bytes read and the dialer's index.
fn identify(inner: &Inner, client: &mut TcpStream) -> (Vec<u8>, Option<usize>) {
    let mut raw = Vec::new();
    let deadline = Instant::now() + IDENTIFY_TIMEOUT;
    let mut chunk = [0u8; 4096];
    loop {
        let mut parse = BytesMut::from(&raw[..]);
        match split_hello(&mut parse) {
            Ok(Some(body)) => {
                let dialer = decode_hello(&body)
                    .ok()
                    .and_then(|hello| inner.index_of(&hello.member.peer_addr));
                return (raw, dialer);
            }
            Ok(None) => {}
            Err(_) => return (raw, None),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || raw.len() > IDENTIFY_BYTES_MAX {
            return (raw, None);
        }
        let _ = client.set_read_timeout(Some(left));
        match client.read(&mut chunk) {
            Ok(0) => return (raw, None),
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return (raw, None),
        }
    }
}

/// Serves one accepted connection: identify, check the rules, connect
/// upstream, pump both ways.
fn serve(inner: &Arc<Inner>, acceptor: usize, proxy: &Proxy, mut client: TcpStream) {
    let (first, dialer) = identify(inner, &mut client);
    let Some(dialer) = dialer else {
        inner.unidentified.fetch_add(1, Ordering::Relaxed);
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let cut =
        |inner: &Inner| inner.rule(dialer, acceptor).drop && inner.rule(acceptor, dialer).drop;
    if cut(inner) || inner.stopped.load(Ordering::Acquire) {
        inner.refused.fetch_add(1, Ordering::Relaxed);
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Some(upstream_addr) = *lock(&proxy.upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let Ok(upstream) = TcpStream::connect_timeout(&upstream_addr, UPSTREAM_CONNECT_TIMEOUT) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_read_timeout(None);
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let clones = (
        client.try_clone(),
        upstream.try_clone(),
        client.try_clone(),
        upstream.try_clone(),
    );
    let (Ok(client_r), Ok(upstream_w), Ok(client_w), Ok(upstream_r)) = clones else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
        return;
    };
    let link = Arc::new(Link {
        dialer,
        acceptor,
        client,
        upstream,
        poisoned: AtomicBool::new(false),
        finished: AtomicUsize::new(0),
    });
    {
        let mut links = lock(&inner.links);
        links.retain(|l| !l.gone());
        links.push(Arc::clone(&link));
    }
    // A cut made while this link was being set up closes it too.
    if cut(inner) || inner.stopped.load(Ordering::Acquire) {
        link.close();
    }
    let to_acceptor = pump(
        inner,
        &link,
        (dialer, acceptor),
        client_r,
        upstream_w,
        first,
    );
    let to_dialer = pump(
        inner,
        &link,
        (acceptor, dialer),
        upstream_r,
        client_w,
        Vec::new(),
    );
    if to_acceptor.is_err() || to_dialer.is_err() {
        link.close();
    }
}

type Chunk = Option<(Instant, Vec<u8>)>;

/// Starts the reader and writer threads of one direction; `first` is sent
/// ahead of what `src` yields.
fn pump(
    inner: &Arc<Inner>,
    link: &Arc<Link>,
    (from, to): (usize, usize),
    mut src: TcpStream,
    mut dst: TcpStream,
    first: Vec<u8>,
) -> std::io::Result<()> {
    let (tx, rx) = mpsc::sync_channel::<Chunk>(QUEUE_CHUNKS);
    if !first.is_empty() {
        let _ = tx.send(Some((Instant::now(), first)));
    }
    let reader_link = Arc::clone(link);
    let reader = std::thread::Builder::new()
        .name(format!("proxy-read-{from}-{to}"))
        .spawn(move || {
            let mut buf = vec![0u8; CHUNK_BYTES];
            loop {
                match src.read(&mut buf) {
                    Ok(0) => {
                        let _ = tx.send(None);
                        break;
                    }
                    Ok(n) => {
                        if tx.send(Some((Instant::now(), buf[..n].to_vec()))).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        reader_link.close();
                        let _ = tx.send(None);
                        break;
                    }
                }
            }
            reader_link.finished.fetch_add(1, Ordering::AcqRel);
        });
    if let Err(e) = reader {
        link.finished.fetch_add(2, Ordering::AcqRel);
        return Err(e);
    }
    let (inner, writer_link) = (Arc::clone(inner), Arc::clone(link));
    let writer = std::thread::Builder::new()
        .name(format!("proxy-write-{from}-{to}"))
        .spawn(move || {
            while let Ok(chunk) = rx.recv() {
                let Some((read_at, bytes)) = chunk else {
                    let _ = dst.shutdown(Shutdown::Write);
                    break;
                };
                let due = read_at + inner.rule(from, to).delay;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if inner.rule(from, to).drop {
                    writer_link.poisoned.store(true, Ordering::Release);
                    inner
                        .dropped_bytes
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    continue;
                }
                if dst.write_all(&bytes).is_err() {
                    writer_link.close();
                    break;
                }
            }
            writer_link.finished.fetch_add(1, Ordering::AcqRel);
        });
    if let Err(e) = writer {
        link.finished.fetch_add(1, Ordering::AcqRel);
        return Err(e);
    }
    Ok(())
}
