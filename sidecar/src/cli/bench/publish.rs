//! The publishing half of `sidestream bench`: the payloads, and the producers, each
//! publishing one event per call or many (`--publish-batch`), one at a time or pipelined.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use sidestream::{Acks, Client, Headers, RawEvent};
use tokio::sync::mpsc;

use super::usage::Usage;
use super::{BenchArgs, LATENCY_SAMPLE, Outcome, Target, Workload, histogram, spawn_progress};

/// The values producers publish: `size` bytes of filler whose first 8, when the end-to-end
/// latency is measured, are the nanoseconds from `epoch` to the publish.
#[derive(Clone)]
pub(super) struct Payloads {
    epoch: Instant,
    filler: Bytes,
    stamped: bool,
}

impl Payloads {
    pub(super) fn new(size: usize, epoch: Instant, stamped: bool) -> Self {
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
    pub(super) fn needs_time(&self) -> bool {
        self.stamped
    }

    /// The value of an event published at `sent` (given when [`needs_time`](Self::needs_time)):
    /// the shared filler, or a stamped copy of it.
    pub(super) fn value(&self, sent: Option<Instant>) -> Bytes {
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
pub(super) async fn produce(
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
        // The same events again, unless their values carry their publish time.
        if payloads.needs_time() || events.len() as u64 != now {
            events.clear();
            events.extend((0..now).map(|_| RawEvent {
                key: None,
                value: payloads.value(sent),
                headers: Headers::new(),
            }));
        }
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
    // The events after the last timed call.
    acknowledged.fetch_add(since_sample, Ordering::Relaxed);
    Ok(latency)
}
