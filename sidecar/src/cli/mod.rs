//! The `sidestream` subcommands: `sidecar` runs the daemon, the others administer and inspect
//! a running one through the SDK.
//!
//! Every command has `--help`. Errors go to stderr, name what was wrong, and exit non-zero
//! (2 for a wrong flag, 1 for everything else).

mod sidecar;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Sidestream: typed events between services, through the sidecar on each node.
#[derive(Debug, Parser)]
#[command(name = "sidestream", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sidecar daemon in the foreground until SIGTERM or Ctrl-C.
    Sidecar(sidecar::SidecarArgs),
}

/// Runs the `sidestream` command line and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&anyhow::anyhow!("cannot start the async runtime: {error}")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Sidecar(args) => sidecar::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    #[expect(
        clippy::print_stderr,
        reason = "the command line reports its errors on stderr"
    )]
    {
        eprintln!("error: {error:#}");
    }
    ExitCode::FAILURE
}

/// Logs to stderr at `info` (or what `RUST_LOG` says).
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
