use std::net::SocketAddr;
use std::time::Duration;

use quinn::{Connection, Endpoint};

use super::{ClientTls, QuicTuning};

/// Why a connection to a sidecar could not be established.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The handshake failed: the sidecar refused this client (its certificate, its ALPN), the
    /// client refused the sidecar's certificate, or the sidecar did not answer.
    #[error("QUIC handshake with {addr} failed")]
    Handshake {
        /// The sidecar's address.
        addr: SocketAddr,
        /// Why; a TLS alert shows as a transport error with a crypto error code.
        #[source]
        source: quinn::ConnectionError,
    },
    /// The connection could not even be started (bad server name or address, endpoint
    /// closing).
    #[error("cannot start a QUIC connection to {addr}")]
    Start {
        /// The sidecar's address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: quinn::ConnectError,
    },
    /// The handshake took longer than the tuning's `handshake_timeout`.
    #[error("QUIC handshake with {addr} timed out after {timeout:?}")]
    TimedOut {
        /// The sidecar's address.
        addr: SocketAddr,
        /// The time allowed.
        timeout: Duration,
    },
}

impl ConnectError {
    /// Whether TLS refused the connection: the sidecar refused this client's certificate,
    /// or this client the sidecar's. Trying again with the same certificates cannot succeed.
    pub fn is_tls_refusal(&self) -> bool {
        matches!(self, Self::Handshake { source, .. } if is_tls_refusal(source))
    }
}

/// Whether `error` is a TLS alert, from either side: a QUIC crypto error code
/// (0x100 to 0x1ff, RFC 9000 section 20.1).
pub(crate) fn is_tls_refusal(error: &quinn::ConnectionError) -> bool {
    let code = match error {
        quinn::ConnectionError::ConnectionClosed(close) => close.error_code,
        quinn::ConnectionError::TransportError(error) => error.code,
        _ => return false,
    };
    (0x100..0x200).contains(&u64::from(code))
}

impl ClientTls {
    /// Connects `endpoint` to the sidecar at `addr`, whose certificate must name
    /// `server_name` (`localhost` for the dev certificates), within `tuning`'s
    /// `handshake_timeout`.
    ///
    /// The loopback settings of `tuning` apply when `addr` is a loopback address.
    ///
    /// In TLS 1.3 the client finishes its handshake before the sidecar has checked the
    /// client's certificate, so a sidecar that refuses the certificate may close the returned
    /// connection right away; the close reason then carries the TLS alert.
    pub async fn connect(
        &self,
        endpoint: &Endpoint,
        addr: SocketAddr,
        server_name: &str,
        tuning: &QuicTuning,
    ) -> Result<Connection, ConnectError> {
        let config = self.quic_config(tuning, addr.ip().is_loopback());
        let connecting = endpoint
            .connect_with(config, addr, server_name)
            .map_err(|source| ConnectError::Start { addr, source })?;
        let timeout = tuning.handshake_timeout;
        match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(source)) => Err(ConnectError::Handshake { addr, source }),
            Err(_) => Err(ConnectError::TimedOut { addr, timeout }),
        }
    }
}
