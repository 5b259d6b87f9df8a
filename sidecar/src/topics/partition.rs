//! One partition of a topic on this sidecar: its log, its high watermark and its producers.
//!
//! On a single sidecar a batch is committed when it is durable under the topic's fsync
//! policy: at once for `interval` and `never`, after the group-commit fsync that covers it for
//! `always`. The high watermark is the offset after the last committed batch; readers see only
//! below it, and `acks=all` publishes wait for it to pass their batch.

use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sidestream_log::batch::{BatchHeader, ValidBatch};
use sidestream_log::{AppendError, Appended, Fetched, FsyncPolicy, Log, ReadError};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::producers::{Producers, Sequence};
use super::replicated::Replicated;
use crate::cluster::NodeId;

/// Longest an early batch of an idempotent producer waits for its predecessor.
const EARLY_BATCH_WAIT: Duration = Duration::from_secs(5);

/// Where a partition's commitment stands, as its watchers see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Committed {
    /// The offset after the last committed batch.
    pub(crate) high_watermark: u64,
    /// Set once a sync failed: the log refuses writes until the sidecar reopens it.
    pub(crate) failed: Option<String>,
}

/// How a publish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PublishOutcome {
    /// Offsets of the batch: base and next (the earlier append's for a duplicate, if known).
    pub(crate) offsets: Option<(u64, u64)>,
    /// The batch repeated one already appended; nothing was written.
    pub(crate) duplicate: bool,
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(
        "producer {producer_id} sent sequence {got} but partition {partition} expects {expected} first"
    )]
    OutOfOrder {
        producer_id: i64,
        partition: u32,
        expected: i32,
        got: i32,
    },
    #[error(
        "producer {producer_id} sent sequence {got}, before its next sequence {expected} and not one of its recent batches"
    )]
    Stale {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error("producer {producer_id} epoch {got} is fenced by epoch {current}")]
    Fenced {
        producer_id: i64,
        got: i16,
        current: i16,
    },
    #[error("partition {partition} storage failed: {reason}")]
    Storage { partition: u32, reason: String },
    #[error("the batch was appended at offset {base_offset} but not committed within {waited:?}")]
    Timeout { base_offset: u64, waited: Duration },
    #[error("the partition has no leader at the moment (an election is under way); retry")]
    NoLeader,
    #[error("this sidecar's replica of the partition has stopped")]
    Stopped,
    #[error("the publish's time ran out before it could be proposed")]
    Expired,
    #[error(
        "the batch was not acknowledged within {waited:?}: it may or may not have been written (the partition's leadership moved, or a majority of its replicas is unreachable)"
    )]
    Unacknowledged { waited: Duration },
}

enum Attempt {
    Appended(Appended),
    /// A repeat of a batch appended before.
    Duplicate(PublishOutcome),
    Early {
        expected: i32,
    },
}

/// One partition: the log and what the sidecar tracks beside it.
#[derive(Debug)]
pub(crate) struct Partition {
    number: u32,
    kind: Kind,
    producers: Mutex<Producers>,
    /// Woken after every append, for batches waiting for their predecessor.
    appended: Notify,
    committed: Arc<watch::Sender<Committed>>,
    syncer: Mutex<SyncState>,
}

/// Who commits the partition's batches.
#[derive(Debug)]
pub(crate) enum Kind {
    /// This sidecar, alone: a batch is committed when it is durable.
    Local(Arc<Log>),
    /// The partition's Raft group, of which this sidecar holds a replica.
    Replicated(Box<Replicated>),
    /// The partition's Raft group, of which this sidecar holds no replica: these nodes do.
    Remote(Vec<NodeId>),
}

#[derive(Debug, Default)]
struct SyncState {
    latest: Option<Appended>,
    running: bool,
}

impl Partition {
    /// Wraps an opened log; everything in it counts as committed.
    pub(crate) fn new(number: u32, log: Log) -> Self {
        let high_watermark = log.state().next_offset;
        Self::with_kind(number, Kind::Local(Arc::new(log)), high_watermark)
    }

    /// This sidecar's replica of a replicated partition: readers see its high watermark.
    pub(crate) fn replicated(number: u32, replicated: Replicated) -> Self {
        let mut high_watermark = replicated.replica().high_watermark.clone();
        let start = *high_watermark.borrow_and_update();
        let partition = Self::with_kind(number, Kind::Replicated(Box::new(replicated)), start);
        let committed = Arc::clone(&partition.committed);
        // Ends when the replica's state machine is gone (its Raft stopped).
        tokio::spawn(async move {
            while high_watermark.changed().await.is_ok() {
                let now = *high_watermark.borrow_and_update();
                committed.send_modify(|c| c.high_watermark = now);
            }
        });
        partition
    }

    /// A partition of a replicated topic that this sidecar holds no replica of.
    pub(crate) fn remote(number: u32, replicas: Vec<NodeId>) -> Self {
        Self::with_kind(number, Kind::Remote(replicas), 0)
    }

    fn with_kind(number: u32, kind: Kind, high_watermark: u64) -> Self {
        Self {
            number,
            kind,
            producers: Mutex::new(Producers::default()),
            appended: Notify::new(),
            committed: Arc::new(watch::Sender::new(Committed {
                high_watermark,
                failed: None,
            })),
            syncer: Mutex::new(SyncState::default()),
        }
    }

    pub(crate) fn number(&self) -> u32 {
        self.number
    }

    pub(crate) fn kind(&self) -> &Kind {
        &self.kind
    }

    /// The partition's log on this sidecar; `None` when it holds no replica.
    pub(crate) fn log(&self) -> Option<&Arc<Log>> {
        match &self.kind {
            Kind::Local(log) => Some(log),
            Kind::Replicated(replicated) => Some(&replicated.replica().log),
            Kind::Remote(_) => None,
        }
    }

    /// Ends this partition's service here: readers waiting on it get `reason`.
    pub(crate) fn close(&self, reason: &str) {
        self.committed.send_modify(|c| {
            c.failed.get_or_insert_with(|| reason.to_owned());
        });
    }

    pub(crate) fn high_watermark(&self) -> u64 {
        self.committed.borrow().high_watermark
    }

    /// A receiver that sees every change of the high watermark.
    pub(crate) fn watch_committed(&self) -> watch::Receiver<Committed> {
        self.committed.subscribe()
    }

    /// Reads committed batches from `offset`: at most `max_bytes` as they travel in a
    /// `repeated bytes` field (each with a tag byte and a length varint), and at least one.
    pub(crate) fn read(&self, offset: u64, max_bytes: usize) -> Result<Fetched, ReadError> {
        let Some(log) = self.log() else {
            // Callers pass reads of partitions held elsewhere on to a replica's sidecar.
            return Err(ReadError::Io {
                segment: format!("partition {}", self.number).into(),
                source: std::io::Error::other("this sidecar holds no replica of it"),
            });
        };
        let mut fetched = log.read_committed(offset, max_bytes, self.high_watermark())?;
        let mut total = 0;
        let mut keep = 0;
        for batch in &fetched.batches {
            let cost = batch.len() + 1 + varint_len(batch.len());
            if keep > 0 && total + cost > max_bytes {
                break;
            }
            total += cost;
            keep += 1;
        }
        if keep < fetched.batches.len() {
            fetched.batches.truncate(keep);
            if let Some(last) = fetched.batches.last()
                && let Ok(header) = BatchHeader::parse(last)
            {
                fetched.next_offset = header.next_offset();
            }
        }
        Ok(fetched)
    }

    /// Appends a validated data batch, keeping each idempotent producer's batches in sequence
    /// order, and waits for its commitment when `wait_commit` is set.
    pub(crate) async fn publish(
        self: &Arc<Self>,
        batch: &ValidBatch<'_>,
        wait_commit: bool,
        deadline: Instant,
    ) -> Result<PublishOutcome, PublishError> {
        let Kind::Local(log) = &self.kind else {
            return Err(PublishError::Stopped);
        };
        let header = batch.header();
        let producer = header.producer;
        let early_deadline = deadline.min(Instant::now() + EARLY_BATCH_WAIT);
        let appended = loop {
            let mut notified = pin!(self.appended.notified());
            let expected = match self.try_append(log, batch)? {
                Attempt::Appended(appended) => break appended,
                Attempt::Duplicate(outcome) => {
                    // The earlier copy may still be waiting for its sync: a duplicate is
                    // acknowledged no earlier than the original would be.
                    if wait_commit {
                        let through = outcome
                            .offsets
                            .map_or_else(|| log.state().next_offset, |(_, next)| next);
                        let base = outcome.offsets.map_or(through, |(base, _)| base);
                        self.wait_committed(through, deadline, base).await?;
                    }
                    return Ok(outcome);
                }
                Attempt::Early { expected } => expected,
            };
            notified.as_mut().enable();
            // An append may have happened between the check and `enable`: check again first.
            if self.still_early(header)
                && tokio::time::timeout_at(early_deadline, notified)
                    .await
                    .is_err()
            {
                return Err(PublishError::OutOfOrder {
                    producer_id: producer.producer_id,
                    partition: self.number,
                    expected,
                    got: producer.base_sequence,
                });
            }
        };
        self.after_append(log, appended);
        if wait_commit {
            self.wait_committed(appended.next_offset, deadline, appended.base_offset)
                .await?;
        }
        Ok(PublishOutcome {
            offsets: Some((appended.base_offset, appended.next_offset)),
            duplicate: false,
        })
    }

    /// Appends the batch if it is its producer's next one, all under the producers' lock.
    fn try_append(&self, log: &Log, batch: &ValidBatch<'_>) -> Result<Attempt, PublishError> {
        let header = batch.header();
        let producer = header.producer;
        let mut producers = lock(&self.producers);
        match producers.check(producer) {
            Sequence::Append => {
                let appended = log.append_valid(batch)?;
                producers.appended(
                    producer,
                    header.record_count,
                    (appended.base_offset, appended.next_offset),
                );
                drop(producers);
                self.appended.notify_waiters();
                Ok(Attempt::Appended(appended))
            }
            Sequence::Duplicate(offsets) => Ok(Attempt::Duplicate(PublishOutcome {
                offsets: Some(offsets),
                duplicate: true,
            })),
            Sequence::Stale { expected } => Err(PublishError::Stale {
                producer_id: producer.producer_id,
                expected,
                got: producer.base_sequence,
            }),
            Sequence::Fenced { current } => Err(PublishError::Fenced {
                producer_id: producer.producer_id,
                got: producer.producer_epoch,
                current,
            }),
            Sequence::Early { expected } => Ok(Attempt::Early { expected }),
        }
    }

    fn still_early(&self, header: &BatchHeader) -> bool {
        matches!(
            lock(&self.producers).check(header.producer),
            Sequence::Early { .. }
        )
    }

    fn after_append(self: &Arc<Self>, log: &Arc<Log>, appended: Appended) {
        match log.config().fsync {
            FsyncPolicy::Always => {
                let start = {
                    let mut state = lock(&self.syncer);
                    if state
                        .latest
                        .is_none_or(|latest| latest.raft.index < appended.raft.index)
                    {
                        state.latest = Some(appended);
                    }
                    !std::mem::replace(&mut state.running, true)
                };
                if start {
                    let partition = Arc::clone(self);
                    let log = Arc::clone(log);
                    tokio::task::spawn_blocking(move || partition.sync_loop(&log));
                }
            }
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => self.commit(appended.next_offset),
        }
    }

    /// Syncs until no append waits for a sync: each `wait_durable` covers every append before
    /// the latest one, so one sync serves them all.
    fn sync_loop(&self, log: &Log) {
        loop {
            let Some(latest) = ({
                let mut state = lock(&self.syncer);
                let latest = state.latest.take();
                if latest.is_none() {
                    state.running = false;
                }
                latest
            }) else {
                return;
            };
            match log.wait_durable(&latest) {
                Ok(()) => self.commit(latest.next_offset),
                Err(error) => {
                    tracing::error!(partition = self.number, %error, "partition sync failed");
                    self.committed.send_modify(|c| {
                        c.failed.get_or_insert_with(|| error.to_string());
                    });
                }
            }
        }
    }

    fn commit(&self, next_offset: u64) {
        self.committed.send_if_modified(|c| {
            let moved = next_offset > c.high_watermark;
            if moved {
                c.high_watermark = next_offset;
            }
            moved
        });
    }

    async fn wait_committed(
        &self,
        next_offset: u64,
        deadline: Instant,
        base_offset: u64,
    ) -> Result<(), PublishError> {
        let mut committed = self.committed.subscribe();
        let started = Instant::now();
        let wait = committed.wait_for(|c| c.high_watermark >= next_offset || c.failed.is_some());
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(c)) => match &c.failed {
                Some(reason) if c.high_watermark < next_offset => Err(PublishError::Storage {
                    partition: self.number,
                    reason: reason.clone(),
                }),
                _ => Ok(()),
            },
            Ok(Err(_)) => Err(PublishError::Storage {
                partition: self.number,
                reason: "the partition was closed".into(),
            }),
            Err(_) => Err(PublishError::Timeout {
                base_offset,
                waited: started.elapsed(),
            }),
        }
    }
}

/// Bytes of a protobuf varint holding `n`.
fn varint_len(n: usize) -> usize {
    let bits = usize::BITS - (n | 1).leading_zeros();
    bits.div_ceil(7) as usize
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
