//! The `sidestream` subcommands: `sidecar` runs the daemon, the others administer and inspect
//! a running one through the SDK.
//!
//! Every command has `--help`. Errors go to stderr, name what was wrong, and exit non-zero
//! (2 for a wrong flag or setting, 1 for everything else).

mod bench;
mod cluster;
mod connect;
mod consume;
mod demo;
mod produce;
mod sidecar;
mod topic;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sidestream::telemetry::Telemetry;

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
    Sidecar(Box<sidecar::SidecarArgs>),
    /// Create, list, describe and delete topics.
    Topic(topic::TopicArgs),
    /// Publish one event per line of standard input.
    Produce(produce::ProduceArgs),
    /// Print a topic's events as they arrive.
    Consume(consume::ConsumeArgs),
    /// Measure throughput and latency through the SDK.
    Bench(bench::BenchArgs),
    /// Run the shop example end to end: a local sidecar, the order and payment services.
    Demo(demo::DemoArgs),
    Cluster(cluster::ClusterArgs),
}

/// Runs the `sidestream` command line and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs what it does; the tools and the demo print results, and log only
    // warnings unless RUST_LOG says otherwise. Spans are exported as OTEL_* variables say.
    let (service, level) = match cli.command {
        Command::Sidecar(_) => ("sidestream-sidecar", "info"),
        Command::Demo(_) => ("sidestream-demo", "warn"),
        _ => ("sidestream", "warn"),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&anyhow::anyhow!("cannot start the async runtime: {error}")),
    };
    let result = runtime.block_on(async {
        let telemetry = Telemetry::init(service, level);
        let result = match cli.command {
            Command::Sidecar(args) => sidecar::run(*args).await,
            Command::Topic(args) => topic::run(args).await,
            Command::Produce(args) => produce::run(args).await,
            Command::Consume(args) => consume::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Cluster(args) => cluster::run(args).await,
        };
        telemetry.shutdown().await;
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A setting from the file, the environment or a flag, as clap's own for a flag.
        Err(error) if error.is::<crate::config::settings::SettingsError>() => {
            fail(&error);
            ExitCode::from(2)
        }
        Err(error) => fail(&error),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    #[expect(
        clippy::print_stderr,
        reason = "the command line reports its errors on stderr"
    )]
    {
        eprintln!("error: {}", error_chain(error));
    }
    ExitCode::FAILURE
}

/// `error` and its causes joined by `": "`, each cause left out when the message before it
/// already ends with it (an error whose message names its source as well as returning it).
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut last = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if !last.is_empty() && (last == message || last.ends_with(&format!(": {message}"))) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
        last = message;
    }
    text
}

/// Writes command output to stdout; a closed stdout (a pipe whose reader left) is not an
/// error worth a panic.
fn out(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("peer port: {0}")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot bind 127.0.0.1:7")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let error = anyhow::Error::new(Outer(Inner(io))).context("starting");
        assert_eq!(
            error_chain(&error),
            "starting: peer port: cannot bind 127.0.0.1:7: address in use"
        );
    }
}
