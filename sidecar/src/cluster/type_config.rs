//! The openraft types of a partition's Raft group: what a client write carries
//! ([`PartitionWrite`]), what applying an entry answers ([`Applied`]), and the type
//! configuration that ties them to openraft ([`PartitionRaft`]).

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use openraft::{BasicNode, TokioRuntime};
use serde::{Deserialize, Serialize};
use sidestream_log::Offset;
use tokio::sync::oneshot;

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
        SnapshotData = super::bundle::SnapshotData,
        AsyncRuntime = TokioRuntime,
);

/// A producer's encoded record batch, proposed as one Raft entry of its partition.
///
/// The bytes are stored as they are: the log writes the base offset and the Raft term and index
/// into the header (before the CRC), so the batch read back from the log is the same batch with
/// those fields filled in. A batch read from a leader's log travels to the followers that way.
///
/// The second field is not data: the proposer's wish to hear when the leader's log has the
/// batch (for `acks=leader`); it never travels and is empty in entries read back or received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PartitionWrite(pub Bytes, #[serde(skip)] pub AppendNotice);

impl From<Bytes> for PartitionWrite {
    fn from(batch: Bytes) -> Self {
        Self(batch, AppendNotice::default())
    }
}

/// Where the leader's log store reports the offsets a proposed batch was appended at.
#[derive(Clone, Default)]
pub struct AppendNotice(Option<Arc<NoticeSlot>>);

/// Where a notice's report goes, until it is sent.
type NoticeSlot = Mutex<Option<oneshot::Sender<(Offset, Offset)>>>;

impl AppendNotice {
    /// A notice and the receiver of its report: the batch's base offset and the offset after it.
    pub fn new() -> (Self, oneshot::Receiver<(Offset, Offset)>) {
        let (tx, rx) = oneshot::channel();
        (Self(Some(Arc::new(Mutex::new(Some(tx))))), rx)
    }

    /// Reports the offsets (once; later calls and notices without a receiver do nothing).
    pub fn appended(&self, base_offset: Offset, next_offset: Offset) {
        if let Some(slot) = &self.0 {
            let tx = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(tx) = tx {
                let _ = tx.send((base_offset, next_offset));
            }
        }
    }
}

impl std::fmt::Debug for AppendNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "AppendNotice(waiting)"
        } else {
            "AppendNotice(none)"
        })
    }
}

/// Notices are not data: every two are equal.
impl PartialEq for AppendNotice {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for AppendNotice {}

/// What applying one committed entry did to the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Offset of the data batch's first record; for a control entry (blank, membership), which
    /// takes no offset, the high watermark.
    pub base_offset: Offset,
    /// The high watermark after the entry: the offset after the last committed data batch.
    pub high_watermark: Offset,
    /// For a group command, what it did.
    pub group: Option<super::GroupApplied>,
}
