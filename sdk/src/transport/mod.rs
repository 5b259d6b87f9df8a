//! The client side of the transport: QUIC (quinn) with mutual TLS 1.3 (rustls, *ring*) to the
//! sidecar, ALPN `sidestream/1`.
//!
//! A service trusts exactly one CA file for its sidecar and presents one client certificate;
//! the sidecar takes the service's identity from that certificate. Locally, the sidecar writes
//! a development CA and certificates into its data directory on first start, and the SDK finds
//! them there without configuration:
//!
//! ```text
//!   default_data_dir()          $SIDESTREAM_DATA_DIR | $XDG_DATA_HOME/sidestream | ~/.local/share/sidestream
//!   └── tls/                    default_tls_dir(); ClientTls::from_dir reads:
//!       ├── ca.pem              the CA the sidecar's certificate must chain to (nothing else is trusted)
//!       ├── client.pem          the dev service identity (`dev-client`), signed by that CA
//!       └── client.key          its private key (mode 0600)
//! ```
//!
//! A real deployment hands its own files to [`ClientTls::from_paths`]. Either way the files are
//! read again, before a connection is made, when one of them changed since: a service whose
//! certificates are renewed in place reconnects with the new ones.
//!
//! Central items: [`ClientTls`] (the TLS configuration and [`connect`](ClientTls::connect)),
//! [`QuicTuning`] (transport settings shared with the sidecar, so both ends agree) and
//! [`bind_endpoint`] (a UDP socket with large kernel buffers under a quinn endpoint). The
//! sidecar builds its server side from the same pieces.
//!
//! What this module does not do: create certificates (the sidecar does) or speak the
//! Sidestream protocol over the connection.

mod busy_poll;
mod client_tls;
mod connect;
mod crypto;
mod data_dir;
mod endpoint;
mod file_stamp;
mod pem_file;
mod quic_tuning;
mod tls_error;

pub use client_tls::ClientTls;
pub use connect::ConnectError;
pub(crate) use connect::is_tls_refusal;
pub use crypto::{PROTOCOL_VERSIONS, crypto_provider};
pub use data_dir::{
    CA_CERT_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE, DATA_DIR_ENV, TLS_DIR, default_data_dir,
    default_tls_dir,
};
pub use endpoint::{BindError, bind_endpoint, bind_endpoint_with};
pub use file_stamp::FileStamp;
pub use pem_file::{read_certificates, read_private_key, read_trust_anchors};
pub use quic_tuning::{LoopbackTuning, QuicTuning};
pub use tls_error::TlsError;
