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
use sidestream_proto::peer::v1::{Join, PeerErrorCode, PeerRequest, peer_request};

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
