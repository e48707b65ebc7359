//! The `dialtone` binary: parse the command line, load config, run a node
//! until SIGTERM/SIGINT, drain, exit 0. Bad config exits 2 with one line.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use dialtone::{Config, Node};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "dialtone", version, about = "Soft real-time chat service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node with every role (gateway, auth, messaging) on the embedded store.
    Serve {
        /// TOML config file; `DIALTONE_*` environment variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn init_logs(cfg: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if cfg.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Serve { config } = cli.command;
    let cfg = match Config::load(config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dialtone: bad config: {e}");
            return ExitCode::from(2);
        }
    };
    init_logs(&cfg);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dialtone: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let node = match Node::start_watching(cfg, config).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("dialtone: {e}");
                return ExitCode::FAILURE;
            }
        };
        tracing::info!("listening on {}", node.addr());
        tokio::select! {
            () = shutdown_signal() => {}
            failed = node.failed() => {
                let why = failed.err().map_or_else(|| "supervision tree stopped".to_owned(), |e| e.to_string());
                tracing::error!(%why, "supervision tree gave up");
                eprintln!("dialtone: supervision tree gave up: {why}");
                return ExitCode::FAILURE;
            }
        }
        tracing::info!("signal received: draining");
        node.drain().await;
        tracing::info!("drained; exiting");
        ExitCode::SUCCESS
    });
    // Everything was stopped in order above; do not wait on stray blocking threads.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}
