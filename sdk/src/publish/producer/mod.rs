//! The publishing half of a client: the shared [`Accumulator`], the buffer-space semaphore,
//! and the entry points `publish`, `flush` and `close` that callers run on their own tasks.
//!
//! Concurrency: callers and the sender task share the accumulator behind one
//! `std::sync::Mutex`, held only for in-memory work (never across an `.await`). Buffer space
//! is a semaphore of bytes: a caller takes its event's bytes before appending, waiting while
//! the buffer is full, and the sender gives a batch's bytes back when the batch is finished.
//! A caller that opened or sealed a batch wakes the sender through a `Notify`.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sidestream_log::batch::HEADER_LEN;
use sidestream_proto::TopicName;
use tokio::sync::{Notify, Semaphore, TryAcquireError};

use super::accumulator::{AppendError, Route};
use super::partition_queue::{LazyNow, RecordHeaders, RecordParts, record_bound};
use super::standard_headers::{Header, StandardHeaders, TypePrefix, encode_header};
use super::{Acks, PendingReceipt, RawEvent};
use crate::TraceParent;
use crate::client::{Link, describe_topic};
use crate::partitioner::murmur2;
use crate::{Error, Event, headers, random};

pub(crate) use super::accumulator::{Accumulator, BatchConfig};

mod many;

pub(crate) struct Producer {
    accumulator: Mutex<Accumulator>,
    pub(crate) wake: Notify,
    space: Semaphore,
    /// The largest event (in batch bytes, header included) that may be published.
    max_event: usize,
    /// The bytes of events a batch publish appends under one hold of the lock: a batch's.
    chunk_bytes: usize,
    pub(crate) link: Arc<Link>,
    source: String,
    /// The `source` header in its wire form, encoded once for every event.
    source_header: Vec<u8>,
    acks: Acks,
    request_timeout: Duration,
    describing: tokio::sync::Mutex<()>,
}

impl Producer {
    /// A producer over `link`, with a buffer of `buffer_bytes` and batches of at most
    /// `max_batch` bytes.
    pub(crate) fn new(
        link: Arc<Link>,
        config: BatchConfig,
        acks: Acks,
        buffer_bytes: usize,
        max_batch: usize,
    ) -> Self {
        let request_timeout = config.request_timeout;
        let buffer_bytes = buffer_bytes.clamp(1, Semaphore::MAX_PERMITS);
        // A chunk is reserved whole: never more than the buffer holds.
        let chunk_bytes = config.batch_bytes.min(buffer_bytes).max(1);
        Self {
            accumulator: Mutex::new(Accumulator::new(
                config,
                random::producer_id(),
                random::producer_id,
            )),
            wake: Notify::new(),
            space: Semaphore::new(buffer_bytes),
            max_event: max_batch.min(buffer_bytes),
            chunk_bytes,
            source: link.client_id().to_owned(),
            source_header: encode_header(headers::SOURCE, link.client_id().as_bytes()),
            link,
            acks,
            request_timeout,
            describing: tokio::sync::Mutex::new(()),
        }
    }

    /// The client's default acknowledgement.
    pub(crate) fn default_acks(&self) -> Acks {
        self.acks
    }

    /// The service name its events carry as their `source`.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Buffers a typed event, in trace `trace` (else a fresh one).
    pub(crate) async fn publish<E: Event>(
        &self,
        event: &E,
        acks: Acks,
        trace: Option<TraceParent>,
    ) -> Result<PendingReceipt, Error> {
        let standard = StandardHeaders::now(trace);
        let type_prefix = TypePrefix::new(E::TYPE_NAME);
        let wire = standard.wire(&type_prefix, E::TYPE_NAME, &self.source_header);
        let key = event.key();
        let key = key.as_ref().map(crate::EventKey::as_bytes);
        self.append(
            E::TOPIC,
            key,
            Value::Encoded {
                len: event.encoded_len(),
                encode: |buf: &mut Vec<u8>| event.encode_raw(buf),
            },
            standard.timestamp_ms,
            RecordHeaders::typed(&wire, false),
            acks,
        )
        .await
    }

    /// Buffers an event given as bytes, in trace `trace` (else a fresh one) unless it has a
    /// `traceparent` of its own.
    pub(crate) async fn publish_raw(
        &self,
        topic: &str,
        event: &RawEvent,
        acks: Acks,
        trace: Option<TraceParent>,
    ) -> Result<PendingReceipt, Error> {
        let standard = StandardHeaders::now(trace);
        // A delivered event published again (forwarded, replayed) keeps its time.
        let timestamp = event
            .headers
            .timestamp_ms()
            .unwrap_or(standard.timestamp_ms);
        let value = &event.value[..];
        if event.headers.is_empty() {
            // The common case: only the standard headers, already in their order.
            return self
                .append(
                    topic,
                    event.key.as_deref(),
                    Value::<NoEncoder>::Bytes(value),
                    timestamp,
                    RecordHeaders::untyped(&standard.untyped_wire(&self.source_header), false),
                    acks,
                )
                .await;
        }
        let pairs = merged_headers(&standard, &self.source, &event.headers);
        self.append(
            topic,
            event.key.as_deref(),
            Value::<NoEncoder>::Bytes(value),
            timestamp,
            RecordHeaders::Pairs(&pairs),
            acks,
        )
        .await
    }

    /// Seals every open batch and waits until every batch buffered now is finished.
    pub(crate) async fn flush(&self) -> Result<(), Error> {
        let completions = self.lock().flush(Instant::now());
        self.wake.notify_one();
        let mut first_error = None;
        for completion in completions {
            if let Err(error) = completion.wait().await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops taking events; the sender sends what is buffered, then ends.
    pub(crate) fn close(&self) {
        self.lock().close();
        self.space.close();
        self.wake.notify_one();
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Accumulator> {
        self.accumulator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives `bytes` of buffer space back.
    pub(crate) fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.space.add_permits(bytes);
        }
    }

    async fn append<F>(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Value<'_, F>,
        timestamp: i64,
        headers: RecordHeaders<'_>,
        acks: Acks,
    ) -> Result<PendingReceipt, Error>
    where
        F: Fn(&mut Vec<u8>) + Send + Sync,
    {
        let value_len = match &value {
            Value::Bytes(bytes) => bytes.len(),
            Value::Encoded { len, .. } => *len,
        };
        let reserved = record_bound(key, Some(value_len), &headers);
        let size = reserved.saturating_add(HEADER_LEN);
        if size > self.max_event {
            return Err(Error::EventTooLarge {
                topic: topic.to_owned(),
                size,
                max: self.max_event,
            });
        }
        // Given back if this future is dropped (a caller's timeout) or fails before the event
        // is in a batch; the batch gives it back once it is finished.
        let reservation = self.reserve(reserved).await?;
        let route = key.map_or(Route::Sticky, |key| Route::Hash(murmur2(key)));
        let mut described = false;
        loop {
            let append = |value: &[u8]| {
                let record = RecordParts {
                    timestamp,
                    key,
                    value: Some(value),
                    headers,
                };
                self.lock()
                    .append(topic, route, record, acks, reserved, &mut LazyNow::clock())
            };
            let result = match &value {
                // Bytes go into the batch as they are.
                Value::Bytes(bytes) => append(bytes),
                // Encoded before the lock is taken, so that publishers on other threads do
                // not wait for each other's encoding.
                Value::Encoded { encode, .. } => SCRATCH.with_borrow_mut(|buf| {
                    buf.clear();
                    encode(buf);
                    let result = append(buf);
                    if buf.capacity() > SCRATCH_KEEP {
                        *buf = Vec::new();
                    }
                    result
                }),
            };
            let error = match result {
                Ok(appended) => {
                    reservation.keep();
                    self.release(appended.released);
                    if appended.wake {
                        self.wake.notify_one();
                    }
                    return Ok(appended.receipt);
                }
                Err(AppendError::UnknownTopic) if !described => {
                    described = true;
                    match self.describe(topic).await {
                        Ok(()) => continue,
                        Err(error) => error,
                    }
                }
                Err(AppendError::UnknownTopic) => described_without_partitions(topic),
                Err(AppendError::Failed(error)) => error,
            };
            return Err(error);
        }
    }

    /// Takes `bytes` of buffer space, waiting while the buffer is full.
    async fn reserve(&self, bytes: usize) -> Result<Reservation<'_>, Error> {
        let permits = u32::try_from(bytes).map_err(|_| Error::EventTooLarge {
            topic: String::new(),
            size: bytes,
            max: self.max_event,
        })?;
        match self.space.try_acquire_many(permits) {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::Closed) => return Err(Error::Closed),
            Err(TryAcquireError::NoPermits) => self
                .space
                .acquire_many(permits)
                .await
                .map_err(|_| Error::Closed)?
                .forget(),
        }
        Ok(Reservation {
            producer: self,
            bytes,
        })
    }

    /// Learns the partition count of `topic` (once, however many callers ask at once).
    ///
    /// A topic's name is checked here, before it is first described: the buffer knows only
    /// topics that passed.
    async fn describe(&self, topic: &str) -> Result<(), Error> {
        if let Err(error) = TopicName::check(topic) {
            return Err(Error::InvalidTopicName {
                topic: topic.to_owned(),
                reason: error.to_string(),
            });
        }
        let _single_flight = self.describing.lock().await;
        if self.lock().partition_count(topic).is_some() {
            return Ok(());
        }
        let deadline = Instant::now() + self.request_timeout;
        let description = describe_topic(&self.link, topic, deadline).await?;
        let partitions = u32::try_from(description.partitions.len()).unwrap_or(u32::MAX);
        if partitions == 0 {
            return Err(described_without_partitions(topic));
        }
        tracing::debug!(topic, partitions, "described topic for publishing");
        #[allow(
            clippy::cast_possible_truncation,
            reason = "any 32 random bits will do"
        )]
        let sticky_start = random::random_u64() as u32;
        self.lock().set_topic(topic, partitions, sticky_start);
        Ok(())
    }
}

/// The error of a topic that is still unknown after it was described.
fn described_without_partitions(topic: &str) -> Error {
    Error::Protocol {
        message: format!("topic {topic:?} was described without partitions"),
    }
}

/// A raw event's headers with the standard ones: the standard headers first, in their order,
/// the event's own value where it has one; then the event's other headers in their order.
fn merged_headers<'a>(
    standard: &'a StandardHeaders,
    source: &'a str,
    own: &'a crate::Headers,
) -> Vec<Header<'a>> {
    let ours = standard.untyped_pairs(source);
    let own: Vec<Header<'_>> = own.iter().collect();
    let mut taken = [None::<usize>; headers::ALL.len()];
    let mut pairs: Vec<Header<'_>> = Vec::with_capacity(ours.len() + own.len());
    for (slot, &name) in headers::ALL.iter().enumerate() {
        if let Some(i) = own.iter().position(|(header, _)| *header == name) {
            taken[slot] = Some(i);
            pairs.push(own[i]);
        } else if let Some(&pair) = ours.iter().find(|(header, _)| *header == name) {
            pairs.push(pair);
        }
    }
    pairs.extend(
        (0..)
            .zip(&own)
            .filter(|(i, _)| !taken.contains(&Some(*i)))
            .map(|(_, &pair)| pair),
    );
    pairs
}

/// An event's value: bytes as they are, or a message encoded on the way into its batch.
enum Value<'a, F> {
    Bytes(&'a [u8]),
    Encoded { len: usize, encode: F },
}

/// The encoder type of a [`Value::Bytes`], which has none.
type NoEncoder = fn(&mut Vec<u8>);

/// Encoded values larger than this are not kept in the scratch buffer between events.
const SCRATCH_KEEP: usize = 1 << 20;

thread_local! {
    /// Where each thread encodes an event's value before it is copied into its batch.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Buffer space taken for one event, or for a chunk of a batch publish: given back on drop,
/// all of it or (a chunk's) what its appended events did not hand to their batches, unless
/// [`keep`](Self::keep) hands it all to the batch the event went into.
struct Reservation<'a> {
    producer: &'a Producer,
    bytes: usize,
}

impl Reservation<'_> {
    fn keep(mut self) {
        self.bytes = 0;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.producer.release(self.bytes);
    }
}
