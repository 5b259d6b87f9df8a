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
use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures_util::FutureExt as _;
use futures_util::stream::Stream as _;
use hdrhistogram::Histogram;
use sidestream::{Acks, Client, Fsync, Headers, RawEvent, StartAt, TopicSettings};
use tokio::sync::mpsc;

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
    /// which shares one time, one buffer reservation and one lock among them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    publish_batch: u64,
    /// Start a sidecar in this process, with its data in a temporary directory.
    #[arg(long)]
    embedded: bool,
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
                builder
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

/// The values producers publish: `size` bytes of filler whose first 8, when the end-to-end
/// latency is measured, are the nanoseconds from `epoch` to the publish.
#[derive(Clone)]
struct Payloads {
    epoch: Instant,
    filler: Bytes,
    stamped: bool,
}

impl Payloads {
    fn new(size: usize, epoch: Instant, stamped: bool) -> Self {
        let filler = b"abcdefghijklmnopqrstuvwxyz"
            .iter()
            .copied()
            .cycle()
            .take(size)
            .collect::<Vec<u8>>();
        Self {
            epoch,
            filler: Bytes::from(filler),
            stamped,
        }
    }

    /// Whether each value needs the time of its publish.
    fn needs_time(&self) -> bool {
        self.stamped
    }

    /// The value of an event published at `sent` (given when [`needs_time`](Self::needs_time)):
    /// the shared filler, or a stamped copy of it.
    fn value(&self, sent: Option<Instant>) -> Bytes {
        match sent {
            Some(sent) if self.stamped => {
                let nanos =
                    u64::try_from(sent.duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
                let mut value = Vec::with_capacity(self.filler.len());
                value.extend_from_slice(&nanos.to_le_bytes());
                value.extend_from_slice(&self.filler[8..]);
                Bytes::from(value)
            }
            _ => self.filler.clone(),
        }
    }
}

/// Publishes `args.events` events over `args.producers` clients.
async fn produce(
    target: &Target,
    args: &BenchArgs,
    topic: &str,
    epoch: Instant,
    show_progress: bool,
) -> anyhow::Result<Outcome> {
    let usage = Usage::now();
    let size = usize::try_from(args.size).context("--size does not fit this machine")?;
    let payloads = Payloads::new(size, epoch, args.workload == Workload::E2e);
    let acknowledged = Arc::new(AtomicU64::new(0));
    let progress =
        show_progress.then(|| spawn_progress(Arc::clone(&acknowledged), args.size, "published"));
    let mut tasks = tokio::task::JoinSet::new();
    for producer in 0..args.producers {
        let client = target
            .client(args, &format!("sidestream-bench-{producer}"))
            .await?;
        let count =
            args.events / args.producers + u64::from(producer < args.events % args.producers);
        let topic = topic.to_owned();
        let payloads = payloads.clone();
        let acknowledged = Arc::clone(&acknowledged);
        let acks: Acks = args.acks.into();
        let in_flight = usize::try_from(args.in_flight.max(1)).unwrap_or(usize::MAX);
        let per_call = usize::try_from(args.publish_batch).unwrap_or(usize::MAX);
        tasks.spawn(async move {
            let latency = if per_call > 1 {
                publish_batches(
                    &client,
                    &topic,
                    count,
                    acks,
                    (in_flight, per_call),
                    &payloads,
                    acknowledged,
                )
                .await?
            } else if in_flight == 1 {
                publish_one_at_a_time(&client, &topic, count, acks, &payloads, &acknowledged)
                    .await?
            } else {
                publish_pipelined(
                    &client,
                    &topic,
                    count,
                    acks,
                    in_flight,
                    &payloads,
                    acknowledged,
                )
                .await?
            };
            client.close().await?;
            Ok::<_, anyhow::Error>(latency)
        });
    }
    let mut latency = histogram()?;
    while let Some(done) = tasks.join_next().await {
        latency
            .add(done.context("producer task")??)
            .context("merging histograms")?;
    }
    let seconds = epoch.elapsed().as_secs_f64();
    let (cpu_seconds, steal) = usage.since();
    if let Some(progress) = progress {
        progress.abort();
    }
    Ok(Outcome {
        events: args.events,
        bytes: args.events * args.size,
        seconds,
        cpu_seconds,
        steal,
        publish_ack: Some(latency),
        end_to_end: None,
    })
}

/// Publishes `count` events, waiting for each receipt before the next publish.
async fn publish_one_at_a_time(
    client: &Client,
    topic: &str,
    count: u64,
    acks: Acks,
    payloads: &Payloads,
    acknowledged: &AtomicU64,
) -> anyhow::Result<Histogram<u64>> {
    let mut latency = histogram()?;
    for _ in 0..count {
        let sent = Instant::now();
        let event = RawEvent {
            key: None,
            value: payloads.value(Some(sent)),
            headers: Headers::new(),
        };
        client.publish_raw_nowait(topic, event, acks).await?.await?;
        let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        latency.saturating_record(micros.max(1));
        acknowledged.fetch_add(1, Ordering::Relaxed);
    }
    Ok(latency)
}

/// Publishes `count` events with up to `in_flight` events buffered or in flight. One
/// receipt in [`LATENCY_SAMPLE`] is timed (by a second task, in publish order); the others
/// are left to the client, and a final flush reports any event that failed.
async fn publish_pipelined(
    client: &Client,
    topic: &str,
    count: u64,
    acks: Acks,
    in_flight: usize,
    payloads: &Payloads,
    acknowledged: Arc<AtomicU64>,
) -> anyhow::Result<Histogram<u64>> {
    let sample = usize::try_from(LATENCY_SAMPLE).unwrap_or(1);
    let samples_in_flight = (in_flight / sample).clamp(1, 1 << 16);
    let (pending_tx, mut pending) =
        mpsc::channel::<(Instant, sidestream::PendingReceipt)>(samples_in_flight);
    let mut latency = histogram()?;
    let waiter = tokio::spawn(async move {
        while let Some((sent, receipt)) = pending.recv().await {
            receipt.await?;
            let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
            latency.saturating_record(micros.max(1));
            acknowledged.fetch_add(LATENCY_SAMPLE, Ordering::Relaxed);
        }
        Ok::<_, sidestream::Error>(latency)
    });
    for i in 0..count {
        // The clock is read only for the events that need it: a sampled one, or one whose
        // value carries its publish time.
        let timed = i % LATENCY_SAMPLE == 0;
        let sent = (timed || payloads.needs_time()).then(Instant::now);
        let event = RawEvent {
            key: None,
            value: payloads.value(sent),
            headers: Headers::new(),
        };
        let receipt = client.publish_raw_nowait(topic, event, acks).await?;
        if let Some(sent) = sent.filter(|_| timed)
            && pending_tx.send((sent, receipt)).await.is_err()
        {
            break;
        }
    }
    drop(pending_tx);
    let latency = waiter.await.context("receipt task")??;
    client.flush().await.context("an event failed")?;
    Ok(latency)
}

/// Publishes `count` events `per_call` at a time (`publish_raw_batch_nowait`), with up to
/// `in_flight` events buffered or in flight. With room for one call only, each call waits for
/// its acknowledgements before the next, and every call is timed; otherwise one call in about
/// [`LATENCY_SAMPLE`] events is timed (by a second task, in publish order), the others left to
/// the client, and a final flush reports any event that failed.
async fn publish_batches(
    client: &Client,
    topic: &str,
    count: u64,
    acks: Acks,
    (in_flight, per_call): (usize, usize),
    payloads: &Payloads,
    acknowledged: Arc<AtomicU64>,
) -> anyhow::Result<Histogram<u64>> {
    let one_at_a_time = in_flight <= per_call;
    let sample = usize::try_from(LATENCY_SAMPLE)
        .unwrap_or(1)
        .div_ceil(per_call);
    let samples_in_flight = (in_flight / per_call / sample).clamp(1, 1 << 16);
    let (pending_tx, mut pending) =
        mpsc::channel::<(Instant, u64, sidestream::PendingReceipts)>(samples_in_flight);
    let waiter = tokio::spawn({
        let acknowledged = Arc::clone(&acknowledged);
        let mut latency = histogram()?;
        async move {
            while let Some((sent, events, receipts)) = pending.recv().await {
                receipts.acknowledged().await?;
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                latency.saturating_record(micros.max(1));
                acknowledged.fetch_add(events, Ordering::Relaxed);
            }
            Ok::<_, sidestream::Error>(latency)
        }
    });
    let mut latency = histogram()?;
    let mut events = Vec::with_capacity(per_call);
    let mut published = 0u64;
    let mut since_sample = 0u64;
    for call in 0.. {
        if published >= count {
            break;
        }
        let timed = one_at_a_time || call % sample == 0;
        let sent = (timed || payloads.needs_time()).then(Instant::now);
        let now = u64::try_from(per_call)
            .unwrap_or(u64::MAX)
            .min(count - published);
        events.clear();
        events.extend((0..now).map(|_| RawEvent {
            key: None,
            value: payloads.value(sent),
            headers: Headers::new(),
        }));
        let receipts = client
            .publish_raw_batch_nowait(topic, &events, acks)
            .await?;
        published += now;
        since_sample += now;
        match sent.filter(|_| timed) {
            Some(sent) if one_at_a_time => {
                receipts.acknowledged().await?;
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                latency.saturating_record(micros.max(1));
                acknowledged.fetch_add(now, Ordering::Relaxed);
            }
            Some(sent) => {
                if pending_tx
                    .send((sent, since_sample, receipts))
                    .await
                    .is_err()
                {
                    break;
                }
                since_sample = 0;
            }
            None => {}
        }
    }
    drop(pending_tx);
    latency
        .add(waiter.await.context("receipt task")??)
        .context("merging histograms")?;
    client.flush().await.context("an event failed")?;
    Ok(latency)
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

/// What the process and the machine had used when a measurement started: read again at its
/// end, they give the run's CPU time and the share of the machine the hypervisor took.
struct Usage {
    process: Option<Duration>,
    machine: Option<MachineTicks>,
}

impl Usage {
    fn now() -> Self {
        Self {
            process: process_cpu(),
            machine: MachineTicks::read(),
        }
    }

    /// Seconds of CPU this process used since, and the share of the machine's CPU time that
    /// was stolen meanwhile.
    fn since(&self) -> (Option<f64>, Option<f64>) {
        let cpu = process_cpu()
            .zip(self.process)
            .map(|(now, start)| now.saturating_sub(start).as_secs_f64());
        let steal = MachineTicks::read()
            .zip(self.machine)
            .and_then(|(now, start)| now.steal_share_since(start));
        (cpu, steal)
    }
}

/// CPU time (user and system) this process has used so far; `None` where
/// `/proc/self/stat` cannot be read (not Linux).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (in parentheses): the state is field 3, utime field 14 and
    // stime field 15, in USER_HZ ticks, which Linux fixes at 100 per second.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 10))
}

/// The machine's CPU time so far, from the `cpu` line of `/proc/stat` (Linux), in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MachineTicks {
    /// Every kind: user, nice, system, idle, iowait, irq, softirq and steal.
    total: u64,
    /// Time this virtual machine was ready to run but the hypervisor ran something else.
    steal: u64,
}

impl MachineTicks {
    fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The ticks of `/proc/stat`'s text: `None` without a `cpu` line of at least 8 numbers.
    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|line| line.starts_with("cpu "))?;
        let ticks = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|field| field.parse::<u64>().ok())
            .collect::<Option<Vec<u64>>>()?;
        let steal = *ticks.get(7)?;
        Some(Self {
            total: ticks.iter().sum(),
            steal,
        })
    }

    /// The share (0 to 1) of the machine's CPU time since `start` that was stolen; `None`
    /// if no tick passed.
    #[expect(
        clippy::cast_precision_loss,
        reason = "a share, reported to a few digits"
    )]
    fn steal_share_since(self, start: Self) -> Option<f64> {
        let total = self.total.checked_sub(start.total).filter(|&t| t > 0)?;
        let steal = self.steal.saturating_sub(start.steal).min(total);
        Some(steal as f64 / total as f64)
    }
}

/// A run during which the hypervisor took more than this share of the machine's CPU time is
/// flagged in the summary: its figures say more about the neighbours than about Sidestream.
const STEAL_WARNING: f64 = 0.05;

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
         partitions {}, producers {}, acks {:?}, fsync {}, batch {} B, linger {} ms\n",
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

#[cfg(test)]
mod tests {
    use super::MachineTicks;

    #[test]
    fn steal_is_read_from_the_cpu_line_of_proc_stat() {
        // As Linux writes it: the machine's line, then one line per processor, then others.
        let before = "cpu  1000 10 200 5000 30 0 5 100 0 0\n\
                      cpu0 500 5 100 2500 15 0 2 50 0 0\n\
                      intr 12345\n";
        let after = "cpu  1300 10 260 5100 30 0 5 400 0 0\n\
                     cpu0 650 5 130 2550 15 0 2 200 0 0\n";
        let start = MachineTicks::parse(before).expect("a cpu line");
        assert_eq!(
            start,
            MachineTicks {
                total: 1000 + 10 + 200 + 5000 + 30 + 5 + 100,
                steal: 100
            }
        );
        let end = MachineTicks::parse(after).expect("a cpu line");
        // 300 of the 760 ticks that passed were stolen.
        let share = end.steal_share_since(start).expect("ticks passed");
        assert!((share - 300.0 / 760.0).abs() < 1e-9, "{share}");
        assert_eq!(start.steal_share_since(start), None);
    }

    #[test]
    fn a_stat_without_a_whole_cpu_line_gives_no_ticks() {
        assert_eq!(MachineTicks::parse(""), None);
        assert_eq!(MachineTicks::parse("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(MachineTicks::parse("cpu  1 2 3 4 5 6 7\n"), None);
        assert_eq!(MachineTicks::parse("cpu  1 2 3 x 5 6 7 8\n"), None);
    }
}
