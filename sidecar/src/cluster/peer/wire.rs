//! How openraft's calls of a partition group become peer frames and back: openraft's own
//! types as their JSON, log entries as the stamped record batches of the leader's log.

use bytes::Bytes;
use openraft::raft::AppendEntriesRequest;
use openraft::{LogId, Vote};
use serde::{Deserialize, Serialize};
use sidestream_proto::peer::v1::{AppendEntries, PeerErrorCode, PeerResponse, RaftGroup};

use crate::cluster::entry_codec::{self, DecodeEntryError, EncodeEntryError};
use crate::cluster::type_config::{NodeId, PartitionRaft};

/// Why a peer frame's contents could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum WireError {
    /// openraft's part of a call is not valid JSON of the expected type.
    #[error("bad JSON in {what}: {source}")]
    Json {
        /// Which part.
        what: &'static str,
        /// What is wrong.
        #[source]
        source: serde_json::Error,
    },
    /// An entry is not a batch that decodes to a Raft entry.
    #[error("entry {position} of append_entries: {source}")]
    Entry {
        /// Its position in the call.
        position: usize,
        /// What is wrong.
        #[source]
        source: DecodeEntryError,
    },
    /// The entries' Raft indexes do not follow each other (and the previous log id).
    #[error("entry {position} of append_entries has Raft index {found}, expected {expected}")]
    OutOfOrder {
        /// Its position in the call.
        position: usize,
        /// The index it carries.
        found: u64,
        /// The index it should carry.
        expected: u64,
    },
    /// An entry could not be turned into a batch.
    #[error(transparent)]
    Encode(#[from] EncodeEntryError),
    /// A request without a group.
    #[error("the request names no Raft group")]
    NoGroup,
}

/// The Raft group of a topic's partition.
pub(crate) fn group(topic: &str, partition: u32) -> RaftGroup {
    RaftGroup {
        topic: topic.to_owned(),
        partition,
    }
}

/// The fields of an `AppendEntriesRequest` other than its entries.
#[derive(Serialize, Deserialize)]
struct AppendHeader {
    vote: Vote<NodeId>,
    prev_log_id: Option<LogId<NodeId>>,
    leader_commit: Option<LogId<NodeId>>,
}

/// The peer message of an append-entries call.
pub(crate) fn encode_append(
    rpc: &AppendEntriesRequest<PartitionRaft>,
) -> Result<AppendEntries, WireError> {
    let header = AppendHeader {
        vote: rpc.vote,
        prev_log_id: rpc.prev_log_id,
        leader_commit: rpc.leader_commit,
    };
    let request = to_json(&header, "append_entries.request")?;
    let entries = rpc
        .entries
        .iter()
        .map(entry_codec::to_wire)
        .collect::<Result<Vec<Bytes>, _>>()?;
    Ok(AppendEntries {
        request: request.into(),
        entries,
    })
}

/// The append-entries call a peer message carries, its entries checked to decode and to
/// follow each other.
pub(crate) fn decode_append(
    message: AppendEntries,
) -> Result<AppendEntriesRequest<PartitionRaft>, WireError> {
    let header: AppendHeader = from_json(&message.request, "append_entries.request")?;
    let first = header.prev_log_id.map_or(0, |id| id.index + 1);
    let mut entries = Vec::with_capacity(message.entries.len());
    for (expected, (position, batch)) in (first..).zip(message.entries.into_iter().enumerate()) {
        let entry =
            entry_codec::decode(batch).map_err(|source| WireError::Entry { position, source })?;
        if entry.log_id.index != expected {
            return Err(WireError::OutOfOrder {
                position,
                found: entry.log_id.index,
                expected,
            });
        }
        entries.push(entry);
    }
    Ok(AppendEntriesRequest {
        vote: header.vote,
        prev_log_id: header.prev_log_id,
        leader_commit: header.leader_commit,
        entries,
    })
}

/// `value` as JSON, for the part of a frame called `what`.
pub(crate) fn to_json(value: &impl Serialize, what: &'static str) -> Result<Vec<u8>, WireError> {
    serde_json::to_vec(value).map_err(|source| WireError::Json { what, source })
}

/// The JSON in the part of a frame called `what`.
pub(crate) fn from_json<T: for<'de> Deserialize<'de>>(
    json: &[u8],
    what: &'static str,
) -> Result<T, WireError> {
    serde_json::from_slice(json).map_err(|source| WireError::Json { what, source })
}

/// A response that carries a Raft group's answer.
pub(crate) fn answered(result: Vec<u8>) -> PeerResponse {
    PeerResponse {
        code: PeerErrorCode::Ok.into(),
        message: String::new(),
        result: result.into(),
    }
}

/// A response that says why the call never reached a Raft group.
pub(crate) fn refused(code: PeerErrorCode, message: impl Into<String>) -> PeerResponse {
    PeerResponse {
        code: code.into(),
        message: message.into(),
        result: Bytes::new(),
    }
}
