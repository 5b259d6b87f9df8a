//! Subscriptions to partitions this sidecar holds no replica of: relayed from a replica's
//! sidecar, by long-polling fetches passed on to it (peer call `client`).
//!
//! ```text
//!   subscriber ◀── frames ── this sidecar ── Fetch (waits up to 5 s for data) ──▶ a replica's
//!                                        ◀── committed batches ────────────────  sidecar
//! ```
//!
//! The replica answers with what it has committed, so the relay never passes on an event that
//! a new leader could truncate. A replica that cannot answer is replaced by the next one of
//! the partition's replica set; the relay keeps trying (a fetch at most every
//! [`RETRY_PAUSE`]) for as long as the subscription lasts.

use std::sync::Arc;
use std::time::Duration;

use sidestream_log::batch::BatchHeader;
use sidestream_proto::Response;
use sidestream_proto::v1::{self, ErrorCode, response};
use tokio::sync::{Semaphore, mpsc};

use super::Shared;
use super::handlers::{self, error};
use super::subscription::Frame;

/// Longest one relayed fetch waits for new data at the replica.
const POLL_WAIT_MS: u32 = 5_000;

/// How long the relay waits before it asks again after a replica could not answer.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The log start offset and high watermark of `topic`/`partition`, as a replica's sidecar
/// tells them.
pub(super) async fn bounds(
    shared: &Shared,
    topic: &str,
    partition: u32,
) -> Result<(u64, u64), Box<Response>> {
    let probe = v1::Fetch {
        topic: topic.to_owned(),
        partition,
        offset: 0,
        max_bytes: 1,
        max_wait_ms: 0,
    };
    // An offset below the log start is answered OFFSET_OUT_OF_RANGE with the bounds in its
    // body: both answers carry them.
    let body = match handlers::fetch(shared, probe, 0).await {
        Ok(body) => Some(body),
        Err(refused) if refused.code == i32::from(ErrorCode::OffsetOutOfRange) => refused.body,
        Err(refused) => return Err(refused),
    };
    match body {
        Some(response::Body::Fetch(result)) => Ok((result.log_start_offset, result.high_watermark)),
        _ => Err(error(
            ErrorCode::Unavailable,
            format!("no replica of {topic}/{partition} told its offsets"),
        )),
    }
}

/// One relayed partition of a subscription.
pub(super) struct Relayed {
    pub(super) shared: Arc<Shared>,
    pub(super) topic: String,
    pub(super) partition: u32,
}

impl Relayed {
    /// Relays the partition from `offset` on and queues its frames; ends when the
    /// subscription does, or after queueing a final error.
    pub(super) async fn run(
        self,
        mut offset: u64,
        max_bytes: usize,
        budget: Arc<Semaphore>,
        frames: mpsc::Sender<Frame>,
    ) {
        let wanted = u32::try_from(max_bytes).unwrap_or(u32::MAX);
        loop {
            let fetch = v1::Fetch {
                topic: self.topic.clone(),
                partition: self.partition,
                offset,
                max_bytes: wanted,
                max_wait_ms: POLL_WAIT_MS,
            };
            match handlers::fetch(&self.shared, fetch, 0).await {
                Ok(response::Body::Fetch(result)) if !result.batches.is_empty() => {
                    let Some(next) = result
                        .batches
                        .last()
                        .and_then(|last| BatchHeader::parse(last).ok())
                        .map(|header| header.next_offset())
                    else {
                        let message = format!(
                            "{}/{}: a replica sent an unreadable batch",
                            self.topic, self.partition
                        );
                        let _ = frames
                            .send((*error(ErrorCode::CorruptBatch, message), None))
                            .await;
                        return;
                    };
                    offset = next;
                    // Read budget is taken for what came, after the long poll: an idle relayed
                    // partition holds none of it.
                    let size: usize = result.batches.iter().map(bytes::Bytes::len).sum();
                    let size = u32::try_from(size).unwrap_or(u32::MAX).clamp(1, wanted);
                    let Ok(permit) = Arc::clone(&budget).acquire_many_owned(size).await else {
                        return;
                    };
                    let frame = Response::ok(response::Body::SubscriptionBatches(
                        v1::SubscriptionBatches {
                            partition: self.partition,
                            high_watermark: result.high_watermark,
                            batches: result.batches,
                        },
                    ));
                    if frames.send((frame, Some(permit))).await.is_err() {
                        return;
                    }
                }
                // Nothing new within the poll: ask again.
                Ok(_) => {}
                Err(refused) if refused.code == i32::from(ErrorCode::OffsetOutOfRange) => {
                    let _ = frames.send((*refused, None)).await;
                    return;
                }
                Err(refused) => {
                    tracing::debug!(topic = %self.topic, partition = self.partition, reason = %refused.message, "relayed fetch failed; asking again");
                    if frames.is_closed() {
                        return;
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }
}
