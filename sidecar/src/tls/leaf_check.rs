//! Whether an existing leaf certificate (the sidecar's or the dev client's) can be kept.

use std::collections::HashSet;
use std::net::IpAddr;

use rcgen::{KeyPair, PublicKeyData};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::Duration;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// Why the leaf certificate `cert_pem` with the key `key_pem` (`None`: no such file) must be
/// issued anew, or `None` if it can be kept.
pub(super) fn reissue_reason(
    cert_pem: Option<&[u8]>,
    key_pem: Option<&[u8]>,
    ca: &X509Certificate<'_>,
    names: &[String],
) -> Option<&'static str> {
    let (Some(cert_pem), Some(key_pem)) = (cert_pem, key_pem) else {
        return Some("missing");
    };
    let Ok(der) = CertificateDer::from_pem_slice(cert_pem) else {
        return Some("not a PEM certificate");
    };
    let Ok(cert) = parse(&der) else {
        return Some("not an X.509 certificate");
    };
    let Some(key) = std::str::from_utf8(key_pem)
        .ok()
        .and_then(|pem| KeyPair::from_pem(pem).ok())
    else {
        return Some("unusable private key");
    };
    if cert.public_key().raw != key.subject_public_key_info() {
        Some("private key does not match")
    } else if cert.verify_signature(Some(ca.public_key())).is_err() {
        Some("not signed by the CA")
    } else if cert
        .validity()
        .time_to_expiration()
        .is_none_or(|left| left < RENEW_BEFORE)
    {
        Some("expired or about to")
    } else if !covers(&cert, names) {
        Some("a name is missing")
    } else {
        None
    }
}

/// Whether the subject alternative names of `cert` include every one of `names`.
fn covers(cert: &X509Certificate<'_>, names: &[String]) -> bool {
    let Ok(Some(extension)) = cert.subject_alternative_name() else {
        return names.is_empty();
    };
    let present: HashSet<String> = extension
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
            GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| ip.to_string()),
            _ => None,
        })
        .collect();
    names.iter().all(|name| present.contains(&normalized(name)))
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        Some(v4.into())
    } else {
        <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
    }
}

pub(super) fn normalized(name: &str) -> String {
    name.parse::<IpAddr>()
        .map_or_else(|_| name.to_ascii_lowercase(), |ip| ip.to_string())
}

/// Parses a DER certificate.
pub(super) fn parse<'a>(
    der: &'a CertificateDer<'_>,
) -> Result<X509Certificate<'a>, x509_parser::error::X509Error> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|error| match error {
            x509_parser::nom::Err::Error(error) | x509_parser::nom::Err::Failure(error) => error,
            x509_parser::nom::Err::Incomplete(_) => {
                x509_parser::error::X509Error::InvalidCertificate
            }
        })
}

/// How long before expiry a leaf is reissued.
const RENEW_BEFORE: Duration = Duration::days(30);
