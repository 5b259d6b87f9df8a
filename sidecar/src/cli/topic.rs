//! `sidestream topic create|list|describe|delete`.

use std::fmt::Write as _;

use clap::{Args, Subcommand};
use sidestream::{Cleanup, Fsync, TopicSettings};
use sidestream_proto::v1::{FsyncMode, TopicDescription};

use super::connect::ConnectArgs;
use super::out;

/// `sidestream topic …`.
#[derive(Debug, Args)]
pub(super) struct TopicArgs {
    #[command(subcommand)]
    command: TopicCommand,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        /// The topic's name: ASCII letters, digits, '.', '_' and '-', at most 249.
        name: String,
        /// Number of partitions [default: the sidecar's]
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: Option<u32>,
        /// Replicas of each partition [default: the sidecar's]
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        replication_factor: Option<u32>,
        /// Delete sealed segments older than this many milliseconds; -1 keeps them.
        #[arg(long, allow_negative_numbers = true)]
        retention_ms: Option<i64>,
        /// Delete the oldest sealed segments while a partition stays this large; -1 keeps them.
        #[arg(long, allow_negative_numbers = true)]
        retention_bytes: Option<i64>,
        /// What retention does with old records: delete or compact.
        #[arg(long)]
        cleanup: Option<Cleanup>,
        /// When appends are synced: always, `interval:<ms>` or never [default: the sidecar's]
        #[arg(long)]
        fsync: Option<Fsync>,
    },
    /// List the topics.
    List,
    /// Show a topic's settings and partitions.
    Describe {
        /// The topic.
        name: String,
    },
    /// Delete a topic and all its events.
    Delete {
        /// The topic.
        name: String,
    },
}

pub(super) async fn run(args: TopicArgs) -> anyhow::Result<()> {
    let client = args.connect.connect("sidestream-cli").await?;
    let result: anyhow::Result<()> = match args.command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            retention_ms,
            retention_bytes,
            cleanup,
            fsync,
        } => {
            let mut settings = TopicSettings::new();
            settings.partitions = partitions;
            settings.replication_factor = replication_factor;
            settings.retention_ms = retention_ms;
            settings.retention_bytes = retention_bytes;
            settings.cleanup = cleanup;
            settings.fsync = fsync;
            match client.create_topic(&name, settings).await {
                Ok(topic) => {
                    out(&describe(&topic));
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        TopicCommand::List => match client.list_topics().await {
            Ok(topics) => {
                let mut text = format!(
                    "{:<40} {:>10} {:>18}\n",
                    "TOPIC", "PARTITIONS", "REPLICATION FACTOR"
                );
                for topic in topics {
                    let _ = writeln!(
                        text,
                        "{:<40} {:>10} {:>18}",
                        topic.name, topic.partitions, topic.replication_factor
                    );
                }
                out(&text);
                Ok(())
            }
            Err(e) => Err(e.into()),
        },
        TopicCommand::Describe { name } => match client.describe_topic(&name).await {
            Ok(topic) => {
                out(&describe(&topic));
                Ok(())
            }
            Err(e) => Err(e.into()),
        },
        TopicCommand::Delete { name } => match client.delete_topic(&name).await {
            Ok(()) => {
                out(&format!("deleted topic {name}\n"));
                Ok(())
            }
            Err(e) => Err(e.into()),
        },
    };
    let closed = client.close().await;
    result?;
    Ok(closed?)
}

/// A topic's settings and partitions, as `describe` prints them.
fn describe(topic: &TopicDescription) -> String {
    let config = topic.config.unwrap_or_default();
    let fsync = config.fsync.unwrap_or_default();
    let fsync = match FsyncMode::try_from(fsync.mode) {
        Ok(FsyncMode::Interval) => format!("interval:{}", fsync.interval_ms),
        Ok(FsyncMode::Never) => "never".to_owned(),
        _ => "always".to_owned(),
    };
    let keep = |v: Option<i64>| match v {
        Some(-1) | None => "forever".to_owned(),
        Some(v) => v.to_string(),
    };
    let mut text = String::new();
    let _ = writeln!(text, "topic:              {}", topic.name);
    let _ = writeln!(text, "partitions:         {}", topic.partitions.len());
    let _ = writeln!(text, "replication factor: {}", topic.replication_factor);
    let _ = writeln!(text, "retention ms:       {}", keep(config.retention_ms));
    let _ = writeln!(text, "retention bytes:    {}", keep(config.retention_bytes));
    let _ = writeln!(text, "fsync:              {fsync}");
    let _ = writeln!(
        text,
        "\n{:>9} {:>6} {:>16} {:>15} {:>10} {:>10}",
        "PARTITION", "LEADER", "LOG START OFFSET", "HIGH WATERMARK", "REPLICAS", "IN SYNC"
    );
    let list = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    for p in &topic.partitions {
        let _ = writeln!(
            text,
            "{:>9} {:>6} {:>16} {:>15} {:>10} {:>10}",
            p.partition,
            p.leader
                .map_or_else(|| "none".to_owned(), |l| l.to_string()),
            p.log_start_offset,
            p.high_watermark,
            list(&p.replicas),
            list(&p.in_sync_replicas)
        );
    }
    text
}
