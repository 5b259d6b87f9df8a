//! How the client subcommands reach a sidecar: its address and the certificates to use.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use sidestream::transport::{ClientTls, TLS_DIR, default_data_dir};
use sidestream::{Client, ClientBuilder};

/// Flags shared by every subcommand that talks to a sidecar.
#[derive(Debug, Clone, Args)]
pub(super) struct ConnectArgs {
    /// The sidecar's client address.
    #[arg(
        long,
        env = "SIDESTREAM_SIDECAR",
        default_value = "127.0.0.1:7400",
        global = true
    )]
    pub(super) sidecar: SocketAddr,
    /// Data directory whose `tls/` holds the development certificates
    /// [default: `$XDG_DATA_HOME/sidestream` or `~/.local/share/sidestream`]
    #[arg(long, env = "SIDESTREAM_DATA_DIR", global = true)]
    pub(super) data_dir: Option<PathBuf>,
    /// CA certificate (PEM) the sidecar's certificate must chain to; with --tls-cert and
    /// --tls-key replaces the development certificates.
    #[arg(long, requires_all = ["tls_cert", "tls_key"], global = true)]
    pub(super) tls_ca: Option<PathBuf>,
    /// This client's certificate chain (PEM).
    #[arg(long, requires_all = ["tls_ca", "tls_key"], global = true)]
    pub(super) tls_cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, requires_all = ["tls_ca", "tls_cert"], global = true)]
    pub(super) tls_key: Option<PathBuf>,
}

impl ConnectArgs {
    /// Connects to the sidecar as `service`.
    pub(super) async fn connect(&self, service: &str) -> anyhow::Result<Client> {
        self.connect_with(service, |builder| builder).await
    }

    /// Connects to the sidecar as `service`, with more client settings.
    pub(super) async fn connect_with(
        &self,
        service: &str,
        settings: impl FnOnce(ClientBuilder) -> ClientBuilder,
    ) -> anyhow::Result<Client> {
        let tls = if let (Some(ca), Some(cert), Some(key)) =
            (&self.tls_ca, &self.tls_cert, &self.tls_key)
        {
            ClientTls::from_paths(ca, cert, key)?
        } else {
            let data_dir = match &self.data_dir {
                Some(dir) => dir.clone(),
                None => default_data_dir().context(
                    "no data directory: set --data-dir, SIDESTREAM_DATA_DIR, XDG_DATA_HOME or HOME",
                )?,
            };
            let dir = data_dir.join(TLS_DIR);
            ClientTls::from_dir(&dir).with_context(|| {
                    format!(
                        "no development certificates in {} (start the sidecar with this data directory first, or pass --tls-ca/--tls-cert/--tls-key)",
                        dir.display()
                    )
                })?
        };
        settings(
            Client::builder(service)
                .sidecar(self.sidecar.to_string())
                .tls(tls),
        )
        .connect()
        .await
        .with_context(|| format!("cannot connect to the sidecar at {}", self.sidecar))
    }
}
