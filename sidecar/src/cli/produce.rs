//! `sidestream produce TOPIC`: one event per line of standard input.

use std::io::{BufRead as _, Read as _};

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use sidestream::{Acks, RawEvent};

use super::connect::ConnectArgs;

/// Largest line accepted by default: what fits one record batch with room for the headers.
const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// `sidestream produce …`.
#[derive(Debug, Args)]
pub(super) struct ProduceArgs {
    /// The topic.
    topic: String,
    /// Key of every event (its partition follows from it); without it, each line's text
    /// before --key-separator is its key, or events have no key.
    #[arg(long)]
    key: Option<String>,
    /// Split each line at the first occurrence of this text into key and value.
    #[arg(long, conflicts_with = "key")]
    key_separator: Option<String>,
    /// A header on every event, as NAME=VALUE (repeatable).
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// When the sidecar acknowledges.
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    acks: AcksArg,
    /// Longest line accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_LINE_BYTES)]
    max_line_bytes: usize,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// `--acks`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum AcksArg {
    /// Do not wait for the sidecar.
    None,
    /// After the partition leader appended the events.
    Leader,
    /// After the replica set committed them.
    All,
}

impl From<AcksArg> for Acks {
    fn from(acks: AcksArg) -> Self {
        match acks {
            AcksArg::None => Acks::None,
            AcksArg::Leader => Acks::Leader,
            AcksArg::All => Acks::All,
        }
    }
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

pub(super) async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let client = args.connect.connect("sidestream-cli").await?;
    let (events, outcome) = produce(&client, &args).await;
    let closed = client.close().await;
    #[expect(
        clippy::print_stderr,
        reason = "the summary goes to stderr, events to the topic"
    )]
    {
        eprintln!(
            "produced {events} event{} to {}",
            if events == 1 { "" } else { "s" },
            args.topic
        );
    }
    outcome?;
    Ok(closed?)
}

/// Publishes every line; returns how many were acknowledged, and the first error.
async fn produce(client: &sidestream::Client, args: &ProduceArgs) -> (u64, anyhow::Result<()>) {
    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(1024);
    let max = args.max_line_bytes;
    // Standard input is read on a thread of its own: it blocks.
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut reader = stdin.lock();
        loop {
            let mut line = Vec::new();
            // Read at most max + 2 bytes so an endless line cannot exhaust memory.
            let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(2);
            match (&mut reader).take(limit).read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if lines_tx.blocking_send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = lines_tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    let mut pending = Vec::new();
    let mut number = 0u64;
    let mut failure = None;
    while let Some(line) = lines.recv().await {
        number += 1;
        let mut line = match line.context("cannot read standard input") {
            Ok(line) => line,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        let ended = line.last() == Some(&b'\n');
        if ended {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if line.len() > max || (!ended && line.len() >= max) {
            failure = Some(anyhow::anyhow!(
                "line {number} is longer than the limit of {max} bytes (--max-line-bytes); nothing from it on was sent"
            ));
            break;
        }
        let (key, value) = match (&args.key, &args.key_separator) {
            (Some(key), _) => (Some(Bytes::from(key.clone())), Bytes::from(line)),
            (None, Some(separator)) => split_key(&line, separator.as_bytes()),
            (None, None) => (None, Bytes::from(line)),
        };
        let event = RawEvent {
            key,
            value,
            headers: args.headers.iter().map(|(n, v)| (n, v)).collect(),
        };
        match client
            .publish_raw_nowait(&args.topic, event, args.acks.into())
            .await
        {
            Ok(receipt) => pending.push(receipt),
            Err(e) => {
                failure = Some(anyhow::Error::new(e).context(format!("line {number}")));
                break;
            }
        }
    }
    let mut acknowledged = 0;
    for receipt in pending {
        match receipt.await {
            Ok(_) => acknowledged += 1,
            Err(e) => {
                if failure.is_none() {
                    failure = Some(e.into());
                }
            }
        }
    }
    match failure {
        Some(e) => (acknowledged, Err(e)),
        None if number == 0 => (0, Ok(())),
        None => (acknowledged, Ok(())),
    }
}

fn split_key(line: &[u8], separator: &[u8]) -> (Option<Bytes>, Bytes) {
    if separator.is_empty() {
        return (None, Bytes::copy_from_slice(line));
    }
    match line.windows(separator.len()).position(|w| w == separator) {
        Some(at) => (
            Some(Bytes::copy_from_slice(&line[..at])),
            Bytes::copy_from_slice(&line[at + separator.len()..]),
        ),
        None => (None, Bytes::copy_from_slice(line)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_into_key_and_value() {
        let (key, value) = split_key(b"o-1:placed:now", b":");
        assert_eq!(key.as_deref(), Some(&b"o-1"[..]));
        assert_eq!(&value[..], b"placed:now");
        assert_eq!(split_key(b"no separator", b":").0, None);
        assert_eq!(parse_header("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_header("=x").is_err());
    }
}
