use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::Endpoint;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use sidestream::transport::{
    BindError, PROTOCOL_VERSIONS, QuicTuning, TlsError, bind_endpoint, crypto_provider,
    read_certificates, read_private_key, read_trust_anchors,
};

use super::server_tls::mutual_server_config;
use super::{ClientIdentity, DevCertificates};

/// Mutual TLS between sidecars, on the peer port: each presents its own certificate, both as
/// the server of the connections it accepts and as the client of those it opens, and trusts
/// only the cluster's CA.
///
/// A certificate of the CA is not enough to call into a sidecar's Raft groups: the services'
/// client certificates chain to the same CA. The accepting end also checks that the caller's
/// identity ([`ClientIdentity`]) is one of the [`peer_identities`](Self::peer_identities): by
/// default the identity of this sidecar's own certificate, which every sidecar of a cluster
/// shares when their certificates are issued alike (the development certificates all name
/// `Sidestream sidecar`).
///
/// ALPN `sidestream-peer/1` ([`sidestream_proto::peer::ALPN`]), TLS 1.3 only.
#[derive(Clone)]
pub struct PeerTls {
    ca: PathBuf,
    cert: PathBuf,
    identities: BTreeSet<String>,
    server: Arc<QuicServerConfig>,
    client: Arc<QuicClientConfig>,
}

impl PeerTls {
    /// Reads the cluster's CA certificates from `ca`, this sidecar's certificate chain (its own
    /// certificate first) from `cert` and its private key from `key`, all PEM.
    ///
    /// Fails, naming the file, as [`ServerTls::from_paths`](super::ServerTls::from_paths) does,
    /// and if the certificate names no identity.
    pub fn from_paths(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = read_certificates(cert)?;
        let own_identity = chain
            .first()
            .map(ClientIdentity::from_certificate)
            .and_then(Result::ok)
            .ok_or_else(|| TlsError::NoCertificate { path: cert.into() })?;
        let server = mutual_server_config(ca, cert, key, sidestream_proto::peer::ALPN)?;
        let mut client = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(|source| TlsError::Rustls { source })?
            .with_root_certificates(read_trust_anchors(ca)?)
            .with_client_auth_cert(chain, read_private_key(key)?)
            .map_err(|source| TlsError::KeyMismatch {
                cert: cert.into(),
                key: key.into(),
                source,
            })?;
        client.alpn_protocols = vec![sidestream_proto::peer::ALPN.to_vec()];

        let server = QuicServerConfig::try_from(Arc::new(server))
            .map_err(|_| TlsError::NoInitialCipherSuite)?;
        let client = QuicClientConfig::try_from(Arc::new(client))
            .map_err(|_| TlsError::NoInitialCipherSuite)?;
        Ok(Self {
            ca: ca.into(),
            cert: cert.into(),
            identities: BTreeSet::from([own_identity.as_str().to_owned()]),
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// The development certificates' CA, and the sidecar's certificate and key.
    pub fn from_dev(certificates: &DevCertificates) -> Result<Self, TlsError> {
        Self::from_paths(
            &certificates.ca_cert(),
            &certificates.server_cert(),
            &certificates.server_key(),
        )
    }

    /// Accepts callers whose certificates name any of `identities` instead of this sidecar's
    /// own identity.
    #[must_use]
    pub fn with_peer_identities(mut self, identities: impl IntoIterator<Item = String>) -> Self {
        self.identities = identities.into_iter().collect();
        self
    }

    /// The identities a caller's certificate may name.
    pub fn peer_identities(&self) -> &BTreeSet<String> {
        &self.identities
    }

    /// Whether `identity` may call into this sidecar's Raft groups.
    pub fn is_peer(&self, identity: &ClientIdentity) -> bool {
        self.identities.contains(identity.as_str())
    }

    /// Binds the peer endpoint on `addr`: it accepts peers' connections and opens this
    /// sidecar's own (with [`client_config`](Self::client_config)).
    pub fn bind(&self, addr: SocketAddr, tuning: &QuicTuning) -> Result<Endpoint, BindError> {
        let loopback = addr.ip().is_loopback();
        let mut server = quinn::ServerConfig::with_crypto(Arc::clone(&self.server) as _);
        server.transport_config(Arc::new(tuning.server_transport(loopback)));
        let mut endpoint = bind_endpoint(addr, Some(server), tuning)?;
        endpoint.set_default_client_config(self.client_config(tuning, loopback));
        Ok(endpoint)
    }

    /// The quinn configuration of a connection this sidecar opens to a peer. The peer may open
    /// streams on it as well (its own calls share the connection), so it has the server's
    /// transport settings.
    pub fn client_config(&self, tuning: &QuicTuning, loopback: bool) -> quinn::ClientConfig {
        let mut config = quinn::ClientConfig::new(Arc::clone(&self.client) as _);
        config.transport_config(Arc::new(tuning.server_transport(loopback)));
        config
    }
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTls")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("identities", &self.identities)
            .finish_non_exhaustive()
    }
}
