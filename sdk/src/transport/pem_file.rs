//! Reading certificates, private keys and trust anchors from PEM files, with errors that name
//! the file and what was wrong.

use std::path::Path;

use rustls::RootCertStore;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::error::X509Error;
use x509_parser::time::ASN1Time;

use super::TlsError;

/// Reads every certificate of a PEM file, first to last, and checks that each parses and is
/// valid now.
///
/// A certificate chain file holds the end-entity certificate first, then its intermediates.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| pem_error(path, source))?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate { path: path.into() });
    }
    let now = ASN1Time::now();
    for (index, certificate) in certificates.iter().enumerate() {
        check_validity(path, index, certificate, now)?;
    }
    Ok(certificates)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey { path: path.into() },
        source => pem_error(path, source),
    })
}

/// Reads the CA certificates of a PEM file into a root store: the only certificates a
/// configuration built from it trusts.
pub fn read_trust_anchors(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (index, certificate) in read_certificates(path)?.into_iter().enumerate() {
        roots
            .add(certificate)
            .map_err(|source| TlsError::BadTrustAnchor {
                path: path.into(),
                index,
                source,
            })?;
    }
    Ok(roots)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.into(),
        source,
    })
}

fn pem_error(path: &Path, source: pem::Error) -> TlsError {
    match source {
        pem::Error::Io(source) => TlsError::Read {
            path: path.into(),
            source,
        },
        source => TlsError::Pem {
            path: path.into(),
            source,
        },
    }
}

fn check_validity(
    path: &Path,
    index: usize,
    certificate: &CertificateDer<'_>,
    now: ASN1Time,
) -> Result<(), TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).map_err(|error| {
        TlsError::BadCertificate {
            path: path.into(),
            index,
            source: match error {
                x509_parser::nom::Err::Error(source) | x509_parser::nom::Err::Failure(source) => {
                    source
                }
                x509_parser::nom::Err::Incomplete(_) => X509Error::InvalidCertificate,
            },
        }
    })?;
    let validity = parsed.validity();
    if now < validity.not_before {
        return Err(TlsError::NotYetValid {
            path: path.into(),
            index,
            not_before: validity.not_before.to_string(),
        });
    }
    if now > validity.not_after {
        return Err(TlsError::Expired {
            path: path.into(),
            index,
            not_after: validity.not_after.to_string(),
        });
    }
    Ok(())
}
