use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::Endpoint;
use quinn::crypto::rustls::QuicServerConfig;
use rustls::server::WebPkiClientVerifier;
use sidestream::transport::{
    BindError, PROTOCOL_VERSIONS, QuicTuning, TlsError, bind_endpoint, bind_endpoint_with,
    crypto_provider, read_certificates, read_private_key, read_trust_anchors,
};

use super::{DevCertificates, ResetKey};

/// The sidecar's side of mutual TLS: its certificate, and the CA every client certificate
/// must chain to.
///
/// TLS 1.3 only, ALPN `sidestream/1` ([`sidestream_proto::ALPN`]) required, and a client
/// certificate required: a client without one, or with one that does not chain to the CA, is
/// refused during the handshake. The client's identity is then read with
/// [`ClientIdentity::of`](super::ClientIdentity::of).
///
/// Method families, in order of use:
///
/// 1. build: [`from_paths`](Self::from_paths) (a real deployment's files) or
///    [`from_dev`](Self::from_dev) (the [`DevCertificates`]);
/// 2. serve: [`bind`](Self::bind) an endpoint, or [`quic_config`](Self::quic_config) for
///    an endpoint of your own;
/// 3. inspect: [`rustls_config`](Self::rustls_config).
#[derive(Clone)]
pub struct ServerTls {
    ca: PathBuf,
    cert: PathBuf,
    rustls: Arc<rustls::ServerConfig>,
    quic: Arc<QuicServerConfig>,
    /// The stateless reset key of the endpoint it binds (else quinn's, new each time).
    reset: Option<ResetKey>,
}

impl ServerTls {
    /// Reads the CA certificates that client certificates must chain to from `ca`, the
    /// sidecar's certificate chain (its own certificate first) from `cert` and its private key
    /// from `key`, all PEM.
    ///
    /// Fails, naming the file, if one cannot be read, holds nothing usable, holds a
    /// certificate that is expired or not yet valid, or if the key does not match the
    /// certificate.
    pub fn from_paths(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let rustls = Arc::new(mutual_server_config(ca, cert, key, sidestream_proto::ALPN)?);
        let quic = QuicServerConfig::try_from(Arc::clone(&rustls))
            .map_err(|_| TlsError::NoInitialCipherSuite)?;
        Ok(Self {
            ca: ca.into(),
            cert: cert.into(),
            rustls,
            quic: Arc::new(quic),
            reset: None,
        })
    }

    /// The configuration of the development certificates: their CA, the sidecar's
    /// certificate and key.
    pub fn from_dev(certificates: &DevCertificates) -> Result<Self, TlsError> {
        Self::from_paths(
            &certificates.ca_cert(),
            &certificates.server_cert(),
            &certificates.server_key(),
        )
    }

    /// Binds a QUIC endpoint that accepts clients on `addr`, with `tuning`'s socket buffers
    /// and transport settings; its loopback settings apply when `addr` is a loopback address.
    ///
    /// Port 0 picks a free port ([`Endpoint::local_addr`] tells which). Must be called inside
    /// a tokio runtime.
    pub fn bind(&self, addr: SocketAddr, tuning: &QuicTuning) -> Result<Endpoint, BindError> {
        let loopback = addr.ip().is_loopback();
        let config = self.quic_config(tuning, loopback);
        match &self.reset {
            Some(reset) => {
                let endpoint = reset.endpoint_config(tuning, loopback);
                bind_endpoint_with(addr, Some(config), tuning, endpoint)
            }
            None => bind_endpoint(addr, Some(config), tuning),
        }
    }

    /// This configuration, binding endpoints whose stateless resets are signed with `reset`.
    #[must_use]
    pub fn with_reset_key(mut self, reset: ResetKey) -> Self {
        self.reset = Some(reset);
        self
    }

    /// The quinn server configuration: this TLS configuration with `tuning`'s transport
    /// settings; `loopback` says whether it serves a loopback address.
    pub fn quic_config(&self, tuning: &QuicTuning, loopback: bool) -> quinn::ServerConfig {
        let mut config = quinn::ServerConfig::with_crypto(Arc::clone(&self.quic) as _);
        config.transport_config(Arc::new(tuning.server_transport(loopback)));
        config
    }

    /// The rustls configuration underneath.
    pub fn rustls_config(&self) -> &Arc<rustls::ServerConfig> {
        &self.rustls
    }
}

/// A TLS 1.3 server configuration presenting the chain in `cert` (key in `key`), requiring a
/// client certificate that chains to `ca`, and offering only `alpn`: the client port's and the
/// peer port's, which differ in ALPN alone.
pub(super) fn mutual_server_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    alpn: &[u8],
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = crypto_provider();
    let roots = Arc::new(read_trust_anchors(ca)?);
    let chain = read_certificates(cert)?;
    let private_key = read_private_key(key)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
        .build()
        .map_err(|source| TlsError::ClientVerifier {
            ca: ca.into(),
            source,
        })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|source| TlsError::Rustls { source })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private_key)
        .map_err(|source| TlsError::KeyMismatch {
            cert: cert.into(),
            key: key.into(),
            source,
        })?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}
