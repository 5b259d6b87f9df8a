use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{KeyPair, PublicKeyData};
use rustls::pki_types::{CertificateDer, ServerName};
use sidestream::transport::{
    CA_CERT_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE, TLS_DIR, TlsError, read_certificates,
};
use time::OffsetDateTime;

use super::dev_ca::{self, Leaf};
use super::leaf_check::{normalized, parse, reissue_reason};
use crate::atomic_file::write_atomically;

/// The development certificates in a data directory's `tls/` folder: a CA, the sidecar's
/// certificate and a client certificate for services, all created on first use.
///
/// [`ensure`](Self::ensure) makes them exist and be usable; the accessors name the files.
/// The CA is never replaced once written (clients trust it); the other certificates are
/// reissued by it when missing, unusable, no longer covering the sidecar's names, or within
/// 30 days of expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevCertificates {
    dir: PathBuf,
}

impl DevCertificates {
    /// Makes the development certificates in `data_dir/tls/` exist and be usable, creating
    /// the folder (mode 0700 on Unix) and any missing file.
    ///
    /// The sidecar's certificate names `localhost`, `127.0.0.1`, `::1` and each of
    /// `extra_names` (DNS names or IP addresses). Private keys are written with mode 0600,
    /// every file atomically (temporary file, then rename).
    ///
    /// Fails if an extra name is neither a DNS name nor an IP address, if a file cannot be
    /// read or written, if the existing CA is unusable (expired, not PEM, key not matching),
    /// or if a certificate must be issued while the CA's key is missing.
    pub fn ensure(data_dir: &Path, extra_names: &[String]) -> Result<Self, DevCertificatesError> {
        let server_names = server_names(extra_names)?;
        let certificates = Self::in_data_dir(data_dir);
        create_private_dir(data_dir, &certificates.dir)?;
        let now = OffsetDateTime::now_utc();
        let ca = certificates.load_or_create_ca(now)?;
        let ca_cert = parse(&ca.der).map_err(|source| DevCertificatesError::Ca {
            source: TlsError::BadCertificate {
                path: certificates.ca_cert(),
                index: 0,
                source,
            },
        })?;
        let client_names = [DEV_CLIENT_IDENTITY.to_owned()];
        let leaves = [
            (
                Leaf {
                    common_name: SIDECAR_COMMON_NAME,
                    names: &server_names,
                    server: true,
                },
                certificates.server_cert(),
                certificates.server_key(),
            ),
            (
                Leaf {
                    common_name: DEV_CLIENT_IDENTITY,
                    names: &client_names,
                    server: false,
                },
                certificates.client_cert(),
                certificates.client_key(),
            ),
        ];
        for (leaf, cert_path, key_path) in &leaves {
            let cert_pem = read_if_exists(cert_path)?;
            let key_pem = read_if_exists(key_path)?;
            let reason = reissue_reason(
                cert_pem.as_deref(),
                key_pem.as_deref(),
                &ca_cert,
                leaf.names,
            );
            let Some(reason) = reason else {
                continue;
            };
            let ca_key = ca
                .key
                .as_ref()
                .ok_or_else(|| DevCertificatesError::CaKeyMissing {
                    key: certificates.ca_key(),
                    needed_for: cert_path.clone(),
                })?;
            let ca_not_after = ca_cert.validity().not_after.to_datetime();
            let issued = dev_ca::issue(&ca.der, ca_key, ca_not_after, leaf, now)
                .map_err(|source| generate_error(cert_path, source))?;
            write(key_path, &issued.key_pem, PRIVATE_MODE)?;
            write(cert_path, &issued.cert_pem, PUBLIC_MODE)?;
            tracing::info!(path = %cert_path.display(), reason, "issued a development certificate");
        }
        Ok(certificates)
    }

    /// The file names under `data_dir/tls/`, without touching the disk.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join(TLS_DIR),
        }
    }

    /// The `tls/` folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate, `ca.pem`: what services and peers trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join(CA_CERT_FILE)
    }

    /// The CA's private key, `ca.key`: needed only to issue certificates.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join(CA_KEY_FILE)
    }

    /// The sidecar's certificate, `sidecar.pem`.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join(SIDECAR_CERT_FILE)
    }

    /// The sidecar's private key, `sidecar.key`.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join(SIDECAR_KEY_FILE)
    }

    /// The client certificate of the [`DEV_CLIENT_IDENTITY`], `client.pem`.
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join(CLIENT_CERT_FILE)
    }

    /// The client certificate's private key, `client.key`.
    pub fn client_key(&self) -> PathBuf {
        self.dir.join(CLIENT_KEY_FILE)
    }

    fn load_or_create_ca(&self, now: OffsetDateTime) -> Result<DevCa, DevCertificatesError> {
        let cert_path = self.ca_cert();
        let key_path = self.ca_key();
        // The CA exists once `ca.pem` does: that is what clients trust. A `ca.key` without it
        // is a creation that crashed halfway, which nobody can trust yet, so it is replaced.
        if read_if_exists(&cert_path)?.is_none() {
            let issued =
                dev_ca::create_ca(now).map_err(|source| generate_error(&cert_path, source))?;
            write(&key_path, &issued.key_pem, PRIVATE_MODE)?;
            write(&cert_path, &issued.cert_pem, PUBLIC_MODE)?;
            tracing::info!(path = %cert_path.display(), "created a development CA");
        }
        let der = read_certificates(&cert_path)
            .map_err(|source| DevCertificatesError::Ca { source })?
            .into_iter()
            .next()
            .ok_or_else(|| DevCertificatesError::Ca {
                source: TlsError::NoCertificate {
                    path: cert_path.clone(),
                },
            })?;
        let key = match read_if_exists(&key_path)? {
            None => None,
            Some(pem) => {
                let key = std::str::from_utf8(&pem)
                    .map_err(|_| rcgen::Error::CouldNotParseKeyPair)
                    .and_then(KeyPair::from_pem)
                    .map_err(|source| DevCertificatesError::CaKey {
                        path: key_path.clone(),
                        source,
                    })?;
                let matches = parse(&der)
                    .is_ok_and(|cert| cert.public_key().raw == key.subject_public_key_info());
                if !matches {
                    return Err(DevCertificatesError::CaKeyMismatch {
                        cert: cert_path,
                        key: key_path,
                    });
                }
                Some(key)
            }
        };
        Ok(DevCa { der, key })
    }
}

/// Why the development certificates could not be made usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevCertificatesError {
    /// An extra name for the sidecar's certificate is neither a DNS name nor an IP address.
    #[error("{name:?} is neither a DNS name nor an IP address")]
    BadName {
        /// The name as given.
        name: String,
    },
    /// The existing CA certificate is unusable. It is never replaced automatically (clients
    /// trust it); delete the `tls/` folder to start over, and restart the clients.
    #[error("the development CA is unusable")]
    Ca {
        /// What is wrong with it (names the file).
        #[source]
        source: TlsError,
    },
    /// The CA's key file is not a usable private key.
    #[error("{}: not a usable private key", path.display())]
    CaKey {
        /// The key file.
        path: PathBuf,
        /// What was wrong.
        #[source]
        source: rcgen::Error,
    },
    /// The CA's key file holds another key than the CA certificate's.
    #[error("{} does not hold the private key of {}", key.display(), cert.display())]
    CaKeyMismatch {
        /// The CA certificate file.
        cert: PathBuf,
        /// The CA key file.
        key: PathBuf,
    },
    /// A certificate must be issued but the CA's key is missing.
    #[error("{} is missing, so {} cannot be issued", key.display(), needed_for.display())]
    CaKeyMissing {
        /// The missing CA key file.
        key: PathBuf,
        /// The certificate that needed issuing.
        needed_for: PathBuf,
    },
    /// A folder could not be created.
    #[error("{}: cannot create the folder", path.display())]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Key generation or signing failed.
    #[error("{}: cannot generate the certificate", path.display())]
    Generate {
        /// The certificate file that was to be written.
        path: PathBuf,
        /// Why.
        #[source]
        source: rcgen::Error,
    },
    /// A file could not be read.
    #[error("{}: cannot read", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file could not be written.
    #[error("{}: cannot write", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The identity the development client certificate names (its common name and DNS name).
pub const DEV_CLIENT_IDENTITY: &str = "dev-client";

#[derive(Debug)]
struct DevCa {
    der: CertificateDer<'static>,
    key: Option<KeyPair>,
}

/// The sidecar certificate's names: the loopback ones, then `extra_names`, each once.
fn server_names(extra_names: &[String]) -> Result<Vec<String>, DevCertificatesError> {
    let mut names: Vec<String> = LOOPBACK_NAMES.iter().map(|&name| name.to_owned()).collect();
    for name in extra_names {
        if ServerName::try_from(name.as_str()).is_err() {
            return Err(DevCertificatesError::BadName { name: name.clone() });
        }
        if !names
            .iter()
            .any(|known| normalized(known) == normalized(name))
        {
            names.push(name.clone());
        }
    }
    Ok(names)
}

fn create_private_dir(data_dir: &Path, dir: &Path) -> Result<(), DevCertificatesError> {
    let error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DevCertificatesError::CreateDir { path, source }
    };
    fs::create_dir_all(data_dir).map_err(error(data_dir))?;
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(dir) {
        Err(source) if source.kind() != io::ErrorKind::AlreadyExists => Err(error(dir)(source)),
        _ => Ok(()),
    }
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, DevCertificatesError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(source) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DevCertificatesError::Read {
            path: path.into(),
            source,
        }),
    }
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), DevCertificatesError> {
    write_atomically(path, contents.as_bytes(), mode).map_err(|source| {
        DevCertificatesError::Write {
            path: path.into(),
            source,
        }
    })
}

fn generate_error(path: &Path, source: rcgen::Error) -> DevCertificatesError {
    DevCertificatesError::Generate {
        path: path.into(),
        source,
    }
}

const CA_KEY_FILE: &str = "ca.key";
const SIDECAR_CERT_FILE: &str = "sidecar.pem";
const SIDECAR_KEY_FILE: &str = "sidecar.key";
const SIDECAR_COMMON_NAME: &str = "Sidestream sidecar";
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
const PRIVATE_MODE: u32 = 0o600;
const PUBLIC_MODE: u32 = 0o644;
