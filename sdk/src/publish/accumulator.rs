//! The client's publish buffer: one [`PartitionQueue`] per (topic, partition), the
//! partitioner, and the timers of linger and retries. A pure state machine (no IO, no async):
//! the caller passes the time in and carries out what comes out.
//!
//! Method families, in the order of an event's life:
//!
//! 1. topics: [`set_topic`](Accumulator::set_topic) after describing a topic (an
//!    `UNKNOWN_TOPIC` or `UNKNOWN_PARTITION` answer forgets its partition count, so the next
//!    event describes it again);
//! 2. events: [`append`](Accumulator::append) (callers hold the buffer space they reserve);
//! 3. sending: [`poll_transmit`](Accumulator::poll_transmit) yields the batches to send now,
//!    [`next_timeout`](Accumulator::next_timeout) when to poll again at the latest;
//! 4. answers: [`handle_outcome`](Accumulator::handle_outcome) for each send;
//! 5. draining: [`flush`](Accumulator::flush), [`close`](Accumulator::close) and
//!    [`is_drained`](Accumulator::is_drained).
//!
//! Every call that finishes batches returns the buffer bytes they give back.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::partition_queue::{Effects, LazyNow, Outcome, PartitionQueue, RecordParts, Sealing};
use super::receipt::{BatchCompletion, PendingReceipt};
use crate::partitioner::{StickyPartition, partition_for_hash};
use crate::{Acks, Error};

/// The batching rules.
#[derive(Debug, Clone)]
pub(crate) struct BatchConfig {
    /// A batch is sealed once it reaches this size.
    pub(crate) batch_bytes: usize,
    /// How long an open batch may wait for more events; zero: it is sent as soon as the
    /// partition has nothing in flight.
    pub(crate) linger: Duration,
    /// Batches of one partition outstanding at once.
    pub(crate) max_in_flight: usize,
    /// How long a sealed batch may take to be acknowledged, retries included.
    pub(crate) request_timeout: Duration,
    /// First retry backoff; doubles with each attempt.
    pub(crate) retry_backoff: Duration,
    /// Longest retry backoff.
    pub(crate) max_retry_backoff: Duration,
}

/// Identifies a partition queue inside the accumulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct PartitionRef {
    topic: usize,
    partition: u32,
}

/// A batch to send now.
#[derive(Debug)]
pub(crate) struct Transmit {
    pub(crate) at: PartitionRef,
    pub(crate) id: u64,
    pub(crate) topic: Arc<str>,
    pub(crate) partition: u32,
    pub(crate) acks: Acks,
    pub(crate) bytes: Bytes,
    pub(crate) deadline: Instant,
    /// Send only on this connection (a pipelined batch), or on any (a batch sent alone).
    pub(crate) only_on: Option<usize>,
}

/// Where an event goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Route {
    /// A keyed event: the key's [`murmur2`](crate::partitioner::murmur2) hash.
    Hash(i32),
    /// An unkeyed event: the topic's sticky partition.
    Sticky,
}

/// A topic's place in the accumulator, from [`Accumulator::topic_at`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct TopicAt(usize);

/// An appended event.
#[derive(Debug)]
pub(crate) struct Appended<R = PendingReceipt> {
    /// What the caller's `receipt` made of the event's batch and index.
    pub(crate) receipt: R,
    /// The sender should poll: a batch was opened or sealed.
    pub(crate) wake: bool,
    /// Buffer bytes given back by batches that failed while sealing.
    pub(crate) released: usize,
}

/// Why an event was not appended.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The topic's partition count is not known (yet, or any more): describe it first.
    UnknownTopic,
    /// The event cannot be published.
    Failed(Error),
}

pub(crate) struct Accumulator {
    config: BatchConfig,
    producer_id: i64,
    new_producer_id: fn() -> i64,
    topics: Vec<TopicQueues>,
    by_name: HashMap<Arc<str>, usize>,
    dirty: Vec<PartitionRef>,
    timers: BinaryHeap<Reverse<(Instant, PartitionRef)>>,
    batch_id: u64,
    closing: bool,
    /// The client's live connection, as the sender last saw it.
    connection: Option<usize>,
    /// The index of the topic the last event went to.
    last_topic: Option<usize>,
}

struct TopicQueues {
    name: Arc<str>,
    /// `None` while the count must be described again.
    partition_count: Option<u32>,
    partitions: Vec<PartitionQueue>,
    sticky: StickyPartition,
}

impl Accumulator {
    /// An empty buffer; batches carry `producer_id` until a partition needs a new one, which
    /// `new_producer_id` makes.
    pub(crate) fn new(config: BatchConfig, producer_id: i64, new_producer_id: fn() -> i64) -> Self {
        Self {
            config,
            producer_id,
            new_producer_id,
            topics: Vec::new(),
            by_name: HashMap::new(),
            dirty: Vec::new(),
            timers: BinaryHeap::new(),
            batch_id: 0,
            closing: false,
            connection: None,
            last_topic: None,
        }
    }

    /// The partition count of `topic`, if known.
    pub(crate) fn partition_count(&self, topic: &str) -> Option<u32> {
        let &index = self.by_name.get(topic)?;
        self.topics.get(index)?.partition_count
    }

    /// Records that `topic` has `partitions` partitions; unkeyed events start on partition
    /// `sticky_start % partitions`.
    pub(crate) fn set_topic(&mut self, topic: &str, partitions: u32, sticky_start: u32) {
        let index = if let Some(&index) = self.by_name.get(topic) {
            index
        } else {
            let name: Arc<str> = Arc::from(topic);
            self.topics.push(TopicQueues {
                name: Arc::clone(&name),
                partition_count: None,
                partitions: Vec::new(),
                sticky: StickyPartition::new(sticky_start, partitions),
            });
            self.by_name.insert(name, self.topics.len() - 1);
            self.topics.len() - 1
        };
        let producer_id = self.producer_id;
        if let Some(queues) = self.topics.get_mut(index) {
            // Queues of partitions that vanished stay until their batches are answered.
            while queues.partitions.len() < partitions as usize {
                let number = u32::try_from(queues.partitions.len()).unwrap_or(u32::MAX);
                queues.partitions.push(PartitionQueue::new(
                    Arc::clone(&queues.name),
                    number,
                    producer_id,
                ));
            }
            queues.partition_count = Some(partitions);
            queues.sticky.resize(partitions);
        }
    }

    /// Appends one event of `reserved` buffer bytes to its partition's open batch; its
    /// receipt reads the outcome of that batch.
    pub(crate) fn append(
        &mut self,
        topic: &str,
        route: Route,
        record: RecordParts<'_>,
        acks: Acks,
        reserved: usize,
        now: &mut LazyNow,
    ) -> Result<Appended, AppendError> {
        self.append_with(
            topic,
            route,
            record,
            (acks, reserved),
            now,
            |completion, index| PendingReceipt::new(Arc::clone(completion), index),
        )
    }

    /// As [`append`](Self::append), with the receipt made by `receipt` from the event's batch
    /// and its index there (a batch publish keeps one receipt per run of events).
    pub(crate) fn append_with<R>(
        &mut self,
        topic: &str,
        route: Route,
        record: RecordParts<'_>,
        reserve: (Acks, usize),
        now: &mut LazyNow,
        receipt: impl FnOnce(&Arc<BatchCompletion>, u32) -> R,
    ) -> Result<Appended<R>, AppendError> {
        let at = self.topic_at(topic)?;
        self.append_at(at, route, record, reserve, now, receipt)
    }

    /// Where `topic`'s queues are, for [`append_at`](Self::append_at). Topics are only ever
    /// added, so it stays valid; a caller looks it up again after the lock was let go anyway.
    pub(crate) fn topic_at(&mut self, topic: &str) -> Result<TopicAt, AppendError> {
        if self.closing {
            return Err(AppendError::Failed(Error::Closed));
        }
        // Most publishes go to the topic of the one before: a string compare, not a hash.
        let index = match self.last_topic {
            Some(last) if self.topics.get(last).is_some_and(|q| &*q.name == topic) => last,
            _ => {
                let Some(&index) = self.by_name.get(topic) else {
                    return Err(AppendError::UnknownTopic);
                };
                self.last_topic = Some(index);
                index
            }
        };
        Ok(TopicAt(index))
    }

    /// As [`append_with`](Self::append_with), to a topic looked up by
    /// [`topic_at`](Self::topic_at) under the same lock (which also checked that the
    /// accumulator is not closing); many events of one call share one lookup.
    pub(crate) fn append_at<R>(
        &mut self,
        TopicAt(index): TopicAt,
        route: Route,
        record: RecordParts<'_>,
        (acks, reserved): (Acks, usize),
        now: &mut LazyNow,
        receipt: impl FnOnce(&Arc<BatchCompletion>, u32) -> R,
    ) -> Result<Appended<R>, AppendError> {
        let Some(queues) = self.topics.get_mut(index) else {
            return Err(AppendError::UnknownTopic);
        };
        let Some(count) = queues.partition_count.filter(|&count| count > 0) else {
            return Err(AppendError::UnknownTopic);
        };
        let partition = match route {
            Route::Hash(hash) => partition_for_hash(hash, count),
            Route::Sticky => queues.sticky.current(),
        };
        let Some(queue) = queues.partitions.get_mut(partition as usize) else {
            return Err(AppendError::UnknownTopic);
        };
        let (receipt, wake, effects) = queue
            .append(
                record,
                acks,
                reserved,
                now,
                &mut Sealing {
                    config: &self.config,
                    batch_id: &mut self.batch_id,
                    connection: self.connection,
                },
                receipt,
            )
            .map_err(AppendError::Failed)?;
        if effects.sealed {
            queues.sticky.batch_sent(partition, count);
        }
        let at = PartitionRef {
            topic: index,
            partition,
        };
        if wake {
            self.mark_dirty(at);
        }
        Ok(Appended {
            receipt,
            wake,
            released: effects.released,
        })
    }

    /// Seals what is due and collects the batches to send now into `out`; returns the buffer
    /// bytes of batches that failed meanwhile (their deadline passed before they could go).
    /// Tells which connection the client has now (`None`: none is live). A partition's
    /// batches are pipelined only on the connection its last acknowledged batch came on.
    pub(crate) fn set_connection(&mut self, connection: Option<usize>) {
        if self.connection != connection {
            self.connection = connection;
            // Every queue may have to change its in-flight limit.
            for (topic, queues) in self.topics.iter_mut().enumerate() {
                for (partition, queue) in queues.partitions.iter_mut().enumerate() {
                    if !queue.is_idle() && !queue.dirty {
                        queue.dirty = true;
                        self.dirty.push(PartitionRef {
                            topic,
                            partition: u32::try_from(partition).unwrap_or(u32::MAX),
                        });
                    }
                }
            }
        }
    }

    /// Tests: every partition behaves as if its producer had a batch acknowledged on
    /// `connection` already.
    #[cfg(test)]
    pub(crate) fn assume_established(&mut self, connection: usize) {
        for queues in &mut self.topics {
            for queue in &mut queues.partitions {
                queue.assume_established(connection);
            }
        }
    }

    pub(crate) fn poll_transmit(&mut self, now: Instant, out: &mut Vec<Transmit>) -> usize {
        while let Some(&Reverse((at, partition))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.mark_dirty(partition);
        }
        let mut released = 0;
        let dirty = std::mem::take(&mut self.dirty);
        for at in &dirty {
            let Some(queues) = self.topics.get_mut(at.topic) else {
                continue;
            };
            let count = queues.partition_count.unwrap_or(0);
            let Some(queue) = queues.partitions.get_mut(at.partition as usize) else {
                continue;
            };
            queue.dirty = false;
            let effects = queue.poll(
                *at,
                now,
                self.closing,
                &mut Sealing {
                    config: &self.config,
                    batch_id: &mut self.batch_id,
                    connection: self.connection,
                },
                &mut self.new_producer_id,
                out,
            );
            if effects.sealed {
                queues.sticky.batch_sent(at.partition, count);
            }
            released += self.apply(*at, effects);
        }
        // Keep the allocation of the dirty list.
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
        released
    }

    /// The latest time to call [`poll_transmit`](Self::poll_transmit) again, if any timer is
    /// set. Calls in between are harmless.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Applies the outcome of sending batch `id` of partition `at`; returns the buffer bytes
    /// given back.
    pub(crate) fn handle_outcome(
        &mut self,
        at: PartitionRef,
        id: u64,
        outcome: Outcome,
        now: Instant,
    ) -> usize {
        if let Outcome::Fail(error) = &outcome
            && matches!(
                error,
                Error::UnknownTopic { .. } | Error::UnknownPartition { .. }
            )
            && let Some(queues) = self.topics.get_mut(at.topic)
        {
            queues.partition_count = None;
        }
        let Some(queue) = self
            .topics
            .get_mut(at.topic)
            .and_then(|queues| queues.partitions.get_mut(at.partition as usize))
        else {
            return 0;
        };
        let effects = queue.handle_outcome(id, outcome, now, &self.config);
        self.mark_dirty(at);
        self.apply(at, effects)
    }

    /// Seals every open batch so that it is sent at once, and returns the completions of all
    /// unfinished batches.
    pub(crate) fn flush(&mut self, now: Instant) -> Vec<Arc<BatchCompletion>> {
        let mut completions = Vec::new();
        let mut touched = Vec::new();
        for (topic, queues) in self.topics.iter_mut().enumerate() {
            let count = queues.partition_count.unwrap_or(0);
            for (partition, queue) in (0u32..).zip(queues.partitions.iter_mut()) {
                if queue.is_idle() {
                    continue;
                }
                let mut ctx = Sealing {
                    config: &self.config,
                    batch_id: &mut self.batch_id,
                    connection: self.connection,
                };
                let effects = queue.flush(now, &mut ctx, &mut completions);
                if effects.sealed {
                    queues.sticky.batch_sent(partition, count);
                }
                touched.push((PartitionRef { topic, partition }, effects));
            }
        }
        for (at, effects) in touched {
            self.mark_dirty(at);
            // Sealing fails only on an impossible encode error, which gives nothing back that
            // a receipt has not already been told; the bytes were released with it.
            let _ = self.apply(at, effects);
        }
        completions
    }

    /// Stops taking events; every open batch is sealed at the next poll.
    pub(crate) fn close(&mut self) {
        self.closing = true;
        let all: Vec<PartitionRef> = self
            .topics
            .iter()
            .enumerate()
            .flat_map(|(topic, queues)| {
                (0u32..)
                    .zip(&queues.partitions)
                    .filter(|(_, queue)| !queue.is_idle())
                    .map(move |(partition, _)| PartitionRef { topic, partition })
            })
            .collect();
        for at in all {
            self.mark_dirty(at);
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing
    }

    /// Whether nothing is buffered or on its way.
    pub(crate) fn is_drained(&self) -> bool {
        self.topics
            .iter()
            .all(|queues| queues.partitions.iter().all(PartitionQueue::is_idle))
    }

    fn apply(&mut self, at: PartitionRef, effects: Effects) -> usize {
        if let Some(timer) = effects.timer {
            self.timers.push(Reverse((timer, at)));
        }
        effects.released
    }

    fn mark_dirty(&mut self, at: PartitionRef) {
        if let Some(queue) = self
            .topics
            .get_mut(at.topic)
            .and_then(|queues| queues.partitions.get_mut(at.partition as usize))
            && !queue.dirty
        {
            queue.dirty = true;
            self.dirty.push(at);
        }
    }
}
