//! One partition's batches on their way: the open batch being filled, sealed batches in
//! sequence order, and the idempotent producer's sequence numbers. A pure state machine; the
//! [`Accumulator`](super::accumulator::Accumulator) owns one per partition.
//!
//! ```text
//!  append ──▶ open batch ──seal──▶ Queued ──send──▶ Outstanding ──ack──▶ done (receipts)
//!              (full, idle,          ▲                 │
//!               linger, flush)       └── Backoff ◀─────┘ retriable error
//!                                                      └──────────▶ failed (receipts)
//! ```
//!
//! Order: batches get their base sequence when sealed, and the sidecar appends a producer's
//! batches only in sequence order. Normally up to `max_in_flight` batches are outstanding at
//! once (pipelining). After a retriable error the partition is *recovering*: it sends one
//! batch at a time, the earliest unacknowledged one, until one is acknowledged, then pipelines
//! again. A batch that fails for good leaves a hole in the sequence, so once nothing is
//! outstanding the partition takes a new producer id and renumbers its remaining batches from
//! sequence 0 (re-stamping their headers and CRC).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sidestream_log::batch::{BatchBuilder, CRC_START, HeaderPieces, ProducerState, header_len};

use super::accumulator::{BatchConfig, PartitionRef, Transmit};
use super::receipt::BatchCompletion;
use super::standard_headers::Header;
use crate::{Acks, Error, TransportError};
use sidestream_proto::v1::ErrorCode;

/// The fields of one record, borrowed.
#[derive(Clone, Copy)]
pub(crate) struct RecordParts<'a> {
    pub(crate) timestamp: i64,
    pub(crate) key: Option<&'a [u8]>,
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) headers: RecordHeaders<'a>,
}

/// A record's headers: as name and value pairs, or already in their wire form.
#[derive(Clone, Copy)]
pub(crate) enum RecordHeaders<'a> {
    /// Headers to encode.
    Pairs(&'a [Header<'a>]),
    /// `count` headers encoded, as pieces that follow one another.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the tests build records this way")
    )]
    Wire {
        count: usize,
        pieces: &'a [&'a [u8]],
    },
    /// The standard headers, encoded: the id the record's own, the others (`shareable`, named
    /// as `layout` says) shared with the batch's other records where their values are the
    /// same (docs/STORAGE.md, "Shared headers").
    Standard {
        id: &'a [u8],
        shareable: HeaderPieces<'a>,
        layout: Layout,
        /// The events after this one likely have the same (a batch call's, in one trace): if
        /// they differ from the batch's, they become the ones shared from here on.
        reshare: bool,
    },
}

/// Which headers a record offers to share, by name and in order: records of a batch share
/// headers only if they offer the same ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `type`, `source`, `traceparent`.
    Typed,
    /// `source`, `traceparent`.
    Untyped,
}

impl RecordHeaders<'_> {
    /// How many headers, and the bytes they take encoded (all of them, shared or not).
    fn count_and_len(&self) -> (usize, usize) {
        match self {
            Self::Pairs(pairs) => (
                pairs.len(),
                pairs
                    .iter()
                    .map(|(name, value)| header_len(name, value))
                    .sum(),
            ),
            Self::Wire { count, pieces } => (*count, pieces.iter().map(|piece| piece.len()).sum()),
            Self::Standard { id, shareable, .. } => (
                1 + shareable.per_header.len(),
                id.len()
                    + shareable
                        .pieces
                        .iter()
                        .map(|piece| piece.len())
                        .sum::<usize>(),
            ),
        }
    }

    /// The four standard headers as [`StandardHeaders::wire`] gives them: id, `type` (in two
    /// pieces), `source`, `traceparent`.
    ///
    /// [`StandardHeaders::wire`]: super::standard_headers::StandardHeaders::wire
    pub(crate) fn typed<'a>(wire: &'a [&'a [u8]; 5], reshare: bool) -> RecordHeaders<'a> {
        let [id, shareable @ ..] = wire;
        RecordHeaders::Standard {
            id,
            shareable: HeaderPieces {
                pieces: shareable,
                per_header: &[2, 1, 1],
            },
            layout: Layout::Typed,
            reshare,
        }
    }

    /// The standard headers but `type`, as [`StandardHeaders::untyped_wire`] gives them.
    ///
    /// [`StandardHeaders::untyped_wire`]: super::standard_headers::StandardHeaders::untyped_wire
    pub(crate) fn untyped<'a>(wire: &'a [&'a [u8]; 3], reshare: bool) -> RecordHeaders<'a> {
        let [id, shareable @ ..] = wire;
        RecordHeaders::Standard {
            id,
            shareable: HeaderPieces {
                pieces: shareable,
                per_header: &[1, 1],
            },
            layout: Layout::Untyped,
            reshare,
        }
    }

    fn layout(&self) -> Option<Layout> {
        match self {
            Self::Standard { layout, .. } => Some(*layout),
            Self::Pairs(_) | Self::Wire { .. } => None,
        }
    }
}

/// The time of an append, read from the clock only if the append needs it (to open or seal a
/// batch), and then once: most appends only add a record to the open batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LazyNow(Option<Instant>);

impl LazyNow {
    /// Reads the clock when first asked.
    pub(crate) fn clock() -> Self {
        Self(None)
    }

    /// A fixed time (tests).
    #[cfg(test)]
    pub(crate) fn at(now: Instant) -> Self {
        Self(Some(now))
    }

    pub(crate) fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

/// What sealing a batch needs from the accumulator: the rules, and the batch id counter.
pub(crate) struct Sealing<'a> {
    pub(crate) config: &'a BatchConfig,
    pub(crate) batch_id: &'a mut u64,
    /// The client's live connection, if it has one.
    pub(crate) connection: Option<usize>,
}

/// What the sender reports about one publish attempt.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Appended (or a duplicate of an earlier append); the base offset if the sidecar gave one,
    /// and the connection the answer came on.
    Acked(Option<u64>, usize),
    /// Failed in a way that a later attempt may fix.
    Retry(Error),
    /// Failed for good.
    Fail(Error),
}

/// Effects of a call on the queue that its owner acts on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Effects {
    /// Buffer bytes given back (finished batches).
    pub(crate) released: usize,
    /// An open batch was sealed (the sticky partition moves on).
    pub(crate) sealed: bool,
    /// The earliest time the queue wants to be polled again.
    pub(crate) timer: Option<Instant>,
}

impl Effects {
    fn wake_at(&mut self, at: Instant) {
        self.timer = Some(self.timer.map_or(at, |timer| timer.min(at)));
    }
}

pub(crate) struct PartitionQueue {
    topic: Arc<str>,
    number: u32,
    producer_id: i64,
    /// Bumped at each renumbering: the sidecar then fences late copies of the old numbering.
    producer_epoch: i16,
    next_sequence: i32,
    open: Option<OpenBatch>,
    batches: VecDeque<SealedBatch>,
    outstanding: usize,
    recovering: bool,
    /// The connection this queue's producer id last had a batch acknowledged on. Batches are
    /// pipelined only there: on any other connection (a new one, after a sidecar restart
    /// that forgot the producer) the first batch goes alone, so the sidecar meets the
    /// producer's batches in sequence order.
    acked_on: Option<usize>,
    rotate: bool,
    /// Whether the owner has this queue on its list to poll.
    pub(crate) dirty: bool,
    /// The size of the batch sealed last: the next one's buffer starts a little larger, so
    /// that a steady stream of events fills its batches without growing (and copying) them.
    last_sealed: usize,
}

struct OpenBatch {
    builder: BatchBuilder,
    /// The headers its records offer to share; only records offering the same go in.
    layout: Option<Layout>,
    completion: Arc<BatchCompletion>,
    acks: Acks,
    opened: Instant,
    reserved: usize,
}

struct SealedBatch {
    id: u64,
    bytes: Bytes,
    records: u32,
    completion: Arc<BatchCompletion>,
    acks: Acks,
    reserved: usize,
    deadline: Instant,
    state: BatchState,
    attempts: u32,
    /// An attempt ended without an answer, or with one that leaves its outcome open (the
    /// sidecar timed out after passing it on): it may be in the log.
    maybe_written: bool,
    /// Sent alone while recovering: its acknowledgement ends the recovery.
    probe: bool,
    last_error: Option<Error>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchState {
    Queued,
    Outstanding,
    Backoff(Instant),
}

impl PartitionQueue {
    pub(crate) fn new(topic: Arc<str>, number: u32, producer_id: i64) -> Self {
        Self {
            topic,
            number,
            producer_id,
            producer_epoch: 0,
            next_sequence: 0,
            open: None,
            batches: VecDeque::new(),
            outstanding: 0,
            recovering: false,
            acked_on: None,
            rotate: false,
            dirty: false,
            last_sealed: 0,
        }
    }

    /// Appends one record with `reserved` buffer bytes; returns what `receipt` made of the
    /// batch it went into and the record's index in it, and whether the queue needs polling
    /// now (a batch was opened or sealed).
    pub(crate) fn append<R>(
        &mut self,
        record: RecordParts<'_>,
        acks: Acks,
        reserved: usize,
        now: &mut LazyNow,
        ctx: &mut Sealing<'_>,
        receipt: impl FnOnce(&Arc<BatchCompletion>, u32) -> R,
    ) -> Result<(R, bool, Effects), Error> {
        let mut effects = Effects::default();
        let mut wake = false;
        let layout = record.headers.layout();
        if let Some(open) = &self.open {
            let full = open.builder.size().saturating_add(reserved) > ctx.config.batch_bytes;
            if open.acks != acks || open.layout != layout || full {
                self.seal(now.get(), ctx, &mut effects);
                wake = true;
            }
        }
        let open = if let Some(open) = &mut self.open {
            open
        } else {
            wake = true;
            let capacity = batch_capacity(self.last_sealed, ctx.config.batch_bytes);
            // The first record's headers are the ones the batch shares.
            let builder = match record.headers {
                RecordHeaders::Standard { shareable, .. } => {
                    BatchBuilder::with_shared_headers(capacity, shareable)
                }
                RecordHeaders::Pairs(_) | RecordHeaders::Wire { .. } => {
                    Ok(BatchBuilder::with_capacity(capacity))
                }
            }
            .map_err(|source| Error::Encode {
                topic: self.topic.to_string(),
                source,
            })?;
            self.open.insert(OpenBatch {
                builder,
                layout,
                completion: Arc::new(BatchCompletion::new(Arc::clone(&self.topic), self.number)),
                acks,
                opened: now.get(),
                reserved: 0,
            })
        };
        match record.headers {
            RecordHeaders::Pairs(pairs) => {
                open.builder
                    .push(record.timestamp, record.key, record.value, pairs)
            }
            RecordHeaders::Wire { count, pieces } => open.builder.push_wire(
                record.timestamp,
                record.key,
                record.value,
                count as u64,
                pieces,
            ),
            RecordHeaders::Standard {
                id,
                shareable,
                reshare,
                ..
            } => {
                let id = [id];
                let own = HeaderPieces {
                    pieces: &id,
                    per_header: &[1],
                };
                let push = if reshare {
                    BatchBuilder::push_resharing
                } else {
                    BatchBuilder::push_sharing
                };
                push(
                    &mut open.builder,
                    record.timestamp,
                    record.key,
                    record.value,
                    own,
                    shareable,
                )
            }
        }
        .map_err(|source| Error::Encode {
            topic: self.topic.to_string(),
            source,
        })?;
        open.reserved += reserved;
        let receipt = receipt(&open.completion, open.builder.record_count() - 1);
        if open.builder.size() >= ctx.config.batch_bytes {
            self.seal(now.get(), ctx, &mut effects);
            wake = true;
        }
        Ok((receipt, wake, effects))
    }

    /// Seals the open batch now (flush, close), and adds every unfinished batch's completion
    /// to `completions`.
    pub(crate) fn flush(
        &mut self,
        now: Instant,
        ctx: &mut Sealing<'_>,
        completions: &mut Vec<Arc<BatchCompletion>>,
    ) -> Effects {
        let mut effects = Effects::default();
        self.seal(now, ctx, &mut effects);
        completions.extend(self.batches.iter().map(|b| Arc::clone(&b.completion)));
        effects
    }

    /// Seals what is due and sends what may be sent, into `out`. `force` seals the open batch
    /// whatever the rules (closing).
    pub(crate) fn poll(
        &mut self,
        at: PartitionRef,
        now: Instant,
        force: bool,
        ctx: &mut Sealing<'_>,
        new_producer_id: &mut dyn FnMut() -> i64,
        out: &mut Vec<Transmit>,
    ) -> Effects {
        let config = ctx.config;
        let mut effects = Effects::default();
        if let Some(open) = &self.open {
            let due = if force {
                true
            } else if config.linger.is_zero() {
                self.outstanding == 0 && self.batches.is_empty()
            } else {
                now >= open.opened + config.linger
            };
            if due {
                self.seal(now, ctx, &mut effects);
            } else if !config.linger.is_zero() {
                effects.wake_at(open.opened + config.linger);
            }
        }
        if self.rotate {
            if self.outstanding > 0 {
                return effects;
            }
            self.rotate_producer(new_producer_id(), &mut effects);
        }
        if self.batches.is_empty() {
            self.recovering = false;
        }
        let established = ctx.connection.is_some() && ctx.connection == self.acked_on;
        let limit = if self.recovering || !established {
            1
        } else {
            config.max_in_flight.max(1)
        };
        let mut i = 0;
        // The oldest batch goes whatever the limit: the sidecar holds later batches of the
        // producer until it has it, so waiting for them to come back first would only wait
        // out their hold.
        while i < self.batches.len() && (self.outstanding < limit || i == 0) {
            let batch = &mut self.batches[i];
            match batch.state {
                BatchState::Outstanding => {
                    i += 1;
                    continue;
                }
                BatchState::Backoff(until) if until > now => {
                    effects.wake_at(until);
                    break;
                }
                BatchState::Queued | BatchState::Backoff(_) => {}
            }
            if now >= batch.deadline {
                let error = timeout(&self.topic, self.number, config, batch.last_error.take());
                self.fail_at(i, error, &mut effects);
                if self.rotate {
                    // The rest waits for the renumbering (sent now, it would follow a gap):
                    // the next poll, at once, renumbers them once nothing is outstanding.
                    effects.wake_at(now);
                    break;
                }
                continue;
            }
            batch.state = BatchState::Outstanding;
            batch.attempts += 1;
            batch.probe = self.recovering || !established;
            self.outstanding += 1;
            if batch.attempts > 1 {
                tracing::debug!(
                    topic = %self.topic,
                    partition = self.number,
                    attempt = batch.attempts,
                    recovering = self.recovering,
                    "resending record batch"
                );
            }
            out.push(Transmit {
                at,
                id: batch.id,
                topic: Arc::clone(&self.topic),
                partition: self.number,
                acks: batch.acks,
                bytes: batch.bytes.clone(),
                deadline: batch.deadline,
                only_on: if batch.probe { None } else { self.acked_on },
            });
            i += 1;
        }
        effects
    }

    /// Applies the outcome of sending batch `id`.
    pub(crate) fn handle_outcome(
        &mut self,
        id: u64,
        outcome: Outcome,
        now: Instant,
        config: &BatchConfig,
    ) -> Effects {
        let mut effects = Effects::default();
        let Some(i) = self.batches.iter().position(|b| b.id == id) else {
            return effects;
        };
        if self.batches[i].state != BatchState::Outstanding {
            return effects;
        }
        self.outstanding -= 1;
        self.batches[i].state = BatchState::Queued;
        match outcome {
            Outcome::Acked(base_offset, connection) => {
                if let Some(batch) = self.batches.remove(i) {
                    if batch.probe {
                        self.recovering = false;
                        self.acked_on = Some(connection);
                    }
                    effects.released += batch.reserved;
                    batch.completion.complete(Ok(base_offset));
                }
            }
            Outcome::Retry(error) => {
                let batch = &mut self.batches[i];
                batch.maybe_written |= may_have_written(&error);
                if now >= batch.deadline {
                    let error = timeout(&self.topic, self.number, config, Some(error));
                    self.fail_at(i, error, &mut effects);
                } else {
                    let until = now + backoff(config, batch.attempts);
                    tracing::debug!(
                        topic = %self.topic,
                        partition = self.number,
                        attempt = batch.attempts,
                        %error,
                        backoff = ?until.saturating_duration_since(now),
                        "publish failed, will retry"
                    );
                    batch.state = BatchState::Backoff(until);
                    batch.last_error = Some(error);
                    self.recovering = true;
                    effects.wake_at(until);
                }
            }
            Outcome::Fail(error) => self.fail_at(i, error, &mut effects),
        }
        effects
    }

    #[cfg(test)]
    pub(crate) fn assume_established(&mut self, connection: usize) {
        self.acked_on = Some(connection);
    }

    /// Whether nothing is buffered or on its way.
    pub(crate) fn is_idle(&self) -> bool {
        self.open.is_none() && self.batches.is_empty()
    }

    fn seal(&mut self, now: Instant, ctx: &mut Sealing<'_>, effects: &mut Effects) {
        let Some(mut open) = self.open.take() else {
            return;
        };
        let records = open.builder.record_count();
        self.last_sealed = open.builder.size();
        open.builder.set_producer(ProducerState {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.next_sequence,
        });
        effects.sealed = true;
        match open.builder.finish() {
            Ok(bytes) => {
                self.next_sequence = next_sequence(self.next_sequence, records);
                *ctx.batch_id += 1;
                self.batches.push_back(SealedBatch {
                    id: *ctx.batch_id,
                    bytes: Bytes::from(bytes),
                    records,
                    completion: open.completion,
                    acks: open.acks,
                    reserved: open.reserved,
                    deadline: now + ctx.config.request_timeout,
                    state: BatchState::Queued,
                    attempts: 0,
                    maybe_written: false,
                    probe: false,
                    last_error: None,
                });
            }
            Err(source) => {
                effects.released += open.reserved;
                open.completion.complete(Err(Error::Encode {
                    topic: self.topic.to_string(),
                    source,
                }));
            }
        }
    }

    /// Fails batch `i` for good: its receipts get `error`, and the sequence has a hole, so the
    /// producer id is rotated once nothing is outstanding.
    fn fail_at(&mut self, i: usize, error: Error, effects: &mut Effects) {
        if let Some(batch) = self.batches.remove(i) {
            if batch.state == BatchState::Outstanding {
                self.outstanding -= 1;
            }
            tracing::debug!(
                topic = %self.topic,
                partition = self.number,
                %error,
                "record batch failed"
            );
            effects.released += batch.reserved;
            batch.completion.complete(Err(error));
            self.rotate = true;
            self.recovering = true;
        }
    }

    /// Takes producer id `id` and renumbers the remaining batches from sequence 0.
    ///
    /// A batch sent before under the old id may have been written (its answer was lost):
    /// sent again under the new id it would be written twice. Such batches fail instead, with
    /// an error that says their outcome is unknown; only batches never sent are renumbered.
    fn rotate_producer(&mut self, id: i64, effects: &mut Effects) {
        let mut kept = VecDeque::with_capacity(self.batches.len());
        for mut batch in std::mem::take(&mut self.batches) {
            if !batch.maybe_written {
                kept.push_back(batch);
                continue;
            }
            effects.released += batch.reserved;
            let last = batch
                .last_error
                .take()
                .map_or_else(String::new, |e| format!(" (last error: {e})"));
            batch.completion.complete(Err(Error::OutcomeUnknown {
                operation: format!(
                    "publish to topic {:?} partition {}",
                    self.topic, self.number
                ),
                reason: format!(
                    "an earlier batch of the partition failed, and this one was sent before without a clear answer: it may or may not have been written{last}"
                ),
            }));
        }
        self.batches = kept;
        tracing::debug!(
            topic = %self.topic,
            partition = self.number,
            old = self.producer_id,
            new = id,
            batches = self.batches.len(),
            "new producer id after a failed batch"
        );
        // A new epoch of the same producer: copies of the old numbering still on their way
        // (passed on between sidecars) are fenced instead of landing after the new ones. A new
        // id once the epochs run out.
        if self.producer_epoch < i16::MAX {
            self.producer_epoch += 1;
        } else {
            self.producer_id = id;
            self.producer_epoch = 0;
        }
        self.next_sequence = 0;
        for batch in &mut self.batches {
            let producer = ProducerState {
                producer_id: self.producer_id,
                producer_epoch: self.producer_epoch,
                base_sequence: self.next_sequence,
            };
            batch.bytes = restamp(&batch.bytes, producer);
            batch.state = BatchState::Queued;
            self.next_sequence = next_sequence(self.next_sequence, batch.records);
        }
        self.rotate = false;
        self.recovering = true;
        self.acked_on = None;
    }
}

/// The most bytes one record adds to a batch: `BatchBuilder::record_size_bound` computed from
/// the value's length alone (the value is encoded only once there is room for it), and for a
/// record that may open a section of shared headers, that section's mark and count.
pub(crate) fn record_bound(
    key: Option<&[u8]>,
    value_len: Option<usize>,
    headers: &RecordHeaders<'_>,
) -> usize {
    let nullable = |len: Option<usize>| match len {
        None => 1,
        Some(len) => varint_len(2 * len as u64) + len,
    };
    let (header_count, headers_len) = headers.count_and_len();
    // attributes, timestamp delta (at most 10 bytes), offset delta (at most 5 bytes)
    let body = 1
        + 10
        + 5
        + nullable(key.map(<[u8]>::len))
        + nullable(value_len)
        + varint_len(header_count as u64)
        + headers_len;
    let section = match headers {
        RecordHeaders::Standard { reshare: true, .. } => SECTION_OVERHEAD,
        _ => 0,
    };
    varint_len(body as u64) + body + section
}

/// What a new section of shared headers adds beside the headers themselves: its mark and its
/// count (fewer than 128 headers).
const SECTION_OVERHEAD: usize = 2;

/// The sequence number after `count` records from `sequence`, wrapping from `i32::MAX` to 0
/// as Kafka's producers do.
pub(crate) fn next_sequence(sequence: i32, count: u32) -> i32 {
    let next = (i64::from(sequence) + i64::from(count)) % (i64::from(i32::MAX) + 1);
    i32::try_from(next).unwrap_or(0)
}

/// A copy of `batch` with other producer fields, and its CRC computed again (the producer
/// fields lie inside the CRC's range; docs/STORAGE.md has the offsets).
pub(crate) fn restamp(batch: &[u8], producer: ProducerState) -> Bytes {
    let mut bytes = batch.to_vec();
    if bytes.len() >= PRODUCER_END {
        bytes[PRODUCER_ID_AT..PRODUCER_ID_AT + 8]
            .copy_from_slice(&producer.producer_id.to_le_bytes());
        bytes[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2]
            .copy_from_slice(&producer.producer_epoch.to_le_bytes());
        bytes[BASE_SEQUENCE_AT..PRODUCER_END]
            .copy_from_slice(&producer.base_sequence.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[CRC_START..]);
        bytes[CRC_AT..CRC_START].copy_from_slice(&crc.to_le_bytes());
    }
    Bytes::from(bytes)
}

fn timeout(topic: &str, partition: u32, config: &BatchConfig, last: Option<Error>) -> Error {
    Error::Timeout {
        operation: format!("publish to topic {topic:?} partition {partition}"),
        after: config.request_timeout,
        last_error: last.map(|error| error.to_string()),
    }
}

/// Whether an attempt that failed with `error` may still have been written: it got no answer,
/// or one that leaves the outcome open (a timeout; a batch refused as older than the
/// producer's recent ones, which it may be a copy of). The refusals listed wrote nothing.
fn may_have_written(error: &Error) -> bool {
    match error {
        Error::Sidecar { code, .. } => !matches!(
            code,
            Some(
                ErrorCode::NotLeader
                    | ErrorCode::LeaderNotAvailable
                    | ErrorCode::OutOfOrderSequence
                    | ErrorCode::ProducerFenced
                    | ErrorCode::UnknownTopic
                    | ErrorCode::UnknownPartition
                    | ErrorCode::BatchTooLarge
                    | ErrorCode::CorruptBatch
                    | ErrorCode::NotAuthorized
            )
        ),
        // The request never left: nothing to write.
        Error::Connect(_) | Error::Transport(TransportError::Reconnected) => false,
        _ => true,
    }
}

fn backoff(config: &BatchConfig, attempts: u32) -> Duration {
    let factor = 1_u32 << attempts.saturating_sub(1).min(16);
    config
        .retry_backoff
        .saturating_mul(factor)
        .min(config.max_retry_backoff)
}

fn varint_len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// An open batch's buffer starts at least this large (or at the batch size, if smaller).
const INITIAL_BATCH_CAPACITY: usize = 16 * 1024;

/// The buffer a partition's next batch starts with, after one of `last_sealed` bytes: an
/// eighth more than that (a stream of events seldom gives two batches the same size), at
/// least [`INITIAL_BATCH_CAPACITY`] and at most the batch size `batch_bytes`. A batch that
/// outgrows it grows as a `Vec` does; one that stays smaller leaves the rest unused until it
/// is acknowledged.
pub(crate) fn batch_capacity(last_sealed: usize, batch_bytes: usize) -> usize {
    last_sealed
        .saturating_add(last_sealed / 8)
        .max(INITIAL_BATCH_CAPACITY)
        .min(batch_bytes)
}
const CRC_AT: usize = 29;
const PRODUCER_ID_AT: usize = 55;
const PRODUCER_EPOCH_AT: usize = 63;
const BASE_SEQUENCE_AT: usize = 65;
const PRODUCER_END: usize = 69;
