//! Joining and leaving a cluster: how a sidecar becomes a member of the metadata group and is
//! registered with its addresses, and how a node is taken out, whichever member is asked.
//!
//! ```text
//!   joiner ── Join ──▶ any member ── Join ──▶ metadata leader: add_learner, wait until caught up
//!                     (not leader: passes it on)              client_write(RegisterNode)
//!                                                             AddVoterIds (to 3 voters, then 5;
//!                                                             learners that have the registration)
//!   operator ── DecommissionNode ──▶ any member ── Leave ──▶ metadata leader:
//!                                                 client_write(DeregisterNode)
//!                                                 AddVoterIds(a learner that has it, for a voter)
//!                                                 remove the node
//! ```
//!
//! The first node of a cluster, started without seeds, forms the metadata group alone and
//! registers itself the same way. A restarted member asks again under its id and address: it
//! is a member already, so only its registration is written anew. A join under an id that is
//! a member at another address is refused (decommission it first). Changes are made one at a
//! time and each waits at most [`CHANGE_TIMEOUT`], so a joiner that dies half-way or a node
//! that cannot be reached never holds up the next change.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sidestream_proto::peer::v1::{Join, Leave, peer_request};

use super::matched;
use super::metadata::{MAX_VOTERS, METADATA_TOPIC, MetadataCommand};
use super::peer::{PeerClients, RaftGroups, wire};
use super::type_config::{NodeId, PartitionRaft};

/// The longest a membership change (or a learner's catching up) may take before the request
/// is answered with an error; the node asks again.
pub(crate) const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a join or leave passed on to the metadata leader waits for its answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a join waits for the learners it would promote to show they are current.
const PROMOTION_WAIT: Duration = Duration::from_secs(2);

/// What the metadata leader answers a joining node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinAccepted {
    /// The metadata leader that took the node in.
    pub leader: NodeId,
    /// Whether the node votes in the metadata group.
    pub voter: bool,
}

/// Where a membership request is handled: here (this sidecar leads the metadata group), or at
/// the leader's peer address.
pub(crate) enum Route {
    Here(openraft::Raft<PartitionRaft>),
    Leader(String),
}

/// Where the metadata group's leader is, as this sidecar knows it.
pub(crate) fn route(groups: &RaftGroups) -> Result<Route, String> {
    let group = groups
        .get(METADATA_TOPIC, 0)
        .ok_or("this sidecar does not hold the cluster's metadata")?;
    let metrics = group.raft.metrics().borrow().clone();
    let leader = metrics
        .current_leader
        .ok_or("the metadata group has no leader at the moment")?;
    if leader == metrics.id {
        return Ok(Route::Here(group.raft));
    }
    metrics
        .membership_config
        .membership()
        .get_node(&leader)
        .map(|node| Route::Leader(node.addr.clone()))
        .ok_or_else(|| format!("the metadata leader {leader} has no known address"))
}

/// Why a node could not join the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum JoinError {
    /// The node is known to the cluster, but came back without its data: its votes and its
    /// copies of partitions are gone, so it must not take its old place.
    #[error("{0}")]
    LostState(String),
    /// The node's id was removed from the cluster for good; it is never taken in again.
    #[error("{0}")]
    Departed(String),
    /// The id is a member at another peer address.
    #[error("{0}")]
    IdTaken(String),
    /// The metadata group cannot take the node in now (no leader, the leader unreachable, a
    /// change that failed or took too long); asking again may succeed.
    #[error("{0}")]
    Unavailable(String),
}

impl JoinError {
    /// Whether asking again can never succeed (the node must change, not wait).
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::LostState(_) | Self::Departed(_))
    }
}

/// Takes `join` in if this sidecar leads the metadata group, or passes it on to the leader.
///
/// A `fresh` join (a node without cluster state of its own) is only checked: refused if the
/// cluster knows the id or removed it, answered at once otherwise, changing nothing.
pub(crate) async fn handle_join(
    groups: &RaftGroups,
    clients: &PeerClients,
    join: Join,
) -> Result<JoinAccepted, JoinError> {
    let raft = match route(groups).map_err(JoinError::Unavailable)? {
        Route::Here(raft) => raft,
        Route::Leader(address) => return forward_join(clients, &address, join).await,
    };
    let id = join.node_id;
    tracing::info!(peer_address = %join.peer_address, fresh = join.fresh, "node {id} asks to join the cluster");
    // One change at a time: each decides from the membership the previous one left.
    let _one_at_a_time = groups.membership_changes.lock().await;
    let metrics = raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    let (registered, departed) = groups.cluster_state.get().map_or((false, false), |state| {
        let state = state.borrow();
        (state.nodes.contains_key(&id), state.departed.contains(&id))
    });
    if departed {
        return Err(JoinError::Departed(format!(
            "node id {id} was removed from the cluster for good and is never taken in again: start the node under a new id"
        )));
    }
    if join.fresh {
        if registered || membership.get_node(&id).is_some() {
            return Err(JoinError::LostState(format!(
                "node {id} is a member of the cluster, but this sidecar has no cluster state (its data directory is new): a node that lost its data must not take its old place, as the votes and partition copies it had are gone; take it out with `sidestream cluster decommission {id}` and start it under a new id, or start it on its old data directory"
            )));
        }
        return Ok(JoinAccepted {
            leader: metrics.id,
            voter: false,
        });
    }
    match membership.get_node(&id).map(|node| node.addr.as_str()) {
        Some(known) if known != join.peer_address => {
            return Err(JoinError::IdTaken(format!(
                "node id {id} is a member at {known}, not at {}: decommission it first, or use another id",
                join.peer_address
            )));
        }
        Some(_) => {}
        None => {
            let last = metrics.last_log_index.unwrap_or(0);
            limited(raft.add_learner(id, BasicNode::new(&join.peer_address), false))
                .await
                .map_err(|e| {
                    JoinError::Unavailable(format!(
                        "cannot add node {id} to the metadata group: {e}"
                    ))
                })?;
            // Replicating the metadata log to it; voting waits until it has it.
            limited(async {
                raft.wait(None)
                    .metrics(
                        |m| matched(m, id) >= Some(last),
                        format!("node {id} catches up"),
                    )
                    .await
            })
            .await
            .map_err(|e| {
                JoinError::Unavailable(format!(
                    "node {id} did not catch up with the metadata log: {e}"
                ))
            })?;
        }
    }
    let register = MetadataCommand::RegisterNode {
        node_id: id,
        peer_address: join.peer_address,
        client_address: join.client_address,
    };
    let registered = limited(raft.client_write(register.to_write()))
        .await
        .map_err(|e| JoinError::Unavailable(format!("cannot register node {id}: {e}")))?;
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let mut voter = voters.contains(&id);
    if !voter {
        let promote = promotion(&raft, &voters, id, registered.log_id.index).await;
        if !promote.is_empty() {
            limited(raft.change_membership(ChangeMembers::AddVoterIds(promote.clone()), true))
                .await
                .map_err(|e| {
                    JoinError::Unavailable(format!(
                        "cannot make nodes {promote:?} voters of the metadata group: {e}"
                    ))
                })?;
            voter = true;
        }
    }
    tracing::info!(node = id, voter, "node joined the cluster");
    Ok(JoinAccepted {
        leader: metrics.id,
        voter,
    })
}

/// The learners that become voters as node `joiner` (a learner now) joins, among those that
/// show they are alive and current: each must have the joiner's registration (at index
/// `registered`) within [`PROMOTION_WAIT`] (a dead learner's last known position never goes
/// stale, and the metadata log moves seldom).
async fn promotion(
    raft: &openraft::Raft<PartitionRaft>,
    voters: &BTreeSet<NodeId>,
    joiner: NodeId,
    registered: u64,
) -> BTreeSet<NodeId> {
    let learners: Vec<NodeId> = {
        let metrics = raft.metrics();
        let m = metrics.borrow();
        m.membership_config.membership().learner_ids().collect()
    };
    if new_voters(voters, joiner, learners.iter().copied()).is_empty() {
        return BTreeSet::new();
    }
    let live = |m: &openraft::RaftMetrics<NodeId, BasicNode>| {
        let current = learners
            .iter()
            .copied()
            .filter(|&l| matched(m, l) >= Some(registered));
        let promote = new_voters(voters, joiner, current);
        (promote.iter().all(|&n| matched(m, n) >= Some(registered)) && !promote.is_empty())
            .then_some(promote)
    };
    let waited = raft
        .wait(Some(PROMOTION_WAIT))
        .metrics(|m| live(m).is_some(), "learners current for a promotion")
        .await;
    waited.ok().and_then(|m| live(&m)).unwrap_or_default()
}

/// The nodes that become voters of the metadata group as node `joiner` (a caught-up learner
/// now) joins it, given its `voters` and its other caught-up `learners`: the joiner while
/// there are fewer than three voters; at three, the joiner and one learner together, as a
/// group of four tolerates no more failures than one of three; at four, the joiner. None once
/// there are [`MAX_VOTERS`].
fn new_voters(
    voters: &BTreeSet<NodeId>,
    joiner: NodeId,
    learners: impl Iterator<Item = NodeId>,
) -> BTreeSet<NodeId> {
    match voters.len() {
        n if n >= MAX_VOTERS => BTreeSet::new(),
        3 => {
            let mut others = learners.filter(|&l| l != joiner && !voters.contains(&l));
            others
                .next()
                .map(|other| BTreeSet::from([joiner, other]))
                .unwrap_or_default()
        }
        _ => BTreeSet::from([joiner]),
    }
}

/// `change` within [`CHANGE_TIMEOUT`]; its own error or the timeout, as text.
pub(crate) async fn limited<T, E: std::fmt::Display>(
    change: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CHANGE_TIMEOUT, change).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no result within {CHANGE_TIMEOUT:?}")),
    }
}

/// Asks the member at `address` to take `join` in.
pub(crate) async fn forward_join(
    clients: &PeerClients,
    address: &str,
    join: Join,
) -> Result<JoinAccepted, JoinError> {
    forward_call(
        clients,
        address,
        peer_request::Body::Join(join),
        "join result",
    )
    .await
    .map_err(JoinError::Unavailable)?
}

/// Makes the membership call `body` to the member at `address` (the metadata group's) and
/// reads its answer, a `Result` as JSON.
async fn forward_call<T: DeserializeOwned>(
    clients: &PeerClients,
    address: &str,
    body: peer_request::Body,
    what: &'static str,
) -> Result<T, String> {
    let group = Some(wire::group(METADATA_TOPIC, 0));
    clients
        .call_json(address, group, body, what, FORWARD_TIMEOUT)
        .await
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
    /// change that failed or took too long); asking again may succeed.
    #[error("{0}")]
    Unavailable(String),
}

/// Takes node `id` out of the cluster if this sidecar leads the metadata group, or passes the
/// request on to the leader.
///
/// The node leaves the registry; a voter's place goes to a learner that shows it is current
/// (it has the deregistration within [`PROMOTION_WAIT`]), if there is one, so the group keeps
/// its size; then the node leaves the group.
pub(crate) async fn handle_leave(
    groups: &RaftGroups,
    clients: &PeerClients,
    id: NodeId,
) -> Result<Left, LeaveError> {
    let raft = match route(groups).map_err(LeaveError::Unavailable)? {
        Route::Here(raft) => raft,
        Route::Leader(address) => {
            let body = peer_request::Body::Leave(Leave { node_id: id });
            return forward_call(clients, &address, body, "leave result")
                .await
                .map_err(LeaveError::Unavailable)?;
        }
    };
    let _one_at_a_time = groups.membership_changes.lock().await;
    let metrics = raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    if membership.get_node(&id).is_none() {
        return Err(LeaveError::UnknownNode(format!(
            "node {id} is not a member of the cluster"
        )));
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let failed = |what: &str, e: String| LeaveError::Unavailable(format!("cannot {what}: {e}"));
    if voters.len() == 1 && voters.contains(&id) && membership.learner_ids().next().is_none() {
        return Err(LeaveError::LastVoter(format!(
            "node {id} is the metadata group's only voter; start another node first"
        )));
    }
    let deregistered =
        limited(raft.client_write(MetadataCommand::DeregisterNode { node_id: id }.to_write()))
            .await
            .map_err(|e| failed(&format!("deregister node {id}"), e))?;
    let index = deregistered.log_id.index;
    if voters.contains(&id) {
        // A learner that shows it is alive and current (it has the deregistration) takes the
        // vote, so the group keeps its size.
        let current = |m: &openraft::RaftMetrics<NodeId, BasicNode>| {
            m.membership_config
                .membership()
                .learner_ids()
                .find(|&l| l != id && matched(m, l) >= Some(index))
        };
        let waited = raft
            .wait(Some(PROMOTION_WAIT))
            .metrics(|m| current(m).is_some(), "a current learner")
            .await;
        match waited.ok().and_then(|m| current(&m)) {
            Some(learner) => {
                let promote = ChangeMembers::AddVoterIds(BTreeSet::from([learner]));
                limited(raft.change_membership(promote, true))
                    .await
                    .map_err(|e| {
                        failed(&format!("promote node {learner} in place of node {id}"), e)
                    })?;
            }
            None if voters.len() == 1 => {
                return Err(LeaveError::LastVoter(format!(
                    "node {id} is the metadata group's only voter, and no learner is current enough to take its place"
                )));
            }
            None => {}
        }
    }
    // The leaving node must learn it left (its replicas move away, and it hands over the
    // partitions it leads) before it is cut off from the metadata; a dead one never will.
    let _ = tokio::time::timeout(
        CHANGE_TIMEOUT,
        raft.wait(None).metrics(
            |m| matched(m, id) >= Some(index),
            format!("node {id} learns it left"),
        ),
    )
    .await;
    let change = if voters.contains(&id) {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    // Not retained: a removed voter leaves the group altogether rather than stay a learner.
    let written = limited(raft.change_membership(change, false))
        .await
        .map_err(|e| failed(&format!("remove node {id}"), e))?;
    let voters = written
        .membership
        .map(|m| m.voter_ids().collect())
        .unwrap_or_default();
    tracing::info!(node = id, ?voters, "node left the cluster");
    Ok(Left { voters })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn the_metadata_group_grows_to_three_voters_then_to_five_in_a_pair() {
        // One at a time up to three.
        assert_eq!(new_voters(&set(&[]), 1, [].into_iter()), set(&[1]));
        assert_eq!(new_voters(&set(&[1, 2]), 3, [3].into_iter()), set(&[3]));
        // The fourth node waits as a learner: four voters need three for a majority.
        assert_eq!(new_voters(&set(&[1, 2, 3]), 4, [4].into_iter()), set(&[]));
        // The fifth brings the fourth in with it.
        assert_eq!(
            new_voters(&set(&[1, 2, 3]), 5, [4, 5].into_iter()),
            set(&[4, 5])
        );
        // Four voters (one left): the next joiner makes five.
        assert_eq!(
            new_voters(&set(&[1, 2, 3, 5]), 6, [6].into_iter()),
            set(&[6])
        );
        // Five: everyone else follows.
        assert_eq!(
            new_voters(&set(&[1, 2, 3, 4, 5]), 6, [6, 7].into_iter()),
            set(&[])
        );
    }
}
