//! Publishing many events in one call: one reservation of buffer space, one clock reading and
//! one hold of the accumulator's lock per chunk of events (a batch's bytes, or one larger
//! event), where publishing them one by one takes each of those once per event; and one
//! receipt per run of events that went into the same batch, where one by one takes a handle
//! on the batch per event.
//!
//! The events are checked first (each one's size), so that an event too large fails the call
//! before any event is buffered. They then go into the buffer in order, as a loop of
//! [`Producer::publish`] calls would put them, and each event gets its own receipt.

use std::ops::Range;

use sidestream_log::batch::HEADER_LEN;

use super::{Producer, SCRATCH, SCRATCH_KEEP, described_without_partitions, merged_headers};
use crate::partitioner::murmur2;
use crate::publish::accumulator::{AppendError, Route};
use crate::publish::partition_queue::{LazyNow, RecordHeaders, RecordParts, record_bound};
use crate::publish::receipt::PendingReceipts;
use crate::publish::standard_headers::{StandardHeaders, TypePrefix, now_ms, random_trace};
use crate::{Acks, Error, Event, RawEvent, TraceParent};

impl Producer {
    /// Buffers typed events, in trace `trace` (else all in one fresh one).
    pub(crate) async fn publish_batch<E: Event>(
        &self,
        events: &[E],
        acks: Acks,
        trace: Option<TraceParent>,
    ) -> Result<PendingReceipts, Error> {
        let typed = Typed {
            events,
            type_prefix: TypePrefix::new(E::TYPE_NAME),
            source_header: &self.source_header,
            template: StandardHeaders::at(0),
        };
        self.append_batch(E::TOPIC, &typed, acks, trace).await
    }

    /// Buffers events given as bytes, in trace `trace` (else all in one fresh one) unless one
    /// has a `traceparent` of its own.
    pub(crate) async fn publish_raw_batch(
        &self,
        topic: &str,
        events: &[RawEvent],
        acks: Acks,
        trace: Option<TraceParent>,
    ) -> Result<PendingReceipts, Error> {
        let raw = Raw {
            events,
            source: &self.source,
            source_header: &self.source_header,
            template: StandardHeaders::at(0),
        };
        self.append_batch(topic, &raw, acks, trace).await
    }

    async fn append_batch<S: Events>(
        &self,
        topic: &str,
        events: &S,
        acks: Acks,
        trace: Option<TraceParent>,
    ) -> Result<PendingReceipts, Error> {
        // One call, one trace: outside any span, a fresh one for all its events (which then
        // share it in their batches, not carry it each).
        let trace = Some(trace.unwrap_or_else(random_trace));
        let bounds: Vec<usize> = (0..events.len()).map(|i| events.bound(i)).collect();
        if let Some(size) = bounds
            .iter()
            .map(|bound| bound.saturating_add(HEADER_LEN))
            .find(|&size| size > self.max_event)
        {
            return Err(Error::EventTooLarge {
                topic: topic.to_owned(),
                size,
                max: self.max_event,
            });
        }
        let mut receipts = PendingReceipts::new();
        let mut ends = Vec::new();
        let mut next = 0;
        while next < bounds.len() {
            let end = chunk_end(&bounds, next, self.chunk_bytes);
            // Given back (what is left of it) if this future is dropped or fails; each
            // appended event hands its share to its batch.
            let mut reservation = self.reserve(bounds[next..end].iter().sum()).await?;
            // Read once the buffer had room: a chunk's events share their time.
            let timestamp = now_ms();
            // A topic is described at most once for each event that met it unknown.
            let mut described = None;
            while next < end {
                let result = SCRATCH.with_borrow_mut(|scratch| {
                    scratch.clear();
                    ends.clear();
                    events.encode(next..end, scratch, &mut ends);
                    let mut chunk = Chunk {
                        next,
                        end,
                        bounds: &bounds,
                        values: scratch,
                        ends: &ends,
                    };
                    let result = self.append_chunk(
                        topic,
                        events,
                        &mut chunk,
                        Stamp {
                            timestamp,
                            trace,
                            acks,
                        },
                        &mut reservation.bytes,
                        &mut receipts,
                    );
                    next = chunk.next;
                    if scratch.capacity() > 2 * SCRATCH_KEEP {
                        *scratch = Vec::new();
                    }
                    result
                });
                let error = match result {
                    Ok(()) => continue,
                    Err(AppendError::UnknownTopic) if described != Some(next) => {
                        described = Some(next);
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
        Ok(receipts)
    }

    /// Appends the chunk's events from `chunk.next` on under one hold of the lock, moving
    /// `chunk.next` past each appended event and handing its bytes from `reserved` to its
    /// batch. The sender is woken once, at the end, if any batch was opened or sealed.
    fn append_chunk<S: Events>(
        &self,
        topic: &str,
        events: &S,
        chunk: &mut Chunk<'_>,
        stamp: Stamp,
        reserved: &mut usize,
        receipts: &mut PendingReceipts,
    ) -> Result<(), AppendError> {
        let mut released = 0;
        let mut wake = false;
        let result = {
            let mut accumulator = self.lock();
            let mut now = LazyNow::clock();
            let mut value_start = 0;
            let mut result = Ok(());
            // Looked up once for the chunk, when its first event goes in.
            let mut at = None;
            for (k, i) in (chunk.next..chunk.end).enumerate() {
                let encoded = chunk.ends.get(k).map(|&value_end| {
                    let value = &chunk.values[value_start..value_end];
                    value_start = value_end;
                    value
                });
                let standard = StandardHeaders::at_in(stamp.timestamp, stamp.trace);
                let route = events.route(i);
                let bound = chunk.bounds[i];
                let topic_at = match at {
                    Some(topic_at) => topic_at,
                    None => match accumulator.topic_at(topic) {
                        Ok(topic_at) => *at.insert(topic_at),
                        Err(error) => {
                            result = Err(error);
                            break;
                        }
                    },
                };
                let appended = events.with_record(i, &standard, encoded, |record| {
                    accumulator.append_at(
                        topic_at,
                        route,
                        record,
                        (stamp.acks, bound),
                        &mut now,
                        |completion, index| receipts.push(completion, index),
                    )
                });
                match appended {
                    Ok(appended) => {
                        *reserved -= bound;
                        chunk.next = i + 1;
                        released += appended.released;
                        wake |= appended.wake;
                    }
                    Err(error) => {
                        result = Err(error);
                        break;
                    }
                }
            }
            result
        };
        self.release(released);
        if wake {
            self.wake.notify_one();
        }
        result
    }
}

/// Where `append_batch` is in a chunk of events.
struct Chunk<'a> {
    /// The next event to append.
    next: usize,
    /// The end of the chunk.
    end: usize,
    /// Every event's buffer bytes.
    bounds: &'a [usize],
    /// The encoded values of events `next..end`, one after another (typed events).
    values: &'a [u8],
    /// Where each encoded value ends in `values`.
    ends: &'a [usize],
}

/// What every event of one call gets: its time, its trace (if the call has one), and the
/// acknowledgement it waits for.
#[derive(Clone, Copy)]
struct Stamp {
    timestamp: i64,
    trace: Option<TraceParent>,
    acks: Acks,
}

/// The end of the chunk of events that starts at `start`: as many events as fit in `limit`
/// bytes, and at least one.
fn chunk_end(bounds: &[usize], start: usize, limit: usize) -> usize {
    let mut bytes = 0usize;
    let mut end = start;
    while let Some(&bound) = bounds.get(end) {
        if end > start && bytes.saturating_add(bound) > limit {
            break;
        }
        bytes = bytes.saturating_add(bound);
        end += 1;
    }
    end
}

/// The events of one batch publish, as [`Producer::append_batch`] takes them.
trait Events {
    /// How many events.
    fn len(&self) -> usize;

    /// Where event `i` goes: by its key's hash, else to the sticky partition.
    fn route(&self, i: usize) -> Route;

    /// The buffer bytes event `i`'s record takes at most.
    fn bound(&self, i: usize) -> usize;

    /// Encodes the values of events `range` one after another into `values`, pushing where
    /// each ends onto `ends`; nothing for events whose values are bytes already.
    fn encode(&self, range: Range<usize>, values: &mut Vec<u8>, ends: &mut Vec<usize>);

    /// Calls `append` with event `i`'s record: `standard` its standard headers, `encoded` its
    /// value from [`encode`](Self::encode), if it gave one.
    fn with_record<R>(
        &self,
        i: usize,
        standard: &StandardHeaders,
        encoded: Option<&[u8]>,
        append: impl FnOnce(RecordParts<'_>) -> R,
    ) -> R;
}

/// Typed events: each encoded (protobuf) on its way into the buffer, with all four standard
/// headers.
struct Typed<'a, E> {
    events: &'a [E],
    type_prefix: TypePrefix,
    source_header: &'a [u8],
    /// Standard headers whose sizes every event's share.
    template: StandardHeaders,
}

impl<E: Event> Events for Typed<'_, E> {
    fn len(&self) -> usize {
        self.events.len()
    }

    fn route(&self, i: usize) -> Route {
        self.events[i]
            .key()
            .map_or(Route::Sticky, |key| Route::Hash(murmur2(key.as_bytes())))
    }

    fn bound(&self, i: usize) -> usize {
        let event = &self.events[i];
        let key = event.key();
        record_bound(
            key.as_ref().map(crate::EventKey::as_bytes),
            Some(event.encoded_len()),
            &RecordHeaders::typed(
                &self
                    .template
                    .wire(&self.type_prefix, E::TYPE_NAME, self.source_header),
                true,
            ),
        )
    }

    fn encode(&self, range: Range<usize>, values: &mut Vec<u8>, ends: &mut Vec<usize>) {
        for event in &self.events[range] {
            event.encode_raw(values);
            ends.push(values.len());
        }
    }

    fn with_record<R>(
        &self,
        i: usize,
        standard: &StandardHeaders,
        encoded: Option<&[u8]>,
        append: impl FnOnce(RecordParts<'_>) -> R,
    ) -> R {
        let key = self.events[i].key();
        append(RecordParts {
            timestamp: standard.timestamp_ms,
            key: key.as_ref().map(crate::EventKey::as_bytes),
            value: Some(encoded.unwrap_or_default()),
            headers: RecordHeaders::typed(
                &standard.wire(&self.type_prefix, E::TYPE_NAME, self.source_header),
                true,
            ),
        })
    }
}

/// Events given as bytes: the standard headers without `type`, unless an event has its own.
struct Raw<'a> {
    events: &'a [RawEvent],
    source: &'a str,
    source_header: &'a [u8],
    /// Standard headers whose sizes every event's share.
    template: StandardHeaders,
}

impl Events for Raw<'_> {
    fn len(&self) -> usize {
        self.events.len()
    }

    fn route(&self, i: usize) -> Route {
        self.events[i]
            .key
            .as_deref()
            .map_or(Route::Sticky, |key| Route::Hash(murmur2(key)))
    }

    fn bound(&self, i: usize) -> usize {
        let event = &self.events[i];
        let key = event.key.as_deref();
        let value = Some(event.value.len());
        if event.headers.is_empty() {
            record_bound(
                key,
                value,
                &RecordHeaders::untyped(&self.template.untyped_wire(self.source_header), true),
            )
        } else {
            let pairs = merged_headers(&self.template, self.source, &event.headers);
            record_bound(key, value, &RecordHeaders::Pairs(&pairs))
        }
    }

    fn encode(&self, _: Range<usize>, _: &mut Vec<u8>, _: &mut Vec<usize>) {}

    fn with_record<R>(
        &self,
        i: usize,
        standard: &StandardHeaders,
        _: Option<&[u8]>,
        append: impl FnOnce(RecordParts<'_>) -> R,
    ) -> R {
        let event = &self.events[i];
        let key = event.key.as_deref();
        let value = Some(&event.value[..]);
        // A delivered event published again (forwarded, replayed) keeps its time.
        let timestamp = event
            .headers
            .timestamp_ms()
            .unwrap_or(standard.timestamp_ms);
        if event.headers.is_empty() {
            append(RecordParts {
                timestamp,
                key,
                value,
                headers: RecordHeaders::untyped(&standard.untyped_wire(self.source_header), true),
            })
        } else {
            let pairs = merged_headers(standard, self.source, &event.headers);
            append(RecordParts {
                timestamp,
                key,
                value,
                headers: RecordHeaders::Pairs(&pairs),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::chunk_end;

    #[test]
    fn a_chunk_takes_what_fits_and_at_least_one_event() {
        let bounds = [40, 30, 30, 100, 10];
        assert_eq!(chunk_end(&bounds, 0, 100), 3);
        assert_eq!(
            chunk_end(&bounds, 3, 100),
            4,
            "one event of the whole limit"
        );
        assert_eq!(
            chunk_end(&bounds, 3, 50),
            4,
            "one event larger than the limit"
        );
        assert_eq!(chunk_end(&bounds, 4, 100), 5);
        assert_eq!(chunk_end(&bounds, 5, 100), 5, "nothing left");
    }
}
