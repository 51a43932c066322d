//! Which commands this node runs, and the path every command takes:
//! lookup in the one command table, NOAUTH, arity, MULTI queueing, then
//! the handler. Arity and flags come from [`super::table`], so what
//! COMMAND reports is what dispatch enforces.

use super::handlers;
use super::handlers::plan::Batch;
use super::registry::{Cmd, Command, arity_ok, lookup, redacted, unknown_command, wrong_arity};
use super::reply::Reply;
use super::session::{ExecWatch, Session, Watched};
use super::shared::Shared;
use super::table::CommandMeta;
use crate::coordinator::ReadOptions;
use crate::limits::MULTI_QUEUE_LEN_MAX;
use crate::model::record::is_live;
use bytes::Bytes;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Executes the next command of a pipeline and returns its reply — or,
/// when it is a plan (`handlers::plan`: GET, SET, MGET, MSET), it and
/// the plans after it that would run at once and merge with it (all
/// reads or all writes, no key twice: `plan::Batch::add`), as one
/// coordinator call, and returns their replies in order. Each command of
/// a batch passes `check` and `hold` as it would alone, and its reply
/// is made by its handler's own code from its share of the outcomes.
pub async fn execute_next(
    shared: &Shared,
    session: &mut Session,
    commands: &mut VecDeque<Vec<Bytes>>,
) -> Vec<Reply> {
    let Some(args) = commands.pop_front() else {
        return Vec::new();
    };
    let command = match check(shared, session, &args) {
        Ok(command) => command,
        Err(refusal) => return vec![refuse(shared, session, refusal)],
    };
    hold(shared, session, command).await;
    let started = Instant::now();
    let ctx = handlers::Ctx { shared, session };
    let planned = match ctx.session.multi {
        None => handlers::plan(&ctx, command, &args),
        // In MULTI the command is queued, not run.
        Some(_) => None,
    };
    // A command refused by its own handler (`Some(Err)`) runs alone, and
    // its handler refuses it again.
    let Some(Ok(plan)) = planned else {
        return vec![execute_held(shared, ctx.session, command, args).await];
    };
    let mut batch = Batch::new(plan);
    let mut run = vec![(command, args)];
    while let Some(next) = commands.front() {
        // Only a command that would run now joins: not one refused, nor
        // one a pause holds, which waits on its own once the replies
        // before it are sent (`conn`).
        // A pipeline repeats its command: a name is looked up once per
        // run (a command without subcommands is its lookup's).
        let found = match run.last() {
            Some((last, last_args))
                if last_args[0] == next[0] && last.meta.subcommands.is_empty() =>
            {
                Some(*last)
            }
            _ => lookup(&next[0]),
        };
        let Ok(next_command) = check_found(shared, ctx.session, found, next) else {
            break;
        };
        if shared.pause.active() && shared.pause.holds(writes(next_command.meta)) {
            break;
        }
        let Some(Ok(plan)) = handlers::plan(&ctx, next_command, next) else {
            break;
        };
        if !batch.add(plan) {
            break;
        }
        run.extend(commands.pop_front().map(|args| (next_command, args)));
    }
    // CLIENT LIST's `cmd=` is the last command a batch ran.
    if let Some((last, _)) = run.last() {
        runs(ctx.session, last.meta);
    }
    let replies = batch.run(&ctx).await;
    let done: Vec<Ran<'_>> = run
        .iter()
        .zip(&replies)
        .map(|((command, args), reply)| Ran {
            meta: command.meta,
            args,
            failed: reply.is_error(),
        })
        .collect();
    ran(shared, ctx.session, &done, started.elapsed());
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

/// Notes in CLIENT LIST that the session runs `meta` now.
fn runs(session: &Session, meta: &CommandMeta) {
    session.info.update(|s| {
        s.last_active = Instant::now();
        s.last_command = meta.name.to_owned();
    });
}

/// A command that ran, for [`ran`].
struct Ran<'a> {
    meta: &'static CommandMeta,
    args: &'a [Bytes],
    failed: bool,
}

/// What commands that ran leave behind, as Redis's `call()` leaves it:
/// INFO commandstats, then each one's MONITOR line, in order. The
/// commands of one batch share its time evenly (each waited on the one
/// coordinator call that served them all).
fn ran(shared: &Shared, session: &Session, commands: &[Ran<'_>], elapsed: Duration) {
    let count = commands.len().max(1) as u32;
    let mut rest = commands;
    while let Some(first) = rest.first() {
        let same = rest
            .iter()
            .take_while(|r| std::ptr::eq(r.meta, first.meta))
            .count();
        let failed = rest[..same].iter().filter(|r| r.failed).count();
        let share = elapsed * same as u32 / count;
        shared
            .stats
            .record_calls(first.meta, same as u64, share, failed as u64);
        rest = &rest[same..];
    }
    for command in commands {
        show_to_monitors(shared, session, command.meta, command.args);
    }
}

/// The error a command without the `loading` flag gets while the node
/// waits for its peers: Redis's LOADING, which clients take as "retry
/// soon" (Redis 7: `LOADING Redis is loading the dataset in memory`).
pub const LOADING_ERROR: &str = "LOADING Dynokv is loading the dataset in memory";

/// Why [`check`] refuses a command.
enum Refusal {
    /// An unknown command or subcommand, or `<CONTAINER> HELP` with
    /// arguments: it fails an open transaction.
    Unknown(Reply),
    /// Refused as Redis's `rejectCommand` ([`reject`]); `counted` in
    /// INFO's `rejected_calls` (arity, NOAUTH).
    Rejected {
        command: Command,
        error: Reply,
        counted: bool,
    },
}

/// Redis's checks before a command runs or is queued, in Redis's order:
/// lookup, arity, NOAUTH, LOADING, a monitor's keyspace. Changes
/// nothing: the answer depends on the session's state and on readiness,
/// which never goes back, so a pipelined command checked before the
/// commands ahead of it ran gets the answer it would get after them when
/// they change no session state (plans do not).
fn check(shared: &Shared, session: &Session, args: &[Bytes]) -> Result<Command, Refusal> {
    check_found(shared, session, lookup(&args[0]), args)
}

/// [`check`] of a command already looked up (`found`: `lookup(&args[0])`).
fn check_found(
    shared: &Shared,
    session: &Session,
    found: Option<Command>,
    args: &[Bytes],
) -> Result<Command, Refusal> {
    let Some(mut command) = found else {
        return Err(Refusal::Unknown(unknown_command(args)));
    };
    if !command.meta.subcommands.is_empty() && args.len() >= 2 {
        match command.meta.subcommand(&args[1]) {
            Some(sub) => command.meta = sub,
            // `<CONTAINER> HELP` is a subcommand of arity 2 in Redis
            // (`client|help`): checked, queued in MULTI, answered in `run`.
            None if args[1].eq_ignore_ascii_case(b"help") => {
                if args.len() != 2 {
                    return Err(Refusal::Unknown(wrong_arity(&format!(
                        "{}|help",
                        command.meta.name
                    ))));
                }
            }
            None => {
                return Err(Refusal::Unknown(Reply::error(format!(
                    "ERR unknown subcommand '{}'. Try {} HELP.",
                    String::from_utf8_lossy(&args[1][..args[1].len().min(128)]),
                    command.meta.name.to_ascii_uppercase()
                ))));
            }
        }
    }
    let rejected = |error: Reply, counted: bool| {
        Err(Refusal::Rejected {
            command,
            error,
            counted,
        })
    };
    if !arity_ok(command.meta.arity, args.len()) {
        return rejected(wrong_arity(command.meta.name), true);
    }
    if !session.authenticated && !command.meta.flags.contains(&"no_auth") {
        return rejected(Reply::error("NOAUTH Authentication required."), true);
    }
    // Redis's loading check (`is_denyloading_command`), in Redis's place:
    // after NOAUTH, before MULTI queueing. Readiness never goes back, so a
    // queued command passed this check and EXEC needs no second look.
    if shared.loading() && !command.meta.flags.contains(&"loading") {
        return rejected(Reply::error(LOADING_ERROR), false);
    }
    if session.monitor.is_some()
        && (touches_keyspace(command.meta) || exec_queued(session, command, touches_keyspace))
    {
        return rejected(Reply::error(MONITOR_KEYSPACE_ERROR), false);
    }
    Ok(command)
}

/// What a refused command changes, and its reply.
fn refuse(shared: &Shared, session: &mut Session, refusal: Refusal) -> Reply {
    match refusal {
        Refusal::Unknown(reply) => {
            session.multi_failed |= session.multi.is_some();
            reply
        }
        Refusal::Rejected {
            command,
            error,
            counted,
        } => {
            if counted {
                shared.stats.record_rejected(command.meta);
            }
            reject(session, command.cmd, error)
        }
    }
}

/// Whether `command` is EXEC of a transaction holding a command `test`
/// picks.
fn exec_queued(session: &Session, command: Command, test: fn(&CommandMeta) -> bool) -> bool {
    command.cmd == Cmd::Exec
        && session.multi.as_ref().is_some_and(|queue| {
            queue
                .iter()
                .any(|q| lookup(&q[0]).is_some_and(|c| test(queued_meta(c, q))))
        })
}

/// Waits while CLIENT PAUSE holds `command`. Redis never pauses a monitor
/// (a replica to Redis).
async fn hold(shared: &Shared, session: &Session, command: Command) {
    if session.monitor.is_none() {
        let exec_writes = exec_queued(session, command, writes);
        shared.pause.wait(exec_writes || writes(command.meta)).await;
    }
}

/// A command that passed [`check`] and [`hold`]: queued in MULTI, run
/// here if it is a transaction command, else by its handler.
async fn execute_held(
    shared: &Shared,
    session: &mut Session,
    command: Command,
    args: Vec<Bytes>,
) -> Reply {
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
    let done = Ran {
        meta: command.meta,
        args: &args,
        failed: reply.is_error(),
    };
    ran(shared, session, &[done], started.elapsed());
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
    let done = Ran {
        meta: command.meta,
        args,
        failed: reply.is_error(),
    };
    ran(shared, session, &[done], started.elapsed());
    reply
}

async fn run_handler(
    shared: &Shared,
    session: &mut Session,
    command: Command,
    args: &[Bytes],
) -> Reply {
    runs(session, command.meta);
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

    /// A one-node cluster's coordinator over the memory store that counts
    /// the read and write calls it is given.
    struct Counting {
        inner: crate::coordinator::ClusterCoordinator,
        reads: std::sync::atomic::AtomicUsize,
        writes: std::sync::atomic::AtomicUsize,
    }

    mod counting {
        use super::Counting;
        use crate::coordinator::{
            BoxFuture, Coordinator, CoordinatorError, CoordinatorInfo, KeyCounts, KeyWritten,
            MemberStatus, ReadOptions, WriteOptions,
        };
        use crate::model::ops::WriteOp;
        use crate::model::record::Record;
        use bytes::Bytes;
        use std::sync::atomic::Ordering;

        impl Coordinator for Counting {
            fn read(
                &self,
                keys: Vec<Bytes>,
                options: ReadOptions,
            ) -> BoxFuture<'_, Result<Vec<Option<Record>>, CoordinatorError>> {
                self.reads.fetch_add(1, Ordering::SeqCst);
                self.inner.read(keys, options)
            }
            fn write_each(
                &self,
                writes: Vec<(Bytes, WriteOp)>,
                options: WriteOptions,
            ) -> BoxFuture<'_, Result<Vec<KeyWritten>, CoordinatorError>> {
                self.writes.fetch_add(1, Ordering::SeqCst);
                self.inner.write_each(writes, options)
            }
            fn partitions(&self) -> u32 {
                self.inner.partitions()
            }
            fn scan_partition(
                &self,
                partition: u16,
                after: Option<Bytes>,
                limit: usize,
            ) -> BoxFuture<'_, Result<Vec<(Bytes, Record)>, CoordinatorError>> {
                self.inner.scan_partition(partition, after, limit)
            }
            fn set_siblings_max(&self, max: usize) {
                self.inner.set_siblings_max(max);
            }
            fn set_read_repair(&self, on: bool) {
                self.inner.set_read_repair(on);
            }
            fn key_counts(&self) -> BoxFuture<'_, Result<KeyCounts, CoordinatorError>> {
                self.inner.key_counts()
            }
            fn flush(&self, db: Option<u8>) -> BoxFuture<'_, Result<(), CoordinatorError>> {
                self.inner.flush(db)
            }
            fn now_ms(&self) -> u64 {
                self.inner.now_ms()
            }
            fn info(&self) -> CoordinatorInfo {
                self.inner.info()
            }
            fn members(&self) -> Vec<MemberStatus> {
                self.inner.members()
            }
            fn ring(&self) -> Vec<Vec<String>> {
                self.inner.ring()
            }
            fn change_layout(
                &self,
                command: crate::coordinator::LayoutCommand,
            ) -> BoxFuture<'_, Result<(), CoordinatorError>> {
                self.inner.change_layout(command)
            }
            fn close(&self) -> BoxFuture<'_, Result<(), CoordinatorError>> {
                self.inner.close()
            }
            fn store_health(&self) -> crate::storage::HealthReport {
                self.inner.store_health()
            }
        }
    }

    /// A node's client face over a [`Counting`] coordinator whose record
    /// cache holds `cache_bytes`, and a session.
    async fn counted_node(
        cache_bytes: usize,
    ) -> (
        std::sync::Arc<Shared>,
        std::sync::Arc<Counting>,
        Session,
        crate::resp::Server,
    ) {
        use crate::net::Network;
        use std::sync::Arc;
        let service = crate::replica::ReplicaService::in_memory(cache_bytes);
        let (_, shutdown) = tokio::sync::watch::channel(false);
        let inner = crate::coordinator::ClusterCoordinator::alone(service, shutdown.clone());
        let counting = Arc::new(Counting {
            inner,
            reads: Default::default(),
            writes: Default::default(),
        });
        let listener = crate::net::Tcp.bind("127.0.0.1", 0).await.expect("bind");
        let (_, ready) = tokio::sync::watch::channel(true);
        let server = crate::resp::Server::new(
            listener,
            crate::config::Config::default(),
            Arc::clone(&counting) as Arc<dyn crate::coordinator::Coordinator>,
            crate::task::WorkerBoard::default(),
            shutdown,
            ready,
        )
        .expect("server");
        let shared = Arc::clone(server.shared());
        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().expect("address");
        let info = Arc::new(super::super::session::ClientInfo::new(1, addr, addr));
        (shared, counting, Session::new(info, false), server)
    }

    /// This thread's CPU time in ns: what the command path costs, not
    /// what other processes on the machine took from it.
    #[expect(unsafe_code, reason = "clock_gettime fills the timespec it is given")]
    fn thread_cpu_ns() -> u64 {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid timespec for the call to write.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
    }

    /// Measures (does not prove) the client command path's CPU per
    /// pipelined GET and SET, in process: 10,000 keys over the memory
    /// store with the record cache (GETs are answered on this thread),
    /// 160,000 commands in pipelines of 16 and of 1. docs/benchmarks.md,
    /// "One command path":
    /// `cargo test --release --lib path_cost -- --ignored --nocapture`.
    #[tokio::test(flavor = "current_thread")]
    #[ignore = "a measurement, run on demand"]
    async fn path_cost() {
        // Every key stays cached: GETs run on this thread, as over a warm node.
        let (shared, _, mut session, _server) = counted_node(64 << 20).await;
        let value = Bytes::from(vec![b'x'; 100]);
        let mut seed = 7_u64;
        let mut key = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            Bytes::from(format!("key:{:012}", seed % 10_000))
        };
        for pipeline in [16, 1] {
            // The first SET grows the store and the cache: a warm-up.
            for name in ["SET", "SET", "GET", "GET"] {
                let count = 160_000;
                let batches: Vec<VecDeque<Vec<Bytes>>> = (0..count / pipeline)
                    .map(|_| {
                        (0..pipeline)
                            .map(|_| {
                                let mut args = vec![Bytes::from_static(name.as_bytes()), key()];
                                args.extend((name == "SET").then(|| value.clone()));
                                args
                            })
                            .collect()
                    })
                    .collect();
                let (wall, cpu) = (Instant::now(), thread_cpu_ns());
                for mut pending in batches {
                    while !pending.is_empty() {
                        std::hint::black_box(
                            execute_next(&shared, &mut session, &mut pending).await,
                        );
                    }
                }
                let cpu = (thread_cpu_ns() - cpu) as f64 / count as f64;
                let wall = wall.elapsed().as_nanos() as f64 / count as f64;
                println!("{name} P{pipeline}: {cpu:.0} ns CPU, {wall:.0} ns wall per command");
            }
        }
    }

    fn commands(list: &[&[&str]]) -> Vec<Vec<Bytes>> {
        list.iter()
            .map(|args| {
                args.iter()
                    .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                    .collect()
            })
            .collect()
    }

    /// Proves a pipeline's runs of GET, SET, MGET and MSET reach the
    /// coordinator as one call per run (all reads or all writes, no key
    /// twice), and that their replies are those of the same commands run
    /// one at a time; by counting the calls of a wrapped coordinator.
    #[tokio::test]
    async fn runs_of_plans_are_one_coordinator_call() {
        use std::sync::atomic::Ordering;
        let list = commands(&[
            &["SET", "a", "1"],
            &["set", "b", "2"],
            &["SET", "c", "3", "EX", "100"],
            &["MSET", "d", "4", "e", "5", "d", "6"], // 1 write: SET a b c, MSET d e
            &["SET", "a", "again"],                  // 2: a repeats
            &["SET", "f", "7", "NX"],
            &["SET", "f", "8", "NX"], // 3: f repeats; nil
            &["GET", "a"],
            &["GET", "nokey"],
            &["MGET", "b", "c", "d", "d"], // 1 read
            &["GET", "b"],                 // 2: b repeats
            &["GET", "too", "many"],       // refused: ends the run
            &["SET", "g", "1", "EX", "0"], // refused by SET: ends the run
            &["INCR", "n"],                // 4 writes: not a plan
            &["SET", "h", "9", "GET"],
            &["SET", "a", "x", "GET"], // 5
            &["GET", "h"],             // 3
        ]);
        let replies = |list: &[Vec<Bytes>], pipelined: bool| {
            let list = list.to_vec();
            async move {
                let (shared, counting, mut session, _server) = counted_node(1 << 20).await;
                let mut replies = Vec::new();
                if pipelined {
                    let mut pending: VecDeque<Vec<Bytes>> = list.into_iter().collect();
                    while !pending.is_empty() {
                        replies.extend(execute_next(&shared, &mut session, &mut pending).await);
                    }
                } else {
                    for args in list {
                        let mut one = VecDeque::from([args]);
                        replies.extend(execute_next(&shared, &mut session, &mut one).await);
                    }
                }
                let calls = (
                    counting.reads.load(Ordering::SeqCst),
                    counting.writes.load(Ordering::SeqCst),
                );
                (replies, calls)
            }
        };
        let (pipelined, calls) = replies(&list, true).await;
        let (alone, calls_alone) = replies(&list, false).await;
        assert_eq!(pipelined, alone);
        assert_eq!(calls, (3, 5));
        assert_eq!(calls_alone, (5, 10));
        let bulk = |s: &str| Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()));
        assert_eq!(
            pipelined,
            vec![
                Reply::OK,
                Reply::OK,
                Reply::OK,
                Reply::OK,
                Reply::OK,
                Reply::OK,
                Reply::Nil,
                bulk("again"),
                Reply::Nil,
                Reply::Array(vec![bulk("2"), bulk("3"), bulk("6"), bulk("6")]),
                bulk("2"),
                wrong_arity("get"),
                Reply::error("ERR invalid expire time in 'set' command"),
                Reply::Integer(1),
                Reply::Nil,
                bulk("again"),
                bulk("9"),
            ]
        );
    }
}
