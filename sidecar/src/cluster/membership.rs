//! Joining a cluster: how a sidecar becomes a member of the metadata group and is registered
//! with its addresses, whichever member it asks.
//!
//! ```text
//!   joiner ── Join ──▶ any member ── Join ──▶ metadata leader: add_learner (waits until caught up)
//!                     (not leader: passes it on)              change_membership (while < 3 voters)
//!                                                             client_write(RegisterNode)
//! ```
//!
//! The first node of a cluster, started without seeds, forms the metadata group alone and
//! registers itself the same way. A restarted node asks again: it is already a member, so only
//! its addresses are registered anew.

use std::collections::BTreeSet;

use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};
use sidestream_proto::peer::v1::{Join, Leave, PeerErrorCode, PeerRequest, peer_request};

use super::metadata::{MAX_VOTERS, METADATA_TOPIC, MetadataCommand};
use super::peer::{PeerClients, RaftGroups, wire};
use super::type_config::NodeId;

/// What the metadata leader answers a joining node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinAccepted {
    /// The metadata leader that took the node in.
    pub leader: NodeId,
    /// Whether the node votes in the metadata group.
    pub voter: bool,
}

/// Takes `join` in if this sidecar leads the metadata group, or passes it on to the leader.
///
/// The error names why the node could not join now (no leader yet, the leader unreachable, a
/// membership change refused); the joiner asks again.
pub(crate) async fn handle_join(
    groups: &RaftGroups,
    clients: &PeerClients,
    join: Join,
) -> Result<JoinAccepted, String> {
    let group = groups
        .get(METADATA_TOPIC, 0)
        .ok_or("this sidecar does not hold the cluster's metadata")?;
    let raft = group.raft;
    let metrics = raft.metrics().borrow().clone();
    let leader = metrics
        .current_leader
        .ok_or("the metadata group has no leader at the moment")?;
    if leader != metrics.id {
        let address = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|node| node.addr.clone())
            .ok_or_else(|| format!("the metadata leader {leader} has no known address"))?;
        return forward(clients, &address, join).await;
    }

    // One join at a time: each decides from the membership the previous one left.
    let _one_at_a_time = groups.membership_changes.lock().await;
    let metrics = raft.metrics().borrow().clone();
    let id = join.node_id;
    let membership = metrics.membership_config.membership().clone();
    let known = membership.get_node(&id).map(|node| node.addr.as_str());
    if known != Some(join.peer_address.as_str()) {
        // Replicates the metadata log to it and waits until it has caught up.
        raft.add_learner(id, BasicNode::new(&join.peer_address), true)
            .await
            .map_err(|e| format!("cannot add node {id} to the metadata group: {e}"))?;
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let mut voter = voters.contains(&id);
    if !voter && voters.len() < MAX_VOTERS {
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
            .await
            .map_err(|e| format!("cannot make node {id} a voter of the metadata group: {e}"))?;
        voter = true;
    }
    let register = MetadataCommand::RegisterNode {
        node_id: id,
        peer_address: join.peer_address,
        client_address: join.client_address,
    };
    raft.client_write(register.to_write())
        .await
        .map_err(|e| format!("cannot register node {id}: {e}"))?;
    tracing::info!(node = id, voter, "node joined the cluster");
    Ok(JoinAccepted {
        leader: metrics.id,
        voter,
    })
}

/// Asks the member at `address` to take `join` in.
pub(crate) async fn forward(
    clients: &PeerClients,
    address: &str,
    join: Join,
) -> Result<JoinAccepted, String> {
    let request = PeerRequest {
        group: Some(wire::group(METADATA_TOPIC, 0)),
        body: Some(peer_request::Body::Join(join)),
    };
    let response = clients
        .call(address, &request)
        .await
        .map_err(|e| e.to_string())?;
    if response.code != i32::from(PeerErrorCode::Ok) {
        return Err(format!("{address} refused the join: {}", response.message));
    }
    wire::from_json::<Result<JoinAccepted, String>>(&response.result, "join result")
        .map_err(|e| e.to_string())?
}

/// The cluster after a node left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Left {
    /// The voters of the metadata group now, sorted.
    pub voters: Vec<NodeId>,
}

/// Why a node could not leave the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum LeaveError {
    /// The node is not a member.
    #[error("{0}")]
    UnknownNode(String),
    /// The node is the metadata group's only voter, and no learner can take its place.
    #[error("{0}")]
    LastVoter(String),
    /// The metadata group cannot take the change now (no leader, the leader unreachable, a
    /// change refused); asking again may succeed.
    #[error("{0}")]
    Unavailable(String),
}

/// Takes node `id` out of the cluster if this sidecar leads the metadata group, or passes the
/// request on to the leader.
///
/// A voter's place goes to a learner first, if there is one, so the metadata group keeps its
/// size; then the node leaves the registry and the group.
pub(crate) async fn handle_leave(
    groups: &RaftGroups,
    clients: &PeerClients,
    id: NodeId,
) -> Result<Left, LeaveError> {
    let unavailable = |why: String| LeaveError::Unavailable(why);
    let group = groups
        .get(METADATA_TOPIC, 0)
        .ok_or_else(|| unavailable("this sidecar does not hold the cluster's metadata".into()))?;
    let raft = group.raft;
    let metrics = raft.metrics().borrow().clone();
    let leader = metrics
        .current_leader
        .ok_or_else(|| unavailable("the metadata group has no leader at the moment".into()))?;
    if leader != metrics.id {
        let address = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|node| node.addr.clone())
            .ok_or_else(|| {
                unavailable(format!("the metadata leader {leader} has no known address"))
            })?;
        return forward_leave(clients, &address, id).await;
    }

    let _one_at_a_time = groups.membership_changes.lock().await;
    let membership = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .clone();
    if membership.get_node(&id).is_none() {
        return Err(LeaveError::UnknownNode(format!(
            "node {id} is not a member of the cluster"
        )));
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let change_failed = |what: &str, e: &dyn std::fmt::Display| {
        unavailable(format!("cannot {what} node {id}: {e}"))
    };
    if voters.contains(&id) {
        let learner = membership.learner_ids().find(|&learner| learner != id);
        match learner {
            Some(learner) => {
                raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([learner])), true)
                    .await
                    .map_err(|e| change_failed("promote a learner in place of", &e))?;
            }
            None if voters.len() == 1 => {
                return Err(LeaveError::LastVoter(format!(
                    "node {id} is the metadata group's only voter; start another node first"
                )));
            }
            None => {}
        }
    }
    raft.client_write(MetadataCommand::DeregisterNode { node_id: id }.to_write())
        .await
        .map_err(|e| change_failed("deregister", &e))?;
    let change = if voters.contains(&id) {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    // Not retained: a removed voter leaves the group altogether rather than stay a learner.
    let written = raft
        .change_membership(change, false)
        .await
        .map_err(|e| change_failed("remove", &e))?;
    let voters = written
        .membership
        .map(|m| m.voter_ids().collect())
        .unwrap_or_default();
    tracing::info!(node = id, ?voters, "node left the cluster");
    Ok(Left { voters })
}

/// Asks the member at `address` to take node `id` out of the cluster.
async fn forward_leave(
    clients: &PeerClients,
    address: &str,
    id: NodeId,
) -> Result<Left, LeaveError> {
    let request = PeerRequest {
        group: Some(wire::group(METADATA_TOPIC, 0)),
        body: Some(peer_request::Body::Leave(Leave { node_id: id })),
    };
    let response = clients
        .call(address, &request)
        .await
        .map_err(|e| LeaveError::Unavailable(e.to_string()))?;
    if response.code != i32::from(PeerErrorCode::Ok) {
        return Err(LeaveError::Unavailable(format!(
            "{address} refused the request: {}",
            response.message
        )));
    }
    wire::from_json::<Result<Left, LeaveError>>(&response.result, "leave result")
        .map_err(|e| LeaveError::Unavailable(e.to_string()))?
}
