//! A sidecar process's place in a cluster: its peer port, its replica of the metadata group,
//! the metadata it follows, and its registration.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use sidestream::transport::{BindError, QuicTuning};
use sidestream_log::LogConfig;
use sidestream_proto::peer::v1::Join;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::bootstrap::{self, Settled};
use super::membership::{self, JoinAccepted, LeaveError, Left};
use super::metadata::{self, ClusterState, ClusterTopic, METADATA_TOPIC, MetadataCommand};
use super::replica::{Formation, OpenReplicaError, PartitionReplica, PeerNode};
use super::type_config::NodeId;
use crate::tls::PeerTls;

/// Why a metadata command was not proposed here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotProposed {
    /// Another node leads the metadata group, at this peer address.
    Leader(String),
    /// No leader now, or the write failed or took too long: why.
    Unavailable(String),
}

/// Answers a service's request that a peer passed on: the request, and how many sidecars
/// passed it on so far.
pub(crate) type PassedOnHandler = Arc<
    dyn Fn(
            sidestream_proto::Request,
            u32,
        ) -> std::pin::Pin<Box<dyn Future<Output = sidestream_proto::Response> + Send>>
        + Send
        + Sync,
>;

/// How a sidecar takes part in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The peer port's address (QUIC, UDP).
    pub peer_listen: SocketAddr,
    /// The peer address other sidecars are told (default: the bound peer address).
    pub peer_advertise: Option<String>,
    /// Members to join through (`host:port` of their peer ports, a DNS name standing for
    /// every address it resolves to); none to form a new cluster, or to restart a member from
    /// its data.
    pub seeds: Vec<String>,
    /// With seeds and no data of its own: how many such sidecars, this one included, form a
    /// new cluster when no seed knows one (docs/PROTOCOL.md, "Bootstrap"); 0 for none.
    pub bootstrap_expect: u32,
}

/// Why a sidecar could not take its place in the cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The peer port could not be bound.
    #[error("peer port: {0}")]
    Bind(#[from] BindError),
    /// The peer port listens on every interface, and no address to tell the others was given.
    #[error(
        "the peer port listens on {0}, which other sidecars cannot connect to: give the address they should use (--peer-advertise)"
    )]
    Advertise(SocketAddr),
    /// The metadata replica could not be opened.
    #[error("metadata replica: {0}")]
    Open(#[from] OpenReplicaError),
    /// openraft refused to form the metadata group.
    #[error("cannot form the cluster: {0}")]
    Initialize(String),
    /// The cluster will never take this node in as it is.
    #[error("cannot join the cluster: {0}")]
    Refused(super::JoinError),
}

/// A sidecar's membership of its cluster.
///
/// Method families, in order of use: [`start`](Self::start); then [`state`](Self::state),
/// [`metadata_leader`](Self::metadata_leader) and [`voters`](Self::voters) to describe the
/// cluster; then [`shutdown`](Self::shutdown).
pub struct ClusterMember {
    node: PeerNode,
    metadata: PartitionReplica,
    state: watch::Receiver<ClusterState>,
    peer_address: String,
    tasks: Vec<AbortHandle>,
    passing: Arc<tokio::sync::Semaphore>,
    /// Why the cluster will never take this node in, once it said so.
    refused: watch::Receiver<Option<String>>,
}

/// The most services' requests a sidecar passes on to peers at once. Each takes a stream of
/// a peer connection (1024 streams at most), which Raft's calls share: those must always find
/// one free.
const MAX_PASSING: usize = 256;

impl ClusterMember {
    /// Binds the peer port, opens this node's metadata replica in `data_dir/cluster`, and
    /// takes its place: forms a new cluster (no seeds, no data), or asks to join through the
    /// seeds (or, restarting, through itself) until a metadata leader takes it in, in the
    /// background.
    pub async fn start(
        node_id: NodeId,
        config: &ClusterConfig,
        tls: PeerTls,
        tuning: &QuicTuning,
        data_dir: &Path,
        client_address: String,
    ) -> Result<Self, ClusterError> {
        if config.peer_advertise.is_none() && config.peer_listen.ip().is_unspecified() {
            return Err(ClusterError::Advertise(config.peer_listen));
        }
        let node = PeerNode::start(
            node_id,
            config.peer_listen,
            config.peer_advertise.clone(),
            tls,
            &peer_tuning(tuning),
        )?;
        match Self::take_place(&node, node_id, config, data_dir, client_address).await {
            Ok((metadata, state, peer_address, tasks, refused)) => Ok(Self {
                node,
                metadata,
                state,
                peer_address,
                tasks,
                passing: Arc::new(tokio::sync::Semaphore::new(MAX_PASSING)),
                refused,
            }),
            Err(error) => {
                // Stop what was started: the replicas' Rafts and the peer port.
                node.shutdown().await;
                Err(error)
            }
        }
    }

    /// The part of [`start`](Self::start) after the peer port is bound.
    async fn take_place(
        node: &PeerNode,
        node_id: NodeId,
        config: &ClusterConfig,
        data_dir: &Path,
        client_address: String,
    ) -> Result<
        (
            PartitionReplica,
            watch::Receiver<ClusterState>,
            String,
            Vec<AbortHandle>,
            watch::Receiver<Option<String>>,
        ),
        ClusterError,
    > {
        let peer_address = node.peer_address().to_owned();
        let dir = data_dir.join("cluster").join(format!("{METADATA_TOPIC}-0"));
        let mut join = Join {
            node_id,
            peer_address: peer_address.clone(),
            client_address,
            fresh: !dir.exists(),
        };
        let mut seeds = config.seeds.clone();
        if join.fresh && !seeds.is_empty() {
            seeds = settle(node, node_id, config).await;
            if !seeds.is_empty() {
                // Before this node serves the metadata group's calls: a node the cluster
                // knows, back without its data, would vote as if it had none to lose.
                check_fresh(&node.clients(), &join, &seeds).await?;
            }
        }
        let metadata = node
            .open_partition(METADATA_TOPIC, 0, &dir, LogConfig::default(), None)
            .await?;
        let (state_tx, state) = watch::channel(ClusterState::default());
        let _ = node.groups().cluster_state.set(state.clone());
        let follow = tokio::spawn(metadata::follow(metadata.clone(), state_tx)).abort_handle();
        let formed = metadata
            .raft
            .is_initialized()
            .await
            .map_err(|e| ClusterError::Initialize(e.to_string()));
        let formed = match formed {
            Ok(formed) => formed,
            Err(error) => {
                follow.abort();
                return Err(error);
            }
        };
        if !formed && !join.fresh && !seeds.is_empty() {
            // Its data is from a start that stopped before this node formed the cluster or
            // was taken into one: where it stands is decided again.
            seeds = settle(node, node_id, config).await;
        }
        if !formed && seeds.is_empty() {
            let members: BTreeMap<NodeId, BasicNode> =
                [(node_id, BasicNode::new(&peer_address))].into();
            if let Err(error) = metadata.raft.initialize(members).await {
                follow.abort();
                return Err(ClusterError::Initialize(error.to_string()));
            }
            tracing::info!(node = node_id, %peer_address, "formed a new cluster");
        }
        // Asked as a member from now on (checked above, or formed here, or known already).
        join.fresh = false;
        let (refuse, refused) = watch::channel(None);
        let register = tokio::spawn(register(node.groups(), node.clients(), join, seeds, refuse))
            .abort_handle();
        Ok((
            metadata,
            state,
            peer_address,
            vec![follow, register],
            refused,
        ))
    }

    /// Completes, with the cluster's reason, once the cluster has refused to take this node
    /// in for good (its id was removed from the cluster, or it lost the state it had as a
    /// member): it has no place to serve in and should stop. Never completes otherwise.
    pub async fn refused(&self) -> String {
        let mut refused = self.refused.clone();
        match refused.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => std::future::pending().await,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node.node_id()
    }

    /// Makes the peer port use `tls`'s certificates for the connections opened from now on
    /// (see [`PeerNode::reload_tls`]).
    pub(crate) fn reload_tls(&self, tls: &PeerTls) {
        self.node.reload_tls(tls);
    }

    /// The peer address this node is known by.
    pub fn peer_address(&self) -> &str {
        &self.peer_address
    }

    /// The cluster's metadata as this node has applied it.
    pub fn state(&self) -> ClusterState {
        self.state.borrow().clone()
    }

    /// Whether this node has caught up with the metadata log as far as it can tell: it knows
    /// the metadata leader, has applied every entry it holds, and folded every record applied.
    pub fn metadata_caught_up(&self) -> bool {
        let metrics = self.metadata.raft.metrics().borrow().clone();
        let applied = metrics.last_applied.map(|log| log.index);
        metrics.current_leader.is_some()
            && applied >= metrics.last_log_index
            && self.state.borrow().applied_offset >= *self.metadata.high_watermark.borrow()
    }

    /// The node leading the metadata group, as this node knows it.
    pub fn metadata_leader(&self) -> Option<NodeId> {
        self.metadata.raft.metrics().borrow().current_leader
    }

    /// The voters of the metadata group.
    pub fn voters(&self) -> Vec<NodeId> {
        self.metadata
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// The cluster's metadata as it changes.
    pub fn watch_state(&self) -> watch::Receiver<ClusterState> {
        self.state.clone()
    }

    /// Waits until this node has applied the metadata log through `offset`, up to `deadline`;
    /// whether it has.
    pub async fn wait_applied(&self, offset: u64, deadline: tokio::time::Instant) -> bool {
        let mut state = self.state.clone();
        let reached = state.wait_for(|state| state.applied_offset >= offset);
        matches!(tokio::time::timeout_at(deadline, reached).await, Ok(Ok(_)))
    }

    /// Waits until `ready` holds for topic `name` in the metadata this node has applied, up
    /// to `deadline`: `Some` with the topic's instance id then (`None` inside when there is no
    /// such topic), `None` if the deadline came first.
    pub(crate) async fn wait_for_topic(
        &self,
        name: &str,
        deadline: tokio::time::Instant,
        ready: impl Fn(Option<&ClusterTopic>) -> bool,
    ) -> Option<Option<String>> {
        let mut state = self.state.clone();
        let reached = state.wait_for(|state| ready(state.topics.get(name)));
        match tokio::time::timeout_at(deadline, reached).await {
            Ok(Ok(state)) => Some(state.topics.get(name).map(|t| t.id.clone())),
            _ => None,
        }
    }

    /// Opens this node's replica of partition `partition` of `topic`, whose log lives in `dir`;
    /// a new replica of the replica set the topic was created with forms the partition's group
    /// with that set (every one does so, with the same membership, which openraft allows).
    pub async fn open_replica(
        &self,
        topic: &ClusterTopic,
        partition: u32,
        dir: &Path,
        config: LogConfig,
    ) -> Result<PartitionReplica, OpenReplicaError> {
        let group = topic.group_name();
        let set = usize::try_from(partition)
            .ok()
            .and_then(|p| topic.created.get(p))
            .cloned()
            .unwrap_or_default();
        // A replica of the set the topic was created with forms the group with that set; a
        // replica added later (in place of a node that left) waits for the group's leader to
        // take it in, as a learner first.
        let form = if set.contains(&self.node_id()) {
            let state = self.state();
            let voters: BTreeMap<NodeId, BasicNode> = set
                .iter()
                .filter_map(|id| {
                    let node = state.nodes.get(id)?;
                    Some((*id, BasicNode::new(&node.peer_address)))
                })
                .collect();
            if voters.len() == set.len() {
                set.first()
                    .map(|&preferred| Formation { voters, preferred })
            } else {
                tracing::warn!(
                    group,
                    partition,
                    ?set,
                    "a replica's node is not registered: the partition's group waits for its leader"
                );
                None
            }
        } else {
            None
        };
        let replica = self
            .node
            .open_partition(&group, partition, dir, config, form)
            .await?;
        Ok(replica)
    }

    /// Restarts this node's replica of partition `partition` of the group named `group`, whose
    /// other voter left the cluster for good, as the group's only voter (see
    /// [`PeerNode::restart_alone`]).
    pub async fn restart_alone(
        &self,
        group: &str,
        partition: u32,
        dir: &Path,
        replica: PartitionReplica,
    ) -> Result<PartitionReplica, OpenReplicaError> {
        self.node
            .restart_alone(group, partition, dir, replica)
            .await
    }

    /// Stops this node's replica of partition `partition` of the group named `group`.
    pub async fn close_replica(&self, group: &str, partition: u32) {
        self.node.close_partition(group, partition).await;
    }

    /// Proposes `command` to the metadata log if this node leads the metadata group, and waits
    /// for it to be committed; the metadata log's offset after it.
    pub(crate) async fn propose(&self, command: &MetadataCommand) -> Result<u64, NotProposed> {
        let raft = match membership::route(&self.node.groups()) {
            Ok(membership::Route::Here(raft)) => raft,
            Ok(membership::Route::Leader(address)) => return Err(NotProposed::Leader(address)),
            Err(reason) => return Err(NotProposed::Unavailable(reason)),
        };
        match membership::limited(raft.client_write(command.to_write())).await {
            Ok(written) => Ok(written.data.high_watermark),
            Err(reason) => Err(NotProposed::Unavailable(reason)),
        }
    }

    /// Where the metadata group's leader is: `Ok(None)` here, `Ok(Some(peer address))`
    /// elsewhere; why there is none known now.
    pub(crate) fn metadata_leader_address(&self) -> Result<Option<String>, String> {
        match membership::route(&self.node.groups())? {
            membership::Route::Here(_) => Ok(None),
            membership::Route::Leader(address) => Ok(Some(address)),
        }
    }

    /// This node's clients of its peers.
    pub(crate) fn clients(&self) -> Arc<super::peer::PeerClients> {
        self.node.clients()
    }

    /// A permit to pass a service's request on to a peer (waits while [`MAX_PASSING`] are).
    pub(crate) async fn passing_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.passing).acquire_owned().await.ok()
    }

    /// Serves services' requests that peers pass on with `handler`.
    pub(crate) fn serve_passed_on(&self, handler: PassedOnHandler) {
        self.node.serve_passed_on(handler);
    }

    /// Asks node `to` (at peer address `address`) to stand for election in partition
    /// `partition` of the group named `group`, which this node leads and hands over; whether
    /// it will. At most [`STAND_CALL_WAIT`].
    pub(crate) async fn ask_to_stand(
        &self,
        group: &str,
        partition: u32,
        to: NodeId,
        address: &str,
    ) -> Result<bool, String> {
        use sidestream_proto::peer::v1::{Stand, peer_request};
        let group = Some(super::peer::wire::group(group, partition));
        let body = peer_request::Body::Stand(Stand {
            leader: self.node_id(),
        });
        let standing: Result<bool, ()> = self
            .node
            .clients()
            .call_json(address, group, body, "stand result", STAND_CALL_WAIT)
            .await
            .map_err(|e| format!("node {to}: {e}"))?;
        standing.map_err(|()| format!("node {to} answered an error"))
    }

    /// From now on this node stands for election in no partition on a leader's call (it is
    /// stopping: leadership handed back to it would go again at once).
    pub(crate) fn stop_standing(&self) {
        self.node
            .groups()
            .stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Takes node `id` out of the cluster (through the metadata leader, wherever it is).
    pub async fn decommission(&self, id: NodeId) -> Result<Left, LeaveError> {
        membership::handle_leave(&self.node.groups(), &self.node.clients(), id).await
    }

    /// Stops registering and following, then every replica and the peer port.
    pub async fn shutdown(&self) {
        for task in &self.tasks {
            task.abort();
        }
        self.node.shutdown().await;
    }
}

impl std::fmt::Debug for ClusterMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterMember")
            .field("node", &self.node)
            .field("peer_address", &self.peer_address)
            .finish_non_exhaustive()
    }
}

/// The transport settings of peer connections: `tuning`'s, but a silent peer is given up after
/// 2 s (keep-alives every 0.5 s) instead of 30 s. A peer restarted on the same address resets
/// the old connection as soon as a packet of it arrives (its reset key outlives the process),
/// but one that is gone, or came back elsewhere, says nothing: without this the callers' calls
/// to it would vanish into the old connection until it timed out.
fn peer_tuning(tuning: &QuicTuning) -> QuicTuning {
    let mut peer = tuning.clone();
    peer.keep_alive_interval = Some(Duration::from_millis(500));
    peer.idle_timeout = Some(Duration::from_secs(2));
    peer
}

/// The seeds a node without a formed cluster joins through: with `bootstrap_expect`, the
/// members found (before the configured seeds), or none if the sidecars started with it agreed
/// that this node forms the cluster; otherwise the configured seeds.
async fn settle(node: &PeerNode, node_id: NodeId, config: &ClusterConfig) -> Vec<String> {
    if config.bootstrap_expect == 0 {
        return config.seeds.clone();
    }
    let groups = node.groups();
    let settled = bootstrap::settle(
        &node.clients(),
        &groups.bootstrap,
        node_id,
        &config.seeds,
        config.bootstrap_expect,
    )
    .await;
    match settled {
        // Formed as by a node without seeds; registered through itself.
        Settled::Form => Vec::new(),
        Settled::Join(members) => members.into_iter().chain(config.seeds.clone()).collect(),
    }
}

/// Asks the seeds, in turn, whether this node, without cluster state of its own, may join
/// (`join.fresh`), until one answers; the refusal if the cluster knows the node or removed it.
async fn check_fresh(
    clients: &super::peer::PeerClients,
    join: &Join,
    seeds: &[String],
) -> Result<(), ClusterError> {
    let mut attempt = 0_u64;
    loop {
        let seed = &seed_address(seeds, attempt).await;
        match membership::forward_join(clients, seed, join.clone()).await {
            Ok(_) => return Ok(()),
            Err(reason) if reason.is_permanent() => return Err(ClusterError::Refused(reason)),
            Err(reason) => {
                if attempt >= 10 {
                    tracing::warn!(node = join.node_id, %seed, %reason, "no seed has said whether this node may join yet");
                }
            }
        }
        attempt += 1;
        tokio::time::sleep(JOIN_RETRY).await;
    }
}

/// The address to try at attempt `attempt`: the seeds' addresses in turn, a DNS name standing
/// for each address it resolves to (a headless Service's pods, of which only some may be
/// members yet); the seed itself when none resolves.
async fn seed_address(seeds: &[String], attempt: u64) -> String {
    let addresses = bootstrap::resolve_all(seeds).await;
    let pick = |list: &[String]| list[usize::try_from(attempt).unwrap_or(0) % list.len()].clone();
    if addresses.is_empty() {
        pick(seeds)
    } else {
        pick(&addresses)
    }
}

/// How long a leader handing over waits for the preferred replica to answer its call to
/// stand (before it holds publishes back: an unreachable replica costs them nothing).
const STAND_CALL_WAIT: Duration = Duration::from_millis(500);

/// How long a node waits between two attempts to join.
const JOIN_RETRY: Duration = Duration::from_millis(500);

/// Asks to join until a metadata leader takes this node in: through each seed in turn, or
/// through itself when it has none (the first node, or a restarted member, whose own replica
/// knows the leader).
async fn register(
    groups: Arc<super::peer::RaftGroups>,
    clients: Arc<super::peer::PeerClients>,
    join: Join,
    seeds: Vec<String>,
    refuse: watch::Sender<Option<String>>,
) {
    let mut attempt = 0_u64;
    loop {
        let result = if seeds.is_empty() {
            membership::handle_join(&groups, &clients, join.clone()).await
        } else {
            let seed = &seed_address(&seeds, attempt).await;
            membership::forward_join(&clients, seed, join.clone()).await
        };
        match result {
            Ok(JoinAccepted { leader, voter }) => {
                tracing::info!(
                    node = join.node_id,
                    leader,
                    voter,
                    "registered with the cluster"
                );
                return;
            }
            Err(reason) if reason.is_permanent() => {
                tracing::error!(node = join.node_id, %reason, "the cluster will not take this node in");
                refuse.send_replace(Some(reason.to_string()));
                return;
            }
            Err(reason) => {
                // Expected while the group elects its first leader; worth a warning after that.
                if attempt >= 10 {
                    tracing::warn!(node = join.node_id, %reason, "not registered with the cluster yet");
                } else {
                    tracing::debug!(node = join.node_id, %reason, "not registered with the cluster yet");
                }
            }
        }
        attempt += 1;
        tokio::time::sleep(JOIN_RETRY).await;
    }
}
