//! The [`Client`]: one QUIC connection to the node's sidecar, shared by publishing,
//! subscriptions and administration.
//!
//! ```text
//!   Client (Clone: Arc inside) ──▶ Link: the QUIC connection, reconnected lazily
//!     ├── publish* / flush ──────▶ Producer: accumulator + sender task
//!     ├── subscribe* ────────────▶ Subscription: a stream of its own + reader/committer tasks
//!     └── create_topic, … ───────▶ one request, one response
//! ```

mod admin;
mod builder;
mod frame_reader;
mod link;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::Instrument as _;

pub use admin::{Cleanup, Fsync, ParseSettingError, TopicSettings};
pub(crate) use admin::{describe_topic, valid_name};
pub use builder::{ClientBuilder, DEFAULT_SIDECAR, MAX_BATCH_BYTES, SIDECAR_ENV};
pub(crate) use frame_reader::FrameReader;
pub(crate) use link::{CallError, Link, RetryPolicy};

use crate::publish::Producer;
use crate::subscribe::SubscribeBuilder;
use crate::{Acks, Error, Event, PendingReceipt, PendingReceipts, RawEvent, Receipt, telemetry};

/// A service's connection to the sidecar on its node: publish events, subscribe to topics,
/// administer topics.
///
/// Cheap to clone (all clones share one connection and one publish buffer), `Send` and
/// `Sync`: hand clones to as many tasks as you like. Must be used inside a tokio runtime.
///
/// Method families:
///
/// 1. connect: [`connect_local`](Self::connect_local), or [`builder`](Self::builder) for the
///    settings;
/// 2. publish: [`publish`](Self::publish), [`publish_nowait`](Self::publish_nowait),
///    [`publish_raw`](Self::publish_raw), [`publish_raw_nowait`](Self::publish_raw_nowait);
///    many events at once: [`publish_batch`](Self::publish_batch),
///    [`publish_batch_nowait`](Self::publish_batch_nowait),
///    [`publish_raw_batch`](Self::publish_raw_batch),
///    [`publish_raw_batch_nowait`](Self::publish_raw_batch_nowait); [`flush`](Self::flush);
/// 3. subscribe: [`subscribe`](Self::subscribe), [`subscribe_raw`](Self::subscribe_raw);
/// 4. administer: [`create_topic`](Self::create_topic), [`delete_topic`](Self::delete_topic),
///    [`list_topics`](Self::list_topics), [`describe_topic`](Self::describe_topic),
///    [`committed_offsets`](Self::committed_offsets), [`metadata`](Self::metadata);
/// 5. end: [`close`](Self::close). Dropping the last clone also sends what is buffered, in
///    the background, but nobody learns whether it arrived.
///
/// ```no_run
/// # async fn example() -> Result<(), sidestream::Error> {
/// use std::time::Duration;
/// use sidestream::{Acks, Client};
///
/// let client = Client::builder("order-service")
///     .sidecar("127.0.0.1:7400")
///     .acks(Acks::All)
///     .linger(Duration::from_millis(2))
///     .connect()
///     .await?;
/// client.close().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    link: Arc<Link>,
    producer: Arc<Producer>,
    sender: Mutex<Option<JoinHandle<()>>>,
    request_timeout: Duration,
    commit_interval: Duration,
}

impl Client {
    /// Connects to the sidecar on this node as `service`: the address from
    /// `$SIDESTREAM_SIDECAR` (default `127.0.0.1:7400`), the dev certificates from
    /// [`default_tls_dir`](crate::transport::default_tls_dir), every other setting at its
    /// default (see [`ClientBuilder`]).
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::connect`].
    pub async fn connect_local(service: impl Into<String>) -> Result<Self, Error> {
        Self::builder(service).connect().await
    }

    /// A builder for a client named `service` (its name in every request and the `source`
    /// header of its events).
    pub fn builder(service: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(service)
    }

    /// Publishes `event` to its topic and waits for the acknowledgement the client was built
    /// with.
    ///
    /// # Errors
    ///
    /// [`Error::EventTooLarge`] at once for an event larger than a batch may be; the
    /// sidecar's refusal ([`Error::UnknownTopic`], [`Error::Sidecar`], …) naming the topic and
    /// partition; [`Error::Timeout`] if retries did not succeed within the request timeout;
    /// [`Error::Closed`] after [`close`](Self::close).
    pub async fn publish<E: Event>(&self, event: &E) -> Result<Receipt, Error> {
        let producer = &self.inner.producer;
        let span = telemetry::publish_span(E::TOPIC, E::TYPE_NAME, producer.source());
        let trace = telemetry::trace_parent(&span);
        async move {
            producer
                .publish(event, producer.default_acks(), trace)
                .await?
                .await
        }
        .instrument(span)
        .await
    }

    /// Buffers `event` for publishing and returns as soon as it is in the buffer (waiting only
    /// while the buffer is full); the returned future resolves to its [`Receipt`].
    ///
    /// Use it to keep many events in flight from one task.
    ///
    /// # Errors
    ///
    /// Those of [`publish`](Self::publish) that are known before sending: an event too large,
    /// a topic that cannot be described, a closed client. The rest come from the future.
    pub async fn publish_nowait<E: Event>(&self, event: &E) -> Result<PendingReceipt, Error> {
        let producer = &self.inner.producer;
        let span = telemetry::publish_span(E::TOPIC, E::TYPE_NAME, producer.source());
        let trace = telemetry::trace_parent(&span);
        producer
            .publish(event, producer.default_acks(), trace)
            .instrument(span)
            .await
    }

    /// Publishes an event given as bytes to `topic`, waiting for `acks`.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish), and [`Error::InvalidTopicName`].
    pub async fn publish_raw(
        &self,
        topic: &str,
        event: RawEvent,
        acks: Acks,
    ) -> Result<Receipt, Error> {
        let producer = &self.inner.producer;
        let span = telemetry::publish_span(topic, "", producer.source());
        let trace = telemetry::trace_parent(&span);
        async move {
            producer
                .publish_raw(topic, &event, acks, trace)
                .await?
                .await
        }
        .instrument(span)
        .await
    }

    /// Buffers an event given as bytes, as [`publish_nowait`](Self::publish_nowait) does.
    ///
    /// # Errors
    ///
    /// As [`publish_nowait`](Self::publish_nowait), and [`Error::InvalidTopicName`].
    pub async fn publish_raw_nowait(
        &self,
        topic: &str,
        event: RawEvent,
        acks: Acks,
    ) -> Result<PendingReceipt, Error> {
        let producer = &self.inner.producer;
        let span = telemetry::publish_span(topic, "", producer.source());
        let trace = telemetry::trace_parent(&span);
        producer
            .publish_raw(topic, &event, acks, trace)
            .instrument(span)
            .await
    }

    /// Publishes `events` to their topic, in order, and waits for the acknowledgement the
    /// client was built with; returns their receipts in the same order.
    ///
    /// One call costs less than one [`publish`](Self::publish) per event: buffer space, the
    /// clock and the buffer's lock are taken once per batch's worth of events (whose events
    /// share their `time`). Each event still gets its own id and is routed by its own key; the
    /// call's events share its trace. They are not atomic: each record batch they go into
    /// succeeds or fails on its own ([`publish_batch_nowait`](Self::publish_batch_nowait)
    /// gives each event's outcome). An empty slice publishes nothing.
    ///
    /// ```no_run
    /// # #[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
    /// # #[event(topic = "orders", key = "order_id", type_name = "shop.OrderPlaced.v1")]
    /// # struct OrderPlaced {
    /// #     #[prost(string, tag = "1")]
    /// #     order_id: String,
    /// # }
    /// # async fn example(client: sidestream::Client) -> Result<(), sidestream::Error> {
    /// let orders: Vec<OrderPlaced> = (0..100)
    ///     .map(|n| OrderPlaced { order_id: format!("o-{n}") })
    ///     .collect();
    /// let receipts = client.publish_batch(&orders).await?;
    /// assert_eq!(receipts.len(), orders.len());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish): an event too large fails the call before any event is
    /// buffered; otherwise the first error in event order (events before it, and some after
    /// it, may have been stored).
    pub async fn publish_batch<E: Event>(&self, events: &[E]) -> Result<Vec<Receipt>, Error> {
        let producer = &self.inner.producer;
        let span =
            telemetry::publish_batch_span(E::TOPIC, E::TYPE_NAME, producer.source(), events.len());
        let trace = telemetry::trace_parent(&span);
        async move {
            producer
                .publish_batch(events, producer.default_acks(), trace)
                .await?
                .await
        }
        .instrument(span)
        .await
    }

    /// Buffers `events` for publishing, in order, as [`publish_batch`](Self::publish_batch)
    /// does, and returns as soon as they are in the buffer (waiting only while it is full).
    ///
    /// # Errors
    ///
    /// Those of [`publish_nowait`](Self::publish_nowait). An event too large fails the call
    /// before any event is buffered. An error met while buffering (the client closed, the
    /// topic could not be described again) comes after the events before it went into the
    /// buffer: they are published, and [`flush`](Self::flush) reports how that went.
    pub async fn publish_batch_nowait<E: Event>(
        &self,
        events: &[E],
    ) -> Result<PendingReceipts, Error> {
        let producer = &self.inner.producer;
        let span =
            telemetry::publish_batch_span(E::TOPIC, E::TYPE_NAME, producer.source(), events.len());
        let trace = telemetry::trace_parent(&span);
        producer
            .publish_batch(events, producer.default_acks(), trace)
            .instrument(span)
            .await
    }

    /// Publishes events given as bytes to `topic`, in order, waiting for `acks`, as
    /// [`publish_batch`](Self::publish_batch) does.
    ///
    /// # Errors
    ///
    /// As [`publish_batch`](Self::publish_batch), and [`Error::InvalidTopicName`].
    pub async fn publish_raw_batch(
        &self,
        topic: &str,
        events: &[RawEvent],
        acks: Acks,
    ) -> Result<Vec<Receipt>, Error> {
        let producer = &self.inner.producer;
        let span = telemetry::publish_batch_span(topic, "", producer.source(), events.len());
        let trace = telemetry::trace_parent(&span);
        async move {
            producer
                .publish_raw_batch(topic, events, acks, trace)
                .await?
                .await
        }
        .instrument(span)
        .await
    }

    /// Buffers events given as bytes, as [`publish_batch_nowait`](Self::publish_batch_nowait)
    /// does.
    ///
    /// # Errors
    ///
    /// As [`publish_batch_nowait`](Self::publish_batch_nowait), and
    /// [`Error::InvalidTopicName`].
    pub async fn publish_raw_batch_nowait(
        &self,
        topic: &str,
        events: &[RawEvent],
        acks: Acks,
    ) -> Result<PendingReceipts, Error> {
        let producer = &self.inner.producer;
        let span = telemetry::publish_batch_span(topic, "", producer.source(), events.len());
        let trace = telemetry::trace_parent(&span);
        producer
            .publish_raw_batch(topic, events, acks, trace)
            .instrument(span)
            .await
    }

    /// Sends every buffered event now (whatever the linger) and waits until each is
    /// acknowledged or failed.
    ///
    /// # Errors
    ///
    /// The first error among the batches that failed (each failed event's receipt has its
    /// own).
    pub async fn flush(&self) -> Result<(), Error> {
        self.inner.producer.flush().await
    }

    /// Starts a subscription to the topic of `E`; configure it, then
    /// [`start`](SubscribeBuilder::start) it.
    pub fn subscribe<E: Event>(&self) -> SubscribeBuilder<E> {
        SubscribeBuilder::new(self.clone(), E::TOPIC)
    }

    /// Starts a subscription to `topic` that delivers events as bytes ([`RawEvent`]).
    pub fn subscribe_raw(&self, topic: &str) -> SubscribeBuilder<RawEvent> {
        SubscribeBuilder::new(self.clone(), topic)
    }

    /// Flushes, then closes the connection cleanly. Every clone of this client is closed:
    /// further calls fail with [`Error::Closed`]. Subscriptions should be closed first, so
    /// that they commit their offsets.
    ///
    /// # Errors
    ///
    /// The first error of the final flush; the connection is closed all the same.
    pub async fn close(&self) -> Result<(), Error> {
        let flushed = if self.inner.link.is_closed() {
            Ok(())
        } else {
            self.flush().await
        };
        self.inner.producer.close();
        let sender = self
            .inner
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(sender) = sender {
            let _ = sender.await;
        }
        self.inner.link.close().await;
        flushed
    }

    /// The service name the client connected as.
    pub fn service(&self) -> &str {
        self.inner.link.client_id()
    }

    /// The sidecar's address.
    pub fn sidecar_addr(&self) -> std::net::SocketAddr {
        self.inner.link.addr()
    }

    pub(crate) fn link(&self) -> &Arc<Link> {
        &self.inner.link
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    pub(crate) fn commit_interval(&self) -> Duration {
        self.inner.commit_interval
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("service", &self.service())
            .field("sidecar", &self.sidecar_addr())
            .finish_non_exhaustive()
    }
}

impl Drop for ClientInner {
    /// The last clone is gone: stop taking events; the sender task sends what is buffered
    /// and then ends, dropping the connection.
    fn drop(&mut self) {
        self.producer.close();
    }
}
