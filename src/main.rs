//! The `dynokv` binary: parse the command line, load the config, start
//! tracing, run a node until SIGINT/SIGTERM.

use anyhow::Context;
use clap::{Parser, Subcommand};
use dynokv::config::{Config, Settings};
use dynokv::node::Node;
use std::path::PathBuf;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A Redis-protocol drop-in server whose data lives in a Dynamo-style cluster.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node (the default).
    Serve(Box<ServeArgs>),
    /// Run a local cluster of K node processes; Ctrl-C stops them all.
    Dev(DevArgs),
    /// Show the cluster as a node sees it (DYNAMO commands over RESP).
    Admin(AdminArgs),
}

#[derive(Debug, clap::Args)]
struct DevArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Client port of the first node; node i listens on port + i - 1.
    #[arg(long, default_value_t = 6379)]
    port: u16,
    /// Data directory; node i keeps its data in DIR/node-i.
    #[arg(long, default_value = "./data/dev")]
    data_dir: PathBuf,
    /// More flags for every node (e.g. --fsync always), after `--`.
    #[arg(last = true)]
    extra: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// Host of any node.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Its client port.
    #[arg(long, default_value_t = 6379)]
    port: u16,
    /// What to show, or the layout change to make: `leave` (the node at
    /// --host/--port hands its data over and exits), `remove MEMBER` (a
    /// dead member, by name or id), `weight MEMBER W`.
    #[arg(value_enum, default_value = "status")]
    what: AdminView,
    /// The member (and weight) for `remove` and `weight`.
    args: Vec<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AdminView {
    Status,
    Members,
    Ring,
    Hints,
    Aae,
    Leave,
    Remove,
    Weight,
}

#[derive(Debug, Default, clap::Args)]
struct ServeArgs {
    /// TOML file with settings (keys are the flag names with underscores).
    #[arg(long, env = "DYNOKV_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

/// mimalloc's option index of the purge delay (`mi_option_purge_delay` in
/// its mimalloc.h, which libmimalloc-sys does not name); a test pins it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Sets the allocator's purge delay to [`ALLOCATOR_PURGE_DELAY_MS`] unless
/// the environment sets it.
///
/// [`ALLOCATOR_PURGE_DELAY_MS`]: dynokv::limits::ALLOCATOR_PURGE_DELAY_MS
#[expect(
    unsafe_code,
    reason = "mimalloc's options are set through its C API; measured in limits.rs"
)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set stores an integer option that mimalloc
        // reads when it next purges; every value is valid and it may be
        // called at any time, from any thread.
        unsafe {
            libmimalloc_sys::mi_option_set(
                MI_OPTION_PURGE_DELAY,
                dynokv::limits::ALLOCATOR_PURGE_DELAY_MS,
            );
        }
    }
}

fn main() -> anyhow::Result<()> {
    tune_allocator();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => *args,
        None => ServeArgs::default(),
        Some(Command::Dev(args)) => return dev(args),
        Some(Command::Admin(args)) => return admin(&args),
    };
    let file = match &args.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    let config = Config::resolve(args.settings.or(file), args.config.clone())?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log_level)
                .context("invalid --log-level")?,
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let node = Node::start(config.clone()).await?;
    let addr = node.local_addr()?;
    let peer_addr = node.peer_addr()?;
    tracing::info!(%addr, peer = %peer_addr, data_dir = %config.data_dir.display(), fsync = config.fsync.as_str(), "dynokv ready");
    let stop = node.shutdown_handle();
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received; shutting down");
        stop.shutdown();
    });
    let result = node.run().await;
    signals.abort();
    result?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the node still stops on kill -9; log it.
        tracing::warn!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// `dynokv dev`: K `dynokv serve` processes on consecutive ports, the
/// first a seed for the others.
fn dev(args: DevArgs) -> anyhow::Result<()> {
    use std::process::{Command, Stdio};
    anyhow::ensure!(args.nodes >= 1, "--nodes must be at least 1");
    let last = u32::from(args.port) + u32::from(args.nodes) - 1;
    anyhow::ensure!(
        last + 10_000 <= 65_535,
        "ports up to {last} + 10000 do not fit"
    );
    let exe = std::env::current_exe().context("cannot find the dynokv executable")?;
    let seed = format!("127.0.0.1:{}", u32::from(args.port) + 10_000);
    // The nodes share this machine: each gets its share of the cores
    // rather than a worker per core (K nodes x C workers on C cores spend
    // their time switching between threads).
    let share = {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / usize::from(args.nodes)).max(1)
    };
    let threads_set = args.extra.iter().any(|a| a.starts_with("--worker-threads"));
    let mut children = Vec::new();
    for i in 0..args.nodes {
        let port = args.port + i;
        let dir = args.data_dir.join(format!("node-{}", i + 1));
        let mut command = Command::new(&exe);
        command
            .arg("serve")
            .args(["--port", &port.to_string()])
            .args(["--peer-port", &(port + 10_000).to_string()])
            .arg("--data-dir")
            .arg(&dir)
            .args(["--node-name", &format!("node-{}", i + 1)])
            .stdin(Stdio::null());
        if i > 0 {
            command.args(["--join", &seed]);
        }
        if !threads_set {
            command.args(["--worker-threads", &share.to_string()]);
        }
        command.args(&args.extra);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start node {}", i + 1))?;
        println!(
            "node-{} pid {} client 127.0.0.1:{port} peer 127.0.0.1:{} data {}",
            i + 1,
            child.id(),
            port + 10_000,
            dir.display()
        );
        children.push(child);
    }
    println!(
        "{} nodes running; redis-cli -p {} reaches the cluster. Ctrl-C stops them.",
        args.nodes, args.port
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Until Ctrl-C, or until a node exits on its own: a cluster missing a
    // node it was started with is not what the user asked for, so say
    // which one left and how, and stop the rest.
    let exited = runtime.block_on(async {
        let mut poll = tokio::time::interval(std::time::Duration::from_millis(DEV_POLL_MS));
        let signal = wait_for_signal();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                () = &mut signal => return None,
                _ = poll.tick() => {
                    for (i, child) in children.iter_mut().enumerate() {
                        match child.try_wait() {
                            Ok(Some(status)) => return Some((i, status.to_string())),
                            Ok(None) => {}
                            Err(e) => return Some((i, format!("cannot be waited for: {e}"))),
                        }
                    }
                }
            }
        }
    });
    if let Some((i, status)) = &exited {
        eprintln!(
            "dynokv dev: node-{} (pid {}) exited: {status}; stopping the other nodes",
            i + 1,
            children[*i].id()
        );
    }
    for child in &mut children {
        if matches!(child.try_wait(), Ok(None)) {
            // SIGTERM: each node drains its clients and flushes its store.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
    }
    for mut child in children {
        let _ = child.wait();
    }
    match exited {
        Some((i, status)) => anyhow::bail!("node-{} exited: {status}", i + 1),
        None => Ok(()),
    }
}

/// How often `dynokv dev` checks that its nodes are still running.
const DEV_POLL_MS: u64 = 200;

/// Sends one command to a node and reads its reply.
fn ask(
    addr: (&str, u16),
    words: &[&str],
) -> anyhow::Result<redis_protocol::resp2::types::OwnedFrame> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)
        .with_context(|| format!("cannot connect to {}:{}", addr.0, addr.1))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut request = format!("*{}\r\n", words.len());
    for word in words {
        request.push_str(&format!("${}\r\n{word}\r\n", word.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 64 * 1024];
        let n = stream.read(&mut chunk)?;
        anyhow::ensure!(n > 0, "the node closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        if let Some((frame, _)) = redis_protocol::resp2::decode::decode(&buf)? {
            return Ok(frame);
        }
    }
}

/// A progress bar of `done` out of `total`, `width` cells wide.
fn progress_bar(done: usize, total: usize, width: usize) -> String {
    let filled = (done * width).checked_div(total).unwrap_or(width);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// The fields of a RESP map sent as a flat array, by name.
type Row = std::collections::HashMap<String, String>;

/// Asks every member (listed by the node at --host/--port) for
/// `DYNAMO sub`, and hands each row of its answer to `row` with the
/// member's name; a member that does not answer is printed as such.
fn each_member(args: &AdminArgs, sub: &str, mut row: impl FnMut(&str, &Row)) -> anyhow::Result<()> {
    use redis_protocol::resp2::types::OwnedFrame;
    let members = ask((args.host.as_str(), args.port), &["DYNAMO", "MEMBERS"])?;
    let OwnedFrame::Array(members) = members else {
        return Ok(());
    };
    for member in &members {
        let m = frame_row(member);
        let name = m.get("name").cloned().unwrap_or_default();
        let client = m.get("client_addr").cloned().unwrap_or_default();
        let Some((host, port)) = client.rsplit_once(':') else {
            continue;
        };
        let answer = port
            .parse()
            .map_err(anyhow::Error::from)
            .and_then(|port: u16| ask((host, port), &["DYNAMO", sub]));
        let Ok(OwnedFrame::Array(rows)) = answer else {
            println!("{name:<16} (unreachable)");
            continue;
        };
        for r in &rows {
            row(&name, &frame_row(r));
        }
    }
    Ok(())
}

/// A RESP2 map (a flat array of names and values) as a [`Row`].
fn frame_row(frame: &redis_protocol::resp2::types::OwnedFrame) -> Row {
    frame_pairs(frame).into_iter().collect()
}

/// A RESP2 map (a flat array of names and values) as its pairs, in order.
fn frame_pairs(frame: &redis_protocol::resp2::types::OwnedFrame) -> Vec<(String, String)> {
    use redis_protocol::resp2::types::OwnedFrame;
    match frame {
        OwnedFrame::Array(items) => items
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (frame_text(&c[0]), frame_text(&c[1])))
            .collect(),
        _ => Vec::new(),
    }
}

/// A RESP2 string or integer as text.
fn frame_text(frame: &redis_protocol::resp2::types::OwnedFrame) -> String {
    use redis_protocol::resp2::types::OwnedFrame;
    match frame {
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => {
            String::from_utf8_lossy(b).into_owned()
        }
        OwnedFrame::Integer(i) => i.to_string(),
        other => format!("{other:?}"),
    }
}

/// `dynokv admin`: one DYNAMO command, printed for people.
fn admin(args: &AdminArgs) -> anyhow::Result<()> {
    let sub = match args.what {
        AdminView::Status => "STATUS",
        AdminView::Members => "MEMBERS",
        AdminView::Ring => "RING",
        AdminView::Hints => "HINTS",
        AdminView::Aae => "AAE",
        AdminView::Leave => "LEAVE",
        AdminView::Remove => "REMOVE",
        AdminView::Weight => "WEIGHT",
    };
    let mut words = vec!["DYNAMO", sub];
    words.extend(args.args.iter().map(String::as_str));
    let frame = ask((args.host.as_str(), args.port), &words)?;
    use redis_protocol::resp2::types::OwnedFrame;
    match (&frame, args.what) {
        (OwnedFrame::Error(e), _) => anyhow::bail!("{e}"),
        (_, AdminView::Status) => {
            for (k, v) in frame_pairs(&frame) {
                println!("{k:<32} {v}");
            }
            // Every member's handoff, as that member reports it.
            let members = ask((args.host.as_str(), args.port), &["DYNAMO", "MEMBERS"])?;
            let OwnedFrame::Array(members) = members else {
                return Ok(());
            };
            println!();
            println!(
                "{:<16} {:<8} {:<24} {:>11} {:>9} {:>9} {:>6} {:>5} {:>7}",
                "member",
                "state",
                "receiving",
                "partitions",
                "MiB/s",
                "ETA s",
                "out",
                "stuck",
                "dropped"
            );
            for member in &members {
                let m = frame_row(member);
                let get = |k: &str| m.get(k).cloned().unwrap_or_default();
                let client = get("client_addr");
                let Some((host, port)) = client.rsplit_once(':') else {
                    continue;
                };
                let status = port
                    .parse()
                    .map_err(anyhow::Error::from)
                    .and_then(|port: u16| ask((host, port), &["DYNAMO", "STATUS"]));
                let Ok(status) = status else {
                    println!("{:<16} {:<8} (unreachable)", get("name"), get("state"));
                    continue;
                };
                let h = frame_row(&status);
                let num = |k: &str| h.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                let (done, total) = (
                    num("handoff_partitions_done") as usize,
                    num("handoff_partitions_to_receive") as usize,
                );
                println!(
                    "{:<16} {:<8} {:<24} {:>11} {:>9.1} {:>9} {:>6} {:>5} {:>7}",
                    get("name"),
                    get("state"),
                    progress_bar(done, total, 22),
                    format!("{done}/{total}"),
                    num("handoff_rate_bytes_per_s") / f64::from(1 << 20),
                    h.get("handoff_eta_s").cloned().unwrap_or_default(),
                    num("handoff_streams_out") as usize,
                    num("handoff_stuck") as usize,
                    num("handoff_partitions_dropped") as usize,
                );
            }
        }
        // Every member's hints, as that member reports them: who keeps
        // how much for whom, and a progress bar while it replays.
        (_, AdminView::Hints) => {
            println!(
                "{:<16} {:<16} {:>9} {:>12} {:>8} {:>9} {:>8}  replay",
                "kept by", "for", "keys", "bytes", "age s", "replayed", "dropped"
            );
            each_member(args, "HINTS", |name, t| {
                let get = |k: &str| t.get(k).cloned().unwrap_or_default();
                let num = |k: &str| t.get(k).and_then(|v| v.parse::<usize>().ok());
                let keys = num("keys").unwrap_or(0);
                let replay = match num("replaying") {
                    Some(total) if total > 0 => {
                        let done = total.saturating_sub(keys);
                        format!("{} {done}/{total}", progress_bar(done, total, 22))
                    }
                    _ => String::new(),
                };
                println!(
                    "{:<16} {:<16} {:>9} {:>12} {:>8} {:>9} {:>8}  {replay}",
                    name,
                    get("name"),
                    keys,
                    get("bytes"),
                    get("oldest_age_s"),
                    get("replayed"),
                    get("dropped"),
                );
            })?;
        }
        // Every member's last exchanges, as that member reports them.
        (_, AdminView::Aae) => {
            println!(
                "{:<16} {:<16} {:>10} {:>11} {:>10} {:>14}  error",
                "member", "with", "age s", "partitions", "differing", "keys repaired"
            );
            each_member(args, "AAE", |name, p| {
                let get = |k: &str| p.get(k).cloned().unwrap_or_default();
                println!(
                    "{:<16} {:<16} {:>10} {:>11} {:>10} {:>14}  {}",
                    name,
                    get("name"),
                    get("last_age_s"),
                    get("partitions"),
                    get("differing"),
                    get("keys_repaired"),
                    get("error"),
                );
            })?;
        }
        (OwnedFrame::Array(members), AdminView::Members) => {
            println!(
                "{:<18} {:<16} {:<22} {:<22} {:>6} {:<8} {:<8} {:<7} {:>6} {:>9} {:>8} {:>8}",
                "id",
                "name",
                "client",
                "peer",
                "weight",
                "zone",
                "state",
                "status",
                "phi",
                "silent_ms",
                "primary",
                "replica"
            );
            for member in members {
                let m = frame_row(member);
                let get = |k: &str| m.get(k).cloned().unwrap_or_default();
                println!(
                    "{:<18} {:<16} {:<22} {:<22} {:>6} {:<8} {:<8} {:<7} {:>6} {:>9} {:>8} {:>8}",
                    get("id"),
                    get("name"),
                    get("client_addr"),
                    get("peer_addr"),
                    get("weight"),
                    get("zone"),
                    get("state"),
                    get("status"),
                    get("phi"),
                    get("silent_ms"),
                    get("partitions_primary"),
                    get("partitions_replica")
                );
            }
        }
        (OwnedFrame::Array(rows), AdminView::Ring) => {
            let mut per_member: std::collections::BTreeMap<String, (usize, usize)> =
                Default::default();
            for row in rows {
                if let OwnedFrame::Array(cells) = row {
                    for (i, cell) in cells.iter().skip(1).enumerate() {
                        let entry = per_member.entry(frame_text(cell)).or_default();
                        entry.1 += 1;
                        if i == 0 {
                            entry.0 += 1;
                        }
                    }
                }
            }
            println!("{} partitions", rows.len());
            println!("{:<24} {:>8} {:>8}", "member", "primary", "replica");
            for (name, (primary, replica)) in per_member {
                println!("{name:<24} {primary:>8} {replica:>8}");
            }
        }
        (other, _) => println!("{}", frame_text(other)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the option index is mimalloc's purge delay: before it is set
    // it reads mimalloc's default for that option (1000 ms, and no other
    // option has it), then the value set.
    #[test]
    #[expect(unsafe_code, reason = "reads a mimalloc option")]
    fn the_purge_delay_is_the_option_set() {
        assert!(
            std::env::var_os("MIMALLOC_PURGE_DELAY").is_none(),
            "run without MIMALLOC_PURGE_DELAY"
        );
        // SAFETY: mi_option_get reads an integer option; any index is valid.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(get(), 1000);
        tune_allocator();
        assert_eq!(get(), dynokv::limits::ALLOCATOR_PURGE_DELAY_MS);
    }
}
