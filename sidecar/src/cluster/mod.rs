//! Partition replication with openraft: the partition's Raft log *is* its segment log.
//!
//! Each openraft entry is exactly one record batch in the partition's
//! [`Log`](sidestream_log::Log), so nothing is written twice:
//!
//! ```text
//!   openraft entry                                        record batch in the partition log
//!   ─────────────────────────────────────────────         ───────────────────────────────────────
//!   Normal(PartitionWrite(producer's batch))  ── as is ──▶ data batch; its records take offsets
//!   Blank                                     ── control ▶ control batch, kind Blank, empty payload
//!   Membership(m)                             ── control ▶ control batch, kind Membership, JSON of m
//!
//!   Log::append_entry(batch, (term, index)) stamps the header; these bytes lie before the CRC,
//!   so the producer's CRC stays valid:
//!
//!    0        8      12       20       28
//!    +--------+------+--------+--------+---+-----+-------------------+---------------------
//!    | base   | len  | raft   | raft   | m | crc | attributes, …     | records / payload
//!    | offset |      | term   | index  |   |     |                   |
//!    +--------+------+--------+--------+---+-----+-------------------+---------------------
//!        ▲               ▲        ▲
//!        │               └────────┴── log_id = (term, index): decode() reads them back
//!        └── the log's next offset (a control batch takes none: its records-to-be start here)
//! ```
//!
//! Offsets are assigned by the log at append time, so replicas whose logs agree up to an entry
//! agree on its offsets: the leader's batch travels to followers with its offset stamped, and a
//! follower's log gives it the same one (the log store checks). Truncating a divergent suffix
//! gives its offsets back.
//!
//! Who calls what:
//!
//! ```text
//!   openraft RaftCore ── append, truncate, purge, vote, committed ──▶ PartitionLogStore ─┐
//!   replication tasks ── try_get_log_entries ──▶ PartitionLogStore (clone) ──────────────┼─▶ Arc<Log>
//!   openraft sm worker ── apply, snapshots ──▶ PartitionStateMachine ──▶ raft-snapshot file
//! ```
//!
//! The state machine is small: last applied log id, last membership, the high watermark and the
//! idempotent producers' table; its snapshots are that metadata, saved beside the log.

mod bootstrap;
mod bundle;
mod election;
mod entry_codec;
mod group_state;
mod log_store;
mod member;
mod membership;
mod metadata;
mod network;
pub(crate) mod peer;
mod replica;
mod snapshot;
mod state_machine;
mod type_config;

pub use election::ELECTION_TIMEOUT;
pub(crate) use group_state::{GroupApplied, GroupCommand, GroupPosition};
pub use log_store::PartitionLogStore;
pub use member::{ClusterConfig, ClusterError, ClusterMember};
pub(crate) use member::{NotProposed, PassedOnHandler};
pub use membership::{JoinAccepted, JoinError, LeaveError, Left};
pub use metadata::{
    ClusterState, ClusterTopic, MAX_VOTERS, METADATA_TOPIC, MetadataCommand, NodeInfo,
};
pub use network::{PartitionNetwork, PeerLink};
pub use peer::RaftGroups;
pub use replica::{
    HEARTBEAT_INTERVAL, OpenReplicaError, PartitionReplica, PeerNode, partition_raft_config,
};
pub use snapshot::{LoadSnapshotError, PartitionState};
pub use state_machine::{PartitionSnapshotBuilder, PartitionStateMachine};
pub use type_config::{
    AppendNotice, Applied, NodeId, PartitionEntry, PartitionRaft, PartitionWrite,
};

/// The last log index the leader knows node `id` holds, from a leader's Raft metrics (`None`
/// elsewhere, or for a node it does not replicate to).
pub(crate) fn matched(
    metrics: &openraft::RaftMetrics<NodeId, openraft::BasicNode>,
    id: NodeId,
) -> Option<u64> {
    let replication = metrics.replication.as_ref()?;
    replication.get(&id).copied().flatten().map(|log| log.index)
}

#[cfg(test)]
mod replication_tests;
#[cfg(test)]
mod tests;
