//! The openraft types of a partition's Raft group: what a client write carries
//! ([`PartitionWrite`]), what applying an entry answers ([`Applied`]), and the type
//! configuration that ties them to openraft ([`PartitionRaft`]).

use std::io::Cursor;

use bytes::Bytes;
use openraft::{BasicNode, TokioRuntime};
use serde::{Deserialize, Serialize};
use sidestream_log::Offset;

/// A sidecar's id in a Raft group.
pub type NodeId = u64;

/// An openraft log entry of a partition's Raft group.
pub type PartitionEntry = openraft::Entry<PartitionRaft>;

openraft::declare_raft_types!(
    /// The openraft type configuration of a partition's Raft group.
    ///
    /// With openraft's `single-term-leader` feature a log id is a (term, index) pair, exactly
    /// the Raft term and index in a record batch's header.
    pub PartitionRaft:
        D = PartitionWrite,
        R = Applied,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<PartitionRaft>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = TokioRuntime,
);

/// A producer's encoded record batch, proposed as one Raft entry of its partition.
///
/// The bytes are stored as they are: the log writes the base offset and the Raft term and index
/// into the header (before the CRC), so the batch read back from the log is the same batch with
/// those fields filled in. A batch read from a leader's log travels to the followers that way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartitionWrite(pub Bytes);

impl From<Bytes> for PartitionWrite {
    fn from(batch: Bytes) -> Self {
        Self(batch)
    }
}

/// What applying one committed entry did to the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Offset of the data batch's first record; for a control entry (blank, membership), which
    /// takes no offset, the high watermark.
    pub base_offset: Offset,
    /// The high watermark after the entry: the offset after the last committed data batch.
    pub high_watermark: Offset,
}
