use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::crypto::rustls::QuicClientConfig;

use super::{
    CA_CERT_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE, PROTOCOL_VERSIONS, QuicTuning, TlsError,
    crypto_provider, read_certificates, read_private_key, read_trust_anchors,
};

/// A service's side of mutual TLS: the CA it trusts for the sidecar and the certificate it
/// presents as its identity.
///
/// Built once from PEM files, then cheap to clone. TLS 1.3 only, ALPN `sidestream/1`
/// ([`sidestream_proto::ALPN`]), and the sidecar's certificate must chain to the given CA
/// (the system's roots are not consulted).
///
/// Method families, in order of use:
///
/// 1. build: [`from_dir`](Self::from_dir) (the dev certificates the sidecar wrote) or
///    [`from_paths`](Self::from_paths) (certificates of a real deployment);
/// 2. connect: [`connect`](Self::connect), or [`quic_config`](Self::quic_config) for an
///    endpoint of your own;
/// 3. inspect: [`rustls_config`](Self::rustls_config).
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use sidestream::transport::{ClientTls, QuicTuning, bind_endpoint, default_tls_dir};
///
/// let tls_dir = default_tls_dir().ok_or("no data directory")?;
/// let tls = ClientTls::from_dir(&tls_dir)?;
/// let tuning = QuicTuning::default();
/// let endpoint = bind_endpoint("127.0.0.1:0".parse()?, None, &tuning)?;
/// let connection = tls
///     .connect(&endpoint, "127.0.0.1:7400".parse()?, "localhost", &tuning)
///     .await?;
/// # drop(connection);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ClientTls {
    ca: PathBuf,
    cert: PathBuf,
    rustls: Arc<rustls::ClientConfig>,
    quic: Arc<QuicClientConfig>,
}

impl ClientTls {
    /// Reads the dev certificates in `tls_dir`: [`CA_CERT_FILE`], [`CLIENT_CERT_FILE`] and
    /// [`CLIENT_KEY_FILE`], as the sidecar writes them on its first start.
    pub fn from_dir(tls_dir: &Path) -> Result<Self, TlsError> {
        Self::from_paths(
            &tls_dir.join(CA_CERT_FILE),
            &tls_dir.join(CLIENT_CERT_FILE),
            &tls_dir.join(CLIENT_KEY_FILE),
        )
    }

    /// Reads the CA certificates to trust from `ca`, the client certificate chain (the
    /// service's own certificate first) from `cert` and its private key from `key`, all PEM.
    ///
    /// Fails, naming the file, if one cannot be read, holds nothing usable, holds a
    /// certificate that is expired or not yet valid, or if the key does not match the
    /// certificate.
    pub fn from_paths(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let roots = read_trust_anchors(ca)?;
        let chain = read_certificates(cert)?;
        let private_key = read_private_key(key)?;
        let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(|source| TlsError::Rustls { source })?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, private_key)
            .map_err(|source| TlsError::KeyMismatch {
                cert: cert.into(),
                key: key.into(),
                source,
            })?;
        config.alpn_protocols = vec![sidestream_proto::ALPN.to_vec()];
        let rustls = Arc::new(config);
        let quic = QuicClientConfig::try_from(Arc::clone(&rustls))
            .map_err(|_| TlsError::NoInitialCipherSuite)?;
        Ok(Self {
            ca: ca.into(),
            cert: cert.into(),
            rustls,
            quic: Arc::new(quic),
        })
    }

    /// The quinn client configuration: this TLS configuration with `tuning`'s transport
    /// settings; `loopback` says whether it is for a loopback address.
    pub fn quic_config(&self, tuning: &QuicTuning, loopback: bool) -> quinn::ClientConfig {
        let mut config = quinn::ClientConfig::new(Arc::clone(&self.quic) as _);
        config.transport_config(Arc::new(tuning.client_transport(loopback)));
        config
    }

    /// The rustls configuration underneath.
    pub fn rustls_config(&self) -> &Arc<rustls::ClientConfig> {
        &self.rustls
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}
