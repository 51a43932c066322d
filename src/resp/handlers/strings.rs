//! String and key commands: GET, SET, DEL/UNLINK, EXISTS, MGET, MSET, TYPE.
//! Plain commands see one value per key: the last writer among siblings
//! (design.md §2).

use super::{Ctx, check_keys, coordinator_error, int_arg, syntax_error};
use crate::coordinator::{Condition, Expiry, ReadOptions, WriteOp, WriteOptions};
use crate::replica::Written;
use crate::resp::reply::Reply;
use crate::storage::record::{Record, is_live, winner_value};
use bytes::Bytes;
use std::sync::atomic::Ordering;

/// Reads `keys` through the coordinator, counting hits and misses.
async fn read(ctx: &Ctx<'_>, keys: Vec<Bytes>) -> Result<Vec<Option<Record>>, Reply> {
    check_keys(&keys)?;
    let records = ctx
        .shared
        .coordinator
        .read(keys, ReadOptions::default())
        .await
        .map_err(|e| coordinator_error(&e))?;
    Ok(records)
}

/// The winning value of each record, counted as keyspace hits/misses.
fn values(ctx: &Ctx<'_>, records: &[Option<Record>]) -> Vec<Option<Bytes>> {
    let now = ctx.shared.coordinator.now_ms();
    let stats = &ctx.shared.stats;
    records
        .iter()
        .map(|r| {
            let value = r.as_ref().and_then(|r| winner_value(r, now)).cloned();
            let counter = if value.is_some() {
                &stats.keyspace_hits
            } else {
                &stats.keyspace_misses
            };
            counter.fetch_add(1, Ordering::Relaxed);
            value
        })
        .collect()
}

async fn write(ctx: &Ctx<'_>, writes: Vec<(Bytes, WriteOp)>) -> Result<Vec<Written>, Reply> {
    check_keys(writes.iter().map(|(k, _)| k))?;
    ctx.shared
        .coordinator
        .write(writes, WriteOptions::default())
        .await
        .map_err(|e| coordinator_error(&e))
}

fn bulk_or_nil(value: Option<Bytes>) -> Reply {
    value.map_or(Reply::Nil, Reply::Bulk)
}

pub async fn get(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    match read(ctx, vec![args[1].clone()]).await {
        Ok(records) => bulk_or_nil(values(ctx, &records).pop().flatten()),
        Err(reply) => reply,
    }
}

pub async fn mget(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    match read(ctx, args[1..].to_vec()).await {
        Ok(records) => Reply::Array(values(ctx, &records).into_iter().map(bulk_or_nil).collect()),
        Err(reply) => reply,
    }
}

/// SET's options, parsed as Redis's `parseExtendedStringArgumentsOrReply`.
struct SetOptions {
    condition: Condition,
    get: bool,
    expiry: Expiry,
}

/// How an expiry argument is given.
#[derive(Clone, Copy, PartialEq)]
enum ExpireUnit {
    Seconds,
    Millis,
    UnixSeconds,
    UnixMillis,
}

fn parse_set_options(args: &[Bytes], now_ms: u64) -> Result<SetOptions, Reply> {
    let mut condition = Condition::Always;
    let mut get = false;
    let mut keep_ttl = false;
    let mut expire: Option<(ExpireUnit, &Bytes)> = None;
    let mut j = 0;
    while j < args.len() {
        let option = args[j].to_ascii_uppercase();
        let next = args.get(j + 1);
        let no_expiry = expire.is_none() && !keep_ttl;
        match (option.as_slice(), next) {
            (b"NX", _) if condition != Condition::IfPresent => condition = Condition::IfAbsent,
            (b"XX", _) if condition != Condition::IfAbsent => condition = Condition::IfPresent,
            (b"GET", _) => get = true,
            (b"KEEPTTL", _) if no_expiry => keep_ttl = true,
            (b"EX", Some(v)) if no_expiry => (expire, j) = (Some((ExpireUnit::Seconds, v)), j + 1),
            (b"PX", Some(v)) if no_expiry => (expire, j) = (Some((ExpireUnit::Millis, v)), j + 1),
            (b"EXAT", Some(v)) if no_expiry => {
                (expire, j) = (Some((ExpireUnit::UnixSeconds, v)), j + 1);
            }
            (b"PXAT", Some(v)) if no_expiry => {
                (expire, j) = (Some((ExpireUnit::UnixMillis, v)), j + 1);
            }
            _ => return Err(syntax_error()),
        }
        j += 1;
    }
    let expiry = match expire {
        None if keep_ttl => Expiry::Keep,
        None => Expiry::Never,
        Some((unit, value)) => Expiry::At(expire_at(unit, value, now_ms, "set")?),
    };
    Ok(SetOptions {
        condition,
        get,
        expiry,
    })
}

/// The absolute expire time for an expiry argument, with Redis's errors.
fn expire_at(unit: ExpireUnit, value: &[u8], now_ms: u64, command: &str) -> Result<u64, Reply> {
    let invalid = || Reply::error(format!("ERR invalid expire time in '{command}' command"));
    let n = int_arg(value)?;
    if n <= 0 {
        return Err(invalid());
    }
    let ms = match unit {
        ExpireUnit::Seconds | ExpireUnit::UnixSeconds => n.checked_mul(1000).ok_or_else(invalid)?,
        ExpireUnit::Millis | ExpireUnit::UnixMillis => n,
    };
    match unit {
        ExpireUnit::Seconds | ExpireUnit::Millis => ms
            .checked_add(now_ms as i64)
            .map(|at| at as u64)
            .ok_or_else(invalid),
        ExpireUnit::UnixSeconds | ExpireUnit::UnixMillis => Ok(ms as u64),
    }
}

pub async fn set(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let now = ctx.shared.coordinator.now_ms();
    let options = match parse_set_options(&args[3..], now) {
        Ok(options) => options,
        Err(reply) => return reply,
    };
    let mut op = WriteOp::set(args[2].clone());
    op.condition = options.condition;
    if let crate::coordinator::Change::Put { expiry, .. } = &mut op.change {
        *expiry = options.expiry;
    }
    let written = match write(ctx, vec![(args[1].clone(), op)]).await {
        Ok(mut written) => written.pop(),
        Err(reply) => return reply,
    };
    let Some(written) = written else {
        return Reply::error("ERR write returned no outcome");
    };
    if options.get {
        let previous = written
            .previous
            .as_ref()
            .and_then(|r| winner_value(r, now))
            .cloned();
        return bulk_or_nil(previous);
    }
    match written.current {
        Some(_) => Reply::OK,
        None => Reply::Nil,
    }
}

pub async fn del(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let writes = args[1..]
        .iter()
        .map(|k| (k.clone(), WriteOp::delete()))
        .collect();
    match write(ctx, writes).await {
        Ok(written) => {
            Reply::Integer(written.iter().filter(|w| w.current.is_some()).count() as i64)
        }
        Err(reply) => reply,
    }
}

pub async fn mset(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    if args.len().is_multiple_of(2) {
        return Reply::error("ERR wrong number of arguments for 'mset' command");
    }
    let writes = args[1..]
        .chunks(2)
        .map(|pair| (pair[0].clone(), WriteOp::set(pair[1].clone())))
        .collect();
    match write(ctx, writes).await {
        Ok(_) => Reply::OK,
        Err(reply) => reply,
    }
}

pub async fn exists(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let now = ctx.shared.coordinator.now_ms();
    match read(ctx, args[1..].to_vec()).await {
        Ok(records) => {
            Reply::Integer(records.iter().flatten().filter(|r| is_live(r, now)).count() as i64)
        }
        Err(reply) => reply,
    }
}

pub async fn key_type(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let now = ctx.shared.coordinator.now_ms();
    match read(ctx, vec![args[1].clone()]).await {
        Ok(records) if records.iter().flatten().any(|r| is_live(r, now)) => Reply::Simple("string"),
        Ok(_) => Reply::Simple("none"),
        Err(reply) => reply,
    }
}
