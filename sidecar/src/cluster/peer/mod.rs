//! The peer port: sidecars calling into each other's Raft groups over QUIC with mutual TLS.
//!
//! ```text
//!   sidecar A                                                   sidecar B
//!   openraft (partition p, leader) ─▶ PeerLink ─▶ PeerClients ══QUIC══▶ server::serve ─▶ RaftGroups ─▶ openraft (p, follower)
//!                                    (network)   one connection        one stream       (topic, p)
//!                                                per pair of sidecars  per call
//! ```
//!
//! Whichever sidecar opens the connection introduces itself with a `Hello` call; the other
//! then makes its own calls on that connection ([`PeerClients::adopt`]) instead of opening
//! one, and both serve calls on every peer connection (`server::acceptor` for those opened
//! here).
//!
//! A call is one bidirectional stream carrying one `PeerRequest` frame and one `PeerResponse`
//! frame (docs/PROTOCOL.md, "Peer protocol"). The accepting side serves only callers whose
//! certificate names a sidecar identity ([`PeerTls`](crate::tls::PeerTls)), and answers a call
//! for a group it does not hold with `PEER_ERROR_CODE_UNKNOWN_GROUP`, which the caller's Raft
//! treats as an unreachable peer and retries.

mod client;
pub(crate) mod server;
pub(crate) mod wire;

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

pub(crate) use client::{CallError, PeerClients};

use super::election::Heard;
use super::type_config::PartitionRaft;

/// A Raft group as the peer port delivers calls to it.
#[derive(Clone)]
pub(crate) struct Group {
    /// The replica's Raft.
    pub(crate) raft: openraft::Raft<PartitionRaft>,
    /// When the replica last heard from its group (see [`super::election`]).
    pub(crate) heard: std::sync::Arc<Heard>,
    /// The replica's election timer, stopped when the group is taken out.
    pub(crate) election: tokio::task::AbortHandle,
}

/// The largest peer frame. An append-entries call carries at most 4 MiB of entries
/// (`APPEND_BUDGET_BYTES` in `network.rs`; openraft is asked for fewer past it), or one entry
/// alone, which is at most the log's batch limit (8 MiB by default); the rest is room.
pub(crate) const PEER_FRAME_LIMIT: u32 = 256 << 20;

/// Most bytes a peer frame's buffer is reserved ahead of what has arrived: a whole append
/// (so that its entries are not moved each time the buffer grows), not a whole frame limit on
/// a length prefix alone.
pub(crate) const PEER_RESERVE_AHEAD: usize = 16 << 20;

/// The Raft groups this sidecar holds a replica of, by (topic, partition): where peer calls
/// are delivered.
#[derive(Default)]
pub struct RaftGroups {
    groups: RwLock<HashMap<(String, u32), Group>>,
    /// Held while a join changes the metadata group's membership: one change at a time, each
    /// deciding from the membership the previous one left.
    pub(crate) membership_changes: tokio::sync::Mutex<()>,
    /// The cluster's metadata as this node applies it, once its metadata replica is open: a
    /// join is checked against the registry (a node that lost its data, an id removed for
    /// good).
    pub(crate) cluster_state:
        std::sync::OnceLock<tokio::sync::watch::Receiver<crate::cluster::metadata::ClusterState>>,
    /// This node's part in forming a cluster with others started with it.
    pub(crate) bootstrap: super::bootstrap::BootstrapState,
    /// The node is stopping: it refuses to stand for election on a leader's call.
    pub(crate) stopping: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for RaftGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups = self.groups.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_set().entries(groups.keys()).finish()
    }
}

impl RaftGroups {
    /// Delivers peer calls for partition `partition` of `topic` to `group` from now on.
    ///
    /// Refuses (giving `group` back) when the partition already has a group here: two Rafts
    /// must never share one replica's log.
    pub(crate) fn insert(&self, topic: &str, partition: u32, group: Group) -> Result<(), Group> {
        let mut groups = self.groups.write().unwrap_or_else(PoisonError::into_inner);
        match groups.entry((topic.to_owned(), partition)) {
            std::collections::hash_map::Entry::Occupied(_) => Err(group),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(group);
                Ok(())
            }
        }
    }

    /// Whether the partition has a group here.
    pub(crate) fn contains(&self, topic: &str, partition: u32) -> bool {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&(topic.to_owned(), partition))
    }

    /// Stops delivering calls for the partition; returns its Raft, if it was held.
    pub fn remove(&self, topic: &str, partition: u32) -> Option<openraft::Raft<PartitionRaft>> {
        self.groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(topic.to_owned(), partition))
            .map(|group| {
                group.election.abort();
                group.raft
            })
    }

    /// Takes every group out, to stop them.
    pub(crate) fn drain(&self) -> Vec<openraft::Raft<PartitionRaft>> {
        self.groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, group)| {
                group.election.abort();
                group.raft
            })
            .collect()
    }

    /// Whether node `id` is a member at `peer_address` of any group held here: a peer's `Hello`
    /// is believed only then (any sidecar certificate could claim any address).
    pub(crate) fn knows(&self, id: super::type_config::NodeId, peer_address: &str) -> bool {
        let groups = self.groups.read().unwrap_or_else(PoisonError::into_inner);
        groups.values().any(|group| {
            group
                .raft
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&id)
                .is_some_and(|node| node.addr == peer_address)
        })
    }

    /// The partition's group, if this sidecar holds a replica.
    pub(crate) fn get(&self, topic: &str, partition: u32) -> Option<Group> {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(topic.to_owned(), partition))
            .cloned()
    }
}
