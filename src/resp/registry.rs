//! Which commands this node runs: each implemented command's name, its
//! handler's tag ([`Cmd`]) and its metadata from the one command table
//! ([`super::table`]), so what COMMAND reports is what dispatch enforces;
//! and the errors for a command that is not one of them.

use super::reply::{Reply, c_str, error_from_bytes};
use super::table::{self, CommandMeta};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::LazyLock;

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

/// FNV-1a over a command name. The map is ours, built once and never
/// grown by clients, so SipHash's guard against chosen keys buys nothing,
/// and every command (each of a pipeline) is looked up.
struct NameHasher(u64);

impl Default for NameHasher {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

type Names = std::hash::BuildHasherDefault<NameHasher>;

static DISPATCH: LazyLock<HashMap<&'static [u8], Command, Names>> = LazyLock::new(|| {
    IMPLEMENTED
        .iter()
        .filter_map(|&(name, cmd)| {
            let meta = table::lookup(name.as_bytes());
            debug_assert!(meta.is_some(), "command {name} has no metadata");
            Some((name.as_bytes(), Command { cmd, meta: meta? }))
        })
        .collect()
});

/// Looks up a command by name, case-insensitively.
pub fn lookup(name: &[u8]) -> Option<Command> {
    // Every command is looked up, pipelined ones before they join a
    // batch: lowercase on the stack, not in an allocation.
    let mut buffer = [0; 32];
    let lower = buffer.get_mut(..name.len())?;
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    DISPATCH.get(&*lower).copied()
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
        quoted.extend_from_slice(c_str(arg, room));
        quoted.extend_from_slice(b"' ");
    }
    let mut text = b"ERR unknown command '".to_vec();
    text.extend_from_slice(c_str(&args[0], 128));
    text.extend_from_slice(b"', with args beginning with: ");
    text.extend_from_slice(&quoted);
    error_from_bytes(text)
}

/// Redis's arity error for the command (or subcommand) `full_name`.
pub fn wrong_arity(full_name: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{full_name}' command"
    ))
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
