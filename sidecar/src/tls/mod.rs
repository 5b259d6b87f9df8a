//! The sidecar's side of mutual TLS over QUIC, and the development certificates.
//!
//! # Trust model
//!
//! One CA vouches for everyone: the sidecar presents a certificate that chains to it, and so
//! must every client. A service trusts only that CA for its sidecar (not the system's roots),
//! and the sidecar refuses any client without a certificate that chains to it, during the
//! handshake. A client's identity, for ACLs, is what its certificate names
//! ([`ClientIdentity`]); nothing a client sends afterwards can change it. TLS 1.3 only, ALPN
//! `sidestream/1`, *ring* as the only crypto provider.
//!
//! ```text
//!   service (SDK)                                   sidecar
//!   ClientTls: trusts ca.pem,                       ServerTls: presents sidecar.pem,
//!              presents client.pem  ──QUIC + TLS──▶            requires a client cert chaining to ca.pem
//!                                                   ClientIdentity::of(&connection) = "dev-client"
//! ```
//!
//! # Development certificates
//!
//! For local use, [`DevCertificates::ensure`] creates on first start, in the data directory:
//!
//! ```text
//!   <data dir>/tls/        mode 0700
//!   ├── ca.pem            the development CA (10 years); never replaced once written
//!   ├── ca.key            its private key (0600); needed only to issue the files below
//!   ├── sidecar.pem       the sidecar's certificate: localhost, 127.0.0.1, ::1 and configured names
//!   ├── sidecar.key       (0600)
//!   ├── client.pem        a client certificate for services: identity `dev-client`
//!   └── client.key        (0600)
//! ```
//!
//! Later starts reuse them. The leaf certificates (one year) are reissued by the same CA when
//! missing, unusable, lacking a configured name, or within 30 days of expiry, so clients keep
//! working; every file is written atomically. The SDK finds this folder through the same
//! data-directory rule (`sidestream::transport::default_tls_dir`). A real deployment passes
//! its own files to [`ServerTls::from_paths`] instead and keeps its CA key elsewhere.
//!
//! Central types: [`DevCertificates`], [`ServerTls`] (the rustls and quinn server
//! configurations, and [`bind`](ServerTls::bind)) and [`ClientIdentity`].

mod client_identity;
mod dev_ca;
mod dev_certificates;
mod leaf_check;
mod peer_tls;
mod reset_key;
mod server_tls;

pub use client_identity::{ClientIdentity, IdentityError};
pub use dev_certificates::{DEV_CLIENT_IDENTITY, DevCertificates, DevCertificatesError};
pub use peer_tls::PeerTls;
pub(crate) use reset_key::{ResetKey, ResetKeyError};
pub use server_tls::ServerTls;

#[cfg(test)]
mod tests;
