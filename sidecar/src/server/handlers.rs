//! One request, one response: every request kind except `subscribe`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sidestream_log::batch::{BatchHeader, RaftLogId, ValidBatch};
use sidestream_log::{AppendError, ReadError};
use sidestream_proto::v1::{
    self, Acks, ErrorCode, PartitionDescription, TopicDescription, TopicSummary, request, response,
};
use sidestream_proto::{Response, TopicName};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::Shared;
use super::routing::{MAX_PASSES, RETRY_PAUSE, pass_on, try_again};
use super::topic_admin::{create_replicated, delete_replicated};
use crate::cluster::{LeaveError, matched};
use crate::groups::GroupError;
use crate::topics::{
    Ack, Kind, Partition, PublishError, PublishOutcome, Routed, Topic, TopicSpec, TopicsError,
};

/// Longest a fetch waits for new batches, whatever it asks for.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);
/// Longest a cluster member that does not know a topic waits to catch up with the metadata.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);
/// The longest one attempt to pass a publish on to a replica may take when this sidecar holds
/// none (it cannot see a dead replica replaced).
const REMOTE_ATTEMPT: Duration = Duration::from_millis(1500);
/// How much longer than its own wait a fetch passed on to another sidecar may take.
const PASS_ON_GRACE: Duration = Duration::from_secs(5);
/// Bytes of batches a fetch or subscription frame returns when it names no limit.
pub(super) const DEFAULT_MAX_BYTES: usize = 1 << 20;
/// The most bytes of batches in one answer, so that it fits the default frame limit.
pub(super) const MAX_BYTES_CAP: usize = 16 << 20;

/// A handler's result: the body of an `OK` response, or an error response.
pub(super) type Answer = Result<response::Body, Box<Response>>;

pub(super) fn error(code: ErrorCode, message: impl Into<String>) -> Box<Response> {
    Box::new(Response::error(code, message))
}

/// Looks a topic up by name, answering bad and unknown names.
pub(super) fn find_topic(shared: &Shared, name: &str) -> Result<Arc<Topic>, Box<Response>> {
    let name = checked_name(name)?;
    shared.topics.get(name.as_str()).ok_or_else(|| {
        error(
            ErrorCode::UnknownTopic,
            format!("topic {:?} does not exist", name.as_str()),
        )
    })
}

/// Looks a topic up; a cluster member that does not know it waits (up to
/// [`CATCH_UP_WAIT`]) until it has caught up with the cluster's metadata, and answers
/// `LEADER_NOT_AVAILABLE` (ask again) if it has not by then.
pub(super) async fn find_topic_ready(
    shared: &Shared,
    name: &str,
) -> Result<Arc<Topic>, Box<Response>> {
    let unknown = match find_topic(shared, name) {
        Ok(topic) => return Ok(topic),
        Err(unknown) => unknown,
    };
    let Some(cluster) = &shared.cluster else {
        return Err(unknown);
    };
    if unknown.code != i32::from(ErrorCode::UnknownTopic) {
        return Err(unknown);
    }
    let deadline = Instant::now() + CATCH_UP_WAIT;
    loop {
        if let Some(topic) = shared.topics.get(name) {
            return Ok(topic);
        }
        if cluster.metadata_caught_up()
            && shared.topics.reconciled() >= cluster.state().applied_offset
        {
            return Err(unknown);
        }
        if Instant::now() >= deadline {
            return Err(error(
                ErrorCode::LeaderNotAvailable,
                format!(
                    "this sidecar is catching up with the cluster's metadata and does not know topic {name:?} yet; ask again"
                ),
            ));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

pub(super) fn find_partition(topic: &Topic, number: u32) -> Result<Arc<Partition>, Box<Response>> {
    topic.partition(number).cloned().ok_or_else(|| {
        error(
            ErrorCode::UnknownPartition,
            format!(
                "topic {:?} has no partition {number}; it has {} (0 to {})",
                topic.spec().name,
                topic.partitions().len(),
                topic.partitions().len().saturating_sub(1)
            ),
        )
    })
}

pub(super) fn checked_name(name: &str) -> Result<TopicName, Box<Response>> {
    name.parse::<TopicName>()
        .map_err(|e| error(ErrorCode::from(&e), e.to_string()))
}

/// Group names follow the topic naming rules.
pub(super) fn checked_group(group: &str) -> Result<(), Box<Response>> {
    group.parse::<TopicName>().map(drop).map_err(|e| {
        error(
            ErrorCode::InvalidRequest,
            format!(
                "group name: {}",
                e.to_string().replacen("topic name", "name", 1)
            ),
        )
    })
}

pub(super) async fn create_topic(shared: &Shared, request: v1::CreateTopic, passes: u32) -> Answer {
    if let Some(cluster) = &shared.cluster {
        return create_replicated(shared, cluster, request, passes).await;
    }
    let name = checked_name(&request.name)?;
    let spec = TopicSpec::from_request(
        name.into_string(),
        &request,
        &shared.config.topic_defaults,
        1,
    )
    .map_err(|e| error(ErrorCode::InvalidTopicConfig, e.0))?;
    match shared.topics.create(spec).await {
        Ok(topic) => {
            tracing::info!(topic = %topic.spec().name, partitions = topic.spec().partitions, "topic created");
            Ok(response::Body::CreateTopic(v1::CreateTopicResult {
                topic: Some(describe(shared, &topic)),
            }))
        }
        Err(TopicsError::AlreadyExists(name)) => Err(error(
            ErrorCode::TopicAlreadyExists,
            format!("topic {name:?} already exists"),
        )),
        Err(e) => Err(error(ErrorCode::StorageError, e.to_string())),
    }
}

pub(super) async fn delete_topic(shared: &Shared, request: v1::DeleteTopic, passes: u32) -> Answer {
    if let Some(cluster) = &shared.cluster {
        return delete_replicated(shared, cluster, request, passes).await;
    }
    let name = checked_name(&request.name)?;
    find_topic(shared, name.as_str())?;
    // Tombstones first: a crash after them and before the deletion leaves a topic without
    // group offsets, never group offsets without their topic.
    shared
        .groups
        .forget_topic(name.as_str())
        .await
        .map_err(|e| error(ErrorCode::StorageError, e.to_string()))?;
    match shared.topics.delete(name.as_str()).await {
        Ok(()) => {
            tracing::info!(topic = name.as_str(), "topic deleted");
            Ok(response::Body::DeleteTopic(v1::DeleteTopicResult {}))
        }
        Err(TopicsError::Unknown(name)) => Err(error(
            ErrorCode::UnknownTopic,
            format!("topic {name:?} does not exist"),
        )),
        Err(e) => Err(error(ErrorCode::StorageError, e.to_string())),
    }
}

pub(super) fn list_topics(shared: &Shared) -> response::Body {
    let topics = shared
        .topics
        .all()
        .iter()
        .map(|topic| TopicSummary {
            name: topic.spec().name.clone(),
            partitions: topic.spec().partitions,
            replication_factor: topic.spec().replication_factor,
        })
        .collect();
    response::Body::ListTopics(v1::ListTopicsResult { topics })
}

pub(super) fn describe_topic(shared: &Shared, request: &v1::DescribeTopic) -> Answer {
    let topic = find_topic(shared, &request.name)?;
    Ok(response::Body::DescribeTopic(v1::DescribeTopicResult {
        topic: Some(describe(shared, &topic)),
    }))
}

pub(super) fn describe(shared: &Shared, topic: &Topic) -> TopicDescription {
    TopicDescription {
        name: topic.spec().name.clone(),
        partitions: topic
            .partitions()
            .iter()
            .map(|p| describe_partition(shared, p))
            .collect(),
        replication_factor: topic.spec().replication_factor,
        config: Some(topic.spec().to_proto()),
    }
}

fn describe_partition(shared: &Shared, partition: &Partition) -> PartitionDescription {
    let node = shared.config.node_id;
    let log_start_offset = partition.log().map_or(0, |log| log.state().start_offset);
    let (leader, replicas, in_sync_replicas) = match partition.kind() {
        Kind::Local(_) => (Some(node), vec![node], vec![node]),
        Kind::Replicated(replicated) => {
            let metrics = replicated.replica().raft.metrics().borrow().clone();
            let replicas = replicated.replicas();
            let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
            // Only the leader knows how far each replica has come; a replica is in sync once it
            // votes and has the leader's log.
            let in_sync = match &metrics.replication {
                Some(_) if metrics.current_leader == Some(node) => {
                    let last = metrics.last_log_index;
                    replicas
                        .iter()
                        .copied()
                        .filter(|id| voters.contains(id))
                        .filter(|&id| {
                            id == node || matched(&metrics, id).is_some_and(|m| Some(m) >= last)
                        })
                        .collect()
                }
                _ => Vec::new(),
            };
            (metrics.current_leader, replicas, in_sync)
        }
        Kind::Remote(replicas) => (None, replicas.clone(), Vec::new()),
    };
    PartitionDescription {
        partition: partition.number(),
        leader,
        log_start_offset,
        high_watermark: partition.high_watermark(),
        replicas,
        in_sync_replicas,
    }
}

pub(super) fn metadata(shared: &Shared) -> response::Body {
    let topics = shared
        .topics
        .all()
        .iter()
        .map(|topic| describe(shared, topic))
        .collect();
    let Some(cluster) = &shared.cluster else {
        return response::Body::Metadata(v1::MetadataResult {
            node_id: shared.config.node_id,
            nodes: vec![v1::Node {
                id: shared.config.node_id,
                client_address: shared.advertised.clone(),
                peer_address: String::new(),
                voter: false,
            }],
            topics,
            metadata_leader: 0,
        });
    };
    let state = cluster.state();
    let voters = cluster.voters();
    let nodes = state
        .nodes
        .iter()
        .map(|(&id, node)| v1::Node {
            id,
            client_address: node.client_address.clone(),
            peer_address: node.peer_address.clone(),
            voter: voters.contains(&id),
        })
        .collect();
    response::Body::Metadata(v1::MetadataResult {
        node_id: shared.config.node_id,
        nodes,
        topics,
        metadata_leader: cluster.metadata_leader().unwrap_or(0),
    })
}

pub(super) async fn decommission_node(shared: &Shared, request: &v1::DecommissionNode) -> Answer {
    let Some(cluster) = &shared.cluster else {
        return Err(error(
            ErrorCode::InvalidRequest,
            "this sidecar runs alone, not in a cluster: there is no node to decommission",
        ));
    };
    match cluster.decommission(request.node_id).await {
        Ok(left) => Ok(response::Body::DecommissionNode(
            v1::DecommissionNodeResult {
                voters: left.voters,
            },
        )),
        Err(LeaveError::UnknownNode(message) | LeaveError::LastVoter(message)) => {
            Err(error(ErrorCode::InvalidRequest, message))
        }
        Err(LeaveError::Unavailable(message)) => Err(error(ErrorCode::LeaderNotAvailable, message)),
    }
}

pub(super) async fn publish(shared: &Shared, request: v1::Publish, passes: u32) -> Answer {
    let topic = find_topic_ready(shared, &request.topic).await?;
    let partition = find_partition(&topic, request.partition)?;
    let acks = Acks::try_from(request.acks).map_err(|_| {
        error(
            ErrorCode::UnsupportedVersion,
            format!("acks value {} is unknown to this sidecar", request.acks),
        )
    })?;
    let batch: Bytes = request.batch.clone();
    if batch.is_empty() {
        return Err(error(ErrorCode::InvalidRequest, "publish carries no batch"));
    }
    let max = shared.config.log.max_batch_bytes;
    if batch.len() > max {
        return Err(error(
            ErrorCode::BatchTooLarge,
            format!(
                "batch of {} bytes is larger than the limit of {max} bytes",
                batch.len()
            ),
        ));
    }
    let valid = ValidBatch::new(&batch).map_err(|e| {
        error(
            ErrorCode::CorruptBatch,
            format!("batch for {}/{}: {e}", request.topic, request.partition),
        )
    })?;
    if valid.header().control {
        return Err(error(
            ErrorCode::InvalidRequest,
            "control batches are written by the sidecar, not by clients",
        ));
    }
    let timeout = match request.timeout_ms {
        0 => shared.config.publish_timeout,
        ms => Duration::from_millis(u64::from(ms)),
    };
    let span = super::trace::append_span(&request.topic, request.partition, &valid);
    append(shared, &partition, request, &valid, acks, timeout, passes)
        .instrument(span)
        .await
}

/// The rest of [`publish`], once the batch is checked: appends it to the partition here, or
/// to its replicated log.
async fn append(
    shared: &Shared,
    partition: &Arc<Partition>,
    request: v1::Publish,
    valid: &ValidBatch<'_>,
    acks: Acks,
    timeout: Duration,
    passes: u32,
) -> Answer {
    if !matches!(partition.kind(), Kind::Local(_)) {
        let ack = match acks {
            Acks::None => Ack::None,
            Acks::Leader => Ack::Leader,
            Acks::All | Acks::Unspecified => Ack::All,
        };
        let deadline = Instant::now() + timeout;
        let header = *valid.header();
        return publish_replicated(shared, partition, request, &header, ack, deadline, passes)
            .await;
    }
    let wait_commit = matches!(acks, Acks::All | Acks::Unspecified);
    let outcome = partition
        .publish(valid, wait_commit, Instant::now() + timeout)
        .await
        .map_err(|e| publish_error(&request.topic, request.partition, &e))?;
    let (base_offset, next_offset) = match (acks, outcome.offsets) {
        (Acks::None, _) | (_, None) => (None, None),
        (_, Some((base, next))) => (Some(base), Some(next)),
    };
    Ok(response::Body::Publish(v1::PublishResult {
        partition: request.partition,
        base_offset,
        next_offset,
        duplicate: outcome.duplicate,
    }))
}

/// The answer of a publish, from its outcome.
fn published(partition: u32, acks_none: bool, outcome: PublishOutcome) -> response::Body {
    let (base_offset, next_offset) = match (acks_none, outcome.offsets) {
        (true, _) | (_, None) => (None, None),
        (false, Some((base, next))) => (Some(base), Some(next)),
    };
    response::Body::Publish(v1::PublishResult {
        partition,
        base_offset,
        next_offset,
        duplicate: outcome.duplicate,
    })
}

/// Publishes to a replicated partition: through this sidecar's replica if it leads the
/// partition, or passed on to the leader (or, holding no replica, to a replica's sidecar),
/// following leadership changes until `deadline`.
#[allow(clippy::too_many_arguments)]
async fn publish_replicated(
    shared: &Shared,
    partition: &Partition,
    request: v1::Publish,
    header: &BatchHeader,
    ack: Ack,
    deadline: Instant,
    passes: u32,
) -> Answer {
    let topic = request.topic.clone();
    let number = request.partition;
    if header.raft != RaftLogId::default() || header.base_offset != 0 {
        return Err(error(
            ErrorCode::InvalidRequest,
            "a published batch's base offset, Raft term and Raft index are written by the sidecar and must be 0",
        ));
    }
    let mut last_failure = String::from("no sidecar answered");
    // Set once an attempt may have written the batch (a copy proposed here, or passed on and
    // not answered): from then on a failure is answered TIMEOUT, whose outcome is unknown,
    // never as a refusal, which would let the client number the batch anew.
    let mut uncertain = false;
    for attempt in 0_usize.. {
        let address = match partition.kind() {
            Kind::Replicated(replicated) => {
                let routed = replicated
                    .publish(number, request.batch.clone(), header, ack, deadline)
                    .await;
                match routed {
                    Ok(Routed::Here(outcome)) => {
                        return Ok(published(number, ack == Ack::None, outcome));
                    }
                    Ok(Routed::Leader { address, proposed }) => {
                        uncertain |= proposed;
                        address
                    }
                    Err(e) if uncertain => {
                        return Err(error(
                            ErrorCode::Timeout,
                            format!(
                                "publish to {topic}/{number}: {e}; an earlier attempt may have written it"
                            ),
                        ));
                    }
                    Err(e) => return Err(publish_error(&topic, number, &e)),
                }
            }
            Kind::Remote(replicas) => {
                let Some(address) = replica_address(shared, replicas, attempt) else {
                    return Err(error(
                        unless_uncertain(uncertain, ErrorCode::LeaderNotAvailable),
                        format!("no replica of {topic}/{number} is registered with the cluster"),
                    ));
                };
                address
            }
            Kind::Local(_) => return Err(unreachable_local()),
        };
        if passes >= MAX_PASSES {
            return Err(error(
                unless_uncertain(uncertain, ErrorCode::NotLeader),
                format!("this sidecar does not lead {topic}/{number}; its leader is at {address}"),
            ));
        }
        let Some(answered) =
            pass_publish(shared, partition, &address, &request, passes, deadline).await
        else {
            uncertain = true;
            last_failure = format!("the leader at {address} was replaced while it had the publish");
            continue;
        };
        match answered {
            Ok(response) if !try_again(&response) => {
                if uncertain && !is_ok(&response) {
                    return Err(error(
                        ErrorCode::Timeout,
                        format!(
                            "publish to {topic}/{number}: {}; an earlier attempt may have written it",
                            response.message
                        ),
                    ));
                }
                return passed_back(response);
            }
            Ok(response) => last_failure = response.message,
            Err(e) => {
                // The leader may have taken it and its answer been lost.
                uncertain = true;
                last_failure = e.to_string();
            }
        }
        if Instant::now() + RETRY_PAUSE >= deadline {
            break;
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    Err(error(
        ErrorCode::Timeout,
        format!("publish to {topic}/{number} was not acknowledged in time: {last_failure}"),
    ))
}

/// Passes a publish on to the leader at `address`; `None` when a replica here saw another
/// leader take over first. A leader that died does not answer (its connection fails only when
/// QUIC gives it up): a replica here sees the new leader sooner, and the publish goes there.
async fn pass_publish(
    shared: &Shared,
    partition: &Partition,
    address: &str,
    request: &v1::Publish,
    passes: u32,
    deadline: Instant,
) -> Option<Result<Response, super::routing::PassError>> {
    let Some(cluster) = &shared.cluster else {
        return Some(Ok(*unreachable_local()));
    };
    // Holding no replica, this sidecar cannot see a dead replica replaced: each attempt gets
    // a slice of the time, and the next one goes to the next replica.
    let deadline = match partition.kind() {
        Kind::Remote(_) => deadline.min(Instant::now() + REMOTE_ATTEMPT),
        _ => deadline,
    };
    let mut request = request.clone();
    request.timeout_ms = remaining_ms(deadline);
    let body = request::Body::Publish(request);
    let call = pass_on(cluster, address, body, passes + 1, deadline);
    match partition.kind() {
        Kind::Replicated(replicated) => tokio::select! {
            answered = call => Some(answered),
            () = replicated.leader_moved_from(address) => None,
        },
        _ => Some(call.await),
    }
}

/// `refusal`, or `TIMEOUT` once an attempt may have written the batch (a refusal would let
/// the client number it anew).
fn unless_uncertain(uncertain: bool, refusal: ErrorCode) -> ErrorCode {
    if uncertain {
        ErrorCode::Timeout
    } else {
        refusal
    }
}

fn is_ok(response: &Response) -> bool {
    response.code == i32::from(ErrorCode::Ok)
}

/// The peer address of one of `replicas` (the `attempt`-th in turn) that is registered.
pub(super) fn replica_address(shared: &Shared, replicas: &[u64], attempt: usize) -> Option<String> {
    let state = shared.cluster.as_ref()?.state();
    let known: Vec<&str> = replicas
        .iter()
        .filter_map(|id| state.nodes.get(id).map(|n| n.peer_address.as_str()))
        .collect();
    known
        .get(attempt % known.len().max(1))
        .map(|a| (*a).to_owned())
}

/// What is left of `deadline`, in whole milliseconds (at least 1).
pub(super) fn remaining_ms(deadline: Instant) -> u32 {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .as_millis();
    u32::try_from(left).unwrap_or(u32::MAX).max(1)
}

/// A passed-on request's response as this sidecar's answer.
pub(super) fn passed_back(response: Response) -> Answer {
    match (ErrorCode::try_from(response.code), response.body) {
        (Ok(ErrorCode::Ok), Some(body)) => Ok(body),
        (_, body) => Err(Box::new(Response { body, ..response })),
    }
}

/// A local partition is never routed; a sidecar without a cluster has none other.
pub(super) fn unreachable_local() -> Box<Response> {
    error(
        ErrorCode::InternalError,
        "a partition of a sidecar run alone was routed as a replicated one",
    )
}

fn publish_error(topic: &str, partition: u32, e: &PublishError) -> Box<Response> {
    let code = match e {
        PublishError::Append(AppendError::TooLarge { .. }) => ErrorCode::BatchTooLarge,
        PublishError::Append(AppendError::Invalid(_)) => ErrorCode::CorruptBatch,
        PublishError::Append(AppendError::Poisoned | AppendError::Io { .. })
        | PublishError::Storage { .. } => ErrorCode::StorageError,
        PublishError::Append(_) => ErrorCode::InternalError,
        PublishError::OutOfOrder { .. } => ErrorCode::OutOfOrderSequence,
        PublishError::Stale { .. } => ErrorCode::InvalidRequest,
        PublishError::Fenced { .. } => ErrorCode::ProducerFenced,
        PublishError::Timeout { .. }
        | PublishError::Unacknowledged { .. }
        | PublishError::Expired => ErrorCode::Timeout,
        PublishError::NoLeader => ErrorCode::LeaderNotAvailable,
        PublishError::Stopped => ErrorCode::Unavailable,
    };
    if code == ErrorCode::StorageError || code == ErrorCode::InternalError {
        tracing::error!(topic, partition, error = %e, "publish failed");
    }
    error(code, format!("publish to {topic}/{partition}: {e}"))
}

pub(super) async fn fetch(shared: &Shared, request: v1::Fetch, passes: u32) -> Answer {
    let topic = find_topic_ready(shared, &request.topic).await?;
    let partition = find_partition(&topic, request.partition)?;
    let max_bytes = max_bytes(request.max_bytes);
    let wait = Duration::from_millis(u64::from(request.max_wait_ms)).min(MAX_FETCH_WAIT);
    if let Kind::Remote(replicas) = partition.kind() {
        return fetch_remote(shared, request, replicas, wait, passes).await;
    }
    let mut committed = partition.watch_committed();
    let deadline = Instant::now() + wait;
    loop {
        let result = |batches| v1::FetchResult {
            high_watermark: partition.high_watermark(),
            log_start_offset: partition.log().map_or(0, |log| log.state().start_offset),
            batches,
        };
        match partition.read(request.offset, max_bytes) {
            Ok(fetched) if !fetched.batches.is_empty() || wait.is_zero() => {
                return Ok(response::Body::Fetch(result(fetched.batches)));
            }
            Ok(_) => {
                let changed = committed.changed();
                if tokio::time::timeout_at(deadline, changed).await.is_err() {
                    return Ok(response::Body::Fetch(result(Vec::new())));
                }
            }
            // A replica behind its leader (or a consumer that read from one ahead of it) has
            // not committed the offset yet: nothing to read here so far, as at its end.
            Err(ReadError::OffsetOutOfRange { offset, end, .. })
                if offset > end && not_committed_yet(&partition, offset) =>
            {
                let changed = committed.changed();
                if wait.is_zero() || tokio::time::timeout_at(deadline, changed).await.is_err() {
                    return Ok(response::Body::Fetch(result(Vec::new())));
                }
            }
            Err(ReadError::OffsetOutOfRange { offset, start, end }) => {
                return Err(Box::new(Response {
                    code: ErrorCode::OffsetOutOfRange.into(),
                    message: format!(
                        "offset {offset} of {}/{} is outside {start}..={end}",
                        request.topic, request.partition
                    ),
                    body: Some(response::Body::Fetch(result(Vec::new()))),
                }));
            }
            Err(e) => return Err(read_failure(&request.topic, request.partition, &e)),
        }
    }
}

/// Fetches from a partition this sidecar holds no replica of: passed on to its replicas in
/// turn, each serving the data it has committed.
async fn fetch_remote(
    shared: &Shared,
    request: v1::Fetch,
    replicas: &[u64],
    wait: Duration,
    passes: u32,
) -> Answer {
    let (topic, number) = (request.topic.clone(), request.partition);
    let cluster = shared.cluster.as_ref().ok_or_else(unreachable_local)?;
    if passes >= MAX_PASSES {
        return Err(error(
            ErrorCode::NotLeader,
            format!("this sidecar holds no replica of {topic}/{number}"),
        ));
    }
    let deadline = Instant::now() + wait + PASS_ON_GRACE;
    let mut last_failure = String::from("no replica is registered with the cluster");
    for attempt in 0..replicas.len() {
        let Some(address) = replica_address(shared, replicas, attempt) else {
            break;
        };
        let body = request::Body::Fetch(request.clone());
        match pass_on(cluster, &address, body, passes + 1, deadline).await {
            Ok(response) if !try_again(&response) => return passed_back(response),
            Ok(response) => last_failure = response.message,
            Err(e) => last_failure = e.to_string(),
        }
    }
    Err(error(
        ErrorCode::Unavailable,
        format!("no replica of {topic}/{number} answered: {last_failure}"),
    ))
}

/// Whether `offset`, above this replica's high watermark, may yet be committed here: on a
/// follower (it may lag its leader) always; on the leader only if its log holds it (an offset
/// past the leader's log end is out of range).
fn not_committed_yet(partition: &Partition, offset: u64) -> bool {
    let Kind::Replicated(replicated) = partition.kind() else {
        return false;
    };
    let replica = replicated.replica();
    let leads = replica.raft.metrics().borrow().current_leader == Some(replica.raft_id());
    !leads || offset <= replica.log.state().next_offset
}

pub(super) fn read_failure(topic: &str, partition: u32, e: &ReadError) -> Box<Response> {
    tracing::error!(topic, partition, error = %e, "read failed");
    let code = match e {
        ReadError::Corrupt { .. } => ErrorCode::CorruptBatch,
        _ => ErrorCode::StorageError,
    };
    error(code, format!("reading {topic}/{partition}: {e}"))
}

pub(super) fn max_bytes(asked: u32) -> usize {
    match asked {
        0 => DEFAULT_MAX_BYTES,
        n => usize::try_from(n)
            .unwrap_or(MAX_BYTES_CAP)
            .min(MAX_BYTES_CAP),
    }
}

pub(super) async fn commit_offset(
    shared: &Shared,
    request: v1::CommitOffset,
    passes: u32,
) -> Answer {
    checked_group(&request.group)?;
    let topic = find_topic_ready(shared, &request.topic).await?;
    let partition = find_partition(&topic, request.partition)?;
    if !matches!(partition.kind(), Kind::Local(_)) {
        let (group, generation) = (request.group.clone(), request.generation);
        let answer = super::group_offsets::commit_offset(shared, &partition, request, passes).await;
        // A later member took the partition over on another sidecar: this one's member is
        // done (a member of this sidecar would have been stopped when the later one joined).
        if let (Err(refused), Some(generation)) = (&answer, generation)
            && refused.code == i32::from(ErrorCode::StaleGeneration)
        {
            shared.groups.evict(&group, &topic.spec().name, generation);
        }
        return answer;
    }
    let high_watermark = partition.high_watermark();
    if request.offset > high_watermark {
        return Err(error(
            ErrorCode::OffsetOutOfRange,
            format!(
                "offset {} of {}/{} is past the high watermark {high_watermark}",
                request.offset, request.topic, request.partition
            ),
        ));
    }
    shared
        .groups
        .commit(
            &request.group,
            &request.topic,
            request.partition,
            request.offset,
            request.generation,
        )
        .await
        .map_err(|e| match e {
            GroupError::StaleGeneration { .. } => error(ErrorCode::StaleGeneration, e.to_string()),
            e => error(ErrorCode::StorageError, e.to_string()),
        })?;
    // The topic was deleted (and maybe created again) while the commit was on its way: the
    // offset belongs to a topic that is gone.
    let same = shared
        .topics
        .get(&request.topic)
        .is_some_and(|now| Arc::ptr_eq(&now, &topic));
    if !same {
        if let Err(e) = shared
            .groups
            .forget_partition(&request.group, &request.topic, request.partition)
            .await
        {
            tracing::error!(error = %e, "cannot withdraw a commit for a deleted topic");
        }
        return Err(error(
            ErrorCode::UnknownTopic,
            format!("topic {:?} was deleted", request.topic),
        ));
    }
    Ok(response::Body::CommitOffset(v1::CommitOffsetResult {}))
}

pub(super) async fn fetch_committed_offsets(
    shared: &Shared,
    request: &v1::FetchCommittedOffsets,
    passes: u32,
) -> Answer {
    checked_group(&request.group)?;
    checked_name(&request.topic)?;
    if shared.cluster.is_some() {
        let topic = find_topic_ready(shared, &request.topic).await?;
        if topic
            .partitions()
            .iter()
            .any(|p| !matches!(p.kind(), Kind::Local(_)))
        {
            return super::group_offsets::fetch_committed_offsets(shared, &topic, request, passes)
                .await;
        }
    }
    let offsets = shared
        .groups
        .committed(&request.group, &request.topic)
        .ok_or_else(|| {
            error(
                ErrorCode::UnknownGroup,
                format!(
                    "group {:?} has no member and no committed offsets in topic {:?}",
                    request.group, request.topic
                ),
            )
        })?;
    Ok(response::Body::FetchCommittedOffsets(
        v1::FetchCommittedOffsetsResult {
            offsets: offsets
                .into_iter()
                .map(|(partition, offset)| v1::CommittedOffset { partition, offset })
                .collect(),
        },
    ))
}
