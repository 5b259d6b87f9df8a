//! One openraft entry is one record batch: how an entry's payload becomes the batch the log
//! stores, and how a batch read from the log becomes an entry again.
//!
//! The log id is not encoded here: [`Log::append_entry`](sidestream_log::Log::append_entry)
//! writes the Raft term and index into the batch header, and [`decode`] reads them back.

use bytes::Bytes;
use openraft::{CommittedLeaderId, EntryPayload, LogId};
use sidestream_log::batch::{DecodeError, EncodeError};
use sidestream_log::{BatchBody, BatchHeader, ControlKind, ControlRecord, RaftLogId, RecordBatch};

use super::type_config::{NodeId, PartitionEntry, PartitionRaft, PartitionWrite};

/// Why an entry could not become a record batch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum EncodeEntryError {
    /// A control batch for a blank or membership entry could not be encoded.
    #[error("cannot encode control batch: {0}")]
    Batch(#[from] EncodeError),
    /// A client write is a control batch other than a group command; only Raft itself
    /// writes those.
    #[error("a client write may not be a control batch other than a group command")]
    ControlWrite,
    /// A client write does not start with a valid batch header.
    #[error("client write is not a record batch: {0}")]
    Header(#[from] DecodeError),
    /// A membership could not be serialized.
    #[error("cannot serialize membership: {0}")]
    Membership(#[from] serde_json::Error),
}

/// Why a record batch read from the log is not an entry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum DecodeEntryError {
    /// The bytes are not a valid batch.
    #[error("bad record batch: {0}")]
    Batch(#[from] DecodeError),
    /// A membership control batch holds no valid membership.
    #[error("raft entry {raft}: bad membership: {source}")]
    Membership {
        /// The entry.
        raft: RaftLogId,
        /// What is wrong.
        #[source]
        source: serde_json::Error,
    },
    /// A control batch of a kind this version does not know.
    #[error("raft entry {raft}: unknown control batch kind {kind:?}")]
    UnknownControl {
        /// The entry.
        raft: RaftLogId,
        /// The kind found.
        kind: ControlKind,
    },
}

/// Encodes an entry's payload as the record batch the log stores, not yet stamped with an
/// offset or log id.
///
/// A normal entry's batch is the producer's bytes (or a group command's control batch, which
/// the sidecar built), unchanged; a blank or membership entry becomes a control batch created
/// at `now_ms` (membership as JSON).
pub(crate) fn encode(
    payload: &EntryPayload<PartitionRaft>,
    now_ms: i64,
) -> Result<Bytes, EncodeEntryError> {
    let control = match payload {
        EntryPayload::Normal(PartitionWrite(batch, _)) => {
            if BatchHeader::parse(batch)?.control && !is_group_command(batch) {
                return Err(EncodeEntryError::ControlWrite);
            }
            return Ok(batch.clone());
        }
        EntryPayload::Blank => RecordBatch::control(ControlKind::Blank, now_ms, Bytes::new()),
        EntryPayload::Membership(membership) => RecordBatch::control(
            ControlKind::Membership,
            now_ms,
            Bytes::from(serde_json::to_vec(membership)?),
        ),
    };
    Ok(Bytes::from(control.encode()?))
}

/// The bytes an entry travels as from the leader to a follower: the batch the leader's log
/// holds for it, stamped with the entry's Raft term and index, which [`decode`] reads back.
///
/// A data batch read from the log is sent as it is (its base offset stamped by the leader's
/// log, which the follower's log checks); a blank or membership entry as its control batch.
pub(crate) fn to_wire(entry: &PartitionEntry) -> Result<Bytes, EncodeEntryError> {
    let raft = raft_log_id(&entry.log_id);
    let batch = encode(&entry.payload, 0)?;
    let header = BatchHeader::parse(&batch)?;
    if header.raft == raft {
        return Ok(batch);
    }
    let mut stamped = batch.to_vec();
    BatchHeader::stamp(&mut stamped, header.base_offset, raft);
    Ok(Bytes::from(stamped))
}

/// Decodes a batch read from the log (stamped with its log id) into the entry it is.
///
/// A data batch is checked only for its header (the log checked its CRC when reading it); a
/// control batch is decoded in full.
pub(crate) fn decode(batch: Bytes) -> Result<PartitionEntry, DecodeEntryError> {
    let header = BatchHeader::parse(&batch)?;
    let raft = header.raft;
    let payload = if header.control {
        let BatchBody::Control(control) = RecordBatch::decode(&batch)?.body else {
            return Err(DecodeError::ControlWithRecords.into());
        };
        match control.kind {
            ControlKind::Blank => EntryPayload::Blank,
            ControlKind::Membership => EntryPayload::Membership(
                serde_json::from_slice(&control.payload)
                    .map_err(|source| DecodeEntryError::Membership { raft, source })?,
            ),
            ControlKind::Group => EntryPayload::Normal(PartitionWrite::from(batch)),
            kind => return Err(DecodeEntryError::UnknownControl { raft, kind }),
        }
    } else {
        EntryPayload::Normal(PartitionWrite::from(batch))
    };
    Ok(PartitionEntry {
        log_id: openraft_log_id(raft),
        payload,
    })
}

/// Whether `batch`, a control batch, holds a group command (its body's first byte names the
/// kind; STORAGE.md, "Control batch body").
fn is_group_command(batch: &Bytes) -> bool {
    matches!(
        RecordBatch::decode(batch).map(|b| b.body),
        Ok(BatchBody::Control(ControlRecord {
            kind: ControlKind::Group,
            ..
        }))
    )
}

/// The log's Raft position of an openraft log id (its term and index).
pub(crate) fn raft_log_id(log_id: &LogId<NodeId>) -> RaftLogId {
    RaftLogId {
        term: log_id.leader_id.term,
        index: log_id.index,
    }
}

/// The openraft log id of a Raft position in the log.
///
/// With `single-term-leader` a committed leader id is its term alone; the node id is ignored.
pub(crate) fn openraft_log_id(raft: RaftLogId) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(raft.term, 0), raft.index)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{BasicNode, Membership};
    use sidestream_log::BatchHeader;

    use super::*;

    /// Stamps an encoded batch the way the log does when it appends it.
    fn stamped(batch: &Bytes, base_offset: u64, raft: RaftLogId) -> Bytes {
        let mut bytes = batch.to_vec();
        BatchHeader::stamp(&mut bytes, base_offset, raft);
        Bytes::from(bytes)
    }

    fn data_batch() -> Bytes {
        let batch = RecordBatch::from_records([
            (
                Some(Bytes::from("order-1")),
                Some(Bytes::from("placed")),
                1_000,
            ),
            (
                Some(Bytes::from("order-2")),
                Some(Bytes::from("paid")),
                1_001,
            ),
        ]);
        Bytes::from(batch.encode().unwrap())
    }

    fn round_trip(payload: &EntryPayload<PartitionRaft>, base_offset: u64) -> PartitionEntry {
        let raft = RaftLogId { term: 3, index: 17 };
        let encoded = encode(payload, 1_700_000_000_000).unwrap();
        let entry = decode(stamped(&encoded, base_offset, raft)).unwrap();
        assert_eq!(entry.log_id, openraft_log_id(raft));
        assert_eq!(raft_log_id(&entry.log_id), raft);
        entry
    }

    #[test]
    fn blank_entries_round_trip() {
        let entry = round_trip(&EntryPayload::Blank, 5);
        assert!(matches!(entry.payload, EntryPayload::Blank));
    }

    #[test]
    fn membership_entries_round_trip() {
        let nodes = BTreeMap::from([
            (1, BasicNode::new("127.0.0.1:7401")),
            (2, BasicNode::new("127.0.0.2:7401")),
            (3, BasicNode::new("127.0.0.3:7401")),
        ]);
        let membership =
            Membership::new(vec![BTreeSet::from([1, 2]), BTreeSet::from([2, 3])], nodes);
        let entry = round_trip(&EntryPayload::Membership(membership.clone()), 0);
        assert!(matches!(entry.payload, EntryPayload::Membership(m) if m == membership));
    }

    #[test]
    fn normal_entries_round_trip_with_the_stamp() {
        let batch = data_batch();
        let entry = round_trip(
            &EntryPayload::Normal(PartitionWrite::from(batch.clone())),
            40,
        );
        let EntryPayload::Normal(PartitionWrite(read, _)) = entry.payload else {
            panic!("expected a normal entry");
        };
        let header = BatchHeader::parse(&read).unwrap();
        assert_eq!((header.base_offset, header.next_offset()), (40, 42));
        let decoded = RecordBatch::decode(&read).unwrap();
        let original = RecordBatch::decode(&batch).unwrap();
        assert_eq!(decoded.body, original.body);
    }

    #[test]
    fn a_client_write_may_not_be_a_control_batch() {
        let forged = RecordBatch::control(ControlKind::Membership, 0, Bytes::from("{}"));
        let payload =
            EntryPayload::Normal(PartitionWrite::from(Bytes::from(forged.encode().unwrap())));
        assert!(matches!(
            encode(&payload, 0),
            Err(EncodeEntryError::ControlWrite)
        ));
        let garbage =
            EntryPayload::Normal(PartitionWrite::from(Bytes::from_static(b"not a batch")));
        assert!(matches!(
            encode(&garbage, 0),
            Err(EncodeEntryError::Header(_))
        ));
    }

    #[test]
    fn group_commands_travel_as_normal_entries() {
        let command = RecordBatch::control(ControlKind::Group, 7, Bytes::from("{}"));
        let command = Bytes::from(command.encode().unwrap());
        let entry = round_trip(&EntryPayload::Normal(PartitionWrite::from(command)), 12);
        let EntryPayload::Normal(PartitionWrite(read, _)) = entry.payload else {
            panic!("expected a normal entry");
        };
        let header = BatchHeader::parse(&read).unwrap();
        assert!(header.control);
        assert_eq!(header.next_offset(), 12, "a group command takes no offset");
    }

    #[test]
    fn bad_bytes_do_not_decode() {
        assert!(matches!(
            decode(Bytes::from_static(b"short")),
            Err(DecodeEntryError::Batch(_))
        ));
        let bad = RecordBatch::control(ControlKind::Membership, 0, Bytes::from("not json"));
        let bad = Bytes::from(bad.encode().unwrap());
        assert!(matches!(
            decode(bad),
            Err(DecodeEntryError::Membership { .. })
        ));
    }
}
