//! openraft's log storage for a partition, over the partition's segment log.
//!
//! Every method maps to one [`Log`] operation (see the [module above](super) for the entry ↔
//! batch mapping). Appends and reads touch only the page cache and run on the caller's task;
//! everything that waits for the disk (the group-commit fsync after an append, votes, the
//! committed id, truncation and purge) runs on tokio's blocking pool.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, Range, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, LeaderId, LogId, LogState, OptionalSend,
    RaftLogReader, StorageError, StorageIOError, Vote,
};
use sidestream_log::{
    AppendError, Appended, BatchHeader, FsyncPolicy, Log, Offset, RaftLogId, RaftVote, WriteError,
};

use sidestream_log::batch::ValidBatch;

use super::bundle::{self, BundleError, LogPart};
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
///   which reports durability through its callback after the group-commit fsync, and, once
///   [`PartitionLogStore::save_commits_in_background`] is asked for, `save_committed`.
/// - The snapshot of the partition's state machine lives beside the log but apart from it;
///   the log store learns of snapshots through openraft's `purge`, and of one installed from
///   the leader when the state machine rebuilds the log from its batches.
#[derive(Debug, Clone)]
pub struct PartitionLogStore {
    log: Arc<Log>,
    /// The entries appended last, as the log holds them, for replication to read.
    recent: Arc<Mutex<Recent>>,
    /// The last entry of the latest snapshot whose batches rebuilt the log (see
    /// [`PartitionLogStore::install`]); held while it rebuilds it.
    installed: Arc<Mutex<Option<u64>>>,
    /// Whether a snapshot from the leader is being received (or installed).
    receiving: Arc<AtomicBool>,
    /// Saves the commit index in the background; `None` saves it before returning.
    committed: Option<Arc<CommittedSaver>>,
}

/// Saves the latest commit index openraft reported, one save at a time, off openraft's path
/// (see [`PartitionLogStore::save_commits_in_background`]).
#[derive(Debug, Default)]
struct CommittedSaver {
    state: Mutex<SaverState>,
}

#[derive(Debug, Default)]
struct SaverState {
    /// Whether a commit index was reported since the store was made.
    reported: bool,
    /// The latest commit index reported.
    latest: Option<RaftLogId>,
    /// Whether a save is running; it saves `latest` again if it changed meanwhile.
    saving: bool,
}

impl CommittedSaver {
    fn lock(&self) -> MutexGuard<'_, SaverState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The latest commit index reported, saved or not yet; `Err` if none was reported.
    fn latest(&self) -> Result<Option<RaftLogId>, ()> {
        let state = self.lock();
        if state.reported {
            Ok(state.latest)
        } else {
            Err(())
        }
    }

    /// Takes `committed` and saves it in the background (after the save in progress, if any).
    fn report(self: &Arc<Self>, log: &Arc<Log>, committed: Option<RaftLogId>) {
        {
            let mut state = self.lock();
            state.reported = true;
            state.latest = committed;
            if std::mem::replace(&mut state.saving, true) {
                return;
            }
        }
        let saver = Arc::clone(self);
        let log = Arc::clone(log);
        tokio::task::spawn_blocking(move || {
            let mut written = None;
            loop {
                let next = {
                    let mut state = saver.lock();
                    if written == Some(state.latest) {
                        state.saving = false;
                        return;
                    }
                    state.latest
                };
                // A failed save poisons the log: its next append fails, and the group stops
                // on the storage error as it would have here.
                if let Err(error) = log.save_committed(next) {
                    tracing::error!(%error, dir = %log.dir().display(), "saving the commit index failed");
                    saver.lock().saving = false;
                    return;
                }
                written = Some(next);
            }
        });
    }
}

/// The entries a log store appended last, each as the log holds it (stamped with its offset
/// and Raft id): a leader's replication streams read what was just appended, and take it
/// from here instead of reading it back from the log (a read, a buffer, a CRC per follower).
///
/// Always a contiguous run of Raft indexes ending at the log's last entry, or empty. At most
/// [`RECENT_BYTES`] (a follower that far behind reads from the log); entries committed before
/// the latest commit are dropped down to the allowance: [`RECENT_COMMITTED_BYTES`] on a leader
/// (the follower behind the majority wants them next), none on a follower (nobody reads them
/// from it). Those of the latest commit stay until the next: openraft reads them again to
/// apply them. A sweep that finds no commit since the one before (the partition went idle)
/// drops every committed entry, so an idle partition keeps none.
#[derive(Debug, Default)]
struct Recent {
    entries: VecDeque<(u64, Bytes)>,
    bytes: usize,
    /// Bytes of entries committed before the latest commit that may stay.
    allowance: usize,
    /// The latest commit index.
    latest_commit: Option<u64>,
    /// Whether a commit came since the last sweep.
    committed_since_sweep: bool,
}

/// The most bytes of recent entries a log store keeps.
const RECENT_BYTES: usize = 32 << 20;

/// The most bytes of committed recent entries a log store keeps while commits come: the
/// follower behind the majority can be megabytes behind (batches of up to 1 MiB; 256 KiB left
/// it reading every entry back from the segment files).
const RECENT_COMMITTED_BYTES: usize = 16 << 20;

impl Recent {
    /// Takes entry `index` (the next after the last kept), dropping the oldest past the limit.
    fn push(&mut self, index: u64, batch: Bytes) {
        if self
            .entries
            .back()
            .is_some_and(|(last, _)| last + 1 != index)
        {
            self.clear();
        }
        self.bytes += batch.len();
        self.entries.push_back((index, batch));
        while self.bytes > RECENT_BYTES {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, batch)) = self.entries.pop_front() {
            self.bytes -= batch.len();
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries of `range` if all of them are kept.
    fn get(&self, range: &Range<u64>) -> Option<Vec<Bytes>> {
        let (first, _) = self.entries.front()?;
        let (last, _) = self.entries.back()?;
        if range.start < *first || range.end > last + 1 || range.is_empty() {
            return None;
        }
        let skip = usize::try_from(range.start - first).ok()?;
        let take = usize::try_from(range.end - range.start).ok()?;
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take(take)
                .map(|(_, batch)| batch.clone())
                .collect(),
        )
    }

    /// Drops entries from `index` on (the log was truncated there).
    fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|(last, _)| *last >= index) {
            if let Some((_, batch)) = self.entries.pop_back() {
                self.bytes -= batch.len();
            }
        }
    }

    /// Takes the new commit index: drops the entries committed before the previous one while
    /// more than the allowance are kept.
    fn committed(&mut self, committed: Option<u64>) {
        let before = std::mem::replace(&mut self.latest_commit, committed);
        self.committed_since_sweep = true;
        self.forget(None, before);
    }

    /// Drops every committed entry if no commit came since the last sweep.
    fn sweep(&mut self) {
        if !std::mem::take(&mut self.committed_since_sweep) {
            self.forget(self.latest_commit, None);
        }
    }

    /// Drops entries through `purged`, and committed ones (through `committed`) while more
    /// than the allowance are kept.
    fn forget(&mut self, purged: Option<u64>, committed: Option<u64>) {
        while let Some((first, _)) = self.entries.front() {
            let purged = purged.is_some_and(|p| *first <= p);
            let committed = committed.is_some_and(|c| *first <= c);
            if purged || (committed && self.bytes > self.allowance) {
                self.pop_front();
            } else {
                break;
            }
        }
    }
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
    /// Waits (up to 5 s) until the latest commit index reported is saved.
    #[cfg(test)]
    pub(crate) async fn committed_saved(&self) {
        for _ in 0..500 {
            if !self
                .committed
                .as_ref()
                .is_some_and(|saver| saver.lock().saving)
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the commit index was not saved within 5 s");
    }

    /// A log store over `log`, which it alone writes from now on.
    pub fn new(log: Arc<Log>) -> Self {
        Self {
            log,
            recent: Arc::new(Mutex::new(Recent {
                // A new leader keeps them from the start; a follower's first sweep (within a
                // second) lets them go.
                allowance: RECENT_COMMITTED_BYTES,
                ..Recent::default()
            })),
            installed: Arc::default(),
            receiving: Arc::default(),
            committed: None,
        }
    }

    /// Has `save_committed` take the commit index at once and save it in the background, the
    /// latest reported each time, until none is newer.
    ///
    /// openraft reports every advance of the commit index (each committed batch) and waits for
    /// the save. A save is a small file's fsync, and on a busy disk an fsync waits for the data
    /// other writers have pending: up to a few hundred milliseconds, during which the group
    /// would neither append nor answer its leader's heartbeats (and its followers stood for
    /// election). Raft needs no saved commit index: a restarted replica learns it from its
    /// leader. With an older one, the state machine re-applied on opening lags what was applied
    /// before the crash until the leader's next call: for a partition, a high watermark that
    /// lags a moment (a read above it waits). Not for state that was acted on as it was applied.
    #[must_use]
    pub fn save_commits_in_background(mut self) -> Self {
        self.committed = Some(Arc::default());
        self
    }

    /// A snapshot from the leader begins to arrive: until it is installed, a purge past the
    /// log's end (openraft's, as it installs it) leaves the log for the install to replace.
    pub(crate) fn receiving(&self) {
        self.receiving.store(true, Ordering::Release);
    }

    /// Checks the bundle of a snapshot from the leader staged at `path` (`part` and `body` as
    /// its header gave them), unless the log holds its last entry `last` already or has
    /// passed it (then it is not used). Blocks on file IO.
    pub(crate) fn check_bundle(
        &self,
        path: &Path,
        part: &LogPart,
        body: u64,
        last: LogId<NodeId>,
    ) -> Result<(), BundleError> {
        let last = raft_log_id(&last);
        if self.holds_or_passed(last) {
            return Ok(());
        }
        bundle::check(path, part, body, last, self.log.config().max_batch_bytes)
    }

    /// Rebuilds the log from the bundle of a snapshot from the leader, staged at `path`,
    /// unless the log already holds the snapshot's last entry `last` or has passed it; then
    /// removes the bundle. The bundle must have passed [`PartitionLogStore::check_bundle`]
    /// (with `checked`), or is checked here. Blocks on file IO.
    ///
    /// openraft purges the log through `last` when it installs a snapshot, without waiting
    /// for the state machine to install it: a purge that comes after the rebuild must not
    /// delete the batches just written, so [`purge`](RaftLogStorage::purge) deletes nothing
    /// through the last entry installed, and waits while an install runs.
    pub(crate) fn install(
        &self,
        path: &Path,
        part: &LogPart,
        body: u64,
        last: LogId<NodeId>,
        checked: bool,
    ) -> Result<(), BundleError> {
        let last = raft_log_id(&last);
        let mut installed = self
            .installed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *installed = Some(last.index);
        if !self.holds_or_passed(last) {
            if !checked {
                bundle::check(path, part, body, last, self.log.config().max_batch_bytes)?;
            }
            bundle::restore_log(&self.log, path, part, body)?;
            self.recent().clear();
        }
        bundle::remove_staged(path);
        self.receiving.store(false, Ordering::Release);
        Ok(())
    }

    /// Whether the log holds Raft entry `id` (and so, the logs matching, every one before it
    /// as the leader has them), or has purged past it.
    fn holds_or_passed(&self, id: RaftLogId) -> bool {
        self.log
            .state()
            .last_purged
            .is_some_and(|p| p.index >= id.index)
            || self.holds(id)
    }

    /// Whether the log holds Raft entry `id`.
    fn holds(&self, id: RaftLogId) -> bool {
        self.log
            .read_entries(id.index..id.index.saturating_add(1))
            .ok()
            .and_then(|entries| entries.into_iter().next())
            .and_then(|batch| BatchHeader::parse(&batch).ok())
            .is_some_and(|header| header.raft == id)
    }

    /// Deletes the log's segments through Raft entry `through` if an installed snapshot
    /// brought it (openraft let those entries go when it installed the snapshot, so retention
    /// deletes them here) and the log still holds it; returns whether it did. Blocks on file
    /// IO; waits while a snapshot install runs.
    pub(crate) fn purge_released(&self, through: RaftLogId) -> Result<bool, WriteError> {
        let installed = self
            .installed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !installed.is_some_and(|i| through.index <= i) || !self.holds(through) {
            return Ok(false);
        }
        self.log.purge_through(through)?;
        Ok(true)
    }

    /// Resets the log to start after Raft entry `last`, at `next_offset`, unless it holds
    /// that entry or has passed it: a snapshot from the leader that carried no batches (only
    /// openraft's storage suite sends one) leaves the log where the snapshot is. Blocks on
    /// file IO.
    pub(crate) fn reset_to(
        &self,
        next_offset: Offset,
        last: LogId<NodeId>,
    ) -> Result<(), WriteError> {
        let last = raft_log_id(&last);
        let _installing = self
            .installed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !self.holds_or_passed(last) {
            self.log.reset(next_offset, Some(last))?;
            self.recent().clear();
        }
        self.receiving.store(false, Ordering::Release);
        Ok(())
    }

    /// Lets an idle partition's entries go (call it every second or so): those of the latest
    /// commit are kept only while commits keep coming. `leading`: whether this replica leads
    /// its group now (only a leader keeps committed entries for a follower behind).
    pub(crate) fn sweep_recent(&self, leading: bool) {
        let mut recent = self.recent();
        recent.allowance = if leading { RECENT_COMMITTED_BYTES } else { 0 };
        recent.sweep();
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
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
        let header = *valid.header();
        if let EntryPayload::Normal(PartitionWrite(_, notice)) = &entry.payload {
            notice.appended(appended.base_offset, appended.next_offset);
        }
        // Kept as the log holds it: a batch replicated from the leader is so already (shared,
        // not copied); the leader's own are stamped on a copy.
        let held = if header.raft == raft && header.base_offset == appended.base_offset {
            batch
        } else {
            let mut stamped = batch.to_vec();
            BatchHeader::stamp(&mut stamped, appended.base_offset, raft);
            Bytes::from(stamped)
        };
        self.recent().push(raft.index, held);
        Ok(appended)
    }

    /// Makes node `me` the leader of a group whose only voter it is, outside Raft: saves a
    /// committed vote of `me` in a term above every term the log knows, then appends
    /// `membership` (`me` alone) in that term after the log's last entry, and makes the log
    /// durable. Only for a replica whose Raft is stopped: started again, openraft takes the
    /// last membership in the log as the group's, and the vote makes `me` its leader at once
    /// (with the membership entry as its term's first). The new term keeps the old group's
    /// nodes out: their appends and candidacies are of older terms, and no log of theirs can
    /// hold another entry under this entry's log id. Done already (an attempt that failed
    /// after it): nothing more is written.
    pub(crate) async fn take_over_alone(
        &self,
        me: NodeId,
        membership: openraft::Membership<NodeId, openraft::BasicNode>,
    ) -> Result<LogId<NodeId>, StorageError<NodeId>> {
        let state = self.log.state();
        let vote = self.log.vote();
        if let Some(last) = state.last
            && vote.is_some_and(|v| v.committed && v.node_id == Some(me) && v.term == last.term)
            && let Ok(batches) = self.log.read_entries(last.index..last.index + 1)
            && let Some(batch) = batches.into_iter().next()
            && let Ok(entry) = entry_codec::decode(batch)
            && matches!(&entry.payload, EntryPayload::Membership(m) if *m == membership)
        {
            return Ok(entry.log_id);
        }
        let last = state.last.or(state.last_purged);
        let term = vote.map(|v| v.term).max(last.map(|l| l.term)).unwrap_or(0) + 1;
        let log_id = openraft_log_id(RaftLogId {
            term,
            index: last.map_or(0, |l| l.index + 1),
        });
        let vote = RaftVote {
            term,
            node_id: Some(me),
            committed: true,
        };
        self.blocking(move |log| log.save_vote(vote))
            .await?
            .map_err(|e| storage_error(ErrorSubject::Vote, ErrorVerb::Write, &e))?;
        let entry = PartitionEntry {
            log_id,
            payload: EntryPayload::Membership(membership),
        };
        self.append_one(&entry)
            .map_err(|e| storage_error(ErrorSubject::Log(log_id), ErrorVerb::Write, &e))?;
        self.blocking(Log::sync)
            .await?
            .map_err(|e| storage_error(ErrorSubject::Log(log_id), ErrorVerb::Write, &e))?;
        Ok(log_id)
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
        let range = half_open(&range);
        let recent = self.recent().get(&range);
        let batches = match recent {
            Some(batches) => batches,
            None => self
                .log
                .read_entries(range)
                .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?,
        };
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
        self.recent().committed(committed.map(|c| c.index));
        let committed = committed.as_ref().map(raft_log_id);
        if let Some(saver) = &self.committed {
            saver.report(&self.log, committed);
            return Ok(());
        }
        self.blocking(move |log| log.save_committed(committed))
            .await?
            .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Write, &e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let reported = self
            .committed
            .as_ref()
            .and_then(|saver| saver.latest().ok());
        let committed = reported.unwrap_or_else(|| self.log.committed());
        // Never past the log's last entry: a log flushed at intervals can lose a tail in a
        // power cut that the saved commit index already names, and openraft re-applies up to
        // the index it is given. The entries the log kept are unchanged, so those up to the
        // saved index are still committed.
        let state = self.log.state();
        let last = state.last.or(state.last_purged);
        Ok(clamp_committed(committed, last).map(openraft_log_id))
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
        self.recent().truncate(index);
        self.blocking(move |log| log.truncate_from(index))
            .await?
            .map_err(|e| storage_error(ErrorSubject::Log(log_id), ErrorVerb::Delete, &e))
    }

    /// Purges the log through `log_id`, which openraft guarantees a snapshot covers.
    ///
    /// Purging past the last entry (a snapshot installed ahead of this log) empties the log;
    /// the state machine then rebuilds it from the batches the snapshot carries
    /// (`PartitionLogStore::install`, whatever order the two come in).
    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let through = raft_log_id(&log_id);
        self.recent().forget(Some(log_id.index), None);
        let installed = Arc::clone(&self.installed);
        let receiving = Arc::clone(&self.receiving);
        self.blocking(move |log| {
            let installed = installed.lock().unwrap_or_else(PoisonError::into_inner);
            if installed.is_some_and(|i| through.index <= i) {
                // The batches an installed snapshot brought: retention's to delete.
                return Ok(());
            }
            if receiving.load(Ordering::Acquire)
                && log.state().last.is_none_or(|l| through.index > l.index)
            {
                // A snapshot from the leader is being installed past the log's end: the
                // install replaces the log. Deleting it now would leave, after a crash before
                // the snapshot is saved, a log purged past what the saved state has applied.
                return Ok(());
            }
            log.purge_through(through)
        })
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

/// The saved commit index `committed`, but not past `last`, the log's last entry (or purge
/// point).
fn clamp_committed(committed: Option<RaftLogId>, last: Option<RaftLogId>) -> Option<RaftLogId> {
    match (committed, last) {
        (Some(committed), Some(last)) if committed.index > last.index => Some(last),
        (Some(_), None) => None,
        (committed, _) => committed,
    }
}

#[cfg(test)]
mod recent_tests {
    use super::*;

    fn batch(len: usize) -> Bytes {
        Bytes::from(vec![0_u8; len])
    }

    #[test]
    fn recent_entries_are_a_contiguous_run_ending_at_the_last() {
        let mut recent = Recent::default();
        for index in 5..10 {
            recent.push(index, batch(10));
        }
        assert_eq!(recent.get(&(5..10)).map(|b| b.len()), Some(5));
        assert_eq!(recent.get(&(7..9)).map(|b| b.len()), Some(2));
        // Anything not wholly kept is read from the log.
        assert!(recent.get(&(4..6)).is_none());
        assert!(recent.get(&(8..11)).is_none());
        assert!(recent.get(&(6..6)).is_none());
        // A gap (the log went elsewhere) starts the run again.
        recent.push(20, batch(10));
        assert!(recent.get(&(5..6)).is_none());
        assert_eq!(recent.get(&(20..21)).map(|b| b.len()), Some(1));
        assert_eq!(recent.bytes, 10);
    }

    /// A batch size of which ten are more than the committed allowance, and within the limit.
    const UNIT: usize = RECENT_COMMITTED_BYTES / 8;

    /// A leader's recent entries.
    fn leader() -> Recent {
        Recent {
            allowance: RECENT_COMMITTED_BYTES,
            ..Recent::default()
        }
    }

    #[test]
    fn truncation_purge_and_commit_drop_what_they_must() {
        let mut recent = leader();
        for index in 0..10 {
            recent.push(index, batch(UNIT));
        }
        recent.truncate(8);
        assert!(recent.get(&(7..9)).is_none());
        assert_eq!(recent.get(&(0..8)).map(|b| b.len()), Some(8));
        recent.push(8, batch(UNIT));
        recent.forget(Some(1), None);
        assert!(recent.get(&(1..2)).is_none());
        assert!(recent.get(&(2..9)).is_some());
        // Committed entries go while more than the committed allowance is kept, oldest first.
        recent.forget(None, Some(8));
        assert!(recent.bytes <= RECENT_COMMITTED_BYTES);
        assert!(recent.get(&(8..9)).is_some());
        // Those of the latest commit stay until the next one (openraft reads them to apply).
        let mut applied = leader();
        for index in 0..10 {
            applied.push(index, batch(UNIT));
        }
        applied.committed(Some(9));
        assert_eq!(applied.get(&(0..10)).map(|b| b.len()), Some(10));
        applied.committed(Some(9));
        assert!(applied.bytes <= RECENT_COMMITTED_BYTES);
        assert!(applied.get(&(9..10)).is_some());
        // A follower keeps none before the latest commit: nobody reads them from it.
        let mut follower = Recent::default();
        for index in 0..10 {
            follower.push(index, batch(UNIT));
        }
        follower.committed(Some(5));
        follower.committed(Some(8));
        assert!(follower.get(&(5..6)).is_none());
        assert_eq!(follower.get(&(6..10)).map(|b| b.len()), Some(4));
        // A sweep lets every committed one go once no commit came since the sweep before.
        let mut idle = Recent::default();
        for index in 0..10 {
            idle.push(index, batch(UNIT));
        }
        idle.committed(Some(7));
        idle.sweep();
        assert_eq!(idle.get(&(0..10)).map(|b| b.len()), Some(10));
        idle.sweep();
        assert_eq!(idle.get(&(8..10)).map(|b| b.len()), Some(2));
        assert_eq!(idle.bytes, 2 * UNIT);
        // Uncommitted entries stay whatever their size.
        let mut big = leader();
        for index in 0..4 {
            big.push(index, batch(4 * UNIT));
        }
        big.forget(None, Some(0));
        assert_eq!(big.get(&(1..4)).map(|b| b.len()), Some(3));
        assert_eq!(big.bytes, 12 * UNIT);
    }

    #[test]
    fn at_most_the_limit_is_kept() {
        let mut recent = Recent::default();
        for index in 0..40 {
            recent.push(index, batch(1 << 20));
        }
        assert!(recent.bytes <= RECENT_BYTES);
        assert!(recent.get(&(39..40)).is_some());
        assert!(recent.get(&(0..1)).is_none());
    }
}
