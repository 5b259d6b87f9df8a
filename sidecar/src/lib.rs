//! The Sidestream sidecar: the per-node daemon that holds partition logs, replicates them to
//! peer sidecars, and serves the services on its node.
//!
//! Today the crate holds `cluster`: partition replication with openraft, whose Raft log is the
//! partition's segment log from `sidestream-log` (one Raft entry is one record batch). Beside
//! it will come `server` (QUIC listener, request handlers, routing to partition leaders),
//! `groups` (consumer groups), `admin` (HTTP health, metrics and admin API) and `cli` (the
//! `sidestream` subcommands). `tls` holds the sidecar's side of mutual TLS and the
//! development certificates it creates on first start.
//!
//! What it deliberately does not do: the on-disk log format, recovery and retention (that is
//! `sidestream-log`, which knows nothing of openraft), or Raft itself (that is openraft; the
//! sidecar implements only its storage and network traits).
//!
//! Central types: [`PartitionLogStore`] (openraft's log storage over a partition's
//! [`Log`](sidestream_log::Log)), [`PartitionStateMachine`] (high watermark, membership,
//! snapshots) and [`PartitionRaft`] (the openraft type configuration).
//!
//! ```
//! use std::sync::Arc;
//! use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
//! use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
//! use sidestream_log::{FileStorage, Log, LogConfig};
//! use sidestream_sidecar::{PartitionLogStore, PartitionRaft, PartitionStateMachine};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let log = Log::open(Arc::new(FileStorage), dir.path(), LogConfig::default())?;
//! let mut store = PartitionLogStore::new(Arc::new(log));
//! let _state_machine = PartitionStateMachine::open(dir.path(), &store)?;
//!
//! let blank = Entry::<PartitionRaft> {
//!     log_id: LogId::new(CommittedLeaderId::new(1, 0), 0),
//!     payload: EntryPayload::Blank,
//! };
//! store.blocking_append([blank]).await?; // one control batch, fsynced
//! assert_eq!(store.get_log_state().await?.last_log_id.map(|id| id.index), Some(0));
//! # Ok(())
//! # }
//! ```

mod admin;
mod atomic_file;
pub mod cli;
mod cluster;
mod config;
mod groups;
mod metrics;
mod server;
mod tls;
mod topics;

pub use admin::AdminBindError;
pub use cluster::{
    AppendNotice, Applied, ClusterConfig, ClusterError, ClusterMember, ClusterState, ClusterTopic,
    ELECTION_TIMEOUT, HEARTBEAT_INTERVAL, JoinAccepted, JoinError, LeaveError, Left,
    LoadSnapshotError, MAX_VOTERS, METADATA_TOPIC, MetadataCommand, NodeId, NodeInfo,
    OpenReplicaError, PartitionEntry, PartitionLogStore, PartitionNetwork, PartitionRaft,
    PartitionReplica, PartitionSnapshotBuilder, PartitionState, PartitionStateMachine,
    PartitionWrite, PeerLink, PeerNode, RaftGroups, partition_raft_config,
};
pub use config::{DEFAULT_ADMIN_PORT, DEFAULT_CLIENT_PORT, SidecarConfig, TlsSource};
pub use groups::OpenGroupsError;
pub use server::{RunningSidecar, SidecarError, run};
pub use tls::{
    ClientIdentity, DEV_CLIENT_IDENTITY, DevCertificates, DevCertificatesError, IdentityError,
    PeerTls, ServerTls,
};
pub use topics::{
    Cleanup, InvalidTopicConfig, LogSettings, MAX_PARTITIONS, TopicDefaults, TopicSpec, TopicsError,
};
