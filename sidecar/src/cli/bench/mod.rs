//! `sidestream bench produce|consume|e2e`: throughput and latency through the SDK, against a
//! running sidecar or one started in this process (`--embedded`).
//!
//! Every run creates a topic of its own (`bench-<uuid>`) with the partitions and fsync policy
//! asked for, and deletes it at the end. Payloads are `--size` bytes; in the `e2e` workload the
//! first 8 carry the publish time for the end-to-end latency. While it runs, a progress line goes to stderr
//! once a second; at the end a summary goes to stdout, and with `--json` one JSON object on
//! the last line. The summary gives the CPU time used per event and, on Linux, the share of
//! the machine's CPU time its hypervisor took meanwhile (steal): on a shared virtual machine
//! that share, not the code, often decides the figures.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use futures_util::FutureExt as _;
use futures_util::stream::Stream as _;
use hdrhistogram::Histogram;
use sidestream::transport::QuicTuning;
use sidestream::{Client, Fsync, StartAt, TopicSettings};

mod publish;
mod usage;

use self::publish::produce;
use self::usage::{STEAL_WARNING, Usage};
use super::connect::ConnectArgs;
use super::produce::AcksArg;
use crate::{RunningSidecar, SidecarConfig};

/// `sidestream bench …`.
#[derive(Debug, Args)]
pub(super) struct BenchArgs {
    /// What to measure: publishing, catching up, or both at once with end-to-end latency.
    #[arg(value_enum)]
    workload: Workload,
    /// Events to publish (in total, over all producers).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Payload bytes per event (at least 8).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(8..=(4 << 20)))]
    size: u64,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    partitions: u32,
    /// Producing clients, each with its own connection.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=256))]
    producers: u64,
    /// Largest record batch the SDK builds, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    batch_bytes: usize,
    /// How long a batch may wait for more events, in milliseconds (0: only while the
    /// partition has a batch in flight).
    #[arg(long, default_value_t = 0)]
    linger_ms: u64,
    /// When the sidecar acknowledges.
    #[arg(long, value_enum, default_value_t = AcksArg::Leader)]
    acks: AcksArg,
    /// fsync policy of the benchmark topic: always, `interval:<ms>` or never.
    #[arg(long, default_value = "interval:1000")]
    fsync: Fsync,
    /// Events in flight per producer: 1 publishes one at a time (and times every publish);
    /// more keeps that many timed receipts pending, the SDK's buffer bounding the rest.
    #[arg(long, default_value_t = 1 << 20)]
    in_flight: u64,
    /// Events per publish call: 1 publishes each event with its own call
    /// (`publish_raw_nowait`); more hands that many to one `publish_raw_batch_nowait` call,
    /// and the publish latency is then a call's, until its last event is acknowledged.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    publish_batch: u64,
    /// Start a sidecar in this process, with its data in a temporary directory.
    #[arg(long)]
    embedded: bool,
    /// How long the benchmark's clients, and its sidecar with --embedded, spin on their
    /// sockets for an answer after sending, in microseconds; 0 never spins (the sidecar's key
    /// `busy_poll_us`).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=1000))]
    busy_poll_us: u64,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Publish as fast as acknowledgements allow.
    Produce,
    /// Publish (untimed), then read everything back from the start.
    Consume,
    /// Publish and subscribe at once; measures publish-to-delivery latency.
    E2e,
}

impl BenchArgs {
    fn busy_poll(&self) -> Duration {
        Duration::from_micros(self.busy_poll_us)
    }
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::Produce => "produce",
            Self::Consume => "consume",
            Self::E2e => "e2e",
        }
    }
}

/// One publish in this many has its acknowledgement latency recorded (pipelined runs).
const LATENCY_SAMPLE: u64 = 16;

/// Where the benchmark's sidecar is.
struct Target {
    embedded: Option<(RunningSidecar, tempfile::TempDir)>,
    connect: ConnectArgs,
}

impl Target {
    async fn new(args: &BenchArgs) -> anyhow::Result<Self> {
        let mut connect = args.connect.clone();
        let embedded = if args.embedded {
            let dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
            let mut config = SidecarConfig::new(dir.path());
            config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
            config.quic.busy_poll = args.busy_poll();
            let sidecar = RunningSidecar::start(config).await?;
            connect.sidecar = sidecar.local_addr();
            connect.data_dir = Some(dir.path().to_path_buf());
            connect.tls_ca = None;
            Some((sidecar, dir))
        } else {
            None
        };
        Ok(Self { embedded, connect })
    }

    async fn client(&self, args: &BenchArgs, name: &str) -> anyhow::Result<Client> {
        self.connect
            .connect_with(name, |builder| {
                let mut tuning = QuicTuning::default();
                tuning.busy_poll = args.busy_poll();
                builder
                    .quic_tuning(tuning)
                    .acks(args.acks.into())
                    .batch_bytes(args.batch_bytes)
                    .linger(Duration::from_millis(args.linger_ms))
            })
            .await
    }

    async fn stop(self) -> anyhow::Result<()> {
        if let Some((sidecar, _dir)) = self.embedded {
            sidecar.shutdown().await?;
        }
        Ok(())
    }
}

/// What one run measured.
struct Outcome {
    events: u64,
    bytes: u64,
    seconds: f64,
    /// CPU time the process used meanwhile (client, and the sidecar when embedded).
    cpu_seconds: Option<f64>,
    /// The share of the machine's CPU time the hypervisor took meanwhile (steal), where the
    /// machine tells it.
    steal: Option<f64>,
    publish_ack: Option<Histogram<u64>>,
    end_to_end: Option<Histogram<u64>>,
}

pub(super) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let target = Target::new(&args).await?;
    let admin = target.client(&args, "sidestream-bench").await?;
    let topic = format!("bench-{}", uuid::Uuid::now_v7().simple());
    admin
        .create_topic(
            &topic,
            TopicSettings::new()
                .partitions(args.partitions)
                .fsync(args.fsync),
        )
        .await
        .with_context(|| format!("cannot create the benchmark topic {topic}"))?;
    let result = match args.workload {
        Workload::Produce => produce(&target, &args, &topic, Instant::now(), true).await,
        Workload::Consume => {
            produce(&target, &args, &topic, Instant::now(), false).await?;
            consume(&admin, &args, &topic).await
        }
        Workload::E2e => e2e(&target, &args, &topic).await,
    };
    if let Err(error) = admin.delete_topic(&topic).await {
        tracing::warn!(%topic, %error, "cannot delete the benchmark topic");
    }
    let closed = admin.close().await;
    target.stop().await?;
    closed?;
    report(&args, &result?);
    Ok(())
}

/// A latency histogram in microseconds: 1 µs to 100 s, 3 significant digits.
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 100_000_000, 3).context("cannot create a latency histogram")
}

/// Reads the topic from the start until every event arrived.
async fn consume(client: &Client, args: &BenchArgs, topic: &str) -> anyhow::Result<Outcome> {
    let received = Arc::new(AtomicU64::new(0));
    let progress = spawn_progress(Arc::clone(&received), args.size, "consumed");
    let started = Instant::now();
    let usage = Usage::now();
    let mut subscription = client
        .subscribe_raw(topic)
        .from(StartAt::Earliest)
        .start()
        .await
        .context("cannot subscribe")?;
    let mut seen = 0;
    while seen < args.events {
        // Polled here as a stream rather than through `next_within`: each layer of future a
        // delivery passes through copies it once more, and this loop is what is timed.
        let ready = Pin::new(&mut subscription).poll_next(&mut Context::from_waker(Waker::noop()));
        let next = match ready {
            Poll::Ready(next) => next,
            Poll::Pending => tokio::time::timeout(IDLE_LIMIT, subscription.next())
                .await
                .map_err(|_| {
                    anyhow::anyhow!("no event for 30 s after {seen} of {} events", args.events)
                })?,
        };
        match next {
            Some(Ok(_)) => {
                seen += 1;
                received.store(seen, Ordering::Relaxed);
            }
            Some(Err(error)) => return Err(error.into()),
            None => anyhow::bail!(
                "the subscription ended after {seen} of {} events",
                args.events
            ),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (cpu_seconds, steal) = usage.since();
    progress.abort();
    subscription.close().await?;
    Ok(Outcome {
        events: seen,
        bytes: seen * args.size,
        seconds,
        cpu_seconds,
        steal,
        publish_ack: None,
        end_to_end: None,
    })
}

/// Publishes and subscribes at once; the payload's first 8 bytes give the latency.
async fn e2e(target: &Target, args: &BenchArgs, topic: &str) -> anyhow::Result<Outcome> {
    let client = target.client(args, "sidestream-bench-consumer").await?;
    let mut subscription = client
        .subscribe_raw(topic)
        .from(StartAt::Latest)
        .start()
        .await
        .context("cannot subscribe")?;
    let epoch = Instant::now();
    let usage = Usage::now();
    let events = args.events;
    let consumer = tokio::spawn(async move {
        let mut latency = histogram()?;
        let mut seen = 0;
        while seen < events {
            match next_within(&mut subscription, IDLE_LIMIT).await {
                Ok(Some(delivery)) => {
                    let delivery = delivery?;
                    let sent = delivery
                        .event
                        .value
                        .get(..8)
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map_or(0, u64::from_le_bytes);
                    let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    latency.saturating_record((now.saturating_sub(sent) / 1000).max(1));
                    seen += 1;
                }
                Ok(None) => anyhow::bail!("the subscription ended after {seen} of {events} events"),
                Err(_) => anyhow::bail!("no event for 30 s after {seen} of {events} events"),
            }
        }
        subscription.close().await?;
        Ok(latency)
    });
    // Payload times count from the consumer's epoch.
    let mut outcome = produce(target, args, topic, epoch, true).await?;
    let end_to_end = consumer.await.context("consumer task")??;
    outcome.seconds = epoch.elapsed().as_secs_f64();
    (outcome.cpu_seconds, outcome.steal) = usage.since();
    outcome.end_to_end = Some(end_to_end);
    client.close().await?;
    Ok(outcome)
}

/// Longest a subscription may go without a delivery before the run fails.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

/// The subscription's next delivery, or `Err` after `limit` without one. A delivery that is
/// ready now is taken without arming a timer (a clock read and a timer per event would be the
/// benchmark measuring itself).
async fn next_within<T: sidestream::Payload>(
    subscription: &mut sidestream::Subscription<T>,
    limit: Duration,
) -> Result<Option<Result<sidestream::Delivery<T>, sidestream::Error>>, tokio::time::error::Elapsed>
{
    if let Some(next) = subscription.next().now_or_never() {
        return Ok(next);
    }
    tokio::time::timeout(limit, subscription.next()).await
}

/// Prints a progress line to stderr once a second until aborted.
fn spawn_progress(
    count: Arc<AtomicU64>,
    size: u64,
    verb: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.tick().await;
        loop {
            every.tick().await;
            let events = count.load(Ordering::Relaxed);
            let seconds = started.elapsed().as_secs_f64();
            #[expect(clippy::print_stderr, reason = "the progress line goes to stderr")]
            {
                eprintln!(
                    "  {verb} {events} events in {seconds:.0} s: {:.0} events/s, {:.1} MB/s",
                    rate(events, seconds),
                    rate(events * size, seconds) / 1e6
                );
            }
        }
    })
}

#[expect(
    clippy::cast_precision_loss,
    reason = "rates are reported to a few digits"
)]
fn rate(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

fn percentiles(histogram: Option<&Histogram<u64>>) -> serde_json::Value {
    match histogram {
        Some(h) if !h.is_empty() => serde_json::json!({
            "p50": h.value_at_quantile(0.50),
            "p99": h.value_at_quantile(0.99),
            "p999": h.value_at_quantile(0.999),
            "max": h.max(),
        }),
        _ => serde_json::Value::Null,
    }
}

fn report(args: &BenchArgs, outcome: &Outcome) {
    let events_per_sec = rate(outcome.events, outcome.seconds);
    let mb_per_sec = rate(outcome.bytes, outcome.seconds) / 1e6;
    let mut text = format!(
        "{}: {} events of {} B in {:.2} s: {:.0} events/s, {:.1} MB/s (payload)\n\
         partitions {}, producers {}, acks {:?}, fsync {}, batch {} B, linger {} ms, \
         {} events per publish call\n",
        args.workload.name(),
        outcome.events,
        args.size,
        outcome.seconds,
        events_per_sec,
        mb_per_sec,
        args.partitions,
        args.producers,
        args.acks,
        args.fsync,
        args.batch_bytes,
        args.linger_ms,
        args.publish_batch,
    );
    // Per event, so that runs of different speeds compare on a machine shared with others.
    // None below the clock's resolution (10 ms of CPU), rather than a division by zero.
    let cpu_us_per_event = outcome
        .cpu_seconds
        .map(|cpu| rate(outcome.events, cpu))
        .filter(|&events_per_cpu_second| events_per_cpu_second > 0.0)
        .map(|events_per_cpu_second| 1e6 / events_per_cpu_second);
    if let (Some(cpu), Some(per_event)) = (outcome.cpu_seconds, cpu_us_per_event) {
        let whose = if args.embedded {
            "client and sidecar"
        } else {
            "client"
        };
        let _ = writeln!(
            text,
            "cpu: {cpu:.2} s ({whose}), {per_event:.2} µs per event, {:.2} cores",
            cpu / outcome.seconds.max(f64::MIN_POSITIVE)
        );
    }
    if let Some(steal) = outcome.steal {
        let _ = write!(
            text,
            "steal: the hypervisor took {:.1} % of this machine's CPU time meanwhile",
            steal * 100.0
        );
        text.push_str(if steal > STEAL_WARNING {
            "; the figures are not representative of the machine\n"
        } else {
            "\n"
        });
    }
    for (name, histogram) in [
        ("publish-ack", outcome.publish_ack.as_ref()),
        ("end-to-end", outcome.end_to_end.as_ref()),
    ] {
        if let Some(h) = histogram.filter(|h| !h.is_empty()) {
            let _ = writeln!(
                text,
                "{name} latency: p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
                h.value_at_quantile(0.50),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max()
            );
        }
    }
    if args.json {
        let json = serde_json::json!({
            "workload": args.workload.name(),
            "events": outcome.events,
            "bytes": outcome.bytes,
            "seconds": outcome.seconds,
            "events_per_sec": events_per_sec,
            "mb_per_sec": mb_per_sec,
            "cpu_seconds": outcome.cpu_seconds,
            "cpu_us_per_event": cpu_us_per_event,
            "steal_share": outcome.steal,
            "size": args.size,
            "partitions": args.partitions,
            "producers": args.producers,
            "acks": format!("{:?}", args.acks).to_lowercase(),
            "fsync": args.fsync.to_string(),
            "publish_batch": args.publish_batch,
            "publish_ack_us": percentiles(outcome.publish_ack.as_ref()),
            "end_to_end_us": percentiles(outcome.end_to_end.as_ref()),
        });
        text.push_str(&json.to_string());
        text.push('\n');
    }
    super::out(&text);
}
