//! `sidestream consume TOPIC`: print events as they arrive.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use clap::{Args, ValueEnum};
use sidestream::{Delivery, RawEvent, StartAt};

use super::connect::ConnectArgs;

/// `sidestream consume …`.
#[derive(Debug, Args)]
pub(super) struct ConsumeArgs {
    /// The topic.
    topic: String,
    /// Consume as a member of this group, from its committed offsets, committing as it goes.
    #[arg(long)]
    group: Option<String>,
    /// Where to start: earliest, latest, or an offset (in every partition).
    #[arg(long, default_value = "earliest", value_parser = parse_start)]
    from: StartAt,
    /// Only these partitions (repeatable; not with --group).
    #[arg(long = "partition", conflicts_with = "group")]
    partitions: Vec<u32>,
    /// Stop after this many events.
    #[arg(long)]
    max: Option<u64>,
    /// Stop after this many seconds without an event.
    #[arg(long)]
    timeout: Option<f64>,
    /// Output: the value as text, or one JSON object per event.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// The value, as UTF-8 (invalid bytes replaced), one event per line.
    Text,
    /// `{"topic","partition","offset","key","value","timestamp","headers"}` per line; a value
    /// or key that is not UTF-8 is given as `{"base64": "…"}`.
    Json,
}

fn parse_start(text: &str) -> Result<StartAt, String> {
    match text {
        "earliest" => Ok(StartAt::Earliest),
        "latest" => Ok(StartAt::Latest),
        offset => offset.parse().map(StartAt::Offset).map_err(|_| {
            format!("{offset:?} is not earliest, latest or an offset (a number from 0)")
        }),
    }
}

pub(super) async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let idle = match args.timeout {
        Some(s) if s.is_finite() && s >= 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => anyhow::bail!("--timeout {s} is not a number of seconds from 0"),
        None => None,
    };
    let client = args.connect.connect("sidestream-cli").await?;
    let result = consume(&client, &args, idle).await;
    let closed = client.close().await;
    result?;
    Ok(closed?)
}

async fn consume(
    client: &sidestream::Client,
    args: &ConsumeArgs,
    idle: Option<Duration>,
) -> anyhow::Result<()> {
    let mut builder = client.subscribe_raw(&args.topic).from(args.from);
    if let Some(group) = &args.group {
        builder = builder.group(group);
    }
    if !args.partitions.is_empty() {
        builder = builder.partitions(args.partitions.clone());
    }
    let mut subscription = builder
        .start()
        .await
        .with_context(|| format!("cannot subscribe to {}", args.topic))?;
    let mut seen = 0u64;
    let stdout = std::io::stdout();
    let result = loop {
        if args.max.is_some_and(|max| seen >= max) {
            break Ok(());
        }
        let next = if let Some(idle) = idle {
            match tokio::time::timeout(idle, subscription.next()).await {
                Ok(next) => next,
                Err(_) => break Ok(()),
            }
        } else {
            tokio::select! {
                next = subscription.next() => next,
                _ = tokio::signal::ctrl_c() => break Ok(()),
            }
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(e)) => break Err(anyhow::Error::new(e)),
            None => break Ok(()),
        };
        let line = render(&delivery, &args.topic, args.format);
        let mut out = stdout.lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            // The reader went away (a closed pipe): stop quietly.
            break Ok(());
        }
        drop(out);
        seen += 1;
        delivery
            .ack()
            .await
            .context("cannot acknowledge an event")?;
    };
    let closed = subscription.close().await;
    result?;
    closed.context("cannot commit the group's offsets")?;
    Ok(())
}

fn render(delivery: &Delivery<RawEvent>, topic: &str, format: Format) -> String {
    let event = &delivery.event;
    match format {
        Format::Text => String::from_utf8_lossy(&event.value).into_owned(),
        Format::Json => {
            let bytes = |b: &[u8]| match std::str::from_utf8(b) {
                Ok(text) => serde_json::Value::String(text.to_owned()),
                Err(_) => serde_json::json!({
                    "base64": base64::engine::general_purpose::STANDARD.encode(b)
                }),
            };
            // The standard headers as text (ids in binary on the wire), `time` included.
            let mut headers: serde_json::Map<String, serde_json::Value> = delivery
                .headers()
                .iter()
                .zip(delivery.headers().iter_text())
                .map(|((name, value), (_, text))| {
                    let value = text.map_or_else(
                        || bytes(value),
                        |text| serde_json::Value::String(text.into_owned()),
                    );
                    (name.to_owned(), value)
                })
                .collect();
            if let Some(time) = delivery.headers().time() {
                headers
                    .entry(sidestream::headers::TIME)
                    .or_insert(serde_json::Value::String(time));
            }
            serde_json::json!({
                "topic": topic,
                "partition": delivery.partition,
                "offset": delivery.offset,
                "key": event.key.as_deref().map(bytes),
                "value": bytes(&event.value),
                "timestamp": delivery.timestamp,
                "headers": headers,
            })
            .to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse_or_are_named() {
        assert!(matches!(parse_start("earliest"), Ok(StartAt::Earliest)));
        assert!(matches!(parse_start("17"), Ok(StartAt::Offset(17))));
        let error = parse_start("-1").unwrap_err();
        assert!(error.contains("\"-1\""), "{error}");
    }
}
