//! Keyspace commands (Redis's "generic" group): KEYS, SCAN, RANDOMKEY,
//! RENAME, RENAMENX, COPY, MOVE, TOUCH, FLUSHALL/FLUSHDB, and the expiry
//! commands EXPIRE*, TTL, PTTL, EXPIRETIME, PEXPIRETIME, PERSIST.
//!
//! Keys are walked partition by partition, in partition-id then key
//! order, through the coordinator: the same walk serves a cluster, where
//! each partition is read from one live replica.

use super::connection::db_arg;
use super::{
    Ctx, check_keys, coordinator_error, int_arg, read_namespaced, syntax_error, write_namespaced,
};
use crate::coordinator::{CoordinatorError, ReadOptions, WriteOptions};
use crate::limits::{MOVE_ATTEMPTS_MAX, PARTITION_PAGE_RECORDS, SCAN_PARTITION_RECORDS_MAX};
use crate::model::ops::{Change, Condition, ExpireWhen, Expiry, OpError, WriteOp};
use crate::model::record::{Record, is_live, lww_order, winner_value};
use crate::resp::glob::glob_match;
use crate::resp::reply::Reply;
use bytes::Bytes;

/// Reads `[first, first + limit)` records of a partition in key order,
/// paging through the coordinator; returns them and whether the partition
/// has more.
async fn partition_slice(
    ctx: &Ctx<'_>,
    partition: u16,
    first: usize,
    limit: usize,
) -> Result<(Vec<(Bytes, Record)>, bool), Reply> {
    let coordinator = &ctx.shared.coordinator;
    let mut out = Vec::new();
    let mut seen = 0usize;
    let mut after: Option<Bytes> = None;
    loop {
        let page = coordinator
            .scan_partition(partition, after.clone(), PARTITION_PAGE_RECORDS)
            .await
            .map_err(|e| coordinator_error(&e))?;
        let full = page.len() >= PARTITION_PAGE_RECORDS;
        after = page.last().map(|(k, _)| k.clone());
        for entry in page {
            if seen >= first + limit {
                return Ok((out, true));
            }
            if seen >= first {
                out.push(entry);
            }
            seen += 1;
        }
        if !full {
            return Ok((out, false));
        }
    }
}

/// The client keys of `records` that are in database `db` and hold a
/// live value.
fn live_keys(records: Vec<(Bytes, Record)>, db: u8, now: u64) -> impl Iterator<Item = Bytes> {
    records
        .into_iter()
        .filter(move |(_, r)| is_live(r, now))
        .filter_map(move |(k, _)| crate::db::client_key(db, &k))
}

pub async fn keys(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let pattern = &args[1];
    let now = ctx.shared.coordinator.now_ms();
    let mut out = Vec::new();
    for partition in 0..ctx.shared.coordinator.partitions() {
        let records = match partition_slice(ctx, partition as u16, 0, usize::MAX / 2).await {
            Ok((records, _)) => records,
            Err(reply) => return reply,
        };
        out.extend(
            live_keys(records, ctx.session.db, now)
                .filter(|k| glob_match(pattern, k, false))
                .map(Reply::Bulk),
        );
    }
    Reply::Array(out)
}

/// SCAN's cursor: the partition to read next and how many of its records
/// earlier calls already returned (non-zero only inside huge partitions).
/// Cursor 0 is the start and the end, as in Redis.
fn decode_cursor(cursor: u64, partitions: u32) -> Option<(u32, usize)> {
    let partition = (cursor % u64::from(partitions)) as u32;
    let skip = usize::try_from(cursor / u64::from(partitions)).ok()?;
    Some((partition, skip))
}

fn encode_cursor(partition: u32, skip: usize, partitions: u32) -> u64 {
    if partition >= partitions {
        return 0;
    }
    skip as u64 * u64::from(partitions) + u64::from(partition)
}

/// A SCAN cursor as Redis reads it (`strtoul`, then no leading space and
/// nothing left over): an optional sign, decimal digits, `""` is 0, a minus
/// wraps around; anything else, or overflow, is invalid.
fn parse_cursor(arg: &[u8]) -> Option<u64> {
    let (negative, digits) = match arg.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, arg),
    };
    if digits.is_empty() {
        return arg.is_empty().then_some(0);
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(if negative { n.wrapping_neg() } else { n })
}

pub async fn scan(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let partitions = ctx.shared.coordinator.partitions();
    let cursor = parse_cursor(&args[1]);
    let Some((mut partition, mut skip)) = cursor.and_then(|c| decode_cursor(c, partitions)) else {
        return Reply::error("ERR invalid cursor");
    };
    let (mut pattern, mut count, mut kind) = (None, 10usize, None);
    let mut j = 2;
    while j < args.len() {
        let option = args[j].to_ascii_uppercase();
        let Some(value) = args.get(j + 1) else {
            return syntax_error();
        };
        match option.as_slice() {
            b"MATCH" => pattern = Some(value.clone()),
            b"COUNT" => match int_arg(value) {
                Ok(n) if n >= 1 => count = n as usize,
                Ok(_) => return syntax_error(),
                Err(reply) => return reply,
            },
            b"TYPE" => kind = Some(value.to_ascii_lowercase()),
            _ => return syntax_error(),
        }
        j += 2;
    }
    let now = ctx.shared.coordinator.now_ms();
    let mut keys = Vec::new();
    let mut examined = 0;
    // Whole partitions until COUNT records were examined; a partition is
    // split only when it alone exceeds the per-call bound.
    while partition < partitions && examined < count {
        let (records, more) =
            match partition_slice(ctx, partition as u16, skip, SCAN_PARTITION_RECORDS_MAX).await {
                Ok(slice) => slice,
                Err(reply) => return reply,
            };
        examined += records.len();
        keys.extend(live_keys(records, ctx.session.db, now));
        if more {
            skip += SCAN_PARTITION_RECORDS_MAX;
            break;
        }
        partition += 1;
        skip = 0;
    }
    let keys = keys
        .into_iter()
        .filter(|k| pattern.as_ref().is_none_or(|p| glob_match(p, k, false)))
        .filter(|_| kind.as_ref().is_none_or(|t| t.as_slice() == b"string"))
        .map(Reply::Bulk)
        .collect();
    Reply::Array(vec![
        Reply::bulk(encode_cursor(partition, skip, partitions).to_string()),
        Reply::Array(keys),
    ])
}

pub async fn randomkey(ctx: &Ctx<'_>) -> Reply {
    let partitions = ctx.shared.coordinator.partitions();
    let now = ctx.shared.coordinator.now_ms();
    let start = (crate::random::random_u64() % u64::from(partitions)) as u32;
    for step in 0..partitions {
        let partition = ((start + step) % partitions) as u16;
        let records = match partition_slice(ctx, partition, 0, SCAN_PARTITION_RECORDS_MAX).await {
            Ok((records, _)) => records,
            Err(reply) => return reply,
        };
        let live: Vec<Bytes> = live_keys(records, ctx.session.db, now).collect();
        if !live.is_empty() {
            let pick = (crate::random::random_u64() % live.len() as u64) as usize;
            return Reply::Bulk(live[pick].clone());
        }
    }
    Reply::Nil
}

async fn read(ctx: &Ctx<'_>, keys: &[Bytes]) -> Result<Vec<Option<Record>>, Reply> {
    check_keys(keys)?;
    super::read(ctx, keys.to_vec(), ReadOptions::default())
        .await
        .map_err(|e| coordinator_error(&e))
}

async fn write(
    ctx: &Ctx<'_>,
    writes: Vec<(Bytes, WriteOp)>,
    all_or_nothing: bool,
) -> Result<Vec<crate::replica::Written>, Reply> {
    check_keys(writes.iter().map(|(k, _)| k))?;
    let options = WriteOptions {
        all_or_nothing,
        ..WriteOptions::default()
    };
    super::write(ctx, writes, options)
        .await
        .map_err(|e| coordinator_error(&e))
}

/// The live winning value of a record and its expire-at.
fn winner(record: Option<&Record>, now: u64) -> Option<(Bytes, Option<u64>)> {
    let record = record?;
    let value = winner_value(record, now)?.clone();
    let (_, sibling) = record.winner(lww_order)?;
    Some((value, sibling.expire_at_ms))
}

/// RENAME, RENAMENX, COPY and MOVE: write the source's value (and
/// expiry) to the destination `dst` in database `dst_db`; RENAME and MOVE
/// also delete the source. Returns whether it was written (`false`: the
/// destination held a key and `replace` is off).
///
/// Read-modify-write at the coordinator, made safe under concurrency by
/// deleting the source first, only if it is still as read (of racing
/// MOVEs of one key exactly one wins; a source changed meanwhile is read
/// again), then writing the destination. A destination that appears
/// between the check and the write (NX) gets the source put back.
async fn copy_value(
    ctx: &Ctx<'_>,
    src: &Bytes,
    (dst_db, dst): (u8, &Bytes),
    replace: bool,
    delete_src: bool,
) -> Result<bool, Reply> {
    let (src_key, dst_key) = (ctx.session.key(src), crate::db::namespaced(dst_db, dst));
    check_keys([src, dst])?;
    let failed = |e: CoordinatorError| coordinator_error(&e);
    for _ in 0..MOVE_ATTEMPTS_MAX {
        let now = ctx.shared.coordinator.now_ms();
        let records = read_namespaced(ctx, vec![src_key.clone()], ReadOptions::default())
            .await
            .map_err(failed)?;
        let Some(record) = records.into_iter().next().flatten() else {
            return Err(no_such_key());
        };
        let Some((value, expire_at)) = winner(Some(&record), now) else {
            return Err(no_such_key());
        };
        let mut put = WriteOp::known(Change::Put {
            value: value.clone(),
            expiry: expire_at.map_or(Expiry::Never, Expiry::At),
        });
        if !replace {
            put.condition = Condition::IfAbsent;
        }
        if !delete_src || src_key == dst_key {
            let written = write_namespaced(ctx, vec![(dst_key, put)], WriteOptions::default())
                .await
                .map_err(failed)?;
            return Ok(written.iter().all(|w| w.current.is_some()));
        }
        if !replace {
            let held = read_namespaced(ctx, vec![dst_key.clone()], ReadOptions::default())
                .await
                .map_err(failed)?;
            if held[0].as_ref().is_some_and(|r| is_live(r, now)) {
                return Ok(false);
            }
        }
        let delete = WriteOp {
            condition: Condition::Unchanged {
                context: Box::new(record.context().clone()),
                live: true,
            },
            ..WriteOp::known(Change::Delete)
        };
        match write_namespaced(
            ctx,
            vec![(src_key.clone(), delete)],
            WriteOptions::default(),
        )
        .await
        {
            Ok(_) => {}
            // Changed since read (a racing MOVE took it, or a write came):
            // read it again, unless a transaction's WATCH broke.
            Err(CoordinatorError::Rejected(OpError::WatchedKeyChanged))
                if !ctx.session.exec_watch().broken =>
            {
                continue;
            }
            Err(e) => return Err(failed(e)),
        }
        let written = write_namespaced(ctx, vec![(dst_key.clone(), put)], WriteOptions::default())
            .await
            .map_err(failed)?;
        if written.iter().all(|w| w.current.is_some()) {
            return Ok(true);
        }
        // The destination appeared meanwhile: the source goes back.
        let mut restore = WriteOp::known(Change::Put {
            value,
            expiry: expire_at.map_or(Expiry::Never, Expiry::At),
        });
        restore.condition = Condition::IfAbsent;
        write_namespaced(ctx, vec![(src_key, restore)], WriteOptions::default())
            .await
            .map_err(failed)?;
        return Ok(false);
    }
    Err(Reply::error(format!(
        "ERR the source key changed on each of {MOVE_ATTEMPTS_MAX} attempts; try again"
    )))
}

/// Redis's error for a missing source.
fn no_such_key() -> Reply {
    Reply::error("ERR no such key")
}

pub async fn rename(ctx: &Ctx<'_>, args: &[Bytes], nx: bool) -> Reply {
    let (src, dst) = (&args[1], &args[2]);
    if nx && src == dst {
        // Redis: RENAMENX k k answers 0 if k exists.
        return match read(ctx, std::slice::from_ref(src)).await {
            Ok(r)
                if r[0]
                    .as_ref()
                    .is_some_and(|r| is_live(r, ctx.shared.coordinator.now_ms())) =>
            {
                Reply::Integer(0)
            }
            Ok(_) => Reply::error("ERR no such key"),
            Err(reply) => reply,
        };
    }
    match copy_value(ctx, src, (ctx.session.db, dst), !nx, true).await {
        Ok(done) if nx => Reply::Integer(i64::from(done)),
        Ok(_) => Reply::OK,
        Err(reply) => reply,
    }
}

pub async fn copy(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let (src, dst) = (&args[1], &args[2]);
    let (mut replace, mut dst_db) = (false, ctx.session.db);
    let mut j = 3;
    while j < args.len() {
        let option = args[j].to_ascii_uppercase();
        match (option.as_slice(), args.get(j + 1)) {
            (b"REPLACE", _) => replace = true,
            (b"DB", Some(db)) => {
                match db_arg(db) {
                    Ok(db) => dst_db = db,
                    Err(reply) => return reply,
                }
                j += 1;
            }
            _ => return syntax_error(),
        }
        j += 1;
    }
    if src == dst && dst_db == ctx.session.db {
        return same_object();
    }
    match copy_value(ctx, src, (dst_db, dst), replace, false).await {
        Ok(done) => Reply::Integer(i64::from(done)),
        Err(Reply::Error(e)) if e == "ERR no such key" => Reply::Integer(0),
        Err(reply) => reply,
    }
}

/// MOVE key db: the key goes to database `db` with its expiry, unless
/// that database holds the key already (Redis's moveCommand).
pub async fn move_key(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let dst_db = match db_arg(&args[2]) {
        Ok(db) => db,
        Err(reply) => return reply,
    };
    if dst_db == ctx.session.db {
        return same_object();
    }
    match copy_value(ctx, &args[1], (dst_db, &args[1]), false, true).await {
        Ok(done) => Reply::Integer(i64::from(done)),
        Err(Reply::Error(e)) if e == "ERR no such key" => Reply::Integer(0),
        Err(reply) => reply,
    }
}

/// Redis's `shared.sameobjecterr`.
fn same_object() -> Reply {
    Reply::error("ERR source and destination objects are the same")
}

pub async fn touch(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let now = ctx.shared.coordinator.now_ms();
    match read(ctx, &args[1..]).await {
        Ok(records) => {
            Reply::Integer(records.iter().flatten().filter(|r| is_live(r, now)).count() as i64)
        }
        Err(reply) => reply,
    }
}

/// FLUSHALL removes every database's keys, FLUSHDB the session's.
pub async fn flush(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    match args.get(1).map(|a| a.to_ascii_uppercase()) {
        None => {}
        Some(mode) if args.len() == 2 && (mode == b"SYNC" || mode == b"ASYNC") => {}
        Some(_) => return syntax_error(),
    }
    let all = args[0].eq_ignore_ascii_case(b"flushall");
    match ctx
        .shared
        .coordinator
        .flush((!all).then_some(ctx.session.db))
        .await
    {
        Ok(()) => Reply::OK,
        Err(e) => coordinator_error(&e),
    }
}

/// How EXPIRE-family arguments are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// Relative seconds (EXPIRE, SETEX, EX).
    Seconds,
    /// Relative milliseconds (PEXPIRE, PSETEX, PX).
    Millis,
    /// Unix time in seconds (EXPIREAT, EXAT).
    UnixSeconds,
    /// Unix time in milliseconds (PEXPIREAT, PXAT).
    UnixMillis,
}

/// The absolute expire-at (ms, may be in the past) for an expiry argument,
/// with Redis's overflow errors.
pub fn expire_at_ms(
    unit: TimeUnit,
    value: &[u8],
    now_ms: u64,
    command: &str,
) -> Result<i64, Reply> {
    let invalid = || Reply::error(format!("ERR invalid expire time in '{command}' command"));
    let n = int_arg(value)?;
    let ms = match unit {
        TimeUnit::Seconds | TimeUnit::UnixSeconds => n.checked_mul(1000).ok_or_else(invalid)?,
        TimeUnit::Millis | TimeUnit::UnixMillis => n,
    };
    match unit {
        TimeUnit::Seconds | TimeUnit::Millis => ms.checked_add(now_ms as i64).ok_or_else(invalid),
        TimeUnit::UnixSeconds | TimeUnit::UnixMillis => Ok(ms),
    }
}

pub async fn expire(ctx: &Ctx<'_>, args: &[Bytes], unit: TimeUnit, command: &str) -> Reply {
    // Redis checks the options before the time.
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in &args[3..] {
        match option.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                let mut text = b"ERR Unsupported option ".to_vec();
                text.extend_from_slice(super::c_str(option, usize::MAX));
                return super::error_from_bytes(text);
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Reply::error("ERR NX and XX, GT or LT options at the same time are not compatible");
    }
    if gt && lt {
        return Reply::error("ERR GT and LT options at the same time are not compatible");
    }
    let now = ctx.shared.coordinator.now_ms();
    let at = match expire_at_ms(unit, &args[2], now, command) {
        Ok(at) => at,
        Err(reply) => return reply,
    };
    let when = ExpireWhen { nx, xx, gt, lt };
    let op = WriteOp::known(Change::Expire {
        at: Some(at.max(0) as u64),
        when,
    });
    match write(ctx, vec![(args[1].clone(), op)], false).await {
        Ok(written) => Reply::Integer(i64::from(written.iter().any(|w| w.current.is_some()))),
        Err(reply) => reply,
    }
}

pub async fn persist(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let op = WriteOp::known(Change::Expire {
        at: None,
        when: ExpireWhen::default(),
    });
    match write(ctx, vec![(args[1].clone(), op)], false).await {
        Ok(written) => Reply::Integer(i64::from(written.iter().any(|w| w.current.is_some()))),
        Err(reply) => reply,
    }
}

/// What TTL-family commands report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlKind {
    /// TTL: seconds left, rounded.
    Seconds,
    /// PTTL: milliseconds left.
    Millis,
    /// EXPIRETIME: the Unix time in seconds.
    AtSeconds,
    /// PEXPIRETIME: the Unix time in milliseconds.
    AtMillis,
}

pub async fn ttl(ctx: &Ctx<'_>, args: &[Bytes], kind: TtlKind) -> Reply {
    let now = ctx.shared.coordinator.now_ms();
    let records = match read(ctx, &[args[1].clone()]).await {
        Ok(records) => records,
        Err(reply) => return reply,
    };
    let Some((_, expire_at)) = winner(records[0].as_ref(), now) else {
        return Reply::Integer(-2);
    };
    let Some(at) = expire_at else {
        return Reply::Integer(-1);
    };
    let left = at.saturating_sub(now) as i64;
    Reply::Integer(match kind {
        TtlKind::Seconds => (left + 500) / 1000,
        TtlKind::Millis => left,
        // Rounded, as Redis's ttlGenericCommand: (ms + 500) / 1000.
        TtlKind::AtSeconds => (at.saturating_add(500) / 1000) as i64,
        TtlKind::AtMillis => at as i64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        assert_eq!(decode_cursor(0, 4096), Some((0, 0)));
        assert_eq!(encode_cursor(4096, 0, 4096), 0);
        let cursor = encode_cursor(7, 20_000, 4096);
        assert_eq!(decode_cursor(cursor, 4096), Some((7, 20_000)));
    }
}
