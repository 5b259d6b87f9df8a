//! The client-facing QUIC server: the listener, one task per connection, one task per stream.
//!
//! Every stream carries one request (`docs/PROTOCOL.md`): the task reads its frame, answers it
//! and finishes, or, for `subscribe`, keeps pushing batches until the subscription ends. A
//! connection keeps as many requests in flight as QUIC lets it open streams.
//!
//! Shutdown: stop accepting, end subscriptions with `UNAVAILABLE`, let requests in progress
//! finish (up to the grace period), close the endpoint, then sync every log.

pub(crate) mod frames;
mod group_offsets;
mod handlers;
mod relay;
mod replicas;
mod routing;
mod subscription;
#[cfg(test)]
mod tests;
mod tls_reload;
mod topic_admin;
mod trace;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Waker};
use std::time::Duration;

use bytes::BytesMut;
use quinn::{Connection, Endpoint, Incoming, RecvStream, SendStream};
use sidestream::transport::BindError;
use sidestream_proto::v1::{ErrorCode, request};
use sidestream_proto::{DEFAULT_MAX_FRAME_SIZE, FrameCodec, Request, Response};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::admin::{self, AdminBindError, Phase, ReadyCheck};
use crate::cluster::{ClusterError, ClusterMember, PassedOnHandler};
use crate::config::{SidecarConfig, TlsSource};
use crate::groups::{Groups, OpenGroupsError};
use crate::metrics::{FsyncLatency, Metrics};
use crate::tls::{
    ClientIdentity, DevCertificates, DevCertificatesError, PeerTls, ResetKey, ResetKeyError,
    ServerTls,
};
use crate::topics::{Kind, Topics, TopicsError};
use frames::{RESERVE_AHEAD, quic_code, read_error_code, read_frame, write_response};
use tls_reload::{Reloading, TlsReloader};

/// Why a sidecar could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// The data directory cannot be created.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The development certificates cannot be created or read.
    #[error(transparent)]
    DevCertificates(#[from] DevCertificatesError),
    /// The TLS files are unusable.
    #[error("TLS: {0}")]
    Tls(#[from] sidestream::transport::TlsError),
    /// The client address cannot be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The stateless reset key in the data directory cannot be read or written.
    #[error(transparent)]
    ResetKey(#[from] ResetKeyError),
    /// The topics cannot be opened.
    #[error(transparent)]
    Topics(#[from] TopicsError),
    /// The group offsets cannot be opened.
    #[error(transparent)]
    Groups(#[from] OpenGroupsError),
    /// The sidecar could not take its place in its cluster.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The admin port cannot be bound.
    #[error(transparent)]
    Admin(#[from] AdminBindError),
    /// Certificates given to a running cluster member name another peer identity than the
    /// one it started with, which its peers know it by.
    #[error(
        "TLS: {cert} names the peer identity {now}, not {started} that this sidecar started with; a running sidecar keeps its identity"
    )]
    TlsIdentity {
        /// The sidecar's certificate file.
        cert: PathBuf,
        /// The identities it started with.
        started: String,
        /// Those of the new certificate.
        now: String,
    },
    /// The server task failed.
    #[error("sidecar task: {0}")]
    Task(String),
}

/// State every connection shares.
#[derive(Debug)]
struct Shared {
    config: SidecarConfig,
    advertised: String,
    topics: Arc<Topics>,
    groups: Arc<Groups>,
    /// This sidecar's membership of its cluster; `None` when it runs alone.
    cluster: Option<Arc<ClusterMember>>,
    shutdown: watch::Receiver<bool>,
    requests: FrameCodec<Request>,
    responses: FrameCodec<Response>,
    /// Every connection and stream task holds a clone; shutdown waits until all are gone.
    alive: mpsc::Sender<()>,
    /// The task keeping a cluster member's replicated topics in step with the metadata.
    reconciler: std::sync::Mutex<Option<JoinHandle<()>>>,
    /// Counters of what the sidecar serves, and the state read at each scrape.
    metrics: Arc<Metrics>,
}

/// A sidecar running in this process.
#[derive(Debug)]
pub struct RunningSidecar {
    local_addr: SocketAddr,
    peer_address: Option<String>,
    admin_addr: Option<SocketAddr>,
    tls_dir: PathBuf,
    shutdown: watch::Sender<bool>,
    phase: watch::Sender<Phase>,
    task: JoinHandle<()>,
    admin: Option<JoinHandle<()>>,
    /// Stops the admin port: after the rest, so that probes see the sidecar stopping.
    admin_stop: watch::Sender<bool>,
    /// A cluster member's replicas, whose leadership it hands over before it stops.
    leaving: Option<(Arc<ClusterMember>, Arc<Topics>)>,
    tls: Arc<TlsReloader>,
}

/// Longest a shutdown spends handing the leadership of the partitions this node leads over
/// to other replicas (each handover waits for its replica to catch up, then for the election).
const HAND_AWAY_WAIT: Duration = Duration::from_secs(5);

/// Longest a shutdown waits for its closed connections to be acknowledged by their peers.
const IDLE_WAIT: Duration = Duration::from_secs(2);

/// How long a shutdown waits for the admin port's requests in progress (a scraper that stopped
/// reading must not hold the shutdown up).
const ADMIN_STOP_WAIT: Duration = Duration::from_secs(5);

impl RunningSidecar {
    /// Starts a sidecar: opens (or creates) its data directory, its certificates and its
    /// topics, and binds the client address. Must be called inside a tokio runtime.
    pub async fn start(config: SidecarConfig) -> Result<Self, SidecarError> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|source| SidecarError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let fsync = FsyncLatency::new();
        let metrics = Arc::new(Metrics::new(fsync.clone()));
        let (phase, phase_rx) = watch::channel(Phase::Starting);
        let (admin_stop, admin_stop_rx) = watch::channel(false);
        let ready_check = Arc::new(OnceLock::new());
        // Up first, so that a probe sees the sidecar starting while its logs recover.
        let admin = match config.admin_listen {
            Some(addr) => {
                let check = Arc::clone(&ready_check);
                Some(start_admin(addr, &metrics, phase_rx, check, admin_stop_rx).await?)
            }
            None => None,
        };
        let (read, tls_files) = tls_reload::stamped(&config.tls, &data_dir, || {
            server_tls(&config.tls, &data_dir)
        });
        let (tls, tls_dir) = read?;
        let (topics, groups) = open_topics(&config, &data_dir, &fsync).await?;
        // Offsets of topics deleted just before a crash (before their tombstones). A cluster
        // member's topics come from the metadata log after the start: the reconciler forgets
        // the offsets of each topic it removes instead.
        if config.cluster.is_none() {
            groups
                .forget_missing(|topic| topics.get(topic).is_some())
                .await
                .map_err(|e| SidecarError::Task(e.to_string()))?;
        }
        let (topics, groups) = (Arc::new(topics), Arc::new(groups));
        metrics.attach(Arc::clone(&topics), Arc::clone(&groups), config.node_id);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let endpoint = tls.bind(config.listen, &config.quic)?;
        let local_addr = endpoint.local_addr().map_err(|source| {
            SidecarError::Bind(BindError::Io {
                addr: config.listen,
                source,
            })
        })?;
        let advertised = config
            .advertised_address
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        let joined = join_cluster(&config, &data_dir, &topics, &advertised).await?;
        let cluster = joined.as_ref().map(|(member, _)| Arc::clone(member));
        let tls = TlsReloader::start(Reloading {
            files: tls_files,
            tuning: config.quic.clone(),
            loopback: config.listen.ip().is_loopback(),
            endpoint: endpoint.clone(),
            cluster: joined,
            check_every: config.tls_check,
            stop: shutdown_rx.clone(),
        });
        let (alive, all_gone) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            advertised,
            cluster,
            requests: FrameCodec::new(config.max_frame_size),
            responses: FrameCodec::new(DEFAULT_MAX_FRAME_SIZE),
            config,
            topics,
            groups,
            shutdown: shutdown_rx,
            alive,
            reconciler: std::sync::Mutex::new(None),
            metrics,
        });
        if let Some(cluster) = &shared.cluster {
            start_cluster_tasks(&shared, cluster, &data_dir, &ready_check);
        }
        tracing::info!(%local_addr, data_dir = %data_dir.display(), topics = shared.topics.all().len(), "sidecar listening");
        let (peer_address, leaving) = shared
            .cluster
            .as_ref()
            .map(|c| {
                (
                    c.peer_address().to_owned(),
                    (Arc::clone(c), Arc::clone(&shared.topics)),
                )
            })
            .unzip();
        let task = tokio::spawn(serve(shared, endpoint, all_gone));
        phase.send_replace(Phase::Ready);
        let (admin_addr, admin) = admin.unzip();
        Ok(Self {
            local_addr,
            peer_address,
            admin_addr,
            tls_dir,
            shutdown,
            phase,
            task,
            admin,
            admin_stop,
            leaving,
            tls,
        })
    }

    /// Reads the certificate files again and uses them for the connections made from now on,
    /// on the client port and a cluster member's peer port; the open connections keep theirs.
    /// The files are also looked at every `tls_check` ([`SidecarConfig`]) and taken again
    /// when they change.
    ///
    /// # Errors
    ///
    /// Names the file that is missing, malformed, expired or does not match its key; the
    /// sidecar then goes on with the certificates it had.
    pub fn reload_tls(&self) -> Result<(), SidecarError> {
        self.tls.reload()
    }

    /// The bound admin address (HTTP: `/healthz`, `/readyz`, `/metrics`), if the sidecar has
    /// an admin port.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The peer address other sidecars are told, when the sidecar is a cluster member.
    pub fn peer_address(&self) -> Option<&str> {
        self.peer_address.as_deref()
    }

    /// The bound client address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where clients find the CA certificate and, with development certificates, a client
    /// certificate.
    pub fn tls_dir(&self) -> &std::path::Path {
        &self.tls_dir
    }

    /// Completes, with the cluster's reason, once the cluster has refused to take this
    /// member in for good (see [`ClusterMember::refused`]); never for a sidecar on its own.
    pub async fn refused(&self) -> String {
        match &self.leaving {
            Some((cluster, _)) => cluster.refused().await,
            None => std::future::pending().await,
        }
    }

    /// Shuts down gracefully and waits until every log is synced.
    pub async fn shutdown(self) -> Result<(), SidecarError> {
        self.phase.send_replace(Phase::Stopping);
        if let Some((cluster, topics)) = &self.leaving {
            // While it still serves its services, whose publishes then go to the new leaders;
            // and takes no leadership back meanwhile.
            cluster.stop_standing();
            replicas::hand_away(cluster, topics, HAND_AWAY_WAIT).await;
        }
        self.shutdown.send_replace(true);
        let served = self
            .task
            .await
            .map_err(|e| SidecarError::Task(e.to_string()));
        self.admin_stop.send_replace(true);
        if let Some(mut admin) = self.admin
            && tokio::time::timeout(ADMIN_STOP_WAIT, &mut admin)
                .await
                .is_err()
        {
            admin.abort();
        }
        served
    }
}

/// Opens the topics (their logs reporting each sync to `fsync`) and the group offsets.
async fn open_topics(
    config: &SidecarConfig,
    data_dir: &std::path::Path,
    fsync: &FsyncLatency,
) -> Result<(Topics, Groups), SidecarError> {
    let mut settings = config.log.clone();
    settings.sync_observer = Some(Arc::new(fsync.clone()));
    let dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<_, SidecarError> {
        Ok((Topics::open(&dir, settings)?, Groups::open(&dir)?))
    })
    .await
    .map_err(|e| SidecarError::Task(e.to_string()))?
}

/// The client port's TLS (its endpoint's stateless resets signed with the data directory's
/// key), and the directory clients find its CA in.
fn server_tls(
    source: &TlsSource,
    data_dir: &std::path::Path,
) -> Result<(ServerTls, PathBuf), SidecarError> {
    let reset = ResetKey::in_data_dir(data_dir)?;
    let (tls, dir) = match source {
        TlsSource::Dev { extra_names } => {
            let certificates = DevCertificates::ensure(data_dir, extra_names)?;
            (
                ServerTls::from_dev(&certificates)?,
                certificates.dir().to_path_buf(),
            )
        }
        TlsSource::Files { ca, cert, key } => (
            ServerTls::from_paths(ca, cert, key)?,
            ca.parent().map(PathBuf::from).unwrap_or_default(),
        ),
    };
    Ok((tls.with_reset_key(reset.for_port("client")), dir))
}

/// Binds the admin port on `addr` and serves it until `stop`: its bound address and task.
async fn start_admin(
    addr: SocketAddr,
    metrics: &Arc<Metrics>,
    phase: watch::Receiver<Phase>,
    check: Arc<OnceLock<ReadyCheck>>,
    stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>), AdminBindError> {
    let listener = admin::bind(addr).await?;
    let bound = listener
        .local_addr()
        .map_err(|source| AdminBindError::new(addr, source))?;
    let task = admin::serve(listener, Arc::clone(metrics), phase, check, stop);
    Ok((bound, task))
}

/// Takes the sidecar's place in its cluster, if it is configured to be a member; refuses a
/// data directory that holds topics of a sidecar run alone.
async fn join_cluster(
    config: &SidecarConfig,
    data_dir: &std::path::Path,
    topics: &Topics,
    advertised: &str,
) -> Result<Option<(Arc<ClusterMember>, BTreeSet<String>)>, SidecarError> {
    let Some(cluster) = &config.cluster else {
        return Ok(None);
    };
    let alone: Vec<String> = topics.all().iter().map(|t| t.spec().name.clone()).collect();
    if !alone.is_empty() {
        return Err(SidecarError::Task(format!(
            "{} holds topics of a sidecar that ran alone ({}); a cluster member's topics are replicated: start it with another data directory",
            data_dir.join("topics").display(),
            alone.join(", ")
        )));
    }
    let [ca, cert, key] = tls_reload::tls_files(&config.tls, data_dir);
    let peer_tls = PeerTls::from_paths(&ca, &cert, &key)?
        .with_reset_key(ResetKey::in_data_dir(data_dir)?.for_port("peer"));
    let identities = peer_tls.peer_identities().clone();
    let member = ClusterMember::start(
        config.node_id,
        cluster,
        peer_tls,
        &config.quic,
        data_dir,
        advertised.to_owned(),
    )
    .await?;
    tracing::info!(
        node = config.node_id,
        peer_address = member.peer_address(),
        "peer port listening"
    );
    Ok(Some((Arc::new(member), identities)))
}

/// Starts a cluster member's tasks: serving the requests peers pass on, reconciling its
/// replicas with the metadata, converging replica sets and leaders; and its readiness.
fn start_cluster_tasks(
    shared: &Arc<Shared>,
    cluster: &Arc<ClusterMember>,
    data_dir: &std::path::Path,
    ready_check: &OnceLock<ReadyCheck>,
) {
    cluster.serve_passed_on(passed_on_handler(shared));
    let reconciler = tokio::spawn(replicas::reconcile(
        Arc::clone(cluster),
        Arc::clone(&shared.topics),
        Arc::clone(&shared.groups),
        data_dir.join("replicas"),
        shared.shutdown.clone(),
    ));
    *shared
        .reconciler
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reconciler);
    // Ends at the shutdown signal (each step of it is bounded).
    tokio::spawn(replicas::converge(
        Arc::clone(cluster),
        Arc::clone(&shared.topics),
        shared.shutdown.clone(),
    ));
    let (cluster, topics) = (Arc::clone(cluster), Arc::clone(&shared.topics));
    let _ = ready_check.set(Arc::new(move || {
        cluster.metadata_caught_up() && topics.reconciled() >= cluster.state().applied_offset
    }));
}

/// Runs a sidecar until `shutdown` completes, then stops it gracefully.
pub async fn run(
    config: SidecarConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SidecarError> {
    let sidecar = RunningSidecar::start(config).await?;
    shutdown.await;
    tracing::info!("shutting down");
    sidecar.shutdown().await
}

async fn serve(shared: Arc<Shared>, endpoint: Endpoint, mut all_gone: mpsc::Receiver<()>) {
    let retention = tokio::spawn(retention_loop(Arc::clone(&shared)));
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    tokio::spawn(connection(Arc::clone(&shared), incoming, shared.alive.clone()));
                }
                None => break,
            },
            () = shutting_down(&mut shutdown) => break,
        }
    }
    retention.abort();
    let grace = shared.config.shutdown_grace;
    // Refuse new connections; the open ones finish what they are doing.
    endpoint.set_server_config(None);
    let topics = Arc::clone(&shared.topics);
    let groups = Arc::clone(&shared.groups);
    let cluster = shared.cluster.clone();
    let reconciler = shared
        .reconciler
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    // `shared` holds an `alive` sender too: drop it, then wait until every task has.
    drop(shared);
    if tokio::time::timeout(grace, all_gone.recv()).await.is_err() {
        tracing::warn!(
            ?grace,
            "requests still in progress at the end of the grace period"
        );
    }
    endpoint.close(quic_code(ErrorCode::Ok), b"sidecar shutting down");
    let _ = tokio::time::timeout(grace.min(IDLE_WAIT), endpoint.wait_idle()).await;
    if let Some(reconciler) = reconciler {
        // It stops at the shutdown signal, between two topics; a replica it is opening is
        // then stopped with the others.
        let _ = reconciler.await;
    }
    if let Some(cluster) = cluster {
        cluster.shutdown().await;
    }
    let _ = tokio::task::spawn_blocking(move || {
        topics.sync_all();
        groups.sync();
    })
    .await;
    tracing::info!("sidecar stopped");
}

/// Returns once shutdown begins (or its sender is gone).
async fn shutting_down(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|down| *down).await;
}

async fn retention_loop(shared: Arc<Shared>) {
    let every = shared
        .config
        .retention_interval
        .max(Duration::from_millis(100));
    let mut every = tokio::time::interval(every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        let topics = Arc::clone(&shared.topics);
        if let Ok(deleted) = tokio::task::spawn_blocking(move || topics.apply_retention()).await
            && deleted > 0
        {
            tracing::info!(segments = deleted, "retention deleted segments");
        }
        replicated_retention(&shared.topics).await;
    }
}

/// Applies retention to every replicated partition this sidecar holds a replica of, through
/// openraft (`Replicated::apply_retention`).
async fn replicated_retention(topics: &Topics) {
    for topic in topics.all() {
        for partition in topic.partitions() {
            let Kind::Replicated(replicated) = partition.kind() else {
                continue;
            };
            match replicated.apply_retention().await {
                Ok(Some(through)) => {
                    tracing::debug!(topic = %topic.spec().name, partition = partition.number(), through, "retention purges the log");
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(topic = %topic.spec().name, partition = partition.number(), %error, "retention failed");
                }
            }
        }
    }
}

async fn connection(shared: Arc<Shared>, incoming: Incoming, alive: mpsc::Sender<()>) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            tracing::debug!(%remote, %error, "handshake failed");
            return;
        }
    };
    let identity = match ClientIdentity::of(&connection) {
        Ok(identity) => identity,
        Err(error) => {
            tracing::warn!(%remote, %error, "client certificate has no usable identity");
            connection.close(
                quic_code(ErrorCode::NotAuthorized),
                b"client certificate has no usable identity",
            );
            return;
        }
    };
    tracing::debug!(%remote, identity = identity.as_str(), "client connected");
    let _open = shared.metrics.connection();
    streams(&shared, &connection, &alive).await;
    drop(alive);
    tracing::debug!(%remote, "client disconnected");
}

async fn streams(shared: &Arc<Shared>, connection: &Connection, alive: &mpsc::Sender<()>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            stream = connection.accept_bi() => match stream {
                Ok((send, recv)) => {
                    tokio::spawn(stream_task(Arc::clone(shared), send, recv, alive.clone()));
                }
                Err(_) => return,
            },
            () = shutting_down(&mut shutdown) => return,
        }
    }
}

async fn stream_task(
    shared: Arc<Shared>,
    mut send: SendStream,
    mut recv: RecvStream,
    _alive: mpsc::Sender<()>,
) {
    let _open = shared.metrics.stream();
    let mut buf = BytesMut::new();
    let request = match read_frame(&mut recv, &shared.requests, &mut buf, RESERVE_AHEAD).await {
        Ok(Some(request)) => request,
        Ok(None) => {
            let answer = Response::error(
                ErrorCode::MalformedFrame,
                "the stream ended before a request frame",
            );
            finish(&shared, &mut send, &answer).await;
            return;
        }
        Err(e) => {
            let code = read_error_code(&e);
            tracing::debug!(error = %e, "unreadable request frame");
            let _ = recv.stop(quic_code(code));
            finish(&shared, &mut send, &Response::error(code, e.to_string())).await;
            return;
        }
    };
    let Some(body) = request.body else {
        let answer = Response::error(
            ErrorCode::UnsupportedVersion,
            "the request has no body this sidecar knows (sent by a newer client?)",
        );
        let _ = recv.stop(quic_code(ErrorCode::UnsupportedVersion));
        finish(&shared, &mut send, &answer).await;
        return;
    };
    if !matches!(body, request::Body::Subscribe(_)) {
        take_end(&mut recv);
    }
    if let request::Body::Subscribe(subscribe) = body {
        subscription::serve(Arc::clone(&shared), subscribe, send, recv).await;
        return;
    }
    let started = tokio::time::Instant::now();
    let counted = Counted::of(&body);
    let response = answer(&shared, body, 0).await;
    if response.code == i32::from(ErrorCode::Ok) {
        counted.count(&shared.metrics, &response, started.elapsed());
    }
    finish(&shared, &mut send, &response).await;
}

/// What a service's request moves in the metrics once it is answered OK.
enum Counted {
    Publish {
        topic: String,
        partition: u32,
        batch: bytes::Bytes,
    },
    Fetch {
        topic: String,
        partition: u32,
    },
    Nothing,
}

impl Counted {
    fn of(body: &request::Body) -> Self {
        match body {
            request::Body::Publish(publish) => Self::Publish {
                topic: publish.topic.clone(),
                partition: publish.partition,
                batch: publish.batch.clone(),
            },
            request::Body::Fetch(fetch) => Self::Fetch {
                topic: fetch.topic.clone(),
                partition: fetch.partition,
            },
            _ => Self::Nothing,
        }
    }

    fn count(self, metrics: &Metrics, response: &Response, elapsed: Duration) {
        match self {
            Self::Publish {
                topic,
                partition,
                batch,
            } => {
                // A repeat of a publish already written (an idempotent producer's retry) was
                // counted the first time.
                let repeat = matches!(
                    &response.body,
                    Some(sidestream_proto::v1::response::Body::Publish(result)) if result.duplicate
                );
                if !repeat {
                    metrics.published(&topic, partition, &batch, elapsed);
                }
            }
            Self::Fetch { topic, partition } => {
                if let Some(sidestream_proto::v1::response::Body::Fetch(result)) = &response.body {
                    metrics.delivered(&topic, partition, &result.batches);
                }
            }
            Self::Nothing => {}
        }
    }
}

/// Answers a one-response request; `passes` is how many sidecars passed it on (0: a service
/// sent it here).
async fn answer(shared: &Shared, body: request::Body, passes: u32) -> Response {
    let data = matches!(
        body,
        request::Body::Publish(_)
            | request::Body::Fetch(_)
            | request::Body::CommitOffset(_)
            | request::Body::FetchCommittedOffsets(_)
            | request::Body::ClaimPartition(_)
    );
    let mut response = answer_once(shared, body, passes).await;
    // The sidecar that passed it on knows the topic: this one has not applied the metadata
    // that created it yet (or restarted and is catching up). Worth asking again.
    if passes > 0 && data && response.code == i32::from(ErrorCode::UnknownTopic) {
        response.code = ErrorCode::LeaderNotAvailable.into();
        response.message = format!("not known here yet: {}", response.message);
    }
    response
}

async fn answer_once(shared: &Shared, body: request::Body, passes: u32) -> Response {
    let answer = match body {
        request::Body::Subscribe(_) => Err(handlers::error(
            ErrorCode::InvalidRequest,
            "a subscription is not passed on between sidecars",
        )),
        request::Body::Publish(publish) => handlers::publish(shared, publish, passes).await,
        request::Body::Fetch(fetch) => handlers::fetch(shared, fetch, passes).await,
        request::Body::CreateTopic(create) => handlers::create_topic(shared, create, passes).await,
        request::Body::DeleteTopic(delete) => handlers::delete_topic(shared, delete, passes).await,
        request::Body::ListTopics(_) => Ok(handlers::list_topics(shared)),
        request::Body::DescribeTopic(describe) => handlers::describe_topic(shared, &describe),
        request::Body::CommitOffset(commit) => {
            handlers::commit_offset(shared, commit, passes).await
        }
        request::Body::FetchCommittedOffsets(fetch) => {
            handlers::fetch_committed_offsets(shared, &fetch, passes).await
        }
        request::Body::ClaimPartition(claim) => {
            group_offsets::claim_partition(shared, claim, passes).await
        }
        request::Body::Metadata(_) => Ok(handlers::metadata(shared)),
        request::Body::DecommissionNode(decommission) => {
            handlers::decommission_node(shared, &decommission).await
        }
    };
    match answer {
        Ok(body) => Response::ok(body),
        Err(response) => *response,
    }
}

/// What answers the requests peers pass on to this sidecar. Holds the shared state weakly:
/// the cluster member that keeps the handler is part of it.
fn passed_on_handler(shared: &Arc<Shared>) -> PassedOnHandler {
    let weak = Arc::downgrade(shared);
    Arc::new(move |request: Request, passes: u32| {
        let weak = weak.clone();
        Box::pin(async move {
            let Some(shared) = weak.upgrade() else {
                return Response::error(ErrorCode::Unavailable, "the sidecar is shutting down");
            };
            match request.body {
                Some(body) => answer(&shared, body, passes).await,
                None => Response::error(
                    ErrorCode::UnsupportedVersion,
                    "the passed-on request has no body this sidecar knows",
                ),
            }
        })
    })
}

/// Reads the end of a request stream the client has already finished (it finishes one as
/// soon as its request frame is written), so that the stream is done with when it is dropped:
/// a stream dropped unread is stopped, which costs an extra packet per request. A stream that
/// is not finished yet is left as it is.
fn take_end(recv: &mut RecvStream) {
    let mut read = std::pin::pin!(recv.read_chunk(1, true));
    let _ = read.as_mut().poll(&mut Context::from_waker(Waker::noop()));
}

async fn finish(shared: &Shared, send: &mut SendStream, response: &Response) {
    shared.metrics.responded(response.code);
    if write_response(send, &shared.responses, response)
        .await
        .is_ok()
    {
        let _ = send.finish();
    }
}
