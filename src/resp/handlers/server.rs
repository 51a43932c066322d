//! Server commands: COMMAND, CONFIG, INFO, TIME, MONITOR.

use super::{Ctx, syntax_error};
use crate::config::Settings;
use crate::coordinator::KeyCounts;
use crate::resp::glob::glob_match;
use crate::resp::handlers::connection::REDIS_VERSION;
use crate::resp::registry;
use crate::resp::reply::Reply;
use crate::resp::table::{BeginSearch, CommandMeta, FindKeys};
use bytes::Bytes;
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// A command, or a `container|subcommand`, as Redis's `lookupCommandBySds`
/// finds it for COMMAND INFO and COMMAND DOCS.
fn lookup_meta(name: &[u8]) -> Option<&'static CommandMeta> {
    match name.iter().position(|&b| b == b'|') {
        None => registry::lookup(name).map(|c| c.meta),
        Some(bar) => registry::lookup(&name[..bar])?
            .meta
            .subcommand(&name[bar + 1..]),
    }
}

pub fn command(args: &[Bytes]) -> Reply {
    let Some(sub) = args.get(1) else {
        return Reply::Array(
            registry::all()
                .iter()
                .map(|c| c.meta.info_reply())
                .collect(),
        );
    };
    match sub.to_ascii_lowercase().as_slice() {
        b"count" => Reply::Integer(registry::all().len() as i64),
        b"list" => {
            if args.len() > 2 {
                return syntax_error();
            }
            Reply::Array(
                registry::all()
                    .iter()
                    .map(|c| Reply::bulk(c.meta.name))
                    .collect(),
            )
        }
        b"info" => {
            if args.len() == 2 {
                return Reply::Array(
                    registry::all()
                        .iter()
                        .map(|c| c.meta.info_reply())
                        .collect(),
                );
            }
            Reply::Array(
                args[2..]
                    .iter()
                    .map(|name| match lookup_meta(name) {
                        Some(meta) => meta.info_reply(),
                        // Redis 7 answers an unknown name with a null bulk.
                        None => Reply::Nil,
                    })
                    .collect(),
            )
        }
        b"getkeys" => getkeys(&args[2..], false),
        b"getkeysandflags" => getkeys(&args[2..], true),
        b"docs" => {
            let commands: Vec<_> = if args.len() == 2 {
                registry::all().iter().map(|c| c.meta).collect()
            } else {
                args[2..].iter().filter_map(|n| lookup_meta(n)).collect()
            };
            Reply::Map(
                commands
                    .iter()
                    .map(|meta| (Reply::bulk(meta.name), meta.docs_reply()))
                    .collect(),
            )
        }
        _ => syntax_error(),
    }
}

/// COMMAND GETKEYS and GETKEYSANDFLAGS: the keys of the command's table
/// entry, found by its key specs as Redis's `getKeysFromCommandWithSpecs`
/// finds them, each with its spec's flags when `with_flags`.
fn getkeys(target: &[Bytes], with_flags: bool) -> Reply {
    let Some(found) = target.first().and_then(|name| registry::lookup(name)) else {
        return Reply::error("ERR Invalid command specified");
    };
    let meta = match (found.meta.subcommands.is_empty(), target.get(1)) {
        (false, Some(sub)) => found.meta.subcommand(sub).unwrap_or(found.meta),
        _ => found.meta,
    };
    if !registry::arity_ok(meta.arity, target.len()) {
        return Reply::error("ERR Invalid number of arguments specified for command");
    }
    let mut keys = spec_keys(meta, target.len());
    for (_, flags) in &mut keys {
        if flags.contains(&"variable_flags") {
            // SET's key flags depend on GET (Redis's setGetKeys), and SET
            // is the only command here whose spec says so.
            debug_assert_eq!(meta.name, "set");
            let get = target
                .iter()
                .skip(3)
                .any(|a| a.eq_ignore_ascii_case(b"get"));
            *flags = if get {
                &["RW", "access", "update"]
            } else {
                &["OW", "update"]
            };
        }
    }
    if keys.is_empty() {
        return Reply::error("ERR The command has no key arguments");
    }
    Reply::Array(
        keys.into_iter()
            .map(|(i, flags)| {
                let key = Reply::Bulk(target[i].clone());
                if with_flags {
                    let flags = flags.iter().map(|f| Reply::Simple(f)).collect();
                    Reply::Array(vec![key, Reply::Array(flags)])
                } else {
                    key
                }
            })
            .collect(),
    )
}

/// The argument positions of `meta`'s keys in a call of `argc` arguments,
/// with the flags of the key spec that found each. Only the spec shapes our
/// commands have (an index, then a range) are read.
fn spec_keys(meta: &CommandMeta, argc: usize) -> Vec<(usize, &'static [&'static str])> {
    let mut keys = Vec::new();
    let argc = argc as i64;
    for spec in meta.key_specs {
        let BeginSearch::Index(first) = spec.begin_search else {
            continue;
        };
        let FindKeys::Range {
            lastkey, keystep, ..
        } = spec.find_keys
        else {
            continue;
        };
        let last = if lastkey >= 0 {
            first + lastkey
        } else {
            argc + lastkey
        };
        let mut i = first;
        while i <= last.min(argc - 1) {
            keys.push((i as usize, spec.flags));
            i += keystep.max(1);
        }
    }
    keys
}

/// CONFIG GET's parameters: Redis's names, our values.
fn parameters(ctx: &Ctx<'_>) -> Vec<(&'static str, String)> {
    let c = ctx.shared.config();
    vec![
        ("bind", c.bind.clone()),
        ("port", ctx.shared.port.to_string()),
        ("peer-port", c.peer_port.to_string()),
        ("dir", c.data_dir.display().to_string()),
        ("appendonly", "yes".to_owned()),
        ("appendfsync", c.fsync.as_str().to_owned()),
        ("fsync", c.fsync.as_str().to_owned()),
        ("save", String::new()),
        ("databases", "1".to_owned()),
        ("maxmemory", "0".to_owned()),
        ("maxmemory-policy", "noeviction".to_owned()),
        ("maxclients", c.maxclients.to_string()),
        ("timeout", c.timeout_secs.to_string()),
        ("requirepass", c.requirepass.clone().unwrap_or_default()),
        ("proto-max-bulk-len", c.proto_max_bulk_len.to_string()),
        ("node-name", c.node_name.clone()),
        ("cluster-name", c.cluster_name.clone()),
        ("weight", c.weight.to_string()),
        ("zone", c.zone.clone().unwrap_or_default()),
        ("replicas", c.replicas.to_string()),
        ("read-quorum", c.read_quorum.to_string()),
        ("write-quorum", c.write_quorum.to_string()),
        ("partitions", c.partitions.to_string()),
        ("siblings-max", c.siblings_max.to_string()),
        ("read-repair", yes_no(c.read_repair)),
        ("sloppy-quorum", yes_no(c.sloppy_quorum)),
        ("hint-window", c.hint_window_secs.to_string()),
        ("hint-max-bytes", c.hint_max_bytes.to_string()),
        ("hint-rate", (c.hint_rate >> 10).to_string()),
        ("handoff-rate", (c.handoff_rate >> 20).to_string()),
        ("aae-interval", c.aae_interval_secs.to_string()),
        ("aae-rate", (c.aae_rate >> 10).to_string()),
    ]
}

/// A boolean parameter as Redis shows one.
fn yes_no(on: bool) -> String {
    if on { "yes" } else { "no" }.to_owned()
}

pub fn config(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    match args[1].to_ascii_lowercase().as_slice() {
        b"get" => {
            let all = parameters(ctx);
            let mut seen = Vec::new();
            for pattern in &args[2..] {
                // Redis answers a name without glob characters with the
                // name as the client spelled it (`CONFIG GET MAXCLIENTS`).
                let exact = !pattern.iter().any(|b| matches!(b, b'[' | b'*' | b'?'));
                for (name, value) in &all {
                    if !seen.iter().any(|(n, _, _)| n == name)
                        && glob_match(pattern, name.as_bytes(), true)
                    {
                        let shown = if exact {
                            pattern.clone()
                        } else {
                            Bytes::from_static(name.as_bytes())
                        };
                        seen.push((*name, shown, value.clone()));
                    }
                }
            }
            Reply::Map(
                seen.into_iter()
                    .map(|(_, n, v)| (Reply::Bulk(n), Reply::bulk(v)))
                    .collect(),
            )
        }
        b"resetstat" => {
            ctx.shared.stats.reset();
            Reply::OK
        }
        b"set" => config_set(ctx, &args[2..]),
        b"rewrite" => config_rewrite(ctx),
        _ => syntax_error(),
    }
}

/// The parameters CONFIG SET may change while the node runs.
const SETTABLE: &[&str] = &[
    "requirepass",
    "siblings-max",
    "proto-max-bulk-len",
    "timeout",
    "read-repair",
];

/// Redis's bound on `timeout` (an int config).
const TIMEOUT_SECS_MAX: u64 = i32::MAX as u64;

fn config_set(ctx: &Ctx<'_>, pairs: &[Bytes]) -> Reply {
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return crate::resp::registry::wrong_arity("config|set");
    }
    let known = parameters(ctx);
    let mut config = ctx.shared.config();
    for pair in pairs.chunks(2) {
        let name = String::from_utf8_lossy(&pair[0]).to_ascii_lowercase();
        let value = String::from_utf8_lossy(&pair[1]).into_owned();
        let failed = |why: &str| {
            Reply::error(format!(
                "ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"
            ))
        };
        if !known.iter().any(|(n, _)| *n == name) {
            return Reply::error(format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
            ));
        }
        if !SETTABLE.contains(&name.as_str()) {
            return failed("can't set immutable config");
        }
        let number = || value.parse::<usize>().ok().filter(|n| *n > 0);
        match name.as_str() {
            "requirepass" => config.requirepass = Some(value.clone()).filter(|p| !p.is_empty()),
            "timeout" => match value.parse::<i64>() {
                Ok(secs) => match u64::try_from(secs) {
                    Ok(secs) if secs <= TIMEOUT_SECS_MAX => config.timeout_secs = secs,
                    _ => return failed("argument must be between 0 and 2147483647 inclusive"),
                },
                Err(_) => return failed("argument couldn't be parsed into an integer"),
            },
            // Redis's boolean words; the flag's on|off too.
            "read-repair" => match value.to_ascii_lowercase().as_str() {
                "yes" | "on" => config.read_repair = true,
                "no" | "off" => config.read_repair = false,
                _ => return failed("argument must be 'yes' or 'no'"),
            },
            "siblings-max" => match number() {
                Some(n) => config.siblings_max = n,
                None => return failed("argument couldn't be parsed into an integer"),
            },
            _ => match number() {
                Some(n) => config.proto_max_bulk_len = n,
                None => return failed("argument couldn't be parsed into an integer"),
            },
        }
    }
    ctx.shared.coordinator.set_siblings_max(config.siblings_max);
    ctx.shared.coordinator.set_read_repair(config.read_repair);
    ctx.shared
        .idle_timeout_secs
        .send_replace(config.timeout_secs);
    *ctx.shared
        .config
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = config;
    Reply::OK
}

fn config_rewrite(ctx: &Ctx<'_>) -> Reply {
    let config = ctx.shared.config();
    let Some(path) = config.config_file.clone() else {
        return Reply::error("ERR The server is running without a config file");
    };
    let text = match toml::to_string(&Settings::from(&config)) {
        Ok(text) => text,
        Err(e) => return Reply::error(format!("ERR Rewriting config file: {e}")),
    };
    // Write then rename, so a crash never leaves a half-written file.
    let tmp = path.with_extension("toml.tmp");
    match std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path)) {
        Ok(()) => Reply::OK,
        Err(e) => Reply::error(format!("ERR Rewriting config file: {e}")),
    }
}

/// MONITOR, as Redis 7 answers it: `+OK`, then the connection gets a line
/// for every command run on this node (see [`crate::resp::monitor`]).
/// Refused while EXEC runs it; a second MONITOR gets no reply at all.
pub fn monitor(ctx: &mut Ctx<'_>) -> Reply {
    if ctx.session.in_exec {
        return Reply::error("ERR MONITOR isn't allowed for DENY BLOCKING client");
    }
    if ctx.session.monitor.is_some() {
        // Redis returns without a reply; empty raw bytes encode to nothing.
        return Reply::Raw(Bytes::new());
    }
    ctx.session.monitor = Some(ctx.shared.monitors.subscribe());
    ctx.session.info.update(|s| s.monitor = true);
    Reply::OK
}

pub fn time() -> Reply {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Reply::Array(vec![
        Reply::bulk(now.as_secs().to_string()),
        Reply::bulk(now.subsec_micros().to_string()),
    ])
}

/// Resident memory of this process in bytes (Linux; 0 elsewhere).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "K", "M", "G"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.2}{}", UNITS[unit])
    }
}

/// INFO's sections in Redis's order; `default` marks those INFO prints
/// without arguments (and for `default`), the rest need their name, `all`
/// or `everything`. `dynamo` is ours (the cluster view) and in the default.
const SECTIONS: &[(&str, bool)] = &[
    ("server", true),
    ("clients", true),
    ("memory", true),
    ("persistence", true),
    ("stats", true),
    ("replication", true),
    ("cpu", true),
    ("modules", true),
    ("commandstats", false),
    ("errorstats", true),
    ("latencystats", false),
    ("cluster", true),
    ("keyspace", true),
    ("dynamo", true),
];

/// The sections `INFO args...` prints, as Redis's `genInfoSectionDict`
/// picks them: names case-insensitively, `default`, `all` and
/// `everything` (the same here: there are no module sections), unknown
/// names ignored.
fn info_sections(args: &[Bytes]) -> Vec<&'static str> {
    let requested: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = requested
        .iter()
        .any(|s| matches!(s.as_str(), "all" | "everything"));
    let default = requested.is_empty() || requested.iter().any(|s| s == "default");
    SECTIONS
        .iter()
        .filter(|(name, in_default)| {
            all || (default && *in_default) || requested.iter().any(|s| s == name)
        })
        .map(|(name, _)| *name)
        .collect()
}

pub async fn info(ctx: &Ctx<'_>, args: &[Bytes]) -> Reply {
    let chosen = info_sections(&args[1..]);
    let wanted = |section: &str| chosen.contains(&section);
    let shared = ctx.shared;
    let config = shared.config();
    let stats = &shared.stats;
    let uptime = shared.started.elapsed().as_secs();
    let coordinator = &shared.coordinator;
    let mut out = String::new();
    let mut section = |name: &str, fields: Vec<(&str, String)>| {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let _ = write!(out, "# {name}\r\n");
        for (key, value) in fields {
            let _ = write!(out, "{key}:{value}\r\n");
        }
    };
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed).to_string();
    if wanted("server") {
        section(
            "Server",
            vec![
                ("redis_version", REDIS_VERSION.to_owned()),
                ("dynokv_version", env!("CARGO_PKG_VERSION").to_owned()),
                ("redis_mode", "standalone".to_owned()),
                ("os", std::env::consts::OS.to_owned()),
                ("arch_bits", (usize::BITS).to_string()),
                ("process_id", std::process::id().to_string()),
                ("run_id", shared.run_id.clone()),
                ("tcp_port", shared.port.to_string()),
                ("uptime_in_seconds", uptime.to_string()),
                ("uptime_in_days", (uptime / 86_400).to_string()),
                (
                    "executable",
                    std::env::current_exe()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                ),
                (
                    "config_file",
                    config
                        .config_file
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                ),
            ],
        );
    }
    if wanted("clients") {
        section(
            "Clients",
            vec![
                ("connected_clients", shared.client_count().to_string()),
                ("maxclients", config.maxclients.to_string()),
                ("blocked_clients", "0".to_owned()),
            ],
        );
    }
    if wanted("memory") {
        let rss = rss_bytes();
        section(
            "Memory",
            vec![
                ("used_memory", rss.to_string()),
                ("used_memory_human", human_bytes(rss)),
                ("used_memory_rss", rss.to_string()),
                ("maxmemory", "0".to_owned()),
                ("maxmemory_policy", "noeviction".to_owned()),
            ],
        );
    }
    if wanted("persistence") {
        // The store's write health as Redis shows its AOF's: the status,
        // and (ours) the last failure's reason and when it began, kept
        // after a recovery.
        let health = coordinator.store_health();
        let last = health.last_failure.as_ref();
        section(
            "Persistence",
            vec![
                ("loading", u8::from(shared.loading()).to_string()),
                ("rdb_changes_since_last_save", "0".to_owned()),
                ("rdb_bgsave_in_progress", "0".to_owned()),
                ("aof_enabled", "1".to_owned()),
                ("aof_rewrite_in_progress", "0".to_owned()),
                (
                    "aof_last_write_status",
                    if health.failing.is_some() {
                        "err"
                    } else {
                        "ok"
                    }
                    .to_owned(),
                ),
                (
                    "aof_last_write_error",
                    last.map(|f| f.reason.replace(['\r', '\n'], " "))
                        .unwrap_or_default(),
                ),
                (
                    "aof_last_write_error_time",
                    last.map_or(0, |f| f.since_ms / 1000).to_string(),
                ),
                ("fsync_policy", config.fsync.as_str().to_owned()),
            ],
        );
    }
    let counts = if wanted("stats") || wanted("keyspace") {
        coordinator.key_counts().await.unwrap_or_default()
    } else {
        KeyCounts::default()
    };
    if wanted("stats") {
        section(
            "Stats",
            vec![
                (
                    "total_connections_received",
                    load(&stats.connections_received),
                ),
                ("total_commands_processed", load(&stats.commands_processed)),
                ("instantaneous_ops_per_sec", stats.ops_per_sec().to_string()),
                ("total_net_input_bytes", load(&stats.net_input_bytes)),
                ("total_net_output_bytes", load(&stats.net_output_bytes)),
                ("rejected_connections", load(&stats.connections_rejected)),
                ("expired_keys", counts.expired.to_string()),
                ("evicted_keys", "0".to_owned()),
                ("keyspace_hits", load(&stats.keyspace_hits)),
                ("keyspace_misses", load(&stats.keyspace_misses)),
                ("total_error_replies", load(&stats.error_replies)),
            ],
        );
    }
    if wanted("replication") {
        section(
            "Replication",
            vec![
                ("role", "master".to_owned()),
                ("connected_slaves", "0".to_owned()),
            ],
        );
    }
    if wanted("cpu") {
        section("CPU", crate::resp::stats::cpu_fields());
    }
    if wanted("modules") {
        section("Modules", Vec::new());
    }
    // Sections whose field names are built at run time.
    let mut dynamic = |name: &str, fields: Vec<(String, String)>| {
        section(
            name,
            fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect(),
        );
    };
    if wanted("commandstats") {
        dynamic("Commandstats", stats.commandstats());
    }
    if wanted("errorstats") {
        dynamic("Errorstats", stats.errorstats());
    }
    if wanted("latencystats") {
        dynamic("Latencystats", stats.latencystats());
    }
    if wanted("cluster") {
        // Redis Cluster's field: 0, as Redis prints outside Redis Cluster.
        // dynokv's own cluster is in `# Dynamo`; it speaks no Cluster bus.
        dynamic("Cluster", vec![("cluster_enabled".into(), "0".into())]);
    }
    if wanted("keyspace") {
        let fields: Vec<(String, String)> = (0..)
            .zip(counts.dbs)
            .filter(|(_, db)| db.keys > 0)
            .map(|(at, db)| {
                let (keys, expires) = (db.keys, db.expires);
                (
                    format!("db{at}"),
                    format!("keys={keys},expires={expires},avg_ttl=0"),
                )
            })
            .collect();
        dynamic("Keyspace", fields);
    }
    if wanted("dynamo") {
        section(
            "Dynamo",
            crate::resp::stats::dynamo_fields(&coordinator.info()),
        );
    }
    Reply::Verbatim(out)
}
