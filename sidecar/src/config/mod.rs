//! What a sidecar is started with: [`SidecarConfig`], and the [`settings`] an operator
//! gives it (file, environment, flags).

pub(crate) mod settings;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use sidestream::transport::QuicTuning;
use sidestream_proto::DEFAULT_MAX_FRAME_SIZE;

use crate::cluster::ClusterConfig;
use crate::topics::{LogSettings, TopicDefaults};

/// The default client port (QUIC, UDP).
pub const DEFAULT_CLIENT_PORT: u16 = 7400;

/// The default admin port (HTTP, TCP) of `sidestream sidecar`.
pub const DEFAULT_ADMIN_PORT: u16 = 7480;

/// Where the sidecar's TLS certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Development certificates in `<data dir>/tls`, created on first start; `extra_names`
    /// are added to the sidecar's certificate beside `localhost` and `127.0.0.1`.
    Dev {
        /// More DNS names or IP addresses for the sidecar's certificate.
        extra_names: Vec<String>,
    },
    /// A real deployment's PEM files.
    Files {
        /// CA certificates that client certificates must chain to.
        ca: PathBuf,
        /// The sidecar's certificate chain.
        cert: PathBuf,
        /// The sidecar's private key.
        key: PathBuf,
    },
}

/// Everything a sidecar is started with.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// Where topics, group offsets and the development certificates live.
    pub data_dir: PathBuf,
    /// The client QUIC address (default `127.0.0.1:7400`; port 0 picks a free one).
    pub listen: SocketAddr,
    /// This node's id in the cluster.
    pub node_id: u64,
    /// The address clients are told to use (default: the bound address).
    pub advertised_address: Option<String>,
    /// Certificates.
    pub tls: TlsSource,
    /// How often the certificate files are looked at, to be taken again when they change.
    pub tls_check: Duration,
    /// Defaults for what `CreateTopic` leaves out.
    pub topic_defaults: TopicDefaults,
    /// Settings of every partition log.
    pub log: LogSettings,
    /// Longest a publish waits for its acknowledgement when the request names no timeout.
    pub publish_timeout: Duration,
    /// How long shutdown waits for requests in progress.
    pub shutdown_grace: Duration,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// Largest frame accepted from a client.
    pub max_frame_size: u32,
    /// QUIC transport settings.
    pub quic: QuicTuning,
    /// Cluster membership; `None` runs the sidecar alone.
    pub cluster: Option<ClusterConfig>,
    /// The admin HTTP address (`/healthz`, `/readyz`, `/metrics`); `None`: no admin port.
    pub admin_listen: Option<SocketAddr>,
}

impl SidecarConfig {
    /// The defaults, with data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_CLIENT_PORT)),
            node_id: 1,
            advertised_address: None,
            tls: TlsSource::Dev {
                extra_names: Vec::new(),
            },
            topic_defaults: TopicDefaults::default(),
            log: LogSettings::default(),
            publish_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            tls_check: Duration::from_secs(30),
            retention_interval: Duration::from_secs(60),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            quic: QuicTuning::default(),
            cluster: None,
            admin_listen: None,
        }
    }
}
