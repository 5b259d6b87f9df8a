//! `sidestream cluster status`.

use std::fmt::Write as _;

use clap::{Args, Subcommand};
use sidestream_proto::v1::MetadataResult;

use super::connect::ConnectArgs;
use super::out;

/// `sidestream cluster …`.
#[derive(Debug, Args)]
pub(super) struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Show the cluster's nodes as the sidecar sees them: addresses, which vote in the
    /// metadata group, and which leads it.
    Status,
}

pub(super) async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let client = args.connect.connect("sidestream-cli").await?;
    let result = match args.command {
        ClusterCommand::Status => client
            .metadata()
            .await
            .map(|metadata| out(&status(&metadata))),
    };
    let closed = client.close().await;
    result?;
    Ok(closed?)
}

/// The status table.
fn status(metadata: &MetadataResult) -> String {
    let mut text = format!(
        "answered by node {}; metadata leader: {}\n{:<6} {:<22} {:<22} {:<8} {}\n",
        metadata.node_id,
        match metadata.metadata_leader {
            0 => "none".to_owned(),
            leader => format!("node {leader}"),
        },
        "NODE",
        "CLIENT ADDRESS",
        "PEER ADDRESS",
        "ROLE",
        "",
    );
    for node in &metadata.nodes {
        let role = if node.voter { "voter" } else { "learner" };
        let peer = if node.peer_address.is_empty() {
            "-"
        } else {
            &node.peer_address
        };
        let leader = if node.id == metadata.metadata_leader {
            "leader"
        } else {
            ""
        };
        let _ = writeln!(
            text,
            "{:<6} {:<22} {:<22} {:<8} {leader}",
            node.id, node.client_address, peer, role
        );
    }
    text
}
