//! [`Subscription`]: the typed stream of deliveries.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::committer::Committer;
use super::delivery::{Delivery, Payload};
use super::feed::Feed;
use super::positions::Positions;
use super::reader::Frame;
use crate::Error;

/// A running subscription: a stream of [`Delivery`]s of `T`, either an [`Event`](crate::Event)
/// type or [`RawEvent`](crate::RawEvent).
///
/// Read it with [`next`](Self::next) or as a [`Stream`](futures_core::Stream). Each item is a
/// delivery, or an error about one event ([`Error::TypeMismatch`], [`Error::Decode`],
/// [`Error::MissingValue`]: the stream goes on after it, and that event counts as handled), or
/// a final error after which the stream ends (the topic was deleted, the position fell out of
/// retention, the sidecar could not be reached again within the request timeout). A lost
/// connection or a restarting sidecar is handled inside: the subscription resubscribes and
/// delivers nothing twice that it had handed out.
///
/// End it with [`close`](Self::close), which commits acknowledged offsets first. Dropping it
/// commits in the background, best-effort.
pub struct Subscription<T> {
    topic: Arc<str>,
    group: Option<String>,
    positions: Arc<Mutex<Positions>>,
    committer: Arc<Committer>,
    queue: mpsc::UnboundedReceiver<Frame>,
    feed: Feed<T>,
    stop: watch::Sender<bool>,
    committer_task: Option<JoinHandle<Result<(), Error>>>,
    reader_task: Option<JoinHandle<()>>,
    ended: bool,
}

impl<T: Payload> Subscription<T> {
    #[allow(
        clippy::too_many_arguments,
        reason = "assembled once, by SubscribeBuilder::start"
    )]
    pub(crate) fn new(
        topic: Arc<str>,
        group: Option<String>,
        positions: Arc<Mutex<Positions>>,
        committer: Arc<Committer>,
        queue: mpsc::UnboundedReceiver<Frame>,
        stop: watch::Sender<bool>,
        committer_task: Option<JoinHandle<Result<(), Error>>>,
        reader_task: JoinHandle<()>,
    ) -> Self {
        Self {
            feed: Feed::new(Arc::clone(&topic), group.is_some(), Arc::clone(&positions)),
            topic,
            group,
            positions,
            committer,
            queue,
            stop,
            committer_task,
            reader_task: Some(reader_task),
            ended: false,
        }
    }

    /// The next delivery; `None` once the subscription has ended.
    pub async fn next(&mut self) -> Option<Result<Delivery<T>, Error>> {
        std::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    /// Commits the offsets of acknowledged deliveries now (groups only; without a group this
    /// does nothing).
    ///
    /// # Errors
    ///
    /// The first commit the sidecar refused or that failed within the request timeout.
    pub async fn commit(&self) -> Result<(), Error> {
        self.committer.commit().await
    }

    /// Commits acknowledged offsets, then ends the subscription (and, in a group, this
    /// member's membership).
    ///
    /// # Errors
    ///
    /// The final commit's error.
    pub async fn close(mut self) -> Result<(), Error> {
        let committed = self.committer.commit().await;
        let _ = self.stop.send(true);
        let last = match self.committer_task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        };
        if let Some(reader) = self.reader_task.take() {
            let _ = tokio::time::timeout(CLOSE_GRACE, reader).await;
        }
        committed.and(last)
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The group, if the subscription is in one.
    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// The group generation of the current assignment (0 without a group).
    pub fn generation(&self) -> u64 {
        self.positions().generation()
    }

    /// The partitions delivered now, with for each the next offset to deliver and its lag
    /// (the last known high watermark minus that offset).
    pub fn assignment(&self) -> Vec<PartitionState> {
        self.positions()
            .snapshot(self.feed.held())
            .into_iter()
            .map(|(partition, next_offset, high_watermark)| PartitionState {
                partition,
                next_offset,
                lag: high_watermark.saturating_sub(next_offset),
            })
            .collect()
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Delivery<T>, Error>>> {
        loop {
            if let Some(item) = self.feed.next_item() {
                if self.feed.is_broken() {
                    // A corrupt batch: nothing after it can be trusted to follow on.
                    self.ended = true;
                    let _ = self.stop.send(true);
                }
                return Poll::Ready(Some(item));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            let Some(frame) = ready!(self.queue.poll_recv(cx)) else {
                self.ended = true;
                return Poll::Ready(None);
            };
            if let Some(error) = self.feed.handle_frame(frame) {
                self.ended = true;
                return Poll::Ready(Some(Err(error)));
            }
        }
    }
}

impl<T> Subscription<T> {
    fn positions(&self) -> MutexGuard<'_, Positions> {
        self.positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A partition of a subscription's assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionState {
    /// The partition.
    pub partition: u32,
    /// The next offset the subscription delivers from it.
    pub next_offset: u64,
    /// Events committed in the partition but not delivered yet, as of the last frame.
    pub lag: u64,
}

impl<T: Payload> futures_core::Stream for Subscription<T> {
    type Item = Result<Delivery<T>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_item(cx)
    }
}

/// The subscription never relies on its own address.
impl<T> Unpin for Subscription<T> {}

impl<T> Drop for Subscription<T> {
    /// Stops the subscription: in a group the committer commits once more, then ends the
    /// stream; otherwise the stream ends at once.
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl<T> std::fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// How long `close` waits for the stream to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
