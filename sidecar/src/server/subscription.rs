//! Subscriptions: one long-lived stream on which the sidecar pushes committed batches.
//!
//! One reader task per assigned partition reads the log from the partition's position and
//! waits on its high watermark when it has caught up; the frames go through a small channel
//! to the one task that writes the stream. QUIC flow control stops the writer when the client
//! reads slowly, the channel fills, and the readers stop: a slow consumer slows only itself.

use std::sync::Arc;

use bytes::BytesMut;
use quinn::{RecvStream, SendStream};
use sidestream_log::ReadError;
use sidestream_proto::v1::{self, ErrorCode, response, subscribe};
use sidestream_proto::{DEFAULT_MAX_FRAME_SIZE, FrameCodec, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::Shared;
use super::frames::{quic_code, write_response};
use super::handlers::{
    checked_group, error, find_partition, find_topic_ready, max_bytes, read_failure,
};
use super::relay;
use crate::groups::Membership;
use crate::topics::{Kind, Partition, Topic};

/// Longest the final frame of a subscription waits for the client's flow control.
const END_FRAME_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Frames waiting for the writer, per subscription.
const FRAMES_QUEUED: usize = 4;

/// Frames' worth of bytes (of the subscription's frame size) that may be read and not yet
/// written, whatever the number of partitions.
const BUDGET_FRAMES: usize = 2;

/// A frame for the writer, with the budget its bytes hold until they are written.
pub(super) type Frame = (Response, Option<OwnedSemaphorePermit>);

/// Serves one subscription until the client finishes the stream, the sidecar shuts down, the
/// topic is deleted, or a newer group member takes over.
pub(super) async fn serve(
    shared: Arc<Shared>,
    request: v1::Subscribe,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let codec = FrameCodec::<Response>::new(DEFAULT_MAX_FRAME_SIZE);
    let start = match start(&shared, &request).await {
        Ok(start) => start,
        Err(answer) => {
            shared.metrics.responded(answer.code);
            let _ = write_response(&mut send, &codec, &answer).await;
            let _ = send.finish();
            return;
        }
    };
    // A subscription's first answer, its assignment; its batches are counted as delivered.
    shared.metrics.responded(ErrorCode::Ok.into());
    let Start {
        topic,
        assigned,
        membership,
    } = start;
    let generation = membership.as_ref().map_or(0, |m| m.generation);
    let assignment = v1::Assignment {
        generation,
        partitions: assigned
            .iter()
            .map(|(p, offset)| v1::AssignedPartition {
                partition: p.number(),
                offset: *offset,
            })
            .collect(),
    };
    tracing::debug!(topic = %topic.spec().name, group = request.group.as_deref(), partitions = assigned.len(), "subscription started");
    let end = if write_response(
        &mut send,
        &codec,
        &Response::ok(response::Body::Assignment(assignment)),
    )
    .await
    .is_err()
    {
        None
    } else {
        push(
            &shared,
            &topic,
            assigned,
            membership.as_ref(),
            request.max_bytes,
            &mut send,
            &mut recv,
            &codec,
        )
        .await
    };
    if let (Some(group), Some(m)) = (&request.group, &membership) {
        shared.groups.leave(group, &topic.spec().name, m.generation);
    }
    if let Some(end) = end {
        shared.metrics.responded(end.code);
        // A client that reads nothing cannot hold the end (or a shutdown) up for long.
        let _ = tokio::time::timeout(END_FRAME_WAIT, write_response(&mut send, &codec, &end)).await;
    }
    let _ = send.finish();
    let _ = recv.stop(quic_code(ErrorCode::Ok));
}

struct Start {
    topic: Arc<Topic>,
    assigned: Vec<(Arc<Partition>, u64)>,
    membership: Option<Membership>,
}

async fn start(shared: &Shared, request: &v1::Subscribe) -> Result<Start, Box<Response>> {
    let topic = find_topic_ready(shared, &request.topic).await?;
    let partitions: Vec<Arc<Partition>> = if request.partitions.is_empty() {
        topic.partitions().to_vec()
    } else {
        if request.group.is_some() {
            return Err(error(
                ErrorCode::InvalidRequest,
                "partitions must be empty in a group subscription: the group assigns them",
            ));
        }
        let mut wanted = vec![false; topic.partitions().len()];
        for &number in &request.partitions {
            find_partition(&topic, number)?;
            wanted[number as usize] = true;
        }
        topic
            .partitions()
            .iter()
            .filter(|p| wanted[p.number() as usize])
            .cloned()
            .collect()
    };
    let replicated = partitions
        .iter()
        .any(|p| !matches!(p.kind(), Kind::Local(_)));
    let mut claimed = None;
    let committed = match &request.group {
        Some(group) if replicated => {
            checked_group(group)?;
            let (generation, committed) = claim(shared, group, &request.topic, &partitions).await?;
            claimed = Some(generation);
            committed
        }
        Some(group) => {
            checked_group(group)?;
            shared
                .groups
                .committed(group, &request.topic)
                .unwrap_or_default()
        }
        None => std::collections::BTreeMap::default(),
    };
    let mut assigned = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let (log_start, high_watermark) = match partition.log() {
            Some(log) => (log.state().start_offset, partition.high_watermark()),
            None => relay::bounds(shared, &request.topic, partition.number()).await?,
        };
        let offset = match committed.get(&partition.number()) {
            // A committed offset that retention has passed restarts at the log start. One
            // claimed from a replicated partition's leader may be above the high watermark of
            // the replica read here, which lags: reading waits there for it.
            Some(&offset) if claimed.is_some() => offset.max(log_start),
            Some(&offset) => offset.max(log_start).min(high_watermark),
            None => start_offset(&topic, &partition, (log_start, high_watermark), request)?,
        };
        assigned.push((partition, offset));
    }
    // Join last, so that a refused subscription does not evict the current member.
    let membership = request.group.as_ref().map(|group| match claimed {
        Some(generation) => shared.groups.join_as(group, &request.topic, generation),
        None => shared.groups.join(group, &request.topic),
    });
    Ok(Start {
        topic,
        assigned,
        membership,
    })
}

/// How many times a group member claims its partitions with a newer generation when a later
/// one (given by another sidecar) holds one of them.
const CLAIM_ROUNDS: usize = 3;

/// Claims every partition of a replicated topic for a new member of `group`, in a new
/// generation (a later one when another sidecar gave one); the generation, and each
/// partition's committed offset as the claim found it.
async fn claim(
    shared: &Shared,
    group: &str,
    topic: &str,
    partitions: &[Arc<Partition>],
) -> Result<(u64, std::collections::BTreeMap<u32, u64>), Box<Response>> {
    let claimant = shared.cluster.as_ref().map_or(0, |c| c.node_id());
    let mut generation = shared.groups.new_generation(0);
    let mut round = 0;
    'claiming: loop {
        round += 1;
        let mut committed = std::collections::BTreeMap::new();
        for partition in partitions {
            let request = v1::ClaimPartition {
                group: group.to_owned(),
                topic: topic.to_owned(),
                partition: partition.number(),
                generation,
                claimant,
            };
            match super::group_offsets::claim_partition(shared, request, 0).await {
                Ok(response::Body::ClaimPartition(result)) => {
                    if let Some(offset) = result.offset {
                        committed.insert(partition.number(), offset);
                    }
                }
                Ok(_) => {
                    return Err(error(
                        ErrorCode::InternalError,
                        "a claim was answered as another request",
                    ));
                }
                Err(refused) if refused.code == i32::from(ErrorCode::StaleGeneration) => {
                    let Some(response::Body::ClaimPartition(held)) = &refused.body else {
                        return Err(refused);
                    };
                    if round >= CLAIM_ROUNDS {
                        return Err(refused);
                    }
                    generation = shared.groups.new_generation(held.generation);
                    continue 'claiming;
                }
                Err(refused) => return Err(refused),
            }
        }
        return Ok((generation, committed));
    }
}

fn start_offset(
    topic: &Topic,
    partition: &Partition,
    (log_start, high_watermark): (u64, u64),
    request: &v1::Subscribe,
) -> Result<u64, Box<Response>> {
    match &request.start {
        // Without a start, a group begins at the earliest offset (it must not miss events
        // published before its first member came up); a lone subscription at the latest.
        Some(subscribe::Start::Earliest(_)) => Ok(log_start),
        None if request.group.is_some() => Ok(log_start),
        Some(subscribe::Start::Latest(_)) | None => Ok(high_watermark),
        Some(subscribe::Start::Offset(offset)) => {
            if (log_start..=high_watermark).contains(offset) {
                Ok(*offset)
            } else {
                Err(error(
                    ErrorCode::OffsetOutOfRange,
                    format!(
                        "offset {offset} of {}/{} is outside {log_start}..={high_watermark}",
                        topic.spec().name,
                        partition.number()
                    ),
                ))
            }
        }
        Some(subscribe::Start::TimestampMs(ms)) => {
            let Some(log) = partition.log() else {
                return Err(error(
                    ErrorCode::InvalidRequest,
                    format!(
                        "this sidecar holds no replica of {}/{} and cannot look a time up in it: subscribe from a time through the sidecar of one of its replicas",
                        topic.spec().name,
                        partition.number()
                    ),
                ));
            };
            match log.offset_for_timestamp(*ms) {
                Ok(found) => Ok(found.map_or(high_watermark, |o| o.min(high_watermark))),
                Err(e) => Err(read_failure(&topic.spec().name, partition.number(), &e)),
            }
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site, all of it the subscription's state"
)]
async fn push(
    shared: &Arc<Shared>,
    topic: &Arc<Topic>,
    assigned: Vec<(Arc<Partition>, u64)>,
    membership: Option<&Membership>,
    max_bytes_asked: u32,
    send: &mut SendStream,
    recv: &mut RecvStream,
    codec: &FrameCodec<Response>,
) -> Option<Box<Response>> {
    let (frames_tx, mut frames) = mpsc::channel::<Frame>(FRAMES_QUEUED);
    let mut readers = JoinSet::new();
    let max_bytes = max_bytes(max_bytes_asked);
    // Bytes read and not yet written, over all partitions: what a stalled consumer can pin.
    let budget = Arc::new(Semaphore::new(BUDGET_FRAMES * max_bytes));
    for (partition, offset) in assigned {
        let frames = frames_tx.clone();
        let name = topic.spec().name.clone();
        let budget = Arc::clone(&budget);
        if let Kind::Remote(_) = partition.kind() {
            let relayed = relay::Relayed {
                shared: Arc::clone(shared),
                topic: name,
                partition: partition.number(),
            };
            readers.spawn(relayed.run(offset, max_bytes, budget, frames));
        } else {
            readers.spawn(read_partition(
                name, partition, offset, max_bytes, budget, frames,
            ));
        }
    }
    drop(frames_tx);
    let evicted = membership.map_or_else(|| watch::channel(false).1, |m| m.evicted.clone());
    let stop = stop_signal(
        shared.shutdown.clone(),
        topic.watch_deleted(),
        evicted,
        topic.spec().name.clone(),
    );
    tokio::pin!(stop);
    let mut client = BytesMut::new();
    loop {
        tokio::select! {
            frame = frames.recv() => {
                let (frame, _permit) = frame?;
                let last = frame.code != i32::from(ErrorCode::Ok);
                // A write waits for the client's flow control; the end of the subscription
                // must not.
                tokio::select! {
                    written = write_response(send, codec, &frame) => {
                        if written.is_err() {
                            return None;
                        }
                        if let Some(response::Body::SubscriptionBatches(batches)) = &frame.body {
                            shared.metrics.delivered(
                                &topic.spec().name,
                                batches.partition,
                                &batches.batches,
                            );
                        }
                    }
                    end = &mut stop => return Some(end),
                }
                if last {
                    return None;
                }
            }
            chunk = recv.read_chunk(1024, true) => match chunk {
                // Version 1 clients write nothing after Subscribe; anything else is ignored.
                Ok(Some(chunk)) => client.extend_from_slice(&chunk.bytes),
                // The client finished (unsubscribed) or reset the stream.
                Ok(None) | Err(_) => return None,
            },
            end = &mut stop => return Some(end),
        }
        client.clear();
    }
}

/// Resolves to the final frame when the sidecar shuts down, the topic is deleted or a newer
/// group member takes the topic over.
async fn stop_signal(
    mut shutdown: watch::Receiver<bool>,
    mut deleted: watch::Receiver<bool>,
    mut evicted: watch::Receiver<bool>,
    name: String,
) -> Box<Response> {
    tokio::select! {
        () = super::shutting_down(&mut shutdown) => {
            error(ErrorCode::Unavailable, "the sidecar is shutting down")
        }
        () = became_true(&mut deleted) => {
            error(ErrorCode::UnknownTopic, format!("topic {name:?} was deleted"))
        }
        () = became_true(&mut evicted) => error(
            ErrorCode::StaleGeneration,
            format!("a newer member of the group took topic {name:?} over"),
        ),
    }
}

/// Waits until the flag is set; forever if its sender is gone while it is unset.
async fn became_true(flag: &mut watch::Receiver<bool>) {
    if flag.wait_for(|set| *set).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Reads one partition from `offset` on and queues its frames; ends when the subscription
/// does, or after queueing a final error.
async fn read_partition(
    topic: String,
    partition: Arc<Partition>,
    mut offset: u64,
    max_bytes: usize,
    budget: Arc<Semaphore>,
    frames: mpsc::Sender<Frame>,
) {
    let mut committed = partition.watch_committed();
    let wanted = u32::try_from(max_bytes).unwrap_or(u32::MAX);
    loop {
        // Wait, holding no budget, until there is something to read.
        let failed = {
            let state = committed.borrow_and_update();
            if state.high_watermark <= offset && state.failed.is_none() {
                None
            } else {
                Some(state.failed.clone())
            }
        };
        match failed {
            None => {
                if committed.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Some(Some(reason)) if partition.high_watermark() <= offset => {
                let message = format!("{topic}/{}: {reason}", partition.number());
                let _ = frames
                    .send((*error(ErrorCode::StorageError, message), None))
                    .await;
                return;
            }
            Some(_) => {}
        }
        let Ok(permit) = Arc::clone(&budget).acquire_many_owned(wanted).await else {
            return;
        };
        match partition.read(offset, max_bytes) {
            Ok(fetched) if fetched.batches.is_empty() => {}
            Ok(fetched) => {
                offset = fetched.next_offset;
                let frame = Response::ok(response::Body::SubscriptionBatches(
                    v1::SubscriptionBatches {
                        partition: partition.number(),
                        high_watermark: partition.high_watermark(),
                        batches: fetched.batches,
                    },
                ));
                // The permit travels with the frame until it is written.
                if frames.send((frame, Some(permit))).await.is_err() {
                    return;
                }
            }
            Err(ReadError::OffsetOutOfRange { offset, start, end }) => {
                let message = format!(
                    "{topic}/{}: offset {offset} is outside {start}..={end} (retention removed it)",
                    partition.number()
                );
                let _ = frames
                    .send((*error(ErrorCode::OffsetOutOfRange, message), None))
                    .await;
                return;
            }
            Err(e) => {
                let _ = frames
                    .send((*read_failure(&topic, partition.number(), &e), None))
                    .await;
                return;
            }
        }
    }
}
