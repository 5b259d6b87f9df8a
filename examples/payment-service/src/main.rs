//! `payment-service`: the example's payment service as a process. Connects to the sidecar on
//! this node (`SIDESTREAM_SIDECAR`, default `127.0.0.1:7400`, with the development
//! certificates of `SIDESTREAM_DATA_DIR`), creates the shop's topics if they are missing and
//! handles orders until Ctrl-C or SIGTERM.

use anyhow::Context as _;
use clap::Parser;
use payment_service::{DEFAULT_LIMIT_CENTS, PaymentPolicy};
use sidestream::Client;
use sidestream::telemetry::Telemetry;

/// The payment service of the Sidestream shop example.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The largest amount charged, in cents; larger orders are declined.
    #[arg(long, env = "PAYMENT_LIMIT_CENTS", default_value_t = DEFAULT_LIMIT_CENTS)]
    limit_cents: u64,
    /// A customer whose orders are declined (repeat the flag, or separate with commas).
    #[arg(
        long = "block",
        env = "PAYMENT_BLOCKED_CUSTOMERS",
        value_delimiter = ','
    )]
    blocked: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Logs on stderr; spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    let telemetry = Telemetry::init(SERVICE, "info");
    let policy = args
        .blocked
        .iter()
        .filter(|customer| !customer.trim().is_empty())
        .fold(PaymentPolicy::new(args.limit_cents), |policy, customer| {
            policy.block(customer)
        });
    let client = Client::connect_local(SERVICE)
        .await
        .context("cannot connect to the sidecar on this node (is `sidestream sidecar` running?)")?;
    sidestream_example_events::create_topics(&client)
        .await
        .context("cannot create the shop's topics")?;
    let result = payment_service::run(client, policy, shutdown_signal()).await;
    telemetry.shutdown().await;
    result
}

/// The name the service connects as: the `source` header of its events.
const SERVICE: &str = "payment-service";

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
