//! Which commands this node runs, and the path every command takes:
//! lookup in the one command table, NOAUTH, arity, MULTI queueing, then
//! the handler. Arity and flags come from [`super::table`], so what
//! COMMAND reports is what dispatch enforces.

use super::conn::{ExecWatch, Session, Watched};
use super::handlers;
use super::reply::Reply;
use super::server::Shared;
use super::table::{self, CommandMeta};
use crate::coordinator::{ReadOptions, WriteOp, WriteOptions};
use crate::limits::KEY_BYTES_MAX;
use crate::limits::MULTI_QUEUE_LEN_MAX;
use crate::model::record::is_live;
use crate::model::record::winner_value;
use bytes::Bytes;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::LazyLock;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// The commands we implement; each has a handler and a [`CommandMeta`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Cmd {
    // connection
    Ping,
    Echo,
    Hello,
    Auth,
    Select,
    Quit,
    Reset,
    Client,
    // server
    Command,
    Config,
    Info,
    Dbsize,
    Time,
    Monitor,
    // strings and keys
    Get,
    Set,
    Del,
    Unlink,
    Exists,
    Mget,
    Mset,
    Type,
    Setnx,
    Msetnx,
    Getset,
    Getdel,
    Getex,
    Setex,
    Psetex,
    Append,
    Strlen,
    Setrange,
    Getrange,
    Incr,
    Decr,
    Incrby,
    Decrby,
    // keyspace and expiry
    Keys,
    Scan,
    Randomkey,
    Rename,
    Renamenx,
    Copy,
    Move,
    Touch,
    Flushall,
    Expire,
    Pexpire,
    Expireat,
    Pexpireat,
    Ttl,
    Pttl,
    Expiretime,
    Pexpiretime,
    Persist,
    // transactions
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    // the Dynamo face
    Vget,
    Vset,
    Vdel,
    Dynamo,
}

/// Every implemented command by lowercase name.
const IMPLEMENTED: &[(&str, Cmd)] = &[
    ("ping", Cmd::Ping),
    ("echo", Cmd::Echo),
    ("hello", Cmd::Hello),
    ("auth", Cmd::Auth),
    ("select", Cmd::Select),
    ("quit", Cmd::Quit),
    ("reset", Cmd::Reset),
    ("client", Cmd::Client),
    ("command", Cmd::Command),
    ("config", Cmd::Config),
    ("info", Cmd::Info),
    ("dbsize", Cmd::Dbsize),
    ("time", Cmd::Time),
    ("monitor", Cmd::Monitor),
    ("get", Cmd::Get),
    ("set", Cmd::Set),
    ("del", Cmd::Del),
    ("unlink", Cmd::Unlink),
    ("exists", Cmd::Exists),
    ("mget", Cmd::Mget),
    ("mset", Cmd::Mset),
    ("type", Cmd::Type),
    ("setnx", Cmd::Setnx),
    ("msetnx", Cmd::Msetnx),
    ("getset", Cmd::Getset),
    ("getdel", Cmd::Getdel),
    ("getex", Cmd::Getex),
    ("setex", Cmd::Setex),
    ("psetex", Cmd::Psetex),
    ("append", Cmd::Append),
    ("strlen", Cmd::Strlen),
    ("setrange", Cmd::Setrange),
    ("getrange", Cmd::Getrange),
    ("substr", Cmd::Getrange),
    ("incr", Cmd::Incr),
    ("decr", Cmd::Decr),
    ("incrby", Cmd::Incrby),
    ("decrby", Cmd::Decrby),
    ("keys", Cmd::Keys),
    ("scan", Cmd::Scan),
    ("randomkey", Cmd::Randomkey),
    ("rename", Cmd::Rename),
    ("renamenx", Cmd::Renamenx),
    ("copy", Cmd::Copy),
    ("move", Cmd::Move),
    ("touch", Cmd::Touch),
    ("flushall", Cmd::Flushall),
    ("flushdb", Cmd::Flushall),
    ("expire", Cmd::Expire),
    ("pexpire", Cmd::Pexpire),
    ("expireat", Cmd::Expireat),
    ("pexpireat", Cmd::Pexpireat),
    ("ttl", Cmd::Ttl),
    ("pttl", Cmd::Pttl),
    ("expiretime", Cmd::Expiretime),
    ("pexpiretime", Cmd::Pexpiretime),
    ("persist", Cmd::Persist),
    ("multi", Cmd::Multi),
    ("exec", Cmd::Exec),
    ("discard", Cmd::Discard),
    ("watch", Cmd::Watch),
    ("unwatch", Cmd::Unwatch),
    ("vget", Cmd::Vget),
    ("vset", Cmd::Vset),
    ("vdel", Cmd::Vdel),
    ("dynamo", Cmd::Dynamo),
];

/// A runnable command: its handler id and its metadata.
#[derive(Debug, Clone, Copy)]
pub struct Command {
    /// Which handler runs it.
    pub cmd: Cmd,
    /// Arity, flags, docs.
    pub meta: &'static CommandMeta,
}

static DISPATCH: LazyLock<HashMap<&'static str, Command>> = LazyLock::new(|| {
    IMPLEMENTED
        .iter()
        .filter_map(|&(name, cmd)| {
            let meta = table::lookup(name.as_bytes());
            debug_assert!(meta.is_some(), "command {name} has no metadata");
            Some((name, Command { cmd, meta: meta? }))
        })
        .collect()
});

/// Looks up a command by name, case-insensitively.
pub fn lookup(name: &[u8]) -> Option<Command> {
    if name.len() > 32 {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    DISPATCH.get(std::str::from_utf8(&lower).ok()?).copied()
}

/// Every implemented command, in table order (COMMAND, COMMAND LIST).
pub fn all() -> Vec<Command> {
    table::COMMANDS
        .iter()
        .filter_map(|meta| lookup(meta.name.as_bytes()))
        .collect()
}

/// Whether `argc` arguments (name included) fit `arity`.
pub fn arity_ok(arity: i32, argc: usize) -> bool {
    let argc = argc as i64;
    let arity = i64::from(arity);
    if arity >= 0 {
        argc == arity
    } else {
        argc >= -arity
    }
}

/// What Redis shows as a redacted argument (`shared.redacted`).
const REDACTED: &[u8] = b"(redacted)";

/// `args` with the arguments Redis treats as secrets replaced by
/// `(redacted)`, as Redis's `redactClientCommandArgument` does for its
/// slow log and MONITOR: every AUTH argument, HELLO's AUTH user and
/// password, ACL SETUSER's rules, MIGRATE's AUTH/AUTH2 credentials, and
/// CONFIG SET's value of `requirepass` and `masterauth`. dynokv does not
/// run ACL or MIGRATE, so they reach the unknown-command error, which
/// would otherwise echo a password to the client and into its logs.
pub fn redacted(args: &[Bytes]) -> Vec<Bytes> {
    let mut out = args.to_vec();
    let redact = |out: &mut Vec<Bytes>, i: usize| {
        if let Some(arg) = out.get_mut(i) {
            *arg = Bytes::from_static(REDACTED);
        }
    };
    let is = |i: usize, word: &[u8]| args.get(i).is_some_and(|a| a.eq_ignore_ascii_case(word));
    if is(0, b"auth") {
        (1..args.len()).for_each(|i| redact(&mut out, i));
    } else if is(0, b"hello") {
        for i in 1..args.len() {
            if is(i, b"auth") {
                redact(&mut out, i + 1);
                redact(&mut out, i + 2);
            }
        }
    } else if is(0, b"acl") && is(1, b"setuser") {
        (3..args.len()).for_each(|i| redact(&mut out, i));
    } else if is(0, b"migrate") {
        for i in 6..args.len() {
            if is(i, b"auth") {
                redact(&mut out, i + 1);
            } else if is(i, b"auth2") {
                redact(&mut out, i + 1);
                redact(&mut out, i + 2);
            }
        }
    } else if is(0, b"config") && is(1, b"set") {
        for i in (2..args.len()).step_by(2) {
            if is(i, b"requirepass") || is(i, b"masterauth") {
                redact(&mut out, i + 1);
            }
        }
    }
    out
}

/// Redis's error for an unknown command, args quoted as Redis does, with
/// secrets redacted (see [`redacted`]).
pub fn unknown_command(args: &[Bytes]) -> Reply {
    let args = &redacted(args)[..];
    // Byte for byte as Redis's "'%.128s'" and "'%.*s' " (a NUL ends a piece).
    let mut quoted = Vec::new();
    for arg in args.iter().skip(1) {
        if quoted.len() >= 128 {
            break;
        }
        let room = 128 - quoted.len();
        quoted.push(b'\'');
        quoted.extend_from_slice(handlers::c_str(arg, room));
        quoted.extend_from_slice(b"' ");
    }
    let mut text = b"ERR unknown command '".to_vec();
    text.extend_from_slice(handlers::c_str(&args[0], 128));
    text.extend_from_slice(b"', with args beginning with: ");
    text.extend_from_slice(&quoted);
    handlers::error_from_bytes(text)
}

/// Redis's arity error for the command (or subcommand) `full_name`.
pub fn wrong_arity(full_name: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{full_name}' command"
    ))
}

/// The plain commands a pipeline may run as one batch: `GET key` and
/// `SET key value` (no options). Runs of them with distinct keys go to
/// the coordinator in one call, which is what makes pipelining pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plain {
    Get,
    Set,
}

fn plain(session: &Session, args: &[Bytes]) -> Option<Plain> {
    // A session with WATCHed keys reads through the handlers, which note
    // a read of a watched key (`handlers::read`).
    // A monitor's GET and SET are refused, by `execute`.
    if session.multi.is_some()
        || !session.authenticated
        || !session.watched.is_empty()
        || session.monitor.is_some()
        || args.get(1)?.len() > KEY_BYTES_MAX
    {
        return None;
    }
    match args.len() {
        2 if args[0].eq_ignore_ascii_case(b"get") => Some(Plain::Get),
        3 if args[0].eq_ignore_ascii_case(b"set") => Some(Plain::Set),
        _ => None,
    }
}

/// Executes the next command of a pipeline — or, for a run of plain GETs
/// or plain SETs on distinct keys, the whole run at once — and returns
/// the replies in order.
pub async fn execute_next(
    shared: &Shared,
    session: &mut Session,
    commands: &mut VecDeque<Vec<Bytes>>,
) -> Vec<Reply> {
    let Some(first) = commands.front() else {
        return Vec::new();
    };
    // While loading, each command goes through `execute`, which refuses it.
    let Some(kind) = plain(session, first).filter(|_| !shared.loading()) else {
        let args = commands.pop_front().unwrap_or_default();
        return vec![execute(shared, session, args).await];
    };
    let mut run: Vec<Vec<Bytes>> = Vec::new();
    while let Some(next) = commands.front() {
        // `plain` first: only a plain command is sure to have a key.
        if plain(session, next) != Some(kind) || run.iter().any(|r| r[1] == next[1]) {
            break;
        }
        run.extend(commands.pop_front());
    }
    if run.len() == 1 {
        let args = run.pop().unwrap_or_default();
        return vec![execute(shared, session, args).await];
    }
    let name = if kind == Plain::Get { "get" } else { "set" };
    let Some(command) = lookup(name.as_bytes()) else {
        unreachable!("{name} is in the command table");
    };
    shared.pause.wait(kind == Plain::Set).await;
    let started = Instant::now();
    session.info.update(|s| {
        s.last_active = Instant::now();
        s.last_command = name.to_owned();
    });
    let coordinator = &shared.coordinator;
    let count = run.len();
    // Each command of the batch is its own MONITOR line, shown once the
    // batch ran; the clone (reference counts) only while someone monitors.
    let shown = shared.monitors.active().then(|| run.clone());
    let outcome = match kind {
        Plain::Get => {
            let keys = run.iter().map(|a| session.key(&a[1])).collect();
            coordinator
                .read(keys, ReadOptions::default())
                .await
                .map(|records| {
                    let now = coordinator.now_ms();
                    records
                        .iter()
                        .map(|r| {
                            let value = r.as_ref().and_then(|r| winner_value(r, now)).cloned();
                            let stat = if value.is_some() {
                                &shared.stats.keyspace_hits
                            } else {
                                &shared.stats.keyspace_misses
                            };
                            stat.fetch_add(1, Ordering::Relaxed);
                            value.map_or(Reply::Nil, Reply::Bulk)
                        })
                        .collect()
                })
        }
        Plain::Set => {
            let writes = run
                .into_iter()
                .map(|mut a| {
                    let value = a.swap_remove(2);
                    (session.key(&a[1]), WriteOp::set(value))
                })
                .collect();
            coordinator
                .write(writes, WriteOptions::default())
                .await
                .map(|written| written.iter().map(|_| Reply::OK).collect())
        }
    };
    let (replies, failed) = match outcome {
        Ok(replies) => (replies, 0),
        Err(e) => (vec![handlers::coordinator_error(&e); count], count as u64),
    };
    shared
        .stats
        .record_calls(command.meta, count as u64, started.elapsed(), failed);
    for args in shown.iter().flatten() {
        show_to_monitors(shared, session, command.meta, args);
    }
    replies
}

/// Whether CLIENT PAUSE WRITE holds `meta`: Redis's `is_may_replicate_command`.
fn writes(meta: &CommandMeta) -> bool {
    meta.flags
        .iter()
        .any(|f| matches!(*f, "write" | "may_replicate"))
}

/// Whether `meta` reads or writes keys: what a MONITOR client may not run
/// (Redis's check of a replica: read, write or may-replicate commands).
fn touches_keyspace(meta: &CommandMeta) -> bool {
    writes(meta) || meta.flags.contains(&"readonly")
}

/// Redis 7's reply to a MONITOR client's command that touches keys: to
/// Redis a monitor is a replica, and a replica may not.
const MONITOR_KEYSPACE_ERROR: &str = "ERR Replica can't interact with the keyspace";

/// Shows a command that ran to the MONITOR clients, as Redis's `call()`
/// does once it ran one (queued commands when EXEC runs them): with its
/// secrets redacted, and never an `admin` (CONFIG, CLIENT LIST, MONITOR
/// ...) or `skip_monitor` command. Commands refused before they ran
/// (unknown, arity, NOAUTH, LOADING) and commands queued by MULTI are not
/// shown. Costs one atomic load while nobody monitors.
fn show_to_monitors(shared: &Shared, session: &Session, meta: &CommandMeta, args: &[Bytes]) {
    if !shared.monitors.active()
        || meta
            .flags
            .iter()
            .any(|f| matches!(*f, "admin" | "skip_monitor"))
    {
        return;
    }
    shared
        .monitors
        .feed(usize::from(session.db), session.info.addr, &redacted(args));
}

/// The error a command without the `loading` flag gets while the node
/// waits for its peers: Redis's LOADING, which clients take as "retry
/// soon" (Redis 7: `LOADING Redis is loading the dataset in memory`).
pub const LOADING_ERROR: &str = "LOADING Dynokv is loading the dataset in memory";

/// Executes one client command, with Redis's checks and MULTI queueing.
pub async fn execute(shared: &Shared, session: &mut Session, args: Vec<Bytes>) -> Reply {
    let Some(mut command) = lookup(&args[0]) else {
        session.multi_failed |= session.multi.is_some();
        return unknown_command(&args);
    };
    if !command.meta.subcommands.is_empty() && args.len() >= 2 {
        match command.meta.subcommand(&args[1]) {
            Some(sub) => command.meta = sub,
            // `<CONTAINER> HELP` is a subcommand of arity 2 in Redis
            // (`client|help`): checked, queued in MULTI, answered in `run`.
            None if args[1].eq_ignore_ascii_case(b"help") => {
                if args.len() != 2 {
                    session.multi_failed |= session.multi.is_some();
                    return wrong_arity(&format!("{}|help", command.meta.name));
                }
            }
            None => {
                session.multi_failed |= session.multi.is_some();
                return Reply::error(format!(
                    "ERR unknown subcommand '{}'. Try {} HELP.",
                    String::from_utf8_lossy(&args[1][..args[1].len().min(128)]),
                    command.meta.name.to_ascii_uppercase()
                ));
            }
        }
    }
    if !arity_ok(command.meta.arity, args.len()) {
        shared.stats.record_rejected(command.meta);
        return reject(session, command.cmd, wrong_arity(command.meta.name));
    }
    if !session.authenticated && !command.meta.flags.contains(&"no_auth") {
        shared.stats.record_rejected(command.meta);
        return reject(
            session,
            command.cmd,
            Reply::error("NOAUTH Authentication required."),
        );
    }
    // Redis's loading check (`is_denyloading_command`), in Redis's place:
    // after NOAUTH, before MULTI queueing. Readiness never goes back, so a
    // queued command passed this check and EXEC needs no second look.
    if shared.loading() && !command.meta.flags.contains(&"loading") {
        return reject(session, command.cmd, Reply::error(LOADING_ERROR));
    }
    let exec_queued = |test: fn(&CommandMeta) -> bool| {
        command.cmd == Cmd::Exec
            && session.multi.as_ref().is_some_and(|queue| {
                queue
                    .iter()
                    .any(|q| lookup(&q[0]).is_some_and(|c| test(queued_meta(c, q))))
            })
    };
    if session.monitor.is_some() {
        if touches_keyspace(command.meta) || exec_queued(touches_keyspace) {
            return reject(session, command.cmd, Reply::error(MONITOR_KEYSPACE_ERROR));
        }
    } else {
        // Redis never pauses a monitor (a replica to Redis).
        let exec_writes = exec_queued(writes);
        shared.pause.wait(exec_writes || writes(command.meta)).await;
    }
    if let Some(queue) = &mut session.multi
        && !matches!(
            command.cmd,
            Cmd::Exec | Cmd::Discard | Cmd::Multi | Cmd::Watch | Cmd::Quit | Cmd::Reset
        )
    {
        if queue.len() >= MULTI_QUEUE_LEN_MAX {
            session.multi_failed = true;
            return Reply::error(format!(
                "ERR too many commands queued in MULTI (at most {MULTI_QUEUE_LEN_MAX})"
            ));
        }
        queue.push(args);
        let queued = queue.len() as i64;
        session.info.update(|s| s.multi = queued);
        return Reply::Simple("QUEUED");
    }
    if !matches!(
        command.cmd,
        Cmd::Multi | Cmd::Watch | Cmd::Unwatch | Cmd::Discard | Cmd::Exec
    ) {
        return run(shared, session, command, &args).await;
    }
    // The transaction commands run here, not in `run`: they change the
    // session's MULTI state, which `run` (also used by EXEC) must not.
    let started = Instant::now();
    let reply = transaction(shared, session, command, &args).await;
    shared.stats.record_calls(
        command.meta,
        1,
        started.elapsed(),
        u64::from(reply.is_error()),
    );
    show_to_monitors(shared, session, command.meta, &args);
    reply
}

/// A command's table entry, its subcommand's if it has one.
fn queued_meta(command: Command, args: &[Bytes]) -> &'static CommandMeta {
    match args.get(1) {
        Some(sub) if !command.meta.subcommands.is_empty() => {
            command.meta.subcommand(sub).unwrap_or(command.meta)
        }
        _ => command.meta,
    }
}

/// MULTI, WATCH, UNWATCH, DISCARD and EXEC outside a transaction's queue.
async fn transaction(
    shared: &Shared,
    session: &mut Session,
    command: Command,
    args: &[Bytes],
) -> Reply {
    match command.cmd {
        Cmd::Multi => {
            if session.multi.is_some() {
                return Reply::error("ERR MULTI calls can not be nested");
            }
            session.multi = Some(Vec::new());
            session.multi_failed = false;
            session.info.update(|s| s.multi = 0);
            Reply::OK
        }
        Cmd::Watch if session.multi.is_some() => {
            Reply::error("ERR WATCH inside MULTI is not allowed")
        }
        Cmd::Watch => {
            match snapshot(shared, args[1..].iter().map(|k| session.key(k)).collect()).await {
                Ok(watched) => {
                    session.watched.extend(watched);
                    Reply::OK
                }
                Err(reply) => reply,
            }
        }
        Cmd::Unwatch => {
            session.unwatch();
            Reply::OK
        }
        Cmd::Discard => match end_multi(session) {
            Some(_) => {
                session.unwatch();
                Reply::OK
            }
            None => Reply::error("ERR DISCARD without MULTI"),
        },
        Cmd::Exec => {
            let failed = session.multi_failed;
            let Some(queue) = end_multi(session) else {
                return Reply::error("ERR EXEC without MULTI");
            };
            // Redis unwatches at every EXEC of a transaction, whatever its outcome.
            let (watched, read_other) = session.unwatch();
            if failed {
                return Reply::error("EXECABORT Transaction discarded because of previous errors.");
            }
            // A change seen now aborts at once; one that comes after this
            // check is caught by the transaction's own conditional writes.
            if read_other {
                return Reply::NilArray;
            }
            match watch_broken(shared, &watched).await {
                Ok(false) => {}
                Ok(true) => return Reply::NilArray,
                Err(reply) => return reply,
            }
            *session.exec_watch() = ExecWatch {
                pending: watched,
                broken: false,
            };
            let mut replies = Vec::with_capacity(queue.len());
            session.in_exec = true;
            for queued in queue {
                // Queued commands passed lookup and arity when queued.
                if let Some(mut queued_command) = lookup(&queued[0]) {
                    queued_command.meta = queued_meta(queued_command, &queued);
                    replies.push(run(shared, session, queued_command, &queued).await);
                }
                if session.exec_watch().broken {
                    break;
                }
            }
            session.in_exec = false;
            let exec = std::mem::take(&mut *session.exec_watch());
            if exec.broken {
                return Reply::NilArray;
            }
            Reply::Array(replies)
        }
        _ => Reply::error("ERR not a transaction command"),
    }
}

/// `<CONTAINER> HELP`: the subcommands and their summaries.
fn help(container: &CommandMeta) -> Reply {
    let upper = container.name.to_ascii_uppercase();
    let mut lines = vec![format!(
        "{upper} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    )];
    for sub in container.subcommands {
        let name = sub.name.rsplit('|').next().unwrap_or(sub.name);
        lines.push(name.to_ascii_uppercase());
        lines.push(format!("    {}", sub.doc.summary));
    }
    lines.push("HELP".to_owned());
    lines.push("    Prints this help.".to_owned());
    Reply::Array(lines.into_iter().map(Reply::Status).collect())
}

/// Redis's `rejectCommand`: a rejected command fails an open transaction;
/// a rejected EXEC discards it and says why as EXECABORT.
fn reject(session: &mut Session, cmd: Cmd, error: Reply) -> Reply {
    if cmd != Cmd::Exec {
        session.multi_failed |= session.multi.is_some();
        return error;
    }
    end_multi(session);
    session.unwatch(); // Redis's execCommandAbort discards and unwatches
    match error {
        Reply::Error(text) => Reply::error(format!(
            "EXECABORT Transaction discarded because of: {}",
            text.strip_prefix("ERR ").unwrap_or(&text)
        )),
        other => other,
    }
}

/// What WATCH remembers of `keys` (namespaced: `Session::key`): each
/// key's context and liveness now.
async fn snapshot(shared: &Shared, keys: Vec<Bytes>) -> Result<Vec<Watched>, Reply> {
    let coordinator = &shared.coordinator;
    let records = coordinator
        .read(keys.clone(), ReadOptions::default())
        .await
        .map_err(|e| handlers::coordinator_error(&e))?;
    let now = coordinator.now_ms();
    Ok(keys
        .iter()
        .zip(records)
        .map(|(key, record)| Watched {
            key: key.clone(),
            live: record.as_ref().is_some_and(|r| is_live(r, now)),
            context: record.map(|r| r.context().clone()).unwrap_or_default(),
        })
        .collect())
}

/// Whether a WATCHed key changed since WATCH, as Redis judges it: any
/// write to it (even of the same value), or its value expiring. A key that
/// held no value then and has no record now (FLUSHALL) did not change.
async fn watch_broken(shared: &Shared, watched: &[Watched]) -> Result<bool, Reply> {
    if watched.is_empty() {
        return Ok(false);
    }
    let keys: Vec<Bytes> = watched.iter().map(|w| w.key.clone()).collect();
    let now = snapshot(shared, keys).await?;
    Ok(watched.iter().zip(&now).any(|(then, now)| {
        let flushed = !then.live && !now.live && now.context == Default::default();
        !flushed && (then.live != now.live || then.context != now.context)
    }))
}

fn end_multi(session: &mut Session) -> Option<Vec<Vec<Bytes>>> {
    session.multi_failed = false;
    session.info.update(|s| s.multi = -1);
    session.multi.take()
}

async fn run(shared: &Shared, session: &mut Session, command: Command, args: &[Bytes]) -> Reply {
    let started = Instant::now();
    let reply = run_handler(shared, session, command, args).await;
    shared.stats.record_calls(
        command.meta,
        1,
        started.elapsed(),
        u64::from(reply.is_error()),
    );
    show_to_monitors(shared, session, command.meta, args);
    reply
}

async fn run_handler(
    shared: &Shared,
    session: &mut Session,
    command: Command,
    args: &[Bytes],
) -> Reply {
    session.info.update(|s| {
        s.last_active = Instant::now();
        s.last_command = command.meta.name.to_owned();
    });
    if !command.meta.subcommands.is_empty()
        && args.len() == 2
        && args[1].eq_ignore_ascii_case(b"help")
    {
        return help(command.meta);
    }
    let mut ctx = handlers::Ctx { shared, session };
    handlers::dispatch(&mut ctx, command, args).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_implemented_command_has_metadata() {
        for &(name, _) in IMPLEMENTED {
            assert!(lookup(name.as_bytes()).is_some(), "{name}");
            assert!(
                lookup(name.to_ascii_uppercase().as_bytes()).is_some(),
                "{name}"
            );
        }
        assert_eq!(all().len(), IMPLEMENTED.len());
    }

    #[test]
    fn unknown_command_text_matches_redis() {
        let args: Vec<Bytes> = ["foo", "a", "b"].iter().map(|s| Bytes::from(*s)).collect();
        assert_eq!(
            unknown_command(&args),
            Reply::error("ERR unknown command 'foo', with args beginning with: 'a' 'b' ")
        );
    }

    /// Proves the secrets Redis redacts never reach an error text, and the
    /// rest of the arguments stay as they were.
    #[test]
    fn secrets_are_redacted() {
        let args = |words: &[&str]| -> Vec<Bytes> {
            words
                .iter()
                .map(|s| Bytes::copy_from_slice(s.as_bytes()))
                .collect()
        };
        let text = |words: &[&str]| match unknown_command(&args(words)) {
            Reply::Error(text) => text,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            text(&["ACL", "SETUSER", "bob", "on", ">pass"]),
            "ERR unknown command 'ACL', with args beginning with: 'SETUSER' 'bob' '(redacted)' '(redacted)' "
        );
        assert_eq!(
            text(&[
                "MIGRATE", "h", "1", "k", "0", "5", "AUTH", "pw", "AUTH2", "u", "p2"
            ]),
            "ERR unknown command 'MIGRATE', with args beginning with: 'h' '1' 'k' '0' '5' 'AUTH' '(redacted)' 'AUTH2' '(redacted)' '(redacted)' "
        );
        assert_eq!(
            redacted(&args(&[
                "config",
                "set",
                "timeout",
                "5",
                "REQUIREPASS",
                "pw"
            ])),
            args(&["config", "set", "timeout", "5", "REQUIREPASS", "(redacted)"])
        );
        assert_eq!(
            redacted(&args(&["HELLO", "3", "AUTH", "u", "pw", "SETNAME", "n"])),
            args(&[
                "HELLO",
                "3",
                "AUTH",
                "(redacted)",
                "(redacted)",
                "SETNAME",
                "n"
            ])
        );
        assert_eq!(
            redacted(&args(&["AUTH", "pw"])),
            args(&["AUTH", "(redacted)"])
        );
        assert_eq!(redacted(&args(&["GET", "pw"])), args(&["GET", "pw"]));
    }
}
