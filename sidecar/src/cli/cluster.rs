//! `sidestream cluster status|decommission`.

use std::fmt::Write as _;
use std::time::Duration;

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
    /// Show the cluster's nodes as the sidecar sees them (addresses, which vote in the
    /// metadata group, which leads it), and each partition's leader, replicas and the
    /// replicas in sync (caught up with the leader), as their leaders report them.
    Status,
    /// Take a node out of the cluster (a learner, if there is one, takes its vote) and wait
    /// until its partition replicas have moved to other nodes and caught up; stop its process
    /// afterwards. Also removes a node that is gone for good (its replicas are rebuilt from
    /// the others, where the others still form a majority of each partition's set).
    Decommission {
        /// The node's id.
        node: u64,
    },
}

pub(super) async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    // Taking a node out waits for the metadata group's change (longer for a dead node, which
    // the metadata leader gives a while to learn it left), and cannot be asked twice.
    let decommission = matches!(args.command, ClusterCommand::Decommission { .. });
    let client = args
        .connect
        .connect_with("sidestream-cli", |builder| {
            if decommission {
                builder
                    .answer_timeout(DECOMMISSION_ANSWER_WAIT)
                    .request_timeout(DECOMMISSION_ANSWER_WAIT)
            } else {
                builder
            }
        })
        .await?;
    let result = match args.command {
        ClusterCommand::Status => match client.metadata().await {
            Ok(metadata) => {
                let reports = reports(&args.connect, &metadata).await;
                out(&status(&metadata));
                out(&partitions(&metadata, &reports));
                Ok(())
            }
            Err(e) => Err(anyhow::Error::from(e)),
        },
        ClusterCommand::Decommission { node } => match client.decommission_node(node).await {
            Ok(voters) => {
                let voters: Vec<String> = voters.iter().map(u64::to_string).collect();
                out(&format!(
                    "node {node} left the cluster; metadata voters: {}\n",
                    voters.join(", ")
                ));
                match replicas_moved(&args.connect, &client, node).await {
                    Ok(()) => {
                        out(&format!(
                            "node {node}'s replicas moved; stop its process now\n"
                        ));
                        Ok(())
                    }
                    Err(reason) => Err(anyhow::anyhow!(
                        "node {node} left, but its replicas have not all moved yet: {reason}; see `sidestream cluster status`"
                    )),
                }
            }
            Err(e) => Err(e.into()),
        },
    };
    let closed = client.close().await;
    result?;
    Ok(closed?)
}

/// Longest the sidecar may take to answer a request of this command (a decommission is
/// passed on to the metadata leader, which may take up to 30 s).
const DECOMMISSION_ANSWER_WAIT: Duration = Duration::from_secs(60);

/// Longest `decommission` waits for the leaving node's replicas to move.
const MOVE_WAIT: Duration = Duration::from_secs(120);

/// Waits until no partition lists node `gone` and every partition's leader reports all its
/// replicas in sync (the replacements caught up), as the nodes describe themselves.
async fn replicas_moved(
    connect: &ConnectArgs,
    client: &sidestream::Client,
    gone: u64,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + MOVE_WAIT;
    loop {
        let asked = client.metadata().await.map_err(|e| e.to_string())?;
        let reports = reports(connect, &asked).await;
        let mut pending = Vec::new();
        for topic in &asked.topics {
            for partition in &topic.partitions {
                let led = leaders_report(&asked, &reports, &topic.name, partition.partition);
                let moved = led.is_some_and(|p| {
                    !p.replicas.contains(&gone)
                        && p.leader != Some(gone)
                        && p.replicas.iter().all(|r| p.in_sync_replicas.contains(r))
                });
                if !moved {
                    pending.push(format!("{}/{}", topic.name, partition.partition));
                }
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("still moving: {}", pending.join(", ")));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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

/// Every other node's own description of the cluster (each knows the leaders and in-sync
/// replicas of the partitions it holds); a node that cannot be reached within 2 s is left out.
async fn reports(connect: &ConnectArgs, asked: &MetadataResult) -> Vec<MetadataResult> {
    let mut reports = Vec::new();
    for node in asked.nodes.iter().filter(|n| n.id != asked.node_id) {
        let Ok(addr) = node.client_address.parse() else {
            continue;
        };
        let mut other = connect.clone();
        other.sidecar = addr;
        let ask = async {
            let client = other.connect("sidestream-cli").await.ok()?;
            let metadata = client.metadata().await.ok();
            let _ = client.close().await;
            metadata
        };
        if let Ok(Some(metadata)) = tokio::time::timeout(Duration::from_secs(2), ask).await {
            reports.push(metadata);
        }
    }
    reports
}

/// The partitions table: each partition as its leader describes it (or, when no node that
/// answered leads it, as the node asked does).
fn partitions(asked: &MetadataResult, reports: &[MetadataResult]) -> String {
    let mut text = format!(
        "{:<24} {:<9} {:<7} {:<12} {:<12} {}\n",
        "TOPIC", "PARTITION", "LEADER", "REPLICAS", "IN SYNC", "HIGH WATERMARK"
    );
    let list = |ids: &[u64]| {
        if ids.is_empty() {
            "-".to_owned()
        } else {
            ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
        }
    };
    for topic in &asked.topics {
        for partition in &topic.partitions {
            // The leader's own report: it alone knows which replicas are in sync.
            let led = leaders_report(asked, reports, &topic.name, partition.partition);
            let shown = led.unwrap_or(partition);
            let _ = writeln!(
                text,
                "{:<24} {:<9} {:<7} {:<12} {:<12} {}",
                topic.name,
                partition.partition,
                shown
                    .leader
                    .filter(|&l| l != 0)
                    .map_or_else(|| "-".to_owned(), |l| l.to_string()),
                list(&shown.replicas),
                list(&shown.in_sync_replicas),
                shown.high_watermark
            );
        }
    }
    text
}

/// A partition as the node that leads it describes it (only the leader knows which replicas
/// are in sync), among the asked node's and the others' reports.
fn leaders_report<'a>(
    asked: &'a MetadataResult,
    reports: &'a [MetadataResult],
    topic: &str,
    partition: u32,
) -> Option<&'a sidestream_proto::v1::PartitionDescription> {
    std::iter::once(asked).chain(reports).find_map(|report| {
        let p = report
            .topics
            .iter()
            .find(|t| t.name == topic)?
            .partitions
            .iter()
            .find(|p| p.partition == partition)?;
        (p.leader == Some(report.node_id)).then_some(p)
    })
}
