//! A client's session and what the node shows of it: the connection's
//! identity and state (CLIENT LIST/INFO), and the session a connection
//! carries between commands (the selected database, MULTI, WATCH,
//! CLIENT REPLY, MONITOR).

use super::monitor::Subscription;
use super::reply::Protocol;
use crate::limits::READ_BUFFER_BYTES;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;
use tokio::sync::Notify;

/// What CLIENT LIST/INFO show of a connection; shared with the registry.
#[derive(Debug)]
pub struct ClientInfo {
    /// Client id (CLIENT ID).
    pub id: u64,
    /// The client's address.
    pub addr: SocketAddr,
    /// Our address it connected to.
    pub laddr: SocketAddr,
    /// When it connected.
    pub created: Instant,
    /// The parts that change.
    pub state: Mutex<ClientState>,
    /// Set by CLIENT KILL; the connection closes at its next chance.
    pub killed: AtomicBool,
    /// Wakes the connection when killed.
    pub wake: Notify,
}

/// The changing part of [`ClientInfo`].
#[derive(Debug, Clone)]
pub struct ClientState {
    /// CLIENT SETNAME.
    pub name: Bytes,
    /// CLIENT SETINFO LIB-NAME.
    pub lib_name: Bytes,
    /// CLIENT SETINFO LIB-VER.
    pub lib_ver: Bytes,
    /// Last command's full name (`client|list`).
    pub last_command: String,
    /// When it last ran a command.
    pub last_active: Instant,
    /// RESP version.
    pub protocol: Protocol,
    /// Commands queued in MULTI, or -1.
    pub multi: i64,
    /// Bytes waiting in the read buffer.
    pub query_buffer: usize,
    /// The selected logical database (SELECT).
    pub db: u8,
    /// In MONITOR mode.
    pub monitor: bool,
}

impl ClientInfo {
    /// A new client's info (crate-wide for tests that run a session
    /// without a socket).
    pub(crate) fn new(id: u64, addr: SocketAddr, laddr: SocketAddr) -> Self {
        let now = Instant::now();
        Self {
            id,
            addr,
            laddr,
            created: now,
            state: Mutex::new(ClientState {
                name: Bytes::new(),
                lib_name: Bytes::new(),
                lib_ver: Bytes::new(),
                last_command: "NULL".to_owned(),
                last_active: now,
                protocol: Protocol::Resp2,
                multi: -1,
                query_buffer: 0,
                db: 0,
                monitor: false,
            }),
            killed: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// A copy of the changing state.
    pub fn state(&self) -> ClientState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes the state.
    pub fn update(&self, change: impl FnOnce(&mut ClientState)) {
        change(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Closes the connection at its next chance (CLIENT KILL).
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// The CLIENT LIST / CLIENT INFO line (without the newline).
    pub fn describe(&self, now: Instant) -> String {
        let s = self.state();
        // Redis's flags: O for a monitor, x in MULTI, N for none.
        let flags = match (s.monitor, s.multi >= 0) {
            (true, true) => "Ox",
            (true, false) => "O",
            (false, true) => "x",
            (false, false) => "N",
        };
        let resp = match s.protocol {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        };
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags={flags} db={} sub=0 psub=0 ssub=0 \
             multi={} qbuf={} qbuf-free=0 argv-mem=0 multi-mem=0 rbs={READ_BUFFER_BYTES} rbp=0 obl=0 oll=0 omem=0 \
             tot-mem=0 events=r cmd={} user=default redir=-1 resp={resp} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            String::from_utf8_lossy(&s.name),
            now.duration_since(self.created).as_secs(),
            now.duration_since(s.last_active).as_secs(),
            s.db,
            s.multi,
            s.query_buffer,
            s.last_command,
            String::from_utf8_lossy(&s.lib_name),
            String::from_utf8_lossy(&s.lib_ver),
        )
    }
}

/// Per-connection state the handlers read and change.
#[derive(Debug)]
pub struct Session {
    /// This client in the registry.
    pub info: Arc<ClientInfo>,
    /// The protocol replies are encoded in.
    pub protocol: Protocol,
    /// Whether AUTH succeeded (or no password is set).
    pub authenticated: bool,
    /// The selected logical database: the client keys of this session's
    /// commands are this database's (`crate::db`).
    pub db: u8,
    /// Commands queued since MULTI, or `None` outside a transaction.
    pub multi: Option<Vec<Vec<Bytes>>>,
    /// A queued command was rejected: EXEC must abort.
    pub multi_failed: bool,
    /// Close after sending the replies so far (QUIT).
    pub closing: bool,
    /// WATCHed keys with the context and liveness they had then.
    pub watched: Vec<Watched>,
    /// A read of a WATCHed key returned another state than WATCH saw
    /// (newer, or older from a replica that had not caught up): the value
    /// the client computes from may not be the watched one, so EXEC
    /// aborts (see [`super::handlers::read`]).
    pub watch_read_other: std::sync::atomic::AtomicBool,
    /// While EXEC runs a transaction: the WATCHed keys it has not written
    /// yet (see [`super::handlers::write`]).
    exec_watch: std::sync::Mutex<ExecWatch>,
    /// CLIENT REPLY OFF: no reply is sent until CLIENT REPLY ON.
    pub reply_off: bool,
    /// The reply of the command running now is not sent (CLIENT REPLY
    /// SKIP's own, and the next command's after it).
    pub reply_skip_this: bool,
    /// The next command's reply is not sent (set by CLIENT REPLY SKIP).
    pub reply_skip_next: bool,
    /// In MONITOR mode: the lines waiting for this connection. A monitor
    /// may not touch the keyspace, is never paused and never idles out,
    /// as a Redis monitor (a replica to Redis) is not; RESET ends it.
    pub monitor: Option<Subscription>,
    /// EXEC is running the queued commands (Redis's `CLIENT_DENY_BLOCKING`:
    /// MONITOR refuses to start).
    pub in_exec: bool,
}

/// What an EXEC still guards: its first write of each WATCHed key is made
/// conditional on the key being as WATCH saw it, and checked under the
/// key's lock by the replica that coordinates it, so no write can come
/// between the check and the transaction's write (docs/semantics.md).
#[derive(Debug, Default)]
pub struct ExecWatch {
    /// WATCHed keys not written yet by this EXEC.
    pub pending: Vec<Watched>,
    /// A conditional write found its key changed: EXEC aborts.
    pub broken: bool,
}

/// A WATCHed key as it was when watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// The key, namespaced (`Session::key`).
    pub key: Bytes,
    /// Its context: any write through any coordinator changes it.
    pub context: crate::version::VersionVector,
    /// Whether it held a live value (Redis counts expiry as a change).
    pub live: bool,
}

impl Session {
    /// A fresh session: RESP2, authenticated unless a password is set.
    pub fn new(info: Arc<ClientInfo>, password_required: bool) -> Self {
        Self {
            info,
            protocol: Protocol::Resp2,
            authenticated: !password_required,
            db: 0,
            multi: None,
            multi_failed: false,
            closing: false,
            watched: Vec::new(),
            watch_read_other: std::sync::atomic::AtomicBool::new(false),
            exec_watch: std::sync::Mutex::default(),
            reply_off: false,
            reply_skip_this: false,
            reply_skip_next: false,
            monitor: None,
            in_exec: false,
        }
    }

    /// What the running EXEC still guards (a lock only the connection's
    /// own task takes: handlers see the session shared).
    pub fn exec_watch(&self) -> std::sync::MutexGuard<'_, ExecWatch> {
        self.exec_watch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets every WATCHed key (UNWATCH, EXEC, DISCARD, RESET); returns
    /// them, and whether a read saw one in another state.
    pub fn unwatch(&mut self) -> (Vec<Watched>, bool) {
        let read_other = self
            .watch_read_other
            .swap(false, std::sync::atomic::Ordering::Relaxed);
        (std::mem::take(&mut self.watched), read_other)
    }

    /// Selects logical database `db` (SELECT, RESET).
    pub fn select(&mut self, db: u8) {
        self.db = db;
        self.info.update(|s| s.db = db);
    }

    /// A client key of this session's database as every layer below the
    /// RESP face sees it.
    pub fn key(&self, key: &Bytes) -> Bytes {
        crate::db::namespaced(self.db, key)
    }

    /// Whether the reply of the command that just ran goes to the client,
    /// and moves CLIENT REPLY SKIP on to the next command (Redis's
    /// `resetClient`).
    pub(super) fn take_reply_wanted(&mut self) -> bool {
        let wanted = !self.reply_off && !self.reply_skip_this;
        self.reply_skip_this = std::mem::take(&mut self.reply_skip_next);
        wanted
    }
}
