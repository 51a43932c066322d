//! Connection commands: PING, HELLO, AUTH, SELECT, RESET, CLIENT.

use super::{Ctx, int_arg, syntax_error};
use crate::resp::conn::ClientInfo;
use crate::resp::reply::{Protocol, Reply};
use bytes::Bytes;
use std::sync::{Arc, PoisonError};
use std::time::Instant;

/// The Redis version we answer as: the reference for every reply byte.
pub const REDIS_VERSION: &str = "7.0.15";

pub fn ping(args: &[Bytes]) -> Reply {
    match args.len() {
        1 => Reply::Simple("PONG"),
        2 => Reply::Bulk(args[1].clone()),
        _ => super::super::command::wrong_arity("ping"),
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

pub fn select(args: &[Bytes]) -> Reply {
    match int_arg(&args[1]) {
        Ok(0) => Reply::OK,
        Ok(_) => Reply::error("ERR DB index is out of range"),
        Err(e) => e,
    }
}

pub fn reset(ctx: &mut Ctx<'_>) -> Reply {
    let session = &mut *ctx.session;
    session.multi = None;
    session.multi_failed = false;
    session.unwatch();
    session.protocol = Protocol::Resp2;
    session.authenticated = ctx.shared.config().requirepass.is_none();
    session.info.update(|s| {
        s.name = Bytes::new();
        s.protocol = Protocol::Resp2;
        s.multi = -1;
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
        _ => syntax_error(),
    }
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
