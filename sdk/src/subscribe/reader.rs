//! The reader task of a subscription: reads the sidecar's frames from the subscription
//! stream(s) into the subscription's queue, and resubscribes transparently when a stream is
//! lost.
//!
//! ```text
//!   stream ──frames──▶ pump ──(buffer budget: wait for room)──▶ queue ──▶ Subscription
//!     lost (connection, UNAVAILABLE, …)
//!       └─▶ group:    one new Subscribe with the group (the sidecar resumes at the
//!                     committed offsets; the subscription skips what it delivered already)
//!           no group: one Subscribe per partition, at the offset after the last batch read
//! ```
//!
//! Backpressure: a pump takes a frame's bytes from the buffer budget before it queues the
//! frame, and the subscription gives them back when it has handed the frame's events out. A
//! pump that waits for room reads nothing more, so QUIC flow control slows the sidecar down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use quinn::{RecvStream, SendStream};
use sidestream_log::batch::BatchHeader;
use sidestream_proto::v1::{Assignment, Earliest, Subscribe, request, response, subscribe};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::StartAt;
use crate::Error;
use crate::client::{CallError, FrameReader, Link};
use crate::error::TransportError;
use crate::publish::sender_body_name;

/// What the reader queues for the subscription, in stream order.
#[derive(Debug)]
pub(crate) enum Frame {
    /// The partitions changed (a rebalance, or a resubscription).
    Assignment(Assignment),
    /// Batches of one partition; `permit` holds their share of the buffer budget.
    Batches {
        partition: u32,
        high_watermark: u64,
        batches: Vec<Bytes>,
        permit: Option<OwnedSemaphorePermit>,
    },
    /// The subscription ended with this error.
    End(Error),
}

/// What a subscription asks the sidecar for.
#[derive(Debug, Clone)]
pub(crate) struct SubscribeRequest {
    pub(crate) topic: String,
    pub(crate) group: Option<String>,
    pub(crate) partitions: Vec<u32>,
    /// `None`: the sidecar's default (earliest for a group, else latest).
    pub(crate) start: Option<StartAt>,
    pub(crate) max_bytes: u32,
}

impl SubscribeRequest {
    /// The original request.
    pub(crate) fn body(&self) -> request::Body {
        request::Body::Subscribe(Subscribe {
            topic: self.topic.clone(),
            group: self.group.clone(),
            partitions: self.partitions.clone(),
            start: self.start.map(StartAt::wire),
            max_bytes: self.max_bytes,
        })
    }

    /// The request to join the group again after a lost stream: from the earliest offset
    /// where the group has committed nothing, so that nothing published while the stream
    /// was down is skipped (what was delivered already is filtered out by position).
    fn rejoin(&self) -> request::Body {
        request::Body::Subscribe(Subscribe {
            topic: self.topic.clone(),
            group: self.group.clone(),
            partitions: Vec::new(),
            start: Some(subscribe::Start::Earliest(Earliest {})),
            max_bytes: self.max_bytes,
        })
    }

    /// A request for one partition from `offset` on (resubscribing without a group).
    fn resume(&self, partition: u32, offset: u64) -> request::Body {
        request::Body::Subscribe(Subscribe {
            topic: self.topic.clone(),
            group: None,
            partitions: vec![partition],
            start: Some(subscribe::Start::Offset(offset)),
            max_bytes: self.max_bytes,
        })
    }
}

/// A subscription stream whose first frame, the assignment, has been read.
pub(crate) struct OpenStream {
    send: SendStream,
    recv: RecvStream,
    reader: FrameReader,
    pub(crate) assignment: Assignment,
}

/// Opens a subscription stream, retrying retriable failures until `deadline`.
pub(crate) async fn open(
    link: &Link,
    body: request::Body,
    topic: &str,
    deadline: Instant,
) -> Result<OpenStream, Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match open_once(link, body.clone(), deadline).await {
            Ok(stream) => return Ok(stream),
            Err(error) => error,
        };
        let wait = link.backoff(attempt);
        if !error.is_retriable() || Instant::now() + wait >= deadline {
            return Err(error.into_error(Some(topic), None));
        }
        tracing::debug!(
            topic,
            attempt,
            ?error,
            ?wait,
            "subscribe failed, will retry"
        );
        tokio::time::sleep(wait).await;
    }
}

async fn open_once(
    link: &Link,
    body: request::Body,
    deadline: Instant,
) -> Result<OpenStream, CallError> {
    let started = Instant::now();
    let exchange = async {
        let (send, mut recv) = link.open(body, deadline).await?;
        let mut reader = FrameReader::default();
        let first = reader
            .next(&mut recv)
            .await
            .map_err(CallError::Failed)?
            .ok_or(CallError::Failed(Error::Transport(
                TransportError::NoAnswer,
            )))?;
        match first.into_result().map_err(CallError::Refused)? {
            Some(response::Body::Assignment(assignment)) => Ok(OpenStream {
                send,
                recv,
                reader,
                assignment,
            }),
            other => Err(CallError::Failed(Error::Protocol {
                message: format!(
                    "subscribe answered with {}",
                    sender_body_name(other.as_ref())
                ),
            })),
        }
    };
    tokio::time::timeout_at(deadline.into(), exchange)
        .await
        .unwrap_or_else(|_| {
            Err(CallError::Failed(Error::Timeout {
                operation: "subscribe".into(),
                after: deadline.saturating_duration_since(started),
                last_error: None,
            }))
        })
}

/// What the reader shares with its pumps.
pub(crate) struct Reader {
    pub(crate) link: Arc<Link>,
    pub(crate) request: SubscribeRequest,
    pub(crate) request_timeout: std::time::Duration,
    pub(crate) queue: mpsc::UnboundedSender<Frame>,
    pub(crate) budget: Arc<Semaphore>,
    pub(crate) budget_bytes: u32,
    /// Per partition: the offset after the last batch queued (or where it was assigned).
    read_up_to: Mutex<HashMap<u32, u64>>,
}

enum StreamEnd {
    /// The subscription is being closed, or nobody reads the queue any more.
    Stopped,
    /// The stream was lost; resubscribe these partitions.
    Retry { error: Error, partitions: Vec<u32> },
    /// The subscription is over.
    Fatal(Error),
}

impl Reader {
    pub(crate) fn new(
        link: Arc<Link>,
        request: SubscribeRequest,
        request_timeout: std::time::Duration,
        queue: mpsc::UnboundedSender<Frame>,
        budget_bytes: u32,
    ) -> Self {
        Self {
            link,
            request,
            request_timeout,
            queue,
            budget: Arc::new(Semaphore::new(budget_bytes as usize)),
            budget_bytes,
            read_up_to: Mutex::new(HashMap::new()),
        }
    }

    /// Reads `first` (and its successors) until `stop` is set or the subscription ends.
    pub(crate) async fn run(self: Arc<Self>, first: OpenStream, mut stop: watch::Receiver<bool>) {
        let mut pumps = JoinSet::new();
        self.record_assignment(&first.assignment);
        pumps.spawn(Arc::clone(&self).pump(first, stop.clone()));
        let mut resubscribes = 0u32;
        let mut last_resubscribe = Instant::now();
        loop {
            let ended = tokio::select! {
                () = stopped(&mut stop) => break,
                joined = pumps.join_next() => match joined {
                    None => break,
                    Some(Ok(end)) => end,
                    Some(Err(error)) => StreamEnd::Fatal(Error::Protocol {
                        message: format!("subscription reader failed: {error}"),
                    }),
                },
            };
            match ended {
                StreamEnd::Stopped => {}
                StreamEnd::Fatal(error) => {
                    let _ = self.queue.send(Frame::End(error));
                    break;
                }
                StreamEnd::Retry { error, partitions } => {
                    // Streams that fail right after they open must not spin: back off more
                    // the more often it happens in a row.
                    resubscribes = if last_resubscribe.elapsed() < RESUBSCRIBE_CALM {
                        resubscribes + 1
                    } else {
                        1
                    };
                    last_resubscribe = Instant::now();
                    let wait = self.link.backoff(resubscribes);
                    tracing::debug!(topic = %self.request.topic, %error, ?partitions, ?wait, "subscription stream lost, resubscribing");
                    tokio::select! {
                        () = stopped(&mut stop) => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                    let bodies = if self.request.group.is_some() {
                        vec![self.request.rejoin()]
                    } else {
                        let read_up_to = self
                            .read_up_to
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        partitions
                            .iter()
                            .map(|&p| {
                                self.request
                                    .resume(p, read_up_to.get(&p).copied().unwrap_or(0))
                            })
                            .collect()
                    };
                    for body in bodies {
                        let deadline = Instant::now() + self.request_timeout;
                        let opened = tokio::select! {
                            () = stopped(&mut stop) => break,
                            opened = open(&self.link, body, &self.request.topic, deadline) => opened,
                        };
                        match opened {
                            Ok(stream) => {
                                tracing::debug!(topic = %self.request.topic, "resubscribed");
                                self.record_assignment(&stream.assignment);
                                if self
                                    .queue
                                    .send(Frame::Assignment(stream.assignment.clone()))
                                    .is_err()
                                {
                                    break;
                                }
                                pumps.spawn(Arc::clone(&self).pump(stream, stop.clone()));
                            }
                            Err(error) => {
                                let _ = self.queue.send(Frame::End(error));
                                pumps.abort_all();
                                return;
                            }
                        }
                    }
                }
            }
        }
        // Each pump finishes its stream when it sees `stop`; give them a moment to do so.
        let _ = tokio::time::timeout(STOP_GRACE, async {
            while pumps.join_next().await.is_some() {}
        })
        .await;
    }

    /// Moves the frames of one stream into the queue.
    async fn pump(
        self: Arc<Self>,
        stream: OpenStream,
        mut stop: watch::Receiver<bool>,
    ) -> StreamEnd {
        let OpenStream {
            mut send,
            mut recv,
            mut reader,
            assignment,
        } = stream;
        let mut partitions: Vec<u32> = assignment.partitions.iter().map(|p| p.partition).collect();
        let stopped_end = |send: &mut SendStream| {
            let _ = send.finish();
            StreamEnd::Stopped
        };
        loop {
            let next = tokio::select! {
                () = stopped(&mut stop) => return stopped_end(&mut send),
                next = reader.next(&mut recv) => next,
            };
            let response = match next {
                Ok(Some(response)) => response,
                Ok(None) => {
                    return StreamEnd::Retry {
                        error: Error::Transport(TransportError::NoAnswer),
                        partitions,
                    };
                }
                Err(error) if error.is_retriable() => {
                    return StreamEnd::Retry { error, partitions };
                }
                Err(error) => return StreamEnd::Fatal(error),
            };
            let frame = match response.into_result() {
                Ok(Some(response::Body::SubscriptionBatches(frame))) => {
                    let size: usize = frame.batches.iter().map(Bytes::len).sum();
                    let permits = u32::try_from(size)
                        .unwrap_or(u32::MAX)
                        .min(self.budget_bytes);
                    let permit = tokio::select! {
                        () = stopped(&mut stop) => return stopped_end(&mut send),
                        permit = Arc::clone(&self.budget).acquire_many_owned(permits) => permit.ok(),
                    };
                    self.record_batches(frame.partition, &frame.batches);
                    Frame::Batches {
                        partition: frame.partition,
                        high_watermark: frame.high_watermark,
                        batches: frame.batches,
                        permit,
                    }
                }
                Ok(Some(response::Body::Assignment(assignment))) => {
                    partitions = assignment.partitions.iter().map(|p| p.partition).collect();
                    self.record_assignment(&assignment);
                    Frame::Assignment(assignment)
                }
                // A body this version does not know: ignored, as the protocol asks.
                Ok(_) => continue,
                Err(refusal) if refusal.is_retriable() => {
                    return StreamEnd::Retry {
                        error: Error::from_response(&refusal, Some(&self.request.topic), None),
                        partitions,
                    };
                }
                Err(refusal) => {
                    let partition = match partitions[..] {
                        [only] => Some(only),
                        _ => None,
                    };
                    return StreamEnd::Fatal(Error::from_response(
                        &refusal,
                        Some(&self.request.topic),
                        partition,
                    ));
                }
            };
            if self.queue.send(frame).is_err() {
                return stopped_end(&mut send);
            }
        }
    }

    fn record_assignment(&self, assignment: &Assignment) {
        let mut read_up_to = self
            .read_up_to
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for assigned in &assignment.partitions {
            let offset = read_up_to
                .entry(assigned.partition)
                .or_insert(assigned.offset);
            *offset = (*offset).max(assigned.offset);
        }
    }

    fn record_batches(&self, partition: u32, batches: &[Bytes]) {
        let Some(end) = batches
            .last()
            .and_then(|last| BatchHeader::parse(last).ok())
            .map(|header| header.base_offset.saturating_add(header.offset_count()))
        else {
            return;
        };
        let mut read_up_to = self
            .read_up_to
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let offset = read_up_to.entry(partition).or_insert(end);
        *offset = (*offset).max(end);
    }
}

/// Resolves once `stop` is set or its sender is gone.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// How long a stopping reader waits for its streams to finish.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Resubscribes closer together than this count as one run, backing off more each time.
const RESUBSCRIBE_CALM: std::time::Duration = std::time::Duration::from_secs(5);
