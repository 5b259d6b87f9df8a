//! The development CA: creating it, and issuing the sidecar's and the dev client's
//! certificates with it.

use std::fmt::Write;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// A certificate and its new private key, both PEM.
#[derive(Debug)]
pub(super) struct Issued {
    pub(super) cert_pem: String,
    pub(super) key_pem: String,
}

/// What a leaf certificate says: its subject and names, and what it may be used for.
#[derive(Debug)]
pub(super) struct Leaf<'a> {
    /// The subject's common name.
    pub(super) common_name: &'a str,
    /// DNS names and IP addresses for the subject alternative name extension.
    pub(super) names: &'a [String],
    /// Whether it may serve TLS (the sidecar's); every leaf may authenticate a client.
    pub(super) server: bool,
}

/// Creates a CA with a new P-256 key, valid for [`CA_LIFETIME`] from `now` and allowed to
/// sign end-entity certificates only (path length 0).
///
/// Its name ends with 8 hex digits of its public key: two development CAs never share a name,
/// so a certificate of one is reported as of an unknown issuer by the other, not as a bad
/// signature.
pub(super) fn create_ca(now: OffsetDateTime) -> Result<Issued, rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    // The raw key is an uncompressed point: 0x04, then the random x coordinate.
    let tag = key
        .public_key_raw()
        .iter()
        .skip(1)
        .take(4)
        .fold(String::new(), |mut tag, byte| {
            let _ = write!(tag, "{byte:02x}");
            tag
        });
    params.distinguished_name = distinguished_name(&format!("{CA_COMMON_NAME} {tag}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + CA_LIFETIME;
    let cert = params.self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues `leaf` with a new P-256 key, signed by the CA whose certificate is `ca` and key is
/// `ca_key`, valid for [`LEAF_LIFETIME`] from `now` but never past `ca_not_after`.
pub(super) fn issue(
    ca: &CertificateDer<'_>,
    ca_key: &KeyPair,
    ca_not_after: OffsetDateTime,
    leaf: &Leaf<'_>,
    now: OffsetDateTime,
) -> Result<Issued, rcgen::Error> {
    let issuer = Issuer::from_ca_cert_der(ca, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(leaf.names)?;
    params.distinguished_name = distinguished_name(leaf.common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = if leaf.server {
        // The sidecar's certificate also authenticates it as a client of its peers.
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    } else {
        vec![ExtendedKeyUsagePurpose::ClientAuth]
    };
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - CLOCK_SKEW;
    params.not_after = (now + LEAF_LIFETIME).min(ca_not_after);
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Sidestream development");
    name.push(DnType::CommonName, common_name);
    name
}

/// The development CA's common name, before its tag.
const CA_COMMON_NAME: &str = "Sidestream development CA";

/// How long the development CA is valid. Long, because replacing it locks out every client
/// that trusts the old one.
const CA_LIFETIME: Duration = Duration::days(10 * 365);

/// How long a leaf certificate is valid; the sidecar reissues it before it expires.
pub(super) const LEAF_LIFETIME: Duration = Duration::days(365);

/// Certificates start this long before their creation, for clocks slightly behind.
const CLOCK_SKEW: Duration = Duration::minutes(5);
