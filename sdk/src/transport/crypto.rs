use std::sync::Arc;

use rustls::SupportedProtocolVersion;
use rustls::crypto::CryptoProvider;

/// The one rustls crypto provider of the whole workspace: *ring*.
///
/// Every configuration names it explicitly rather than relying on a process-wide default, so
/// no `CryptoProvider::install_default` is needed and none can conflict. aws-lc-rs is never
/// compiled in: with two providers, rustls cannot pick a default and `builder()` panics.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The TLS versions Sidestream speaks: 1.3 only, as QUIC requires.
pub static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
