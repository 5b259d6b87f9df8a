//! `sidestream sidecar`: the daemon.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use sidestream_log::FsyncPolicy;

use crate::config::SidecarConfig;
use crate::config::settings::{self, CONFIG_ENV, Settings, flag};

/// Flags of `sidestream sidecar`. Each setting is a key of the configuration file and a
/// `SIDESTREAM_*` environment variable too (`docs/OPERATIONS.md`); a flag given wins over
/// both, the environment over the file, the file over the defaults.
#[derive(Debug, Args)]
pub(super) struct SidecarArgs {
    /// Configuration file (TOML) [default: none; `$SIDESTREAM_CONFIG`]
    #[arg(long, env = CONFIG_ENV)]
    config: Option<PathBuf>,
    /// Print the effective configuration (defaults, file, environment and flags merged) as
    /// TOML, and exit.
    #[arg(long)]
    print_config: bool,
    /// Data directory: topics, group offsets and the development certificates
    /// [key `data_dir`; default: `$XDG_DATA_HOME/sidestream` or `~/.local/share/sidestream`]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Client QUIC address [key `listen`; default: 127.0.0.1:7400]
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// This node's id in the cluster, 1 or more and unique in the cluster [key `node_id`;
    /// default: derived from --node-name, else 1]
    #[arg(long)]
    node_id: Option<u64>,
    /// This node's name (a Kubernetes node's name); the node id is derived from it [key
    /// `node_name`]
    #[arg(long)]
    node_name: Option<String>,
    /// Address clients are told to use [key `advertise`; default: the listen address]
    #[arg(long)]
    advertise: Option<String>,
    /// Admin HTTP address (TCP): /healthz, /readyz, /metrics; port 0 picks a free one [key
    /// `admin_listen`; default: 127.0.0.1:7480]
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Longest a publish waits for its acknowledgement when the request names no timeout, in
    /// milliseconds [key `publish_timeout_ms`; default: 30000]
    #[arg(long)]
    publish_timeout_ms: Option<u64>,
    /// How long shutdown waits for requests in progress, in milliseconds [key
    /// `shutdown_grace_ms`; default: 10000]
    #[arg(long)]
    shutdown_grace_ms: Option<u64>,
    /// Largest request frame accepted from a client, in bytes [key `max_frame_bytes`; default:
    /// 16842752]
    #[arg(long)]
    max_frame_bytes: Option<u32>,
    /// How long the QUIC endpoints spin on their sockets for an answer after sending, in
    /// microseconds, before they wait; 0 never spins [key `busy_poll_us`; default: 50]
    #[arg(long)]
    busy_poll_us: Option<u64>,
    /// CA certificate (PEM) that client certificates must chain to; with --tls-cert and
    /// --tls-key replaces the development certificates [key `tls.ca`]
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// The sidecar's certificate chain (PEM) [key `tls.cert`]
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The sidecar's private key (PEM) [key `tls.key`]
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// More DNS names or IP addresses for the development certificate; repeat for more [key
    /// `tls.names`]
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
    /// How often the certificate files are looked at, in milliseconds; changed files are
    /// taken again (as on SIGHUP) [key `tls.check_ms`; default: 30000]
    #[arg(long)]
    tls_check_ms: Option<u64>,
    /// Partitions of a topic created without a count [key `topics.default_partitions`;
    /// default: 1]
    #[arg(long)]
    default_partitions: Option<u32>,
    /// fsync policy of a topic created without one: always, `interval:<ms>` or never [key
    /// `topics.default_fsync`; default: always]
    #[arg(long)]
    default_fsync: Option<FsyncPolicy>,
    /// Retention by age of a topic created without one, in milliseconds, -1 for ever [key
    /// `topics.default_retention_ms`; default: 604800000, 7 days]
    #[arg(long, allow_negative_numbers = true)]
    default_retention_ms: Option<i64>,
    /// Retention by size of a topic created without one, in bytes per partition, -1 for
    /// ever [key `topics.default_retention_bytes`; default: -1]
    #[arg(long, allow_negative_numbers = true)]
    default_retention_bytes: Option<i64>,
    /// Size at which a partition's log rolls to a new segment, in bytes (retention deletes
    /// whole segments), 4 KiB to 3 GiB [key `topics.segment_bytes`; default: 1 GiB]
    #[arg(long)]
    segment_bytes: Option<u64>,
    /// Largest record batch a partition accepts, in bytes [key `topics.max_batch_bytes`;
    /// default: 8 MiB]
    #[arg(long)]
    max_batch_bytes: Option<u64>,
    /// How often retention runs, in milliseconds [key `topics.retention_check_ms`; default:
    /// 60000]
    #[arg(long)]
    retention_check_ms: Option<u64>,
    /// Peer QUIC address: with it the sidecar is a member of a cluster (the first one started
    /// without --seed forms it) [key `cluster.peer_listen`; default: alone, no peer port]
    #[arg(long)]
    peer_listen: Option<SocketAddr>,
    /// Peer address other sidecars are told to use [key `cluster.peer_advertise`; default:
    /// the peer listen address]
    #[arg(long)]
    peer_advertise: Option<String>,
    /// Peer address (`host:port`) of a member to join the cluster through; repeat for more
    /// [key `cluster.seeds`]
    #[arg(long = "seed")]
    seeds: Vec<String>,
    /// How many sidecars, started together with the same seeds and no data, form a new
    /// cluster when no seed knows one; more than half of them [key `cluster.bootstrap_expect`;
    /// default: 0, none]
    #[arg(long)]
    bootstrap_expect: Option<u32>,
}

impl SidecarArgs {
    /// The settings: the defaults, the file, the environment, then the flags given.
    fn settings(self) -> Result<Settings, settings::SettingsError> {
        for ignored in settings::ignored_env() {
            tracing::warn!(variable = %ignored, "not a setting of the sidecar: ignored");
        }
        let figment = settings::layers(self.config.as_deref())?;
        let figment = flag(figment, "data_dir", self.data_dir);
        let figment = flag(figment, "listen", self.listen);
        let figment = flag(figment, "node_id", self.node_id);
        let figment = flag(figment, "node_name", self.node_name);
        let figment = flag(figment, "advertise", self.advertise);
        let figment = flag(figment, "admin_listen", self.admin_listen);
        let figment = flag(figment, "publish_timeout_ms", self.publish_timeout_ms);
        let figment = flag(figment, "shutdown_grace_ms", self.shutdown_grace_ms);
        let figment = flag(figment, "max_frame_bytes", self.max_frame_bytes);
        let figment = flag(figment, "busy_poll_us", self.busy_poll_us);
        let figment = flag(figment, "tls.ca", self.tls_ca);
        let figment = flag(figment, "tls.cert", self.tls_cert);
        let figment = flag(figment, "tls.key", self.tls_key);
        let figment = flag(figment, "tls.names", non_empty(self.tls_names));
        let figment = flag(figment, "tls.check_ms", self.tls_check_ms);
        let topics = [
            (
                "topics.default_partitions",
                self.default_partitions.map(u64::from),
            ),
            ("topics.segment_bytes", self.segment_bytes),
            ("topics.max_batch_bytes", self.max_batch_bytes),
            ("topics.retention_check_ms", self.retention_check_ms),
        ];
        let figment = topics
            .into_iter()
            .fold(figment, |figment, (key, value)| flag(figment, key, value));
        let figment = flag(
            figment,
            "topics.default_fsync",
            self.default_fsync.map(|policy| policy.to_string()),
        );
        let figment = flag(
            figment,
            "topics.default_retention_ms",
            self.default_retention_ms,
        );
        let figment = flag(
            figment,
            "topics.default_retention_bytes",
            self.default_retention_bytes,
        );
        let figment = flag(figment, "cluster.peer_listen", self.peer_listen);
        let figment = flag(figment, "cluster.peer_advertise", self.peer_advertise);
        let figment = flag(figment, "cluster.seeds", non_empty(self.seeds));
        let figment = flag(figment, "cluster.bootstrap_expect", self.bootstrap_expect);
        Settings::extract(&figment)
    }
}

/// A repeated flag's values, if it was given at all.
fn non_empty(values: Vec<String>) -> Option<Vec<String>> {
    (!values.is_empty()).then_some(values)
}

pub(super) async fn run(args: SidecarArgs) -> anyhow::Result<()> {
    let print = args.print_config;
    let settings = args.settings()?;
    if print {
        #[expect(
            clippy::print_stdout,
            reason = "the configuration is the command's output"
        )]
        {
            print!("{}", settings.to_toml()?);
        }
        return Ok(());
    }
    let config: SidecarConfig = settings.into_config()?;
    // Watched from before the start: SIGHUP's default action would end the process while
    // its logs are recovered. One that comes meanwhile reloads once the sidecar runs.
    let mut hangups = HangUps::watch();
    let sidecar = crate::RunningSidecar::start(config).await?;
    // Watched before the ready lines: a script may stop the sidecar as soon as it reads them.
    let stop = shutdown_signal();
    tokio::pin!(stop);
    // Lines on stdout, for scripts and tests that start the sidecar on port 0: the admin
    // address, the peer address (cluster members only), then the client address, which says
    // it is ready.
    #[expect(
        clippy::print_stdout,
        reason = "the ready lines are the command's output"
    )]
    {
        if let Some(admin) = sidecar.admin_addr() {
            println!("sidestream sidecar admin port on {admin}");
        }
        if let Some(peer) = sidecar.peer_address() {
            println!("sidestream sidecar peer port on {peer}");
        }
        println!("sidestream sidecar listening on {}", sidecar.local_addr());
    }
    let refused = loop {
        tokio::select! {
            () = &mut stop => break None,
            reason = sidecar.refused() => break Some(reason),
            () = hangups.next() => {
                if let Err(error) = sidecar.reload_tls() {
                    tracing::error!(%error, "cannot reload the certificates; the sidecar keeps the ones it has");
                }
            }
        }
    };
    tracing::info!("shutting down");
    sidecar.shutdown().await?;
    match refused {
        None => Ok(()),
        Some(reason) => Err(anyhow::anyhow!(
            "the cluster will not take this node in: {reason}"
        )),
    }
}

/// SIGHUP, which makes a running sidecar read its certificates again.
struct HangUps {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl HangUps {
    /// Watches SIGHUP from now on (where the platform has it).
    fn watch() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signal = signal(SignalKind::hangup())
                .inspect_err(|error| {
                    tracing::warn!(%error, "cannot watch SIGHUP; certificates are reloaded only when their files change");
                })
                .ok();
            Self { signal }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// The next SIGHUP; never, where none can come.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal
            && signal.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await;
    }
}

/// Completes on SIGTERM or Ctrl-C (SIGINT). The signals are watched from this call on, not
/// from the first poll: one that comes between the two is not lost.
pub(super) fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let watched = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            match watched {
                (Ok(mut term), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(%error, "cannot watch SIGTERM and SIGINT; only Ctrl-C stops it");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
