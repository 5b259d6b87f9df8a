//! The calling side of the peer port: one connection to each peer, one stream per call.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use quinn::{Connection, Endpoint};
use sidestream_proto::FrameCodec;
use sidestream_proto::peer::v1::{PeerRequest, PeerResponse};

use super::PEER_FRAME_LIMIT;
use crate::server::frames::{ReadFrameError, read_frame};

/// Why a call got no answer from the peer.
#[derive(Debug, thiserror::Error)]
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
    #[error("peer {addr}: unreadable answer: {source}")]
    Answer {
        /// The peer.
        addr: SocketAddr,
        /// What is wrong.
        #[source]
        source: ReadFrameError,
    },
}

/// This sidecar's connections to its peers, opened on first use and again after one fails.
///
/// Calls to one peer share its connection, each on a stream of its own, so a slow call never
/// holds up another.
#[derive(Debug)]
pub(crate) struct PeerClients {
    endpoint: Endpoint,
    connect_timeout: Duration,
    peers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Connection>>>>>,
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
            Err(source) => Err(CallError::Answer {
                addr: remote,
                source,
            }),
        }
    }

    /// The open connection to `addr`, connecting first if there is none or it has failed.
    async fn connection(&self, addr: &str) -> Result<Connection, CallError> {
        let slot = Arc::clone(
            self.peers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(addr.to_owned())
                .or_default(),
        );
        // One connection attempt per peer at a time; other calls wait for it.
        let mut slot = slot.lock().await;
        if let Some(connection) = slot.as_ref().filter(|c| c.close_reason().is_none()) {
            return Ok(connection.clone());
        }
        let (socket_addr, server_name) = resolve(addr).await?;
        let connect_error = |reason: String| CallError::Connect {
            addr: socket_addr,
            reason,
        };
        let connecting = self
            .endpoint
            .connect(socket_addr, &server_name)
            .map_err(|e| connect_error(e.to_string()))?;
        let connection = tokio::time::timeout(self.connect_timeout, connecting)
            .await
            .map_err(|_| connect_error(format!("no handshake within {:?}", self.connect_timeout)))?
            .map_err(|e| connect_error(e.to_string()))?;
        *slot = Some(connection.clone());
        Ok(connection)
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
