use std::fmt;

use rustls::pki_types::CertificateDer;
use x509_parser::error::X509Error;
use x509_parser::extensions::GeneralName;

use super::leaf_check::parse;

/// The identity of a service, as its client certificate names it; what ACLs are written for.
///
/// It is the certificate subject's common name (CN) or, for a certificate without one, its
/// first DNS subject alternative name. Only a certificate that chained to the sidecar's CA
/// gets this far, since [`ServerTls`](super::ServerTls) refuses any other during the
/// handshake; the `client_id` a request carries is never an identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientIdentity(String);

impl ClientIdentity {
    /// The identity of the client at the other end of `connection`, from the certificate it
    /// presented during the handshake.
    pub fn of(connection: &quinn::Connection) -> Result<Self, IdentityError> {
        let certificates = connection
            .peer_identity()
            .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
            .ok_or(IdentityError::NoCertificate)?;
        let leaf = certificates.first().ok_or(IdentityError::NoCertificate)?;
        Self::from_certificate(leaf)
    }

    /// The identity a DER certificate names.
    pub fn from_certificate(certificate: &CertificateDer<'_>) -> Result<Self, IdentityError> {
        let cert = parse(certificate).map_err(|source| IdentityError::BadCertificate { source })?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .find_map(|name| name.as_str().ok())
            .filter(|name| !name.is_empty());
        let dns_name = || {
            let extension = cert.subject_alternative_name().ok().flatten()?;
            extension
                .value
                .general_names
                .iter()
                .find_map(|name| match name {
                    GeneralName::DNSName(name) if !name.is_empty() => Some(*name),
                    _ => None,
                })
        };
        common_name
            .or_else(dns_name)
            .map(|name| Self(name.to_owned()))
            .ok_or(IdentityError::NoName)
    }

    /// The identity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a connection's client identity could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The client's certificate does not parse as X.509.
    #[error("the client certificate is not a valid X.509 certificate")]
    BadCertificate {
        /// What the parser found wrong.
        #[source]
        source: X509Error,
    },
    /// The connection carries no client certificate (not a TLS connection of this sidecar,
    /// or the handshake is not complete).
    #[error("the connection carries no client certificate")]
    NoCertificate,
    /// The client's certificate has neither a common name nor a DNS name.
    #[error("the client certificate names no identity (no common name, no DNS name)")]
    NoName,
}
