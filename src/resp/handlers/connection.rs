//! Connection commands: PING, HELLO, AUTH, SELECT, RESET, CLIENT.

use super::{Ctx, int_arg, syntax_error};
use crate::resp::pause::PauseKind;
use crate::resp::reply::{Protocol, Reply};
use crate::resp::session::ClientInfo;
use bytes::Bytes;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

/// The Redis version we answer as: the reference for every reply byte.
pub const REDIS_VERSION: &str = "7.0.15";

pub fn ping(args: &[Bytes]) -> Reply {
    match args.len() {
        1 => Reply::Simple("PONG"),
        2 => Reply::Bulk(args[1].clone()),
        _ => crate::resp::registry::wrong_arity("ping"),
    }
}

/// Checks a password for `user` against `requirepass` the way Redis's
/// default user does: no password configured means `nopass`.
fn check_password(ctx: &Ctx<'_>, user: &[u8], password: &[u8]) -> bool {
    let required = ctx.shared.config().requirepass;
    user == b"default" && required.is_none_or(|p| p.as_bytes() == password)
}

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

pub fn auth(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let (user, password) = match args {
        [_, password] => {
            if ctx.shared.config().requirepass.is_none() {
                return Reply::error(
                    "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                );
            }
            (&b"default"[..], password)
        }
        [_, user, password] => (&user[..], password),
        _ => return syntax_error(),
    };
    if check_password(ctx, user, password) {
        ctx.session.authenticated = true;
        Reply::OK
    } else {
        Reply::error(WRONGPASS)
    }
}

fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

pub fn hello(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let mut protocol = None;
    let mut next = 1;
    if let Some(version) = args.get(1) {
        next = 2;
        match int_arg(version) {
            Ok(2) => protocol = Some(Protocol::Resp2),
            Ok(3) => protocol = Some(Protocol::Resp3),
            Ok(_) => return Reply::error("NOPROTO unsupported protocol version"),
            Err(_) => {
                return Reply::error("ERR Protocol version is not an integer or out of range");
            }
        }
    }
    let mut credentials = None;
    let mut name = None;
    let mut j = next;
    while j < args.len() {
        let more = args.len() - 1 - j;
        let option = &args[j];
        if option.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            credentials = Some((&args[j + 1], &args[j + 2]));
            j += 3;
        } else if option.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            if !valid_name(&args[j + 1]) {
                return Reply::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            name = Some(args[j + 1].clone());
            j += 2;
        } else {
            return Reply::error(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(option)
            ));
        }
    }
    if let Some((user, password)) = credentials {
        if !check_password(ctx, user, password) {
            return Reply::error(WRONGPASS);
        }
        ctx.session.authenticated = true;
    }
    if !ctx.session.authenticated {
        return Reply::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        );
    }
    if let Some(name) = name {
        ctx.session.info.update(|s| s.name = name);
    }
    if let Some(protocol) = protocol {
        ctx.session.protocol = protocol;
        ctx.session.info.update(|s| s.protocol = protocol);
    }
    let proto = match ctx.session.protocol {
        Protocol::Resp2 => 2,
        Protocol::Resp3 => 3,
    };
    Reply::Map(vec![
        (Reply::bulk("server"), Reply::bulk("redis")),
        (Reply::bulk("version"), Reply::bulk(REDIS_VERSION)),
        (Reply::bulk("proto"), Reply::Integer(proto)),
        (
            Reply::bulk("id"),
            Reply::Integer(ctx.session.info.id as i64),
        ),
        (Reply::bulk("mode"), Reply::bulk("standalone")),
        (Reply::bulk("role"), Reply::bulk("master")),
        (Reply::bulk("modules"), Reply::Array(Vec::new())),
    ])
}

/// SELECT: one of Redis's 16 logical databases (`crate::db`), in a
/// cluster as on one node.
pub fn select(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    match db_arg(&args[1]) {
        Ok(db) => {
            ctx.session.select(db);
            Reply::OK
        }
        Err(reply) => reply,
    }
}

/// A database index argument as Redis checks it (SELECT, MOVE, COPY DB,
/// SWAPDB): a C int first (`getIntFromObjectOrReply`), then in range.
pub fn db_arg(arg: &[u8]) -> Result<u8, Reply> {
    match int_arg(arg)? {
        n if i32::try_from(n).is_err() => Err(Reply::error(
            "ERR value is out of range, value must between -2147483648 and 2147483647",
        )),
        n => crate::db::index(n).ok_or_else(|| Reply::error("ERR DB index is out of range")),
    }
}

pub fn reset(ctx: &mut Ctx<'_>) -> Reply {
    let session = &mut *ctx.session;
    session.multi = None;
    session.multi_failed = false;
    session.unwatch();
    // Leaves MONITOR mode: the RESET itself is shown to the other monitors.
    session.monitor = None;
    session.protocol = Protocol::Resp2;
    session.authenticated = ctx.shared.config().requirepass.is_none();
    session.select(0);
    session.info.update(|s| {
        s.name = Bytes::new();
        s.protocol = Protocol::Resp2;
        s.multi = -1;
        s.monitor = false;
    });
    Reply::Simple("RESET")
}

fn clients(ctx: &Ctx<'_>) -> Vec<Arc<ClientInfo>> {
    ctx.shared
        .clients
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .cloned()
        .collect()
}

pub fn client(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Reply {
    let sub = args[1].to_ascii_lowercase();
    let info = &ctx.session.info;
    match sub.as_slice() {
        b"id" => Reply::Integer(info.id as i64),
        b"getname" => {
            let name = info.state().name;
            if name.is_empty() {
                Reply::Nil
            } else {
                Reply::Bulk(name)
            }
        }
        b"setname" => {
            if !valid_name(&args[2]) {
                return Reply::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            let name = args[2].clone();
            info.update(|s| s.name = name);
            Reply::OK
        }
        b"setinfo" => {
            let (option, value) = (&args[2], args[3].clone());
            let lib_name = option.eq_ignore_ascii_case(b"lib-name");
            if !lib_name && !option.eq_ignore_ascii_case(b"lib-ver") {
                return Reply::error(format!(
                    "ERR Unrecognized option '{}'",
                    String::from_utf8_lossy(option)
                ));
            }
            if !valid_name(&value) {
                // Redis 7.2 names the option as the client spelled it.
                return Reply::error(format!(
                    "ERR {} cannot contain spaces, newlines or special characters.",
                    String::from_utf8_lossy(option)
                ));
            }
            info.update(|s| {
                if lib_name {
                    s.lib_name = value;
                } else {
                    s.lib_ver = value;
                }
            });
            Reply::OK
        }
        b"info" => Reply::Verbatim(format!("{}\n", info.describe(Instant::now()))),
        b"list" => client_list(ctx, &args[2..]),
        b"kill" => client_kill(ctx, &args[2..]),
        b"tracking" => client_tracking(ctx, args),
        // Tracking is never on (TRACKING ON is refused), so Redis's reply
        // for a client that does not track.
        b"trackinginfo" => Reply::Map(vec![
            (Reply::bulk("flags"), Reply::Set(vec![Reply::bulk("off")])),
            (Reply::bulk("redirect"), Reply::Integer(-1)),
            (Reply::bulk("prefixes"), Reply::Array(Vec::new())),
        ]),
        b"getredir" => Reply::Integer(-1),
        b"pause" if args.len() <= 4 => client_pause(ctx, args),
        b"unpause" => {
            ctx.shared.pause.unpause();
            Reply::OK
        }
        b"unblock" if args.len() <= 4 => {
            if let Some(reason) = args.get(3)
                && !reason.eq_ignore_ascii_case(b"timeout")
                && !reason.eq_ignore_ascii_case(b"error")
            {
                return Reply::error("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR");
            }
            match int_arg(&args[2]) {
                // No command blocks here (no BLPOP, no WAIT), so no client
                // is ever blocked: Redis's answer for a client not blocked.
                Ok(_) => Reply::Integer(0),
                Err(e) => e,
            }
        }
        // Nothing is ever evicted (maxmemory is 0): the flag has nothing to
        // change, but Redis accepts it on any server.
        b"no-evict" if on_off(&args[2]).is_some() => Reply::OK,
        b"reply" => client_reply(ctx, &args[2]),
        b"pause" | b"unblock" => Reply::error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(&args[1])
        )),
        _ => syntax_error(),
    }
}

/// `on` or `off`, case-insensitively.
fn on_off(arg: &[u8]) -> Option<bool> {
    if arg.eq_ignore_ascii_case(b"on") {
        Some(true)
    } else if arg.eq_ignore_ascii_case(b"off") {
        Some(false)
    } else {
        None
    }
}

/// CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX p ...] [BCAST] [OPTIN]
/// [OPTOUT] [NOLOOP]: options checked as Redis checks them; OFF succeeds
/// (tracking is never on); ON is refused, as nothing would send the
/// invalidation messages a tracking client relies on.
fn client_tracking(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let mut redirect = false;
    let mut j = 3;
    while j < args.len() {
        let more = j + 1 < args.len();
        let option = args[j].to_ascii_lowercase();
        match option.as_slice() {
            b"redirect" if more => {
                j += 1;
                if redirect {
                    return Reply::error("ERR A client can only redirect to a single other client");
                }
                redirect = true;
                let id = match int_arg(&args[j]) {
                    Ok(id) => id,
                    Err(e) => return e,
                };
                let exists = u64::try_from(id).is_ok_and(|id| {
                    ctx.shared
                        .clients
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .contains_key(&id)
                });
                if !exists {
                    return Reply::error("ERR The client ID you want redirect to does not exist");
                }
            }
            b"prefix" if more => j += 1,
            b"bcast" | b"optin" | b"optout" | b"noloop" => {}
            _ => return syntax_error(),
        }
        j += 1;
    }
    match on_off(&args[2]) {
        Some(false) => Reply::OK,
        Some(true) => Reply::error(
            "ERR CLIENT TRACKING ON is not supported: this server sends no invalidation messages (client-side caching)",
        ),
        None => syntax_error(),
    }
}

/// CLIENT PAUSE timeout-ms [WRITE|ALL].
fn client_pause(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let kind = match args.get(3) {
        None => PauseKind::All,
        Some(mode) if mode.eq_ignore_ascii_case(b"write") => PauseKind::Write,
        Some(mode) if mode.eq_ignore_ascii_case(b"all") => PauseKind::All,
        Some(_) => return Reply::error("ERR CLIENT PAUSE mode must be WRITE or ALL"),
    };
    let millis = match int_arg(&args[2]) {
        Ok(ms) if ms < 0 => return Reply::error("ERR timeout is negative"),
        Ok(ms) => ms.unsigned_abs(),
        Err(_) => return Reply::error("ERR timeout is not an integer or out of range"),
    };
    let now = tokio::time::Instant::now();
    // Redis takes any i64; past what an Instant holds, pause "forever".
    let until = now
        .checked_add(Duration::from_millis(millis))
        .unwrap_or_else(|| now + Duration::from_secs(PAUSE_FOREVER_SECS));
    ctx.shared.pause.pause(kind, until);
    Reply::OK
}

/// A pause past what an `Instant` can hold: a hundred years.
const PAUSE_FOREVER_SECS: u64 = 100 * 365 * 86_400;

/// CLIENT REPLY ON|OFF|SKIP, with Redis's flags: OFF and SKIP send no reply
/// of their own; SKIP also drops the next command's.
fn client_reply(ctx: &mut Ctx<'_>, mode: &[u8]) -> Reply {
    let session = &mut *ctx.session;
    if mode.eq_ignore_ascii_case(b"on") {
        session.reply_off = false;
        session.reply_skip_this = false;
        session.reply_skip_next = false;
    } else if mode.eq_ignore_ascii_case(b"off") {
        session.reply_off = true;
    } else if mode.eq_ignore_ascii_case(b"skip") {
        session.reply_skip_this = true;
        session.reply_skip_next = !session.reply_off;
    } else {
        return syntax_error();
    }
    Reply::OK
}

fn client_list(ctx: &Ctx<'_>, filters: &[Bytes]) -> Reply {
    let mut wanted_ids: Option<Vec<u64>> = None;
    let mut i = 0;
    while i < filters.len() {
        let option = filters[i].to_ascii_lowercase();
        match option.as_slice() {
            b"type" if i + 1 < filters.len() => {
                let kind = filters[i + 1].to_ascii_lowercase();
                match kind.as_slice() {
                    b"normal" => {}
                    b"master" | b"replica" | b"slave" | b"pubsub" => {
                        wanted_ids = Some(Vec::new());
                    }
                    _ => {
                        return Reply::error(format!(
                            "ERR Unknown client type '{}'",
                            String::from_utf8_lossy(&filters[i + 1])
                        ));
                    }
                }
                i += 2;
            }
            b"id" if i + 1 < filters.len() => {
                let mut ids = Vec::new();
                for arg in &filters[i + 1..] {
                    match super::int_arg(arg) {
                        // Redis accepts any integer; ids below 1 match no one.
                        Ok(id) => ids.extend(u64::try_from(id).ok().filter(|&id| id > 0)),
                        Err(_) => return Reply::error("ERR Invalid client ID"),
                    }
                }
                wanted_ids = Some(ids);
                i = filters.len();
            }
            _ => return syntax_error(),
        }
    }
    let now = Instant::now();
    let text: String = clients(ctx)
        .iter()
        .filter(|c| wanted_ids.as_ref().is_none_or(|ids| ids.contains(&c.id)))
        .map(|c| format!("{}\n", c.describe(now)))
        .collect();
    Reply::Verbatim(text)
}

/// CLIENT KILL addr:port, or CLIENT KILL [ID id] [ADDR a] [LADDR a] [SKIPME yes|no].
fn client_kill(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let me = ctx.session.info.id;
    let all = clients(ctx);
    if let [addr] = args {
        let addr = String::from_utf8_lossy(addr);
        return match all.iter().find(|c| c.addr.to_string() == addr) {
            Some(client) => {
                client.kill();
                Reply::OK
            }
            None => Reply::error("ERR No such client"),
        };
    }
    if args.is_empty() || !args.len().is_multiple_of(2) {
        return syntax_error();
    }
    let (mut id, mut addr, mut laddr, mut skip_me) = (None, None, None, true);
    for pair in args.chunks(2) {
        let value = String::from_utf8_lossy(&pair[1]).into_owned();
        match pair[0].to_ascii_lowercase().as_slice() {
            b"id" => match super::int_arg(&pair[1]) {
                Ok(n) if n > 0 => id = Some(n as u64),
                _ => return Reply::error("ERR client-id should be greater than 0"),
            },
            b"addr" => addr = Some(value),
            b"laddr" => laddr = Some(value),
            b"skipme" => match value.to_ascii_lowercase().as_str() {
                "yes" => skip_me = true,
                "no" => skip_me = false,
                _ => return syntax_error(),
            },
            _ => return syntax_error(),
        }
    }
    let mut killed = 0;
    for client in &all {
        let matches = id.is_none_or(|id| client.id == id)
            && addr.as_ref().is_none_or(|a| client.addr.to_string() == *a)
            && laddr
                .as_ref()
                .is_none_or(|a| client.laddr.to_string() == *a)
            && !(skip_me && client.id == me);
        if matches {
            client.kill();
            killed += 1;
        }
    }
    Reply::Integer(killed)
}
