//! The sender task: the IO driver of the [`Accumulator`](super::accumulator::Accumulator).
//!
//! One per client. It loops: poll the accumulator for batches due now, start one `Publish`
//! request per batch (each on a stream of its own, so many are in flight), then wait for
//! whichever comes first: an answer, a wake from a publishing caller, or the next timer
//! (linger, retry backoff). Answers go back into the accumulator, which completes receipts
//! and frees buffer space. After `close`, it ends once everything buffered is answered.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt as _;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use sidestream_proto::v1::{Publish, request, response};

use super::accumulator::{PartitionRef, Transmit};
use super::partition_queue::Outcome;
use super::producer::Producer;
use crate::Error;
use crate::client::Link;
use crate::error::TransportError;

/// Runs until the producer is closed and drained.
///
/// The requests in flight are futures of this task, not tasks of their own: an answer wakes
/// only this task, which settles it at once (a spawned request would wake its own task, then
/// this one, often on another thread: two thread wake-ups per batch instead of one).
pub(crate) async fn run(producer: Arc<Producer>) {
    let mut sends = FuturesUnordered::new();
    let mut transmits = Vec::new();
    loop {
        let (timeout, finished) = {
            let mut accumulator = producer.lock();
            accumulator.set_connection(producer.link.current_connection());
            let released = accumulator.poll_transmit(Instant::now(), &mut transmits);
            producer.release(released);
            (
                accumulator.next_timeout(),
                accumulator.is_closing() && accumulator.is_drained(),
            )
        };
        for transmit in transmits.drain(..) {
            let key = (transmit.at, transmit.id);
            let send = AssertUnwindSafe(send(Arc::clone(&producer.link), transmit));
            sends.push(send.catch_unwind().map(move |sent| settle(key, sent)));
        }
        if finished && sends.is_empty() {
            break;
        }
        let sleep = async {
            match timeout {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            Some(outcome) = sends.next(), if !sends.is_empty() => {
                let mut outcomes = vec![outcome];
                while let Some(Some(outcome)) = sends.next().now_or_never() {
                    outcomes.push(outcome);
                }
                let now = Instant::now();
                let mut accumulator = producer.lock();
                let released: usize = outcomes
                    .into_iter()
                    .map(|(at, id, outcome)| accumulator.handle_outcome(at, id, outcome, now))
                    .sum();
                drop(accumulator);
                producer.release(released);
            }
            () = producer.wake.notified() => {}
            () = sleep => {}
        }
    }
    tracing::debug!("publish sender finished");
}

/// The outcome of a finished send; one that panicked counts as a lost connection, so its batch
/// is retried.
fn settle(
    (at, id): (PartitionRef, u64),
    sent: Result<Outcome, Box<dyn Any + Send>>,
) -> (PartitionRef, u64, Outcome) {
    let outcome = sent.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        tracing::warn!(
            batch = id,
            message,
            "publish request panicked; the batch is retried"
        );
        Outcome::Retry(Error::Transport(TransportError::NoAnswer))
    });
    (at, id, outcome)
}

/// Sends one batch, one attempt, and classifies the answer.
async fn send(link: Arc<Link>, transmit: Transmit) -> Outcome {
    let Transmit {
        topic,
        partition,
        acks,
        bytes,
        deadline,
        only_on,
        ..
    } = transmit;
    let body = request::Body::Publish(Publish {
        topic: topic.to_string(),
        partition,
        acks: acks.wire().into(),
        batch: bytes,
        // The link sets it to the attempt's window.
        timeout_ms: 0,
    });
    match link.call_on(body, deadline, only_on).await {
        Ok((Some(response::Body::Publish(result)), connection)) => {
            if result.duplicate {
                tracing::debug!(%topic, partition, "batch was a duplicate of an earlier append");
            }
            Outcome::Acked(result.base_offset, connection)
        }
        Ok((other, _)) => Outcome::Fail(Error::Protocol {
            message: format!(
                "publish to topic {topic:?} partition {partition} answered with {}",
                body_name(other.as_ref())
            ),
        }),
        Err(error) if error.is_retriable() => {
            Outcome::Retry(error.into_error(Some(&topic), Some(partition)))
        }
        Err(error) => Outcome::Fail(error.into_error(Some(&topic), Some(partition))),
    }
}

/// Names a response body for error messages.
pub(crate) fn body_name(body: Option<&response::Body>) -> &'static str {
    match body {
        None => "no body",
        Some(response::Body::CreateTopic(_)) => "create_topic",
        Some(response::Body::DeleteTopic(_)) => "delete_topic",
        Some(response::Body::ListTopics(_)) => "list_topics",
        Some(response::Body::DescribeTopic(_)) => "describe_topic",
        Some(response::Body::Publish(_)) => "publish",
        Some(response::Body::Fetch(_)) => "fetch",
        Some(response::Body::Assignment(_)) => "assignment",
        Some(response::Body::CommitOffset(_)) => "commit_offset",
        Some(response::Body::FetchCommittedOffsets(_)) => "fetch_committed_offsets",
        Some(response::Body::Metadata(_)) => "metadata",
        Some(response::Body::SubscriptionBatches(_)) => "subscription_batches",
        Some(response::Body::DecommissionNode(_)) => "decommission_node",
        Some(response::Body::ClaimPartition(_)) => "claim_partition",
    }
}
