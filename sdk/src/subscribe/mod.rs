//! Subscribing: a long-lived stream per subscription on which the sidecar pushes committed
//! record batches, decoded into typed [`Delivery`]s.
//!
//! ```text
//!   sidecar ══stream══▶ reader task ──queue (bounded by bytes)──▶ Subscription::next
//!                        (resubscribes                              │ validate, skip,
//!                         when lost)                                │ type check, decode
//!                                                                   ▼
//!   committer task ◀── Positions (next offset, acks) ◀──────── Delivery::ack
//!    (groups only: CommitOffset every commit_interval, and at close)
//! ```
//!
//! Delivery is at least once: a group resumes at its committed offsets, which only move past
//! acknowledged deliveries. Events of another type than the subscription's are reported as
//! [`Error::TypeMismatch`], never decoded.

mod batch_decoder;
mod committer;
mod delivery;
mod feed;
mod positions;
mod reader;
mod subscription;

#[cfg(test)]
mod tests;

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sidestream_proto::v1::{Earliest, Latest, subscribe};
use tokio::sync::{mpsc, watch};

pub use delivery::{AckHandle, Delivery, Payload};
pub use subscription::{PartitionState, Subscription};

use crate::client::valid_name;
use crate::{Client, Error};
use committer::Committer;
use positions::Positions;
use reader::{Reader, SubscribeRequest};

/// Where a subscription starts in each partition. In a group this applies only to partitions
/// without a committed offset; the others resume there. A subscription that does not say
/// ([`SubscribeBuilder::from`]) starts as the sidecar's default: a group at
/// [`Earliest`](Self::Earliest), so that a new group misses nothing published before its
/// first member came up, and a subscription of its own at [`Latest`](Self::Latest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StartAt {
    /// At the partition's log start: everything still held.
    Earliest,
    /// At the high watermark: only events published from now on.
    Latest,
    /// At this offset in every partition; the subscription fails with
    /// [`Error::OffsetOutOfRange`] where a partition does not
    /// hold it.
    Offset(u64),
    /// At the first event published at or after this time (milliseconds since the Unix
    /// epoch); at the high watermark where there is none.
    Timestamp(i64),
}

impl StartAt {
    fn wire(self) -> subscribe::Start {
        match self {
            Self::Earliest => subscribe::Start::Earliest(Earliest {}),
            Self::Latest => subscribe::Start::Latest(Latest {}),
            Self::Offset(offset) => subscribe::Start::Offset(offset),
            Self::Timestamp(ms) => subscribe::Start::TimestampMs(ms),
        }
    }
}

/// Configures a subscription; made by [`Client::subscribe`] or [`Client::subscribe_raw`].
///
/// ```no_run
/// # async fn example(client: sidestream::Client) -> Result<(), sidestream::Error> {
/// # #[derive(Clone, PartialEq, prost::Message, sidestream::Event)]
/// # #[event(topic = "orders", key = "order_id", type_name = "shop.OrderPlaced.v1")]
/// # pub struct OrderPlaced { #[prost(string, tag = "1")] pub order_id: String }
/// use sidestream::StartAt;
///
/// let mut subscription = client
///     .subscribe::<OrderPlaced>()
///     .group("payments")
///     .from(StartAt::Earliest)
///     .start()
///     .await?;
/// while let Some(delivery) = subscription.next().await {
///     let delivery = delivery?;
///     println!("{} at {}/{}", delivery.event.order_id, delivery.partition, delivery.offset);
///     delivery.ack().await?;
/// }
/// subscription.close().await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "a subscription builder does nothing until `start` is awaited"]
pub struct SubscribeBuilder<T> {
    client: Client,
    topic: String,
    group: Option<String>,
    start: Option<StartAt>,
    partitions: Vec<u32>,
    max_bytes: u32,
    buffer_bytes: usize,
    payload: PhantomData<fn() -> T>,
}

impl<T: Payload> SubscribeBuilder<T> {
    pub(crate) fn new(client: Client, topic: &str) -> Self {
        Self {
            client,
            topic: topic.to_owned(),
            group: None,
            start: None,
            partitions: Vec::new(),
            max_bytes: 0,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            payload: PhantomData,
        }
    }

    /// Joins the consumer group `group`: the sidecar shares the topic's partitions among the
    /// group's members, and acknowledged offsets are committed for the group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Where to start where nothing is committed. Without it, a group starts at
    /// [`StartAt::Earliest`] and a subscription of its own at [`StartAt::Latest`].
    pub fn from(mut self, start: StartAt) -> Self {
        self.start = Some(start);
        self
    }

    /// Reads only these partitions (not with a group); all of them by default.
    pub fn partitions(mut self, partitions: impl Into<Vec<u32>>) -> Self {
        self.partitions = partitions.into();
        self
    }

    /// Bytes of batches per frame the sidecar pushes; 0 (the default) takes the sidecar's.
    pub fn max_bytes(mut self, max_bytes: u32) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Bytes of received batches buffered before the subscription stops reading from the
    /// sidecar (default 8 MiB; a larger frame is still taken, alone).
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        self
    }

    /// Opens the subscription and waits for the sidecar's assignment.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTopicName`], [`Error::InvalidArgument`] (partitions with a group), and
    /// the sidecar's refusal, such as [`Error::UnknownTopic`] or
    /// [`Error::OffsetOutOfRange`]; retriable failures are retried until the request timeout.
    pub async fn start(self) -> Result<Subscription<T>, Error> {
        let topic = valid_name(&self.topic)?;
        if self.group.is_some() && !self.partitions.is_empty() {
            return Err(Error::InvalidArgument {
                message: format!(
                    "a subscription to {topic:?} in group {:?} cannot choose partitions; the group assigns them",
                    self.group.as_deref().unwrap_or_default()
                ),
            });
        }
        let request = SubscribeRequest {
            topic: topic.clone(),
            group: self.group.clone(),
            partitions: self.partitions,
            start: self.start,
            max_bytes: self.max_bytes,
        };
        let link = Arc::clone(self.client.link());
        let request_timeout = self.client.request_timeout();
        let deadline = Instant::now() + request_timeout;
        let first = reader::open(&link, request.body(), &topic, deadline).await?;
        tracing::debug!(
            %topic,
            group = ?self.group,
            generation = first.assignment.generation,
            partitions = first.assignment.partitions.len(),
            "subscribed"
        );

        let mut positions = Positions::new(self.group.is_some());
        positions.assign(&first.assignment, self.group.is_some());
        let positions = Arc::new(Mutex::new(positions));
        let (queue_in, queue) = mpsc::unbounded_channel();
        let budget = u32::try_from(self.buffer_bytes.max(1)).unwrap_or(u32::MAX);
        let reader = Arc::new(Reader::new(
            Arc::clone(&link),
            request,
            request_timeout,
            queue_in,
            budget,
        ));
        let (stop_reader, reader_stop) = watch::channel(false);
        let reader = tokio::spawn(reader.run(first, reader_stop));
        let committer = Arc::new(Committer {
            link,
            topic: topic.clone(),
            group: self.group.clone(),
            positions: Arc::clone(&positions),
            request_timeout,
            serial: tokio::sync::Mutex::new(()),
        });
        let (stop, committer_task) = if self.group.is_some() {
            let (stop, stop_committer) = watch::channel(false);
            let task = tokio::spawn(Arc::clone(&committer).run(
                self.client.commit_interval(),
                stop_committer,
                stop_reader,
            ));
            (stop, Some(task))
        } else {
            (stop_reader, None)
        };
        Ok(Subscription::new(
            topic.into(),
            self.group,
            positions,
            committer,
            queue,
            stop,
            committer_task,
            reader,
        ))
    }
}

impl<T> std::fmt::Debug for SubscribeBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscribeBuilder")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("start", &self.start)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// Default bytes of received batches buffered per subscription.
const DEFAULT_BUFFER_BYTES: usize = 8 << 20;
