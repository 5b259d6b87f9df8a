//! `sidestream cluster status|decommission`.

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
    /// Take a node out of the cluster (a learner, if there is one, takes its vote); stop its
    /// process afterwards. Also removes a node that is gone for good.
    Decommission {
        /// The node's id.
        node: u64,
    },
}

pub(super) async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let client = args.connect.connect("sidestream-cli").await?;
    let result = match args.command {
        ClusterCommand::Status => client
            .metadata()
            .await
            .map(|metadata| out(&status(&metadata))),
        ClusterCommand::Decommission { node } => {
            client.decommission_node(node).await.map(|voters| {
                let voters: Vec<String> = voters.iter().map(u64::to_string).collect();
                out(&format!(
                    "node {node} left the cluster; metadata voters: {}\n",
                    voters.join(", ")
                ));
            })
        }
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
