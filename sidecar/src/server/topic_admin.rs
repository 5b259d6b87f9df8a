//! Creating and deleting replicated topics: through the metadata leader, which places a new
//! topic's replicas and records the change in the metadata log.
//!
//! ```text
//!   CreateTopic ─▶ any sidecar ─(not the metadata leader: passed on)─▶ metadata leader:
//!                  check the name, place replicas, propose CreateTopic, wait for it applied
//!             ◀─ each sidecar answers once its own topics have the new one (so a publish
//!                right after the answer finds it)
//! ```

use std::time::Duration;

use sidestream_proto::v1::{self, ErrorCode, request, response};
use tokio::time::Instant;

use super::Shared;
use super::handlers::{Answer, checked_name, describe, error, passed_back};
use super::routing::{MAX_PASSES, RETRY_PAUSE, pass_on, try_again};
use crate::cluster::{ClusterMember, MetadataCommand, NotProposed};
use crate::topics::TopicSpec;

/// Longest a topic creation or deletion takes before it is answered with an error.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// The replication factor of a topic created without one, at most the cluster's size.
const DEFAULT_REPLICATION_FACTOR: u32 = 3;

/// How a metadata change went at the metadata leader.
enum Proposed {
    /// Committed and applied here, at this metadata offset.
    Done(u64),
    /// Answered by the metadata leader elsewhere (its answer).
    Passed(Answer),
}

/// Proposes `command` if this sidecar leads the metadata group, or passes `body` on to the
/// leader, trying again until `deadline` while there is no leader.
async fn propose_or_pass(
    cluster: &ClusterMember,
    command: &MetadataCommand,
    body: request::Body,
    passes: u32,
    deadline: Instant,
) -> Result<Proposed, Box<sidestream_proto::Response>> {
    loop {
        let last_failure;
        match cluster.propose(command).await {
            Ok(offset) => return Ok(Proposed::Done(offset)),
            Err(NotProposed::Leader(address)) if passes < MAX_PASSES => {
                match pass_on(cluster, &address, body.clone(), passes + 1, deadline).await {
                    Ok(response) if !try_again(&response) => {
                        return Ok(Proposed::Passed(passed_back(response)));
                    }
                    Ok(response) => last_failure = response.message,
                    Err(e) => last_failure = e.to_string(),
                }
            }
            Err(NotProposed::Leader(address)) => {
                return Err(error(
                    ErrorCode::NotLeader,
                    format!("this sidecar does not lead the cluster's metadata; {address} does"),
                ));
            }
            Err(NotProposed::Unavailable(reason)) => last_failure = reason,
        }
        if Instant::now() + RETRY_PAUSE >= deadline {
            return Err(error(
                ErrorCode::LeaderNotAvailable,
                format!("the cluster's metadata cannot be changed now: {last_failure}"),
            ));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

pub(super) async fn create_replicated(
    shared: &Shared,
    cluster: &ClusterMember,
    mut request: v1::CreateTopic,
    passes: u32,
) -> Answer {
    let name = checked_name(&request.name)?.into_string();
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    let state = cluster.state();
    let nodes = u32::try_from(state.nodes.len()).unwrap_or(u32::MAX);
    if request.replication_factor == 0 {
        request.replication_factor = DEFAULT_REPLICATION_FACTOR.min(nodes.max(1));
    }
    let spec =
        TopicSpec::from_request(name.clone(), &request, &shared.config.topic_defaults, nodes)
            .map_err(|e| error(ErrorCode::InvalidTopicConfig, e.0))?;
    if state.topics.contains_key(&name) {
        return Err(already_exists(&name));
    }
    let id = uuid::Uuid::now_v7().simple().to_string();
    let replicas = state
        .place(spec.partitions, spec.replication_factor)
        .ok_or_else(|| {
            error(
                ErrorCode::InvalidTopicConfig,
                format!(
                    "replication factor {} is larger than the cluster's {nodes} registered nodes",
                    spec.replication_factor
                ),
            )
        })?;
    let command = MetadataCommand::CreateTopic {
        spec,
        id: id.clone(),
        replicas,
    };
    let body = request::Body::CreateTopic(request.clone());
    match propose_or_pass(cluster, &command, body, passes, deadline).await? {
        Proposed::Passed(Err(refused)) => return Err(refused),
        Proposed::Passed(Ok(_)) => {}
        Proposed::Done(offset) => {
            if !cluster.wait_applied(offset, deadline).await {
                return Err(not_yet(&name, "created"));
            }
            // Two creations of one name may both pass the check above: the first recorded wins.
            let winner = cluster.state().topics.get(&name).map(|t| t.id.clone());
            if winner.as_deref() != Some(id.as_str()) {
                return Err(already_exists(&name));
            }
            tracing::info!(topic = %name, "replicated topic created");
        }
    }
    let topics = &shared.topics;
    let here = topics
        .wait_for(&name, deadline, |topic| {
            topic.is_some_and(|t| t.id().is_some())
        })
        .await;
    match topics.get(&name) {
        Some(topic) if here => Ok(response::Body::CreateTopic(v1::CreateTopicResult {
            topic: Some(describe(shared, &topic)),
        })),
        _ => Err(not_yet(&name, "created")),
    }
}

pub(super) async fn delete_replicated(
    shared: &Shared,
    cluster: &ClusterMember,
    request: v1::DeleteTopic,
    passes: u32,
) -> Answer {
    let name = checked_name(&request.name)?.into_string();
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    let Some(id) = cluster.state().topics.get(&name).map(|t| t.id.clone()) else {
        return Err(error(
            ErrorCode::UnknownTopic,
            format!("topic {name:?} does not exist"),
        ));
    };
    let command = MetadataCommand::DeleteTopic {
        name: name.clone(),
        id: id.clone(),
    };
    let body = request::Body::DeleteTopic(request.clone());
    match propose_or_pass(cluster, &command, body, passes, deadline).await? {
        Proposed::Passed(Err(refused)) => return Err(refused),
        Proposed::Passed(Ok(_)) => {}
        Proposed::Done(offset) => {
            if !cluster.wait_applied(offset, deadline).await {
                return Err(not_yet(&name, "deleted"));
            }
            tracing::info!(topic = %name, "replicated topic deleted");
        }
    }
    shared
        .groups
        .forget_topic(&name)
        .await
        .map_err(|e| error(ErrorCode::StorageError, e.to_string()))?;
    let gone = shared
        .topics
        .wait_for(&name, deadline, |topic| {
            topic.is_none_or(|t| t.id() != Some(id.as_str()))
        })
        .await;
    if !gone {
        return Err(not_yet(&name, "deleted"));
    }
    Ok(response::Body::DeleteTopic(v1::DeleteTopicResult {}))
}

fn already_exists(name: &str) -> Box<sidestream_proto::Response> {
    error(
        ErrorCode::TopicAlreadyExists,
        format!("topic {name:?} already exists"),
    )
}

fn not_yet(name: &str, what: &str) -> Box<sidestream_proto::Response> {
    error(
        ErrorCode::Timeout,
        format!(
            "topic {name:?} was {what} in the cluster's metadata, but this sidecar has not caught up within {ADMIN_TIMEOUT:?}"
        ),
    )
}
