//! String and key commands: GET, SET, DEL/UNLINK, EXISTS, MGET, MSET, TYPE.
//! Plain commands see one value per key: the last writer among siblings
//! (docs/semantics.md). GET, SET, MGET and MSET are [`Plan`]s: they say what
//! they read or write and how their reply is made, and `plan::Batch`
//! runs them, alone or with the pipelined plans next to them.

use super::generic::{TimeUnit, expire_at_ms};
use super::plan::{FromWritten, Plan, no_outcome};
use super::{Ctx, check_keys, coordinator_error, int_arg, run_plan, syntax_error};
use crate::coordinator::{ReadOptions, WriteOptions};
use crate::model::ops::{Change, Condition, ExpireWhen, Expiry, WriteOp};
use crate::model::record::{Record, is_live, winner_value};
use crate::replica::Written;
use crate::resp::reply::Reply;
use bytes::Bytes;
use std::sync::atomic::Ordering;

/// Reads `keys` through the coordinator, counting hits and misses.
async fn read(ctx: &Ctx<'_>, keys: Vec<Bytes>) -> Result<Vec<Option<Record>>, Reply> {
    check_keys(&keys)?;
    super::read(ctx, keys, ReadOptions::default())
        .await
        .map_err(|e| coordinator_error(&e))
}

/// The winning value of a record at `now`, counted as a keyspace hit or
/// miss.
fn value(ctx: &Ctx<'_>, record: Option<&Record>, now: u64) -> Option<Bytes> {
    let value = record.and_then(|r| winner_value(r, now)).cloned();
    let stats = &ctx.shared.stats;
    let counter = if value.is_some() {
        &stats.keyspace_hits
    } else {
        &stats.keyspace_misses
    };
    counter.fetch_add(1, Ordering::Relaxed);
    value
}

async fn write(ctx: &Ctx<'_>, writes: Vec<(Bytes, WriteOp)>) -> Result<Vec<Written>, Reply> {
    check_keys(writes.iter().map(|(k, _)| k))?;
    super::write(ctx, writes, WriteOptions::default())
        .await
        .map_err(|e| coordinator_error(&e))
}

fn bulk_or_nil(value: Option<Bytes>) -> Reply {
    value.map_or(Reply::Nil, Reply::Bulk)
}

/// GET: a read of its key, answered with the winning value.
pub fn get(ctx: &Ctx<'_>, args: &[Bytes]) -> Result<Plan, Reply> {
    Plan::read(ctx, &args[1..2], |ctx, records, now| match records {
        [record] => bulk_or_nil(value(ctx, record.as_ref(), now)),
        _ => no_outcome(),
    })
}

/// MGET: a read of its keys, answered with their winning values.
pub fn mget(ctx: &Ctx<'_>, args: &[Bytes]) -> Result<Plan, Reply> {
    Plan::read(ctx, &args[1..], |ctx, records, now| {
        let values = records
            .iter()
            .map(|r| bulk_or_nil(value(ctx, r.as_ref(), now)));
        Reply::Array(values.collect())
    })
}

/// SET's options, parsed as Redis's `parseExtendedStringArgumentsOrReply`.
struct SetOptions {
    condition: Condition,
    get: bool,
    expiry: Expiry,
}

/// The unit an expiry option (EX, PX, EXAT, PXAT) gives its time in.
pub fn expiry_option(option: &[u8]) -> Option<TimeUnit> {
    match option {
        b"EX" => Some(TimeUnit::Seconds),
        b"PX" => Some(TimeUnit::Millis),
        b"EXAT" => Some(TimeUnit::UnixSeconds),
        b"PXAT" => Some(TimeUnit::UnixMillis),
        _ => None,
    }
}

/// An expiry for SET, SETEX, GETEX: must be positive (Redis's rule).
pub fn positive_expire_at(
    unit: TimeUnit,
    value: &[u8],
    now_ms: u64,
    command: &str,
) -> Result<u64, Reply> {
    if int_arg(value)? <= 0 {
        return Err(Reply::error(format!(
            "ERR invalid expire time in '{command}' command"
        )));
    }
    expire_at_ms(unit, value, now_ms, command).map(|at| at.max(0) as u64)
}

fn parse_set_options(args: &[Bytes], now_ms: u64) -> Result<SetOptions, Reply> {
    let mut condition = Condition::Always;
    let mut get = false;
    let mut keep_ttl = false;
    let mut expire: Option<(TimeUnit, &Bytes)> = None;
    let mut j = 0;
    while j < args.len() {
        let option = args[j].to_ascii_uppercase();
        // As Redis: an expiry option (or KEEPTTL) may repeat, the last one
        // counting, but not mix with another expiry option or KEEPTTL.
        match (option.as_slice(), expiry_option(&option), args.get(j + 1)) {
            (b"NX", ..) if condition != Condition::IfPresent => condition = Condition::IfAbsent,
            (b"XX", ..) if condition != Condition::IfAbsent => condition = Condition::IfPresent,
            (b"GET", ..) => get = true,
            (b"KEEPTTL", ..) if expire.is_none() => keep_ttl = true,
            (_, Some(unit), Some(value))
                if !keep_ttl && expire.is_none_or(|(seen, _)| seen == unit) =>
            {
                expire = Some((unit, value));
                j += 1;
            }
            _ => return Err(syntax_error()),
        }
        j += 1;
    }
    let expiry = match expire {
        None if keep_ttl => Expiry::Keep,
        None => Expiry::Never,
        Some((unit, value)) => Expiry::At(positive_expire_at(unit, value, now_ms, "set")?),
    };
    Ok(SetOptions {
        condition,
        get,
        expiry,
    })
}

/// SET, with its options: a write of its key, answered from the write's
/// outcome (OK, or nil when NX or XX declined it; the previous value
/// with GET).
pub fn set(ctx: &Ctx<'_>, args: &[Bytes]) -> Result<Plan, Reply> {
    // Only an expiry option needs the time: plain SET reads no clock.
    let now = match args.len() {
        3 => 0,
        _ => ctx.shared.coordinator.now_ms(),
    };
    let options = parse_set_options(&args[3..], now)?;
    let mut op = WriteOp::set(args[2].clone());
    op.condition = options.condition;
    if let Change::Put { expiry, .. } = &mut op.change {
        *expiry = options.expiry;
    }
    let reply: FromWritten = if options.get {
        |written, now| match written {
            [written] => bulk_or_nil(previous_value(written, now)),
            _ => no_outcome(),
        }
    } else {
        |written, _| match written {
            [written] if written.current.is_some() => Reply::OK,
            [_] => Reply::Nil,
            _ => no_outcome(),
        }
    };
    Plan::write(ctx, [(&args[1], op)], reply)
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

/// MSET: a write of its keys, answered OK.
pub fn mset(ctx: &Ctx<'_>, args: &[Bytes]) -> Result<Plan, Reply> {
    if args.len().is_multiple_of(2) {
        return Err(Reply::error(
            "ERR wrong number of arguments for 'mset' command",
        ));
    }
    // A key given twice gets its last value, as in Redis: write it once,
    // since the writes of one batch may run concurrently.
    let pairs: Vec<_> = args[1..].chunks(2).collect();
    let writes = pairs
        .iter()
        .enumerate()
        .filter(|(i, pair)| !pairs[i + 1..].iter().any(|later| later[0] == pair[0]))
        .map(|(_, pair)| (&pair[0], WriteOp::set(pair[1].clone())));
    Plan::write(ctx, writes, |_, _| Reply::OK)
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

/// Runs one write and returns its outcome.
async fn write_one(ctx: &Ctx<'_>, key: &Bytes, op: WriteOp) -> Result<Written, Reply> {
    write(ctx, vec![(key.clone(), op)])
        .await?
        .pop()
        .ok_or_else(no_outcome)
}

/// The value plain GET saw before a write.
fn previous_value(written: &Written, now: u64) -> Option<Bytes> {
    written
        .previous
        .as_ref()
        .and_then(|r| winner_value(r, now))
        .cloned()
}

/// The value a write left (what GET would now return).
fn current_value(written: &Written, now: u64) -> Option<Bytes> {
    written
        .current
        .as_ref()
        .and_then(|r| winner_value(r, now))
        .cloned()
}

pub async fn setnx(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let op = WriteOp {
        condition: Condition::IfAbsent,
        ..WriteOp::set(args[2].clone())
    };
    match write_one(ctx, &args[1], op).await {
        Ok(written) => Reply::Integer(i64::from(written.current.is_some())),
        Err(reply) => reply,
    }
}

pub async fn msetnx(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    if args.len().is_multiple_of(2) {
        return Reply::error("ERR wrong number of arguments for 'msetnx' command");
    }
    // Redis checks every key, then sets them in order: a key given twice
    // gets its last value (judged against the state before the command).
    let pairs: Vec<_> = args[1..].chunks(2).collect();
    let writes: Vec<_> = pairs
        .iter()
        .enumerate()
        .filter(|(i, pair)| !pairs[i + 1..].iter().any(|later| later[0] == pair[0]))
        .map(|(_, pair)| {
            let op = WriteOp {
                condition: Condition::IfAbsent,
                ..WriteOp::set(pair[1].clone())
            };
            (pair[0].clone(), op)
        })
        .collect();
    if let Err(reply) = check_keys(writes.iter().map(|(k, _)| k)) {
        return reply;
    }
    let options = WriteOptions {
        all_or_nothing: true,
        ..WriteOptions::default()
    };
    match super::write(ctx, writes, options).await {
        // Empty when a declining write cancelled the batch; a lone write
        // that declined comes back with no current record.
        Ok(written) => Reply::Integer(i64::from(
            !written.is_empty() && written.iter().all(|w| w.current.is_some()),
        )),
        Err(e) => coordinator_error(&e),
    }
}

pub async fn getset(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let now = ctx.shared.coordinator.now_ms();
    match write_one(ctx, &args[1], WriteOp::set(args[2].clone())).await {
        Ok(written) => bulk_or_nil(previous_value(&written, now)),
        Err(reply) => reply,
    }
}

pub async fn getdel(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let now = ctx.shared.coordinator.now_ms();
    match write_one(ctx, &args[1], WriteOp::delete()).await {
        Ok(written) => bulk_or_nil(previous_value(&written, now)),
        Err(reply) => reply,
    }
}

pub async fn getex(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let now = ctx.shared.coordinator.now_ms();
    // As Redis: an option may repeat (the last one counts) but not mix
    // with another.
    let mut persist = false;
    let mut expire: Option<(TimeUnit, &Bytes)> = None;
    let mut j = 2;
    while j < args.len() {
        let option = args[j].to_ascii_uppercase();
        match (expiry_option(&option), args.get(j + 1)) {
            _ if option == b"PERSIST" && expire.is_none() => persist = true,
            (Some(unit), Some(value))
                if !persist && expire.is_none_or(|(seen, _)| seen == unit) =>
            {
                expire = Some((unit, value));
                j += 1;
            }
            _ => return syntax_error(),
        }
        j += 1;
    }
    let change: Option<Option<u64>> = match expire {
        None => persist.then_some(None),
        Some((unit, value)) => match positive_expire_at(unit, value, now, "getex") {
            Ok(at) => Some(Some(at)),
            // Redis looks the key up before it checks the time: nil for a
            // missing key, whatever the time.
            Err(reply) => {
                return match run_plan(ctx, get(ctx, args)).await {
                    Reply::Bulk(_) => reply,
                    other => other,
                };
            }
        },
    };
    let Some(at) = change else {
        return run_plan(ctx, get(ctx, args)).await;
    };
    let op = WriteOp::known(Change::Expire {
        at,
        when: ExpireWhen::default(),
    });
    match write_one(ctx, &args[1], op).await {
        Ok(written) => bulk_or_nil(previous_value(&written, now)),
        Err(reply) => reply,
    }
}

/// SETEX and PSETEX: SET with a relative expiry.
pub async fn setex(ctx: &Ctx<'_>, args: &[Bytes], unit: TimeUnit, command: &str) -> Reply {
    let now = ctx.shared.coordinator.now_ms();
    let at = match positive_expire_at(unit, &args[2], now, command) {
        Ok(at) => at,
        Err(reply) => return reply,
    };
    let op = WriteOp::known(Change::Put {
        value: args[3].clone(),
        expiry: Expiry::At(at),
    });
    match write_one(ctx, &args[1], op).await {
        Ok(_) => Reply::OK,
        Err(reply) => reply,
    }
}

pub async fn append(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let now = ctx.shared.coordinator.now_ms();
    match write_one(
        ctx,
        &args[1],
        WriteOp::known(Change::Append(args[2].clone())),
    )
    .await
    {
        Ok(written) => Reply::Integer(current_value(&written, now).map_or(0, |v| v.len()) as i64),
        Err(reply) => reply,
    }
}

pub async fn strlen(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    match read(ctx, vec![args[1].clone()]).await {
        Ok(records) => {
            let now = ctx.shared.coordinator.now_ms();
            let len = records[0]
                .as_ref()
                .and_then(|r| winner_value(r, now))
                .map_or(0, |v| v.len());
            Reply::Integer(len as i64)
        }
        Err(reply) => reply,
    }
}

pub async fn setrange(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let now = ctx.shared.coordinator.now_ms();
    let offset = match int_arg(&args[2]) {
        Ok(n) if n >= 0 => n as usize,
        Ok(_) => return Reply::error("ERR offset is out of range"),
        Err(reply) => return reply,
    };
    let change = Change::SetRange {
        offset,
        data: args[3].clone(),
    };
    match write_one(ctx, &args[1], WriteOp::known(change)).await {
        // No write (empty data): the length is the current value's.
        Ok(written) => {
            let value = match written.current {
                Some(_) => current_value(&written, now),
                None => previous_value(&written, now),
            };
            Reply::Integer(value.map_or(0, |v| v.len()) as i64)
        }
        Err(reply) => reply,
    }
}

pub async fn getrange(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let (start, end) = match (int_arg(&args[2]), int_arg(&args[3])) {
        (Ok(start), Ok(end)) => (start, end),
        (Err(reply), _) | (_, Err(reply)) => return reply,
    };
    let records = match read(ctx, vec![args[1].clone()]).await {
        Ok(records) => records,
        Err(reply) => return reply,
    };
    let now = ctx.shared.coordinator.now_ms();
    let value = records[0]
        .as_ref()
        .and_then(|r| winner_value(r, now))
        .cloned()
        .unwrap_or_default();
    Reply::Bulk(string_range(&value, start, end))
}

/// GETRANGE's index arithmetic, exactly as Redis 7.0's.
fn string_range(value: &Bytes, start: i64, end: i64) -> Bytes {
    let len = value.len() as i64;
    if start < 0 && end < 0 && start > end {
        return Bytes::new();
    }
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let end = if end < 0 { (len + end).max(0) } else { end };
    let end = end.min(len - 1);
    if start > end || len == 0 {
        return Bytes::new();
    }
    value.slice(start as usize..=end as usize)
}

pub async fn incr_by(ctx: &Ctx<'_>, key: &Bytes, by: i64) -> Reply {
    let now = ctx.shared.coordinator.now_ms();
    match write_one(ctx, key, WriteOp::known(Change::IncrBy(by))).await {
        Ok(written) => {
            match current_value(&written, now).and_then(|v| crate::wire::parse_i64(&v)) {
                Some(n) => Reply::Integer(n),
                None => Reply::error("ERR write returned no outcome"),
            }
        }
        Err(reply) => reply,
    }
}

/// INCRBY / DECRBY's amount argument.
pub fn amount(arg: &[u8], negate: bool) -> Result<i64, Reply> {
    let n = int_arg(arg)?;
    if negate {
        n.checked_neg()
            .ok_or_else(|| Reply::error("ERR decrement would overflow"))
    } else {
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrange_indexes_like_redis() {
        let v = Bytes::from_static(b"This is a string");
        let r = |s, e| string_range(&v, s, e);
        assert_eq!(r(0, 3), Bytes::from_static(b"This"));
        assert_eq!(r(-3, -1), Bytes::from_static(b"ing"));
        assert_eq!(r(0, -1), v);
        assert_eq!(r(10, 100), Bytes::from_static(b"string"));
        assert_eq!(r(-1, -5), Bytes::new());
        assert_eq!(r(5, 3), Bytes::new());
        assert_eq!(string_range(&Bytes::new(), 0, -1), Bytes::new());
    }
}
