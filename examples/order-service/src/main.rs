//! `order-service`: the example's order API as a process. Connects to the sidecar on this
//! node (`SIDESTREAM_SIDECAR`, default `127.0.0.1:7400`, with the development certificates of
//! `SIDESTREAM_DATA_DIR`), creates the shop's topics if they are missing, serves HTTP on
//! `--listen` and stops on Ctrl-C or SIGTERM.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use order_service::OrderBook;
use sidestream::Client;
use sidestream::telemetry::Telemetry;
use tokio::net::TcpListener;

/// The order service of the Sidestream shop example.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The HTTP address to serve the API on.
    #[arg(long, env = "ORDER_SERVICE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Logs on stderr; spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    let telemetry = Telemetry::init(SERVICE, "info");
    let client = Client::connect_local(SERVICE)
        .await
        .context("cannot connect to the sidecar on this node (is `sidestream sidecar` running?)")?;
    sidestream_example_events::create_topics(&client)
        .await
        .context("cannot create the shop's topics")?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let result = order_service::run(client, listener, OrderBook::new(), shutdown_signal()).await;
    telemetry.shutdown().await;
    result
}

/// The name the service connects as: the `source` header of its events.
const SERVICE: &str = "order-service";

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the service");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
