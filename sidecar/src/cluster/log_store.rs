//! openraft's log storage for a partition, over the partition's segment log.
//!
//! Every method maps to one [`Log`] operation (see the [module above](super) for the entry ↔
//! batch mapping). Appends and reads touch only the page cache and run on the caller's task;
//! everything that waits for the disk (the group-commit fsync after an append, votes, the
//! committed id, truncation and purge) runs on tokio's blocking pool.

use std::fmt::Debug;
use std::ops::{Bound, Range, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, LeaderId, LogId, LogState, OptionalSend,
    RaftLogReader, StorageError, StorageIOError, Vote,
};
use sidestream_log::{
    AppendError, Appended, BatchHeader, FsyncPolicy, Log, Offset, RaftLogId, RaftVote,
};

use sidestream_log::batch::ValidBatch;

use super::entry_codec::{self, EncodeEntryError, openraft_log_id, raft_log_id};
use super::type_config::{NodeId, PartitionEntry, PartitionRaft, PartitionWrite};

/// A partition's Raft log storage: openraft's [`RaftLogStorage`] and [`RaftLogReader`] over
/// the partition's [`Log`], each Raft entry being one record batch.
///
/// Clones share the log; openraft's log reader is such a clone.
///
/// ## To ensure correctness
///
/// - The store is the log's only writer: offsets are assigned by the log at append time, and a
///   batch replicated from the leader must land at the offset the leader gave it.
/// - Writes are serialized by openraft (one call at a time through `&mut self`), and each write
///   method returns only when its change is durable, except [`append`](RaftLogStorage::append),
///   which reports durability through its callback after the group-commit fsync.
/// - The snapshot of the partition's state machine lives beside the log but apart from it;
///   the log store learns of snapshots only through openraft's `purge`.
#[derive(Debug, Clone)]
pub struct PartitionLogStore {
    log: Arc<Log>,
}

/// Why an entry could not be appended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AppendEntryError {
    /// The log refused the batch or could not write it.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The entry is not a batch the log can hold.
    #[error(transparent)]
    Encode(#[from] EncodeEntryError),
    /// A batch replicated from the leader would land at another offset than in the leader's
    /// log: the replicas' offsets diverged, and appending would make it worse.
    #[error(
        "raft entry {raft}: the leader's log holds it at offset {leader}, this log is at offset {local}"
    )]
    OffsetMismatch {
        /// The entry.
        raft: RaftLogId,
        /// The base offset stamped by the leader's log.
        leader: Offset,
        /// The offset this log would give it.
        local: Offset,
    },
}

impl PartitionLogStore {
    /// A log store over `log`, which it alone writes from now on.
    pub fn new(log: Arc<Log>) -> Self {
        Self { log }
    }

    /// The partition log underneath.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Appends one entry as one batch, without waiting for the disk.
    fn append_one(&self, entry: &PartitionEntry) -> Result<Appended, AppendEntryError> {
        let raft = raft_log_id(&entry.log_id);
        let batch = entry_codec::encode(&entry.payload, self.log.config().clock.now_ms())?;
        if let EntryPayload::Normal(PartitionWrite(bytes, _)) = &entry.payload {
            self.check_leader_offset(raft, bytes)?;
        }
        // Checked where it was taken in: a client's batch by the server, a leader's by
        // `wire::decode_append`, a control batch built here.
        let valid = ValidBatch::checked_before(&batch).map_err(EncodeEntryError::from)?;
        let appended = self.log.append_entry_valid(&valid, raft)?;
        if let EntryPayload::Normal(PartitionWrite(_, notice)) = &entry.payload {
            notice.appended(appended.base_offset, appended.next_offset);
        }
        Ok(appended)
    }

    /// Whether `log_id` is at or below the log's purge point.
    fn is_purged(&self, log_id: &LogId<NodeId>) -> bool {
        self.log
            .state()
            .last_purged
            .is_some_and(|purged| log_id.index <= purged.index)
    }

    /// A batch that carries this entry's own log id was read from a leader's log, which
    /// stamped its base offset: it must land at the same offset here. (A client's batch
    /// carries no log id yet: the server must accept only batches whose sidecar-written
    /// fields are zero.)
    fn check_leader_offset(&self, raft: RaftLogId, batch: &[u8]) -> Result<(), AppendEntryError> {
        let header = BatchHeader::parse(batch).map_err(EncodeEntryError::from)?;
        let local = self.log.state().next_offset;
        if header.raft == raft && header.base_offset != local {
            return Err(AppendEntryError::OffsetMismatch {
                raft,
                leader: header.base_offset,
                local,
            });
        }
        Ok(())
    }

    /// Runs `f` on the blocking pool: for log operations that wait for an fsync.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Log) -> T + Send + 'static,
    ) -> Result<T, StorageError<NodeId>> {
        let log = Arc::clone(&self.log);
        tokio::task::spawn_blocking(move || f(&log))
            .await
            .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Write, &e))
    }
}

impl RaftLogReader<PartitionRaft> for PartitionLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<PartitionEntry>, StorageError<NodeId>> {
        let batches = self
            .log
            .read_entries(half_open(&range))
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
        let mut entries = Vec::with_capacity(batches.len());
        for batch in batches {
            let entry = entry_codec::decode(batch)
                .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<PartitionRaft> for PartitionLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<PartitionRaft>, StorageError<NodeId>> {
        let state = self.log.state();
        let last_purged_log_id = state.last_purged.map(openraft_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id: state.last.map(openraft_log_id).or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let vote = RaftVote {
            term: vote.leader_id.term,
            node_id: vote.leader_id.voted_for,
            committed: vote.committed,
        };
        self.blocking(move |log| log.save_vote(vote))
            .await?
            .map_err(|e| storage_error(ErrorSubject::Vote, ErrorVerb::Write, &e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.log.vote().map(|vote| Vote {
            leader_id: LeaderId {
                term: vote.term,
                voted_for: vote.node_id,
            },
            committed: vote.committed,
        }))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        let committed = committed.as_ref().map(raft_log_id);
        self.blocking(move |log| log.save_committed(committed))
            .await?
            .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Write, &e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.log.committed().map(openraft_log_id))
    }

    /// Appends each entry as one batch (readable at once), then waits for the group-commit
    /// fsync on the blocking pool and reports it through `callback`.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<PartitionRaft>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = PartitionEntry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut last = None;
        for entry in entries {
            if self.is_purged(&entry.log_id) {
                // Covered by a snapshot already; the log cannot go back before its purge point,
                // and openraft needs nothing of it. (openraft's storage suite appends such
                // entries; a running Raft node does not.)
                tracing::debug!(log_id = %entry.log_id, "skipping append of a purged entry");
                continue;
            }
            let appended = self.append_one(&entry).map_err(|e| {
                storage_error(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, &e)
            })?;
            last = Some(appended);
        }
        let Some(last) = last else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        if self.log.config().fsync == FsyncPolicy::Always {
            let log = Arc::clone(&self.log);
            tokio::task::spawn_blocking(move || {
                let durable = log.wait_durable(&last).map_err(std::io::Error::other);
                callback.log_io_completed(durable);
            });
        } else {
            // Durable under the policy at once (or poisoned): no fsync to wait for.
            callback.log_io_completed(self.log.wait_durable(&last).map_err(std::io::Error::other));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let index = log_id.index;
        self.blocking(move |log| log.truncate_from(index))
            .await?
            .map_err(|e| storage_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, &e))
    }

    /// Purges the log through `log_id`, which openraft guarantees a snapshot covers.
    ///
    /// Purging past the last entry (a snapshot installed ahead of this log) empties the log,
    /// and the log keeps its own next offset. `Log::reset(next_offset, last_included)` exists to
    /// restart it at the snapshot's high watermark instead; it is not called here because
    /// openraft 0.9 issues this purge without waiting for the state machine to install the
    /// snapshot, so the log store cannot know that offset yet. A snapshot that carries the
    /// leader's segments (DESIGN "Retention and snapshots") will rebuild the log at the leader's
    /// offsets; until then a batch replicated after such a purge is refused if its offset does
    /// not match (an offset-mismatch append error).
    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let through = raft_log_id(&log_id);
        self.blocking(move |log| log.purge_through(through))
            .await?
            .map_err(|e| storage_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, &e))
    }
}

/// An openraft storage error about `subject` that keeps `error`'s message and sources.
pub(crate) fn storage_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    error: &(impl std::error::Error + 'static),
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(error)).into()
}

/// The Raft indexes of `range` as a half-open range.
fn half_open(range: &impl RangeBounds<u64>) -> Range<u64> {
    let start = match range.start_bound() {
        Bound::Included(&start) => start,
        Bound::Excluded(&start) => start.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&end) => end.saturating_add(1),
        Bound::Excluded(&end) => end,
        Bound::Unbounded => u64::MAX,
    };
    start..end
}
