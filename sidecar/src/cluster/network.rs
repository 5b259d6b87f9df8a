//! openraft's network for partition groups: each call of a partition's Raft to a peer becomes
//! one peer call ([`super::peer`]).

use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use sidestream_proto::peer::v1::{PeerErrorCode, PeerRequest, RaftGroup, peer_request};

use super::election::Heard;
use super::peer::wire;
use super::peer::{CallError, PeerClients};
use super::type_config::{NodeId, PartitionRaft};

/// Makes the links of one partition's Raft group to its peers.
#[derive(Debug, Clone)]
pub struct PartitionNetwork {
    node_id: NodeId,
    group: RaftGroup,
    clients: Arc<PeerClients>,
    heard: Arc<Heard>,
}

impl PartitionNetwork {
    /// The network of partition `partition` of `topic` on node `node_id`, calling peers
    /// through `clients`; `heard` is the replica's election timer's, told when a peer's log
    /// is longer than this replica's.
    pub(crate) fn new(
        node_id: NodeId,
        topic: &str,
        partition: u32,
        clients: Arc<PeerClients>,
        heard: Arc<Heard>,
    ) -> Self {
        Self {
            node_id,
            group: wire::group(topic, partition),
            clients,
            heard,
        }
    }
}

impl RaftNetworkFactory<PartitionRaft> for PartitionNetwork {
    type Network = PeerLink;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerLink {
        PeerLink {
            node_id: self.node_id,
            target,
            node: node.clone(),
            group: self.group.clone(),
            clients: Arc::clone(&self.clients),
            heard: Arc::clone(&self.heard),
        }
    }
}

/// A partition group's link to one peer.
#[derive(Debug)]
pub struct PeerLink {
    node_id: NodeId,
    target: NodeId,
    node: BasicNode,
    group: RaftGroup,
    clients: Arc<PeerClients>,
    heard: Arc<Heard>,
}

/// An RPC error of a call that failed with `E` on the remote group.
type CallFailed<E = openraft::error::Infallible> =
    RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl PeerLink {
    /// Makes the call `body` within `option`'s hard deadline and reads the group's answer.
    async fn call<T, E>(
        &self,
        action: RPCTypes,
        body: peer_request::Body,
        option: &RPCOption,
    ) -> Result<T, CallFailed<E>>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let request = PeerRequest {
            group: Some(self.group.clone()),
            body: Some(body),
        };
        let ttl = option.hard_ttl();
        let response = tokio::time::timeout(ttl, self.clients.call(&self.node.addr, &request))
            .await
            .map_err(|_| self.timeout(action, ttl))?
            .map_err(|error| match error {
                // Nobody there, or the connection broke: back off before calling again.
                CallError::Address { .. }
                | CallError::Connect { .. }
                | CallError::Connection { .. } => RPCError::Unreachable(Unreachable::new(&error)),
                CallError::Stream { .. } | CallError::Answer { .. } => network_error(&error),
            })?;
        match PeerErrorCode::try_from(response.code) {
            Ok(PeerErrorCode::Ok) => {}
            code => {
                let refused = Refused {
                    code: code.map_or_else(
                        |_| response.code.to_string(),
                        |c| c.as_str_name().to_owned(),
                    ),
                    message: response.message,
                };
                return Err(match code {
                    Ok(PeerErrorCode::UnknownGroup | PeerErrorCode::Unavailable) => {
                        RPCError::Unreachable(Unreachable::new(&refused))
                    }
                    _ => network_error(&refused),
                });
            }
        }
        let result: Result<T, RaftError<NodeId, E>> =
            wire::from_json(&response.result, "peer result").map_err(|e| network_error(&e))?;
        result.map_err(|remote| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                remote,
            ))
        })
    }

    fn timeout<E: std::error::Error>(&self, action: RPCTypes, after: Duration) -> CallFailed<E> {
        RPCError::Timeout(Timeout {
            action,
            id: self.node_id,
            target: self.target,
            timeout: after,
        })
    }
}

/// Most bytes of entries in one append-entries call (one entry alone may be larger, up to the
/// largest batch a log accepts).
const APPEND_BUDGET_BYTES: usize = 4 << 20;

/// Asks openraft to send at most `entries` entries per call.
fn too_large<E: std::error::Error>(entries: usize) -> CallFailed<E> {
    RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(
        u64::try_from(entries.max(1)).unwrap_or(u64::MAX),
    ))
}

/// A failure to send a call, which openraft retries at once.
fn network_error<E: std::error::Error>(
    error: &(impl std::error::Error + 'static),
) -> CallFailed<E> {
    RPCError::Network(NetworkError::new(error))
}

/// A peer's refusal of a call, as an error for openraft.
#[derive(Debug, thiserror::Error)]
#[error("peer refused the call ({code}): {message}")]
struct Refused {
    code: String,
    message: String,
}

impl RaftNetwork<PartitionRaft> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, CallFailed> {
        let entries = rpc.entries.len();
        let append = wire::encode_append(&rpc).map_err(|e| network_error(&e))?;
        // Past the budget, ask openraft for fewer entries (it retries with the hint), so that a
        // lagging follower's catch-up calls fit a frame and the call's deadline.
        let bytes: usize = append.entries.iter().map(bytes::Bytes::len).sum();
        if entries > 1 && bytes > APPEND_BUDGET_BYTES {
            let fit = append
                .entries
                .iter()
                .scan(0, |total, batch| {
                    *total += batch.len();
                    Some(*total)
                })
                .take_while(|&total| total <= APPEND_BUDGET_BYTES)
                .count()
                .max(1);
            return Err(too_large(fit));
        }
        let answer = self
            .call(
                RPCTypes::AppendEntries,
                peer_request::Body::AppendEntries(append),
                &option,
            )
            .await;
        match answer {
            // The deadline is one heartbeat interval: a call of many entries that missed it is
            // retried with half as many, down to one.
            Err(RPCError::Timeout(_)) if entries > 1 => Err(too_large(entries / 2)),
            answer => answer,
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, CallFailed<InstallSnapshotError>> {
        let json = wire::to_json(&rpc, "install_snapshot").map_err(|e| network_error(&e))?;
        self.call(
            RPCTypes::InstallSnapshot,
            peer_request::Body::InstallSnapshot(json.into()),
            &option,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, CallFailed> {
        let json = wire::to_json(&rpc, "vote").map_err(|e| network_error(&e))?;
        let answer: Result<VoteResponse<NodeId>, _> = self
            .call(
                RPCTypes::Vote,
                peer_request::Body::Vote(json.into()),
                &option,
            )
            .await;
        // Refused by a voter whose log is longer: this candidacy cannot win, and standing again
        // soon would only raise the term past the one that can (see `Heard::yield_to`).
        if let Ok(vote) = &answer
            && !vote.vote_granted
            && vote.last_log_id > rpc.last_log_id
        {
            self.heard.yield_to();
        }
        answer
    }
}
