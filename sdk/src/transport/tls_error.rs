use std::io;
use std::path::PathBuf;

use rustls::pki_types::pem;
use x509_parser::error::X509Error;

/// Why a TLS configuration, client or sidecar side, could not be built from its PEM files.
///
/// Every variant that concerns a file names it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// `path` holds a certificate that is not a parsable X.509 certificate.
    #[error("{}: certificate {index} is not a valid X.509 certificate", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Position of the certificate in the file, from 0.
        index: usize,
        /// What the parser found wrong.
        #[source]
        source: X509Error,
    },
    /// The CA file holds a certificate that cannot be a trust anchor.
    #[error("{}: certificate {index} cannot be a trust anchor", path.display())]
    BadTrustAnchor {
        /// The CA file.
        path: PathBuf,
        /// Position of the certificate in the file, from 0.
        index: usize,
        /// What rustls found wrong.
        #[source]
        source: rustls::Error,
    },
    /// The client certificate verifier could not be built from the CA file.
    #[error("{}: cannot verify client certificates with these CAs", ca.display())]
    ClientVerifier {
        /// The CA file.
        ca: PathBuf,
        /// What rustls found wrong.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// A certificate in `path` is past its `not_after` time.
    #[error("{}: certificate {index} expired at {not_after}", path.display())]
    Expired {
        /// The file.
        path: PathBuf,
        /// Position of the certificate in the file, from 0.
        index: usize,
        /// The certificate's `not_after` time, as written in it.
        not_after: String,
    },
    /// The private key in `key` does not belong to the first certificate in `cert`.
    #[error("{} does not hold the private key of the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls found wrong.
        #[source]
        source: rustls::Error,
    },
    /// `path` holds no PEM `CERTIFICATE` block (it is empty or not PEM).
    #[error("{}: no PEM CERTIFICATE block (empty or not PEM)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The crypto provider offers no cipher suite QUIC can use for its Initial packets.
    #[error("the crypto provider lacks TLS13_AES_128_GCM_SHA256, which QUIC requires")]
    NoInitialCipherSuite,
    /// `path` holds no PEM private key block (PKCS#8, PKCS#1 or SEC1).
    #[error("{}: no PEM private key block (empty or not PEM)", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// A certificate in `path` is not valid yet.
    #[error("{}: certificate {index} is not valid before {not_before}", path.display())]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// Position of the certificate in the file, from 0.
        index: usize,
        /// The certificate's `not_before` time, as written in it.
        not_before: String,
    },
    /// `path` is PEM with a malformed block.
    #[error("{}: malformed PEM", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser found wrong.
        #[source]
        source: pem::Error,
    },
    /// `path` could not be read.
    #[error("{}: cannot read", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// rustls refused the protocol versions of the configuration.
    #[error("rustls refused the configuration")]
    Rustls {
        /// What rustls found wrong.
        #[source]
        source: rustls::Error,
    },
}
