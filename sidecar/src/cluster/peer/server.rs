//! The accepting side of the peer port: every call a peer sidecar makes into one of this
//! sidecar's Raft groups.

use std::sync::{Arc, OnceLock, Weak};

use prost::Message;
use sidestream_proto::{Request, Response};

use bytes::BytesMut;
use openraft::error::{Fatal, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest,
};
use quinn::{Connection, Endpoint, Incoming, RecvStream, SendStream};
use sidestream_proto::FrameCodec;
use sidestream_proto::peer::v1::{
    PeerErrorCode, PeerRequest, PeerResponse, RaftGroup, peer_request,
};
use tokio::sync::watch;

use super::client::Acceptor;
use super::wire::{self, WireError};
use super::{PEER_FRAME_LIMIT, PEER_RESERVE_AHEAD, PeerClients, RaftGroups};
use crate::cluster::member::PassedOnHandler;
use crate::cluster::membership;
use crate::cluster::type_config::{NodeId, PartitionRaft};
use crate::server::frames::read_frame;
use crate::tls::{ClientIdentity, PeerTls};

/// Serves peers' calls on `endpoint` until `shutdown` turns true or the endpoint closes.
pub(crate) async fn serve(
    endpoint: Endpoint,
    tls: PeerTls,
    groups: Arc<RaftGroups>,
    clients: Arc<PeerClients>,
    passed_on: Arc<OnceLock<PassedOnHandler>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let tls = Arc::new(tls);
    let connections_shutdown = shutdown.clone();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => {
                    tokio::spawn(connection(
                        incoming,
                        Arc::clone(&tls),
                        Peers {
                            groups: Arc::clone(&groups),
                            clients: Arc::clone(&clients),
                            passed_on: Arc::clone(&passed_on),
                        },
                        connections_shutdown.clone(),
                    ));
                }
                None => return,
            },
            _ = shutdown.wait_for(|down| *down) => return,
        }
    }
}

/// What a call may reach: this sidecar's Raft groups, its clients to pass a call on, and what
/// answers services' requests passed on to it.
#[derive(Clone)]
struct Peers {
    groups: Arc<RaftGroups>,
    clients: Arc<PeerClients>,
    passed_on: Arc<OnceLock<PassedOnHandler>>,
}

async fn connection(
    incoming: Incoming,
    tls: Arc<PeerTls>,
    peers: Peers,
    mut shutdown: watch::Receiver<bool>,
) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            tracing::debug!(%remote, %error, "peer handshake failed");
            return;
        }
    };
    match ClientIdentity::of(&connection) {
        Ok(identity) if tls.is_peer(&identity) => {
            tracing::debug!(%remote, identity = identity.as_str(), "peer connected");
        }
        Ok(identity) => {
            tracing::warn!(%remote, identity = identity.as_str(), "refused a peer connection from an identity that is not a sidecar's");
            connection.close(
                NOT_A_PEER,
                b"this certificate's identity is not a sidecar's",
            );
            return;
        }
        Err(error) => {
            tracing::warn!(%remote, %error, "peer certificate has no usable identity");
            connection.close(NOT_A_PEER, b"certificate has no usable identity");
            return;
        }
    }
    calls(&connection, &peers, &mut shutdown).await;
}

/// What serves the peer's calls on the connections this sidecar opens: the same as on those it
/// accepts. Holds its clients weakly (they hold it).
pub(crate) fn acceptor(
    groups: Arc<RaftGroups>,
    clients: Weak<PeerClients>,
    passed_on: Arc<OnceLock<PassedOnHandler>>,
    shutdown: watch::Receiver<bool>,
) -> Acceptor {
    Arc::new(move |connection: Connection| {
        let Some(clients) = clients.upgrade() else {
            return;
        };
        let peers = Peers {
            groups: Arc::clone(&groups),
            clients,
            passed_on: Arc::clone(&passed_on),
        };
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move { calls(&connection, &peers, &mut shutdown).await });
    })
}

async fn calls(connection: &Connection, peers: &Peers, shutdown: &mut watch::Receiver<bool>) {
    loop {
        tokio::select! {
            stream = connection.accept_bi() => match stream {
                Ok((send, recv)) => {
                    tokio::spawn(call(peers.clone(), connection.clone(), send, recv));
                }
                Err(_) => return,
            },
            _ = shutdown.wait_for(|down| *down) => return,
        }
    }
}

/// Answers the one call on a stream.
async fn call(peers: Peers, connection: Connection, mut send: SendStream, mut recv: RecvStream) {
    let codec = FrameCodec::<PeerRequest>::new(PEER_FRAME_LIMIT);
    let mut buf = BytesMut::new();
    let answer = match read_frame(&mut recv, &codec, &mut buf, PEER_RESERVE_AHEAD).await {
        Ok(Some(request)) => answer(&peers, &connection, request).await,
        Ok(None) => Answer::Peer(wire::refused(
            PeerErrorCode::Malformed,
            "the stream ended before a request frame",
        )),
        Err(error) => Answer::Peer(wire::refused(PeerErrorCode::Malformed, error.to_string())),
    };
    // As on the calling side: Raft's answers before those of the services' requests.
    let _ = send.set_priority(match answer {
        Answer::Peer(_) => super::client::RAFT_PRIORITY,
        Answer::Passed(_) => super::client::PASSED_ON_PRIORITY,
    });
    let codec = FrameCodec::<PeerResponse>::new(PEER_FRAME_LIMIT);
    let frame = match &answer {
        Answer::Peer(response) => codec.encode_to_bytes(response).map(|frame| vec![frame]),
        // The service's response is the result, its batches not copied into the frame.
        Answer::Passed(response) => codec.encode_answered(response),
    };
    match frame {
        Ok(mut frame) => {
            if send.write_all_chunks(&mut frame).await.is_ok() {
                let _ = send.finish();
            }
        }
        Err(error) => tracing::error!(%error, "peer response does not fit a frame"),
    }
}

/// The answer to a peer call.
enum Answer {
    /// A peer response of its own.
    Peer(PeerResponse),
    /// The answer to a service's request passed on: the `OK` peer response whose result is
    /// this response.
    Passed(Response),
}

/// What a Raft group of this sidecar (or the sidecar's server, for a service's request passed
/// on) answers to `request`.
async fn answer(peers: &Peers, connection: &Connection, request: PeerRequest) -> Answer {
    try_answer(peers, connection, request)
        .await
        .unwrap_or_else(|error| Answer::Peer(malformed(&error)))
}

/// The answer to a call that could not be read.
fn malformed(error: &WireError) -> PeerResponse {
    tracing::debug!(%error, "malformed peer call");
    wire::refused(PeerErrorCode::Malformed, error.to_string())
}

/// A call into one Raft group.
enum RaftCall {
    Vote(bytes::Bytes),
    AppendEntries(sidestream_proto::peer::v1::AppendEntries),
    InstallSnapshot(bytes::Bytes),
    Stand(sidestream_proto::peer::v1::Stand),
}

async fn try_answer(
    peers: &Peers,
    connection: &Connection,
    request: PeerRequest,
) -> Result<Answer, WireError> {
    let call = match request.body {
        None => {
            return Ok(Answer::Peer(wire::refused(
                PeerErrorCode::Unsupported,
                "the request has no body this sidecar knows (sent by a newer sidecar?)",
            )));
        }
        Some(peer_request::Body::Join(join)) => {
            let result = membership::handle_join(&peers.groups, &peers.clients, join).await;
            let json = wire::to_json(&result, "join result")?;
            return Ok(Answer::Peer(wire::answered(json)));
        }
        Some(peer_request::Body::Hello(hello)) => {
            // Any sidecar certificate could claim any address: believe the claim only when the
            // connection comes from that address (the peer dials from its peer port), or when
            // a group here knows that node at that address.
            let from_there = super::client::resolve(&hello.peer_address)
                .await
                .is_ok_and(|(addr, _)| addr == connection.remote_address());
            if (from_there || peers.groups.knows(hello.node_id, &hello.peer_address))
                && peers.clients.adopt(&hello.peer_address, connection.clone())
            {
                tracing::debug!(node = hello.node_id, peer = %hello.peer_address, "sharing the connection a peer opened");
            }
            return Ok(Answer::Peer(wire::answered(b"{\"Ok\":null}".to_vec())));
        }
        Some(peer_request::Body::Bootstrap(call)) => {
            // Formed: its metadata group has voters (it formed it, or a leader's calls
            // reached it). A metadata replica opened but not formed (a sidecar that stopped
            // between deciding to form and forming) is not.
            let formed = peers
                .groups
                .get(crate::cluster::metadata::METADATA_TOPIC, 0)
                .is_some_and(|group| {
                    let metrics = group.raft.metrics().borrow().clone();
                    metrics
                        .membership_config
                        .membership()
                        .voter_ids()
                        .next()
                        .is_some()
                });
            let answer = peers.groups.bootstrap.answer(
                peers.clients.node_id(),
                formed,
                (call.step(), call.candidate, call.round),
                std::time::Instant::now(),
            );
            let json = wire::to_json(&answer, "bootstrap answer")?;
            return Ok(Answer::Peer(wire::answered(json)));
        }
        Some(peer_request::Body::Leave(leave)) => {
            let result =
                membership::handle_leave(&peers.groups, &peers.clients, leave.node_id).await;
            let json = wire::to_json(&result, "leave result")?;
            return Ok(Answer::Peer(wire::answered(json)));
        }
        Some(peer_request::Body::Client(passed)) => {
            let Some(handler) = peers.passed_on.get() else {
                return Ok(Answer::Peer(wire::refused(
                    PeerErrorCode::Unavailable,
                    "this sidecar is starting: it does not serve services' requests yet",
                )));
            };
            let request = Request::decode(passed.request).map_err(WireError::PassedOn)?;
            return Ok(Answer::Passed(handler(request, passed.passes).await));
        }
        Some(peer_request::Body::Vote(json)) => RaftCall::Vote(json),
        Some(peer_request::Body::AppendEntries(append)) => RaftCall::AppendEntries(append),
        Some(peer_request::Body::InstallSnapshot(json)) => RaftCall::InstallSnapshot(json),
        Some(peer_request::Body::Stand(stand)) => RaftCall::Stand(stand),
    };
    raft_call(peers, request.group, call)
        .await
        .map(Answer::Peer)
}

/// What the Raft group `group` of this sidecar answers to `call`.
async fn raft_call(
    peers: &Peers,
    group: Option<RaftGroup>,
    call: RaftCall,
) -> Result<PeerResponse, WireError> {
    let group = group.ok_or(WireError::NoGroup)?;
    let Some(super::Group { raft, heard, .. }) = peers.groups.get(&group.topic, group.partition)
    else {
        return Ok(wire::refused(
            PeerErrorCode::UnknownGroup,
            format!(
                "this sidecar holds no replica of partition {} of topic {:?}",
                group.partition, group.topic
            ),
        ));
    };
    let result = match call {
        RaftCall::Vote(json) => {
            let rpc: VoteRequest<NodeId> = wire::from_json(&json, "vote")?;
            let candidate_log = rpc.last_log_id;
            let result = raft.vote(rpc).await;
            if let Err(RaftError::Fatal(fatal)) = &result {
                return Ok(unavailable(&group, fatal));
            }
            match &result {
                Ok(vote) if vote.vote_granted => heard.now(),
                // No leader here, and a candidate whose log is as long as this replica's: it can
                // win; this one standing would only raise the term past it.
                Ok(vote) if !vote.vote.is_committed() && candidate_log >= vote.last_log_id => {
                    heard.yield_to();
                }
                _ => {}
            }
            wire::to_json(&result, "vote result")?
        }
        RaftCall::AppendEntries(append) => {
            let rpc = wire::decode_append(append)?;
            let result = append_entries(&raft, &heard, rpc).await;
            if let Err(RaftError::Fatal(fatal)) = &result {
                return Ok(unavailable(&group, fatal));
            }
            wire::to_json(&result, "append_entries result")?
        }
        RaftCall::InstallSnapshot(json) => {
            let rpc: InstallSnapshotRequest<PartitionRaft> =
                wire::from_json(&json, "install_snapshot")?;
            let result = install_snapshot(&raft, &heard, rpc).await;
            if let Err(RaftError::Fatal(fatal)) = &result {
                return Ok(unavailable(&group, fatal));
            }
            if result.is_ok() {
                heard.now();
            }
            wire::to_json(&result, "install_snapshot result")?
        }
        RaftCall::Stand(stand) => {
            let stopping = peers
                .groups
                .stopping
                .load(std::sync::atomic::Ordering::Relaxed);
            let standing =
                !stopping && crate::cluster::election::stand_for(raft, heard, stand.leader);
            wire::to_json(&Ok::<bool, ()>(standing), "stand result")?
        }
    };
    Ok(wire::answered(result))
}

/// Passes an append-entries call to the group. The group is heard from when the call comes
/// from the leader this replica follows (or a newer one): at once, before the entries are
/// appended (on a busy machine an append of many entries can outlast an election timeout; the
/// leader is alive all the same, and standing would only stop the publishes it serves), and
/// again once they are.
async fn append_entries(
    raft: &openraft::Raft<PartitionRaft>,
    heard: &crate::cluster::election::Heard,
    rpc: AppendEntriesRequest<PartitionRaft>,
) -> Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
    if rpc.vote.is_committed() && rpc.vote >= raft.metrics().borrow().vote {
        heard.now();
    }
    let result = raft.append_entries(rpc).await;
    // A higher vote: the caller is a stale leader, which is no reason to wait.
    if result
        .as_ref()
        .is_ok_and(|response| !matches!(response, AppendEntriesResponse::HigherVote(_)))
    {
        heard.now();
    }
    result
}

/// Passes a snapshot chunk to the group. The last chunk's call lasts until the log is rebuilt
/// from the snapshot: the leader is heard all along (openraft refuses a stale leader's chunk
/// at once), so the replica does not stand for election meanwhile.
async fn install_snapshot(
    raft: &openraft::Raft<PartitionRaft>,
    heard: &crate::cluster::election::Heard,
    rpc: InstallSnapshotRequest<PartitionRaft>,
) -> Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
    let install = raft.install_snapshot(rpc);
    tokio::pin!(install);
    loop {
        tokio::select! {
            result = &mut install => return result,
            () = tokio::time::sleep(crate::cluster::HEARTBEAT_INTERVAL) => heard.now(),
        }
    }
}

/// The answer of a group whose Raft has stopped (shut down, or failed on storage).
fn unavailable(group: &RaftGroup, fatal: &Fatal<NodeId>) -> PeerResponse {
    wire::refused(
        PeerErrorCode::Unavailable,
        format!(
            "partition {} of topic {:?} on this sidecar has stopped: {fatal}",
            group.partition, group.topic
        ),
    )
}

/// The QUIC application error code a connection from a non-sidecar is closed with.
const NOT_A_PEER: quinn::VarInt = quinn::VarInt::from_u32(5);
