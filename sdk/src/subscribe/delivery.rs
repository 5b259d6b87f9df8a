//! What a subscription hands out: a [`Delivery`] of a typed event (or of a [`RawEvent`]),
//! its [`Headers`], and its ack.

use std::fmt;
use std::future::{Ready, ready};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use super::positions::Positions;
use crate::{Error, Event, Headers, RawEvent};

/// One event received by a subscription, with where it was in its partition.
///
/// Call [`ack`](Self::ack) once it is handled: in a group, acknowledged offsets are committed
/// in the background, so the group resumes after them, and unacknowledged deliveries are
/// delivered again after a restart or rebalance (at-least-once). A subscription without a
/// group commits nothing: where it starts again is its own choice.
#[non_exhaustive]
pub struct Delivery<T: Payload> {
    /// The event.
    pub event: T,
    /// The partition it was read from.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// When it was published, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Its partitioning key, if it has one.
    pub key: Option<Bytes>,
    /// The headers, unless the event keeps them itself (a [`RawEvent`] does).
    headers: <T as sealed::FromRecord>::Kept,
    /// Also where the topic's name is kept: one shared handle per batch, not two.
    acker: Acker,
}

impl<T: Payload> Delivery<T> {
    /// The topic it was read from.
    pub fn topic(&self) -> &str {
        self.acker.topic()
    }

    /// Its headers (`id`, `type`, `source`, `traceparent`, and any others; its `time` is
    /// [`Headers::time`]).
    ///
    /// A [`RawEvent`] holds its headers itself: for its delivery these are `event.headers`,
    /// kept once, so they are whatever that field holds now (and so is the parent of
    /// [`handling_span`](Self::handling_span)).
    pub fn headers(&self) -> &Headers {
        T::headers(&self.event, &self.headers)
    }

    /// A span for handling this event: `handle <topic>`, the child of the span that published
    /// it (its `traceparent`), so that one trace runs from the publishing service through the
    /// sidecar into this handler, and on through what it publishes. Handle the event inside
    /// it (`.instrument(delivery.handling_span())`); a disabled span unless the process
    /// exports spans ([`telemetry`](crate::telemetry)).
    pub fn handling_span(&self) -> tracing::Span {
        crate::telemetry::handle_span(
            self.topic(),
            self.partition,
            self.offset,
            self.headers().traceparent(),
        )
    }

    /// Marks the delivery as handled. Its offset (and those before it, once they are
    /// acknowledged too) is committed at the group's next commit; without a group there is
    /// nothing to commit and this does nothing. Acknowledging twice, or after the partition was
    /// reassigned, does nothing.
    ///
    /// # Errors
    ///
    /// None in this version; the `Result` leaves room for acknowledgements that wait for
    /// their commit.
    pub fn ack(&self) -> Ready<Result<(), Error>> {
        self.acker.ack(self.partition, self.offset);
        ready(Ok(()))
    }

    /// A handle that acknowledges this delivery later, for when the event moves on (to
    /// another task, into a batch) before it is handled.
    pub fn ack_handle(&self) -> AckHandle {
        AckHandle {
            acker: self.acker.clone(),
            partition: self.partition,
            offset: self.offset,
        }
    }

    /// The event, dropping the rest.
    pub fn into_event(self) -> T {
        self.event
    }

    pub(crate) fn new(
        (event, headers): (T, <T as sealed::FromRecord>::Kept),
        at: RecordAt,
        key: Option<Bytes>,
        acker: Acker,
    ) -> Self {
        Self {
            event,
            partition: at.partition,
            offset: at.offset,
            timestamp: at.timestamp,
            key,
            headers,
            acker,
        }
    }
}

impl<T: Payload + fmt::Debug> fmt::Debug for Delivery<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("topic", &self.topic())
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("timestamp", &self.timestamp)
            .field("key", &self.key)
            .field("headers", self.headers())
            .field("event", &self.event)
            .finish_non_exhaustive()
    }
}

/// Acknowledges one delivery, from anywhere: see [`Delivery::ack_handle`].
#[derive(Clone)]
pub struct AckHandle {
    acker: Acker,
    partition: u32,
    offset: u64,
}

impl AckHandle {
    /// Marks the delivery as handled, as [`Delivery::ack`] does.
    pub fn ack(&self) {
        self.acker.ack(self.partition, self.offset);
    }

    /// The delivery's partition.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The delivery's offset.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl fmt::Debug for AckHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckHandle")
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

/// What a subscription can deliver: any [`Event`] type, or [`RawEvent`] for bytes.
///
/// Sealed: implemented by the SDK only.
pub trait Payload: sealed::FromRecord + Send + 'static {}

impl<E: Event> Payload for E {}
impl Payload for RawEvent {}

/// Where a record was.
#[derive(Clone, Copy)]
pub(crate) struct RecordAt {
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    pub(crate) timestamp: i64,
}

pub(crate) mod sealed {
    use bytes::Bytes;

    use crate::{Error, Event, Headers, RawEvent, headers};

    /// Builds a delivered payload from a record's parts.
    pub trait FromRecord: Sized {
        /// What a delivery keeps of the record's headers besides the payload: all of them,
        /// or nothing for a payload that holds them itself (so that a delivery is not a
        /// second copy to move and count references to).
        type Kept: Send + Sync + 'static;

        /// The payload of the record at `offset` of `partition` in `topic`, and what the
        /// delivery keeps of its headers.
        fn from_record(
            topic: &str,
            partition: u32,
            offset: u64,
            key: Option<&Bytes>,
            value: Option<Bytes>,
            headers: Headers,
        ) -> Result<(Self, Self::Kept), Error>;

        /// The record's headers, from the payload or from what its delivery kept.
        fn headers<'a>(&'a self, kept: &'a Self::Kept) -> &'a Headers;
    }

    impl<E: Event> FromRecord for E {
        type Kept = Headers;

        /// Checks the `type` header first, then decodes: an event of another type is
        /// reported, never decoded as this one.
        fn from_record(
            topic: &str,
            partition: u32,
            offset: u64,
            _key: Option<&Bytes>,
            value: Option<Bytes>,
            headers: Headers,
        ) -> Result<(Self, Headers), Error> {
            let found = headers.get(headers::TYPE);
            if found != Some(E::TYPE_NAME.as_bytes()) {
                return Err(Error::TypeMismatch {
                    topic: topic.to_owned(),
                    partition,
                    offset,
                    expected: E::TYPE_NAME,
                    found: found.map(|found| String::from_utf8_lossy(found).into_owned()),
                });
            }
            let value = value.ok_or_else(|| Error::MissingValue {
                topic: topic.to_owned(),
                partition,
                offset,
            })?;
            let event = E::decode(value).map_err(|source| Error::Decode {
                topic: topic.to_owned(),
                partition,
                offset,
                type_name: E::TYPE_NAME,
                source,
            })?;
            Ok((event, headers))
        }

        fn headers<'a>(&'a self, kept: &'a Headers) -> &'a Headers {
            kept
        }
    }

    impl FromRecord for RawEvent {
        type Kept = ();

        fn from_record(
            _topic: &str,
            _partition: u32,
            _offset: u64,
            key: Option<&Bytes>,
            value: Option<Bytes>,
            headers: Headers,
        ) -> Result<(Self, ()), Error> {
            let event = Self {
                key: key.cloned(),
                value: value.unwrap_or_default(),
                headers,
            };
            Ok((event, ()))
        }

        fn headers<'a>(&'a self, (): &'a ()) -> &'a Headers {
            &self.headers
        }
    }
}

/// Acknowledges deliveries of one partition, in one assignment of it; shared by the
/// deliveries of a batch.
#[derive(Clone)]
pub(crate) struct Acker(Arc<AckTarget>);

struct AckTarget {
    topic: Arc<str>,
    positions: Arc<Mutex<Positions>>,
    epoch: u64,
}

impl Acker {
    pub(crate) fn new(topic: Arc<str>, positions: Arc<Mutex<Positions>>, epoch: u64) -> Self {
        Self(Arc::new(AckTarget {
            topic,
            positions,
            epoch,
        }))
    }

    fn topic(&self) -> &str {
        &self.0.topic
    }

    fn ack(&self, partition: u32, offset: u64) {
        self.0
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ack(partition, self.0.epoch, offset);
    }
}
