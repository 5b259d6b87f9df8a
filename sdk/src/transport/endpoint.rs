use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use quinn::Endpoint;
use socket2::{Domain, Protocol, Socket, Type};

use super::QuicTuning;
use super::busy_poll::BusyPollSocket;

/// Why a QUIC endpoint could not be bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The UDP socket could not be created, configured or bound.
    #[error("cannot bind a UDP socket on {addr}")]
    Io {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Called outside a tokio runtime.
    #[error("binding a QUIC endpoint on {addr} needs a tokio runtime")]
    NoRuntime {
        /// The address asked for.
        addr: SocketAddr,
    },
}

/// Binds a QUIC endpoint on `addr` over a UDP socket whose kernel buffers were asked to be
/// `tuning.socket_buffer_size` bytes each way, with `tuning`'s
/// [endpoint settings](QuicTuning::endpoint_config) for a loopback `addr` or not, spinning
/// for answers as [`QuicTuning::busy_poll`] says.
///
/// Give `server` to accept connections (the sidecar); `None` gives a client-only endpoint. A
/// client that connects to a loopback sidecar binds a loopback address (`127.0.0.1:0`), so
/// that the loopback settings apply at both ends. Port 0 picks a free port
/// ([`Endpoint::local_addr`] tells which). An unspecified IPv6 address (`[::]`) is made
/// dual-stack where the system allows. Must be called inside a tokio runtime.
pub fn bind_endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
    tuning: &QuicTuning,
) -> Result<Endpoint, BindError> {
    let config = tuning.endpoint_config(addr.ip().is_loopback());
    bind_endpoint_with(addr, server, tuning, config)
}

/// Binds as [`bind_endpoint`] does, with endpoint settings of the caller's: a server that
/// restarts on the same port gives its endpoints a stateless reset key that outlives the
/// process ([`quinn::EndpointConfig::reset_key`]), so that its old connections are ended at
/// once rather than after their idle timeout.
pub fn bind_endpoint_with(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
    tuning: &QuicTuning,
    config: quinn::EndpointConfig,
) -> Result<Endpoint, BindError> {
    let io_error = |source| BindError::Io { addr, source };
    let socket = udp_socket(addr, tuning.socket_buffer_size, server.is_some()).map_err(io_error)?;
    let runtime = quinn::default_runtime().ok_or(BindError::NoRuntime { addr })?;
    if tuning.busy_poll.is_zero() {
        return Endpoint::new(config, server, socket, runtime).map_err(io_error);
    }
    let socket = BusyPollSocket::new(socket, tuning.busy_poll).map_err(io_error)?;
    Endpoint::new_with_abstract_socket(config, server, Arc::new(socket), runtime).map_err(io_error)
}

fn udp_socket(addr: SocketAddr, buffer_size: usize, server: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6()
        && addr.ip().is_unspecified()
        && let Err(error) = socket.set_only_v6(false)
    {
        tracing::debug!(%addr, %error, "UDP socket is not dual-stack");
    }
    // The kernel may grant less than asked (Linux: at most twice net.core.rmem_max); quinn
    // works with any size, only slower under load, so a refusal is reported, not fatal: a
    // warning for the sidecar, which carries every service's traffic, a debug line for clients.
    if let Err(error) = socket.set_recv_buffer_size(buffer_size) {
        tracing::debug!(%addr, %error, "cannot set SO_RCVBUF");
    }
    if let Err(error) = socket.set_send_buffer_size(buffer_size) {
        tracing::debug!(%addr, %error, "cannot set SO_SNDBUF");
    }
    let granted = socket.recv_buffer_size().unwrap_or(0);
    if granted < buffer_size {
        let message = "UDP receive buffer smaller than requested (raise net.core.rmem_max)";
        if server {
            tracing::warn!(%addr, requested = buffer_size, granted, "{message}");
        } else {
            tracing::debug!(%addr, requested = buffer_size, granted, "{message}");
        }
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}
