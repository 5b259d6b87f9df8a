//! Consumer groups in replicated topics: claims, commits and reads of committed offsets, each
//! answered by the partition's leader from the partition's Raft state
//! (`cluster::group_state`), and passed on to it like a publish from any other sidecar.
//!
//! ```text
//!   ClaimPartition / CommitOffset ─▶ leader here? ── yes ─▶ group command through Raft,
//!                                        │                  answered once applied
//!                                        no ─▶ passed on to the leader (holding no replica:
//!                                              to a replica's sidecar, which passes it on)
//!   FetchCommittedOffsets ─▶ each partition: its leader reads linearizably (a majority
//!                            confirms it leads, everything committed before is applied)
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sidestream_proto::Response;
use sidestream_proto::v1::{self, ErrorCode, request, response};
use tokio::time::Instant;

use super::Shared;
use super::handlers::{
    Answer, checked_group, error, find_partition, find_topic_ready, passed_back, replica_address,
    unreachable_local,
};
use super::routing::{MAX_PASSES, RETRY_PAUSE, pass_on, try_again};
use crate::cluster::{GroupApplied, GroupCommand, GroupPosition};
use crate::topics::{Kind, Led, Partition, PublishError, Topic};

/// Longest a group request waits for its partition's leader to answer.
const GROUP_WAIT: Duration = Duration::from_secs(10);

/// Generations a claim may name: from 1, below 2^63 (room above any a sidecar gives).
const GENERATIONS: std::ops::Range<u64> = 1..1 << 63;

/// Longest one attempt through a replica's sidecar takes, when this sidecar holds no replica
/// (a dead replica must not use the whole wait).
const REMOTE_ATTEMPT: Duration = Duration::from_millis(1500);

/// What a group request asks of the partition's leader.
enum Op<'a> {
    /// Propose a group command.
    Command(&'a GroupCommand),
    /// Read a group's position.
    Position(&'a str),
}

/// The leader's answer to an [`Op`].
enum Reply {
    Applied(GroupApplied),
    Position(Option<GroupPosition>),
}

/// Where a group request was answered.
enum Answered {
    /// By this sidecar, the leader.
    Here(Reply),
    /// By the sidecar it was passed on to: its answer.
    Passed(Answer),
}

/// Takes a partition over for a group member (`ClaimPartition`).
pub(super) async fn claim_partition(
    shared: &Shared,
    request: v1::ClaimPartition,
    passes: u32,
) -> Answer {
    checked_group(&request.group)?;
    let topic = find_topic_ready(shared, &request.topic).await?;
    let partition = find_partition(&topic, request.partition)?;
    let (name, number) = (request.topic.as_str(), request.partition);
    if matches!(partition.kind(), Kind::Local(_)) {
        return Err(error(
            ErrorCode::InvalidRequest,
            format!("{name} is not replicated: only partitions of replicated topics are claimed"),
        ));
    }
    if !GENERATIONS.contains(&request.generation) {
        return Err(error(
            ErrorCode::InvalidRequest,
            format!(
                "generation {} is outside {}..{}",
                request.generation, GENERATIONS.start, GENERATIONS.end
            ),
        ));
    }
    let command = GroupCommand::Claim {
        group: request.group.clone(),
        generation: request.generation,
        claimant: request.claimant,
    };
    let body = request::Body::ClaimPartition(request.clone());
    let op = Op::Command(&command);
    match to_leader(shared, &partition, (name, number), op, body, passes).await? {
        Answered::Here(Reply::Applied(GroupApplied::Done { offset })) => {
            Ok(response::Body::ClaimPartition(v1::ClaimPartitionResult {
                offset,
                generation: request.generation,
            }))
        }
        Answered::Here(Reply::Applied(GroupApplied::Stale { current })) => {
            Err(Box::new(Response {
                code: ErrorCode::StaleGeneration.into(),
                message: format!(
                    "group {:?} holds {name}/{number} in generation {current}; claim it above that, not in {}",
                    request.group, request.generation
                ),
                body: Some(response::Body::ClaimPartition(v1::ClaimPartitionResult {
                    offset: None,
                    generation: current,
                })),
            }))
        }
        Answered::Here(Reply::Applied(GroupApplied::Unreadable)) => Err(unreadable()),
        Answered::Here(
            Reply::Applied(GroupApplied::PastHighWatermark { .. }) | Reply::Position(_),
        ) => Err(mismatched()),
        Answered::Passed(answer) => answer,
    }
}

/// Commits a group's offset in a partition of a replicated topic (`CommitOffset`); the
/// leader refuses an offset past its high watermark (once it has waited a moment for it).
pub(super) async fn commit_offset(
    shared: &Shared,
    partition: &Arc<Partition>,
    request: v1::CommitOffset,
    passes: u32,
) -> Answer {
    let (name, number) = (request.topic.as_str(), request.partition);
    let command = GroupCommand::Commit {
        group: request.group.clone(),
        generation: request.generation,
        offset: request.offset,
    };
    let body = request::Body::CommitOffset(request.clone());
    let op = Op::Command(&command);
    match to_leader(shared, partition, (name, number), op, body, passes).await? {
        Answered::Here(Reply::Applied(GroupApplied::Done { .. })) => {
            Ok(response::Body::CommitOffset(v1::CommitOffsetResult {}))
        }
        Answered::Here(Reply::Applied(GroupApplied::Stale { current })) => Err(error(
            ErrorCode::StaleGeneration,
            format!(
                "group {:?} is not consuming {name}/{number} in generation {}; generation {current} holds it",
                request.group,
                request.generation.unwrap_or_default()
            ),
        )),
        Answered::Here(Reply::Applied(GroupApplied::PastHighWatermark { high_watermark })) => {
            Err(error(
                ErrorCode::OffsetOutOfRange,
                format!(
                    "offset {} of {name}/{number} is past the high watermark {high_watermark}",
                    request.offset
                ),
            ))
        }
        Answered::Here(Reply::Applied(GroupApplied::Unreadable)) => Err(unreadable()),
        Answered::Here(Reply::Position(_)) => Err(mismatched()),
        Answered::Passed(answer) => answer,
    }
}

/// A group's committed offsets in a replicated topic (`FetchCommittedOffsets`): of the one
/// partition asked for, or of every partition (each one's leader asked in turn).
pub(super) async fn fetch_committed_offsets(
    shared: &Shared,
    topic: &Topic,
    request: &v1::FetchCommittedOffsets,
    passes: u32,
) -> Answer {
    let numbers: Vec<u32> = match request.partition {
        Some(number) => vec![find_partition(topic, number)?.number()],
        None => topic.partitions().iter().map(|p| p.number()).collect(),
    };
    let mut offsets = BTreeMap::new();
    for number in numbers {
        let partition = find_partition(topic, number)?;
        let body = request::Body::FetchCommittedOffsets(v1::FetchCommittedOffsets {
            partition: Some(number),
            ..request.clone()
        });
        let op = Op::Position(&request.group);
        let place = (request.topic.as_str(), number);
        match to_leader(shared, &partition, place, op, body, passes).await? {
            Answered::Here(Reply::Position(position)) => {
                if let Some(offset) = position.and_then(|p| p.offset) {
                    offsets.insert(number, offset);
                }
            }
            Answered::Here(Reply::Applied(_)) => return Err(mismatched()),
            Answered::Passed(answer) => {
                if let response::Body::FetchCommittedOffsets(result) = answer? {
                    for committed in result.offsets {
                        offsets.insert(committed.partition, committed.offset);
                    }
                }
            }
        }
    }
    Ok(response::Body::FetchCommittedOffsets(
        v1::FetchCommittedOffsetsResult {
            offsets: offsets
                .into_iter()
                .map(|(partition, offset)| v1::CommittedOffset { partition, offset })
                .collect(),
        },
    ))
}

/// Answers `op` through the partition's leader: this sidecar's replica when it leads,
/// otherwise `body` passed on to the leader (or, holding no replica, to each replica's
/// sidecar in turn), following leadership changes for at most [`GROUP_WAIT`].
async fn to_leader(
    shared: &Shared,
    partition: &Arc<Partition>,
    (topic, number): (&str, u32),
    op: Op<'_>,
    body: request::Body,
    passes: u32,
) -> Result<Answered, Box<Response>> {
    let cluster = shared.cluster.as_ref().ok_or_else(unreachable_local)?;
    let deadline = Instant::now() + GROUP_WAIT;
    let mut last_failure = String::from("no sidecar answered");
    for attempt in 0_usize.. {
        let (address, attempt_deadline) = match partition.kind() {
            Kind::Replicated(replicated) => {
                let led = match op {
                    Op::Command(command) => replicated
                        .group_command(number, command, deadline)
                        .await
                        .map(|led| led.map(Reply::Applied)),
                    Op::Position(group) => replicated
                        .group_position(group, deadline)
                        .await
                        .map(|led| led.map(Reply::Position)),
                };
                match led.map_err(|e| group_error(topic, number, &e))? {
                    Led::Here(reply) => return Ok(Answered::Here(reply)),
                    Led::Elsewhere(address) => (address, deadline),
                }
            }
            Kind::Remote(replicas) => {
                let Some(address) = replica_address(shared, replicas, attempt) else {
                    return Err(error(
                        ErrorCode::LeaderNotAvailable,
                        format!("no replica of {topic}/{number} is registered with the cluster"),
                    ));
                };
                (address, deadline.min(Instant::now() + REMOTE_ATTEMPT))
            }
            Kind::Local(_) => return Err(unreachable_local()),
        };
        if passes >= MAX_PASSES {
            return Err(error(
                ErrorCode::NotLeader,
                format!("this sidecar does not lead {topic}/{number}; its leader is at {address}"),
            ));
        }
        let call = pass_on(
            cluster,
            &address,
            body.clone(),
            passes + 1,
            attempt_deadline,
        );
        let answered = match partition.kind() {
            // A leader that died does not answer; a replica here sees the next one sooner.
            Kind::Replicated(replicated) => tokio::select! {
                answered = call => Some(answered),
                () = replicated.leader_moved_from(&address) => None,
            },
            _ => Some(call.await),
        };
        match answered {
            Some(Ok(response)) if !try_again(&response) => {
                return Ok(Answered::Passed(passed_back(response)));
            }
            Some(Ok(response)) => last_failure = response.message,
            Some(Err(e)) => last_failure = e.to_string(),
            None => last_failure = format!("the leader at {address} was replaced"),
        }
        if Instant::now() + RETRY_PAUSE >= deadline {
            break;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    Err(error(
        ErrorCode::Timeout,
        format!("no leader of {topic}/{number} answered in time: {last_failure}"),
    ))
}

/// The partition's replicas could not read a group command the leader proposed (a bug).
fn unreadable() -> Box<Response> {
    error(
        ErrorCode::InternalError,
        "the partition could not read the group command it committed",
    )
}

/// The leader answered another kind of request than it was asked (a bug).
fn mismatched() -> Box<Response> {
    error(
        ErrorCode::InternalError,
        "a group request was answered as another kind",
    )
}

fn group_error(topic: &str, partition: u32, e: &PublishError) -> Box<Response> {
    let code = match e {
        PublishError::NoLeader => ErrorCode::LeaderNotAvailable,
        PublishError::Stopped => ErrorCode::Unavailable,
        PublishError::Storage { .. } => ErrorCode::StorageError,
        _ => ErrorCode::Timeout,
    };
    if code == ErrorCode::StorageError {
        tracing::error!(topic, partition, error = %e, "group command failed");
    }
    error(code, format!("group offsets of {topic}/{partition}: {e}"))
}
