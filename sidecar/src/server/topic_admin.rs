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

use sidestream_proto::Response;
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

/// Where a topic change is decided.
enum Decided {
    /// Here: this sidecar leads the metadata group.
    Here,
    /// By the metadata leader elsewhere, which answered this.
    There(Answer),
}

/// Finds the metadata leader: this sidecar, or another one, to which `body` is passed on
/// (unchanged: only the leader applies defaults and checks, with the freshest metadata).
/// Tries again until `deadline` while there is no leader or it cannot be reached.
async fn route(
    cluster: &ClusterMember,
    body: &request::Body,
    passes: u32,
    deadline: Instant,
) -> Result<Decided, Box<Response>> {
    loop {
        let last_failure = match cluster.metadata_leader_address() {
            Ok(None) => return Ok(Decided::Here),
            Ok(Some(address)) if passes < MAX_PASSES => {
                match pass_on(cluster, &address, body.clone(), passes + 1, deadline).await {
                    Ok(response) if !try_again(&response) => {
                        return Ok(Decided::There(passed_back(response)));
                    }
                    Ok(response) => response.message,
                    Err(e) => e.to_string(),
                }
            }
            Ok(Some(address)) => {
                return Err(error(
                    ErrorCode::NotLeader,
                    format!("this sidecar does not lead the cluster's metadata; {address} does"),
                ));
            }
            Err(reason) => reason,
        };
        if Instant::now() + RETRY_PAUSE >= deadline {
            return Err(error(
                ErrorCode::LeaderNotAvailable,
                format!("the cluster's metadata cannot be changed now: {last_failure}"),
            ));
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Proposes `command` on this sidecar, the metadata leader; the metadata offset after it, or
/// `None` when leadership moved meanwhile (the caller routes again).
async fn propose_here(
    cluster: &ClusterMember,
    command: &MetadataCommand,
    deadline: Instant,
) -> Result<Option<u64>, Box<Response>> {
    match cluster.propose(command).await {
        Ok(offset) => {
            if cluster.wait_applied(offset, deadline).await {
                Ok(Some(offset))
            } else {
                Err(error(
                    ErrorCode::Timeout,
                    "the change was committed but not applied here in time",
                ))
            }
        }
        Err(NotProposed::Leader(_)) => Ok(None),
        Err(NotProposed::Unavailable(reason)) => Err(error(
            ErrorCode::LeaderNotAvailable,
            format!("the cluster's metadata cannot be changed now: {reason}"),
        )),
    }
}

pub(super) async fn create_replicated(
    shared: &Shared,
    cluster: &ClusterMember,
    request: v1::CreateTopic,
    passes: u32,
) -> Answer {
    let name = checked_name(&request.name)?.into_string();
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    let body = request::Body::CreateTopic(request.clone());
    let id = loop {
        match route(cluster, &body, passes, deadline).await? {
            Decided::There(Err(refused)) => return Err(refused),
            Decided::There(Ok(_)) => break None,
            Decided::Here => {}
        }
        let (command, id) = placed(shared, cluster, &name, request.clone())?;
        if propose_here(cluster, &command, deadline).await?.is_some() {
            // Two creations of one name may both pass the check: the first recorded wins.
            let winner = cluster.state().topics.get(&name).map(|t| t.id.clone());
            if winner.as_deref() != Some(id.as_str()) {
                return Err(already_exists(&name));
            }
            tracing::info!(topic = %name, "replicated topic created");
            break Some(id);
        }
    };
    // Answered once this sidecar's own topics have the instance the metadata now names.
    let caught_up = cluster
        .wait_for_topic(&name, deadline, |topic| {
            topic.is_some_and(|t| id.as_ref().is_none_or(|id| &t.id == id))
        })
        .await;
    let Some(Some(id)) = caught_up else {
        return Err(not_yet(&name, "created"));
    };
    let topics = &shared.topics;
    let here = topics
        .wait_for(&name, deadline, |topic| {
            topic.is_some_and(|t| t.id() == Some(id.as_str()))
        })
        .await;
    match topics.get(&name) {
        Some(topic) if here => Ok(response::Body::CreateTopic(v1::CreateTopicResult {
            topic: Some(describe(shared, &topic)),
        })),
        _ => Err(not_yet(&name, "created")),
    }
}

/// The command that creates topic `name` as `request` asks, placed on the registered nodes;
/// and the new instance's id. Only the metadata leader calls it.
fn placed(
    shared: &Shared,
    cluster: &ClusterMember,
    name: &str,
    mut request: v1::CreateTopic,
) -> Result<(MetadataCommand, String), Box<Response>> {
    let state = cluster.state();
    if state.topics.contains_key(name) {
        return Err(already_exists(name));
    }
    let nodes = u32::try_from(state.nodes.len()).unwrap_or(u32::MAX);
    if request.replication_factor == 0 {
        request.replication_factor = DEFAULT_REPLICATION_FACTOR.min(nodes.max(1));
    }
    let spec = TopicSpec::from_request(
        name.to_owned(),
        &request,
        &shared.config.topic_defaults,
        nodes,
    )
    .map_err(|e| error(ErrorCode::InvalidTopicConfig, e.0))?;
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
    let id = uuid::Uuid::now_v7().simple().to_string();
    let command = MetadataCommand::CreateTopic {
        spec,
        id: id.clone(),
        replicas,
    };
    Ok((command, id))
}

pub(super) async fn delete_replicated(
    shared: &Shared,
    cluster: &ClusterMember,
    request: v1::DeleteTopic,
    passes: u32,
) -> Answer {
    let name = checked_name(&request.name)?.into_string();
    let deadline = Instant::now() + ADMIN_TIMEOUT;
    let body = request::Body::DeleteTopic(request.clone());
    let deleted = loop {
        match route(cluster, &body, passes, deadline).await? {
            Decided::There(Err(refused)) => return Err(refused),
            Decided::There(Ok(_)) => break None,
            Decided::Here => {}
        }
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
        if propose_here(cluster, &command, deadline).await?.is_some() {
            tracing::info!(topic = %name, "replicated topic deleted");
            break Some(id);
        }
    };
    // Answered once this sidecar's own metadata and topics no longer have it.
    let gone = cluster
        .wait_for_topic(&name, deadline, |topic| {
            topic.is_none_or(|t| deleted.as_ref().is_some_and(|id| &t.id != id))
        })
        .await
        .is_some()
        && shared
            .topics
            .wait_for(&name, deadline, |topic| {
                topic.is_none_or(|t| deleted.as_deref().is_some_and(|id| t.id() != Some(id)))
            })
            .await;
    if !gone {
        return Err(not_yet(&name, "deleted"));
    }
    Ok(response::Body::DeleteTopic(v1::DeleteTopicResult {}))
}

fn already_exists(name: &str) -> Box<Response> {
    error(
        ErrorCode::TopicAlreadyExists,
        format!("topic {name:?} already exists"),
    )
}

fn not_yet(name: &str, what: &str) -> Box<Response> {
    error(
        ErrorCode::Timeout,
        format!(
            "topic {name:?} was {what} in the cluster's metadata, but this sidecar has not caught up within {ADMIN_TIMEOUT:?}"
        ),
    )
}
