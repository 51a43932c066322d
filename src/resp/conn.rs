//! One client connection: read what the client sent, execute every complete
//! command in order, send all the replies with one write.

use super::command::execute_next;
use super::frame::{Parsed, RequestParser};
use super::monitor::Subscription;
use super::reply::{Protocol, Reply};
use super::server::Shared;
use crate::limits::{PIPELINE_BATCH_COMMANDS_MAX, READ_BUFFER_BYTES, REPLY_BUFFER_BYTES_MAX};
use crate::net::{Connection, ReadHalf, WriteHalf};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, watch};

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
    fn take_reply_wanted(&mut self) -> bool {
        let wanted = !self.reply_off && !self.reply_skip_this;
        self.reply_skip_this = std::mem::take(&mut self.reply_skip_next);
        wanted
    }
}

/// Serves one client until it leaves, breaks the protocol, is killed, or
/// the node shuts down (after finishing the commands it already sent).
pub async fn serve_connection(shared: Arc<Shared>, connection: Connection) {
    let Connection {
        mut reader,
        mut writer,
        local,
        remote,
    } = connection;
    let info = Arc::new(ClientInfo::new(shared.next_client_id(), remote, local));
    shared
        .clients
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(info.id, Arc::clone(&info));
    let config = shared.config();
    let mut session = Session::new(Arc::clone(&info), config.requirepass.is_some());
    if let Err(e) = run(
        &shared,
        &mut session,
        (&mut reader, &mut writer),
        config.proto_max_bulk_len,
    )
    .await
    {
        tracing::debug!(client = info.id, "connection ended: {e}");
    }
    shared
        .clients
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&info.id);
}

async fn run(
    shared: &Shared,
    session: &mut Session,
    (reader, writer): (&mut ReadHalf, &mut WriteHalf),
    bulk_bytes_max: usize,
) -> std::io::Result<()> {
    let mut input = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut output = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut parser = RequestParser::new(bulk_bytes_max);
    let mut shutdown = shared.shutdown();
    let info = Arc::clone(&session.info);
    let mut last_read = Instant::now();
    let mut timeout_secs = shared.idle_timeout_secs.subscribe();
    loop {
        // Execute every complete command already received, in order.
        let mut broken = None;
        let mut commands = VecDeque::new();
        while commands.len() < PIPELINE_BATCH_COMMANDS_MAX {
            match parser.next(&mut input, session.authenticated) {
                Parsed::Incomplete => break,
                Parsed::Command(args) => commands.push_back(args),
                Parsed::Error(text) => {
                    broken = Some(text);
                    break;
                }
            }
            // Before AUTH the parser applies tighter limits; parse the
            // next request only once this one ran.
            if !session.authenticated {
                break;
            }
        }
        // A full batch (or one cut short before AUTH) may leave complete
        // commands in the buffer.
        let more = commands.len() >= PIPELINE_BATCH_COMMANDS_MAX
            || (!commands.is_empty() && broken.is_none() && !session.authenticated);
        while !commands.is_empty() {
            if shared.pause.active() && !output.is_empty() {
                send(shared, writer, &mut output, session.monitor.as_ref()).await?;
            }
            // Lines of commands that ran before this one go out before its reply.
            if !take_monitor_lines(session, &mut output) {
                return Ok(());
            }
            for reply in execute_next(shared, session, &mut commands).await {
                count_errors(shared, &reply);
                if session.take_reply_wanted() {
                    reply.encode(session.protocol, &mut output);
                }
            }
            if session.closing {
                return send(shared, writer, &mut output, session.monitor.as_ref()).await;
            }
            if output.len() >= REPLY_BUFFER_BYTES_MAX {
                send(shared, writer, &mut output, session.monitor.as_ref()).await?;
            }
        }
        if let Some(text) = broken {
            let reply = Reply::Error(text);
            count_errors(shared, &reply);
            reply.encode(session.protocol, &mut output);
            return send(shared, writer, &mut output, session.monitor.as_ref()).await;
        }
        if more {
            continue;
        }
        if !take_monitor_lines(session, &mut output) {
            return Ok(());
        }
        send(shared, writer, &mut output, session.monitor.as_ref()).await?;
        info.update(|s| s.query_buffer = input.len());
        if *shutdown.borrow() || info.killed.load(Ordering::SeqCst) {
            return Ok(());
        }
        if input.capacity() - input.len() < READ_BUFFER_BYTES / 4 {
            input.reserve(READ_BUFFER_BYTES);
        }
        tokio::select! {
            biased;
            read = reader.read_buf(&mut input) => match read? {
                0 => return Ok(()),
                n => {
                    shared.stats.net_input_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            },
            () = crate::task::stopped(&mut shutdown) => return Ok(()),
            () = info.wake.notified() => {}
            () = monitor_ready(session.monitor.as_ref()) => {}
            () = idle_expired(&mut timeout_secs, last_read), if session.monitor.is_none() => {
                tracing::debug!(client = info.id, "closing an idle client (timeout)");
                return Ok(());
            }
        }
        last_read = Instant::now();
    }
}

/// Moves the MONITOR lines waiting for this connection, if it monitors,
/// into `output`; false when it fell too far behind and must close (see
/// [`super::monitor`]).
///
/// While CLIENT REPLY OFF or SKIP holds its replies the lines are dropped,
/// as Redis drops them. Redis decides when it feeds a line, we when we
/// take it: the same lines but for two of the monitor's own, the line of
/// its CLIENT REPLY SKIP (which Redis shows) and that of the command after
/// it (which Redis drops).
fn take_monitor_lines(session: &Session, output: &mut BytesMut) -> bool {
    let Some(monitor) = &session.monitor else {
        return true;
    };
    let taken = if session.reply_off || session.reply_skip_this {
        monitor.discard_lines()
    } else {
        monitor.take_lines(output)
    };
    match taken {
        Ok(()) => true,
        Err(lagged) => {
            tracing::info!(
                client = session.info.id,
                "closing a MONITOR client: {lagged}"
            );
            false
        }
    }
}

/// Returns when a monitoring connection may have lines to send; never
/// for any other.
async fn monitor_ready(monitor: Option<&Subscription>) {
    match monitor {
        Some(monitor) => monitor.ready().await,
        None => std::future::pending().await,
    }
}

/// Counts the error replies in `reply` for INFO: the reply itself, or the
/// replies of EXEC's commands (the only arrays that carry errors).
fn count_errors(shared: &Shared, reply: &Reply) {
    match reply {
        Reply::Error(text) => shared.stats.record_error(text),
        Reply::Raw(raw) if raw.first() == Some(&b'-') => {
            shared
                .stats
                .record_error(&String::from_utf8_lossy(&raw[1..]));
        }
        Reply::Array(items) => items.iter().for_each(|r| count_errors(shared, r)),
        _ => {}
    }
}

/// Returns once the client has been idle (nothing read since `last_read`)
/// for CONFIG `timeout` seconds; never while the timeout is 0. Follows
/// CONFIG SET while it waits.
async fn idle_expired(timeout_secs: &mut watch::Receiver<u64>, last_read: Instant) {
    loop {
        let secs = *timeout_secs.borrow_and_update();
        if secs == 0 {
            if timeout_secs.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            continue;
        }
        let deadline = tokio::time::Instant::from_std(last_read) + Duration::from_secs(secs);
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return,
            changed = timeout_secs.changed() => {
                if changed.is_err() {
                    // The server is gone; the shutdown branch ends the wait.
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// Writes `output` to the client. A monitor's write is given up when it
/// lags past its bound (its client may never read again).
async fn send(
    shared: &Shared,
    writer: &mut WriteHalf,
    output: &mut BytesMut,
    monitor: Option<&Subscription>,
) -> std::io::Result<()> {
    if output.is_empty() {
        return Ok(());
    }
    match monitor {
        None => writer.write_all(output).await?,
        Some(monitor) => tokio::select! {
            written = writer.write_all(output) => written?,
            lagged = monitor.lagged() => return Err(std::io::Error::other(lagged)),
        },
    }
    shared
        .stats
        .net_output_bytes
        .fetch_add(output.len() as u64, Ordering::Relaxed);
    output.clear();
    Ok(())
}
