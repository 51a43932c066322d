//! MONITOR: every command this node runs, as one status line per command,
//! streamed to the clients that asked (Redis's `replicationFeedMonitors`).
//!
//! `command` calls [`Monitors::feed`] once a command ran, and only after
//! [`Monitors::active`] (one atomic load) found a monitor attached: a node
//! nobody monitors pays nothing else. Which commands are shown, and their
//! redaction, are `command`'s to decide; this module formats the line
//! ([`line`], pure) and queues it. A monitoring connection holds a
//! [`Subscription`] and moves its queued lines into its output between
//! commands and whenever [`Subscription::ready`] fires, and gives up a
//! write to its socket when [`Subscription::lagged`] fires.
//!
//! Lag policy: each monitor has a bounded queue
//! ([`MONITOR_QUEUE_BYTES_MAX`]) and a command never waits for a monitor.
//! A monitor whose queue would pass the bound is detached at once, its
//! queued lines dropped, and its connection closes, even in the middle of
//! a write its client does not read, as Redis closes a client past its
//! `client-output-buffer-limit`. We disconnect rather than skip lines: a
//! monitor exists to see every command, and a gap it cannot notice would
//! mislead it, while a closed connection is plain to see.

use crate::limits::MONITOR_QUEUE_BYTES_MAX;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// The monitors attached to this node and the lines queued for each.
#[derive(Debug, Default)]
pub struct Monitors {
    /// How many queues there are: what the command path loads.
    attached: AtomicUsize,
    /// One queue per subscription. One lock for all of them, so every
    /// monitor sees the commands in the same order.
    queues: Mutex<Vec<Queue>>,
    next_id: AtomicU64,
}

/// The lines waiting for one monitor.
#[derive(Debug)]
struct Queue {
    id: u64,
    lines: VecDeque<Bytes>,
    bytes: usize,
    /// Lines were queued, or the queue was detached.
    wake: Arc<Notify>,
    /// The queue was detached (a notification of its own, so that a write
    /// waiting for it does not take the wake-up meant for new lines).
    lag: Arc<Notify>,
}

/// The monitor fell more than [`MONITOR_QUEUE_BYTES_MAX`] behind and was
/// detached; its connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the MONITOR client fell more than {MONITOR_QUEUE_BYTES_MAX} bytes behind")]
pub struct Lagged;

impl Monitors {
    /// Whether any monitor is attached: the one check the command path
    /// makes before it formats anything.
    pub fn active(&self) -> bool {
        self.attached.load(Ordering::Acquire) != 0
    }

    /// Attaches a monitor: it gets every line fed from now on, until the
    /// subscription is dropped or lags.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (wake, lag) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let mut queues = self.lock();
        queues.push(Queue {
            id,
            lines: VecDeque::new(),
            bytes: 0,
            wake: Arc::clone(&wake),
            lag: Arc::clone(&lag),
        });
        self.attached.store(queues.len(), Ordering::Release);
        drop(queues);
        Subscription {
            monitors: Arc::clone(self),
            id,
            wake,
            lag,
        }
    }

    /// Queues the line for a command that ran (`args` as shown: secrets
    /// already redacted) for every monitor, stamped with the time now.
    /// Never waits: a monitor it would put past its bound is detached.
    ///
    /// The line is formatted before the lock is taken, so two commands
    /// finishing together on two connections may be listed in the other
    /// order than their stamps (by microseconds); Redis, single-threaded,
    /// has no such overlap. Every monitor sees the same order.
    pub fn feed(&self, db: usize, client: SocketAddr, args: &[Bytes]) {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let line = line(since_epoch, db, client, args);
        let mut queues = self.lock();
        queues.retain_mut(|queue| {
            if queue.bytes > 0 && queue.bytes + line.len() > MONITOR_QUEUE_BYTES_MAX {
                tracing::warn!(
                    queued_bytes = queue.bytes,
                    "a MONITOR client fell behind past its bound; disconnecting it"
                );
                // Its connection wakes (or gives up its write), finds its
                // queue gone, and closes. A stored permit is never lost.
                queue.lag.notify_one();
                queue.wake.notify_one();
                return false;
            }
            queue.bytes += line.len();
            queue.lines.push_back(line.clone());
            queue.wake.notify_one();
            true
        });
        self.attached.store(queues.len(), Ordering::Release);
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Queue>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One monitoring connection's attachment; dropping it detaches.
#[derive(Debug)]
pub struct Subscription {
    monitors: Arc<Monitors>,
    id: u64,
    wake: Arc<Notify>,
    lag: Arc<Notify>,
}

impl Subscription {
    /// Returns when lines may be waiting, or the monitor was detached.
    pub async fn ready(&self) {
        self.wake.notified().await;
    }

    /// Returns once the monitor was detached for lagging (and at once if it
    /// already was).
    pub async fn lagged(&self) -> Lagged {
        self.lag.notified().await;
        Lagged
    }

    /// Appends the lines queued so far to `out`, oldest first.
    ///
    /// # Errors
    /// [`Lagged`] when the queue passed its bound and was detached.
    pub fn take_lines(&self, out: &mut BytesMut) -> Result<(), Lagged> {
        for line in self.take()? {
            out.extend_from_slice(&line);
        }
        Ok(())
    }

    /// Drops the lines queued so far (the client takes no replies now).
    ///
    /// # Errors
    /// [`Lagged`] when the queue passed its bound and was detached.
    pub fn discard_lines(&self) -> Result<(), Lagged> {
        self.take().map(drop)
    }

    fn take(&self) -> Result<VecDeque<Bytes>, Lagged> {
        let mut queues = self.monitors.lock();
        let queue = queues.iter_mut().find(|q| q.id == self.id).ok_or(Lagged)?;
        queue.bytes = 0;
        Ok(std::mem::take(&mut queue.lines))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut queues = self.monitors.lock();
        queues.retain(|q| q.id != self.id);
        self.monitors
            .attached
            .store(queues.len(), Ordering::Release);
    }
}

/// One MONITOR line as Redis 7 writes it, CRLF included:
/// `+<secs>.<micros> [<db> <client addr>] "arg" "arg"...`, every argument
/// quoted as Redis's `sdscatrepr` quotes it (see [`quote`]).
pub fn line(since_epoch: Duration, db: usize, client: SocketAddr, args: &[Bytes]) -> Bytes {
    let prefix = format!(
        "+{}.{:06} [{db} {client}] ",
        since_epoch.as_secs(),
        since_epoch.subsec_micros()
    );
    let args_bytes: usize = args.iter().map(|a| a.len() + 3).sum();
    let mut out = Vec::with_capacity(prefix.len() + args_bytes + 2);
    out.extend_from_slice(prefix.as_bytes());
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        quote(&mut out, arg);
    }
    out.extend_from_slice(b"\r\n");
    out.into()
}

/// Appends `arg` in double quotes as Redis's `sdscatrepr` does: `\\`, `\"`,
/// `\n`, `\r`, `\t`, `\a`, `\b`, printable ASCII as it is, any other byte
/// as `\xhh` (C's `isprint` in the C locale, lowercase hex).
fn quote(out: &mut Vec<u8>, arg: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in arg {
        match b {
            b'\\' | b'"' => out.extend_from_slice(&[b'\\', b]),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x07 => out.extend_from_slice(b"\\a"),
            0x08 => out.extend_from_slice(b"\\b"),
            b' '..=b'~' => out.push(b),
            _ => out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&[u8]]) -> Vec<Bytes> {
        words.iter().map(|w| Bytes::copy_from_slice(w)).collect()
    }

    /// Proves the line is Redis 7.0.15's, byte for byte: the expected
    /// bytes were taken from `redis-server` 7.0.15 sent the same command.
    #[test]
    fn line_matches_redis() {
        let addr: SocketAddr = "127.0.0.1:50168".parse().unwrap();
        let at = Duration::new(1_796_614_704, 699_264_999);
        let got = line(
            at,
            0,
            addr,
            &args(&[
                b"set",
                b"k",
                "a\r\n\t\x07\x08\"\\\0\u{ff} \u{e9}".as_bytes(),
            ]),
        );
        assert_eq!(
            got,
            Bytes::from_static(
                b"+1796614704.699264 [0 127.0.0.1:50168] \"set\" \"k\" \
                  \"a\\r\\n\\t\\a\\b\\\"\\\\\\x00\\xc3\\xbf \\xc3\\xa9\"\r\n"
            )
        );
    }

    /// Proves the microseconds are zero-padded, the db and an IPv6 peer
    /// print as Redis prints them, and a command without arguments works.
    #[test]
    fn line_fields() {
        let addr: SocketAddr = "[::1]:6000".parse().unwrap();
        let got = line(Duration::new(5, 7_000), 3, addr, &args(&[b"PING"]));
        assert_eq!(
            got,
            Bytes::from_static(b"+5.000007 [3 [::1]:6000] \"PING\"\r\n")
        );
        let got = line(Duration::new(5, 0), 0, addr, &args(&[b"ECHO", b""]));
        assert_eq!(
            got,
            Bytes::from_static(b"+5.000000 [0 [::1]:6000] \"ECHO\" \"\"\r\n")
        );
    }

    /// Proves every byte value quotes as `sdscatrepr` would: the escapes
    /// for the named controls, `\xhh` for the rest outside printable ASCII.
    #[test]
    fn quote_every_byte() {
        for b in 0..=u8::MAX {
            let mut out = Vec::new();
            quote(&mut out, &[b]);
            let body = &out[1..out.len() - 1];
            let want: Vec<u8> = match b {
                b'\\' => b"\\\\".to_vec(),
                b'"' => b"\\\"".to_vec(),
                b'\n' => b"\\n".to_vec(),
                b'\r' => b"\\r".to_vec(),
                b'\t' => b"\\t".to_vec(),
                7 => b"\\a".to_vec(),
                8 => b"\\b".to_vec(),
                0x20..=0x7e => vec![b],
                _ => format!("\\x{b:02x}").into_bytes(),
            };
            assert_eq!(body, want, "byte {b:#04x}");
        }
    }

    /// Proves a subscription gets the lines fed after it attached, in
    /// order, and that dropping it detaches it (back to zero cost).
    #[test]
    fn subscribe_feed_drop() {
        let monitors = Arc::new(Monitors::default());
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(!monitors.active());
        monitors.feed(0, addr, &args(&[b"GET", b"before"]));
        let sub = monitors.subscribe();
        assert!(monitors.active());
        monitors.feed(0, addr, &args(&[b"GET", b"a"]));
        monitors.feed(0, addr, &args(&[b"GET", b"b"]));
        let mut out = BytesMut::new();
        sub.take_lines(&mut out).unwrap();
        let text = String::from_utf8(out.to_vec()).unwrap();
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with("] \"GET\" \"a\""), "{text}");
        assert!(lines[1].ends_with("] \"GET\" \"b\""), "{text}");
        drop(sub);
        assert!(!monitors.active());
    }

    /// Proves a monitor that does not take its lines is detached once its
    /// queue would pass the bound, that the feeder never waits for it, and
    /// that a monitor keeping up is not affected.
    #[test]
    fn a_lagging_monitor_is_detached() {
        let monitors = Arc::new(Monitors::default());
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let slow = monitors.subscribe();
        let fast = monitors.subscribe();
        let value = Bytes::from(vec![b'v'; 1024 * 1024]);
        let big = [Bytes::from_static(b"SET"), Bytes::from_static(b"k"), value];
        let mut out = BytesMut::new();
        for _ in 0..(MONITOR_QUEUE_BYTES_MAX / (1024 * 1024) + 1) {
            monitors.feed(0, addr, &big);
            fast.take_lines(&mut out).unwrap();
            out.clear();
        }
        assert_eq!(slow.take_lines(&mut out), Err(Lagged));
        assert!(monitors.active(), "the monitor that kept up stays");
        // One line past the bound still reaches a monitor that keeps up.
        let huge = [Bytes::from(vec![b'v'; MONITOR_QUEUE_BYTES_MAX + 1])];
        monitors.feed(0, addr, &huge);
        fast.take_lines(&mut out).unwrap();
        assert!(out.len() > MONITOR_QUEUE_BYTES_MAX);
        drop(fast);
        assert!(!monitors.active());
    }
}
