//! Command handlers, grouped as Redis groups them. Each takes the
//! connection's context and the full argument list (name first) and
//! returns a [`Reply`]; arity was checked before. Commands that are one
//! coordinator call (GET, SET, MGET, MSET) are [`plan::Plan`]s instead:
//! [`plan`] builds them, and [`plan::Batch`] runs them, alone or merged
//! with the pipelined plans next to them.

mod connection;
mod dynamo;
pub mod generic;
pub mod plan;
mod server;
mod strings;

use super::frame::parse_i64;
use super::registry::{Cmd, Command};
use super::reply::Reply;
pub use super::reply::{c_str, error_from_bytes};
use super::session::Session;
use super::shared::Shared;
use crate::coordinator::{CoordinatorError, KeyWritten, ReadOptions, WriteOptions};
use crate::limits::KEY_BYTES_MAX;
use crate::model::ops::{Condition, OpError, WriteOp};
use crate::model::record::{Record, is_live};
use crate::replica::Written;
use crate::storage::StoreError;
use bytes::Bytes;
use generic::{TimeUnit, TtlKind};

/// What a handler works with.
pub struct Ctx<'a> {
    /// Node-wide state.
    pub shared: &'a Shared,
    /// This connection.
    pub session: &'a mut Session,
}

/// Runs `command`'s handler.
pub async fn dispatch(ctx: &mut Ctx<'_>, command: Command, args: &[Bytes]) -> Reply {
    match command.cmd {
        Cmd::Ping => connection::ping(args),
        Cmd::Echo => Reply::Bulk(args[1].clone()),
        Cmd::Hello => connection::hello(ctx, args),
        Cmd::Auth => connection::auth(ctx, args),
        Cmd::Select => connection::select(ctx, args),
        Cmd::Quit => {
            ctx.session.closing = true;
            Reply::OK
        }
        Cmd::Reset => connection::reset(ctx),
        Cmd::Client => connection::client(ctx, args),
        Cmd::Command => server::command(args),
        Cmd::Config => server::config(ctx, args),
        Cmd::Info => server::info(ctx, args).await,
        Cmd::Dbsize => match ctx.shared.coordinator.key_counts().await {
            Ok(counts) => Reply::Integer(counts.dbs[usize::from(ctx.session.db)].keys as i64),
            Err(e) => coordinator_error(&e),
        },
        Cmd::Time => server::time(),
        Cmd::Monitor => server::monitor(ctx),
        Cmd::Get | Cmd::Set | Cmd::Mget | Cmd::Mset => match plan(ctx, command, args) {
            Some(planned) => run_plan(ctx, planned).await,
            None => Reply::error("ERR not a planned command"),
        },
        Cmd::Del | Cmd::Unlink => strings::del(ctx, args).await,
        Cmd::Exists => strings::exists(ctx, args).await,
        Cmd::Type => strings::key_type(ctx, args).await,
        Cmd::Setnx => strings::setnx(ctx, args).await,
        Cmd::Msetnx => strings::msetnx(ctx, args).await,
        Cmd::Getset => strings::getset(ctx, args).await,
        Cmd::Getdel => strings::getdel(ctx, args).await,
        Cmd::Getex => strings::getex(ctx, args).await,
        Cmd::Setex => strings::setex(ctx, args, TimeUnit::Seconds, "setex").await,
        Cmd::Psetex => strings::setex(ctx, args, TimeUnit::Millis, "psetex").await,
        Cmd::Append => strings::append(ctx, args).await,
        Cmd::Strlen => strings::strlen(ctx, args).await,
        Cmd::Setrange => strings::setrange(ctx, args).await,
        Cmd::Getrange => strings::getrange(ctx, args).await,
        Cmd::Incr => strings::incr_by(ctx, &args[1], 1).await,
        Cmd::Decr => strings::incr_by(ctx, &args[1], -1).await,
        Cmd::Incrby | Cmd::Decrby => match strings::amount(&args[2], command.cmd == Cmd::Decrby) {
            Ok(by) => strings::incr_by(ctx, &args[1], by).await,
            Err(reply) => reply,
        },
        Cmd::Keys => generic::keys(ctx, args).await,
        Cmd::Scan => generic::scan(ctx, args).await,
        Cmd::Randomkey => generic::randomkey(ctx).await,
        Cmd::Rename => generic::rename(ctx, args, false).await,
        Cmd::Renamenx => generic::rename(ctx, args, true).await,
        Cmd::Copy => generic::copy(ctx, args).await,
        Cmd::Move => generic::move_key(ctx, args).await,
        Cmd::Touch => generic::touch(ctx, args).await,
        Cmd::Flushall => generic::flush(ctx, args).await,
        Cmd::Expire => generic::expire(ctx, args, TimeUnit::Seconds, "expire").await,
        Cmd::Pexpire => generic::expire(ctx, args, TimeUnit::Millis, "pexpire").await,
        Cmd::Expireat => generic::expire(ctx, args, TimeUnit::UnixSeconds, "expireat").await,
        Cmd::Pexpireat => generic::expire(ctx, args, TimeUnit::UnixMillis, "pexpireat").await,
        Cmd::Ttl => generic::ttl(ctx, args, TtlKind::Seconds).await,
        Cmd::Pttl => generic::ttl(ctx, args, TtlKind::Millis).await,
        Cmd::Expiretime => generic::ttl(ctx, args, TtlKind::AtSeconds).await,
        Cmd::Pexpiretime => generic::ttl(ctx, args, TtlKind::AtMillis).await,
        Cmd::Persist => generic::persist(ctx, args).await,
        Cmd::Vget => dynamo::vget(ctx, args).await,
        Cmd::Vset => dynamo::vset(ctx, args).await,
        Cmd::Vdel => dynamo::vdel(ctx, args).await,
        Cmd::Dynamo => dynamo::dynamo(ctx, args).await,
        // UNWATCH queued in MULTI runs here, at EXEC (which already unwatched).
        Cmd::Unwatch => {
            ctx.session.unwatch();
            Reply::OK
        }
        // Handled in `command::execute_held` before dispatch.
        Cmd::Multi | Cmd::Exec | Cmd::Discard | Cmd::Watch => {
            Reply::error("ERR transaction command reached dispatch")
        }
    }
}

/// The command as a [`plan::Plan`], if it is one (GET, SET, MGET, MSET):
/// the one place that says which commands are. `Some(Err)` is the reply
/// of a command refused before it reaches the coordinator (a syntax
/// error, a key too large).
pub fn plan(ctx: &Ctx<'_>, command: Command, args: &[Bytes]) -> Option<Result<plan::Plan, Reply>> {
    match command.cmd {
        Cmd::Get => Some(strings::get(ctx, args)),
        Cmd::Set => Some(strings::set(ctx, args)),
        Cmd::Mget => Some(strings::mget(ctx, args)),
        Cmd::Mset => Some(strings::mset(ctx, args)),
        _ => None,
    }
}

/// Runs a planned command on its own: a batch of one.
async fn run_plan(ctx: &Ctx<'_>, planned: Result<plan::Plan, Reply>) -> Reply {
    match planned {
        Ok(plan) => plan::Batch::new(plan)
            .run(ctx)
            .await
            .pop()
            .unwrap_or_else(plan::no_outcome),
        Err(reply) => reply,
    }
}

/// `-ERR syntax error`.
pub fn syntax_error() -> Reply {
    Reply::error("ERR syntax error")
}

/// Redis's reply for a bad integer argument.
pub fn not_an_integer() -> Reply {
    Reply::error("ERR value is not an integer or out of range")
}

/// Parses an integer argument as Redis does.
pub fn int_arg(arg: &[u8]) -> Result<i64, Reply> {
    parse_i64(arg).ok_or_else(not_an_integer)
}

/// Rejects keys past [`KEY_BYTES_MAX`].
pub fn check_keys<'a>(keys: impl IntoIterator<Item = &'a Bytes>) -> Result<(), Reply> {
    match keys.into_iter().find(|k| k.len() > KEY_BYTES_MAX) {
        Some(_) => Err(Reply::error(format!(
            "ERR key is too large (at most {KEY_BYTES_MAX} bytes)"
        ))),
        None => Ok(()),
    }
}

/// Every client read of keys goes through here, with client keys of the
/// session's database: see [`read_namespaced`].
///
/// # Errors
/// The coordinator's.
pub async fn read(
    ctx: &Ctx<'_>,
    keys: Vec<Bytes>,
    options: ReadOptions,
) -> Result<Vec<Option<Record>>, CoordinatorError> {
    let keys = keys.iter().map(|k| ctx.session.key(k)).collect();
    read_namespaced(ctx, keys, options).await
}

/// Reads of namespaced keys (`crate::db`: MOVE reads another
/// database's; plans hold their keys so). With keys WATCHed, a read
/// that returns one of them in another state than WATCH saw marks the
/// session, and its EXEC aborts. Without that, a GET served by replicas
/// that had not yet seen a write WATCH had seen returned an older value,
/// the transaction wrote that value plus one, and its conditional write
/// still matched (the key was unchanged since WATCH): a lost update.
///
/// # Errors
/// The coordinator's.
pub async fn read_namespaced(
    ctx: &Ctx<'_>,
    keys: Vec<Bytes>,
    options: ReadOptions,
) -> Result<Vec<Option<Record>>, CoordinatorError> {
    let coordinator = &ctx.shared.coordinator;
    let watched = &ctx.session.watched;
    if watched.is_empty() {
        return coordinator.read(keys, options).await;
    }
    let records = coordinator.read(keys.clone(), options).await?;
    let now = coordinator.now_ms();
    let other = keys.iter().zip(&records).any(|(key, record)| {
        let live = record.as_ref().is_some_and(|r| is_live(r, now));
        let context = record
            .as_ref()
            .map(|r| r.context().clone())
            .unwrap_or_default();
        watched
            .iter()
            .any(|w| w.key == *key && (live != w.live || context != w.context))
    });
    if other {
        ctx.session
            .watch_read_other
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(records)
}

/// Every client write goes through here, with client keys of the
/// session's database: see [`write_namespaced`].
///
/// # Errors
/// The coordinator's.
pub async fn write(
    ctx: &Ctx<'_>,
    writes: Vec<(Bytes, WriteOp)>,
    options: WriteOptions,
) -> Result<Vec<Written>, CoordinatorError> {
    let writes = writes
        .into_iter()
        .map(|(key, op)| (ctx.session.key(&key), op))
        .collect();
    write_namespaced(ctx, writes, options).await
}

/// Writes of namespaced keys (`crate::db`: MOVE and COPY ... DB write
/// another database's; plans hold their keys so): inside an EXEC, the first write of each WATCHed
/// key carries [`Condition::Unchanged`], and a refusal marks the
/// transaction broken (EXEC then answers the null array).
///
/// # Errors
/// The coordinator's.
pub async fn write_namespaced(
    ctx: &Ctx<'_>,
    writes: Vec<(Bytes, WriteOp)>,
    options: WriteOptions,
) -> Result<Vec<Written>, CoordinatorError> {
    write_namespaced_each(ctx, writes, options)
        .await?
        .into_iter()
        .collect()
}

/// [`write_namespaced`] with each key's outcome its own
/// ([`crate::coordinator::Coordinator::write_each`]): a pipeline's
/// commands, each answered alone.
///
/// # Errors
/// The coordinator's, for the whole batch.
pub async fn write_namespaced_each(
    ctx: &Ctx<'_>,
    mut writes: Vec<(Bytes, WriteOp)>,
    options: WriteOptions,
) -> Result<Vec<KeyWritten>, CoordinatorError> {
    let guarded = {
        let mut exec = ctx.session.exec_watch();
        let mut guarded = false;
        for (key, op) in &mut writes {
            let Some(at) = exec.pending.iter().position(|w| w.key == *key) else {
                continue;
            };
            let watched = exec.pending.swap_remove(at);
            // An unchanged key holds a value exactly when it did at WATCH,
            // which decides NX and XX: they add nothing to the check then.
            // (An NX on a key that held a value writes nothing either way.)
            // A write already conditional on the key being as read after
            // WATCH (RENAME's and MOVE's delete of the source) is as
            // strict with WATCH's context: unchanged since WATCH, it was
            // read as WATCH saw it.
            let implied = match op.condition {
                Condition::Always | Condition::Unchanged { .. } => true,
                Condition::IfAbsent => !watched.live,
                Condition::IfPresent => watched.live,
            };
            if implied {
                op.condition = Condition::Unchanged {
                    context: Box::new(watched.context),
                    live: watched.live,
                };
                guarded = true;
            }
        }
        guarded
    };
    let result = ctx.shared.coordinator.write_each(writes, options).await;
    let changed =
        |e: &CoordinatorError| matches!(e, CoordinatorError::Rejected(OpError::WatchedKeyChanged));
    if guarded
        && match &result {
            Ok(each) => each.iter().any(|r| r.as_ref().is_err_and(changed)),
            Err(e) => changed(e),
        }
    {
        ctx.session.exec_watch().broken = true;
    }
    result
}

/// A coordinator failure as a client sees it. A store that cannot take
/// writes answers as Redis answers when it cannot persist (`-MISCONF`),
/// in our own words, and logs nothing here: the store logged the failure
/// once ([`crate::storage::Health`]).
pub fn coordinator_error(error: &CoordinatorError) -> Reply {
    match error {
        CoordinatorError::QuorumFailed { .. } | CoordinatorError::RemoteQuorumFailed(_) => {
            Reply::error(error.to_string())
        }
        CoordinatorError::Storage(StoreError::Unwritable { reason }) => Reply::error(format!(
            "MISCONF dynokv cannot write to its data directory: {}; writes are refused until it \
             can",
            reason.replace(['\r', '\n'], " ")
        )),
        CoordinatorError::Storage(e) => {
            tracing::error!("storage failure: {e}");
            Reply::error(format!("ERR {error}"))
        }
        CoordinatorError::ShuttingDown => Reply::error("ERR node is shutting down"),
        CoordinatorError::Remote(e) => Reply::error(format!("ERR {e}")),
        CoordinatorError::Rejected(e) => Reply::error(format!("ERR {e}")),
        CoordinatorError::Layout(e) => Reply::error(format!("ERR {e}")),
        CoordinatorError::UnknownMember(_) => Reply::error(format!("ERR {error}")),
    }
}
