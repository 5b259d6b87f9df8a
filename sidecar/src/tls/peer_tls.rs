use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::Endpoint;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sidestream::transport::{
    BindError, PROTOCOL_VERSIONS, QuicTuning, TlsError, bind_endpoint, bind_endpoint_with,
    crypto_provider, read_certificates, read_private_key, read_trust_anchors,
};

use super::server_tls::mutual_server_config;
use super::{ClientIdentity, DevCertificates, ResetKey};

/// Mutual TLS between sidecars, on the peer port: each presents its own certificate, both as
/// the server of the connections it accepts and as the client of those it opens, and trusts
/// only the cluster's CA.
///
/// A certificate of the CA is not enough to call into a sidecar's Raft groups: the services'
/// client certificates chain to the same CA. The accepting end also checks that the caller's
/// identity ([`ClientIdentity`]) is one of the [`peer_identities`](Self::peer_identities): by
/// the identity of this sidecar's own certificate, which every sidecar of a cluster
/// shares when their certificates are issued alike (the development certificates all name
/// `Sidestream sidecar`).
///
/// The opening end checks the same of the accepting one, by its certificate rather than by
/// its address: the certificate must chain to the cluster's CA and either carry the address
/// called (as a certificate checked for a name always does) or name one of the peer
/// identities. Peers are called at addresses no certificate can list ahead of time (a
/// Kubernetes pod's address, each of the addresses a seed's DNS name resolves to), and a
/// certificate of the cluster's CA naming a sidecar identity is what makes a peer.
///
/// ALPN `sidestream-peer/1` ([`sidestream_proto::peer::ALPN`]), TLS 1.3 only.
#[derive(Clone)]
pub struct PeerTls {
    ca: PathBuf,
    cert: PathBuf,
    identities: BTreeSet<String>,
    server: Arc<QuicServerConfig>,
    client: Arc<QuicClientConfig>,
    /// The stateless reset key of the endpoint it binds (else quinn's, new each time).
    reset: Option<ResetKey>,
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
        let identities = BTreeSet::from([own_identity.as_str().to_owned()]);
        let verifier = PeerVerifier::new(read_trust_anchors(ca)?, identities.clone())
            .map_err(|source| TlsError::Rustls { source })?;
        let mut client = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(|source| TlsError::Rustls { source })?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
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
            identities,
            server: Arc::new(server),
            client: Arc::new(client),
            reset: None,
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
        let server = Some(self.server_config(tuning, loopback));
        let mut endpoint = match &self.reset {
            Some(reset) => bind_endpoint_with(
                addr,
                server,
                tuning,
                reset.endpoint_config(tuning, loopback),
            )?,
            None => bind_endpoint(addr, server, tuning)?,
        };
        endpoint.set_default_client_config(self.client_config(tuning, loopback));
        Ok(endpoint)
    }

    /// This configuration, binding endpoints whose stateless resets are signed with `reset`.
    #[must_use]
    pub fn with_reset_key(mut self, reset: ResetKey) -> Self {
        self.reset = Some(reset);
        self
    }

    /// The quinn configuration peers' connections to this node are accepted with: this TLS
    /// configuration with `tuning`'s transport settings (`loopback`: for a loopback address).
    pub fn server_config(&self, tuning: &QuicTuning, loopback: bool) -> quinn::ServerConfig {
        let mut server = quinn::ServerConfig::with_crypto(Arc::clone(&self.server) as _);
        server.transport_config(Arc::new(tuning.server_transport(loopback)));
        server
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

/// How a sidecar checks the certificate of the peer it called: chained to the cluster's CA
/// for a server (rustls' own check), and valid for the address called or naming a peer
/// identity.
#[derive(Debug)]
struct PeerVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    identities: BTreeSet<String>,
}

impl PeerVerifier {
    fn new(roots: RootCertStore, identities: BTreeSet<String>) -> Result<Self, rustls::Error> {
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), crypto_provider())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(Self { webpki, identities })
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let checked = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match checked {
            // rustls checks the chain (to the CA, valid now, for a server) before the name:
            // a certificate only of the wrong name is one of the cluster's.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {
                let identity = ClientIdentity::from_certificate(end_entity).map_err(|e| {
                    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                        Arc::new(e),
                    )))
                })?;
                if self.identities.contains(identity.as_str()) {
                    Ok(ServerCertVerified::assertion())
                } else {
                    checked
                }
            }
            checked => checked,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
