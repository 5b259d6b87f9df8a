//! The subscription's side of its queue: frames in, delivery items out. A pure state machine
//! (no IO, no async); [`Subscription`](super::Subscription) feeds it the frames the reader
//! queued.
//!
//! Call order: [`next_item`](Feed::next_item) until it returns `None`, then give it the next
//! frame with [`handle_frame`](Feed::handle_frame), and so on. Batches are decoded one at a
//! time, when the previous one has been handed out, so at most one batch is decoded but not
//! yet delivered; the frame (and its share of the read budget) is let go once its last batch
//! is handed out.
//!
//! A decoded batch is registered with the positions whole
//! ([`Positions::delivering`](super::positions::Positions::delivering)), with one lock per
//! batch instead of one per record: its records hold commits back until each is handed out
//! and acknowledged.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::batch_decoder::{BatchSource, Item, decode_batch, deliver};
use super::delivery::{Acker, Delivery, Payload};
use super::positions::Positions;
use super::reader::Frame;
use crate::Error;

pub(crate) struct Feed<T> {
    topic: Arc<str>,
    /// A group's assignments replace the partition set; otherwise they add to it.
    replace_assignments: bool,
    positions: Arc<Mutex<Positions>>,
    frame: Option<FrameInProgress>,
    /// The batch whose items are in `ready`, with its partition, epoch and acker.
    batch: Option<DecodedBatch>,
    ready: VecDeque<Item>,
    broken: bool,
    delivers: PhantomData<fn() -> T>,
}

/// The batches of one frame not decoded yet.
struct FrameInProgress {
    partition: u32,
    batches: std::vec::IntoIter<Bytes>,
    _permit: Option<OwnedSemaphorePermit>,
}

/// The batch being handed out.
struct DecodedBatch {
    bytes: Bytes,
    partition: u32,
    epoch: u64,
    acker: Acker,
}

impl<T: Payload> Feed<T> {
    pub(crate) fn new(
        topic: Arc<str>,
        replace_assignments: bool,
        positions: Arc<Mutex<Positions>>,
    ) -> Self {
        Self {
            topic,
            replace_assignments,
            positions,
            frame: None,
            batch: None,
            ready: VecDeque::new(),
            broken: false,
            delivers: PhantomData,
        }
    }

    /// The next item to hand out, or `None` when a new frame is needed.
    ///
    /// After an [`Error::CorruptBatch`] the feed is broken: it yields nothing more.
    pub(crate) fn next_item(&mut self) -> Option<Result<Delivery<T>, Error>> {
        loop {
            // Items are queued only with their batch: `ready` is empty whenever `batch` is None.
            if let Some(batch) = &self.batch
                && let Some(item) = self.ready.pop_front()
            {
                match item {
                    Item::Record(span) => {
                        let offset = span.offset;
                        let delivery = deliver(
                            &self.topic,
                            batch.partition,
                            &batch.bytes,
                            span,
                            &batch.acker,
                        );
                        if delivery.is_err() {
                            // The subscriber is told of it: it needs no ack.
                            self.positions().ack(batch.partition, batch.epoch, offset);
                        }
                        return Some(delivery);
                    }
                    // Registered with the batch.
                    Item::Advance(_) => continue,
                }
            }
            self.batch = None;
            let frame = self.frame.as_mut()?;
            let partition = frame.partition;
            let Some(bytes) = frame.batches.next() else {
                self.frame = None;
                return None;
            };
            let Some((next, epoch)) = self.positions().next_offset(partition) else {
                // Not (or no longer) assigned: its batches are not delivered.
                self.frame = None;
                return None;
            };
            let source = BatchSource {
                topic: &self.topic,
                partition,
                next,
            };
            if let Err(error) = decode_batch(&source, &bytes, &mut self.ready) {
                self.broken = true;
                self.frame = None;
                self.ready.clear();
                return Some(Err(error));
            }
            // The whole batch at once: one lock per batch, not one per record. Its last item is
            // always its end.
            let end = match self.ready.back() {
                Some(Item::Advance(end)) => *end,
                _ => next,
            };
            self.positions()
                .delivering(partition, epoch, record_offsets(&self.ready), end);
            self.batch = Some(DecodedBatch {
                bytes,
                partition,
                epoch,
                acker: Acker::new(Arc::clone(&self.topic), Arc::clone(&self.positions), epoch),
            });
        }
    }

    /// Takes the next frame from the queue; returns the error of a final frame.
    pub(crate) fn handle_frame(&mut self, frame: Frame) -> Option<Error> {
        if self.broken {
            return None;
        }
        match frame {
            Frame::Batches {
                partition,
                high_watermark,
                batches,
                permit,
            } => {
                self.positions()
                    .set_high_watermark(partition, high_watermark);
                self.frame = Some(FrameInProgress {
                    partition,
                    batches: batches.into_iter(),
                    _permit: permit,
                });
                None
            }
            Frame::Assignment(assignment) => {
                tracing::debug!(
                    topic = %self.topic,
                    generation = assignment.generation,
                    partitions = ?assignment.partitions.iter().map(|p| p.partition).collect::<Vec<_>>(),
                    "new assignment"
                );
                self.positions()
                    .assign(&assignment, self.replace_assignments);
                None
            }
            Frame::End(error) => Some(error),
        }
    }

    /// The first record decoded but not handed out yet, as (partition, epoch, offset).
    pub(crate) fn held(&self) -> Option<(u32, u64, u64)> {
        let batch = self.batch.as_ref()?;
        let offset = record_offsets(&self.ready).next()?;
        Some((batch.partition, batch.epoch, offset))
    }

    /// Whether a corrupt batch ended the feed.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    fn positions(&self) -> MutexGuard<'_, Positions> {
        self.positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The offsets of the records among `items`, in order.
fn record_offsets(items: &VecDeque<Item>) -> impl Iterator<Item = u64> + '_ {
    items.iter().filter_map(|item| match item {
        Item::Record(span) => Some(span.offset),
        Item::Advance(_) => None,
    })
}
