//! [`ClientBuilder`]: where the sidecar is, how to authenticate, and the publishing and
//! committing knobs, with their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::link::{Link, LinkConfig};
use super::{Client, ClientInner};
use crate::publish::{BatchConfig, Producer};
use crate::transport::{ClientTls, QuicTuning, default_tls_dir};
use crate::{Acks, Error};

/// Builds a [`Client`]; made by [`Client::builder`].
///
/// | setting | default |
/// | --- | --- |
/// | [`sidecar`](Self::sidecar) | `$SIDESTREAM_SIDECAR`, else `127.0.0.1:7400` |
/// | [`tls`](Self::tls) / [`tls_dir`](Self::tls_dir) | the dev certificates in [`default_tls_dir`] |
/// | [`server_name`](Self::server_name) | `localhost` (the dev certificate's name) |
/// | [`connect_timeout`](Self::connect_timeout) | 10 s |
/// | [`request_timeout`](Self::request_timeout) | 30 s, retries included |
/// | [`answer_timeout`](Self::answer_timeout) | 10 s per attempt |
/// | [`acks`](Self::acks) | [`Acks::All`] |
/// | [`linger`](Self::linger) | 0: a batch goes as soon as its partition has nothing in flight |
/// | [`batch_bytes`](Self::batch_bytes) | 1 MiB (at most 8 MiB) |
/// | [`max_in_flight_per_partition`](Self::max_in_flight_per_partition) | 8 batches |
/// | [`max_in_flight_bytes`](Self::max_in_flight_bytes) | 64 MiB buffered or in flight |
/// | [`commit_interval`](Self::commit_interval) | 100 ms |
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect` is awaited"]
pub struct ClientBuilder {
    service: String,
    sidecar: Option<String>,
    tls: Option<ClientTls>,
    tls_dir: Option<PathBuf>,
    server_name: String,
    tuning: QuicTuning,
    connect_timeout: Duration,
    request_timeout: Duration,
    answer_timeout: Duration,
    acks: Acks,
    linger: Duration,
    batch_bytes: usize,
    max_in_flight_per_partition: usize,
    max_in_flight_bytes: usize,
    commit_interval: Duration,
}

/// The most batches of one partition in flight at once.
const MAX_IN_FLIGHT_PER_PARTITION: usize = 8;

impl ClientBuilder {
    pub(crate) fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            sidecar: None,
            tls: None,
            tls_dir: None,
            server_name: DEFAULT_SERVER_NAME.to_owned(),
            tuning: QuicTuning::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            answer_timeout: Duration::from_secs(10),
            acks: Acks::All,
            linger: Duration::ZERO,
            batch_bytes: 1 << 20,
            max_in_flight_per_partition: 8,
            max_in_flight_bytes: 64 << 20,
            commit_interval: Duration::from_millis(100),
        }
    }

    /// The sidecar's address, `host:port` (an IP address or a name to resolve).
    pub fn sidecar(mut self, addr: impl Into<String>) -> Self {
        self.sidecar = Some(addr.into());
        self
    }

    /// The TLS identity and trusted CA to use, instead of the dev certificates.
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Reads the TLS files (`ca.pem`, `client.pem`, `client.key`) from this folder instead of
    /// [`default_tls_dir`].
    pub fn tls_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.tls_dir = Some(dir.into());
        self
    }

    /// The name the sidecar's certificate must carry.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = name.into();
        self
    }

    /// QUIC transport settings (windows, buffers, loopback MTU, busy polling); the sidecar
    /// should use the same.
    pub fn quic_tuning(mut self, tuning: QuicTuning) -> Self {
        self.tuning = tuning;
        self
    }

    /// How long one connection attempt (the QUIC and TLS handshake) may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a request may take, retries and reconnects included; for a publish, counted
    /// from when its batch is sealed.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long the sidecar is given to answer one attempt of a request (a publish tells the
    /// sidecar, which answers `TIMEOUT` when it cannot make it). A request without any answer
    /// a fifth of this time later means the connection is dead (a sidecar killed mid-request
    /// closes nothing): it is replaced by a new one and the request retried, within the
    /// request timeout.
    pub fn answer_timeout(mut self, timeout: Duration) -> Self {
        self.answer_timeout = timeout;
        self
    }

    /// The acknowledgement [`Client::publish`] waits for.
    pub fn acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self
    }

    /// How long a batch waits for more events before it is sent. Zero (the default) sends a
    /// partition's batch as soon as nothing of that partition is in flight.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// The size at which a batch is sent (bytes, batch header included); at most 8 MiB, the
    /// sidecar's default limit. An event larger than this goes alone in a batch of its own.
    pub fn batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes;
        self
    }

    /// Batches of one partition in flight at once (1 to 8: a sidecar remembers a producer's
    /// last 8 batches to answer their retries; past that, a retry could not be told apart from
    /// an old batch).
    pub fn max_in_flight_per_partition(mut self, batches: usize) -> Self {
        self.max_in_flight_per_partition = batches.clamp(1, MAX_IN_FLIGHT_PER_PARTITION);
        self
    }

    /// Bytes of events buffered or in flight at once, over all partitions; a publish waits
    /// for room.
    pub fn max_in_flight_bytes(mut self, bytes: usize) -> Self {
        self.max_in_flight_bytes = bytes;
        self
    }

    /// How often subscriptions in a group commit the offsets of acknowledged deliveries.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    /// Connects to the sidecar.
    ///
    /// # Errors
    ///
    /// [`Error::TlsDirUnknown`] or [`Error::Tls`] if the TLS files cannot be found or read,
    /// [`Error::ResolveSidecar`] for an address that does not resolve, [`Error::Bind`] and
    /// [`Error::Connect`] if the QUIC connection cannot be established.
    pub async fn connect(self) -> Result<Client, Error> {
        let addr = self.resolve().await?;
        let tls = match (self.tls, self.tls_dir) {
            (Some(tls), _) => tls,
            (None, Some(dir)) => ClientTls::from_dir(&dir)?,
            (None, None) => ClientTls::from_dir(&default_tls_dir().ok_or(Error::TlsDirUnknown)?)?,
        };
        let mut tuning = self.tuning;
        tuning.handshake_timeout = self.connect_timeout;
        let link = Arc::new(
            Link::connect(LinkConfig {
                addr,
                server_name: self.server_name,
                tls,
                tuning,
                client_id: self.service,
                answer_timeout: self.answer_timeout.max(Duration::from_millis(1)),
                retry_backoff: RETRY_BACKOFF,
                max_retry_backoff: MAX_RETRY_BACKOFF,
            })
            .await?,
        );
        let batch_bytes = self.batch_bytes.clamp(MIN_BATCH_BYTES, MAX_BATCH_BYTES);
        let producer = Arc::new(Producer::new(
            Arc::clone(&link),
            BatchConfig {
                batch_bytes,
                linger: self.linger,
                max_in_flight: self.max_in_flight_per_partition.max(1),
                request_timeout: self.request_timeout,
                retry_backoff: RETRY_BACKOFF,
                max_retry_backoff: MAX_RETRY_BACKOFF,
            },
            self.acks,
            self.max_in_flight_bytes,
            MAX_BATCH_BYTES,
        ));
        let sender = tokio::spawn(crate::publish::run_sender(Arc::clone(&producer)));
        Ok(Client {
            inner: Arc::new(ClientInner {
                link,
                producer,
                sender: Mutex::new(Some(sender)),
                request_timeout: self.request_timeout,
                commit_interval: self.commit_interval,
            }),
        })
    }

    async fn resolve(&self) -> Result<SocketAddr, Error> {
        let addr = match &self.sidecar {
            Some(addr) => addr.clone(),
            None => std::env::var(SIDECAR_ENV)
                .ok()
                .filter(|addr| !addr.is_empty())
                .unwrap_or_else(|| DEFAULT_SIDECAR.to_owned()),
        };
        if let Ok(parsed) = addr.parse::<SocketAddr>() {
            return Ok(parsed);
        }
        let resolve_error = |source| Error::ResolveSidecar {
            addr: addr.clone(),
            source: Arc::new(source),
        };
        tokio::net::lookup_host(addr.as_str())
            .await
            .map_err(resolve_error)?
            .next()
            .ok_or_else(|| {
                resolve_error(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the name has no address",
                ))
            })
    }
}

/// The environment variable that names the sidecar's address when the builder is not given
/// one.
pub const SIDECAR_ENV: &str = "SIDESTREAM_SIDECAR";

/// The sidecar's address when neither the builder nor [`SIDECAR_ENV`] gives one.
pub const DEFAULT_SIDECAR: &str = "127.0.0.1:7400";

/// The largest record batch the client sends: the sidecar's default limit.
pub const MAX_BATCH_BYTES: usize = 8 << 20;

const MIN_BATCH_BYTES: usize = 1024;
const DEFAULT_SERVER_NAME: &str = "localhost";
const RETRY_BACKOFF: Duration = Duration::from_millis(10);
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);
