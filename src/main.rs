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
    Serve(ServeArgs),
}

#[derive(Debug, Default, clap::Args)]
struct ServeArgs {
    /// TOML file with settings (keys are the flag names with underscores).
    #[arg(long, env = "DYNOKV_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => ServeArgs::default(),
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let node = Node::start(config.clone()).await?;
    let addr = node.local_addr()?;
    tracing::info!(%addr, data_dir = %config.data_dir.display(), fsync = config.fsync.as_str(), "dynokv ready");
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
