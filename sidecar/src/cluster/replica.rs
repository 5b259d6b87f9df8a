//! A sidecar's replica of one partition: its segment log, state machine and Raft, joined to
//! the partition's Raft group through the peer port.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use openraft::{BasicNode, Config, SnapshotPolicy};
use sidestream_log::{FileStorage, Log, LogConfig, Offset, OpenError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::election::{self, Heard};
use super::member::PassedOnHandler;
use super::network::PartitionNetwork;
use super::peer::{Group, PeerClients, RaftGroups, server};
use super::snapshot::LoadSnapshotError;
use super::state_machine::StateMachineAlive;
use super::type_config::{NodeId, PartitionRaft};
use super::{PartitionLogStore, PartitionStateMachine};
use crate::tls::PeerTls;
use sidestream::transport::{BindError, QuicTuning};
use sidestream_proto::peer::v1::Hello;

/// How often a partition's leader sends heartbeats.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// The openraft settings of every partition group.
///
/// openraft's own elections are off: a timer of Sidestream's own triggers them, with a timeout drawn
/// afresh for every round. `election_timeout_max` remains openraft's leader lease (a follower
/// refuses votes for this long after hearing from its leader), shorter than the shortest
/// election timeout. The state machine's snapshot is a few hundred bytes of metadata, so
/// snapshots are cheap and taken every 4096 entries; the log is never purged because of one
/// (`max_in_snapshot_log_to_keep` is unbounded): a partition's log is its data, and only
/// retention removes it. A snapshot sent to a follower carries the log's batches, in chunks
/// of 1 MiB; the last chunk's call waits for the follower to rebuild its log from them, so
/// the call may take up to a minute.
pub fn partition_raft_config() -> Config {
    Config {
        cluster_name: "sidestream-partition".into(),
        heartbeat_interval: duration_ms(HEARTBEAT_INTERVAL),
        election_timeout_min: 200,
        election_timeout_max: 250,
        enable_elect: false,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(4096),
        max_in_snapshot_log_to_keep: u64::MAX,
        snapshot_max_chunk_size: 1 << 20,
        install_snapshot_timeout: 60_000,
        ..Config::default()
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Why a replica could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenReplicaError {
    /// The partition's log could not be opened.
    #[error(transparent)]
    Log(#[from] OpenError),
    /// The partition's saved snapshot could not be loaded.
    #[error(transparent)]
    Snapshot(#[from] LoadSnapshotError),
    /// openraft refused the settings or could not start.
    #[error("partition {partition} of {topic:?}: raft: {reason}")]
    Raft {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// What openraft said.
        reason: String,
    },
}

/// The replica set a new partition's group is formed with: every replica of the set the
/// topic was created with forms it with the same membership (which openraft allows), so each
/// holds the membership whoever stands first.
#[derive(Debug)]
pub struct Formation {
    /// The voters, with their peer addresses.
    pub voters: BTreeMap<NodeId, BasicNode>,
    /// The set's first node, its preferred leader (placement spreads them evenly).
    pub preferred: NodeId,
}

impl Formation {
    /// Forms the group on this replica; the preferred leader stands again at once if the
    /// first round found no leader (they all stood together), ahead of the others' election
    /// timers.
    async fn form(
        self,
        raft: &openraft::Raft<PartitionRaft>,
        me: NodeId,
        topic: &str,
        partition: u32,
    ) {
        if let Err(error) = raft.initialize(self.voters).await {
            // Left to the replicas that did form it: they take this one in.
            tracing::warn!(topic, partition, %error, "a replica did not form its partition's group");
            return;
        }
        if self.preferred == me {
            let raft = raft.clone();
            // Stops by itself: a closed replica's Raft answers with an error.
            tokio::spawn(async move {
                tokio::time::sleep(FIRST_STAND_AGAIN).await;
                if raft.metrics().borrow().current_leader.is_none() {
                    let _ = raft.trigger().elect().await;
                }
            });
        }
    }
}

/// Names why a replica of partition `partition` of `topic` could not start or go on.
fn raft_failure(topic: &str, partition: u32) -> impl Fn(String) -> OpenReplicaError + '_ {
    move |reason| OpenReplicaError::Raft {
        topic: topic.to_owned(),
        partition,
        reason,
    }
}

/// The log store of a replica of `topic`'s partition whose log is `log`.
fn log_store(topic: &str, log: Arc<Log>) -> PartitionLogStore {
    let store = PartitionLogStore::new(log);
    // The cluster's metadata is acted on as it is applied (a deleted topic's files go at
    // once), so its state must never go back after a restart: its rare commits are saved
    // before openraft applies them. A partition's state may lag a moment (see
    // `PartitionLogStore::save_commits_in_background`).
    if topic == super::metadata::METADATA_TOPIC {
        store
    } else {
        store.save_commits_in_background()
    }
}

/// Longest a replica restarted alone waits for its old state machine to stop (it may be
/// saving a snapshot of a few hundred bytes).
const STATE_MACHINE_STOP: Duration = Duration::from_secs(10);

/// When the first node of a new partition's replica set stands again if the group's first
/// round of votes found no leader: before any other replica's election timer (300 ms at the
/// earliest) fires.
const FIRST_STAND_AGAIN: Duration = Duration::from_millis(100);

/// One partition's replica on this sidecar.
#[derive(Clone)]
pub struct PartitionReplica {
    /// The partition's Raft.
    pub raft: openraft::Raft<PartitionRaft>,
    /// The partition's log (the Raft log): read committed data from it, below the high
    /// watermark.
    pub log: Arc<Log>,
    /// The high watermark: the offset after the last committed data batch, as this replica
    /// has applied it.
    pub high_watermark: watch::Receiver<Offset>,
    /// The idempotent producers' table as the committed batches left it.
    pub(crate) producers: Arc<std::sync::Mutex<crate::topics::producers::Producers>>,
    /// The consumer groups' positions as the committed group commands left them.
    pub(crate) groups: Arc<std::sync::Mutex<super::group_state::GroupTable>>,
    /// The log store openraft writes through (to sweep its recent entries).
    pub(crate) store: PartitionLogStore,
    /// Alive while the replica's state machine or a snapshot builder of it is.
    state_machine: StateMachineAlive,
}

impl PartitionReplica {
    /// This replica's node id in its group.
    pub fn raft_id(&self) -> NodeId {
        self.raft.metrics().borrow().id
    }
}

impl std::fmt::Debug for PartitionReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionReplica")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

/// A sidecar's place in a cluster: its peer port, its connections to peers, and the Raft
/// groups of the partitions it holds replicas of.
///
/// Method families, in order of use: [`start`](Self::start), then
/// [`open_partition`](Self::open_partition) for each replica, then
/// [`shutdown`](Self::shutdown).
pub struct PeerNode {
    node_id: NodeId,
    endpoint: quinn::Endpoint,
    clients: Arc<PeerClients>,
    groups: Arc<RaftGroups>,
    shutdown: watch::Sender<bool>,
    server: std::sync::Mutex<Option<JoinHandle<()>>>,
    passed_on: Arc<OnceLock<PassedOnHandler>>,
    /// The peer port's transport settings, and whether it is bound to a loopback address:
    /// what reloaded certificates are installed with.
    tuning: QuicTuning,
    loopback: bool,
}

impl PeerNode {
    /// Binds the peer port on `addr` and serves peers' calls on it; `advertise` is the address
    /// the cluster knows this node by (default: the bound address).
    pub fn start(
        node_id: NodeId,
        addr: std::net::SocketAddr,
        advertise: Option<String>,
        tls: PeerTls,
        tuning: &QuicTuning,
    ) -> Result<Self, BindError> {
        let endpoint = tls.bind(addr, tuning)?;
        let bound = endpoint
            .local_addr()
            .map_err(|source| BindError::Io { addr, source })?;
        let hello = Hello {
            node_id,
            peer_address: advertise.unwrap_or_else(|| bound.to_string()),
        };
        let groups = Arc::new(RaftGroups::default());
        let (shutdown, stopping) = watch::channel(false);
        let passed_on = Arc::new(OnceLock::new());
        let clients = Arc::new_cyclic(|clients| {
            let acceptor = server::acceptor(
                Arc::clone(&groups),
                clients.clone(),
                Arc::clone(&passed_on),
                stopping.clone(),
            );
            PeerClients::new(endpoint.clone(), tuning.handshake_timeout, hello, acceptor)
        });
        let server = tokio::spawn(server::serve(
            endpoint.clone(),
            tls,
            Arc::clone(&groups),
            Arc::clone(&clients),
            Arc::clone(&passed_on),
            stopping,
        ));
        Ok(Self {
            node_id,
            endpoint,
            clients,
            groups,
            shutdown,
            server: std::sync::Mutex::new(Some(server)),
            passed_on,
            tuning: tuning.clone(),
            loopback: addr.ip().is_loopback(),
        })
    }

    /// Makes the peer port present and check `tls`'s certificates from now on, in the
    /// connections peers open and in those this node opens; the open ones keep theirs. The
    /// identities this node takes as peers stay those it started with.
    pub(crate) fn reload_tls(&self, tls: &PeerTls) {
        self.endpoint
            .set_server_config(Some(tls.server_config(&self.tuning, self.loopback)));
        self.clients
            .set_client_config(tls.client_config(&self.tuning, self.loopback));
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Serves services' requests that peers pass on with `handler` (the first one set stays).
    pub(crate) fn serve_passed_on(&self, handler: PassedOnHandler) {
        let _ = self.passed_on.set(handler);
    }

    /// The Raft groups this node holds.
    pub(crate) fn groups(&self) -> Arc<RaftGroups> {
        Arc::clone(&self.groups)
    }

    /// This node's clients of its peers.
    pub(crate) fn clients(&self) -> Arc<PeerClients> {
        Arc::clone(&self.clients)
    }

    /// The peer address the cluster knows this node by.
    pub fn peer_address(&self) -> &str {
        self.clients.peer_address()
    }

    /// How many QUIC connections the peer port has open (to and from peers).
    pub fn open_connections(&self) -> usize {
        self.endpoint.open_connections()
    }

    /// The peer port's address.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Opens this node's replica of partition `partition` of `topic`, whose log lives in
    /// `dir`, and joins it to the partition's Raft group.
    ///
    /// With `form`, a replica that has not yet formed or joined a group forms one
    /// (`Raft::initialize`) before its peers can reach it: a replica that granted a vote
    /// first could not form it any more, and if that candidate died before its first entry
    /// reached the others, none of them would hold a membership to elect with.
    pub async fn open_partition(
        &self,
        topic: &str,
        partition: u32,
        dir: &Path,
        log_config: LogConfig,
        form: Option<Formation>,
    ) -> Result<PartitionReplica, OpenReplicaError> {
        let raft_error = raft_failure(topic, partition);
        if *self.shutdown.borrow() {
            return Err(raft_error("the node is shutting down".into()));
        }
        if self.groups.contains(topic, partition) {
            return Err(raft_error(
                "a replica of it is already open on this node".into(),
            ));
        }
        let log = Arc::new(Log::open(Arc::new(FileStorage), dir, log_config)?);
        self.start_group(topic, partition, dir, log_store(topic, log), form)
            .await
    }

    /// Stops this node's replica of partition `partition` of `topic`, whose group lost its
    /// other voter for good, and starts it again as the group's only voter and leader, on the
    /// same log: a committed vote of this node in a new term and a membership of this node
    /// alone are written to the log first (`PartitionLogStore::take_over_alone`); openraft
    /// takes the last membership in the log as the group's, and the vote as its leadership.
    /// The replica commits what its log holds; its leader takes the partition's new replicas
    /// in from there.
    ///
    /// For a group of two voters only (see `Replicated::stranded`): each entry committed in
    /// it, every event acknowledged with `acks=all` among them, is on both voters, so on this
    /// one. A node that left cannot come back into the group: its appends and candidacies
    /// are of older terms, and the cluster refuses it when it asks to join. Returns the
    /// replica that replaces `replica`, which must not be used any more (its Raft is
    /// stopped).
    pub async fn restart_alone(
        &self,
        topic: &str,
        partition: u32,
        dir: &Path,
        replica: PartitionReplica,
    ) -> Result<PartitionReplica, OpenReplicaError> {
        let raft_error = raft_failure(topic, partition);
        let me = BasicNode::new(self.peer_address());
        let PartitionReplica {
            raft,
            log,
            state_machine,
            ..
        } = replica;
        // The old Raft must be gone before the log is written behind its back: its state
        // machine (and any snapshot it is building) too, which the new one replaces.
        self.close_partition(topic, partition).await;
        let _ = raft.shutdown().await;
        drop(raft);
        let waited = tokio::time::timeout(STATE_MACHINE_STOP, async {
            while state_machine.strong_count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        if waited.is_err() {
            return Err(raft_error(format!(
                "its old state machine did not stop within {STATE_MACHINE_STOP:?}"
            )));
        }
        let store = log_store(topic, log);
        let membership = openraft::Membership::new(
            vec![std::collections::BTreeSet::from([self.node_id])],
            BTreeMap::from([(self.node_id, me)]),
        );
        let forced = store
            .take_over_alone(self.node_id, membership)
            .await
            .map_err(|e| raft_error(format!("cannot make this node the only voter: {e}")))?;
        tracing::warn!(topic, partition, log_id = %forced, "the partition's other replica left the cluster for good: restarting its group with this replica as the only voter");
        self.start_group(topic, partition, dir, store, None).await
    }

    /// The part of [`open_partition`](Self::open_partition) after the log is open.
    async fn start_group(
        &self,
        topic: &str,
        partition: u32,
        dir: &Path,
        store: PartitionLogStore,
        form: Option<Formation>,
    ) -> Result<PartitionReplica, OpenReplicaError> {
        let raft_error = raft_failure(topic, partition);
        let log = Arc::clone(store.log());
        // On the blocking pool: it may finish a snapshot install a crash cut short.
        let state_machine = {
            let (dir, store) = (dir.to_path_buf(), store.clone());
            tokio::task::spawn_blocking(move || PartitionStateMachine::open(&dir, &store))
                .await
                .map_err(|e| raft_error(e.to_string()))??
        };
        let high_watermark = state_machine.watch_high_watermark();
        let alive = state_machine.alive();
        let producers = state_machine.shared_producers();
        let groups = state_machine.shared_groups();
        let config = partition_raft_config()
            .validate()
            .map_err(|e| raft_error(e.to_string()))?;
        let heard = Arc::new(Heard::new());
        let network = PartitionNetwork::new(
            self.node_id,
            topic,
            partition,
            Arc::clone(&self.clients),
            Arc::clone(&heard),
        );
        let raft = openraft::Raft::new(
            self.node_id,
            Arc::new(config),
            network,
            store.clone(),
            state_machine,
        )
        .await
        .map_err(|e| raft_error(e.to_string()))?;
        if let Some(formation) = form
            && !raft.is_initialized().await.unwrap_or(true)
        {
            formation.form(&raft, self.node_id, topic, partition).await;
        }
        // The timer counts from now: opening (re-applying the log, forming the group) may have
        // taken longer than an election timeout, and nothing could be heard before.
        heard.now();
        let election = tokio::spawn(election::run(raft.clone(), Arc::clone(&heard))).abort_handle();
        let group = Group {
            raft: raft.clone(),
            heard,
            election,
        };
        if let Err(group) = self.groups.insert(topic, partition, group) {
            // Opened twice at once: the first stays.
            group.election.abort();
            let _ = group.raft.shutdown().await;
            return Err(raft_error(
                "a replica of it is already open on this node".into(),
            ));
        }
        if *self.shutdown.borrow() {
            // The node began shutting down while the replica opened: stop it with the others.
            self.close_partition(topic, partition).await;
            return Err(raft_error("the node is shutting down".into()));
        }
        Ok(PartitionReplica {
            raft,
            log,
            high_watermark,
            producers,
            groups,
            store,
            state_machine: alive,
        })
    }

    /// Stops this node's replica of partition `partition` of `topic` (its files stay); does
    /// nothing if it holds none.
    pub async fn close_partition(&self, topic: &str, partition: u32) {
        if let Some(raft) = self.groups.remove(topic, partition)
            && let Err(error) = raft.shutdown().await
        {
            tracing::warn!(topic, partition, %error, "a partition's raft did not stop cleanly");
        }
    }

    /// Stops every replica's Raft, then the peer port. Later calls do nothing more.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        for raft in self.groups.drain() {
            if let Err(error) = raft.shutdown().await {
                tracing::warn!(%error, "a partition's raft did not stop cleanly");
            }
        }
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"sidecar shutting down");
        let server = self
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(server) = server {
            let _ = server.await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

impl std::fmt::Debug for PeerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerNode")
            .field("node_id", &self.node_id)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}
