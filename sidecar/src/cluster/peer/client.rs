//! The calling side of the peer port: one connection to each peer, one stream per call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use quinn::{Connection, Endpoint};
use sidestream_proto::FrameCodec;
use sidestream_proto::peer::v1::{PeerRequest, PeerResponse};

use super::PEER_FRAME_LIMIT;
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
/// holds up another.
pub(crate) struct PeerClients {
    endpoint: Endpoint,
    connect_timeout: Duration,
    peers: Mutex<HashMap<String, Connecting>>,
}

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
    /// default), giving up on a handshake after `connect_timeout`.
    pub(crate) fn new(endpoint: Endpoint, connect_timeout: Duration) -> Self {
        Self {
            endpoint,
            connect_timeout,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Makes one call to the peer at `addr` (`host:port`) and returns its answer.
    pub(crate) async fn call(
        &self,
        addr: &str,
        request: &PeerRequest,
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
        let frame = FrameCodec::<PeerRequest>::new(PEER_FRAME_LIMIT)
            .encode_to_bytes(request)
            .map_err(|e| stream_error(e.to_string()))?;
        send.write_chunk(frame)
            .await
            .map_err(|e| stream_error(e.to_string()))?;
        let _ = send.finish();
        let mut buf = BytesMut::new();
        let codec = FrameCodec::<PeerResponse>::new(PEER_FRAME_LIMIT);
        match read_frame(&mut recv, &codec, &mut buf).await {
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
            let usable = peers
                .get(addr)
                .filter(|attempt| match attempt.peek() {
                    None => true,
                    Some(Ok(connection)) => connection.close_reason().is_none(),
                    Some(Err(_)) => false,
                })
                .cloned();
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
        let endpoint = self.endpoint.clone();
        let timeout = self.connect_timeout;
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
            tokio::time::timeout(timeout, connecting)
                .await
                .map_err(|_| connect_error(format!("no handshake within {timeout:?}")))?
                .map_err(|e| connect_error(e.to_string()))
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

/// The socket address of `addr` and the name its certificate must carry (the host part).
async fn resolve(addr: &str) -> Result<(SocketAddr, String), CallError> {
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
