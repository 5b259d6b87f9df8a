//! Certificates taken again without a restart: on request (the command line's SIGHUP), and
//! when the files change (checked every `tls.check_ms`), since a Kubernetes secret mounted
//! as a volume is updated in place, with no signal.
//!
//! Both ports' configurations are built from the files before either is installed, so a file
//! that is missing, malformed, expired or does not match its key changes nothing: the sidecar
//! goes on with the certificates it has, says why once, and tries again at each check until
//! the files can be used (a permission or a clock put right changes no file). Connections
//! already open keep the certificates they were made with; new ones get the new certificates.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use quinn::Endpoint;
use sidestream::transport::{FileStamp, QuicTuning};
use tokio::sync::watch;

use super::SidecarError;
use crate::cluster::ClusterMember;
use crate::config::TlsSource;
use crate::tls::{DevCertificates, PeerTls, ServerTls};

/// Where the certificates are and how they are installed again.
#[derive(Debug)]
pub(crate) struct TlsReloader {
    /// The CA, the sidecar's certificate chain and its key.
    files: [PathBuf; 3],
    tuning: QuicTuning,
    loopback: bool,
    endpoint: Endpoint,
    /// A cluster member, with the peer identities its peer port started with: a reload must
    /// keep them, since its peers know it by them.
    cluster: Option<(Arc<ClusterMember>, BTreeSet<String>)>,
    check_every: Duration,
    /// Says when the sidecar stops: nothing is installed from then on.
    stop: watch::Receiver<bool>,
    /// Held while the files are read and installed: one reload at a time, in order.
    state: Mutex<State>,
}

/// What the files were when their certificates were installed, and when they last failed.
#[derive(Debug)]
struct State {
    installed: Stamps,
    /// The files as they were at the last failure, which is logged once for them.
    failed: Option<Stamps>,
}

/// The three files as last seen.
type Stamps = [FileStamp; 3];

/// The three files a sidecar's certificates come from: the CA, its chain and its key.
pub(crate) fn tls_files(source: &TlsSource, data_dir: &Path) -> [PathBuf; 3] {
    match source {
        TlsSource::Dev { .. } => {
            let dev = DevCertificates::in_data_dir(data_dir);
            [dev.ca_cert(), dev.server_cert(), dev.server_key()]
        }
        TlsSource::Files { ca, cert, key } => [ca.clone(), cert.clone(), key.clone()],
    }
}

/// Runs `read` (which reads the certificates, and makes development ones if need be) and
/// returns what it returned, the three files, and their state before it: a deployment's
/// files are looked at first, so that a renewal while the sidecar starts is taken at the
/// first check; development ones after `read` made them.
pub(crate) fn stamped<T>(
    source: &TlsSource,
    data_dir: &Path,
    read: impl FnOnce() -> T,
) -> (T, TlsFiles) {
    let files = tls_files(source, data_dir);
    let before = matches!(source, TlsSource::Files { .. }).then(|| FileStamp::of_each(&files));
    let read = read();
    let at_start = before.unwrap_or_else(|| FileStamp::of_each(&files));
    (read, TlsFiles { files, at_start })
}

/// A sidecar's three certificate files, and their state when it started.
pub(crate) struct TlsFiles {
    files: [PathBuf; 3],
    at_start: Stamps,
}

/// How a [`TlsReloader`] is set up: what was read at the start, and where to install.
pub(crate) struct Reloading {
    pub(crate) files: TlsFiles,
    pub(crate) tuning: QuicTuning,
    pub(crate) loopback: bool,
    pub(crate) endpoint: Endpoint,
    pub(crate) cluster: Option<(Arc<ClusterMember>, BTreeSet<String>)>,
    pub(crate) check_every: Duration,
    pub(crate) stop: watch::Receiver<bool>,
}

impl TlsReloader {
    /// A reloader set up so, and its task that looks at the files every `check_every`.
    pub(crate) fn start(setup: Reloading) -> Arc<Self> {
        let reloader = Arc::new(Self::new(setup));
        tokio::spawn(Arc::clone(&reloader).watch());
        reloader
    }

    fn new(setup: Reloading) -> Self {
        Self {
            files: setup.files.files,
            tuning: setup.tuning,
            loopback: setup.loopback,
            endpoint: setup.endpoint,
            cluster: setup.cluster,
            check_every: setup.check_every,
            stop: setup.stop,
            state: Mutex::new(State {
                installed: setup.files.at_start,
                failed: None,
            }),
        }
    }

    /// Reads the files again and installs what they hold, for the connections made from now
    /// on; on an error nothing changes.
    pub(crate) fn reload(&self) -> Result<(), SidecarError> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = FileStamp::of_each(&self.files);
        let result = self.install();
        match &result {
            Ok(()) => {
                state.installed = seen;
                state.failed = None;
            }
            Err(_) => state.failed = Some(seen),
        }
        result
    }

    /// Builds both ports' configurations from the files, then installs them (not once the
    /// sidecar stops).
    fn install(&self) -> Result<(), SidecarError> {
        let [ca, cert, key] = &self.files;
        let server = ServerTls::from_paths(ca, cert, key)?;
        let peer = match &self.cluster {
            Some((_, identities)) => {
                let peer = PeerTls::from_paths(ca, cert, key)?;
                if peer.peer_identities() != identities {
                    return Err(SidecarError::TlsIdentity {
                        cert: cert.clone(),
                        started: names(identities),
                        now: names(peer.peer_identities()),
                    });
                }
                Some(peer)
            }
            None => None,
        };
        if *self.stop.borrow() {
            return Ok(());
        }
        self.endpoint
            .set_server_config(Some(server.quic_config(&self.tuning, self.loopback)));
        if let (Some((cluster, _)), Some(peer)) = (&self.cluster, &peer) {
            cluster.reload_tls(peer);
        }
        tracing::info!(ca = %ca.display(), cert = %cert.display(), "certificates reloaded");
        Ok(())
    }

    /// Reloads if a file differs from when the certificates were last installed; logs a
    /// failure once for each state of the files, and tries again at every check.
    fn reload_if_changed(&self) {
        let now = FileStamp::of_each(&self.files);
        let logged = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.installed == now {
                return;
            }
            state.failed == Some(now)
        };
        if let Err(error) = self.reload()
            && !logged
        {
            tracing::error!(%error, "the certificate files changed but cannot be used; the sidecar keeps its certificates and tries again at each check");
        }
    }

    /// Looks at the files every `check_every` until the sidecar stops.
    async fn watch(self: Arc<Self>) {
        let mut stop = self.stop.clone();
        let mut every = tokio::time::interval(self.check_every);
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

fn names(identities: &BTreeSet<String>) -> String {
    identities
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
