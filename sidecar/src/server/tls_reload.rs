//! Certificates taken again without a restart: on request (the command line's SIGHUP), and
//! when the files change (checked every [`CHECK_EVERY`]), since a Kubernetes secret mounted
//! as a volume is updated in place, with no signal.
//!
//! Both ports' configurations are built from the files before either is installed, so a file
//! that is missing, malformed, expired or does not match its key changes nothing: the sidecar
//! goes on with the certificates it has, and says why. Connections already open keep the
//! certificates they were made with; new ones get the new certificates.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use quinn::Endpoint;
use sidestream::transport::{QuicTuning, TlsError};
use tokio::sync::watch;

use crate::cluster::ClusterMember;
use crate::config::TlsSource;
use crate::tls::{DevCertificates, PeerTls, ServerTls};

/// How often the certificate files are looked at for a change.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(30);

/// Installs a sidecar's certificates again, from where its configuration says they are.
#[derive(Debug)]
pub(crate) struct TlsReloader {
    /// The CA, the sidecar's certificate chain and its key.
    files: [PathBuf; 3],
    tuning: QuicTuning,
    loopback: bool,
    endpoint: Endpoint,
    cluster: Option<Arc<ClusterMember>>,
    /// The files as they were when last installed.
    installed: Mutex<Stamps>,
}

/// Each file's modification time and length, where it could be read.
type Stamps = [Option<(SystemTime, u64)>; 3];

impl TlsReloader {
    /// A reloader of the certificates `source` names (development ones in `data_dir`) into
    /// the client port's `endpoint` (`tuning`'s settings; `loopback` if it is bound to a
    /// loopback address) and, for a cluster member, its peer port.
    pub(crate) fn new(
        source: &TlsSource,
        data_dir: &std::path::Path,
        tuning: QuicTuning,
        loopback: bool,
        endpoint: Endpoint,
        cluster: Option<Arc<ClusterMember>>,
    ) -> Self {
        let files = match source {
            TlsSource::Dev { .. } => {
                let dev = DevCertificates::in_data_dir(data_dir);
                [dev.ca_cert(), dev.server_cert(), dev.server_key()]
            }
            TlsSource::Files { ca, cert, key } => [ca.clone(), cert.clone(), key.clone()],
        };
        let installed = Mutex::new(stamps(&files));
        Self {
            files,
            tuning,
            loopback,
            endpoint,
            cluster,
            installed,
        }
    }

    /// Reads the files again and installs what they hold, for the connections made from now
    /// on; on an error nothing changes.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        // Noted first: a file that changes while it is read is read again at the next check.
        let seen = stamps(&self.files);
        let [ca, cert, key] = &self.files;
        let server = ServerTls::from_paths(ca, cert, key)?;
        let peer = match &self.cluster {
            Some(_) => Some(PeerTls::from_paths(ca, cert, key)?),
            None => None,
        };
        self.endpoint
            .set_server_config(Some(server.quic_config(&self.tuning, self.loopback)));
        if let (Some(cluster), Some(peer)) = (&self.cluster, &peer) {
            cluster.reload_tls(peer);
        }
        *self
            .installed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = seen;
        tracing::info!(ca = %ca.display(), cert = %cert.display(), "certificates reloaded");
        Ok(())
    }

    /// Reloads if a file's modification time or length differs from when the certificates
    /// were last installed (or last failed to be).
    fn reload_if_changed(&self) {
        let now = stamps(&self.files);
        {
            let mut installed = self
                .installed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *installed == now {
                return;
            }
            // Tried once per change: a bad file is reported once, not at every check.
            *installed = now;
        }
        if let Err(error) = self.reload() {
            tracing::error!(%error, "the certificate files changed but cannot be used; the sidecar keeps its certificates");
        }
    }

    /// Looks at the files every [`CHECK_EVERY`] until `stop` says the sidecar stops.
    pub(crate) async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(CHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                _ = every.tick() => self.reload_if_changed(),
                _ = stop.wait_for(|stopping| *stopping) => return,
            }
        }
    }
}

fn stamps(files: &[PathBuf; 3]) -> Stamps {
    files.each_ref().map(|path| {
        let metadata = std::fs::metadata(path).ok()?;
        Some((metadata.modified().ok()?, metadata.len()))
    })
}
