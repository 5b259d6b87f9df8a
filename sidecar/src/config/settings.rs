//! The sidecar's settings as an operator gives them: a TOML file, `SIDESTREAM_*` environment
//! variables and command-line flags, each layer over the one before (figment merges them),
//! checked, then turned into a [`SidecarConfig`].
//!
//! Every key has a default, so the sidecar runs with no file at all. A key the sidecar does
//! not know, in the file or after `SIDESTREAM_` in the environment, is an error naming it and
//! the keys allowed there; a value of the wrong type or out of range is an error naming the
//! key, where it came from, and what is allowed. `docs/OPERATIONS.md` lists every key.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use sidestream_log::FsyncPolicy;
use sidestream_proto::DEFAULT_MAX_FRAME_SIZE;

use super::{DEFAULT_ADMIN_PORT, DEFAULT_CLIENT_PORT, SidecarConfig, TlsSource};
use crate::cluster::ClusterConfig;
use crate::topics::{LogSettings, MAX_PARTITIONS, TopicDefaults};

/// The prefix of the environment variables that set keys: `SIDESTREAM_NODE_ID` sets
/// `node_id`, `SIDESTREAM_TOPICS__SEGMENT_BYTES` sets `topics.segment_bytes` (a double
/// underscore between a section and its key).
pub(crate) const ENV_PREFIX: &str = "SIDESTREAM_";

/// The largest `max_frame_bytes`: a request passed on to another sidecar goes in a peer frame
/// of at most 256 MiB.
const MAX_FRAME_LIMIT: u64 = 256 << 20;

/// The environment variable naming the configuration file, when `--config` does not.
pub(crate) const CONFIG_ENV: &str = "SIDESTREAM_CONFIG";

/// Variables with the [`ENV_PREFIX`] that are not keys: read by other parts of Sidestream (the
/// SDK, the CLI's tools, the test harness), so the sidecar leaves them alone.
const NOT_KEYS: &[&str] = &[
    "config",
    "sidecar",
    "cli",
    "seed",
    "fault",
    "fault_rounds",
    "test_logs",
    "bench_read_mb",
];

/// The keys and sections at the top of the file. A `SIDESTREAM_*` variable that names none
/// of them is not the sidecar's (Kubernetes, for one, sets `<SERVICE>_PORT` and
/// `<SERVICE>_SERVICE_HOST` for a Service named `sidestream`): it is left out, with a
/// warning, rather than stopping the sidecar. Within a section, an unknown key is an error.
pub(crate) const TOP_KEYS: &[&str] = &[
    "data_dir",
    "node_id",
    "node_name",
    "listen",
    "advertise",
    "admin_listen",
    "publish_timeout_ms",
    "shutdown_grace_ms",
    "max_frame_bytes",
    "busy_poll_us",
    "tls",
    "topics",
    "cluster",
];

/// The keys of each section, for the hint about a variable that names one without its
/// section.
const SECTION_KEYS: [(&str, &[&str]); 3] = [
    ("tls", &["ca", "cert", "key", "names", "check_ms"]),
    (
        "topics",
        &[
            "default_partitions",
            "default_fsync",
            "default_retention_ms",
            "default_retention_bytes",
            "segment_bytes",
            "max_batch_bytes",
            "retention_check_ms",
        ],
    ),
    (
        "cluster",
        &["peer_listen", "peer_advertise", "seeds", "bootstrap_expect"],
    ),
];

/// Whether the environment variable key `key` (after the prefix, sections split by `.`)
/// starts with a key or section of the file.
fn is_setting(key: &str) -> bool {
    let top = key.split('.').next().unwrap_or_default();
    TOP_KEYS.iter().any(|known| known.eq_ignore_ascii_case(top))
}

/// The `SIDESTREAM_*` variables that are neither settings nor another part's, each with a
/// hint when its name is that of a key in a section (`SIDESTREAM_PEER_LISTEN` for
/// `SIDESTREAM_CLUSTER__PEER_LISTEN`).
pub(crate) fn ignored_env() -> Vec<String> {
    let mut ignored = Vec::new();
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        // As figment matches the prefix: whatever its case.
        let Some(key) = name
            .get(..ENV_PREFIX.len())
            .filter(|prefix| prefix.eq_ignore_ascii_case(ENV_PREFIX))
            .and_then(|_| name.get(ENV_PREFIX.len()..))
        else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        if key.is_empty() || NOT_KEYS.contains(&key.as_str()) || is_setting(&key.replace("__", "."))
        {
            continue;
        }
        let leaf = key.as_str();
        let hint = SECTION_KEYS.iter().find_map(|(section, keys)| {
            keys.contains(&leaf).then(|| {
                format!(
                    " (did you mean {ENV_PREFIX}{}__{}?)",
                    section.to_uppercase(),
                    leaf.to_uppercase()
                )
            })
        });
        ignored.push(format!("{name}{}", hint.unwrap_or_default()));
    }
    ignored.sort();
    ignored
}

/// Everything an operator can set, with its defaults. Each field is a key of the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Settings {
    /// Where topics, group offsets and the development certificates live (default: the
    /// user's data directory, `$XDG_DATA_HOME/sidestream` or `~/.local/share/sidestream`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data_dir: Option<PathBuf>,
    /// This node's id in the cluster: 1 or more, unique in the cluster (default: derived from
    /// `node_name`, else 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) node_id: Option<u64>,
    /// This node's name (a Kubernetes node's name): the node id is derived from it, for
    /// sidecars that are all given the same settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) node_name: Option<String>,
    /// The client QUIC address (UDP).
    pub(crate) listen: SocketAddr,
    /// The address clients are told to use (default: the bound address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) advertise: Option<String>,
    /// The admin HTTP address (TCP): `/healthz`, `/readyz`, `/metrics`.
    pub(crate) admin_listen: SocketAddr,
    /// Longest a publish waits for its acknowledgement when the request names no timeout, in
    /// milliseconds.
    pub(crate) publish_timeout_ms: u64,
    /// How long shutdown waits for requests in progress, in milliseconds.
    pub(crate) shutdown_grace_ms: u64,
    /// Largest request frame accepted from a client, in bytes.
    pub(crate) max_frame_bytes: u32,
    /// How long the QUIC endpoints spin on their sockets for an answer after sending, in
    /// microseconds; 0 never spins.
    pub(crate) busy_poll_us: u64,
    /// Certificates.
    pub(crate) tls: TlsSettings,
    /// Topics and their partition logs.
    pub(crate) topics: TopicSettings,
    /// Cluster membership.
    pub(crate) cluster: ClusterSettings,
}

/// The `[tls]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TlsSettings {
    /// CA certificates (PEM) that client and peer certificates must chain to; with `cert`
    /// and `key` it replaces the development certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ca: Option<PathBuf>,
    /// The sidecar's certificate chain (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cert: Option<PathBuf>,
    /// The sidecar's private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<PathBuf>,
    /// More DNS names or IP addresses for the development certificate.
    pub(crate) names: Vec<String>,
    /// How often the certificate files are looked at (and taken again when they changed), in
    /// milliseconds.
    pub(crate) check_ms: u64,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            ca: None,
            cert: None,
            key: None,
            names: Vec::new(),
            check_ms: millis(SidecarConfig::new("").tls_check),
        }
    }
}

/// The `[topics]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct TopicSettings {
    /// Partitions of a topic created without a count.
    pub(crate) default_partitions: u32,
    /// fsync policy of a topic created without one: `always`, `interval:<ms>` or `never`.
    #[serde(with = "crate::topics::fsync_text")]
    pub(crate) default_fsync: FsyncPolicy,
    /// Retention by age of a topic created without one, in milliseconds; -1 keeps segments
    /// forever.
    pub(crate) default_retention_ms: i64,
    /// Retention by size of a topic created without one, in bytes per partition; -1 keeps
    /// segments forever.
    pub(crate) default_retention_bytes: i64,
    /// Size at which a partition's log rolls to a new segment, in bytes (retention deletes
    /// whole segments).
    pub(crate) segment_bytes: u64,
    /// Largest record batch a partition accepts, in bytes.
    pub(crate) max_batch_bytes: u64,
    /// How often retention runs, in milliseconds.
    pub(crate) retention_check_ms: u64,
}

/// The `[cluster]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ClusterSettings {
    /// The peer QUIC address: with it the sidecar is a member of a cluster (the first one
    /// started without seeds forms it); without it the sidecar runs alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) peer_listen: Option<SocketAddr>,
    /// The peer address other sidecars are told to use (default: the peer listen address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) peer_advertise: Option<String>,
    /// Peer addresses (`host:port`) of members to join the cluster through; a DNS name
    /// stands for every address it resolves to.
    pub(crate) seeds: Vec<String>,
    /// How many sidecars, started together with these seeds and no data, form a new cluster
    /// when the seeds know none (0: none is formed this way; a sidecar without seeds forms
    /// one alone).
    pub(crate) bootstrap_expect: u32,
}

impl Default for Settings {
    fn default() -> Self {
        let defaults = SidecarConfig::new("");
        Self {
            data_dir: None,
            node_id: None,
            node_name: None,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_CLIENT_PORT)),
            advertise: None,
            admin_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_ADMIN_PORT)),
            publish_timeout_ms: millis(defaults.publish_timeout),
            shutdown_grace_ms: millis(defaults.shutdown_grace),
            max_frame_bytes: DEFAULT_MAX_FRAME_SIZE,
            busy_poll_us: micros(defaults.quic.busy_poll),
            tls: TlsSettings::default(),
            topics: TopicSettings::default(),
            cluster: ClusterSettings::default(),
        }
    }
}

impl Default for TopicSettings {
    fn default() -> Self {
        let topics = TopicDefaults::default();
        let log = LogSettings::default();
        Self {
            default_partitions: topics.partitions,
            default_fsync: topics.fsync,
            default_retention_ms: topics.retention_ms,
            default_retention_bytes: topics.retention_bytes,
            segment_bytes: log.segment_bytes,
            max_batch_bytes: log.max_batch_bytes as u64,
            retention_check_ms: millis(SidecarConfig::new("").retention_interval),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// The longest `busy_poll_us`: a spin holds a runtime thread, and an answer later than this
/// is not one a spin should wait for.
const MAX_BUSY_POLL_US: u64 = 1000;

/// Why the settings could not be read or are not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum SettingsError {
    /// The configuration file named does not exist.
    #[error("configuration file {0}: no such file")]
    NoFile(PathBuf),
    /// A layer could not be read, has a key the sidecar does not know, or a value of the
    /// wrong type (figment's message names the key and where it came from).
    #[error("configuration: {0}")]
    Layer(String),
    /// A value is out of its range, or keys that go together are not given together.
    #[error("configuration: {key} = {value} {problem}")]
    Invalid {
        /// The key, as in the file (`topics.segment_bytes`).
        key: &'static str,
        /// Its value.
        value: String,
        /// What is wrong, and what is allowed.
        problem: String,
    },
    /// No data directory was given and the user's data directory is not known.
    #[error(
        "configuration: no data_dir: set it in the file, with SIDESTREAM_DATA_DIR or --data-dir (XDG_DATA_HOME and HOME are unset)"
    )]
    NoDataDir,
}

/// The layers under the flags: the defaults, the file `file` if one is named, then the
/// environment.
///
/// # Errors
///
/// [`SettingsError::NoFile`] if `file` does not exist.
pub(crate) fn layers(file: Option<&Path>) -> Result<Figment, SettingsError> {
    let mut figment = Figment::new();
    if let Some(file) = file {
        if !file.is_file() {
            return Err(SettingsError::NoFile(file.to_path_buf()));
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    let env = Env::prefixed(ENV_PREFIX)
        .ignore(NOT_KEYS)
        .split("__")
        .filter(|key| is_setting(key.as_str()));
    Ok(figment.merge(env))
}

impl Settings {
    /// The settings `figment` holds, checked.
    ///
    /// # Errors
    ///
    /// [`SettingsError::Layer`] for an unknown key or a value of the wrong type,
    /// [`SettingsError::Invalid`] for a value out of range.
    pub(crate) fn extract(figment: &Figment) -> Result<Self, SettingsError> {
        let settings: Self = figment.extract().map_err(|e| {
            SettingsError::Layer(
                e.into_iter()
                    .map(|e| describe(&e))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        settings.check()?;
        Ok(settings)
    }

    /// Checks every range and every pair of keys that go together.
    fn check(&self) -> Result<(), SettingsError> {
        let topics = &self.topics;
        if let Some(node_id) = self.node_id {
            at_least("node_id", node_id, 1)?;
        }
        within(
            "topics.default_partitions",
            u64::from(topics.default_partitions),
            1,
            u64::from(MAX_PARTITIONS),
        )?;
        within("topics.segment_bytes", topics.segment_bytes, 4096, 3 << 30)?;
        // A fetch answer carries at least one whole batch, in a frame of at most
        // DEFAULT_MAX_FRAME_SIZE with its other fields.
        let batch_limit = u64::from(DEFAULT_MAX_FRAME_SIZE) - (64 << 10);
        within(
            "topics.max_batch_bytes",
            topics.max_batch_bytes,
            1024,
            batch_limit,
        )?;
        at_least("topics.retention_check_ms", topics.retention_check_ms, 100)?;
        at_least("tls.check_ms", self.tls.check_ms, 100)?;
        at_least("publish_timeout_ms", self.publish_timeout_ms, 1)?;
        within("busy_poll_us", self.busy_poll_us, 0, MAX_BUSY_POLL_US)?;
        // A frame carries a batch and the request's other fields.
        let frame_floor = topics.max_batch_bytes.saturating_add(64 << 10);
        within(
            "max_frame_bytes",
            u64::from(self.max_frame_bytes),
            frame_floor,
            MAX_FRAME_LIMIT,
        )
        .map_err(|e| match e {
            SettingsError::Invalid { key, value, .. } => SettingsError::Invalid {
                key,
                value,
                problem: format!(
                    "is out of range: {frame_floor} (topics.max_batch_bytes + 64 KiB) to {MAX_FRAME_LIMIT}"
                ),
            },
            other => other,
        })?;
        for (key, value) in [
            ("topics.default_retention_ms", topics.default_retention_ms),
            (
                "topics.default_retention_bytes",
                topics.default_retention_bytes,
            ),
        ] {
            if value < -1 || value == 0 {
                return Err(SettingsError::Invalid {
                    key,
                    value: value.to_string(),
                    problem: "is not allowed: expected -1 (keep forever) or 1 or more".into(),
                });
            }
        }
        self.check_together()
    }

    /// Checks the keys that go together: a node's id or name, the three certificate files,
    /// and the cluster's keys.
    fn check_together(&self) -> Result<(), SettingsError> {
        if let (Some(node_id), Some(name)) = (self.node_id, &self.node_name) {
            return Err(SettingsError::Invalid {
                key: "node_name",
                value: format!("{name:?}"),
                problem: format!(
                    "and node_id = {node_id} are both given: the node id is one or the other"
                ),
            });
        }
        if self
            .node_name
            .as_ref()
            .is_some_and(|name| name.trim().is_empty())
        {
            return Err(SettingsError::Invalid {
                key: "node_name",
                value: "\"\"".into(),
                problem: "is empty: name the node, or leave node_name out".into(),
            });
        }
        let tls = [&self.tls.ca, &self.tls.cert, &self.tls.key];
        let given = tls.iter().filter(|path| path.is_some()).count();
        if given != 0 && given != 3 {
            let (key, value) = [("tls.ca", &self.tls.ca), ("tls.cert", &self.tls.cert)]
                .into_iter()
                .chain([("tls.key", &self.tls.key)])
                .find_map(|(key, path)| path.as_ref().map(|p| (key, p.display().to_string())))
                .unwrap_or(("tls.ca", String::new()));
            return Err(SettingsError::Invalid {
                key,
                value: format!("{value:?}"),
                problem: "needs the other two of tls.ca, tls.cert and tls.key".into(),
            });
        }
        if self.cluster.peer_listen.is_none() {
            if let Some(advertise) = &self.cluster.peer_advertise {
                return Err(SettingsError::Invalid {
                    key: "cluster.peer_advertise",
                    value: format!("{advertise:?}"),
                    problem: "needs cluster.peer_listen (a sidecar alone has no peer port)".into(),
                });
            }
            if !self.cluster.seeds.is_empty() || self.cluster.bootstrap_expect > 0 {
                let (key, value) = if self.cluster.seeds.is_empty() {
                    (
                        "cluster.bootstrap_expect",
                        self.cluster.bootstrap_expect.to_string(),
                    )
                } else {
                    ("cluster.seeds", format!("{:?}", self.cluster.seeds))
                };
                return Err(SettingsError::Invalid {
                    key,
                    value,
                    problem: "needs cluster.peer_listen (a sidecar alone has no peer port)".into(),
                });
            }
        }
        if let Some((seed, problem)) = self
            .cluster
            .seeds
            .iter()
            .find_map(|seed| seed_problem(seed).map(|problem| (seed, problem)))
        {
            return Err(SettingsError::Invalid {
                key: "cluster.seeds",
                value: format!("{seed:?}"),
                problem: problem.into(),
            });
        }
        if self.cluster.bootstrap_expect > 0 && self.cluster.seeds.is_empty() {
            return Err(SettingsError::Invalid {
                key: "cluster.bootstrap_expect",
                value: self.cluster.bootstrap_expect.to_string(),
                problem: "needs cluster.seeds: the addresses of the sidecars that form the \
                          cluster together"
                    .into(),
            });
        }
        Ok(())
    }

    /// This node's id: the one given, else the one its name stands for, else 1.
    pub(crate) fn node_id(&self) -> u64 {
        match (self.node_id, &self.node_name) {
            (Some(id), _) => id,
            (None, Some(name)) => node_id_of_name(name),
            (None, None) => SidecarConfig::new("").node_id,
        }
    }

    /// The data directory: the one given, else the user's data directory.
    ///
    /// # Errors
    ///
    /// [`SettingsError::NoDataDir`] if none was given and the user's is not known.
    pub(crate) fn data_dir(&self) -> Result<PathBuf, SettingsError> {
        match &self.data_dir {
            // Empty, as an unset variable often is: the default, as the SDK and the CLI read it.
            Some(dir) if !dir.as_os_str().is_empty() => Ok(dir.clone()),
            _ => sidestream::transport::default_data_dir().ok_or(SettingsError::NoDataDir),
        }
    }

    /// What the sidecar starts with.
    ///
    /// # Errors
    ///
    /// [`SettingsError::NoDataDir`] as for [`data_dir`](Self::data_dir).
    pub(crate) fn into_config(self) -> Result<SidecarConfig, SettingsError> {
        let mut config = SidecarConfig::new(self.data_dir()?);
        config.listen = self.listen;
        config.node_id = self.node_id();
        config.advertised_address = self.advertise;
        config.admin_listen = Some(self.admin_listen);
        config.publish_timeout = Duration::from_millis(self.publish_timeout_ms);
        config.shutdown_grace = Duration::from_millis(self.shutdown_grace_ms);
        config.max_frame_size = self.max_frame_bytes;
        config.quic.busy_poll = Duration::from_micros(self.busy_poll_us);
        config.tls_check = Duration::from_millis(self.tls.check_ms);
        config.tls = match (self.tls.ca, self.tls.cert, self.tls.key) {
            (Some(ca), Some(cert), Some(key)) => TlsSource::Files { ca, cert, key },
            _ => TlsSource::Dev {
                extra_names: self.tls.names,
            },
        };
        let topics = self.topics;
        config.topic_defaults = TopicDefaults {
            partitions: topics.default_partitions,
            retention_ms: topics.default_retention_ms,
            retention_bytes: topics.default_retention_bytes,
            fsync: topics.default_fsync,
        };
        config.log = LogSettings {
            segment_bytes: topics.segment_bytes,
            max_batch_bytes: usize::try_from(topics.max_batch_bytes).unwrap_or(usize::MAX),
            sync_observer: None,
        };
        config.retention_interval = Duration::from_millis(topics.retention_check_ms);
        config.cluster = self.cluster.peer_listen.map(|peer_listen| ClusterConfig {
            peer_listen,
            peer_advertise: self.cluster.peer_advertise,
            seeds: self.cluster.seeds,
            bootstrap_expect: self.cluster.bootstrap_expect,
        });
        Ok(config)
    }

    /// The settings as a TOML file, the data directory resolved (for `--print-config`).
    ///
    /// # Errors
    ///
    /// [`SettingsError::NoDataDir`] as for [`data_dir`](Self::data_dir).
    pub(crate) fn to_toml(&self) -> Result<String, SettingsError> {
        let mut resolved = self.clone();
        resolved.data_dir = Some(self.data_dir()?);
        toml::to_string(&resolved).map_err(|e| SettingsError::Layer(e.to_string()))
    }
}

/// The node id that node name `name` stands for: the 64-bit FNV-1a hash of its UTF-8 bytes,
/// kept to its low 53 bits (a number JSON tools read exactly), 1 for a hash of 0. Stable
/// across versions and machines: a node keeps its id across restarts and upgrades as long as
/// its name stays. Two names of one cluster share an id with odds of about n²/2⁵⁴ for n
/// nodes.
pub(crate) fn node_id_of_name(name: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = name.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    });
    match hash & ((1 << 53) - 1) {
        0 => 1,
        id => id,
    }
}

/// What is wrong with seed `seed`, if anything: it must be `host:port`, a host name or an IP
/// address, an IPv6 address (and only one) in brackets.
fn seed_problem(seed: &str) -> Option<&'static str> {
    let Some((host, port)) = seed.rsplit_once(':') else {
        return Some("is not host:port");
    };
    if port.parse::<u16>().is_err() {
        return Some("has no port number (1 to 65535) after its last colon");
    }
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) if inner.parse::<std::net::Ipv6Addr>().is_ok() => None,
        Some(_) => Some("has brackets around something other than an IPv6 address"),
        None if host.is_empty() => Some("has no host before its port"),
        None if host.contains(['[', ']']) || host.contains(':') => {
            Some("is not host:port (an IPv6 address goes in brackets: [fd00::1]:7401)")
        }
        None => None,
    }
}

/// Adds flag `key` (dotted, as in the file) to `figment` if it was given.
pub(crate) fn flag<T: Serialize>(figment: Figment, key: &str, value: Option<T>) -> Figment {
    match value {
        Some(value) => figment.merge(Serialized::default(key, value)),
        None => figment,
    }
}

fn at_least(key: &'static str, value: u64, min: u64) -> Result<(), SettingsError> {
    within(key, value, min, u64::MAX)
}

fn within(key: &'static str, value: u64, min: u64, max: u64) -> Result<(), SettingsError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    let problem = if max == u64::MAX {
        format!("is out of range: {min} or more")
    } else {
        format!("is out of range: {min} to {max}")
    };
    Err(SettingsError::Invalid {
        key,
        value: value.to_string(),
        problem,
    })
}

/// One of figment's errors, with the key as the operator wrote it (a key of the file, an
/// environment variable's name) and where it came from.
fn describe(error: &figment::Error) -> String {
    let what = match &error.kind {
        figment::error::Kind::UnknownField(found, allowed) => format!(
            "unknown key `{found}`; the keys allowed there are {}",
            allowed.join(", ")
        ),
        kind => kind.to_string(),
    };
    let key = error.path.join(".");
    let from = error
        .metadata
        .as_ref()
        .map(|metadata| match &metadata.source {
            Some(figment::Source::File(path)) => format!("key {key} in {}", path.display()),
            _ if error.path.is_empty() => metadata.name.to_string(),
            Some(source) => format!("key {key} from {source}"),
            None if metadata.name.contains("environment") => format!(
                "environment variable {ENV_PREFIX}{}",
                error.path.join("__").to_uppercase()
            ),
            None => format!("key {key} from {}", metadata.name),
        });
    match from {
        Some(from) => format!("{from}: {what}"),
        None if key.is_empty() => what,
        None => format!("key {key}: {what}"),
    }
}

#[cfg(test)]
mod tests;
