//! The calling side of the peer port: one connection to each peer, one stream per call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use quinn::{Connection, Endpoint};
use sidestream_proto::peer::v1::{Hello, PeerRequest, PeerResponse, peer_request};
use sidestream_proto::{FrameCodec, FrameError, Request};

use super::{PEER_FRAME_LIMIT, PEER_RESERVE_AHEAD};
use crate::server::frames::{ReadFrameError, read_frame};

/// Why a call got no answer from the peer.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CallError {
    /// The peer's address is not `host:port`, or its host does not resolve.
    #[error("peer address {addr:?}: {reason}")]
    Address {
        /// The address as the node registry holds it.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection could be made (handshake refused, nobody listening, timed out).
    #[error("cannot connect to peer {addr}: {reason}")]
    Connect {
        /// The peer.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The connection failed during the call.
    #[error("peer {addr}: {source}")]
    Connection {
        /// The peer.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: quinn::ConnectionError,
    },
    /// The stream failed during the call.
    #[error("peer {addr}: {reason}")]
    Stream {
        /// The peer.
        addr: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// The peer's answer could not be read.
    #[error("peer {addr}: unreadable answer: {reason}")]
    Answer {
        /// The peer.
        addr: SocketAddr,
        /// What is wrong.
        reason: String,
    },
}

/// This sidecar's connections to its peers, opened on first use and again after one fails.
///
/// Calls to one peer share its connection, each on a stream of its own, so a slow call never
/// holds up another. A connection is shared by both sidecars: the one that opens it says who it
/// is with a `Hello` call, and the other makes its own calls on it too
/// ([`adopt`](Self::adopt)); the peer's calls on a connection opened here are served by the
/// [`Acceptor`] given to [`new`](Self::new).
pub(crate) struct PeerClients {
    /// The peer port's endpoint, with the client configuration new connections take (set
    /// again when the certificates are reloaded).
    endpoint: Mutex<Endpoint>,
    connect_timeout: Duration,
    hello: Hello,
    acceptor: Acceptor,
    peers: Mutex<HashMap<String, Connecting>>,
}

/// Serves the peer's calls on a connection this sidecar opened (spawns a task for it).
pub(crate) type Acceptor = Arc<dyn Fn(Connection) + Send + Sync>;

/// A connection to a peer, made or being made by a task of its own: a caller that gives up
/// (openraft's deadline for a call is a heartbeat interval) does not cut the handshake short,
/// and the next call finds it done.
type Connecting = Shared<BoxFuture<'static, Result<Connection, CallError>>>;

impl std::fmt::Debug for PeerClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("PeerClients")
            .field("peers", &peers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl PeerClients {
    /// Clients that connect from `endpoint` (which has the peer client configuration as its
    /// default), giving up on a handshake after `connect_timeout`, introducing themselves with
    /// `hello`, and serving the peer's calls on their connections with `acceptor`.
    pub(crate) fn new(
        endpoint: Endpoint,
        connect_timeout: Duration,
        hello: Hello,
        acceptor: Acceptor,
    ) -> Self {
        Self {
            endpoint: Mutex::new(endpoint),
            connect_timeout,
            hello,
            acceptor,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Makes connections opened from now on present and check the certificates of `config`;
    /// the open ones keep theirs.
    pub(crate) fn set_client_config(&self, config: quinn::ClientConfig) {
        self.endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_default_client_config(config);
    }

    /// This sidecar's node id.
    pub(crate) fn node_id(&self) -> u64 {
        self.hello.node_id
    }

    /// The peer address this sidecar introduces itself with.
    pub(crate) fn peer_address(&self) -> &str {
        &self.hello.peer_address
    }

    /// Whether there is an open connection to the peer at `addr` (made, not being made).
    #[cfg(test)]
    pub(crate) fn connected(&self, addr: &str) -> bool {
        let peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        peers
            .get(addr)
            .and_then(|attempt| attempt.peek().cloned())
            .is_some_and(|made| made.is_ok_and(|c| c.close_reason().is_none()))
    }

    /// Makes this sidecar's calls to the peer at `addr` on `connection`, which the peer opened,
    /// unless there is a usable connection to it already (or one being made). Returns whether
    /// it did.
    pub(crate) fn adopt(&self, addr: &str, connection: Connection) -> bool {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if peers.get(addr).is_some_and(usable) {
            return false;
        }
        let ready: BoxFuture<'static, Result<Connection, CallError>> =
            futures_util::future::ready(Ok(connection)).boxed();
        let ready = ready.shared();
        // Polled once, so that it counts as made (`peek`) from now on.
        let _ = ready.clone().now_or_never();
        peers.insert(addr.to_owned(), ready);
        true
    }

    /// Makes call `body` to group `group` of the peer at `addr` within `wait`, and reads its
    /// answer's result as the JSON of a `T` (named `what` in errors); the error as text.
    pub(crate) async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        addr: &str,
        group: Option<sidestream_proto::peer::v1::RaftGroup>,
        body: peer_request::Body,
        what: &'static str,
        wait: Duration,
    ) -> Result<T, String> {
        let request = PeerRequest {
            group,
            body: Some(body),
        };
        let response = tokio::time::timeout(wait, self.call(addr, &request))
            .await
            .map_err(|_| format!("{addr} did not answer within {wait:?}"))?
            .map_err(|e| e.to_string())?;
        if response.code != i32::from(sidestream_proto::peer::v1::PeerErrorCode::Ok) {
            return Err(format!("{addr} refused the request: {}", response.message));
        }
        super::wire::from_json(&response.result, what).map_err(|e| e.to_string())
    }

    /// Makes one call to the peer at `addr` (`host:port`) and returns its answer.
    pub(crate) async fn call(
        &self,
        addr: &str,
        request: &PeerRequest,
    ) -> Result<PeerResponse, CallError> {
        let frame = FrameCodec::<PeerRequest>::new(PEER_FRAME_LIMIT).encode_chunks(request);
        self.send(addr, frame, priority(request)).await
    }

    /// Passes a service's `request` on to the peer at `addr`, as its `passes`-th pass (peer
    /// call `client`), and returns the peer's answer: the service's response encoded as its
    /// result. The request's batch goes out as it is, not copied into the frame.
    pub(crate) async fn pass_on(
        &self,
        addr: &str,
        request: &Request,
        passes: u32,
    ) -> Result<PeerResponse, CallError> {
        let frame =
            FrameCodec::<PeerRequest>::new(PEER_FRAME_LIMIT).encode_passed_on(request, passes);
        self.send(addr, frame, PASSED_ON_PRIORITY).await
    }

    /// Sends one call's `frame` (as chunks) to the peer at `addr` at send priority `priority`,
    /// and returns its answer.
    async fn send(
        &self,
        addr: &str,
        frame: Result<Vec<Bytes>, FrameError>,
        priority: i32,
    ) -> Result<PeerResponse, CallError> {
        let connection = self.connection(addr).await?;
        let remote = connection.remote_address();
        let stream_error = |reason: String| CallError::Stream {
            addr: remote,
            reason,
        };
        let (mut send, mut recv) =
            connection
                .open_bi()
                .await
                .map_err(|source| CallError::Connection {
                    addr: remote,
                    source,
                })?;
        // Raft's calls go before the services' requests passed on: they share the connection,
        // and an append or a heartbeat queued behind megabytes of passed-on publishes would miss
        // its deadline (one heartbeat interval), and the follower would stand for election.
        let _ = send.set_priority(priority);
        let mut frame = frame.map_err(|e| stream_error(e.to_string()))?;
        send.write_all_chunks(&mut frame)
            .await
            .map_err(|e| stream_error(e.to_string()))?;
        let _ = send.finish();
        let mut buf = BytesMut::new();
        let codec = FrameCodec::<PeerResponse>::new(PEER_FRAME_LIMIT);
        match read_frame(&mut recv, &codec, &mut buf, PEER_RESERVE_AHEAD).await {
            Ok(Some(response)) => Ok(response),
            Ok(None) => Err(stream_error(
                "the peer finished the stream without an answer".into(),
            )),
            // Say why the connection went, such as the peer's refusal of this sidecar.
            Err(ReadFrameError::Stream(quinn::ReadError::ConnectionLost(source))) => {
                Err(CallError::Connection {
                    addr: remote,
                    source,
                })
            }
            Err(error) => Err(CallError::Answer {
                addr: remote,
                reason: error.to_string(),
            }),
        }
    }

    /// The open connection to `addr`: the one made before if it is still open, the attempt
    /// in progress if there is one, or a new attempt (after none, a failed one, or a closed
    /// connection).
    async fn connection(&self, addr: &str) -> Result<Connection, CallError> {
        let attempt = {
            let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
            let usable = peers.get(addr).filter(|attempt| usable(attempt)).cloned();
            usable.unwrap_or_else(|| {
                let attempt = self.connect(addr);
                peers.insert(addr.to_owned(), attempt.clone());
                attempt
            })
        };
        attempt.await
    }

    /// Starts connecting to `addr` on a task of its own.
    fn connect(&self, addr: &str) -> Connecting {
        let endpoint = self
            .endpoint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let timeout = self.connect_timeout;
        let acceptor = Arc::clone(&self.acceptor);
        let hello = self.hello.clone();
        let target = addr.to_owned();
        let task = tokio::spawn(async move {
            let (socket_addr, server_name) = resolve(&target).await?;
            let connect_error = |reason: String| CallError::Connect {
                addr: socket_addr,
                reason,
            };
            let connecting = endpoint
                .connect(socket_addr, &server_name)
                .map_err(|e| connect_error(e.to_string()))?;
            let connection = tokio::time::timeout(timeout, connecting)
                .await
                .map_err(|_| connect_error(format!("no handshake within {timeout:?}")))?
                .map_err(|e| connect_error(e.to_string()))?;
            // The peer's calls on this connection, and who opened it.
            acceptor(connection.clone());
            tokio::spawn(introduce(connection.clone(), hello));
            Ok(connection)
        });
        let addr = addr.to_owned();
        async move {
            task.await.unwrap_or_else(|error| {
                Err(CallError::Address {
                    addr,
                    reason: format!("the connecting task failed: {error}"),
                })
            })
        }
        .boxed()
        .shared()
    }
}

/// Whether a connection attempt can still serve calls: it is being made, or made and open.
fn usable(attempt: &Connecting) -> bool {
    match attempt.peek() {
        None => true,
        Some(Ok(connection)) => connection.close_reason().is_none(),
        Some(Err(_)) => false,
    }
}

/// Tells the peer at the other end of `connection` who opened it (a failure only means the
/// peer opens its own connection when it calls).
async fn introduce(connection: Connection, hello: Hello) {
    let request = PeerRequest {
        group: None,
        body: Some(peer_request::Body::Hello(hello)),
    };
    let Ok(frame) = FrameCodec::<PeerRequest>::new(PEER_FRAME_LIMIT).encode_to_bytes(&request)
    else {
        return;
    };
    let Ok((mut send, mut recv)) = connection.open_bi().await else {
        return;
    };
    if send.write_chunk(frame).await.is_ok() {
        let _ = send.finish();
        let mut buf = BytesMut::new();
        let codec = FrameCodec::<PeerResponse>::new(PEER_FRAME_LIMIT);
        let _ = read_frame(&mut recv, &codec, &mut buf, PEER_RESERVE_AHEAD).await;
    }
}

/// The socket address of `addr` and the name its certificate must carry (the host part).
pub(crate) async fn resolve(addr: &str) -> Result<(SocketAddr, String), CallError> {
    let error = |reason: &str| CallError::Address {
        addr: addr.to_owned(),
        reason: reason.to_owned(),
    };
    if let Ok(socket_addr) = addr.parse::<SocketAddr>() {
        return Ok((socket_addr, socket_addr.ip().to_string()));
    }
    let (host, _port) = addr
        .rsplit_once(':')
        .ok_or_else(|| error("expected host:port"))?;
    let resolved = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| error(&e.to_string()))?
        .next()
        .ok_or_else(|| error("the host name resolves to no address"))?;
    Ok((resolved, host.to_owned()))
}

/// The send priority of a call's stream on the peer connection: Raft's calls (votes, appends,
/// heartbeats, snapshot chunks) before the services' requests passed on.
fn priority(request: &PeerRequest) -> i32 {
    match request.body {
        Some(peer_request::Body::Client(_)) => PASSED_ON_PRIORITY,
        _ => RAFT_PRIORITY,
    }
}

/// The send priority of Raft's calls.
pub(super) const RAFT_PRIORITY: i32 = 1;

/// The send priority of the services' requests passed on.
pub(super) const PASSED_ON_PRIORITY: i32 = 0;
