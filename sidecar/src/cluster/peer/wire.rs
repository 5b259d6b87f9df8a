//! How openraft's calls of a partition group become peer frames and back: openraft's own
//! types as their JSON, log entries as the stamped record batches of the leader's log.

use bytes::Bytes;
use openraft::raft::AppendEntriesRequest;
use openraft::{LogId, Vote};
use serde::{Deserialize, Serialize};
use sidestream_log::batch::validate_crc;
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
    /// A passed-on request is not a `sidestream.v1.Request`.
    #[error("the passed-on request is not a sidestream.v1.Request: {0}")]
    PassedOn(#[source] prost::DecodeError),
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
    /// The previous log id is the last index there can be.
    #[error("append_entries: prev_log_id has the largest Raft index; no entry can follow it")]
    IndexOverflow,
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
    let first = match header.prev_log_id {
        None => 0,
        Some(prev) => prev.index.checked_add(1).ok_or(WireError::IndexOverflow)?,
    };
    let mut entries = Vec::with_capacity(message.entries.len());
    for (expected, (position, batch)) in (first..).zip(message.entries.into_iter().enumerate()) {
        // Header and CRC: a batch the follower's log would refuse must be refused here, as a
        // bad call, and not reach the log store, where a failed append is a storage error that
        // stops the replica's Raft. The records were checked where the leader took them in;
        // the CRC shows them unchanged since (read back from the leader's disk included).
        validate_crc(&batch).map_err(|source| WireError::Entry {
            position,
            source: DecodeEntryError::Batch(source),
        })?;
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

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};
    use sidestream_log::RecordBatch;

    use super::*;
    use crate::cluster::type_config::{PartitionEntry, PartitionWrite};

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(1, 0), index)
    }

    /// A data entry at `index` whose batch the leader's log stamped at offset `2 * index`.
    fn data(index: u64) -> PartitionEntry {
        let batch = RecordBatch::from_records([(None, Some(Bytes::from("a")), 0), (None, None, 0)]);
        let mut bytes = batch.encode().unwrap();
        let raft = sidestream_log::RaftLogId { term: 1, index };
        sidestream_log::BatchHeader::stamp(&mut bytes, 2 * index, raft);
        PartitionEntry {
            log_id: log_id(index),
            payload: EntryPayload::Normal(PartitionWrite::from(Bytes::from(bytes))),
        }
    }

    fn request(
        prev: Option<u64>,
        entries: Vec<PartitionEntry>,
    ) -> AppendEntriesRequest<PartitionRaft> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: prev.map(log_id),
            leader_commit: prev.map(log_id),
            entries,
        }
    }

    #[test]
    fn append_calls_round_trip_with_blank_and_data_entries() {
        let blank = PartitionEntry {
            log_id: log_id(4),
            payload: EntryPayload::Blank,
        };
        let rpc = request(Some(3), vec![blank, data(5), data(6)]);
        let decoded = decode_append(encode_append(&rpc).unwrap()).unwrap();
        assert_eq!(decoded.vote, rpc.vote);
        assert_eq!(decoded.prev_log_id, rpc.prev_log_id);
        assert_eq!(decoded.leader_commit, rpc.leader_commit);
        assert_eq!(decoded.entries, rpc.entries);
    }

    #[test]
    fn bad_append_calls_are_named() {
        // Entries that skip an index.
        let message = encode_append(&request(Some(3), vec![data(4), data(6)])).unwrap();
        let error = decode_append(message).unwrap_err();
        assert_eq!(
            error.to_string(),
            "entry 1 of append_entries has Raft index 6, expected 5"
        );

        // A batch whose records do not match its CRC.
        let mut message = encode_append(&request(None, vec![data(0)])).unwrap();
        let mut corrupt = message.entries[0].to_vec();
        *corrupt.last_mut().unwrap() ^= 0xff;
        message.entries[0] = Bytes::from(corrupt);
        let error = decode_append(message).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("entry 0 of append_entries: bad record batch"),
            "{error}"
        );

        // Not JSON, and a previous index nothing can follow.
        let garbage = AppendEntries {
            request: Bytes::from_static(b"{"),
            entries: Vec::new(),
        };
        assert!(
            decode_append(garbage)
                .unwrap_err()
                .to_string()
                .starts_with("bad JSON in append_entries.request")
        );
        let mut last = encode_append(&request(Some(0), Vec::new())).unwrap();
        let header = AppendHeader {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(log_id(u64::MAX)),
            leader_commit: None,
        };
        last.request = serde_json::to_vec(&header).unwrap().into();
        assert!(matches!(decode_append(last), Err(WireError::IndexOverflow)));
    }
}
