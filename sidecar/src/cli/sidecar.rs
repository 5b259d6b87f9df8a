//! `sidestream sidecar`: the daemon.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use sidestream::transport::default_data_dir;
use sidestream_log::FsyncPolicy;

use crate::cluster::ClusterConfig;
use crate::config::{SidecarConfig, TlsSource};

/// Flags of `sidestream sidecar`.
#[derive(Debug, Args)]
pub(super) struct SidecarArgs {
    /// Data directory: topics, group offsets and the development certificates
    /// [default: `$XDG_DATA_HOME/sidestream` or `~/.local/share/sidestream`]
    #[arg(long, env = "SIDESTREAM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Client QUIC address.
    #[arg(long, env = "SIDESTREAM_LISTEN", default_value = "127.0.0.1:7400")]
    listen: SocketAddr,
    /// This node's id in the cluster (1 or more, unique in the cluster).
    #[arg(long, env = "SIDESTREAM_NODE_ID", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    node_id: u64,
    /// Address clients are told to use [default: the listen address].
    #[arg(long, env = "SIDESTREAM_ADVERTISE")]
    advertise: Option<String>,
    /// CA certificate (PEM) that client certificates must chain to; with --tls-cert and
    /// --tls-key replaces the development certificates.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// The sidecar's certificate chain (PEM).
    #[arg(long, requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// The sidecar's private key (PEM).
    #[arg(long, requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// More DNS names or IP addresses for the development certificate.
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
    /// Partitions of a topic created without a count.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::MAX_PARTITIONS)))]
    default_partitions: u32,
    /// fsync policy of a topic created without one: always, `interval:<ms>` or never.
    #[arg(long, default_value = "always")]
    default_fsync: FsyncPolicy,
    /// Size at which a partition's log rolls to a new segment, in bytes (retention deletes
    /// whole segments), 4 KiB to 3 GiB [default: 1 GiB]
    #[arg(long, value_parser = clap::value_parser!(u64).range(4096..=(3 << 30)))]
    segment_bytes: Option<u64>,
    /// How often retention runs, in milliseconds.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(100..))]
    retention_check_ms: u64,
    /// Peer QUIC address: with it the sidecar is a member of a cluster (the first one started
    /// without --seed forms it) [default: alone, no peer port]
    #[arg(long, env = "SIDESTREAM_PEER_LISTEN")]
    peer_listen: Option<SocketAddr>,
    /// Peer address other sidecars are told to use [default: the peer listen address].
    #[arg(long, env = "SIDESTREAM_PEER_ADVERTISE", requires = "peer_listen")]
    peer_advertise: Option<String>,
    /// Peer address (`host:port`) of a member to join the cluster through; repeat for more.
    #[arg(long = "seed", requires = "peer_listen")]
    seeds: Vec<String>,
}

impl SidecarArgs {
    pub(super) fn into_config(self) -> anyhow::Result<SidecarConfig> {
        let data_dir = match self.data_dir {
            Some(dir) => dir,
            None => default_data_dir().context(
                "no data directory: set --data-dir, SIDESTREAM_DATA_DIR, XDG_DATA_HOME or HOME",
            )?,
        };
        let mut config = SidecarConfig::new(data_dir);
        config.listen = self.listen;
        config.node_id = self.node_id;
        config.advertised_address = self.advertise;
        config.tls = match (self.tls_ca, self.tls_cert, self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => TlsSource::Files { ca, cert, key },
            _ => TlsSource::Dev {
                extra_names: self.tls_names,
            },
        };
        config.topic_defaults.partitions = self.default_partitions;
        config.topic_defaults.fsync = self.default_fsync;
        if let Some(segment_bytes) = self.segment_bytes {
            config.log.segment_bytes = segment_bytes;
        }
        config.retention_interval = std::time::Duration::from_millis(self.retention_check_ms);
        config.cluster = self.peer_listen.map(|peer_listen| ClusterConfig {
            peer_listen,
            peer_advertise: self.peer_advertise,
            seeds: self.seeds,
        });
        Ok(config)
    }
}

pub(super) async fn run(args: SidecarArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let sidecar = crate::RunningSidecar::start(config).await?;
    // Lines on stdout, for scripts and tests that start the sidecar on port 0: the peer
    // address first (cluster members only), then the client address, which says it is ready.
    #[expect(
        clippy::print_stdout,
        reason = "the ready lines are the command's output"
    )]
    {
        if let Some(peer) = sidecar.peer_address() {
            println!("sidestream sidecar peer port on {peer}");
        }
        println!("sidestream sidecar listening on {}", sidecar.local_addr());
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    sidecar.shutdown().await?;
    Ok(())
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub(super) async fn shutdown_signal() {
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
                tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the sidecar");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
