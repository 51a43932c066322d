//! The Dynamo face: VGET, VSET, VDEL (docs/semantics.md) and DYNAMO.

use super::{Ctx, check_keys, coordinator_error, int_arg, syntax_error};
use crate::coordinator::{LayoutCommand, ReadOptions, WriteOptions};
use crate::membership::detector::Health;
use crate::membership::layout::MemberState;
use crate::model::ops::{Base, Change, Condition, Expiry, WriteOp};
use crate::resp::reply::Reply;
use crate::version::{decode_context, encode_context};
use bytes::Bytes;

/// Parses trailing `<token> n` quorum options, each of `tokens` at most
/// once, in any order (R for reads; W and PW for writes); returns them
/// in the order of `tokens`.
fn quorum_options<const K: usize>(
    rest: &[Bytes],
    tokens: [&str; K],
) -> Result<[Option<usize>; K], Reply> {
    let mut found = [None; K];
    for pair in rest.chunks(2) {
        let [name, n] = pair else {
            return Err(syntax_error());
        };
        let Some(at) = tokens
            .iter()
            .position(|t| name.eq_ignore_ascii_case(t.as_bytes()))
        else {
            return Err(syntax_error());
        };
        if found[at].is_some() {
            return Err(syntax_error());
        }
        found[at] = match int_arg(n)? {
            n if n >= 1 => Some(n as usize),
            _ => {
                return Err(Reply::error(format!(
                    "ERR {} must be a positive integer",
                    tokens[at]
                )));
            }
        };
    }
    Ok(found)
}

pub async fn vget(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let [r] = match quorum_options(&args[2..], ["R"]) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    if let Err(reply) = check_keys(&args[1..2]) {
        return reply;
    }
    let coordinator = &ctx.shared.coordinator;
    let now = coordinator.now_ms();
    match super::read(ctx, vec![args[1].clone()], ReadOptions { r }).await {
        Ok(mut records) => {
            let record = records.pop().flatten().unwrap_or_default();
            let values = record
                .siblings()
                .iter()
                .filter_map(|(_, s)| s.live_value(now).cloned())
                .map(Reply::Bulk)
                .collect();
            Reply::Array(vec![
                Reply::bulk(encode_context(record.context())),
                Reply::Array(values),
            ])
        }
        Err(e) => coordinator_error(&e),
    }
}

/// VSET key context value [W n] [PW m] and VDEL key context [W n] [PW m]:
/// a write that supersedes exactly the client's context; replies with the
/// new context. PW: acknowledgements of real replicas (not fallbacks'
/// hints) the write needs (docs/semantics.md).
async fn write_with_context(
    ctx: &Ctx<'_>,
    args: &[Bytes],
    change: Change,
    rest: &[Bytes],
) -> Reply {
    let [w, pw] = match quorum_options(rest, ["W", "PW"]) {
        Ok(acks) => acks,
        Err(reply) => return reply,
    };
    if let Err(reply) = check_keys(&args[1..2]) {
        return reply;
    }
    let context = match decode_context(&args[2]) {
        Ok(context) => context,
        Err(e) => return Reply::error(format!("ERR invalid causal context: {e}")),
    };
    let op = WriteOp {
        base: Base::Context(context),
        condition: Condition::Always,
        change,
    };
    match super::write(
        ctx,
        vec![(args[1].clone(), op)],
        WriteOptions {
            w,
            pw,
            ..WriteOptions::default()
        },
    )
    .await
    {
        Ok(mut written) => match written.pop().and_then(|w| w.current) {
            Some(record) => Reply::bulk(encode_context(record.context())),
            None => Reply::error("ERR write returned no outcome"),
        },
        Err(e) => coordinator_error(&e),
    }
}

pub async fn vset(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let change = Change::Put {
        value: args[3].clone(),
        expiry: Expiry::Never,
    };
    write_with_context(ctx, args, change, &args[4..]).await
}

pub async fn vdel(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    write_with_context(ctx, args, Change::Delete, &args[3..]).await
}

pub async fn dynamo(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let coordinator = &ctx.shared.coordinator;
    let pairs = |fields: Vec<(&str, String)>| {
        Reply::Map(
            fields
                .into_iter()
                .map(|(k, v)| (Reply::bulk(k), Reply::bulk(v)))
                .collect(),
        )
    };
    match args[1].to_ascii_lowercase().as_slice() {
        b"status" => {
            let mut fields: Vec<(String, String)> =
                crate::resp::stats::dynamo_fields(&coordinator.info())
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect();
            // One line per background worker: `worker:expiry-reaper` =>
            // `running,steps=12,failures=0` (docs/architecture.md, "Background work").
            fields.extend(
                (ctx.shared.workers.lines().into_iter())
                    .map(|(name, line)| (format!("worker:{name}"), line)),
            );
            Reply::Map(
                fields
                    .into_iter()
                    .map(|(k, v)| (Reply::bulk(k), Reply::bulk(v)))
                    .collect(),
            )
        }
        b"members" => Reply::Array(
            coordinator
                .members()
                .into_iter()
                .map(|m| {
                    // `down`: no link, or marked down by the failure
                    // detector; `suspect`: routed to, being probed.
                    let status = match m.health.map(|h| h.health) {
                        _ if !m.up => "down",
                        Some(Health::Suspect) => "suspect",
                        _ => "up",
                    };
                    let health = m.health.as_ref();
                    pairs(vec![
                        ("id", format!("{:016x}", m.info.id)),
                        ("name", m.info.name),
                        ("client_addr", m.info.client_addr),
                        ("peer_addr", m.info.peer_addr),
                        ("weight", m.info.weight.to_string()),
                        ("zone", m.info.zone.unwrap_or_default()),
                        ("status", status.to_owned()),
                        ("state", state_name(m.state).to_owned()),
                        ("incarnation", m.incarnation.to_string()),
                        (
                            "phi",
                            health.map_or(String::new(), |h| format!("{:.2}", h.phi)),
                        ),
                        (
                            "silent_ms",
                            health.map_or(String::new(), |h| h.silent_ms.to_string()),
                        ),
                        (
                            "last_detection_ms",
                            health
                                .and_then(|h| h.last_detection_ms)
                                .map_or(String::new(), |ms| ms.to_string()),
                        ),
                        ("partitions_primary", m.primary.to_string()),
                        ("partitions_replica", m.replica.to_string()),
                    ])
                })
                .collect(),
        ),
        b"ring" => Reply::Array(
            coordinator
                .ring()
                .into_iter()
                .enumerate()
                .map(|(partition, replicas)| {
                    let mut row = vec![Reply::Integer(partition as i64)];
                    row.extend(replicas.into_iter().map(Reply::bulk));
                    Reply::Array(row)
                })
                .collect(),
        ),
        // One map per target replica with hints here (held now, or
        // counted since start).
        b"hints" => Reply::Array(
            coordinator
                .info()
                .cluster
                .hints
                .targets
                .into_iter()
                .map(|t| {
                    pairs(vec![
                        ("id", format!("{:016x}", t.id)),
                        ("name", t.name),
                        ("keys", t.keys.to_string()),
                        ("bytes", t.bytes.to_string()),
                        (
                            "oldest_age_s",
                            t.oldest_age_ms.map_or(0, |ms| ms / 1000).to_string(),
                        ),
                        ("replayed", t.replayed.to_string()),
                        ("dropped", t.dropped.to_string()),
                        // While replaying: the hints there were when it began.
                        ("replaying", t.replaying.unwrap_or(0).to_string()),
                    ])
                })
                .collect(),
        ),
        // One map per peer this node exchanges with (it asks those of a
        // larger id): its last exchange.
        b"aae" => Reply::Array(
            coordinator
                .info()
                .cluster
                .aae
                .peers
                .into_iter()
                .map(|p| {
                    pairs(vec![
                        ("id", format!("{:016x}", p.id)),
                        ("name", p.name),
                        (
                            "last_age_s",
                            p.last_age_ms
                                .map_or(-1, |ms| (ms / 1000) as i64)
                                .to_string(),
                        ),
                        ("partitions", p.partitions.to_string()),
                        ("differing", p.differing.to_string()),
                        ("keys_repaired", p.keys_repaired.to_string()),
                        ("error", p.error.unwrap_or_default()),
                    ])
                })
                .collect(),
        ),
        b"leave" | b"remove" | b"weight" => {
            let command = match layout_command(args) {
                Ok(command) => command,
                Err(reply) => return reply,
            };
            match coordinator.change_layout(command).await {
                Ok(()) => Reply::OK,
                Err(e) => coordinator_error(&e),
            }
        }
        sub => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try DYNAMO HELP.",
            String::from_utf8_lossy(sub)
        )),
    }
}

/// A member's layout state as `DYNAMO MEMBERS` names it.
fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Joining => "joining",
        MemberState::Member => "member",
        MemberState::Leaving => "leaving",
        MemberState::Removed => "removed",
    }
}

/// `DYNAMO LEAVE`, `DYNAMO REMOVE member`, `DYNAMO WEIGHT member w` (the
/// registry checked each one's arity).
fn layout_command(args: &[Bytes]) -> Result<LayoutCommand, Reply> {
    let text = |arg: &Bytes| String::from_utf8_lossy(arg).into_owned();
    match (args[1].to_ascii_lowercase().as_slice(), &args[2..]) {
        (b"leave", []) => Ok(LayoutCommand::Leave),
        (b"remove", [member]) => Ok(LayoutCommand::Remove(text(member))),
        (b"weight", [member, weight]) => {
            match std::str::from_utf8(weight)
                .ok()
                .and_then(|w| w.parse::<f64>().ok())
            {
                Some(w) if w.is_finite() && w > 0.0 => Ok(LayoutCommand::Weight(text(member), w)),
                _ => Err(Reply::error("ERR weight is not a positive number")),
            }
        }
        _ => Err(syntax_error()),
    }
}
